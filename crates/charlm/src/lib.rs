#![doc = include_str!("../README.md")]
//!
//! ## charlm: a character-level language model
//!
//! The final stage of the tutorial (seed 002): one-hot characters feed `L` recurrent layers
//! (LSTM, GRU or vanilla RNN), a linear head maps the top layer's `h_t` to `V` logits, and the
//! loss is the softmax cross-entropy with the next character, averaged over all predictions:
//!
//! ```text
//! z_t = W_head · h_t^L + b_head,    loss = -(1 / (T·B)) Σ_{t,b} log softmax(z_t)[y_t]
//! ```
//!
//! - [`config`]: the model's sizes and the PyTorch tensor layout they imply;
//! - [`checkpoint`]: the model as a safetensors file PyTorch's `load_state_dict` accepts;
//! - [`resume`]: the training state beside it, for bit-identical resume;
//! - [`rundir`]: the run directory's lock, and the checks that keep runs from being replaced;
//! - [`sample`]: temperature, top-k and argmax over a column of logits;
//! - [`charrnn`]: the model on the cells ([`charrnn::CharRnn`]);
//! - [`model`]: the [`model::LanguageModel`] trait, evaluation and generation;
//! - [`train`]: the training loop with validation, checkpoints and exact resume;
//! - [`plot`]: the loss curves as a PNG;
//! - [`cli`]: the `charlm` command line.

mod error;

pub mod charrnn;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod model;
pub mod plot;
pub mod resume;
pub mod rundir;
pub mod sample;
pub mod train;

pub use config::{CellKind, DType, ModelConfig};
pub use error::CharLmError;
