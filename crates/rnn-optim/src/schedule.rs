//! Learning-rate schedules: constant, exponential decay per epoch, step decay, char-rnn's decay
//! after a number of epochs, linear warmup, cosine annealing, and one schedule after another.
//!
//! With the base learning rate `lr₀` and the schedule step `t = 0, 1, 2, ...` (an epoch or an
//! optimizer step: the schedules do not care which; PyTorch's count `scheduler.step()` calls):
//!
//! ```text
//! constant      lr(t) = lr₀
//! exponential   lr(t) = lr₀·γᵗ                         torch.optim.lr_scheduler.ExponentialLR
//! step          lr(t) = lr₀·γ^⌊t / step_size⌋           torch.optim.lr_scheduler.StepLR
//! decay after   lr(t) = lr₀·γ^max(0, t + 1 − N)         char-rnn: N epochs at lr₀, then ·γ each
//! linear        lr(t) = lr₀·(s + (e − s)·min(t, n)/n)   torch.optim.lr_scheduler.LinearLR
//! cosine        lr(t) = η + (lr₀ − η)·(1 + cos(π·t/T))/2 torch.optim.lr_scheduler.CosineAnnealingLR
//! sequential    A for t < m, then B restarted at m       torch.optim.lr_scheduler.SequentialLR
//! ```
//!
//! The seed tutorial's solver decays its learning rate by 0.99 after every epoch: that is
//! `ExponentialLr::new(lr, 0.99)`. char-rnn's `-learning_rate_decay 0.97
//! -learning_rate_decay_after 10` is `DecayAfterLr::new(lr, 0.97, 10)`.
//!
//! PyTorch's schedulers update the optimizer's learning rate from its previous value at every
//! `scheduler.step()` (the "chained" form), not from the formulas above, and the two differ in
//! the last bits. Every schedule here computes torch's chained form, operation for operation, so
//! that it reproduces torch's values bit for bit (`tests/torch_parity.rs`): a decay multiplies by
//! `γ` once per decay (`lr₀·γ·γ·…`, not `powi`); [`LinearLr`], [`CosineAnnealingLr`] and
//! [`SequentialLr`] implement [`ChainedLr`], the step from `lr(t − 1)` to `lr(t)`. Their
//! [`LrSchedule::lr_at`] replays `t` steps; [`LrCursor`] walks forward one step at a time, for a
//! schedule queried at every optimizer step.
//!
//! Use: at the start of epoch (or step) `t`, `schedule.apply(&mut optimizer, t)` (or
//! `optimizer.set_lr(schedule.lr_at(t))`).

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

/// char-rnn's decay: `after` epochs at `lr₀`, then a factor `γ` at the start of every later
/// epoch: `lr(e) = lr₀·γ^max(0, e + 1 − after)`. `after = 1` is [`ExponentialLr`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecayAfterLr {
    /// The learning rate of the first `after` epochs.
    pub base_lr: f64,
    /// The factor per epoch after them (char-rnn's `learning_rate_decay`, 0.97).
    pub gamma: f64,
    /// Epochs at the base rate (char-rnn's `learning_rate_decay_after`, 10), at least 1.
    pub after: u64,
}

impl DecayAfterLr {
    /// `base_lr >= 0`, `gamma > 0`, both finite; `after >= 1`.
    pub fn new(base_lr: f64, gamma: f64, after: u64) -> Result<Self, OptimError> {
        check_lr(base_lr)?;
        check_gamma(gamma)?;
        check(after >= 1, "lr schedule", || "after must be >= 1 epoch, got 0".to_string())?;
        Ok(Self { base_lr, gamma, after })
    }
}

impl LrSchedule for DecayAfterLr {
    fn lr_at(&self, epoch: u64) -> f64 {
        decay(self.base_lr, self.gamma, (epoch + 1).saturating_sub(self.after))
    }
}

