//! `y = alpha·A·x + beta·y` for `A` in the strip layout of [`PackedLhs`](super::PackedLhs)
//! (the batch-1 route of [`gemm_packed`](super::gemm_packed)).

use super::MR;

/// `y = alpha·A·x + beta·y`, `A` (`m×k`) in strips of [`MR`] rows (`data[s·MR·k + p·MR + r] =
/// A[s·MR + r, p]`, the last strip zero-padded). When `beta` is zero, `y` is only written.
///
/// # Panics
/// If `data`, `x` or `y` do not have the lengths `m` and `k` imply.
#[allow(dead_code)] // called by the f32 AVX-512 route of `gemm_packed`
pub(crate) fn gemv_strips_f32(
    m: usize,
    k: usize,
    data: &[f32],
    alpha: f32,
    x: &[f32],
    beta: f32,
    y: &mut [f32],
) {
    assert!(
        data.len() == m.div_ceil(MR) * MR * k && x.len() == k && y.len() == m,
        "gemv_strips_f32: A is {m}x{k} ({} packed values), x has {}, y has {}",
        data.len(),
        x.len(),
        y.len()
    );
    for (s, ys) in y.chunks_mut(MR).enumerate() {
        let strip = &data[s * MR * k..(s + 1) * MR * k];
        let mut acc = [0.0f32; MR];
        for (p, &xp) in x.iter().enumerate() {
            for (a, &w) in acc.iter_mut().zip(&strip[p * MR..(p + 1) * MR]) {
                *a += w * xp;
            }
        }
        for (yi, &a) in ys.iter_mut().zip(&acc) {
            *yi = if beta == 0.0 { alpha * a } else { alpha * a + beta * *yi };
        }
    }
}
