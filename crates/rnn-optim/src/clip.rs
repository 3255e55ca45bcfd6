//! Gradient clipping: by global norm, by each parameter's own norm, and by value.
//!
//! With gradient tensors `g_1, …, g_k`:
//!
//! ```text
//! global norm  (torch.nn.utils.clip_grad_norm_):
//!     N = sqrt(Σ_j |g_j|²)                       (|g_j| is the tensor's 2-norm)
//!     g_j ← g_j · min(1, max / (N + 1e-6))       for every j; returns N
//! per-parameter norm  (the seed tutorial's solver):
//!     g_j ← g_j · max / |g_j|                    for each j with |g_j| > max
//! value  (char-rnn's grad_clip, torch.nn.utils.clip_grad_value_):
//!     g ← clamp(g, -max, max)                    elementwise
//! ```
//!
//! Global-norm clipping keeps the direction of the whole gradient and only shortens it, the
//! per-parameter rule keeps each tensor's direction, and value clipping changes the direction.
//! A NaN or infinite norm means the loss has diverged: the norm modes then return
//! [`OptimError::NonFiniteNorm`] and leave the gradients untouched, instead of scaling
//! everything by NaN as torch does by default. Value clipping keeps NaN entries NaN (as
//! `torch.clamp`) and maps ±∞ to ±max.
//!
//! Norms are accumulated in `f64` whatever `T` is.

use rnn_tensor::{parallel, Parameters, Scalar};

use crate::error::check;
use crate::OptimError;

/// A clipping mode, for training loops that take it as an option.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Clip {
    /// No clipping.
    #[default]
    None,
    /// Scale all gradients together so that their global norm is at most this.
    GlobalNorm(f64),
    /// Scale each gradient tensor whose own norm exceeds this down to it.
    PerParamNorm(f64),
    /// Clamp every gradient entry to `[-v, v]`.
    Value(f64),
}

impl Clip {
    /// Checks the threshold: finite and `> 0`.
    pub fn check(&self) -> Result<(), OptimError> {
        match *self {
            Clip::None => Ok(()),
            Clip::GlobalNorm(m) => check_max("clip_grad_norm", "max_norm", m),
            Clip::PerParamNorm(m) => check_max("clip_grad_norm_per_param", "max_norm", m),
            Clip::Value(v) => check_max("clip_grad_value", "clip_value", v),
        }
    }

    /// Clips a model's gradients in place. Returns the global norm before clipping (also for
    /// [`Clip::None`] and [`Clip::Value`], for logging); errors as the functions it calls.
    pub fn apply<T: Scalar, P: Parameters<T> + ?Sized>(&self, grads: &mut P) -> Result<f64, OptimError> {
        with_slices(grads, |s| match *self {
            Clip::None => Ok(global_norm(s)),
            Clip::GlobalNorm(m) => clip_norm_slices(s, m),
            Clip::PerParamNorm(m) => {
                let total = global_norm(s);
                clip_norm_per_param_slices(s, m)?;
                Ok(total)
            }
            Clip::Value(v) => {
                let total = global_norm(s);
                clip_value_slices(s, v)?;
                Ok(total)
            }
        })
    }
}

fn check_max(op: &'static str, name: &str, v: f64) -> Result<(), OptimError> {
    check(v.is_finite() && v > 0.0, op, || format!("{name} must be finite and > 0, got {v}"))
}

/// The 2-norm of one tensor, accumulated in `f64`: the squares summed in blocks of
/// `NORM_BLOCK` values, each block in `NORM_LANES` = 8 interleaved partial sums (value `i` of a
/// block into sum `i mod 8`, in order) added pairwise at its end, and the blocks' sums added in
/// order. The order is fixed by the length alone, so the bits are the same on any CPU, in any
/// SIMD build and for any thread count (large tensors' blocks are split across the threads);
/// one running sum instead kept a chain of dependent additions, 1 % of a default charlm
/// training step on one thread while the other waited.
pub fn tensor_norm<T: Scalar>(g: &[T]) -> f64 {
    let blocks = g.len().div_ceil(NORM_BLOCK);
    if blocks <= 1 {
        return block_sum_of_squares(g).sqrt();
    }
    let parts = if g.len() >= 2 * NORM_BLOCK { parallel::num_threads().min(blocks) } else { 1 };
    let mut sums = vec![0.0f64; blocks];
    let mut pieces = Vec::with_capacity(parts);
    let mut rest = sums.as_mut_slice();
    for i in 0..parts {
        let r = parallel::split_range(blocks, i, parts, 1);
        let (piece, next) = rest.split_at_mut(r.len());
        pieces.push((r.start, piece));
        rest = next;
    }
    parallel::for_each_piece(pieces, |(b0, out)| {
        for (sum, block) in out.iter_mut().zip(g.chunks(NORM_BLOCK).skip(b0)) {
            *sum = block_sum_of_squares(block);
        }
    });
    sums.iter().sum::<f64>().sqrt()
}