/// A schedule in PyTorch's chained form: the first value, and each next one from the one before.
pub trait ChainedLr {
    /// `lr(0)`: torch's value after the scheduler is built (its initial step), the optimizer's
    /// learning rate being the base one.
    fn first(&self) -> f64;
    /// `lr(t)` from `prev = lr(t − 1)`, for `t >= 1`: torch's `scheduler.step()`.
    fn next(&self, t: u64, prev: f64) -> f64;
    /// The value when a [`SequentialLr`] hands over to this schedule with the learning rate at
    /// `prev`: torch's `scheduler._update_lr(0)`.
    fn restart(&self, prev: f64) -> f64;
    /// `lr(t)`, replaying `t` steps.
    fn chained_at(&self, t: u64) -> f64 {
        (1..=t).fold(self.first(), |lr, k| self.next(k, lr))
    }
}

/// Linear interpolation of the factor from `start_factor` to `end_factor` over `total_iters`
/// steps, then constant: `torch.optim.lr_scheduler.LinearLR`. A linear warmup is
/// `LinearLr::new(lr, 1.0 / n, 1.0, n)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearLr {
    /// `lr₀`, the optimizer's learning rate.
    pub base_lr: f64,
    /// The factor of step 0, in `(0, 1]` (torch's default 1/3).
    pub start_factor: f64,
    /// The factor from step `total_iters` on, in `[0, 1]` (torch's default 1).
    pub end_factor: f64,
    /// Steps of the interpolation (torch's default 5), at least 1.
    pub total_iters: u64,
}

impl LinearLr {
    /// Checks the factors and `total_iters` as torch does.
    pub fn new(
        base_lr: f64,
        start_factor: f64,
        end_factor: f64,
        total_iters: u64,
    ) -> Result<Self, OptimError> {
        check_lr(base_lr)?;
        check(start_factor > 0.0 && start_factor <= 1.0, "lr schedule", || {
            format!("start_factor must be in (0, 1], got {start_factor}")
        })?;
        check((0.0..=1.0).contains(&end_factor), "lr schedule", || {
            format!("end_factor must be in [0, 1], got {end_factor}")
        })?;
        check(total_iters >= 1, "lr schedule", || "total_iters must be >= 1, got 0".to_string())?;
        Ok(Self { base_lr, start_factor, end_factor, total_iters })
    }
}

impl ChainedLr for LinearLr {
    fn first(&self) -> f64 {
        self.base_lr * self.start_factor
    }
    fn next(&self, t: u64, prev: f64) -> f64 {
        if t > self.total_iters {
            return prev;
        }
        let (s, e, n) = (self.start_factor, self.end_factor, self.total_iters as f64);
        prev * (1.0 + (e - s) / (n * s + (t - 1) as f64 * (e - s)))
    }
    fn restart(&self, prev: f64) -> f64 {
        prev * self.start_factor
    }
}

impl LrSchedule for LinearLr {
    fn lr_at(&self, t: u64) -> f64 {
        self.chained_at(t)
    }
}

/// Cosine annealing from `lr₀` to `eta_min` over `t_max` steps:
/// `torch.optim.lr_scheduler.CosineAnnealingLR` (after `t_max` it rises again, as torch's does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAnnealingLr {
    /// `lr₀`.
    pub base_lr: f64,
    /// `T`, the steps from `lr₀` down to `eta_min`, at least 1.
    pub t_max: u64,
    /// `η`, the floor, in `[0, lr₀]`.
    pub eta_min: f64,
}

impl CosineAnnealingLr {
    /// `base_lr >= eta_min >= 0`, both finite; `t_max >= 1`.
    pub fn new(base_lr: f64, t_max: u64, eta_min: f64) -> Result<Self, OptimError> {
        check_lr(base_lr)?;
        check(eta_min.is_finite() && eta_min >= 0.0 && eta_min <= base_lr, "lr schedule", || {
            format!("eta_min must be in [0, base lr = {base_lr}], got {eta_min}")
        })?;
        check(t_max >= 1, "lr schedule", || "t_max must be >= 1, got 0".to_string())?;
        Ok(Self { base_lr, t_max, eta_min })
    }
}

