//! Resilient backpropagation with PyTorch's semantics (`torch.optim.Rprop`).
//!
//! Each weight has a step size `Δ`, starting at `lr`, and remembers the gradient it used last
//! (`g_prev`, zero before the first step). At each step, with `ε⁻, ε⁺` = `etas` and
//! `[Δ_min, Δ_max]` = `step_sizes`:
//!
//! ```text
//! Δ ← clamp(Δ·ε⁺, Δ_min, Δ_max)   if g·g_prev > 0      (same sign: speed up)
//! Δ ← clamp(Δ·ε⁻, Δ_min, Δ_max)   if g·g_prev < 0      (sign flipped: slow down)
//! Δ ← clamp(Δ,    Δ_min, Δ_max)   if g·g_prev = 0
//! g ← 0                            if g·g_prev < 0      (skip the step after a flip)
//! w ← w - sign(g)·Δ
//! g_prev ← g
//! ```
//!
//! Zeroing the gradient after a flip means the next step sees `g·g_prev = 0` and keeps `Δ`, so a
//! flip is not punished twice. This differs from the counting-ones tutorial's rule
//! ([`crate::BasicRprop`]), which has no clamp, no skipped step, and shrinks `Δ` whenever the
//! sign differs from the previous one, including from zero.
//!
//! The learning rate is only the initial step size: [`crate::Optimizer::set_lr`] affects parameters
//! seen for the first time afterwards, as in PyTorch.

use rnn_tensor::Scalar;

use crate::error::{check, check_etas, check_nonneg};
use crate::stateful::{Stateful, UpdateRule};
use crate::OptimError;

/// Configuration of [`Rprop`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RpropConfig {
    /// Learning rate: the initial step size of every weight. Default 1e-2.
    pub lr: f64,
    /// Shrink factor `ε⁻` after a sign flip. Default 0.5.
    pub eta_minus: f64,
    /// Growth factor `ε⁺` while the sign holds. Default 1.2.
    pub eta_plus: f64,
    /// Smallest step size `Δ_min`. Default 1e-6.
    pub step_min: f64,
    /// Largest step size `Δ_max`. Default 50.
    pub step_max: f64,
}

impl Default for RpropConfig {
    fn default() -> Self {
        Self { lr: 1e-2, eta_minus: 0.5, eta_plus: 1.2, step_min: 1e-6, step_max: 50.0 }
    }
}

impl RpropConfig {
    /// PyTorch's defaults with the given learning rate (initial step size).
    pub fn new(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }
    /// Sets `(eta_minus, eta_plus)`, in PyTorch's `etas` order.
    pub fn with_etas(mut self, eta_minus: f64, eta_plus: f64) -> Self {
        self.eta_minus = eta_minus;
        self.eta_plus = eta_plus;
        self
    }
    /// Sets the step size range `(min, max)`, PyTorch's `step_sizes`.
    pub fn with_step_sizes(mut self, min: f64, max: f64) -> Self {
        self.step_min = min;
        self.step_max = max;
        self
    }

    /// Requires `lr >= 0`, `0 < eta_minus < 1 < eta_plus` and `0 < step_min <= step_max`, all
    /// finite.
    pub fn check(&self) -> Result<(), OptimError> {
        check_nonneg("rprop", "lr", self.lr)?;
        check_etas("rprop", self.eta_minus, self.eta_plus)?;
        check(self.step_min > 0.0 && self.step_min.is_finite(), "rprop", || {
            format!("step_min (step_sizes.0) must be finite and > 0, got {}", self.step_min)
        })?;
        check(self.step_max >= self.step_min && self.step_max.is_finite(), "rprop", || {
            format!(
                "step_max (step_sizes.1) must be finite and >= step_min = {}, got {}",
                self.step_min, self.step_max
            )
        })
    }

    /// Checks the configuration and builds the optimizer.
    pub fn build<T: Scalar>(self) -> Result<Rprop<T>, OptimError> {
        self.check()?;
        Ok(Stateful::new(self))
    }
}

/// Rprop as `torch.optim.Rprop` (see the module documentation for the rule). Buffers per
/// parameter: `prev` (the gradient used last) and `step_size` (`Δ`).
pub type Rprop<T> = Stateful<T, RpropConfig>;

impl<T: Scalar> Rprop<T> {
    /// The current step sizes `Δ` of a parameter, once it has been seen.
    pub fn step_sizes(&self, name: &str) -> Option<&[T]> {
        self.buffer(name, "step_size")
    }
}

impl UpdateRule for RpropConfig {
    const NAME: &'static str = "rprop";

