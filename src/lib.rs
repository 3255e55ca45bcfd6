#![doc = include_str!("../README.md")]
//!
//! ## This crate
//!
//! A thin umbrella over the workspace's crates: [`tensor`] (`rnn-tensor`), [`cells`]
//! (`rnn-cells`), [`optim`] (`rnn-optim`), [`data`] (`rnn-data`), [`io`] (`rnn-io`) and [`charlm`], re-exported under
//! those names, with a [`prelude`] of the names most programs need. The tutorial examples
//! (`examples/`), the benches and the end-to-end tests live in this package; run a stage with
//! `cargo run --release --example NAME` from the workspace root.

#[doc(inline)]
pub use charlm;
#[doc(inline)]
pub use rnn_cells as cells;
#[doc(inline)]
pub use rnn_data as data;
#[doc(inline)]
pub use rnn_io as io;
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