impl ChainedLr for CosineAnnealingLr {
    fn first(&self) -> f64 {
        self.base_lr
    }
    fn next(&self, t: u64, prev: f64) -> f64 {
        let (eta, tm) = (self.eta_min, self.t_max as f64);
        let pi = std::f64::consts::PI;
        if ((t - 1) as u128 + self.t_max as u128).is_multiple_of(2 * self.t_max as u128) {
            // torch: (last_epoch - 1 - T_max) % (2 T_max) == 0, with Python's modulo.
            prev + (self.base_lr - eta) * (1.0 - (pi / tm).cos()) / 2.0
        } else {
            (1.0 + (pi * t as f64 / tm).cos()) / (1.0 + (pi * (t - 1) as f64 / tm).cos()) * (prev - eta) + eta
        }
    }
    fn restart(&self, _prev: f64) -> f64 {
        // torch's closed form at last_epoch = 0.
        let eta = self.eta_min;
        eta + (self.base_lr - eta) * (1.0 + (std::f64::consts::PI * 0.0 / self.t_max as f64).cos()) / 2.0
    }
}

impl LrSchedule for CosineAnnealingLr {
    fn lr_at(&self, t: u64) -> f64 {
        self.chained_at(t)
    }
}

/// `first` for steps `0..milestone`, then `second`, restarted at the milestone:
/// `torch.optim.lr_scheduler.SequentialLR([first, second], milestones=[milestone])`. Warmup then
/// cosine decay is `SequentialLr::new(LinearLr, CosineAnnealingLr, warmup)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SequentialLr<A, B> {
    /// The schedule of steps `0..milestone`.
    pub first: A,
    /// The schedule from `milestone` on (its step `t − milestone`).
    pub second: B,
    /// The step where `second` takes over, at least 1.
    pub milestone: u64,
}

impl<A: ChainedLr, B: ChainedLr> SequentialLr<A, B> {
    /// `milestone >= 1`.
    pub fn new(first: A, second: B, milestone: u64) -> Result<Self, OptimError> {
        check(milestone >= 1, "lr schedule", || "milestone must be >= 1, got 0".to_string())?;
        Ok(Self { first, second, milestone })
    }
}

impl<A: ChainedLr, B: ChainedLr> ChainedLr for SequentialLr<A, B> {
    fn first(&self) -> f64 {
        self.first.first()
    }
    fn next(&self, t: u64, prev: f64) -> f64 {
        match t.cmp(&self.milestone) {
            std::cmp::Ordering::Less => self.first.next(t, prev),
            std::cmp::Ordering::Equal => self.second.restart(prev),
            std::cmp::Ordering::Greater => self.second.next(t - self.milestone, prev),
        }
    }
    fn restart(&self, prev: f64) -> f64 {
        self.first.restart(prev)
    }
}

impl<A: ChainedLr, B: ChainedLr> LrSchedule for SequentialLr<A, B> {
    fn lr_at(&self, t: u64) -> f64 {
        self.chained_at(t)
    }
}

/// A [`ChainedLr`] walked forward: [`LrCursor::lr_at`] of `t + 1` after `t` costs one step, so
/// a schedule asked at every optimizer step costs O(1) per step; asking for an earlier `t`
/// replays from 0. The values are the schedule's own, bit for bit.
#[derive(Clone, Debug, PartialEq)]
pub struct LrCursor<S> {
    schedule: S,
    t: u64,
    lr: f64,
}

impl<S: ChainedLr> LrCursor<S> {
    /// A cursor at step 0.
    pub fn new(schedule: S) -> Self {
        let lr = schedule.first();
        Self { schedule, t: 0, lr }
    }

