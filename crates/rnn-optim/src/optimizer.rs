//! The one optimizer trait and its saved state.

use std::collections::BTreeMap;

use rnn_tensor::{pair_params, ParamMut, Parameters, Scalar};

use crate::OptimError;

/// Everything an optimizer needs to continue exactly where it stopped.
///
/// Buffers are keyed `"<parameter name>/<buffer>"` (for example `weight_ih_l0/exp_avg`) and
/// stored as `f64`, which holds an `f32` value exactly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OptimState {
    /// The optimizer's name, checked on restore.
    pub kind: String,
    /// Steps taken.
    pub step: u64,
    /// Scalar state (for example the current learning rate).
    pub scalars: BTreeMap<String, f64>,
    /// Per-parameter buffers.
    pub buffers: BTreeMap<String, Vec<f64>>,
}

/// An optimizer: updates parameters in place from their gradients.
pub trait Optimizer<T: Scalar> {
    /// The optimizer's name (`"sgd"`, `"adam"`, ...).
    fn name(&self) -> &'static str;
    /// One update of every parameter. State is created on first sight of a name.
    fn step(&mut self, params: &mut [ParamMut<'_, T>]) -> Result<(), OptimError>;
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (what schedules call).
    fn set_lr(&mut self, lr: f64);
    /// Saves the state.
    fn state(&self) -> OptimState;
    /// Restores a state saved by [`Optimizer::state`] of the same kind of optimizer.
    fn load_state(&mut self, state: &OptimState) -> Result<(), OptimError>;
}

/// One step over a whole model: pairs `params` with `grads` by name and calls
/// [`Optimizer::step`].
pub fn step_model<T: Scalar, O: Optimizer<T> + ?Sized, P: Parameters<T> + ?Sized>(
    opt: &mut O,
    params: &mut P,
    grads: &P,
) -> Result<(), OptimError> {
    let mut pairs = pair_params(params, grads)?;
    opt.step(&mut pairs)
}

/// Converts a buffer to `f64` for [`OptimState`].
pub(crate) fn to_f64<T: Scalar>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

/// Converts a saved buffer back.
pub(crate) fn from_f64<T: Scalar>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::cast(x)).collect()
}

/// Checks the kind of a saved state.
pub(crate) fn check_kind(state: &OptimState, kind: &str) -> Result<(), OptimError> {
    if state.kind == kind {
        Ok(())
    } else {
        Err(OptimError::BadState(format!(
            "the state was saved by {:?}, this optimizer is {kind:?}; resume with the same --optimizer",
            state.kind
        )))
    }
}

/// Checks that a buffer created earlier still fits its parameter.
pub(crate) fn check_len(name: &str, buffer: usize, param: usize) -> Result<(), OptimError> {
    if buffer == param {
        Ok(())
    } else {
        Err(OptimError::Mismatch(format!(
            "optimizer state for {name} has {buffer} values, the parameter has {param}"
        )))
    }
}
