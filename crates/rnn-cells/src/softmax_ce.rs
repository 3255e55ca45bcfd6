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
//!
//! The columns are independent: with several threads they are split between them, and each
//! column's loss is kept and the losses summed in column order, so the bits do not depend on
//! the thread count. Within a column, the maximum and `Σ_i exp(z_k[i] - m_k)` run in 16 lanes
//! combined in a fixed order (the same bits in every SIMD build).

use rnn_tensor::{parallel, Mat, Scalar};

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
    let mut d_logits = d_logits;
    if let Some(d) = d_logits.as_deref_mut() {
        if d.shape() != (v, n) {
            *d = Mat::zeros(v, n);
        }
    }
    // The columns are independent: with more than one thread they are split between them.
    let pieces = parallel::num_threads().min(n * v / SPLIT_VALUES).clamp(1, n);
    let grad = d_logits.map(|d| d.as_mut_slice());
    Ok(total_loss(logits.as_slice(), targets, v, scale, grad, pieces) * scale)
}

/// `Σ_k ℓ_k` over the columns of `z` (`V` values each, one target each), writing the gradient
/// columns into `grad` when given (see [`column_losses`]), with the columns split into `pieces`
/// contiguous pieces run by [`parallel::for_each_piece`]. Each column's loss is kept, and the
/// losses are summed in column order, as one piece sums them: the same bits for any `pieces`.
fn total_loss<T: Scalar>(
    z: &[T],
    targets: &[usize],
    v: usize,
    scale: T,
    grad: Option<&mut [T]>,
    pieces: usize,
) -> T {
    let n = targets.len();
    let mut losses = vec![T::ZERO; n];
    let mut work = Vec::with_capacity(pieces);
    let (mut loss_rest, mut grad_rest) = (&mut losses[..], grad);
    for i in 0..pieces {
        let cols = parallel::split_range(n, i, pieces, 1);
        let (l, rest) = std::mem::take(&mut loss_rest).split_at_mut(cols.len());
        loss_rest = rest;
        let g = grad_rest.take().map(|g| {
            let (g, rest) = g.split_at_mut(cols.len() * v);
            grad_rest = Some(rest);
            g
        });
        work.push((cols.start, l, g));
    }
    parallel::for_each_piece(work, |(c0, l, g)| {
        column_losses(&z[c0 * v..], &targets[c0..c0 + l.len()], v, scale, l, g)
    });
    losses.iter().fold(T::ZERO, |total, &l| total + l)
}

/// Logits values (`V × N`) from which [`softmax_cross_entropy`] splits its columns between the
/// threads (about 10 µs of work on one core; the language models' `65 × 1536` is 100,000).
const SPLIT_VALUES: usize = 1 << 14;

/// For each column `k` of `z` (`V` values per column) and its target `targets[k]`: the loss
/// `ℓ_k` into `losses[k]` and, when `grad` is given, `(softmax(z_k) - onehot(y_k))·scale` into
/// its column `k`.
#[inline(always)]
fn column_losses_impl<T: Scalar>(
    z: &[T],
    targets: &[usize],
    v: usize,
    scale: T,
    losses: &mut [T],
    grad: Option<&mut [T]>,
) {
    let mut scratch = Vec::new();
    let want_grad = grad.is_some();
    let mut grad = grad;
    for (k, ((z, &y), loss)) in z.chunks_exact(v).zip(targets).zip(losses.iter_mut()).enumerate() {
        let m = column_max(z);
        // e = exp(z - m), written into the gradient column (or scratch)
        let e = match grad.as_deref_mut() {
            Some(d) => &mut d[k * v..(k + 1) * v],
            None => {
                scratch.resize(v, T::ZERO);
                &mut scratch[..]
            }
        };
        let sum = exp_sum(z, m, e);
        // ℓ_k = logsumexp(z) - z[y] = ln Σ exp(z - m) - (z[y] - m): never the difference of two
        // large numbers (with every logit near 1e10, `m + ln Σ` rounds to `m` in f32 and the
        // loss would come out as 0 instead of ln V).
        *loss = sum.ln() - (z[y] - m);
        if want_grad {
            // dL/dz = (softmax(z) - onehot(y)) / D
            let inv = scale / sum;
            e.iter_mut().for_each(|x| *x *= inv);
            e[y] -= scale;
        }
    }
}

