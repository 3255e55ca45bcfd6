//! # rnn: recurrent neural networks from scratch
//!
//! A thin umbrella over the workspace's crates; each tutorial stage is one layer of the stack:
//!
//! | crate | what it holds |
//! |---|---|
//! | [`tensor`] (`rnn-tensor`) | scalars, matrices, GEMM/GEMV, activations, init, RNG, gradient checks |
//! | [`cells`] (`rnn-cells`) | the recurrence trait, linear/vanilla/LSTM/GRU cells, stacks, heads, losses |
//! | [`optim`] (`rnn-optim`) | optimizers with PyTorch's semantics, clipping, schedules |
//! | [`data`] (`rnn-data`) | binary streams, binary addition, text corpora |

#[doc(inline)]
pub use rnn_cells as cells;
#[doc(inline)]
pub use rnn_data as data;
#[doc(inline)]
pub use rnn_optim as optim;
#[doc(inline)]
pub use rnn_tensor as tensor;

/// The names most programs need.
pub mod prelude {
    #[doc(no_inline)]
    pub use rnn_tensor::{gemm, Mat, Parameters, Rng, Scalar, Trans};
}
