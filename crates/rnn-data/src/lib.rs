//! # rnn-data: datasets for every tutorial stage
//!
//! Seeded and deterministic: every generator takes an explicit [`rnn_tensor::Rng`].
