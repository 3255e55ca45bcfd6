//! `y = alpha·A·x + beta·y` for `A` in the strip layout of [`PackedLhs`](super::PackedLhs)
//! (the batch-1 route of [`gemm_packed`](super::gemm_packed)) or in groups of 4 such strips
//! ([`PackedRows`](super::PackedRows): the step product of the recurrent layers' batch-1 route
//! and of streams; [`column_offset`] gives both layouts).
//!
//! The strips are read once, front to back: each strip of [`MR`] = 32 rows is two AVX-512
//! registers of accumulators, and its `k` columns are taken in panels of 8 (a contiguous 1 KB;
//! in a group, the panel of each of its strips in turn, each `x_p` broadcast once for all):
//!
//! ```text
//! y_i ← beta·y_i                                   (0 when beta = 0: y is only written)
//! y_i ← y_i + ((e_0 + e_1) + (e_2 + e_3)) + ((e_4 + e_5) + (e_6 + e_7)),   e_l = (alpha·x_{p+l})·A[i, p+l]
//!                                                  for p = 0, 8, 16, .. (panels of 8 columns)
//! y_i ← y_i + (alpha·x_q)·A[i, q]                  for the last k mod 8 columns, one at a time
//! ```
//!
//! Every product is rounded, then summed in that fixed tree (no fused multiply-add), so a row's
//! result depends only on its own values, never on `m`, on the row's place in its strip or on
//! which build ran; it is also the order of the column-major GEMV of [`gemm`](crate::gemm), so a
//! batch-1 product gives the same bits through either route. The eight products of a panel are
//! independent, so the only serial chain is one add per panel and strip.
//!
//! The product is bound by memory. A matrix larger than the core's L2 (`W_hh` of a 512-unit LSTM
//! is 4 MB; the AMD Zen 5 this was first tuned on has 1 MB of L2) is streamed from L3 on every
//! step (single-core read bandwidth measured there: 160-175 GB/s from L2, 87-93 GB/s from L3):
//! the AVX-512 build prefetches each line [`PREFETCH_AHEAD`] bytes ahead in reading order where
//! that pays, and [`gemv_strips_f32_ordered`] reads the strips (or groups) in either order, so
//! that a loop alternating the direction finds the last strips read still in L2. Which prefetch
//! pays depends on the CPU ([`gemv_prefetch`](crate::cache::gemv_prefetch), from its vendor and L2
//! size at run time): on AMD a matrix larger than 3/4 of the L2 is prefetched non-temporally
//! (measured on a Zen 5: 37-40 µs instead of 42-47 µs per 4 MB product, one core), a smaller one
//! into the caches; on Intel's server cores a non-temporal line is kept in no cache, and a
//! prefetch into the caches mostly slows the loads (a 1 MB matrix in L2: 10 µs a product without,
//! 14.5 µs with, on a Xeon with 2 MB of L2 in a quiet moment; the same in a busy one), so there
//! the hardware prefetchers alone follow the stream.

use super::MR;

/// How far ahead (bytes, in reading order) the AVX-512 kernel prefetches the strips.
pub const PREFETCH_AHEAD: usize = 2048;

/// Strips per group in the layout of [`PackedRows`](super::PackedRows) (see [`column_offset`]).
pub(crate) const GROUP: usize = 4;

/// Columns per panel: the kernels add the products of 8 columns in one fixed tree.
const P: usize = 8;

/// Where column `p` of strip `s` (its [`MR`] values) starts in a matrix of `strips` strips of
/// `k` columns packed in groups of `group` strips.
///
/// The strips go in groups of `group` (the last group may have fewer, `ns`), each group one
/// contiguous run of `ns·MR·k` values; within a group the columns go in panels of 8 (the last
/// panel `k mod 8` wide), and each panel holds the group's strips one after the other, each
/// strip's columns of the panel contiguous (`MR` values each):
///
/// ```text
/// offset(s, p) = g·group·MR·k + p0·ns·MR + j·w·MR + (p - p0)·MR
///     g = s / group, j = s mod group, p0 = 8·(p / 8), w = min(8, k - p0)
/// ```
///
/// With `group = 1` this is the plain strip layout (`s·MR·k + p·MR`) of
/// [`gemv_strips_f32`] and the GEMM. With groups of [`GROUP`], the GEMV multiplies the group's
/// strips by one broadcast of each `x_p` while it reads one contiguous stream: per 1 KB of matrix
/// 18 loads instead of 24 (16 of the matrix and 8 broadcasts), which is what limited the strip
/// GEMV from L2 (docs/performance-log.md, "2026-12-04 afternoon").
pub(crate) fn column_offset(group: usize, strips: usize, k: usize, s: usize, p: usize) -> usize {
    let (g, j) = (s / group, s % group);
    let ns = group.min(strips - g * group);
    g * group * MR * k + offset_in_group(ns, k, j, p)
}

