//! Softmax cross-entropy over time, on logits `V × (T·B)` (one column per prediction, step-major
//! as everywhere) with one integer target per column.
//!
//! For column `k` with target `y_k`, `p_k = softmax(z_k)` and the per-prediction loss is
//! `ℓ_k = -ln p_k[y_k] = logsumexp(z_k) - z_k[y_k]`, computed as
//! `ln Σ_i exp(z_k[i] - m_k) - (z_k[y_k] - m_k)` with `m_k = max_i z_k[i]` (safe in f32 for any
//! finite logits). Two reductions:
//!
//! ```text
//! Mean            L = (1 / (T·B)) Σ_k ℓ_k    (PyTorch's F.cross_entropy default)
//! SumTimeMeanBatch L = (1 / B) Σ_k ℓ_k        (the tutorial: sum over time, mean over the batch)
//! ```
//!
//! Backward: `dL/dz_k = (p_k - onehot(y_k)) / D` with `D = T·B` or `B`.

use rnn_tensor::{Mat, Scalar};

use crate::{CellError, Reduction};

/// The loss of `logits` (`V × N`, `N = T·B`) against `targets` (`N` indices below `V`), and, if
/// `d_logits` is given, its gradient written there (resized to `V × N` if needed).
///
/// Errors if `batch` is zero or does not divide `N`, if `targets` does not hold one index per
/// column, or if an index is not below `V`.
pub fn softmax_cross_entropy<T: Scalar>(
    logits: &Mat<T>,
    targets: &[usize],
    batch: usize,
    reduction: Reduction,
    d_logits: Option<&mut Mat<T>>,
) -> Result<T, CellError> {
    let (v, n) = logits.shape();
    if batch == 0 || n % batch != 0 {
        return Err(CellError::InvalidInput(format!(
            "softmax cross-entropy: {n} predictions do not split into batches of {batch}"
        )));
    }
    if targets.len() != n {
        return Err(CellError::InvalidInput(format!(
            "softmax cross-entropy: {} targets for {n} predictions; give one target per logits column",
            targets.len()
        )));
    }
    if let Some(bad) = targets.iter().find(|&&y| y >= v) {
        return Err(CellError::InvalidInput(format!(
            "softmax cross-entropy: target {bad} is not below the number of classes {v}"
        )));
    }
    if n == 0 {
        if let Some(d) = d_logits {
            *d = Mat::zeros(v, 0);
        }
        return Ok(T::ZERO);
    }
    let scale: T = reduction.scale(n, batch);
    let mut total = T::ZERO;
    let mut d_logits = d_logits;
    if let Some(d) = d_logits.as_deref_mut() {
        if d.shape() != (v, n) {
            *d = Mat::zeros(v, n);
        }
    }
    let mut scratch = Vec::new();
    let want_grad = d_logits.is_some();
    for (k, (z, &y)) in logits.as_slice().chunks_exact(v).zip(targets).enumerate() {
        let m = z.iter().copied().fold(z[0], |a, b| if b > a { b } else { a });
        // e = exp(z - m), written into the gradient column (or scratch) by a vectorised pass
        let e = match d_logits.as_deref_mut() {
            Some(d) => &mut d.as_mut_slice()[k * v..(k + 1) * v],
            None => {
                scratch.resize(v, T::ZERO);
                &mut scratch[..]
            }
        };
        let sum = exp_shifted(z, m, e);
        // ℓ_k = logsumexp(z) - z[y] = ln Σ exp(z - m) - (z[y] - m): never the difference of two
        // large numbers (with every logit near 1e10, `m + ln Σ` rounds to `m` in f32 and the
        // loss would come out as 0 instead of ln V).
        total += sum.ln() - (z[y] - m);
        if want_grad {
            // dL/dz = (softmax(z) - onehot(y)) / D
            let inv = scale / sum;
            e.iter_mut().for_each(|x| *x *= inv);
            e[y] -= scale;
        }
    }
    Ok(total * scale)
}

/// `out = exp(z - m)` elementwise; returns `Σ out` (summed in order).
#[inline(always)]
fn exp_shifted_impl<T: Scalar>(z: &[T], m: T, out: &mut [T]) -> T {
    for (o, &zi) in out.iter_mut().zip(z) {
        *o = (zi - m).exp_v();
    }
    out.iter().fold(T::ZERO, |acc, &x| acc + x)
}

