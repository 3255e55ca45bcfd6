//! # rnn-data: datasets for every tutorial stage
//!
//! Seeded and deterministic: every generator takes an explicit [`rnn_tensor::Rng`].
//! Sequences come in the project's layout, `features × (T·B)` with column `t·B + b` holding
//! sample `b` at step `t`.
//!
//! - [`addition`]: binary addition problems of 1 to 64 bits, least significant bit first.

mod error;

pub mod addition;

pub use addition::{from_bits_lsb_first, AdditionBatch, AdditionProblem, BinaryAddition};
pub use error::DataError;