/// Where column `p` of strip `j` starts from the start of its group of `ns` strips of `k`
/// columns: the part of [`column_offset`] after the groups before, which the kernels add to
/// their group's start.
#[inline(always)]
fn offset_in_group(ns: usize, k: usize, j: usize, p: usize) -> usize {
    let p0 = p / P * P;
    let w = P.min(k - p0);
    p0 * ns * MR + j * w * MR + (p - p0) * MR
}

/// `y = alpha·A·x + beta·y`, `A` (`m×k`) in strips of [`MR`] rows (`data[s·MR·k + p·MR + r] =
/// A[s·MR + r, p]`, the last strip zero-padded). When `beta` is zero, `y` is only written (it
/// may hold NaN). The summation order is fixed (see the module docs), so every row's value is
/// the same for any `m` and on any CPU.
///
/// # Panics
/// If `data`, `x` or `y` do not have the lengths `m` and `k` imply.
pub fn gemv_strips_f32(m: usize, k: usize, data: &[f32], alpha: f32, x: &[f32], beta: f32, y: &mut [f32]) {
    gemv_strips_f32_ordered(m, k, data, alpha, x, beta, y, false);
}

/// [`gemv_strips_f32`], reading the strips last to first when `reverse` is true; the result is
/// the same bits either way (each row is summed on its own).
///
/// A loop that multiplies by the same matrix on every step and alternates the direction starts
/// each product with the strips the previous one read last, which are still in L2: measured on
/// the 4 MB `W_hh` of a 512-unit LSTM (one core, 1 MB L2), 35 µs per product against 40 µs in
/// one direction; on a 2 MB half of it, 15.5 against 18 µs.
///
/// # Panics
/// As [`gemv_strips_f32`].
#[allow(clippy::too_many_arguments)]
pub fn gemv_strips_f32_ordered(
    m: usize,
    k: usize,
    data: &[f32],
    alpha: f32,
    x: &[f32],
    beta: f32,
    y: &mut [f32],
    reverse: bool,
) {
    gemv_grouped_f32(1, m, k, data, alpha, x, beta, y, reverse);
}