rnn_tensor::dispatch_avx2! {
    /// [`exp_shifted_impl`], in its AVX-512 or AVX2 build where available.
    fn exp_shifted<T>(z: &[T], m: T, out: &mut [T]) -> T => exp_shifted_impl
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
    use rnn_tensor::Rng;

    #[test]
    fn gradient_matches_numeric_for_both_reductions() {
        let mut rng = Rng::seed_from(3);
        let (v, t, b) = (5, 3, 2);
        let z: Mat<f64> = Mat::from_fn(v, t * b, |_, _| rng.uniform(-3.0, 3.0));
        let y: Vec<usize> = (0..t * b).map(|_| rng.below(v)).collect();
        for red in [Reduction::Mean, Reduction::SumTimeMeanBatch] {
            let mut d = Mat::zeros(0, 0);
            softmax_cross_entropy(&z, &y, b, red, Some(&mut d)).unwrap();
            let mut flat = z.as_slice().to_vec();
            let num = numeric_gradient(
                |p| softmax_cross_entropy(&Mat::from_column_slice(v, t * b, p), &y, b, red, None).unwrap(),
                &mut flat,
                1e-4,
            );
            // Fourth-order differences in f64: agreement to ~1e-11.
            assert!(rel_error(&num, d.as_slice()) < 1e-9, "{red:?}");
        }
        // The two reductions differ by the factor T.
        let mean = softmax_cross_entropy(&z, &y, b, Reduction::Mean, None).unwrap();
        let sum = softmax_cross_entropy(&z, &y, b, Reduction::SumTimeMeanBatch, None).unwrap();
        assert!((sum - mean * t as f64).abs() < 1e-12);
        // Sum: every prediction's loss added (PyTorch's reduction='sum').
        let all = softmax_cross_entropy(&z, &y, b, Reduction::Sum, None).unwrap();
        assert!((all - mean * (t * b) as f64).abs() < 1e-12);
    }

    #[test]
    fn uniform_logits_give_ln_v_and_large_logits_stay_finite() {
        let z = Mat::<f64>::from_element(4, 6, 1000.0);
        let l = softmax_cross_entropy(&z, &[0, 1, 2, 3, 0, 1], 2, Reduction::Mean, None).unwrap();
        assert!((l - 4f64.ln()).abs() < 1e-12, "{l}");
    }

    /// Logits near 1e10 in f32 (ulp 1024): the log-softmax must not subtract two large numbers.
    /// Equal logits give ln V (where `m + ln Σ - z_y` gave 0), and a gap of 2048 between two
    /// large logits gives the exact loss of each class.
    #[test]
    fn huge_logits_in_f32_give_the_exact_loss() {
        let z = Mat::<f32>::from_element(5, 2, 1e10);
        let l = softmax_cross_entropy(&z, &[0, 3], 1, Reduction::Mean, None).unwrap();
        assert!((l - 5f32.ln()).abs() < 1e-6, "{l}");
        let z = Mat::<f32>::from_column_slice(2, 2, &[1e10, 1e10 + 2048.0, 1e10, 1e10 + 2048.0]);
        let l = softmax_cross_entropy(&z, &[0, 1], 2, Reduction::SumTimeMeanBatch, None).unwrap();
        // (2048 + ln(1 + e^-2048)) + ln(1 + e^-2048), averaged over the batch of 2
        assert!((l - 1024.0).abs() < 1e-3, "{l}");
    }

    #[test]
    fn bad_targets_and_batches_are_errors() {
        let z = Mat::<f32>::zeros(3, 4);
        assert!(softmax_cross_entropy(&z, &[0, 1, 2], 2, Reduction::Mean, None).is_err());
        let e = softmax_cross_entropy(&z, &[0, 1, 2, 3], 2, Reduction::Mean, None).unwrap_err();
        assert!(e.to_string().contains("target 3"), "{e}");
        assert!(softmax_cross_entropy(&z, &[0; 4], 3, Reduction::Mean, None).is_err());
        assert!(softmax_cross_entropy(&z, &[0; 4], 0, Reduction::Mean, None).is_err());
    }
}