    fn buffer_names(&self) -> Vec<&'static str> {
        vec!["prev", "step_size"]
    }

    /// `Δ` starts at the current `lr`.
    fn initial_values(&self) -> Vec<f64> {
        vec![0.0, self.lr]
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the initial step size of parameters not seen yet (PyTorch reads `lr` only then).
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn update<T: Scalar>(&self, _step: u64, value: &mut [T], grad: &[T], buffers: &mut [Vec<T>]) {
        let (up, down) = (T::cast(self.eta_plus), T::cast(self.eta_minus));
        let (lo, hi) = (T::cast(self.step_min), T::cast(self.step_max));
        let [prev, delta] = buffers else { unreachable!("rprop keeps two buffers") };
        for i in 0..value.len() {
            let mut g = grad[i];
            let s = g * prev[i];
            let factor = if s > T::ZERO {
                up
            } else if s < T::ZERO {
                down
            } else {
                T::ONE
            };
            // Δ ← clamp(Δ·factor, Δ_min, Δ_max)
            delta[i] = (delta[i] * factor).max(lo).min(hi);
            if s < T::ZERO {
                g = T::ZERO;
            }
            // w ← w - sign(g)·Δ   (sign(0) = 0)
            if g > T::ZERO {
                value[i] -= delta[i];
            } else if g < T::ZERO {
                value[i] += delta[i];
            }
            prev[i] = g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamMut};

    fn step(opt: &mut Rprop<f64>, w: &mut [f64], g: &[f64]) {
        opt.step(&mut [ParamMut { name: "w".into(), value: w, grad: g }]).unwrap();
    }

    #[test]
    fn follows_torch_rule_by_hand() {
        let mut opt = RpropConfig::new(0.1).build::<f64>().unwrap();
        let mut w = vec![0.0, 0.0, 0.0];
        // First step: g_prev = 0, Δ stays 0.1, w moves by -sign(g)·0.1.
        step(&mut opt, &mut w, &[2.0, -3.0, 0.0]);
        assert_eq!(w, vec![-0.1, 0.1, 0.0]);
        // Same sign: Δ = 0.12. Flip: Δ = 0.05, but the step is skipped and g_prev becomes 0.
        step(&mut opt, &mut w, &[1.0, 1.0, 1.0]);
        assert_eq!(w[0], -0.1 - 0.1 * 1.2);
        assert_eq!(w[1], 0.1);
        assert_eq!(w[2], -0.1);
        assert_eq!(opt.step_sizes("w").unwrap(), &[0.1 * 1.2, 0.05, 0.1]);
        // After the skipped step g_prev = 0: Δ is kept, the step is taken.
        step(&mut opt, &mut w, &[1.0, 1.0, 1.0]);
        assert_eq!(w[1], 0.1 - 0.05);
        assert_eq!(opt.step_sizes("w").unwrap(), &[0.1 * 1.2 * 1.2, 0.05, 0.1 * 1.2]);
    }

    #[test]
    fn step_sizes_are_clamped() {
        let mut opt = RpropConfig::new(1.0).with_step_sizes(0.4, 1.5).build::<f64>().unwrap();
        let mut w = vec![0.0];
        for _ in 0..4 {
            step(&mut opt, &mut w, &[1.0]);
        }
        assert_eq!(opt.step_sizes("w").unwrap(), &[1.5]);
        for g in [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0] {
            step(&mut opt, &mut w, &[g]);
        }
        assert_eq!(opt.step_sizes("w").unwrap(), &[0.4]);
    }

    #[test]
    fn bad_hyperparameters_are_named() {
        let msg = |c: RpropConfig| c.build::<f64>().unwrap_err().to_string();
        assert!(msg(RpropConfig::new(-0.1)).contains("lr"));
        assert!(msg(RpropConfig::new(0.1).with_etas(1.0, 1.2)).contains("eta_minus"));
        assert!(msg(RpropConfig::new(0.1).with_etas(0.0, 1.2)).contains("eta_minus"));
        assert!(msg(RpropConfig::new(0.1).with_etas(0.5, 1.0)).contains("eta_plus"));
        assert!(msg(RpropConfig::new(0.1).with_etas(0.5, f64::INFINITY)).contains("eta_plus"));
        assert!(msg(RpropConfig::new(0.1).with_step_sizes(0.0, 1.0)).contains("step_min"));
        assert!(msg(RpropConfig::new(0.1).with_step_sizes(1.0, 0.5)).contains("step_max"));
        assert!(RpropConfig::default().build::<f32>().is_ok());
        assert!(RpropConfig::new(0.1).with_step_sizes(0.5, 0.5).build::<f32>().is_ok());
    }
}
