//! The sign-based Rprop of the counting-ones tutorial.
//!
//! Each weight has its own step size `Δ`. With `s_t = sign(g_t)` (and `sign(0) = 0`) and the
//! previous sign `s_{t-1}` (zero before the first step):
//!
//! ```text
//! Δ ← Δ·eta_plus    if s_t = s_{t-1}
//! Δ ← Δ·eta_minus   otherwise
//! w ← w - s_t·Δ
//! ```
//!
//! Because the previous sign starts at zero, the first step always shrinks `Δ` by `eta_minus`.
//! Only the sign of the gradient is used, which makes the update immune to exploding gradients.
//! For PyTorch's variant (step clamping, zeroed gradient after a sign flip) see [`crate::Rprop`].

use std::collections::BTreeMap;

use rnn_tensor::{ParamMut, Scalar};

use crate::error::{check, check_etas};
use crate::optimizer::{check_kind, check_len, from_f64, to_f64};
use crate::{OptimError, OptimState, Optimizer};

/// Configuration of [`BasicRprop`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BasicRpropConfig {
    /// The initial step size `Δ` of every weight. Default 0.001.
    pub initial_step: f64,
    /// Growth factor while the sign holds. Default 1.2.
    pub eta_plus: f64,
    /// Shrink factor when the sign changes. Default 0.5.
    pub eta_minus: f64,
}

impl Default for BasicRpropConfig {
    fn default() -> Self {
        Self { initial_step: 0.001, eta_plus: 1.2, eta_minus: 0.5 }
    }
}

impl BasicRpropConfig {
    /// The defaults (the tutorial's values).
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the initial step size.
    pub fn with_initial_step(mut self, step: f64) -> Self {
        self.initial_step = step;
        self
    }
    /// Sets `eta_plus` and `eta_minus`.
    pub fn with_etas(mut self, eta_plus: f64, eta_minus: f64) -> Self {
        self.eta_plus = eta_plus;
        self.eta_minus = eta_minus;
        self
    }
    /// Requires `0 < eta_minus < 1 < eta_plus` and a positive finite initial step.
    pub fn check(&self) -> Result<(), OptimError> {
        check_etas("rprop", self.eta_minus, self.eta_plus)?;
        check(self.initial_step > 0.0 && self.initial_step.is_finite(), "rprop", || {
            format!("initial_step must be finite and > 0, got {}", self.initial_step)
        })
    }
    /// Checks the configuration and builds the optimizer.
    pub fn build<T: Scalar>(self) -> Result<BasicRprop<T>, OptimError> {
        self.check()?;
        Ok(BasicRprop { cfg: self, step: 0, state: BTreeMap::new() })
    }
}

/// Per-weight state: the step size and the previous gradient sign.
#[derive(Clone, Debug)]
struct Slot<T> {
    delta: Vec<T>,
    sign: Vec<T>,
}

/// The tutorial's sign-based Rprop.
#[derive(Clone, Debug)]
pub struct BasicRprop<T> {
    cfg: BasicRpropConfig,
    step: u64,
    state: BTreeMap<String, Slot<T>>,
}

impl<T: Scalar> BasicRprop<T> {
    /// The current step sizes of a parameter, once it has been seen.
    pub fn step_sizes(&self, name: &str) -> Option<&[T]> {
        self.state.get(name).map(|s| s.delta.as_slice())
    }
}

fn sign<T: Scalar>(g: T) -> T {
    if g > T::ZERO {
        T::ONE
    } else if g < T::ZERO {
        -T::ONE
    } else {
        T::ZERO
    }
}

impl<T: Scalar> Optimizer<T> for BasicRprop<T> {
    fn name(&self) -> &'static str {
        "basic_rprop"
    }

    fn step(&mut self, params: &mut [ParamMut<'_, T>]) -> Result<(), OptimError> {
        let (up, down) = (T::cast(self.cfg.eta_plus), T::cast(self.cfg.eta_minus));
        for p in params.iter_mut() {
            check_len(&p.name, p.grad.len(), p.value.len())?;
            let n = p.value.len();
            let slot = self.state.entry(p.name.clone()).or_insert_with(|| Slot {
                delta: vec![T::cast(self.cfg.initial_step); n],
                sign: vec![T::ZERO; n],
            });
            check_len(&p.name, slot.delta.len(), n)?;
            for i in 0..n {
                let s = sign(p.grad[i]);
                slot.delta[i] *= if s == slot.sign[i] { up } else { down };
                slot.sign[i] = s;
                p.value[i] -= s * slot.delta[i];
            }
        }
        self.step += 1;
        Ok(())
    }

    /// The initial step size plays the part of the learning rate.
    fn lr(&self) -> f64 {
        self.cfg.initial_step
    }

    /// Sets the initial step size of weights not seen yet.
    fn set_lr(&mut self, lr: f64) {
        self.cfg.initial_step = lr;
    }

    fn state(&self) -> OptimState {
        let mut buffers = BTreeMap::new();
        for (k, s) in &self.state {
            buffers.insert(format!("{k}/step_size"), to_f64(&s.delta));
            buffers.insert(format!("{k}/prev_sign"), to_f64(&s.sign));
        }
        OptimState { kind: "basic_rprop".into(), step: self.step, scalars: BTreeMap::new(), buffers }
    }

    fn load_state(&mut self, state: &OptimState) -> Result<(), OptimError> {
        check_kind(state, "basic_rprop")?;
        let mut out = BTreeMap::new();
        for (k, v) in &state.buffers {
            if let Some(name) = k.strip_suffix("/step_size") {
                let sign = state.buffers.get(&format!("{name}/prev_sign")).ok_or_else(|| {
                    OptimError::BadState(format!("{name}: step_size saved without prev_sign"))
                })?;
                check_len(name, sign.len(), v.len())?;
                out.insert(name.to_string(), Slot { delta: from_f64(v), sign: from_f64(sign) });
            } else if !k.ends_with("/prev_sign") {
                return Err(OptimError::BadState(format!("unexpected Rprop buffer {k:?}")));
            }
        }
        self.state = out;
        self.step = state.step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_sign_rule_by_hand() {
        let mut opt = BasicRpropConfig::new().build::<f64>().unwrap();
        let mut w = vec![0.0, 0.0];
        // First step: previous sign 0 differs from +1 and -1: Δ = 0.001·0.5.
        opt.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &[2.0, -3.0] }]).unwrap();
        assert_eq!(w, vec![-0.0005, 0.0005]);
        // Same signs: Δ = 0.0005·1.2.
        opt.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &[1.0, 1.0] }]).unwrap();
        assert!((w[0] - (-0.0005 - 0.0006)).abs() < 1e-18);
        // Second weight flipped: Δ = 0.0005·0.5, moved down.
        assert!((w[1] - (0.0005 - 0.00025)).abs() < 1e-18);
        assert_eq!(opt.step_sizes("w").unwrap(), &[0.0006, 0.00025]);
    }

    #[test]
    fn bad_etas_are_rejected() {
        assert!(BasicRpropConfig::new().with_etas(0.9, 0.5).build::<f64>().is_err());
        assert!(BasicRpropConfig::new().with_etas(1.2, 1.0).build::<f64>().is_err());
        assert!(BasicRpropConfig::new().with_initial_step(0.0).build::<f64>().is_err());
        let e = BasicRpropConfig::new().with_etas(1.2, -0.5).build::<f32>().unwrap_err();
        assert!(e.to_string().contains("eta_minus"), "{e}");
    }
}
