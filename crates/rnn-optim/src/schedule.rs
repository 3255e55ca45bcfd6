//! Learning-rate schedules: constant, exponential decay per epoch, step decay.
//!
//! With the base learning rate `lr₀` and the epoch `e = 0, 1, 2, ...`:
//!
//! ```text
//! constant      lr(e) = lr₀
//! exponential   lr(e) = lr₀·γᵉ                  torch.optim.lr_scheduler.ExponentialLR
//! step          lr(e) = lr₀·γ^⌊e / step_size⌋    torch.optim.lr_scheduler.StepLR
//! ```
//!
//! The seed tutorial's solver decays its learning rate by 0.99 after every epoch: that is
//! `ExponentialLr::new(lr, 0.99)`. PyTorch's schedulers update the optimizer's learning rate by
//! multiplying it by `γ` at each decay, so `lr(e)` here is computed the same way (`lr₀·γ·γ·…`,
//! not `powi`), which reproduces torch's values bit for bit.
//!
//! Use: at the start of epoch `e`, `schedule.apply(&mut optimizer, e)` (or
//! `optimizer.set_lr(schedule.lr_at(e))`).

use rnn_tensor::Scalar;

use crate::error::check;
use crate::{OptimError, Optimizer};

/// A learning rate for every epoch.
pub trait LrSchedule {
    /// The learning rate of epoch `epoch` (0 is the first).
    fn lr_at(&self, epoch: u64) -> f64;

    /// Sets the optimizer's learning rate to [`LrSchedule::lr_at`]`(epoch)`.
    fn apply<T: Scalar>(&self, opt: &mut (impl Optimizer<T> + ?Sized), epoch: u64)
    where
        Self: Sized,
    {
        opt.set_lr(self.lr_at(epoch));
    }
}

fn check_lr(lr: f64) -> Result<(), OptimError> {
    check(lr.is_finite() && lr >= 0.0, "lr schedule", || format!("base lr must be finite and >= 0, got {lr}"))
}

fn check_gamma(gamma: f64) -> Result<(), OptimError> {
    check(gamma.is_finite() && gamma > 0.0, "lr schedule", || {
        format!("gamma must be finite and > 0 (below 1 to decay), got {gamma}")
    })
}

/// `lr₀·γ·γ·…` with `n` factors, as torch's chained schedulers compute it.
fn decay(lr: f64, gamma: f64, n: u64) -> f64 {
    (0..n).fold(lr, |lr, _| lr * gamma)
}

/// The same learning rate every epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConstantLr {
    /// The learning rate.
    pub lr: f64,
}

impl ConstantLr {
    /// A constant schedule; `lr` must be finite and `>= 0`.
    pub fn new(lr: f64) -> Result<Self, OptimError> {
        check_lr(lr)?;
        Ok(Self { lr })
    }
}

impl LrSchedule for ConstantLr {
    fn lr_at(&self, _epoch: u64) -> f64 {
        self.lr
    }
}

/// `lr₀·γᵉ`, as `torch.optim.lr_scheduler.ExponentialLR`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialLr {
    /// The learning rate of epoch 0.
    pub base_lr: f64,
    /// The factor applied after every epoch (the seed's `lr_decay`, 0.99).
    pub gamma: f64,
}

impl ExponentialLr {
    /// An exponential schedule; `base_lr >= 0` and `gamma > 0`, both finite.
    pub fn new(base_lr: f64, gamma: f64) -> Result<Self, OptimError> {
        check_lr(base_lr)?;
        check_gamma(gamma)?;
        Ok(Self { base_lr, gamma })
    }
}

impl LrSchedule for ExponentialLr {
    fn lr_at(&self, epoch: u64) -> f64 {
        decay(self.base_lr, self.gamma, epoch)
    }
}

/// `lr₀·γ^⌊e / step_size⌋`, as `torch.optim.lr_scheduler.StepLR`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLr {
    /// The learning rate of epochs `0..step_size`.
    pub base_lr: f64,
    /// Epochs between decays.
    pub step_size: u64,
    /// The factor applied every `step_size` epochs (torch's default 0.1).
    pub gamma: f64,
}

impl StepLr {
    /// A step schedule; `base_lr >= 0`, `step_size >= 1`, `gamma > 0`, all finite.
    pub fn new(base_lr: f64, step_size: u64, gamma: f64) -> Result<Self, OptimError> {
        check_lr(base_lr)?;
        check(step_size >= 1, "lr schedule", || "step_size must be >= 1 epoch, got 0".to_string())?;
        check_gamma(gamma)?;
        Ok(Self { base_lr, step_size, gamma })
    }
}

impl LrSchedule for StepLr {
    fn lr_at(&self, epoch: u64) -> f64 {
        decay(self.base_lr, self.gamma, epoch / self.step_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SgdConfig;

    #[test]
    fn values_by_hand() {
        let c = ConstantLr::new(0.1).unwrap();
        assert_eq!((c.lr_at(0), c.lr_at(1000)), (0.1, 0.1));
        let e = ExponentialLr::new(2.0, 0.5).unwrap();
        assert_eq!([e.lr_at(0), e.lr_at(1), e.lr_at(3)], [2.0, 1.0, 0.25]);
        let s = StepLr::new(1.0, 3, 0.5).unwrap();
        let lrs: Vec<f64> = (0..7).map(|k| s.lr_at(k)).collect();
        assert_eq!(lrs, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]);
        let mut opt = SgdConfig::new(1.0).build::<f32>().unwrap();
        s.apply(&mut opt, 6);
        assert_eq!(opt.lr(), 0.25);
    }

    #[test]
    fn bad_values_are_named() {
        assert!(ConstantLr::new(-1.0).unwrap_err().to_string().contains("lr"));
        assert!(ExponentialLr::new(0.1, 0.0).unwrap_err().to_string().contains("gamma"));
        assert!(ExponentialLr::new(f64::NAN, 0.9).unwrap_err().to_string().contains("lr"));
        assert!(StepLr::new(0.1, 0, 0.5).unwrap_err().to_string().contains("step_size"));
        assert!(StepLr::new(0.1, 2, f64::INFINITY).unwrap_err().to_string().contains("gamma"));
    }
}
