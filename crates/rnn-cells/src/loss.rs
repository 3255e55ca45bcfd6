//! Per-timestep losses for binary targets, on the logits `z` of an affine head.
//!
//! `logits` and `targets` have the same shape, `out × (T·B)` in the project's layout; every
//! element is one independent prediction, so the same functions serve one sequence or a batch.
//! Both functions return the loss and overwrite `d_logits` with `dL/dz`.
//!
//! **Squared error on sigmoid outputs** (the binary-addition tutorial's loss), `p = σ(z)`:
//!
//! ```text
//! L = ½ Σ_elements (p - y)²              dL/dz = (p - y)·p·(1 - p)
//! ```
//!
//! The tutorial adds `(y - p)·p(1-p)` into its weight updates and then adds `α·update` to the
//! weights, so it descends exactly this `L`: the sum over all steps, halved, not a mean.
//!
//! **Binary cross-entropy with logits** (`torch.nn.BCEWithLogitsLoss`):
//!
//! ```text
//! L = Σ_elements -[y·ln σ(z) + (1-y)·ln(1 - σ(z))] = Σ max(z, 0) - y·z + ln(1 + e^{-|z|})
//! dL/dz = σ(z) - y
//! ```
//!
//! The right-hand form never takes the exponential of a positive number, so it is exact for
//! any logit (a logit of ±800 gives a loss of 800 or 0, never `inf` or NaN).
//!
//! With [`Reduction::Mean`] both losses (and their gradients) are divided by the number of
//! elements; for BCE that is PyTorch's default `reduction='mean'`, for the squared error it is
//! `½·MSELoss()`.

use rnn_tensor::activation::sigmoid;
use rnn_tensor::{Mat, Scalar};

/// How per-prediction losses are combined, for every loss of this crate (one enum for the
/// binary losses here and [`softmax_cross_entropy`](crate::softmax_cross_entropy)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The sum over every prediction (PyTorch's `reduction='sum'`; the binary-addition
    /// tutorial's choice). Default.
    #[default]
    Sum,
    /// The sum divided by the number of predictions (PyTorch's `reduction='mean'`).
    Mean,
    /// The sum over time, averaged over the batch: the mean over `B` of each sequence's total
    /// loss (the character-model tutorial's loss). The binary losses of this module see no
    /// batch (every element is one prediction), so for them it is `Sum`, a batch of one.
    SumTimeMeanBatch,
}

impl Reduction {
    /// The factor the summed loss is multiplied by, for `n` predictions over a batch of `batch`.
    pub fn scale<T: Scalar>(self, n: usize, batch: usize) -> T {
        match self {
            Reduction::Sum => T::ONE,
            Reduction::Mean => T::ONE / T::cast(n.max(1) as f64),
            Reduction::SumTimeMeanBatch => T::ONE / T::cast(batch.max(1) as f64),
        }
    }
}

fn check_shapes<T: Scalar>(op: &str, logits: &Mat<T>, targets: &Mat<T>, d_logits: &mut Mat<T>) {
    assert_eq!(
        logits.shape(),
        targets.shape(),
        "{op}: logits are {:?}, targets {:?}",
        logits.shape(),
        targets.shape()
    );
    if d_logits.shape() != logits.shape() {
        *d_logits = Mat::zeros(logits.nrows(), logits.ncols());
    }
}

/// `L = ½ Σ (σ(z) - y)²` (times `1/N` for [`Reduction::Mean`]); writes `dL/dz` into
/// `d_logits` (resized to the logits' shape if needed). See the module docs.
pub fn sigmoid_squared_error<T: Scalar>(
    logits: &Mat<T>,
    targets: &Mat<T>,
    reduction: Reduction,
    d_logits: &mut Mat<T>,
) -> T {
    check_shapes("sigmoid squared error", logits, targets, d_logits);
    let s: T = reduction.scale(logits.len(), 1);
    let half = T::cast(0.5);
    let mut loss = T::ZERO;
    for ((d, &z), &y) in d_logits.iter_mut().zip(logits.iter()).zip(targets.iter()) {
        let p = sigmoid(z);
        let e = p - y;
        loss += half * e * e;
        // dL/dz = (p - y)·p·(1 - p)
        *d = s * e * p * (T::ONE - p);
    }
    s * loss
}

