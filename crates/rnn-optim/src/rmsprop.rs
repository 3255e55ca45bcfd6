//! RMSprop with PyTorch's semantics (`torch.optim.RMSprop`).
//!
//! For each parameter `p` with gradient `g`, with `s` (and `ḡ`, `b`) starting at zero:
//!
//! ```text
//! g ← g + λ·p                          if weight_decay λ ≠ 0
//! s ← α·s + (1 - α)·g²
//! ḡ ← ḡ + (1 - α)·(g - ḡ)               centered only (running mean of g)
//! d = sqrt(s - ḡ²) + ε                  centered    (an estimate of the gradient's std)
//! d = sqrt(s) + ε                       otherwise
//! b ← μ·b + g / d,   p ← p - lr·b       if momentum μ > 0
//! p ← p - lr·g / d                      otherwise
//! ```
//!
//! Note that `ε` is added outside the square root, and that there is no bias correction: with
//! `α = 0.99` the first steps are about `1/sqrt(1 - α) = 10` times larger than later ones.

use rnn_tensor::Scalar;

use crate::adam::lerp;
use crate::error::check_nonneg;
use crate::stateful::{Stateful, UpdateRule};
use crate::OptimError;

/// Configuration of [`RmsProp`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate. Default 1e-2.
    pub lr: f64,
    /// Smoothing constant `α` of the running averages. Default 0.99.
    pub alpha: f64,
    /// Added to the denominator for numerical stability. Default 1e-8.
    pub eps: f64,
    /// L2 penalty `λ` added to the gradient. Default 0.
    pub weight_decay: f64,
    /// Momentum factor `μ`. Default 0.
    pub momentum: f64,
    /// Normalise by the gradient's estimated variance instead of its second moment. Default false.
    pub centered: bool,
}

/// RMSprop as `torch.optim.RMSprop` (see the module documentation for the rule). Buffers per
/// parameter: `square_avg` (`s`), with momentum `momentum_buffer` (`b`), when centered
/// `grad_avg` (`ḡ`).
pub type RmsProp<T> = Stateful<T, RmsPropConfig>;

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self { lr: 1e-2, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

impl RmsPropConfig {
    /// PyTorch's defaults with the given learning rate.
    pub fn new(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }
    /// Sets the smoothing constant `α`.
    pub fn with_alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// Sets `ε`.
    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Sets the weight decay `λ`.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// Sets the momentum factor `μ`.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Turns the centered variant on or off.
    pub fn with_centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    /// Checks the hyperparameters as PyTorch does (`lr, alpha, eps, weight_decay, momentum >= 0`)
    /// and also requires `alpha <= 1`, without which the average is not an average; all finite.
    pub fn check(&self) -> Result<(), OptimError> {
        check_nonneg("rmsprop", "lr", self.lr)?;
        check_nonneg("rmsprop", "alpha", self.alpha)?;
        crate::error::check(self.alpha <= 1.0, "rmsprop", || {
            format!("alpha must be in [0, 1], got {}", self.alpha)
        })?;
        check_nonneg("rmsprop", "eps", self.eps)?;
        check_nonneg("rmsprop", "weight_decay", self.weight_decay)?;
        check_nonneg("rmsprop", "momentum", self.momentum)
    }

    /// Checks the configuration and builds the optimizer.
    pub fn build<T: Scalar>(self) -> Result<RmsProp<T>, OptimError> {
        self.check()?;
        Ok(Stateful::new(self))
    }
}

impl UpdateRule for RmsPropConfig {
    const NAME: &'static str = "rmsprop";

    fn buffer_names(&self) -> Vec<&'static str> {
        let mut names = vec!["square_avg"];
        if self.momentum > 0.0 {
            names.push("momentum_buffer");
        }
        if self.centered {
            names.push("grad_avg");
        }
        names
    }

    fn initial_values(&self) -> Vec<f64> {
        vec![0.0; self.buffer_names().len()]
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn update<T: Scalar>(&self, _step: u64, value: &mut [T], grad: &[T], buffers: &mut [Vec<T>]) {
        let neg_lr = T::cast(-self.lr);
        let alpha = T::cast(self.alpha);
        let w = T::cast(1.0 - self.alpha);
        let eps = T::cast(self.eps);
        let wd = T::cast(self.weight_decay);
        let mu = T::cast(self.momentum);
        let (sq, rest) = buffers.split_first_mut().expect("rmsprop keeps square_avg");
        let (mut mom, mut avg) = match (self.momentum > 0.0, rest) {
            (_, [b, a]) => (Some(b), Some(a)),
            (true, [b]) => (Some(b), None),
            (false, [a]) => (None, Some(a)),
            _ => (None, None),
        };
        for i in 0..value.len() {
            let mut g = grad[i];
            if self.weight_decay != 0.0 {
                g += wd * value[i];
            }
            // s ← α·s + ((1 - α)·g)·g
            sq[i] = sq[i] * alpha + w * g * g;
            let d = match avg.as_deref_mut() {
                Some(ga) => {
                    ga[i] = lerp(ga[i], g, w);
                    // sqrt(s + (-ḡ)·ḡ)
                    (sq[i] - ga[i] * ga[i]).sqrt()
                }
                None => sq[i].sqrt(),
            } + eps;
            match mom.as_deref_mut() {
                Some(b) => {
                    b[i] = b[i] * mu + g / d;
                    value[i] += neg_lr * b[i];
                }
                None => value[i] += neg_lr * g / d,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamMut};

    #[test]
    fn first_step_by_hand() {
        // s = 0.01·g², d = 0.1·|g| + ε, so w moves by lr·10·sign(g) (up to ε).
        let mut opt = RmsPropConfig::new(0.01).build::<f64>().unwrap();
        let mut w = vec![0.0, 0.0];
        opt.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &[2.0, -4.0] }]).unwrap();
        assert!((w[0] + 0.1).abs() < 1e-8 && (w[1] - 0.1).abs() < 1e-8, "{w:?}");
        assert_eq!(opt.config().buffer_names(), vec!["square_avg"]);
        let both = RmsPropConfig::new(0.01).with_momentum(0.9).with_centered(true);
        assert_eq!(both.buffer_names(), vec!["square_avg", "momentum_buffer", "grad_avg"]);
    }

    #[test]
    fn bad_hyperparameters_are_named() {
        let msg = |c: RmsPropConfig| c.build::<f64>().unwrap_err().to_string();
        assert!(msg(RmsPropConfig::new(-1.0)).contains("lr"));
        assert!(msg(RmsPropConfig::new(0.1).with_alpha(-0.5)).contains("alpha"));
        assert!(msg(RmsPropConfig::new(0.1).with_alpha(1.5)).contains("alpha"));
        assert!(msg(RmsPropConfig::new(0.1).with_eps(-1e-8)).contains("eps"));
        assert!(msg(RmsPropConfig::new(0.1).with_momentum(f64::NAN)).contains("momentum"));
        assert!(msg(RmsPropConfig::new(0.1).with_weight_decay(-1.0)).contains("weight_decay"));
    }
}
