//! # rnn-data: datasets for every tutorial stage
//!
//! Seeded and deterministic: every generator takes an explicit [`rnn_tensor::Rng`].
//!
//! - [`text`]: character-level corpora (vocabulary, encode/decode, training and validation
//!   split) and the two batchers of the language model, char-rnn's streams and random windows.

mod error;

pub mod text;

pub use error::DataError;
pub use text::{Batch, Batcher, BatcherPosition, Corpus, StreamBatcher, Vocab, WindowBatcher};
