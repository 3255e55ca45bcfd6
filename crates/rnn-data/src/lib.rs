#![doc = include_str!("../README.md")]
//!
//! ## rnn-data: datasets for every tutorial stage
//!
//! Seeded and deterministic: every generator takes an explicit [`rnn_tensor::Rng`].
//! Sequences come in the project's layout, `features × (T·B)` with column `t·B + b` holding
//! sample `b` at step `t`.
//!
//! - [`streams`]: binary streams with their counts as targets (stage 1, counting ones), and the
//!   tutorial's fixed 20 × 10 dataset.
//! - [`addition`]: binary addition problems of 1 to 64 bits, least significant bit first
//!   (stage 2).
//! - [`text`]: character-level corpora (vocabulary, encode/decode, training and validation
//!   split) and the two batchers of the language model, char-rnn's streams and random windows.

mod error;

pub mod addition;
pub mod streams;
pub mod text;

pub use addition::{from_bits_lsb_first, AdditionBatch, AdditionProblem, BinaryAddition};
pub use error::DataError;
pub use streams::{count_ones_fixture, BinaryStreams, BinaryStreamsConfig};
pub use text::{Batch, Batcher, BatcherPosition, Corpus, StreamBatcher, Vocab, WindowBatcher};
