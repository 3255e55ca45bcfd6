//! # rnn: recurrent neural networks from scratch
//!
//! A thin umbrella over the workspace's crates; each tutorial stage is one layer of the stack:
//!
//! | crate | what it holds | the stage's example |
//! |---|---|---|
//! | [`tensor`] (`rnn-tensor`) | scalars, matrices, GEMM/GEMV, activations, init, RNG, gradient checks | `cargo run -p rnn-tensor --example tensor_tour` |
//! | [`cells`] (`rnn-cells`) | the recurrence trait, linear/vanilla/LSTM/GRU cells, stacks, heads, losses | stage 1 `count_ones`, stage 2 `binary_addition`, stage 3 `gradient_check` |
//! | [`optim`] (`rnn-optim`) | optimizers with PyTorch's semantics, clipping, schedules | `cargo run -p rnn-optim --example compare_optimizers` |
//! | [`data`] (`rnn-data`) | binary streams, binary addition, text corpora | `cargo run -p rnn-data --example binary_streams` |
//! | [`charlm`] | the character-level language model, trainer, sampler, checkpoints | stage 4 `char_lm` |
//!
//! Run a stage with `cargo run --release --example NAME` from the workspace root.

#[doc(inline)]
pub use charlm;
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
    pub use rnn_cells::{
        softmax_cross_entropy, Affine, GruConfig, LinearConfig, LstmConfig, Recurrence, Reduction, RnnConfig,
        SeqInput, Stack,
    };
    #[doc(no_inline)]
    pub use rnn_optim::{
        build_optimizer, clip_grad_norm, step_model, AdamConfig, Optimizer, OptimizerKind, SgdConfig,
    };
    #[doc(no_inline)]
    pub use rnn_tensor::{gemm, Mat, Parameters, Rng, Scalar, Trans};
}