rnn_tensor::dispatch_avx2! {
    /// [`column_losses_impl`], in its AVX-512 or AVX2 build where available.
    fn column_losses<T>(z: &[T], targets: &[usize], v: usize, scale: T, losses: &mut [T], grad: Option<&mut [T]>) => column_losses_impl
}

/// Lanes of the max and the sum over a column (one AVX-512 register of `f32`): each lane takes
/// every `LANES`-th value, so the loops vectorise, and the lanes are combined in a fixed tree, so
/// the bits are the same in every build.
const LANES: usize = 16;

/// `max_i z[i]`, lane by lane (the value of a sequential maximum: only which of `-0` and `+0`
/// is returned, or which NaN, can differ, and neither changes the loss or the gradient).
#[inline(always)]
fn column_max<T: Scalar>(z: &[T]) -> T {
    let mut acc = [z[0]; LANES];
    let mut chunks = z.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a = if x > *a { x } else { *a };
    }
    acc.iter().fold(acc[0], |a, &b| if b > a { b } else { a })
}

/// `out = exp(z - m)` elementwise; returns `Σ out`, summed in [`LANES`] lanes (lane `l` adds
/// values `l`, `l + LANES`, ... in order), then the lanes pairwise: 16 → 8 → 4 → 2 → 1. (A
/// sequential sum is one chain of `V` dependent additions: for 65 classes, most of the pass.)
#[inline(always)]
fn exp_sum<T: Scalar>(z: &[T], m: T, out: &mut [T]) -> T {
    for (o, &zi) in out.iter_mut().zip(z) {
        *o = (zi - m).exp_v();
    }
    let mut acc = [T::ZERO; LANES];
    let mut chunks = out.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += x;
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            let far = acc[l + width];
            acc[l] += far;
        }
    }
    acc[0]
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

    /// Split into 2, 3 and 7 pieces (the work of up to that many threads), the loss and every
    /// gradient value are bit for bit those of one piece, with and without the gradient, on
    /// 65 × 701 logits (pieces of unequal sizes). Tolerance: none.
    #[test]
    fn split_columns_give_the_same_bits() {
        let mut rng = Rng::seed_from(5);
        let (v, n) = (65, 701);
        let z: Vec<f32> = (0..v * n).map(|_| rng.uniform(-4.0, 4.0) as f32).collect();
        let y: Vec<usize> = (0..n).map(|_| rng.below(v)).collect();
        let scale = 1.0 / 7.0;
        let mut g1 = vec![0f32; v * n];
        let l1 = total_loss(&z, &y, v, scale, Some(&mut g1), 1);
        assert_eq!(l1.to_bits(), total_loss(&z, &y, v, scale, None, 1).to_bits());
        for pieces in [2, 3, 7] {
            let mut g = vec![f32::NAN; v * n];
            let l = total_loss(&z, &y, v, scale, Some(&mut g), pieces);
            assert_eq!(l.to_bits(), l1.to_bits(), "loss, {pieces} pieces");
            assert!(g.iter().zip(&g1).all(|(a, b)| a.to_bits() == b.to_bits()), "gradient, {pieces} pieces");
            assert_eq!(total_loss(&z, &y, v, scale, None, pieces).to_bits(), l1.to_bits());
        }
        // And through the public function, whatever the thread count (Sum: a scale of 1).
        let mut g_sum = vec![0f32; v * n];
        let l_sum = total_loss(&z, &y, v, 1.0, Some(&mut g_sum), 1);
        let mut d = Mat::zeros(0, 0);
        let l = softmax_cross_entropy(&Mat::from_column_slice(v, n, &z), &y, 1, Reduction::Sum, Some(&mut d));
        assert_eq!(l.unwrap().to_bits(), l_sum.to_bits());
        assert!(d.as_slice().iter().zip(&g_sum).all(|(a, b)| a.to_bits() == b.to_bits()));
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
