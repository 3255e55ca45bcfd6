//! Adam and AdamW with PyTorch's semantics (`torch.optim.Adam`, `torch.optim.AdamW`).
//!
//! For each parameter `p` with gradient `g` at its step `t = 1, 2, ...`, with `m`, `v` (and
//! `v_max` for AMSGrad) starting at zero:
//!
//! ```text
//! g ← g + λ·p                        Adam, if weight_decay λ ≠ 0 (L2 penalty in the gradient)
//! p ← p·(1 - lr·λ)                   AdamW (decoupled weight decay, before the update)
//! m ← m + (1 - β₁)·(g - m)            (= β₁·m + (1 - β₁)·g, as torch's lerp computes it)
//! v ← β₂·v + (1 - β₂)·g²
//! v_max ← max(v_max, v)               AMSGrad only; v_max replaces v below
//! denom = sqrt(v) / sqrt(1 - β₂ᵗ) + ε
//! p ← p - (lr / (1 - β₁ᵗ))·m / denom
//! ```
//!
//! The bias corrections and `ε` sit exactly where torch's single-tensor code puts them: `ε` is
//! added after dividing `sqrt(v)` by `sqrt(1 - β₂ᵗ)`, so it acts on the bias-corrected scale.
//! The scalars (`1 - β₁ᵗ`, `lr / (1 - β₁ᵗ)`, `(1 - β₂ᵗ)^0.5`, `1 - lr·λ`) are computed in `f64`
//! as Python does, then cast to `T`.

use rnn_tensor::{parallel, Scalar};

use crate::error::{check_nonneg, check_unit};
use crate::stateful::{Stateful, UpdateRule};
use crate::OptimError;

/// Configuration of Adam (`DECOUPLED = false`, [`AdamConfig`]) and AdamW (`DECOUPLED = true`,
/// [`AdamWConfig`]), with PyTorch's defaults. The two differ only in how `weight_decay` acts
/// and in its default.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamFamilyConfig<const DECOUPLED: bool> {
    /// Learning rate. Default 1e-3.
    pub lr: f64,
    /// Decay rate `β₁` of the first moment. Default 0.9.
    pub beta1: f64,
    /// Decay rate `β₂` of the second moment. Default 0.999.
    pub beta2: f64,
    /// Added to the denominator for numerical stability. Default 1e-8.
    pub eps: f64,
    /// Weight decay `λ`: an L2 term `λ·p` added to the gradient (Adam, default 0) or a decoupled
    /// shrink `p ← p·(1 - lr·λ)` (AdamW, default 1e-2).
    pub weight_decay: f64,
    /// Use the AMSGrad variant (the running maximum of `v`). Default false.
    pub amsgrad: bool,
}

/// Configuration of [`Adam`].
pub type AdamConfig = AdamFamilyConfig<false>;
/// Configuration of [`AdamW`].
pub type AdamWConfig = AdamFamilyConfig<true>;

/// Adam as `torch.optim.Adam` (see the module documentation for the rule). Buffers per
/// parameter: `exp_avg` (`m`), `exp_avg_sq` (`v`) and, with AMSGrad, `max_exp_avg_sq`.
pub type Adam<T> = Stateful<T, AdamConfig>;
/// AdamW as `torch.optim.AdamW`: Adam with decoupled weight decay.
pub type AdamW<T> = Stateful<T, AdamWConfig>;

impl<const DECOUPLED: bool> Default for AdamFamilyConfig<DECOUPLED> {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: if DECOUPLED { 1e-2 } else { 0.0 },
            amsgrad: false,
        }
    }
}

impl<const DECOUPLED: bool> AdamFamilyConfig<DECOUPLED> {
    const KIND: &'static str = if DECOUPLED { "adamw" } else { "adam" };

    /// PyTorch's defaults with the given learning rate.
    pub fn new(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }
    /// Sets `(β₁, β₂)`, PyTorch's `betas`.
    pub fn with_betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
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
    /// Turns AMSGrad on or off.
    pub fn with_amsgrad(mut self, amsgrad: bool) -> Self {
        self.amsgrad = amsgrad;
        self
    }

