//! # rnn-data: datasets for every tutorial stage
//!
//! Seeded and deterministic: every generator takes an explicit [`rnn_tensor::Rng`].
//!
//! - [`streams`]: binary streams with their counts as targets (stage 1, counting ones), and the
//!   tutorial's fixed 20 × 10 dataset.
//! - [`text`]: character-level corpora (vocabulary, encode/decode, training and validation
//!   split) and the two batchers of the language model, char-rnn's streams and random windows.

mod error;

pub mod streams;
pub mod text;

pub use error::DataError;
pub use streams::{count_ones_fixture, BinaryStreams, BinaryStreamsConfig};
pub use text::{Batch, Batcher, BatcherPosition, Corpus, StreamBatcher, Vocab, WindowBatcher};
