//! # rnn-cells: recurrent cells with hand-written backward passes
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

mod error;
mod recurrence;

pub mod affine;
pub mod linear;
pub mod loss;
pub mod rnn;

pub use affine::{Affine, AffineParams};
pub use error::CellError;
pub use linear::{last_state_mse, LinearCache, LinearCell, LinearConfig, LinearParams, LinearState};
pub use recurrence::{Recurrence, SeqInput};
pub use rnn::{Rnn, RnnCache, RnnConfig, RnnParams, RnnState};