/// Values per block of [`tensor_norm`].
pub const NORM_BLOCK: usize = 1 << 14;
/// Interleaved partial sums per block of [`tensor_norm`] (eight `f64`: one AVX-512 register).
pub const NORM_LANES: usize = 8;

/// `Σ x²` over one block of [`tensor_norm`], in its order.
#[inline(always)]
fn block_sum_of_squares_impl<T: Scalar>(g: &[T]) -> f64 {
    let mut acc = [0.0f64; NORM_LANES];
    let mut chunks = g.chunks_exact(NORM_LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            let x = x.to_f64();
            *a += x * x;
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        let x = x.to_f64();
        *a += x * x;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

rnn_tensor::dispatch_avx2! {
    /// [`block_sum_of_squares_impl`], in its AVX-512 or AVX2 build where available (the same
    /// additions in the same order in any build).
    fn block_sum_of_squares<T>(g: &[T]) -> f64 => block_sum_of_squares_impl
}

/// The global 2-norm of several tensors, `sqrt(Σ_j |g_j|²)`, computed like torch: the norm of
/// the per-tensor norms.
pub fn global_norm<T: Scalar>(grads: &[&mut [T]]) -> f64 {
    grads.iter().map(|g| tensor_norm(g).powi(2)).sum::<f64>().sqrt()
}

/// Clips by global norm as `torch.nn.utils.clip_grad_norm_(…, max_norm)` and returns the norm
/// before clipping. A non-finite norm returns [`OptimError::NonFiniteNorm`] and changes nothing.
pub fn clip_norm_slices<T: Scalar>(grads: &mut [&mut [T]], max_norm: f64) -> Result<f64, OptimError> {
    check_max("clip_grad_norm", "max_norm", max_norm)?;
    let total = global_norm(grads);
    if !total.is_finite() {
        return Err(OptimError::NonFiniteNorm(total));
    }
    // clip_coef = max / (N + 1e-6), clamped to 1
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    if coef < 1.0 {
        let c = T::cast(coef);
        grads.iter_mut().flat_map(|g| g.iter_mut()).for_each(|x| *x *= c);
    }
    Ok(total)
}

/// Scales each tensor whose own 2-norm exceeds `max_norm` down to `max_norm` (the seed
/// solver's rule). Returns the largest norm before clipping. Any non-finite norm returns
/// [`OptimError::NonFiniteNorm`] and changes nothing.
pub fn clip_norm_per_param_slices<T: Scalar>(
    grads: &mut [&mut [T]],
    max_norm: f64,
) -> Result<f64, OptimError> {
    check_max("clip_grad_norm_per_param", "max_norm", max_norm)?;
    let norms: Vec<f64> = grads.iter().map(|g| tensor_norm(g)).collect();
    if let Some(&bad) = norms.iter().find(|n| !n.is_finite()) {
        return Err(OptimError::NonFiniteNorm(bad));
    }
    for (g, &n) in grads.iter_mut().zip(&norms) {
        if n > max_norm {
            // g ← g · max/|g|
            let c = T::cast(max_norm / n);
            g.iter_mut().for_each(|x| *x *= c);
        }
    }
    Ok(norms.into_iter().fold(0.0, f64::max))
}

/// Clamps every entry to `[-clip_value, clip_value]`, as `torch.nn.utils.clip_grad_value_`
/// (NaN stays NaN).
pub fn clip_value_slices<T: Scalar>(grads: &mut [&mut [T]], clip_value: f64) -> Result<(), OptimError> {
    check_max("clip_grad_value", "clip_value", clip_value)?;
    let (hi, lo) = (T::cast(clip_value), T::cast(-clip_value));
    for x in grads.iter_mut().flat_map(|g| g.iter_mut()) {
        if *x > hi {
            *x = hi;
        } else if *x < lo {
            *x = lo;
        }
    }
    Ok(())
}

fn with_slices<T: Scalar, P: Parameters<T> + ?Sized, R>(
    grads: &mut P,
    f: impl FnOnce(&mut [&mut [T]]) -> R,
) -> R {
    let mut named = grads.named_params_mut();
    let mut slices: Vec<&mut [T]> = named.iter_mut().map(|(_, m)| m.as_mut_slice()).collect();
    f(&mut slices)
}

/// [`clip_norm_slices`] over a model's gradients: clips by global norm, returns the norm.
pub fn clip_grad_norm<T: Scalar, P: Parameters<T> + ?Sized>(
    grads: &mut P,
    max_norm: f64,
) -> Result<f64, OptimError> {
    with_slices(grads, |s| clip_norm_slices(s, max_norm))
}

/// [`clip_norm_per_param_slices`] over a model's gradients.
pub fn clip_grad_norm_per_param<T: Scalar, P: Parameters<T> + ?Sized>(
    grads: &mut P,
    max_norm: f64,
) -> Result<f64, OptimError> {
    with_slices(grads, |s| clip_norm_per_param_slices(s, max_norm))
}

/// [`clip_value_slices`] over a model's gradients.
pub fn clip_grad_value<T: Scalar, P: Parameters<T> + ?Sized>(
    grads: &mut P,
    clip_value: f64,
) -> Result<(), OptimError> {
    with_slices(grads, |s| clip_value_slices(s, clip_value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnn_tensor::simd::{self, Level};
    use rnn_tensor::{Mat, Rng};

    /// `tensor_norm` is its definition (blocks, eight interleaved sums, the pairwise tree, the
    /// blocks in order) bit for bit, on lengths around the block and lane sizes, with one and
    /// two threads and in every SIMD build; and within 1e-12 of a plain running sum (whose own
    /// rounding error may reach n·2⁻⁵³, 3e-11 for the longest here).
    #[test]
    fn tensor_norm_is_its_definition_in_any_build_and_split() {
        fn definition(g: &[f32]) -> f64 {
            let mut total = 0.0;
            for block in g.chunks(NORM_BLOCK) {
                let mut acc = [0.0f64; NORM_LANES];
                for (i, &x) in block.iter().enumerate() {
                    acc[i % NORM_LANES] += x as f64 * x as f64;
                }
                total += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
            }
            total.sqrt()
        }
        let (mut rng, threads_before) = (Rng::seed_from(3), parallel::num_threads());
        for n in
            [0, 1, 7, 8, 9, 1000, NORM_BLOCK - 1, NORM_BLOCK, NORM_BLOCK + 5, 3 * NORM_BLOCK + 17, 300_001]
        {
            let g: Vec<f32> = (0..n).map(|_| rng.uniform(-2.0, 2.0) as f32).collect();
            let want = definition(&g);
            let plain = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            assert!((want - plain).abs() <= 1e-12 * plain.max(1e-300), "n = {n}: {want} against {plain}");
            for threads in [1, 2] {
                parallel::set_num_threads(threads);
                for level in [Level::Avx512, Level::Avx2, Level::Baseline] {
                    simd::set_max_level(level);
                    let got = tensor_norm(&g);
                    simd::set_max_level(Level::Avx512);
                    assert_eq!(got.to_bits(), want.to_bits(), "n = {n}, {threads} threads, {level:?}");
                }
            }
        }
        parallel::set_num_threads(threads_before);
    }

    struct Grads {
        a: Mat<f64>,
        b: Mat<f64>,
    }
    impl Parameters<f64> for Grads {
        fn named_params(&self) -> Vec<(String, &Mat<f64>)> {
            vec![("a".into(), &self.a), ("b".into(), &self.b)]
        }
        fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<f64>)> {
            vec![("a".into(), &mut self.a), ("b".into(), &mut self.b)]
        }
    }

    fn grads() -> Grads {
        // |a| = 5, |b| = 12, global norm 13.
        Grads { a: Mat::from_column_slice(2, 1, &[3.0, 4.0]), b: Mat::from_column_slice(1, 1, &[12.0]) }
    }

    #[test]
    fn three_modes_by_hand() {
        let mut g = grads();
        assert_eq!(clip_grad_norm(&mut g, 26.0).unwrap(), 13.0);
        assert_eq!(g.a.as_slice(), &[3.0, 4.0], "below the threshold nothing changes");
        assert_eq!(clip_grad_norm(&mut g, 6.5).unwrap(), 13.0);
        let c = 6.5 / (13.0 + 1e-6);
        assert_eq!(g.a.as_slice(), &[3.0 * c, 4.0 * c]);
        assert_eq!(g.b.as_slice(), &[12.0 * c]);

        let mut g = grads();
        assert_eq!(clip_grad_norm_per_param(&mut g, 6.0).unwrap(), 12.0);
        assert_eq!(g.a.as_slice(), &[3.0, 4.0], "|a| = 5 <= 6 is kept");
        assert_eq!(g.b.as_slice(), &[6.0]);

        let mut g = grads();
        clip_grad_value(&mut g, 3.5).unwrap();
        assert_eq!(g.a.as_slice(), &[3.0, 3.5]);
        assert_eq!(g.b.as_slice(), &[3.5]);
        assert_eq!(Clip::Value(5.0).apply(&mut g).unwrap(), (9.0f64 + 3.5 * 3.5 * 2.0).sqrt());
    }

    #[test]
    fn non_finite_norm_is_an_error_and_changes_nothing() {
        for bad in [f64::NAN, f64::INFINITY] {
            let mut g = grads();
            g.b[0] = bad;
            let e = clip_grad_norm(&mut g, 1.0).unwrap_err();
            assert!(matches!(e, OptimError::NonFiniteNorm(_)), "{e}");
            assert!(e.to_string().contains("non-finite"), "{e}");
            assert_eq!(g.a.as_slice(), &[3.0, 4.0]);
            let e = Clip::PerParamNorm(1.0).apply(&mut g).unwrap_err();
            assert!(matches!(e, OptimError::NonFiniteNorm(_)), "{e}");
            assert_eq!(g.a.as_slice(), &[3.0, 4.0], "a is finite but must not be clipped alone");
        }
        let mut g = grads();
        g.b[0] = f64::NAN;
        clip_grad_value(&mut g, 1.0).unwrap();
        assert!(g.b[0].is_nan());
        g.b[0] = f64::NEG_INFINITY;
        clip_grad_value(&mut g, 1.0).unwrap();
        assert_eq!(g.b[0], -1.0);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use proptest::test_runner::RngSeed;

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 64,
                rng_seed: RngSeed::Fixed(0xc11b),
                failure_persistence: None,
                ..ProptestConfig::default()
            })]
            /// Over random gradient sets (1-4 tensors of 1-20 entries, entries up to ±100) and
            /// thresholds: global clipping leaves a norm of at most max (relative slack 1e-12)
            /// and every tensor parallel to its input; per-parameter clipping leaves every
            /// tensor's norm at most max; value clipping leaves every entry within ±max and
            /// entries already inside unchanged.
            #[test]
            fn clipping_invariants(
                tensors in prop::collection::vec(prop::collection::vec(-100.0f64..100.0, 1..20), 1..4),
                max in 0.01f64..200.0,
            ) {
                let orig = tensors.clone();
                let mut g = tensors.clone();
                let mut s: Vec<&mut [f64]> = g.iter_mut().map(|v| v.as_mut_slice()).collect();
                let total = clip_norm_slices(&mut s, max).unwrap();
                prop_assert!(global_norm(&s) <= max * (1.0 + 1e-12));
                let scale = (max / (total + 1e-6)).min(1.0);
                for (a, o) in s.iter().flat_map(|t| t.iter()).zip(orig.iter().flatten()) {
                    prop_assert!((a - o * scale).abs() <= 1e-12 * o.abs().max(1.0));
                }

                let mut g = tensors.clone();
                let mut s: Vec<&mut [f64]> = g.iter_mut().map(|v| v.as_mut_slice()).collect();
                clip_norm_per_param_slices(&mut s, max).unwrap();
                for t in &s {
                    prop_assert!(tensor_norm(t) <= max * (1.0 + 1e-12));
                }

                let mut g = tensors;
                let mut s: Vec<&mut [f64]> = g.iter_mut().map(|v| v.as_mut_slice()).collect();
                clip_value_slices(&mut s, max).unwrap();
                for (a, o) in s.iter().flat_map(|t| t.iter()).zip(orig.iter().flatten()) {
                    prop_assert!(a.abs() <= max);
                    if o.abs() <= max {
                        prop_assert_eq!(a, o);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_thresholds_are_named() {
        let mut g = grads();
        let e = clip_grad_norm(&mut g, 0.0).unwrap_err().to_string();
        assert!(e.contains("max_norm"), "{e}");
        let e = clip_grad_value(&mut g, f64::NAN).unwrap_err().to_string();
        assert!(e.contains("clip_value"), "{e}");
        assert!(Clip::PerParamNorm(-1.0).check().is_err());
        assert!(Clip::None.check().is_ok());
        assert_eq!(g.a.as_slice(), &[3.0, 4.0]);
    }
}
