#![doc = include_str!("../README.md")]
//!
//! ## rnn-cells: recurrent cells with hand-written backward passes
//!
//! Every cell implements one trait, [`Recurrence`]: a zero state, a single [`Recurrence::step`]
//! for inference, a whole-sequence [`Recurrence::forward`] that keeps what backward needs, and a
//! [`Recurrence::backward`] through time that returns parameter, input and initial-state
//! gradients. Stacks, the language model and the shared test suite are written once against it.
//!
//! ## Layout
//! A sequence of `T` steps over a batch of `B` is a matrix with one column per (step, sample),
//! `features × (T·B)`, column `t·B + b` holding sample `b` at step `t`. The `B` columns of one
//! step are therefore one contiguous block, and a layer's input projection for all steps is a
//! single matrix product.
//!
//! ## Contents
//! | module | what | PyTorch |
//! |---|---|---|
//! | [`linear`] | the counting-ones linear cell | — |
//! | [`rnn`] | vanilla RNN, tanh / relu / sigmoid | `nn.RNN` |
//! | [`lstm`] | LSTM, gates i, f, g, o | `nn.LSTM` |
//! | [`gru`] | GRU, gates r, z, n | `nn.GRU` |
//! | [`stack`] | `L` layers of any cell, dropout between them | `num_layers`, `dropout` |
//! | [`reference`](mod@reference) | plain RNN, LSTM and GRU from their equations: the spec and the tests' oracle | — |
//! | [`affine`] | the temporal linear head | `nn.Linear` over time |
//! | [`softmax_ce`], [`loss`] | softmax cross-entropy over time; binary losses | `F.cross_entropy`, ... |
//!
//! Input is dense ([`SeqInput::Dense`]) or by index ([`SeqInput::Index`]: the layer-0 input
//! product becomes a gather of `weight_ih` columns and its gradient a scatter-add).

mod error;
mod params;
mod recurrence;
mod state;

pub mod affine;
pub mod bidirectional;
pub mod engine;
pub mod gru;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod lstm;
pub mod reference;
pub mod rnn;
pub mod softmax_ce;
pub mod stack;
pub mod stream;
pub mod torch;
#[cfg(feature = "safetensors")]
mod torch_file;

pub use affine::{Affine, AffineConfig, AffineParams};
pub use bidirectional::{Bidirectional, BidirectionalCache, BidirectionalParams};
pub use engine::{Cell, Layer, LayerCache};
pub use error::CellError;
pub use gru::{Gru, GruCache, GruCell, GruConfig, GruParams, GruState};
pub use layout::{from_torch, to_torch, SeqOrder};
pub use linear::{last_state_mse, LinearCache, LinearCell, LinearConfig, LinearParams, LinearState};
pub use loss::Reduction;
pub use lstm::{Lstm, LstmCache, LstmCell, LstmConfig, LstmParams, LstmState};
pub use params::{RecurrentConfig, RecurrentParams};
pub use recurrence::{Recurrence, SeqInput};
pub use rnn::{Rnn, RnnCache, RnnCell, RnnConfig, RnnParams, RnnState};
pub use softmax_ce::softmax_cross_entropy;
pub use stack::{Stack, StackCache, StackParams};
pub use state::RecurrentState;
pub use stream::Stream;
pub use torch::{TorchRecurrent, TorchTensor};