    /// Checks the hyperparameters as PyTorch does: `lr, eps, weight_decay >= 0`,
    /// `0 <= β₁, β₂ < 1`, all finite.
    pub fn check(&self) -> Result<(), OptimError> {
        check_nonneg(Self::KIND, "lr", self.lr)?;
        check_unit(Self::KIND, "beta1 (betas.0)", self.beta1)?;
        check_unit(Self::KIND, "beta2 (betas.1)", self.beta2)?;
        check_nonneg(Self::KIND, "eps", self.eps)?;
        check_nonneg(Self::KIND, "weight_decay", self.weight_decay)
    }

    /// Checks the configuration and builds the optimizer.
    pub fn build<T: Scalar>(self) -> Result<Stateful<T, Self>, OptimError> {
        self.check()?;
        Ok(Stateful::new(self))
    }
}

/// torch's `lerp(a, b, w)`: `a + w·(b - a)` for `|w| < 0.5`, else `b - (b - a)·(1 - w)`.
#[inline]
pub(crate) fn lerp<T: Scalar>(a: T, b: T, w: T) -> T {
    if w.abs() < T::cast(0.5) {
        a + w * (b - a)
    } else {
        b - (b - a) * (T::ONE - w)
    }
}

impl<const DECOUPLED: bool> UpdateRule for AdamFamilyConfig<DECOUPLED> {
    const NAME: &'static str = Self::KIND;

    fn buffer_names(&self) -> Vec<&'static str> {
        let mut names = vec!["exp_avg", "exp_avg_sq"];
        if self.amsgrad {
            names.push("max_exp_avg_sq");
        }
        names
    }

    fn initial_values(&self) -> Vec<f64> {
        vec![0.0; 2 + usize::from(self.amsgrad)]
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn update<T: Scalar>(&self, step: u64, value: &mut [T], grad: &[T], buffers: &mut [Vec<T>]) {
        let t = step as f64;
        let bias_correction1 = 1.0 - self.beta1.powf(t);
        let bias_correction2 = 1.0 - self.beta2.powf(t);
        let k = AdamStep {
            neg_step_size: T::cast(-(self.lr / bias_correction1)),
            bc2_sqrt: T::cast(bias_correction2.powf(0.5)),
            w1: T::cast(1.0 - self.beta1),
            beta2: T::cast(self.beta2),
            w2: T::cast(1.0 - self.beta2),
            eps: T::cast(self.eps),
            wd: T::cast(self.weight_decay),
            shrink: T::cast(1.0 - self.lr * self.weight_decay),
            decay: if self.weight_decay == 0.0 {
                Decay::None
            } else if DECOUPLED {
                Decay::Decoupled
            } else {
                Decay::L2
            },
        };
        let (moments, max_sq) = buffers.split_at_mut(2);
        let [m, v] = moments else { unreachable!("adam keeps exp_avg and exp_avg_sq") };
        let vmax: &mut [T] = max_sq.first_mut().map_or(&mut [], |b| b.as_mut_slice());
        // The update is elementwise, so any split gives the same bits: large parameters are
        // cut into one piece per thread.
        let parts = if value.len() >= PARALLEL_MIN { parallel::num_threads() } else { 1 };
        let n = value.len();
        let (mut value, mut grad, mut m, mut v, mut vmax) =
            (value, grad, m.as_mut_slice(), v.as_mut_slice(), vmax);
        let mut pieces = Vec::with_capacity(parts);
        for i in 0..parts {
            let len = parallel::split_range(n, i, parts, 16).len();
            let (pv, rv) = value.split_at_mut(len);
            let (pg, rg) = grad.split_at(len);
            let (pm, rm) = m.split_at_mut(len);
            let (pw, rw) = v.split_at_mut(len);
            let (px, rx) = vmax.split_at_mut(if vmax.is_empty() { 0 } else { len });
            pieces.push((pv, pg, pm, pw, px));
            (value, grad, m, v, vmax) = (rv, rg, rm, rw, rx);
        }
        parallel::for_each_piece(pieces, |(value, grad, m, v, vmax)| adam_slice(k, value, grad, m, v, vmax));
    }
}

/// Parameters of at least this many values are updated by all threads (the update reads and
/// writes 28 bytes a value for f32, from memory once the model outgrows the caches; on the
/// 2-core Xeon it was 2.5 % of a default charlm training step on one thread).
const PARALLEL_MIN: usize = 1 << 15;

