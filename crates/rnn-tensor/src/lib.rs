#![doc = include_str!("../README.md")]
//!
//! ## rnn-tensor: the math layer
//!
//! Everything the recurrent cells and optimizers build on, and nothing that knows about them:
//!
//! - [`Scalar`]: the one numeric trait, implemented for `f32` and `f64`, so every layer and
//!   optimizer runs in both precisions;
//! - [`Mat`]: column-major matrices on `nalgebra`. Sequences are stored feature-major, one column
//!   per sample, so the `B` columns of one timestep are one contiguous block;
//! - [`gemm()`]: `C = alpha·op(A)·op(B) + beta·C` on views with any strides: f32 on AVX-512
//!   CPUs through this crate's own FMA micro-kernel (split across [`parallel`] threads when
//!   large), f64 and other CPUs through `matrixmultiply`, one-column right operands through a
//!   hand-written GEMV; [`PackedLhs`] + [`gemm_packed()`] keep a left operand packed across
//!   many products (`W_hh` across the steps of a sequence);
//! - [`bf16`]: the bfloat16 format and [`Precision`]; [`packed::bf16`] multiplies it with
//!   `vdpbf16ps` on CPUs that have it;
//! - [`parallel`]: the library's thread count and a pool that splits work into contiguous
//!   parts, with results bit-identical for any thread count;
//! - [`activation`]: sigmoid, tanh, relu, softmax and log-softmax with their derivatives;
//! - [`init`]: uniform, normal and PyTorch's `U(-1/sqrt(H), 1/sqrt(H))` initialisers;
//! - [`rng`]: the seeded, serialisable random number generator used everywhere;
//! - [`gradcheck`]: central-difference numeric gradients and the relative error used to compare
//!   them with hand-written backward passes;
//! - [`Parameters`]: named parameter buffers (PyTorch names), the contract between cells,
//!   optimizers and checkpoints;
//! - [`alloc::LineAligned`]: the system allocator with large blocks on cache lines, for a
//!   program to install (the kernels' loads and stores then stay within a line).

mod error;
mod fastmath;
mod linalg;
pub mod packed;
mod params;
mod scalar;

pub mod activation;
pub mod alloc;
pub mod bf16;
pub mod cache;
pub mod gradcheck;
pub mod init;
pub mod parallel;
pub mod rng;
pub mod simd;

pub use bf16::{Bf16, Precision};
pub use error::TensorError;
pub use linalg::{gemm, gemm_flops, Trans};
pub use packed::{
    gemm_packed, gemm_packed_cols, gemm_packed_pair, gemm_packed_sums, PackedColumns, PackedLhs, PackedRows,
};
pub use params::{pair_params, ParamMut, Parameters};
pub use rng::Rng;
pub use scalar::Scalar;

/// A dense column-major matrix.
pub type Mat<T> = nalgebra::DMatrix<T>;
/// A borrowed column-major matrix with unit row stride.
pub type MatView<'a, T> = nalgebra::DMatrixView<'a, T>;
/// A mutably borrowed column-major matrix with unit row stride.
pub type MatViewMut<'a, T> = nalgebra::DMatrixViewMut<'a, T>;

/// Re-export of `nalgebra`, so users of this crate name the same version.
pub use nalgebra;
