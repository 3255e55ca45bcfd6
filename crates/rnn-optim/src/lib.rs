#![doc = include_str!("../README.md")]
//!
//! ## rnn-optim: optimizers, gradient clipping and learning-rate schedules
//!
//! The optimizers know nothing of cells: they see [`ParamMut`] views (a name, the values, the
//! gradient) and keep their per-parameter state by name. Every optimizer is configured the same
//! way: a `*Config` value with PyTorch's defaults, `with_*` setters, and `build::<T>()`, which
//! checks the hyperparameters and returns a typed [`OptimError`] naming the bad one.
//!
//! | optimizer | config | PyTorch | update (per weight) |
//! |---|---|---|---|
//! | [`Sgd`] | [`SgdConfig`] | `SGD` | `b ← μb + (1-τ)g`, `p ← p - lr·b` |
//! | [`Rprop`] | [`RpropConfig`] | `Rprop` | `Δ ← clamp(Δ·η±)`, `p ← p - sign(g)·Δ`, skip after a flip |
//! | [`BasicRprop`] | [`BasicRpropConfig`] | (tutorial) | `Δ ← Δ·η±`, `p ← p - sign(g)·Δ` |
//! | [`Adam`] / [`AdamW`] | [`AdamConfig`] / [`AdamWConfig`] | `Adam` / `AdamW` | `p ← p - lr/(1-β₁ᵗ)·m / (sqrt(v)/sqrt(1-β₂ᵗ) + ε)` |
//! | [`RmsProp`] | [`RmsPropConfig`] | `RMSprop` | `p ← p - lr·g / (sqrt(s) + ε)` |
//! | [`Adagrad`] | [`AdagradConfig`] | `Adagrad` | `p ← p - lr_t·g / (sqrt(Σg²) + ε)` |
//!
//! Each module's documentation has the full rule. All of them match `torch.optim` in float64
//! to within 1e-12 over 20 steps (`tests/torch_parity.rs`), and [`Optimizer::state`] /
//! [`Optimizer::load_state`] resume training bit for bit (`tests/resume.rs`).
//! [`OptimizerKind`] and [`build_optimizer`] pick one by name.
//!
//! Gradient clipping ([`Clip`], [`clip_grad_norm`], [`clip_grad_norm_per_param`],
//! [`clip_grad_value`]) and learning-rate schedules ([`LrSchedule`]: [`ConstantLr`],
//! [`ExponentialLr`], [`StepLr`], [`DecayAfterLr`], and in PyTorch's chained form
//! ([`ChainedLr`], [`LrCursor`]) [`LinearLr`], [`CosineAnnealingLr`], [`SequentialLr`])
//! complete a training loop:
//!
//! ```
//! use rnn_optim::{clip_norm_slices, AdamConfig, ExponentialLr, LrSchedule, Optimizer, ParamMut};
//!
//! // Minimise |w - (1, -1)|² with Adam, the seed's lr decay of 0.99 per epoch and clipping.
//! let mut opt = AdamConfig::new(0.1).build::<f64>()?;
//! let schedule = ExponentialLr::new(0.1, 0.99)?;
//! let mut w = vec![0.0, 0.0];
//! for epoch in 0..200 {
//!     schedule.apply(&mut opt, epoch);
//!     let mut g = vec![2.0 * (w[0] - 1.0), 2.0 * (w[1] + 1.0)];
//!     clip_norm_slices(&mut [g.as_mut_slice()], 1.0)?;
//!     opt.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &g }])?;
//! }
//! assert!((w[0] - 1.0).abs() < 1e-2 && (w[1] + 1.0).abs() < 1e-2, "{w:?}");
//! # Ok::<(), rnn_optim::OptimError>(())
//! ```

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
pub use schedule::{
    ChainedLr, ConstantLr, CosineAnnealingLr, DecayAfterLr, ExponentialLr, LinearLr, LrCursor, LrSchedule,
    SequentialLr, StepLr,
};
pub use sgd::{Sgd, SgdConfig};
pub use stateful::{Stateful, UpdateRule};
