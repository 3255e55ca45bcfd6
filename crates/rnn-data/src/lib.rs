//! # rnn-data: datasets for every tutorial stage
//!
//! Seeded and deterministic: every generator takes an explicit [`rnn_tensor::Rng`].
//!
//! - [`streams`]: binary streams with their counts as targets (stage 1, counting ones), and the
//!   tutorial's fixed 20 × 10 dataset.

mod error;

pub mod streams;

pub use error::DataError;
pub use streams::{count_ones_fixture, BinaryStreams, BinaryStreamsConfig};
