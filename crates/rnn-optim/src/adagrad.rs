//! Adagrad with PyTorch's semantics (`torch.optim.Adagrad`).
//!
//! For each parameter `p` with gradient `g` at its step `t = 1, 2, ...`, with the sum `S`
//! starting at `initial_accumulator_value`:
//!
//! ```text
//! g ← g + λ·p                          if weight_decay λ ≠ 0
//! lr_t = lr / (1 + (t - 1)·lr_decay)
//! S ← S + g²
//! p ← p - lr_t·g / (sqrt(S) + ε)
//! ```
//!
//! The effective step of each weight shrinks as its squared gradients accumulate, so weights
//! with rare, large gradients keep larger steps than weights with frequent ones.

use rnn_tensor::Scalar;

use crate::error::check_nonneg;
use crate::stateful::{Stateful, UpdateRule};
use crate::OptimError;

/// Configuration of [`Adagrad`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate. Default 1e-2.
    pub lr: f64,
    /// Learning-rate decay per step: `lr_t = lr / (1 + (t - 1)·lr_decay)`. Default 0.
    pub lr_decay: f64,
    /// L2 penalty `λ` added to the gradient. Default 0.
    pub weight_decay: f64,
    /// The value every entry of the sum `S` starts with. Default 0.
    pub initial_accumulator_value: f64,
    /// Added to the denominator for numerical stability. Default 1e-10.
    pub eps: f64,
}

/// Adagrad as `torch.optim.Adagrad` (see the module documentation for the rule). Buffer per
/// parameter: `sum` (`S`).
pub type Adagrad<T> = Stateful<T, AdagradConfig>;

impl Default for AdagradConfig {
    fn default() -> Self {
        Self { lr: 1e-2, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 1e-10 }
    }
}

impl AdagradConfig {
    /// PyTorch's defaults with the given learning rate.
    pub fn new(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }
    /// Sets the learning-rate decay.
    pub fn with_lr_decay(mut self, lr_decay: f64) -> Self {
        self.lr_decay = lr_decay;
        self
    }
    /// Sets the weight decay `λ`.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Sets the initial value of the sum of squared gradients.
    pub fn with_initial_accumulator_value(mut self, value: f64) -> Self {
        self.initial_accumulator_value = value;
        self
    }
    /// Sets `ε`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Checks the hyperparameters as PyTorch does: all `>= 0` and finite.
    pub fn check(&self) -> Result<(), OptimError> {
        check_nonneg("adagrad", "lr", self.lr)?;
        check_nonneg("adagrad", "lr_decay", self.lr_decay)?;
        check_nonneg("adagrad", "weight_decay", self.weight_decay)?;
        check_nonneg("adagrad", "initial_accumulator_value", self.initial_accumulator_value)?;
        check_nonneg("adagrad", "eps", self.eps)
    }

    /// Checks the configuration and builds the optimizer.
    pub fn build<T: Scalar>(self) -> Result<Adagrad<T>, OptimError> {
        self.check()?;
        Ok(Stateful::new(self))
    }
}

impl UpdateRule for AdagradConfig {
    const NAME: &'static str = "adagrad";

    fn buffer_names(&self) -> Vec<&'static str> {
        vec!["sum"]
    }

    fn initial_values(&self) -> Vec<f64> {
        vec![self.initial_accumulator_value]
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn update<T: Scalar>(&self, step: u64, value: &mut [T], grad: &[T], buffers: &mut [Vec<T>]) {
        let clr = self.lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
        let neg_clr = T::cast(-clr);
        let eps = T::cast(self.eps);
        let wd = T::cast(self.weight_decay);
        let [sum] = buffers else { unreachable!("adagrad keeps one buffer") };
        for i in 0..value.len() {
            let mut g = grad[i];
            if self.weight_decay != 0.0 {
                g += wd * value[i];
            }
            sum[i] += g * g;
            // p ← p + (-lr_t·g) / (sqrt(S) + ε)
            value[i] += neg_clr * g / (sum[i].sqrt() + eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamMut};

    #[test]
    fn steps_by_hand() {
        let cfg = AdagradConfig::new(0.1).with_lr_decay(1.0).with_initial_accumulator_value(1.0);
        let mut opt = cfg.with_eps(0.0).build::<f64>().unwrap();
        let mut w = vec![0.0];
        // t = 1: S = 1 + 9 = 10, lr_1 = 0.1: w = -0.1·3/sqrt(10).
        opt.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &[3.0] }]).unwrap();
        assert!((w[0] + 0.3 / 10f64.sqrt()).abs() < 1e-15);
        // t = 2: S = 10 + 16 = 26, lr_2 = 0.1/2.
        opt.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &[4.0] }]).unwrap();
        assert!((w[0] + 0.3 / 10f64.sqrt() + 0.05 * 4.0 / 26f64.sqrt()).abs() < 1e-15);
        assert_eq!(opt.buffer("w", "sum"), Some(&[26.0][..]));
    }

    #[test]
    fn bad_hyperparameters_are_named() {
        let msg = |c: AdagradConfig| c.build::<f32>().unwrap_err().to_string();
        assert!(msg(AdagradConfig::new(-1.0)).contains("lr"));
        assert!(msg(AdagradConfig::new(0.1).with_lr_decay(-0.1)).contains("lr_decay"));
        assert!(msg(AdagradConfig::new(0.1).with_weight_decay(-0.1)).contains("weight_decay"));
        assert!(msg(AdagradConfig::new(0.1).with_initial_accumulator_value(-1.0))
            .contains("initial_accumulator_value"));
        assert!(msg(AdagradConfig::new(0.1).with_eps(f64::INFINITY)).contains("eps"));
    }
}
