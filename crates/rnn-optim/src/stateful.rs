//! The optimizers whose update is elementwise with a fixed set of per-parameter buffers
//! (Rprop, Adam, AdamW, RMSprop, Adagrad): one [`Optimizer`] implementation for all of them.
//!
//! A rule ([`UpdateRule`], implemented by each configuration type) names its buffers, gives
//! their initial values and updates one parameter; [`Stateful`] keeps the buffers by parameter
//! name together with each parameter's step count (as PyTorch keeps `state[p]["step"]`), and
//! saves and restores them.

use std::collections::BTreeMap;
use std::fmt::Debug;

use rnn_tensor::{ParamMut, Scalar};

use crate::optimizer::{check_kind, check_len, from_f64, to_f64};
use crate::{OptimError, OptimState, Optimizer};

/// An elementwise update rule with named per-parameter buffers: what a configuration type such
/// as [`crate::AdamConfig`] implements to become the optimizer [`Stateful<T, Self>`].
pub trait UpdateRule: Clone + Debug {
    /// The optimizer's name (`"adam"`, ...), also the kind of its saved state.
    const NAME: &'static str;
    /// The buffers kept per parameter (for example `["exp_avg", "exp_avg_sq"]`).
    fn buffer_names(&self) -> Vec<&'static str>;
    /// The value every entry of each buffer starts with, in the order of
    /// [`UpdateRule::buffer_names`].
    fn initial_values(&self) -> Vec<f64>;
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate.
    fn set_lr(&mut self, lr: f64);
    /// Updates one parameter in place. `step` counts this parameter's steps including this
    /// one (1 on the first); `buffers` are its buffers, each as long as `value` and `grad`.
    fn update<T: Scalar>(&self, step: u64, value: &mut [T], grad: &[T], buffers: &mut [Vec<T>]);
}

/// An optimizer made of an [`UpdateRule`] and its per-parameter state. The public optimizer
/// types are aliases of it: [`crate::Rprop`], [`crate::Adam`], [`crate::AdamW`],
/// [`crate::RmsProp`], [`crate::Adagrad`].
#[derive(Clone, Debug)]
pub struct Stateful<T, R> {
    rule: R,
    step: u64,
    names: Vec<&'static str>,
    slots: BTreeMap<String, Slot<T>>,
}

/// One parameter's state.
#[derive(Clone, Debug)]
struct Slot<T> {
    step: u64,
    bufs: Vec<Vec<T>>,
}

impl<T: Scalar, R: UpdateRule> Stateful<T, R> {
    /// An optimizer with no state yet. Call it through the configuration's `build`, which
    /// checks the hyperparameters first.
    pub(crate) fn new(rule: R) -> Self {
        let names = rule.buffer_names();
        Self { rule, step: 0, names, slots: BTreeMap::new() }
    }

    /// The configuration.
    pub fn config(&self) -> &R {
        &self.rule
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The buffer `buffer` (one of [`UpdateRule::buffer_names`]) of parameter `name`, once the
    /// parameter has been seen.
    pub fn buffer(&self, name: &str, buffer: &str) -> Option<&[T]> {
        let k = self.names.iter().position(|&b| b == buffer)?;
        self.slots.get(name).map(|s| s.bufs[k].as_slice())
    }
}

impl<T: Scalar, R: UpdateRule> Optimizer<T> for Stateful<T, R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn step(&mut self, params: &mut [ParamMut<'_, T>]) -> Result<(), OptimError> {
        for p in params.iter() {
            check_len(&p.name, p.grad.len(), p.value.len())?;
            if let Some(slot) = self.slots.get(&p.name) {
                check_len(&p.name, slot.bufs.first().map_or(p.value.len(), Vec::len), p.value.len())?;
            }
        }
        let init = self.rule.initial_values();
        for p in params.iter_mut() {
            let n = p.value.len();
            let slot = self.slots.entry(p.name.clone()).or_insert_with(|| Slot {
                step: 0,
                bufs: init.iter().map(|&v| vec![T::cast(v); n]).collect(),
            });
            slot.step += 1;
            self.rule.update(slot.step, p.value, p.grad, &mut slot.bufs);
        }
        self.step += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.rule.lr()
    }

    fn set_lr(&mut self, lr: f64) {
        self.rule.set_lr(lr);
    }

    fn state(&self) -> OptimState {
        let mut buffers = BTreeMap::new();
        for (name, slot) in &self.slots {
            buffers.insert(format!("{name}/step"), vec![slot.step as f64]);
            for (b, buf) in self.names.iter().zip(&slot.bufs) {
                buffers.insert(format!("{name}/{b}"), to_f64(buf));
            }
        }
        OptimState {
            kind: R::NAME.into(),
            step: self.step,
            scalars: [("lr".to_string(), self.rule.lr())].into_iter().collect(),
            buffers,
        }
    }

    /// Restores the state, checking that every parameter has exactly this rule's buffers (the
    /// set depends on options such as `amsgrad`) of one length.
    fn load_state(&mut self, state: &OptimState) -> Result<(), OptimError> {
        check_kind(state, R::NAME)?;
        let mut slots = BTreeMap::new();
        for (key, v) in &state.buffers {
            let (name, buf) = key.rsplit_once('/').ok_or_else(|| {
                OptimError::BadState(format!("buffer key {key:?} is not <parameter>/<buffer>"))
            })?;
            if buf != "step" {
                if !self.names.contains(&buf) {
                    return Err(OptimError::BadState(format!(
                        "unexpected buffer {key:?}: {} with these options keeps {:?} per parameter; \
                         resume with the options the state was saved with",
                        R::NAME,
                        self.names
                    )));
                }
                if !state.buffers.contains_key(&format!("{name}/step")) {
                    return Err(OptimError::BadState(format!("buffer {key:?} has no {name}/step entry")));
                }
                continue;
            }
            let step = match v.as_slice() {
                [s] if *s >= 0.0 && s.fract() == 0.0 => *s as u64,
                _ => return Err(OptimError::BadState(format!("{key} must be one whole number, got {v:?}"))),
            };
            let mut bufs: Vec<Vec<T>> = Vec::with_capacity(self.names.len());
            for b in &self.names {
                let saved = state.buffers.get(&format!("{name}/{b}")).ok_or_else(|| {
                    OptimError::BadState(format!(
                        "{name}: buffer {b:?} is missing; resume with the options the state was saved with"
                    ))
                })?;
                if let Some(first) = bufs.first() {
                    check_len(name, saved.len(), first.len())?;
                }
                bufs.push(from_f64(saved));
            }
            slots.insert(name.to_string(), Slot { step, bufs });
        }
        if let Some(&lr) = state.scalars.get("lr") {
            self.rule.set_lr(lr);
        }
        self.slots = slots;
        self.step = state.step;
        Ok(())
    }
}
