//! # rnn-optim: optimizers over named parameter buffers
//!
//! The optimizers know nothing of cells: they see [`ParamMut`] views (a name, the values, the
//! gradient) and keep their per-parameter state by name. Every optimizer is configured the same
//! way: a `*Config` value with PyTorch's defaults, `with_*` setters, and `build()`, which checks
//! the hyperparameters and returns a typed [`OptimError`] naming the bad one.

mod adagrad;
mod adam;
mod clip;
mod error;
mod kind;
mod optimizer;
mod rmsprop;
mod rprop;
mod rprop_basic;
mod schedule;
mod sgd;
mod stateful;

pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamFamilyConfig, AdamW, AdamWConfig};
pub use clip::{
    clip_grad_norm, clip_grad_norm_per_param, clip_grad_value, clip_norm_per_param_slices, clip_norm_slices,
    clip_value_slices, global_norm, tensor_norm, Clip,
};
pub use error::OptimError;
pub use kind::{build_optimizer, OptimizerKind};
pub use optimizer::{step_model, OptimState, Optimizer};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use rnn_tensor::ParamMut;
pub use rprop::{Rprop, RpropConfig};
pub use rprop_basic::{BasicRprop, BasicRpropConfig};
pub use schedule::{ConstantLr, ExponentialLr, LrSchedule, StepLr};
pub use sgd::{Sgd, SgdConfig};
pub use stateful::{Stateful, UpdateRule};