/// `L = Σ max(z, 0) - y·z + ln(1 + e^{-|z|})` (times `1/N` for [`Reduction::Mean`]), binary
/// cross-entropy on the probabilities `σ(z)`; writes `dL/dz = σ(z) - y` into `d_logits`
/// (resized to the logits' shape if needed). See the module docs.
pub fn bce_with_logits<T: Scalar>(
    logits: &Mat<T>,
    targets: &Mat<T>,
    reduction: Reduction,
    d_logits: &mut Mat<T>,
) -> T {
    check_shapes("binary cross-entropy", logits, targets, d_logits);
    let s: T = reduction.scale(logits.len(), 1);
    let mut loss = T::ZERO;
    for ((d, &z), &y) in d_logits.iter_mut().zip(logits.iter()).zip(targets.iter()) {
        let pos = if z > T::ZERO { z } else { T::ZERO };
        loss += pos - y * z + (-z.abs()).exp().ln_1p();
        // dL/dz = σ(z) - y
        *d = s * (sigmoid(z) - y);
    }
    s * loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
    use rnn_tensor::Rng;

    type LossFn = fn(&Mat<f64>, &Mat<f64>, Reduction, &mut Mat<f64>) -> f64;

    #[test]
    fn gradients_match_numeric() {
        let mut rng = Rng::seed_from(4);
        let z = Mat::from_fn(2, 9, |_, _| rng.uniform(-4.0, 4.0));
        // Soft targets too: both losses are defined for y in [0, 1].
        let y = Mat::from_fn(2, 9, |_, _| if rng.bit() { 1.0 } else { rng.uniform(0.0, 1.0) });
        let cases: [(&str, LossFn); 2] = [("mse", sigmoid_squared_error), ("bce", bce_with_logits)];
        for (name, f) in cases {
            for red in [Reduction::Sum, Reduction::Mean] {
                let mut d = Mat::zeros(0, 0);
                f(&z, &y, red, &mut d);
                let mut flat = z.as_slice().to_vec();
                let mut scratch = Mat::zeros(0, 0);
                let num = numeric_gradient(
                    |v| f(&Mat::from_column_slice(2, 9, v), &y, red, &mut scratch),
                    &mut flat,
                    1e-4,
                );
                // 4th-order differences with step 1e-4 in f64: agreement to 1e-9 is expected.
                let err = rel_error(&num, d.as_slice());
                assert!(err < 1e-9, "{name} {red:?}: {err:e}");
            }
        }
    }

    #[test]
    fn values_by_hand_and_stable_at_extremes() {
        let mut d = Mat::zeros(0, 0);
        // BCE at z = 0 is ln 2 whatever the target; squared error at z = 0 is ½(½ - y)².
        let z = Mat::from_column_slice(1, 2, &[0.0, 0.0]);
        let y = Mat::from_column_slice(1, 2, &[0.0, 1.0]);
        assert!((bce_with_logits(&z, &y, Reduction::Sum, &mut d) - 2.0 * 2f64.ln()).abs() < 1e-15);
        assert!((bce_with_logits(&z, &y, Reduction::Mean, &mut d) - 2f64.ln()).abs() < 1e-15);
        assert!((sigmoid_squared_error(&z, &y, Reduction::Sum, &mut d) - 0.25).abs() < 1e-15);
        // The naive formula against the stable one at a moderate logit.
        let zv = 2.5f64;
        let p = 1.0 / (1.0 + (-zv).exp());
        let naive = -(0.3 * p.ln() + 0.7 * (1.0 - p).ln());
        let got = bce_with_logits(
            &Mat::from_element(1, 1, zv),
            &Mat::from_element(1, 1, 0.3),
            Reduction::Sum,
            &mut d,
        );
        assert!((got - naive).abs() < 1e-14, "{got} vs {naive}");
        // Extreme logits: finite, exact losses and gradients (the naive formula gives inf).
        let z = Mat::from_column_slice(1, 4, &[800.0, -800.0, 800.0, -800.0]);
        let y = Mat::from_column_slice(1, 4, &[0.0, 1.0, 1.0, 0.0]);
        let l = bce_with_logits(&z, &y, Reduction::Sum, &mut d);
        assert_eq!(l, 1600.0);
        assert_eq!(d.as_slice(), &[1.0, -1.0, 0.0, 0.0]);
        let l32 = bce_with_logits(
            &z.map(|v| v as f32),
            &y.map(|v| v as f32),
            Reduction::Sum,
            &mut Mat::zeros(0, 0),
        );
        assert_eq!(l32, 1600.0f32);
    }
}