/// [`gemv_strips_f32_ordered`] for `A` packed in groups of `group` strips ([`column_offset`];
/// `group` 1 to [`GROUP`]), reading the groups last to first when `reverse`. Every row is summed
/// as in [`gemv_strips_f32`], so the bits do not depend on `group`.
///
/// # Panics
/// As [`gemv_strips_f32`], and if `group` is not in `1..=GROUP`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemv_grouped_f32(
    group: usize,
    m: usize,
    k: usize,
    data: &[f32],
    alpha: f32,
    x: &[f32],
    beta: f32,
    y: &mut [f32],
    reverse: bool,
) {
    assert!(
        data.len() == m.div_ceil(MR) * MR * k && x.len() == k && y.len() == m && (1..=GROUP).contains(&group),
        "gemv_strips_f32: A is {m}x{k} ({} packed values, groups of {group}), x has {}, y has {}",
        data.len(),
        x.len(),
        y.len()
    );
    #[cfg(target_arch = "x86_64")]
    let level = crate::simd::gemm_level();
    #[cfg(target_arch = "x86_64")]
    if level == crate::simd::Level::Avx512 {
        let pf = crate::cache::gemv_prefetch(4 * data.len());
        // SAFETY: the CPU has AVX-512F; the lengths were checked above.
        unsafe { avx512::prefetching(pf, group, k, data, alpha, x, beta, y, reverse) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level == crate::simd::Level::Avx2 {
        /// [`gemv_portable`] compiled with AVX2 (eight lanes per row block; no FMA, so the same
        /// bits).
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx2(
            group: usize,
            k: usize,
            data: &[f32],
            alpha: f32,
            x: &[f32],
            beta: f32,
            y: &mut [f32],
            reverse: bool,
        ) {
            gemv_portable(group, k, data, alpha, x, beta, y, reverse)
        }
        // SAFETY: `gemm_level` reports AVX2 only when the CPU has it.
        unsafe { avx2(group, k, data, alpha, x, beta, y, reverse) };
        return;
    }
    gemv_portable(group, k, data, alpha, x, beta, y, reverse);
}

/// Rows of `y` taken at a time by [`gemv_columns_f32`] and the column-major GEMV of
/// [`gemm`](crate::gemm): 8 KB of f32, so that a chunk of `y` stays in L1 while every panel of
/// columns is added into it.
pub(crate) const COLUMN_ROWS: usize = 2048;

/// `y_i += Σ_p (alpha·x_p)·A[i, p]` for a column-major `m×k` matrix `A` (`m = y.len()`,
/// `k = x.len()`) whose column `p` holds `m` contiguous values from `a + p·cs`, with AVX-512;
/// `false` (and nothing done) on a CPU without it, or under a lower cap of [`simd`](crate::simd).
///
/// The arithmetic of the column-major GEMV of [`gemm`](crate::gemm), which calls it for f32:
/// rows in chunks of [`COLUMN_ROWS`], the columns in panels of 8, each adding
/// `((e_0 + e_1) + (e_2 + e_3)) + ((e_4 + e_5) + (e_6 + e_7))` with `e_l = (alpha·x_{p+l})·A[i,
/// p+l]` to `y_i`, then the last `k mod 8` columns one at a time; every product rounded, no
/// fused multiply-add. So the result has the same bits as the portable and AVX2 builds and as
/// [`gemv_strips_f32`] on the same matrix packed in strips. The compiler's AVX2 build of that
/// loop (8 lanes) ran at 0.62-0.72 of MKL's `sgemv` on `1024 × 256` in the sittings measured;
/// this kernel at 0.86-0.87, within about a tenth of the strip GEMV, which reads one contiguous
/// stream where this one reads eight (docs/performance-log.md, "2026-12-03 evening").
///
/// # Safety
/// `a` must be valid for reads of `m` values from `a + p·cs` for every `p < k`.
pub(crate) unsafe fn gemv_columns_f32(
    alpha: f32,
    a: *const f32,
    cs: isize,
    x: &[f32],
    y: &mut [f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::gemm_level() == crate::simd::Level::Avx512 {
        // SAFETY: the CPU has AVX-512F; the rest is the caller's contract.
        unsafe { avx512::columns(alpha, a, cs, x, y) };
        return true;
    }
    let _ = (alpha, a, cs, x, y);
    false
}

/// Packs rows `row(0..m)` of the column-major `rows × k` matrix `w` into `out`, in strips
/// grouped by `group` ([`column_offset`]; `group = 1`: the strip layout, `out[s·MR·k + p·MR + r]
/// = w[row(s·MR + r), p]`), the last strip zero-padded.
///
/// Strips go in runs of 8 and, for each column, the run's strips in turn: the reads are then
/// 1 KB runs of a column (when the rows of the run are consecutive) and the writes 8 sequential
/// streams. Reading one strip's 128 bytes from every column (a stride of `4·rows` bytes, which
/// the hardware prefetchers do not follow) or writing one column into all strips (64 streams 64
/// KB apart, all in the same cache sets) took 1.5 to 3 times as long.
pub(crate) fn pack_rows(
    group: usize,
    w: &[f32],
    rows: usize,
    k: usize,
    m: usize,
    row: impl Fn(usize) -> usize,
    out: &mut [f32],
) {
    const RUN: usize = 8;
    let strips = m.div_ceil(MR);
    assert_eq!(out.len(), strips * MR * k, "pack_rows: {} values for {m}x{k} in strips", out.len());
    for g0 in (0..strips).step_by(RUN) {
        // The first row of each strip of the run if its rows are consecutive, else None.
        let first: [Option<usize>; RUN] = std::array::from_fn(|j| {
            let s = g0 + j;
            let r0 = row(s * MR);
            (s * MR + MR <= m && (1..MR).all(|r| row(s * MR + r) == r0 + r)).then_some(r0)
        });
        for p in 0..k {
            let col = &w[p * rows..(p + 1) * rows];
            for s in g0..(g0 + RUN).min(strips) {
                let d = &mut out[column_offset(group, strips, k, s, p)..][..MR];
                match first[s - g0] {
                    Some(r0) => d.copy_from_slice(&col[r0..r0 + MR]),
                    None => {
                        for (r, v) in d.iter_mut().enumerate() {
                            *v = if s * MR + r < m { col[row(s * MR + r)] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}

/// The portable build of [`gemv_grouped_f32`] (lengths already checked), same arithmetic: for
/// each group (last to first when `reverse`), each panel's products added to every strip of the
/// group in turn.
///
/// Before it took `reverse`, the AVX2 build read the groups in one direction only, so a batch-1
/// time loop found none of the previous step's strips in L2: `seq_lstm_fwd_i65_h512_b1_t100`
/// under `RNN_MAX_SIMD=avx2` took 14.7-15.0 ms against 10.5-10.7 ms uncapped; alternating, it is
/// 1.26× faster at one thread and 1.23× at two, the streams unchanged (Intel Xeon model 207,
/// 2026-12-05, 9-11 alternating rounds; docs/performance-log.md).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gemv_portable(
    group: usize,
    k: usize,
    data: &[f32],
    alpha: f32,
    x: &[f32],
    beta: f32,
    y: &mut [f32],
    reverse: bool,
) {
    // Two loops, not a closure: the body must be inlined into the caller's AVX2 build.
    if reverse {
        for (g, yg) in y.chunks_mut(group * MR).enumerate().rev() {
            group_portable(g, yg, group, k, data, alpha, x, beta);
        }
    } else {
        for (g, yg) in y.chunks_mut(group * MR).enumerate() {
            group_portable(g, yg, group, k, data, alpha, x, beta);
        }
    }
}

/// Group `g` of [`gemv_portable`] (rows `yg` of `y`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn group_portable(
    g: usize,
    yg: &mut [f32],
    group: usize,
    k: usize,
    data: &[f32],
    alpha: f32,
    x: &[f32],
    beta: f32,
) {
    let (ns, panels) = (yg.len().div_ceil(MR), k / P);
    let gd = &data[g * group * MR * k..][..ns * MR * k];
    let mut acc = [[0.0f32; MR]; GROUP];
    for (a, ys) in acc.iter_mut().zip(yg.chunks(MR)) {
        for (a, &yi) in a.iter_mut().zip(ys) {
            *a = initial(beta, yi);
        }
    }
    for q in 0..panels {
        let sx: [f32; P] = std::array::from_fn(|l| alpha * x[q * P + l]);
        for (j, acc) in acc[..ns].iter_mut().enumerate() {
            // The strip's 8 columns of the panel, contiguous.
            let panel = &gd[(q * ns + j) * P * MR..][..P * MR];
            let cols: [&[f32]; P] = std::array::from_fn(|l| &panel[l * MR..(l + 1) * MR]);
            for (r, a) in acc.iter_mut().enumerate() {
                let e = |l: usize| sx[l] * cols[l][r];
                // y_i += Σ_l (alpha·x_{p+l})·A[i, p+l], in the fixed tree
                *a += ((e(0) + e(1)) + (e(2) + e(3))) + ((e(4) + e(5)) + (e(6) + e(7)));
            }
        }
    }
    // The last k mod 8 columns, one at a time (each strip's are contiguous).
    for p in panels * P..k {
        let s = alpha * x[p];
        for (j, acc) in acc[..ns].iter_mut().enumerate() {
            let col = &gd[offset_in_group(ns, k, j, p)..][..MR];
            for (a, &v) in acc.iter_mut().zip(col) {
                *a += s * v;
            }
        }
    }
    for (a, ys) in acc.iter().zip(yg.chunks_mut(MR)) {
        ys.copy_from_slice(&a[..ys.len()]);
    }
}

/// `beta·y`, or 0 when `beta` is 0 (so NaN in `y` is not propagated), or `y` itself when `beta`
/// is 1.
#[inline(always)]
fn initial(beta: f32, y: f32) -> f32 {
    if beta == 0.0 {
        0.0
    } else if beta == 1.0 {
        y
    } else {
        beta * y
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{offset_in_group, MR, P, PREFETCH_AHEAD};
    use crate::cache::GemvPrefetch;

    /// [`kernel`] with the prefetch `pf`, and without the multiplications by `alpha` when it is
    /// 1 (the const parameters of each choice).
    ///
    /// # Safety
    /// As [`kernel`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn prefetching(
        pf: GemvPrefetch,
        group: usize,
        k: usize,
        data: &[f32],
        alpha: f32,
        x: &[f32],
        beta: f32,
        y: &mut [f32],
        reverse: bool,
    ) {
        let args = (group, k, data, alpha, x, beta, y, reverse);
        // SAFETY: the caller's contract.
        unsafe {
            match (alpha == 1.0, pf) {
                (true, GemvPrefetch::None) => kernel::<false, 0>(args),
                (true, GemvPrefetch::Caches) => kernel::<false, 1>(args),
                (true, GemvPrefetch::NonTemporal) => kernel::<false, 2>(args),
                (false, GemvPrefetch::None) => kernel::<true, 0>(args),
                (false, GemvPrefetch::Caches) => kernel::<true, 1>(args),
                (false, GemvPrefetch::NonTemporal) => kernel::<true, 2>(args),
            }
        }
    }

    /// The arguments of [`gemv_grouped_f32`](super::gemv_grouped_f32) from `group` on.
    type Args<'a> = (usize, usize, &'a [f32], f32, &'a [f32], f32, &'a mut [f32], bool);

    /// [`gemv_grouped_f32`](super::gemv_grouped_f32) with AVX-512: the groups in order (or
    /// reversed), each by [`group_kernel`] for its number of strips. `SCALE` false skips the
    /// multiplications by `alpha` (for alpha = 1: `1·x = x` exactly, so the result is the same);
    /// `PREFETCH` is 0 for no software prefetch, 1 to prefetch into the caches (`T0`), 2
    /// non-temporally (`NTA`), as [`GemvPrefetch`] chooses.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; lengths as checked by the caller.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn kernel<const SCALE: bool, const PREFETCH: u8>(args: Args<'_>) {
        let (group, k, data, alpha, x, beta, y, reverse) = args;
        let (a, m) = (data.as_ptr(), y.len());
        let groups = m.div_ceil(group * MR);
        let order = |i: usize| if reverse { groups - 1 - i } else { i };
        for i in 0..groups {
            let g = order(i);
            let ys = &mut y[g * group * MR..((g + 1) * group * MR).min(m)];
            let ns = ys.len().div_ceil(MR);
            let start = a.wrapping_add(g * group * MR * k);
            // The group read next (the prefetch runs into it), or none.
            let next =
                if i + 1 < groups { a.wrapping_add(order(i + 1) * group * MR * k) } else { std::ptr::null() };
            let run = (k, start, next, alpha, x, beta, ys);
            // SAFETY: the group's values lie inside `data`: `ns·MR·k` from `start` (the checked
            // lengths); the caller's contract for the rest.
            unsafe {
                match ns {
                    1 => group_kernel::<SCALE, PREFETCH, 1>(run),
                    2 => group_kernel::<SCALE, PREFETCH, 2>(run),
                    3 => group_kernel::<SCALE, PREFETCH, 3>(run),
                    _ => group_kernel::<SCALE, PREFETCH, 4>(run),
                }
            }
        }
    }

    /// One group of `NS` strips (`ys`: its rows of `y`, the last strip's possibly fewer than
    /// [`MR`]) from `start`; `next` is where the next group read starts, or null.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `start` is valid for `NS·MR·k` reads; `x` has `k` values.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn group_kernel<const SCALE: bool, const PREFETCH: u8, const NS: usize>(
        (k, start, next, alpha, x, beta, ys): (usize, *const f32, *const f32, f32, &[f32], f32, &mut [f32]),
    ) {
        const LINE: usize = 16; // f32 per 64-byte cache line
        let va = _mm512_set1_ps(alpha);
        let panels = k / P;
        let len = NS * MR * k;
        let yp = ys.as_mut_ptr();
        // Lanes of each strip's two accumulators that hold rows of A (the rest is padding).
        // (A plain loop: `array::from_fn` here was left a call per strip.)
        let mut masks = [(0, 0); NS];
        for (j, m) in masks.iter_mut().enumerate() {
            let rows = ys.len().saturating_sub(j * MR).min(MR);
            *m = (mask(rows), mask(rows.saturating_sub(16)));
        }
        let mut acc: [(__m512, __m512); NS] = std::array::from_fn(|j| {
            let (mlo, mhi) = masks[j];
            let yj = yp.wrapping_add(j * MR);
            // SAFETY: masked loads touch only the strip's rows of `ys`.
            let (ylo, yhi) =
                unsafe { (_mm512_maskz_loadu_ps(mlo, yj), _mm512_maskz_loadu_ps(mhi, yj.wrapping_add(16))) };
            if beta == 0.0 {
                (_mm512_setzero_ps(), _mm512_setzero_ps())
            } else if beta == 1.0 {
                (ylo, yhi)
            } else {
                let vb = _mm512_set1_ps(beta);
                (_mm512_mul_ps(vb, ylo), _mm512_mul_ps(vb, yhi))
            }
        });
        let bx = |v: f32| {
            let v = _mm512_set1_ps(v);
            if SCALE {
                _mm512_mul_ps(va, v)
            } else {
                v
            }
        };
        for q in 0..panels {
            let base = start.wrapping_add(q * P * NS * MR);
            if PREFETCH != 0 {
                // The panel's lines PREFETCH_AHEAD bytes later in reading order (in the next
                // group read, near the end of this one).
                let ahead = q * P * NS * MR + PREFETCH_AHEAD / 4;
                let pf = if ahead < len { start.wrapping_add(ahead) } else { next.wrapping_add(ahead - len) };
                if ahead < len || !next.is_null() {
                    for l in 0..P * NS * MR / LINE {
                        // A hint only: it never faults.
                        let line = pf.wrapping_add(l * LINE) as *const i8;
                        if PREFETCH == 1 {
                            _mm_prefetch::<_MM_HINT_T0>(line);
                        } else {
                            _mm_prefetch::<_MM_HINT_NTA>(line);
                        }
                    }
                }
            }
            // One bounds check per panel, not one per column; each x_p broadcast once for the
            // group's strips.
            let xq: &[f32; P] = x[q * P..(q + 1) * P].try_into().expect("a panel of x");
            let xv: [__m512; P] = std::array::from_fn(|l| bx(xq[l]));
            for (j, (lo, hi)) in acc.iter_mut().enumerate() {
                let sp = base.wrapping_add(j * P * MR);
                let mut el = [_mm512_setzero_ps(); P];
                let mut eh = [_mm512_setzero_ps(); P];
                for l in 0..P {
                    // SAFETY: column q·P + l of strip j of the group lies inside its values.
                    unsafe {
                        el[l] = _mm512_mul_ps(xv[l], _mm512_loadu_ps(sp.add(l * MR)));
                        eh[l] = _mm512_mul_ps(xv[l], _mm512_loadu_ps(sp.add(l * MR + 16)));
                    }
                }
                // y_i += ((e_0 + e_1) + (e_2 + e_3)) + ((e_4 + e_5) + (e_6 + e_7))
                *lo = _mm512_add_ps(*lo, tree(&el));
                *hi = _mm512_add_ps(*hi, tree(&eh));
            }
        }
        // The last k mod 8 columns, one at a time (each strip's are contiguous).
        for p in panels * P..k {
            let xv = bx(x[p]);
            for (j, (lo, hi)) in acc.iter_mut().enumerate() {
                let col = start.wrapping_add(offset_in_group(NS, k, j, p));
                // SAFETY: column p of strip j of the group lies inside its values.
                unsafe {
                    *lo = _mm512_add_ps(*lo, _mm512_mul_ps(xv, _mm512_loadu_ps(col)));
                    *hi = _mm512_add_ps(*hi, _mm512_mul_ps(xv, _mm512_loadu_ps(col.add(16))));
                }
            }
        }
        for (j, &(lo, hi)) in acc.iter().enumerate() {
            let (mlo, mhi) = masks[j];
            let yj = yp.wrapping_add(j * MR);
            // SAFETY: masked stores touch only the strip's rows of `ys`.
            unsafe {
                _mm512_mask_storeu_ps(yj, mlo, lo);
                _mm512_mask_storeu_ps(yj.wrapping_add(16), mhi, hi);
            }
        }
    }

    /// [`gemv_columns_f32`](super::gemv_columns_f32): for each chunk of
    /// [`COLUMN_ROWS`](super::COLUMN_ROWS) rows of `y` and each panel of 8 columns, 32 rows at a
    /// time (two registers; a masked pair for the last rows of the chunk), the eight products
    /// summed in the fixed tree and added to `y`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the caller's contract of `gemv_columns_f32`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns(alpha: f32, a: *const f32, cs: isize, x: &[f32], y: &mut [f32]) {
        let k = x.len();
        let panels = k / P;
        for (c, yc) in y.chunks_mut(super::COLUMN_ROWS).enumerate() {
            let i0 = c * super::COLUMN_ROWS;
            let rows = yc.len();
            let yp = yc.as_mut_ptr();
            // Column p of this chunk.
            let col = |p: usize| a.wrapping_offset(p as isize * cs).wrapping_add(i0);
            for q in 0..panels {
                let s: [__m512; P] = std::array::from_fn(|l| _mm512_set1_ps(alpha * x[q * P + l]));
                let cols: [*const f32; P] = std::array::from_fn(|l| col(q * P + l));
                let mut i = 0;
                while i < rows {
                    let (mlo, mhi) = (mask(rows - i), mask((rows - i).saturating_sub(16)));
                    let mut el = [_mm512_setzero_ps(); P];
                    let mut eh = [_mm512_setzero_ps(); P];
                    for l in 0..P {
                        // SAFETY: the masked lanes are rows < m of column q·P + l (the caller's
                        // contract); lanes outside the masks are not read.
                        unsafe {
                            el[l] = _mm512_mul_ps(s[l], _mm512_maskz_loadu_ps(mlo, cols[l].wrapping_add(i)));
                            eh[l] =
                                _mm512_mul_ps(s[l], _mm512_maskz_loadu_ps(mhi, cols[l].wrapping_add(i + 16)));
                        }
                    }
                    // SAFETY: as above, rows < m of y.
                    unsafe {
                        let lo = _mm512_add_ps(_mm512_maskz_loadu_ps(mlo, yp.wrapping_add(i)), tree(&el));
                        let hi =
                            _mm512_add_ps(_mm512_maskz_loadu_ps(mhi, yp.wrapping_add(i + 16)), tree(&eh));
                        _mm512_mask_storeu_ps(yp.wrapping_add(i), mlo, lo);
                        _mm512_mask_storeu_ps(yp.wrapping_add(i + 16), mhi, hi);
                    }
                    i += 32;
                }
            }
            for p in panels * P..k {
                let s = _mm512_set1_ps(alpha * x[p]);
                let cp = col(p);
                let mut i = 0;
                while i < rows {
                    let lanes = mask(rows - i);
                    // SAFETY: the masked lanes are rows < m of column p and of y.
                    unsafe {
                        let e = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(lanes, cp.wrapping_add(i)));
                        let v = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, yp.wrapping_add(i)), e);
                        _mm512_mask_storeu_ps(yp.wrapping_add(i), lanes, v);
                    }
                    i += 16;
                }
            }
        }
    }

    /// The mask of the first `min(n, 16)` lanes.
    #[inline(always)]
    fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// `((e_0 + e_1) + (e_2 + e_3)) + ((e_4 + e_5) + (e_6 + e_7))`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn tree(e: &[__m512; 8]) -> __m512 {
        let s01 = _mm512_add_ps(e[0], e[1]);
        let s23 = _mm512_add_ps(e[2], e[3]);
        let s45 = _mm512_add_ps(e[4], e[5]);
        let s67 = _mm512_add_ps(e[6], e[7]);
        _mm512_add_ps(_mm512_add_ps(s01, s23), _mm512_add_ps(s45, s67))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    /// `A` (`m×k`, row-major values from `a(i, p)`) packed in groups of `group` strips,
    /// zero-padded (`group = 1`: the strip layout).
    fn pack_grouped(group: usize, m: usize, k: usize, a: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        let strips = m.div_ceil(MR);
        let mut data = vec![0.0f32; strips * MR * k];
        for i in 0..m {
            for p in 0..k {
                data[column_offset(group, strips, k, i / MR, p) + i % MR] = a(i, p);
            }
        }
        data
    }

    /// `A` in the strip layout.
    fn pack(m: usize, k: usize, a: impl Fn(usize, usize) -> f32) -> Vec<f32> {
        pack_grouped(1, m, k, a)
    }

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
    }

    /// The strip layout is `s·MR·k + p·MR`; every layout puts each strip's column somewhere of
    /// its own (the offsets of all strips and columns are distinct multiples of MR, inside the
    /// matrix).
    #[test]
    fn layouts() {
        for &(strips, k) in &[(1usize, 1usize), (3, 8), (5, 13), (7, 129), (8, 16)] {
            for group in 1..=GROUP {
                let mut seen = vec![false; strips * k];
                for s in 0..strips {
                    for p in 0..k {
                        let o = column_offset(group, strips, k, s, p);
                        if group == 1 {
                            assert_eq!(o, s * MR * k + p * MR);
                        }
                        assert_eq!(o % MR, 0);
                        assert!(
                            !std::mem::replace(&mut seen[o / MR], true),
                            "group {group}: ({s}, {p}) twice"
                        );
                    }
                }
            }
        }
    }

    /// Every build and grouping against an f64 reference, |y - y_ref| ≤ 1e-6 times the sum of
    /// the terms' magnitudes (`|alpha·A_ip·x_p|` and `|beta·y_i|`), a few f32 roundings per term;
    /// m not a multiple of 32 and groups of 1 to 4 strips last, k = 1, k below and not a multiple
    /// of 8, alpha ≠ 1, beta 0 (over NaN), 1 and -0.5. The groupings and the portable build give
    /// the same bits as the strip layout.
    #[test]
    fn matches_f64_reference() {
        let mut rng = Rng::seed_from(7);
        for &(m, k) in &[
            (1usize, 1usize),
            (32, 8),
            (33, 1),
            (70, 13),
            (2048, 512),
            (100, 67),
            (31, 200),
            (150, 5),
            (200, 24),
            (250, 9),
        ] {
            let a = random(m * k, &mut rng);
            let x = random(k, &mut rng);
            let y0 = random(m, &mut rng);
            for &(alpha, beta) in &[(1.0f32, 0.0f32), (1.0, 1.0), (-0.75, -0.5), (2.0, 0.0)] {
                let mut want = vec![0.0f64; m];
                let mut bound = vec![0.0f64; m];
                for i in 0..m {
                    let (mut s, mut b) = (0.0f64, 0.0f64);
                    for p in 0..k {
                        let t = alpha as f64 * a[i * k + p] as f64 * x[p] as f64;
                        s += t;
                        b += t.abs();
                    }
                    let yb = if beta == 0.0 { 0.0 } else { beta as f64 * y0[i] as f64 };
                    want[i] = s + yb;
                    bound[i] = 1e-6 * (b + yb.abs());
                }
                let start = if beta == 0.0 { vec![f32::NAN; m] } else { y0.clone() };
                let mut strips = start.clone();
                gemv_strips_f32(m, k, &pack(m, k, |i, p| a[i * k + p]), alpha, &x, beta, &mut strips);
                for i in 0..m {
                    let err = (strips[i] as f64 - want[i]).abs();
                    assert!(
                        err <= bound[i],
                        "m {m} k {k} alpha {alpha} beta {beta} row {i}: {} vs {}",
                        strips[i],
                        want[i]
                    );
                }
                for group in 1..=GROUP {
                    let data = pack_grouped(group, m, k, |i, p| a[i * k + p]);
                    let mut fast = start.clone();
                    gemv_grouped_f32(group, m, k, &data, alpha, &x, beta, &mut fast, false);
                    let mut port = start.clone();
                    gemv_portable(group, k, &data, alpha, &x, beta, &mut port, false);
                    for i in 0..m {
                        assert_eq!(
                            fast[i].to_bits(),
                            strips[i].to_bits(),
                            "m {m} k {k} group {group} row {i}"
                        );
                        assert_eq!(
                            port[i].to_bits(),
                            strips[i].to_bits(),
                            "m {m} k {k} group {group} row {i}"
                        );
                    }
                }
            }
        }
    }

    /// `pack_rows` writes what `column_offset` describes, for consecutive and scattered rows
    /// (the batch-1 route packs each gate's rows of its units).
    #[test]
    fn pack_rows_matches_layout() {
        let mut rng = Rng::seed_from(12);
        let (rows, k) = (300, 21);
        let w = random(rows * k, &mut rng);
        for &(m, scattered) in &[(200usize, false), (150, true), (40, true)] {
            let row = |i: usize| if scattered { (i * 7) % rows } else { i + 3 };
            for group in 1..=GROUP {
                let mut got = vec![f32::NAN; m.div_ceil(MR) * MR * k];
                pack_rows(group, &w, rows, k, m, row, &mut got);
                let want = pack_grouped(group, m, k, |i, p| w[p * rows + row(i)]);
                assert_eq!(got, want, "m {m} group {group} scattered {scattered}");
            }
        }
    }

    /// A row's value does not depend on `m` or on where the row sits: rows 5..69 of a 70-row
    /// product, computed as a 64-row product of their own, give the same bits.
    #[test]
    fn rows_independent_of_m() {
        let mut rng = Rng::seed_from(8);
        let (m, k) = (70, 45);
        let a = random(m * k, &mut rng);
        let x = random(k, &mut rng);
        let mut full = random(m, &mut rng);
        let mut part = full[5..69].to_vec();
        gemv_strips_f32(m, k, &pack(m, k, |i, p| a[i * k + p]), 1.0, &x, 1.0, &mut full);
        gemv_strips_f32(64, k, &pack(64, k, |i, p| a[(i + 5) * k + p]), 1.0, &x, 1.0, &mut part);
        assert_eq!(&full[5..69], &part[..]);
    }

    /// The same bits as the column-major GEMV of `gemm` (a one-column product), which sums in
    /// the same order.
    #[test]
    fn same_bits_as_gemm() {
        let mut rng = Rng::seed_from(9);
        let (m, k) = (100, 77);
        let a = crate::Mat::<f32>::from_fn(m, k, |_, _| rng.uniform(-1.0, 1.0) as f32);
        let x = crate::Mat::<f32>::from_fn(k, 1, |_, _| rng.uniform(-1.0, 1.0) as f32);
        let y0 = crate::Mat::<f32>::from_fn(m, 1, |_, _| rng.uniform(-1.0, 1.0) as f32);
        let mut want = y0.clone();
        crate::gemm(1.0, &a, crate::Trans::No, &x, crate::Trans::No, 1.0, &mut want);
        let mut got = y0.as_slice().to_vec();
        gemv_strips_f32(m, k, &pack(m, k, |i, p| a[(i, p)]), 1.0, x.as_slice(), 1.0, &mut got);
        assert_eq!(want.as_slice(), &got[..]);
    }

    /// Reading the strips (or groups) last to first gives the same bits (m = 100: a partial
    /// last strip, and groups of 4 and 3 strips for m = 200), under every cap of this CPU's
    /// kernels (AVX-512, AVX2, portable), each the same bits as the others.
    #[test]
    fn reverse_order_same_bits() {
        use crate::simd::{Level, TestCap};
        let mut rng = Rng::seed_from(10);
        for (m, k) in [(100, 300), (200, 64)] {
            let a = random(m * k, &mut rng);
            let x = random(k, &mut rng);
            let y0 = random(m, &mut rng);
            for group in 1..=GROUP {
                let data = pack_grouped(group, m, k, |i, p| a[i * k + p]);
                let mut first: Option<Vec<f32>> = None;
                for level in [Level::Avx512, Level::Avx2, Level::Baseline] {
                    let _cap = TestCap::set(level);
                    let (mut fwd, mut rev) = (y0.clone(), y0.clone());
                    gemv_grouped_f32(group, m, k, &data, 1.0, &x, 1.0, &mut fwd, false);
                    gemv_grouped_f32(group, m, k, &data, 1.0, &x, 1.0, &mut rev, true);
                    assert_eq!(fwd, rev, "m {m} group {group} {level:?}");
                    assert_eq!(
                        &fwd,
                        first.get_or_insert_with(|| fwd.clone()),
                        "m {m} group {group} {level:?}"
                    );
                }
            }
        }
    }

    /// Each prefetch choice of the AVX-512 kernel (a CPU runs only one of them) gives the
    /// portable build's bits, in both orders, with alpha 1 and not, for every grouping (the last
    /// strip partial; m = 200: groups of 4 and 3 strips).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_prefetch_same_bits() {
        use crate::cache::GemvPrefetch;
        if crate::simd::gemm_level() != crate::simd::Level::Avx512 {
            return;
        }
        let mut rng = Rng::seed_from(11);
        let (m, k) = (200, 129);
        let a = random(m * k, &mut rng);
        let x = random(k, &mut rng);
        let y0 = random(m, &mut rng);
        for group in 1..=GROUP {
            let data = pack_grouped(group, m, k, |i, p| a[i * k + p]);
            for alpha in [1.0f32, -0.75] {
                let mut want = y0.clone();
                gemv_portable(group, k, &data, alpha, &x, 0.5, &mut want, false);
                for pf in [GemvPrefetch::None, GemvPrefetch::Caches, GemvPrefetch::NonTemporal] {
                    for reverse in [false, true] {
                        let mut got = y0.clone();
                        // SAFETY: the CPU has AVX-512F (checked above); the lengths fit m and k.
                        unsafe {
                            avx512::prefetching(pf, group, k, &data, alpha, &x, 0.5, &mut got, reverse)
                        };
                        assert_eq!(got, want, "{pf:?}, group {group}, alpha {alpha}, reverse {reverse}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_shapes() {
        let mut y = vec![3.0f32; 5];
        gemv_strips_f32(5, 0, &[], 1.0, &[], 0.5, &mut y);
        assert_eq!(y, vec![1.5; 5]);
        gemv_strips_f32(0, 4, &[], 1.0, &[1.0; 4], 0.0, &mut []);
        let mut y = vec![3.0f32; 70];
        gemv_grouped_f32(GROUP, 70, 0, &[], 1.0, &[], 0.5, &mut y, true);
        assert_eq!(y, vec![1.5; 70]);
    }
}
