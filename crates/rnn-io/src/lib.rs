#![doc = include_str!("../README.md")]
//!
//! ## rnn-io: named tensors in safetensors files
//!
//! - [`TensorFile`]: a file's tensors by name and its metadata; [`TensorFile::read`] /
//!   [`TensorFile::from_bytes`] check everything ([`TensorFile::read_any`] keeps the tensors of
//!   other dtypes out instead of refusing the file), [`TensorFile::to_bytes`] /
//!   [`TensorFile::write`] give the same bytes for the same tensors and write atomically;
//! - [`Tensor`], [`TensorData`], [`Dtype`]: a shape and row-major values of `F32`, `F64` or
//!   `I64`, kept in their own type (`F16` and `BF16` are read as `F32`, exactly); [`TensorFile::floats`], [`TensorFile::ints`] and
//!   [`TensorFile::matrix`] take them out as the caller needs them, and [`Tensor::from_mat`]
//!   puts a matrix in;
//! - [`write_atomic`], [`sync_dir`], [`read_file_bytes`]: the file system side, for any bytes;
//! - [`IoError`]: every failure, one line naming the file, the tensor and what is wrong.
//!
//! The crate depends on `rnn-tensor` only (for [`rnn_tensor::Mat`] and [`rnn_tensor::Scalar`]):
//! the cells, the optimizers and the `charlm` program build on it, not the other way round.

mod error;
mod file;
mod fs;
mod tensor;

pub use error::{write_hint, IoError};
pub use file::{TensorFile, DATA_CRC32, DEFAULT_MAX_DATA};
pub use fs::{read_file_bytes, sync_dir, write_atomic};
pub use tensor::{Dtype, Tensor, TensorData};