/// How weight decay acts.
#[derive(Clone, Copy)]
enum Decay {
    None,
    /// `g ← g + λ·p` (Adam).
    L2,
    /// `p ← p·(1 - lr·λ)` (AdamW).
    Decoupled,
}

/// The scalars of one step, cast to `T`.
#[derive(Clone, Copy)]
struct AdamStep<T> {
    neg_step_size: T,
    bc2_sqrt: T,
    w1: T,
    beta2: T,
    w2: T,
    eps: T,
    wd: T,
    shrink: T,
    decay: Decay,
}

/// One step over a slice of a parameter (`vmax` empty unless AMSGrad), the module docs'
/// equations in their order.
#[inline(always)]
fn adam_slice_impl<T: Scalar>(
    k: AdamStep<T>,
    value: &mut [T],
    grad: &[T],
    m: &mut [T],
    v: &mut [T],
    vmax: &mut [T],
) {
    let n = value.len();
    let (grad, m, v) = (&grad[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let mut g = grad[i];
        match k.decay {
            Decay::None => {}
            Decay::L2 => g += k.wd * value[i],
            Decay::Decoupled => value[i] *= k.shrink,
        }
        m[i] = lerp(m[i], g, k.w1);
        // v ← β₂·v + ((1 - β₂)·g)·g
        v[i] = v[i] * k.beta2 + k.w2 * g * g;
        let second = if vmax.is_empty() {
            v[i]
        } else {
            vmax[i] = vmax[i].max(v[i]);
            vmax[i]
        };
        let denom = second.sqrt() / k.bc2_sqrt + k.eps;
        // p ← p + (-lr/(1 - β₁ᵗ))·m / denom
        value[i] += k.neg_step_size * m[i] / denom;
    }
}

rnn_tensor::dispatch_avx2! {
    /// [`adam_slice_impl`], in its AVX-512 or AVX2 build where available (the same IEEE
    /// operations in any build, so the same bits).
    fn adam_slice<T>(k: AdamStep<T>, value: &mut [T], grad: &[T], m: &mut [T], v: &mut [T], vmax: &mut [T]) => adam_slice_impl
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Optimizer, ParamMut};

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // At t = 1: m = (1-β₁)g, v = (1-β₂)g², so the step is lr·g/(|g| + ε') ≈ lr·sign(g).
        let mut opt = AdamConfig::new(0.1).build::<f64>().unwrap();
        let mut w = vec![1.0, 1.0];
        opt.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &[3.0, -0.5] }]).unwrap();
        assert!((w[0] - 0.9).abs() < 1e-8, "{w:?}");
        assert!((w[1] - 1.1).abs() < 1e-8, "{w:?}");
    }

    #[test]
    fn adamw_decays_weights_without_gradient() {
        let mut opt = AdamWConfig::new(0.1).with_weight_decay(0.5).build::<f64>().unwrap();
        let mut w = vec![2.0];
        opt.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &[0.0] }]).unwrap();
        // m = v = 0: the Adam step is 0; only p·(1 - 0.1·0.5) remains.
        assert_eq!(w, vec![2.0 * (1.0 - 0.1 * 0.5)]);
        assert_eq!(AdamWConfig::default().weight_decay, 1e-2);
        assert_eq!(AdamConfig::default().weight_decay, 0.0);
        assert_eq!(opt.name(), "adamw");
    }

    #[test]
    fn bad_hyperparameters_are_named() {
        let msg = |c: AdamConfig| c.build::<f64>().unwrap_err().to_string();
        assert!(msg(AdamConfig::new(-1e-3)).contains("lr"));
        assert!(msg(AdamConfig::new(1e-3).with_betas(1.0, 0.999)).contains("beta1"));
        assert!(msg(AdamConfig::new(1e-3).with_betas(0.9, -0.1)).contains("beta2"));
        assert!(msg(AdamConfig::new(1e-3).with_eps(f64::NAN)).contains("eps"));
        assert!(msg(AdamConfig::new(1e-3).with_weight_decay(-1.0)).contains("weight_decay"));
        let e = AdamWConfig::new(f64::INFINITY).build::<f32>().unwrap_err().to_string();
        assert!(e.contains("adamw") && e.contains("lr"), "{e}");
    }
}