    /// The schedule's `lr(t)`.
    pub fn lr_at(&mut self, t: u64) -> f64 {
        if t < self.t {
            (self.t, self.lr) = (0, self.schedule.first());
        }
        while self.t < t {
            self.t += 1;
            self.lr = self.schedule.next(self.t, self.lr);
        }
        self.lr
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
    fn new_schedules_by_hand() {
        let d = DecayAfterLr::new(1.0, 0.5, 3).unwrap();
        let lrs: Vec<f64> = (0..6).map(|e| d.lr_at(e)).collect();
        assert_eq!(lrs, [1.0, 1.0, 1.0, 0.5, 0.25, 0.125]);
        let e = ExponentialLr::new(0.3, 0.9).unwrap();
        let d1 = DecayAfterLr::new(0.3, 0.9, 1).unwrap();
        assert!((0..50).all(|k| e.lr_at(k) == d1.lr_at(k)));
        // Warmup over 4 steps from 1/4: factors 1/4, 7/16, 5/8, 13/16, 1, 1 (exact in binary).
        let w = LinearLr::new(1.0, 0.25, 1.0, 4).unwrap();
        let lrs: Vec<f64> = (0..6).map(|t| w.lr_at(t)).collect();
        assert_eq!(lrs, [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0]);
        // Cosine over 2 steps from 1 to 0: 1, 1/2, 0 (to 1e-15: cos(π/2) is not exactly 0).
        let c = CosineAnnealingLr::new(1.0, 2, 0.0).unwrap();
        for (t, want) in [(0, 1.0), (1, 0.5), (2, 0.0)] {
            assert!((c.lr_at(t) - want).abs() < 1e-15, "{t}: {}", c.lr_at(t));
        }
        let seq = SequentialLr::new(w, CosineAnnealingLr::new(1.0, 10, 0.1).unwrap(), 4).unwrap();
        assert_eq!(seq.lr_at(4), 0.1 + (1.0 - 0.1) * 2.0 / 2.0);
        let mut cur = LrCursor::new(seq);
        let walked: Vec<f64> = (0..20).map(|t| cur.lr_at(t)).collect();
        let direct: Vec<f64> = (0..20).map(|t| seq.lr_at(t)).collect();
        assert_eq!(walked, direct);
        assert_eq!(cur.lr_at(3), seq.lr_at(3));
        assert_eq!(walked[14], 0.1, "the floor at T = 10 steps after the milestone");
    }

    #[test]
    fn bad_values_are_named() {
        assert!(ConstantLr::new(-1.0).unwrap_err().to_string().contains("lr"));
        assert!(ExponentialLr::new(0.1, 0.0).unwrap_err().to_string().contains("gamma"));
        assert!(ExponentialLr::new(f64::NAN, 0.9).unwrap_err().to_string().contains("lr"));
        assert!(StepLr::new(0.1, 0, 0.5).unwrap_err().to_string().contains("step_size"));
        assert!(StepLr::new(0.1, 2, f64::INFINITY).unwrap_err().to_string().contains("gamma"));
        assert!(DecayAfterLr::new(0.1, 0.9, 0).unwrap_err().to_string().contains("after"));
        assert!(LinearLr::new(0.1, 0.0, 1.0, 5).unwrap_err().to_string().contains("start_factor"));
        assert!(LinearLr::new(0.1, 0.5, 1.5, 5).unwrap_err().to_string().contains("end_factor"));
        assert!(LinearLr::new(0.1, 0.5, 1.0, 0).unwrap_err().to_string().contains("total_iters"));
        assert!(CosineAnnealingLr::new(0.1, 0, 0.0).unwrap_err().to_string().contains("t_max"));
        assert!(CosineAnnealingLr::new(0.1, 5, 0.2).unwrap_err().to_string().contains("eta_min"));
        let w = LinearLr::new(0.1, 0.5, 1.0, 5).unwrap();
        let c = CosineAnnealingLr::new(0.1, 5, 0.0).unwrap();
        assert!(SequentialLr::new(w, c, 0).unwrap_err().to_string().contains("milestone"));
    }
}
