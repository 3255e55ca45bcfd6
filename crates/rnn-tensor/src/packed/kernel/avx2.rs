//! The AVX2 + FMA build of the f32 GEMM's micro-kernel and packing, for CPUs without AVX-512
//! (most laptops) or with it capped ([`simd::set_max_level`](crate::simd::set_max_level)).
//!
//! It reads the same operands as the AVX-512 kernel: strips of [`MR`] = 32 rows and panels of
//! `B` up to [`NR`] = 12 columns wide, so packings, the loop nest of `gemm_f32` and the splits
//! across threads are shared. AVX2 has 16 ymm registers, so a strip and a panel are taken in
//! register blocks of [`MH`] = 16 rows (two 8-lane registers) by at most [`NH`] = 6 columns: 12
//! accumulators, two registers for a column of the half strip and one broadcast of `B`, one FMA
//! per accumulator and step `p`. The block loop keeps a half strip (16 KB for 256 values of `k`)
//! in L1 while it sweeps the panel, and prefetches nothing from a packed strip: the hardware
//! prefetchers bring it from L2 in time, and a prefetch per step cost more than it saved.
//!
//! **Arithmetic: the AVX-512 kernel's.** Each element of `C` has its own accumulator per `k`
//! block, started at zero and updated by one fused multiply-add per `p` in increasing order, and
//! is combined as `c ← fma(alpha, acc, prev)` with `prev` = `beta·c` (first block; 0 when
//! `beta = 0`, `C` not read) or `c` (later blocks). The lane width never enters a sum, so the
//! bits are those of the AVX-512 kernel for every shape and split.
//!
//! Packing has no masked loads or 16×16 transposes here: strips and panels copy contiguous runs,
//! go through 8×8 transposes in registers where the operand is stored the other way, and copy
//! other layouts element by element. A narrow product's column-major `A` is read in
//! place as on AVX-512, but always strip by strip: [`micro_copying`] reads a whole strip in place
//! for the first panel and copies it, the other panels read the copy; a last strip of fewer than
//! 32 rows is packed first (no masked loads in the loop). Against packing `A` group by group of
//! strips (Intel Xeon model 207, `RNN_MAX_SIMD=avx2`, 2026-12-05, old/new time over 11
//! alternating rounds): `cell_lstm_fwdbwd` 1.03, `cell_gru_fwdbwd` 1.00, `cell_rnn_fwdbwd` 1.05
//! at one thread, 1.02-1.04 at two (docs/performance-log.md).

use std::arch::x86_64::*;

use super::{combine_column, for_each_p, pack_panel_any, pack_strip_any, Out, Prev, MR, NR, PF_A};

/// `LANE_MASKS[8 - n..][..8]`: the first `n` lanes of a mask for `_mm256_maskstore_ps`.
const LANE_MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// Rows of a register block: two 8-lane registers.
const MH: usize = 16;
/// Columns of a register block: `2·NH` = 12 accumulators, with two registers for `A` and one
/// broadcast of `B`, out of 16.
const NH: usize = 6;

/// [`pack_strips`](super::pack_strips) with AVX2: per strip and column, a copy of the column's
/// contiguous rows (`rs = 1`), else element by element.
///
/// # Safety
/// AVX2; `a` valid for the shape and strides; `out` holds `⌈m/MR⌉·MR·k` values.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_strips(m: usize, k: usize, a: *const f32, rs: isize, cs: isize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), m.div_ceil(MR) * MR * k);
    for (s, strip) in out.chunks_exact_mut((MR * k).max(1)).enumerate().take(m.div_ceil(MR)) {
        let rows = MR.min(m - s * MR);
        // SAFETY: rows s·MR.. of A.
        let base = unsafe { a.offset((s * MR) as isize * rs) };
        if rs == 1 {
            for (p, dst) in strip.chunks_exact_mut(MR).enumerate() {
                // SAFETY: column p holds `rows` contiguous values from row s·MR.
                let src = unsafe { std::slice::from_raw_parts(base.offset(p as isize * cs), rows) };
                dst[..rows].copy_from_slice(src);
                dst[rows..].fill(0.0);
            }
        } else if cs == 1 {
            // Rows of A contiguous (a transposed operand): 8×8 transposes.
            if rows < MR {
                strip.fill(0.0);
            }
            // SAFETY: `rows` rows of k contiguous values, `rs` apart; column p of the strip at
            // p·MR.
            unsafe { transpose(base, rs, rows, k, strip.as_mut_ptr(), MR) };
        } else {
            // SAFETY: the strip's rows of A; the strip holds MR·k values.
            unsafe { pack_strip_any(rows, k, base, rs, cs, strip) };
        }
    }
}

/// [`pack_b`](super::pack_b) with AVX2: panels of [`NR`] columns, `p`-major; rows of `B`
/// contiguous (`csb = 1`) are copied a run at a time, other layouts element by element.
///
/// # Safety
/// AVX2; `b` valid for the shape and strides; `out` holds at least `⌈nc/NR⌉·NR·kc` values.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn pack_b(kc: usize, nc: usize, b: *const f32, rsb: isize, csb: isize, out: &mut [f32]) {
    for j0 in (0..nc).step_by(NR) {
        let w = NR.min(nc - j0);
        let panel = &mut out[j0 * kc..j0 * kc + w * kc];
        // SAFETY: column j0 of B.
        let at = unsafe { b.offset(j0 as isize * csb) };
        if csb == 1 {
            for (p, dst) in panel.chunks_exact_mut(w).enumerate() {
                // SAFETY: row p of B holds w contiguous values from column j0.
                dst.copy_from_slice(unsafe { std::slice::from_raw_parts(at.offset(p as isize * rsb), w) });
            }
        } else if rsb == 1 {
            // Columns of B contiguous (the common case): 8×8 transposes.
            // SAFETY: w columns of kc contiguous values, `csb` apart; row p of the panel at p·w.
            unsafe { transpose(at, csb, w, kc, panel.as_mut_ptr(), w) };
        } else {
            // SAFETY: columns j0..j0+w of B; the panel holds kc·w values.
            unsafe { pack_panel_any(kc, w, at, rsb, csb, panel) };
        }
    }
}

/// `dst[q·dstride + v] = src[v·stride + q]` for `v < nv`, `q < len`: `nv` runs of `len`
/// contiguous values, `stride` apart, written across (run `v` into lane `v` of each output row).
/// Blocks of 8 × 8 go through registers (unpacks, shuffles and 128-bit permutes); the edges
/// element by element.
///
/// # Safety
/// AVX2; the `nv` runs are readable, the `len` output rows of `nv` values writable.
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose(src: *const f32, stride: isize, nv: usize, len: usize, dst: *mut f32, dstride: usize) {
    let (nv8, len8) = (nv / 8 * 8, len / 8 * 8);
    for v0 in (0..nv8).step_by(8) {
        for q0 in (0..len8).step_by(8) {
            // SAFETY: runs v0..v0+8, values q0..q0+8; output rows q0..q0+8, lanes v0..v0+8.
            unsafe {
                let r: [__m256; 8] = std::array::from_fn(|i| {
                    _mm256_loadu_ps(src.offset((v0 + i) as isize * stride + q0 as isize))
                });
                let d = dst.add(q0 * dstride + v0);
                for (q, o) in transpose8(&r).into_iter().enumerate() {
                    _mm256_storeu_ps(d.add(q * dstride), o);
                }
            }
        }
    }
    // The edges: runs past the last 8, and values past the last 8 of the others.
    for v in 0..nv {
        let from = if v < nv8 { len8 } else { 0 };
        for q in from..len {
            // SAFETY: run v, value q; output row q, lane v.
            unsafe { *dst.add(q * dstride + v) = *src.offset(v as isize * stride + q as isize) };
        }
    }
}

/// The micro-kernel for a strip of `A` (`lda` apart, packed, 32-byte aligned) and a panel `w`
/// columns wide (`1 ≤ w ≤ NR`; packed, `B[p, j] = b[p·w + j]`, or with `bsb > 0` the columns of
/// a strip packing, `B[p, j] = b[(p / MR)·bsb + j·MR + p % MR]`): register blocks of [`MH`] rows
/// by [`NH`] columns, the half strips in turn, each across the panel.
///
/// # Safety
/// AVX2 and FMA; `in_place` false (this kernel reads `A` in place only through
/// [`micro_copying`]); `a` holds `kc` columns of `MR` values `lda` apart; `b` the `kc × w` values
/// of its layout; `out.c` valid for `out.rows × w`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn micro(
    w: usize,
    kc: usize,
    a: *const f32,
    (lda, in_place): (usize, bool),
    (b, bsb): (*const f32, usize),
    out: Out,
) {
    debug_assert!(!in_place, "the AVX2 kernel reads A in place only through micro_copying");
    // SAFETY: the caller's contract; no copy.
    unsafe { blocks(w, kc, a, lda, (b, bsb), out, std::ptr::null_mut()) }
}

/// [`micro`] for a whole strip of `A` read in place (`MR` rows, columns `lda` apart, any
/// alignment) and a packed panel of `B`, that also copies the strip as [`pack_strips`] would
/// into `copy` (`MR·kc` values, 32-byte aligned): the first panel of a product that reads `A`
/// in place, whose other panels then read the copy from L1 (as the AVX-512 route does, see
/// `STRIPWISE_PANELS`). Each half strip is copied by its first register block, which reads it
/// in place; the half strip's other blocks read the copy.
///
/// # Safety
/// AVX2 and FMA; `out.rows == MR`; `a` holds `kc` columns of `MR` values `lda` apart; `b` the
/// packed `kc × w` panel; `out.c` valid for `MR × w`; `copy` valid for `MR·kc` values, 32-byte
/// aligned, overlapping none of them.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn micro_copying(
    w: usize,
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    out: Out,
    copy: *mut f32,
) {
    debug_assert_eq!(out.rows, MR);
    // SAFETY: the caller's contract.
    unsafe { blocks(w, kc, a, lda, (b, 0), out, copy) }
}

/// The register blocks of [`micro`] (`copy` null) and [`micro_copying`] (`copy` not null: each
/// half strip's first block reads `a` in place and writes the copy, the others read the copy).
///
/// # Safety
/// As [`micro`], or as [`micro_copying`] when `copy` is not null.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn blocks(
    w: usize,
    kc: usize,
    a: *const f32,
    lda: usize,
    (b, bsb): (*const f32, usize),
    out: Out,
    copy: *mut f32,
) {
    for h in 0..MR / MH {
        let rows = out.rows.saturating_sub(h * MH).min(MH);
        if rows == 0 {
            break;
        }
        for j0 in (0..w).step_by(NH) {
            let o = Out {
                c: out.c.wrapping_offset((h * MH) as isize * out.rsc + j0 as isize * out.csc),
                rows,
                ..out
            };
            // Where this block reads the half strip, and whether it copies it.
            let copying = !copy.is_null() && j0 == 0;
            let (ah, lda) = if copy.is_null() || copying {
                (a.wrapping_add(h * MH), lda)
            } else {
                (copy.wrapping_add(h * MH) as *const f32, MR)
            };
            let ch = copy.wrapping_add(h * MH);
            // SAFETY: rows h·MH.. of the strip (or of its copy), columns j0.. of the panel and
            // of C's block (the caller's contract).
            unsafe {
                macro_rules! widths {
                    ($bs:literal, $copy:literal, $bp:expr, $bw:expr) => {
                        match NH.min(w - j0) {
                            6 => block::<$bs, $copy, 6>(kc, ah, lda, $bp, $bw, bsb, o, ch),
                            5 => block::<$bs, $copy, 5>(kc, ah, lda, $bp, $bw, bsb, o, ch),
                            4 => block::<$bs, $copy, 4>(kc, ah, lda, $bp, $bw, bsb, o, ch),
                            3 => block::<$bs, $copy, 3>(kc, ah, lda, $bp, $bw, bsb, o, ch),
                            2 => block::<$bs, $copy, 2>(kc, ah, lda, $bp, $bw, bsb, o, ch),
                            1 => block::<$bs, $copy, 1>(kc, ah, lda, $bp, $bw, bsb, o, ch),
                            n => unreachable!("register block width {n}"),
                        }
                    };
                }
                if bsb > 0 {
                    widths!(true, false, b.wrapping_add(j0 * MR), MR)
                } else if copying {
                    widths!(false, true, b.wrapping_add(j0), w)
                } else {
                    widths!(false, false, b.wrapping_add(j0), w)
                }
            }
        }
    }
}

/// The transpose of an 8×8 block held in registers (unpacks, shuffles and 128-bit permutes):
/// lane `v` of output `q` is lane `q` of input `v`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn transpose8(r: &[__m256; 8]) -> [__m256; 8] {
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(x, y)
        } else {
            _mm256_unpackhi_ps(x, y)
        }
    });
    // u[4h + c]: column c of each 4-lane half (rows 4h..4h+4, in 128-bit lanes).
    let u: [__m256; 8] = std::array::from_fn(|i| {
        let (h, c) = (i / 4, i % 4);
        let (x, y) = (t[4 * h + c / 2], t[4 * h + 2 + c / 2]);
        if c % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(x, y)
        } else {
            _mm256_shuffle_ps::<0xEE>(x, y)
        }
    });
    std::array::from_fn(|q| {
        let (lo, hi) = (u[q % 4], u[4 + q % 4]);
        if q < 4 {
            _mm256_permute2f128_ps::<0x20>(lo, hi)
        } else {
            _mm256_permute2f128_ps::<0x31>(lo, hi)
        }
    })
}

/// One step `p` of a register block: `lo[j] += a0·B[p, j]` and `hi[j] += a1·B[p, j]` (one FMA
/// each), with `B[p, j]` at `bp + j·bj`.
///
/// # Safety
/// AVX2 and FMA; `bp + j·bj` is readable for `j < N`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn fma_row<const N: usize>(
    a0: __m256,
    a1: __m256,
    bp: *const f32,
    bj: usize,
    lo: &mut [__m256; N],
    hi: &mut [__m256; N],
) {
    for j in 0..N {
        // SAFETY: the caller's contract.
        let b = _mm256_broadcast_ss(unsafe { &*bp.add(j * bj) });
        lo[j] = _mm256_fmadd_ps(a0, b, lo[j]);
        hi[j] = _mm256_fmadd_ps(a1, b, hi[j]);
    }
}

/// One `MH × N` register block: `acc = Σ_p A[:, p] ⊗ B[p, :]` over `kc` values of `p` (one FMA
/// chain per element, in order of `p`), then combined with `C` as `out` says. `B[p, j]` is
/// `b[p·bw + j]` (a packed panel `bw` wide) or, with `B_STRIPS`, `b[(p / MR)·bsb + j·MR + p % MR]`
/// (see [`for_each_p`]). With `COPY`, `A` is read in place (unaligned) and each of its columns
/// also stored, as loaded, at `copy + p·MR`; without, `copy` is not used.
///
/// # Safety
/// AVX2 and FMA; `a` holds `kc` columns of [`MH`] values `lda` apart, 32-byte aligned unless
/// `COPY`; `b` the `kc × N` values of its layout; `out.c` valid for `out.rows × N` (`out.rows ≤
/// MH`); with `COPY`, `copy` valid for `(kc - 1)·MR + MH` values, 32-byte aligned, overlapping
/// none of them.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const B_STRIPS: bool, const COPY: bool, const N: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    bw: usize,
    bsb: usize,
    out: Out,
    copy: *mut f32,
) {
    let mut lo = [_mm256_setzero_ps(); N];
    let mut hi = [_mm256_setzero_ps(); N];
    let mut ap = a;
    let mut cp = copy;
    // Packed A (every block but a copying one): four steps p per iteration, so that the
    // pointer updates and the loop's branch come once per 4·2·N multiply-adds instead of 2·N
    // (they share ports with the 256-bit FMAs). The same FMAs in the same order per element.
    // No software prefetch of `A` here, unlike the AVX-512 kernel: a strip packed in L2 reaches
    // L1 through the hardware prefetchers in time for this loop, and one `prefetcht0` per step
    // cost 5 % of the loop's rate with the strip in L1 or L2 (a scratch program: 84.5-86.5 →
    // 89.3-90.2 GFLOP/s against a peak of 96-102) and 1-2.4 % of the cases under the AVX2 cap
    // (five interleaved rounds, one thread, model-207 Xeon, 2026-12-05). Put back on the
    // model-167 Xeon, it slowed the cases under the cap by 0.2-1.4 % there too.
    let (mut kc, mut b, mut b_row) = (kc, b, 0);
    if !COPY && lda == MR {
        // Row p of B at `strip + row` (`row` = p mod MR in strips, 0 in a panel); `B[p, j]` at
        // `+ j·bj`, row p + u at `+ u·du`.
        let (bj, du) = if B_STRIPS { (MR, 1) } else { (1, bw) };
        let (mut strip, mut row) = (b, 0);
        for _ in 0..kc / 4 {
            let bp = strip.wrapping_add(row);
            // SAFETY: columns p..p+4 of the half strip (aligned) and rows p..p+4 of B (in a
            // strip packing, p mod 4 = 0 and MR a multiple of 4 keep them in one strip).
            unsafe {
                for u in 0..4 {
                    let (a0, a1) = (_mm256_load_ps(ap.add(u * MR)), _mm256_load_ps(ap.add(u * MR + 8)));
                    fma_row(a0, a1, bp.add(u * du), bj, &mut lo, &mut hi);
                }
            }
            ap = ap.wrapping_add(4 * MR);
            if B_STRIPS {
                row += 4;
                if row == MR {
                    (strip, row) = (strip.wrapping_add(bsb), 0);
                }
            } else {
                strip = strip.wrapping_add(4 * bw);
            }
        }
        (b, b_row, kc) = (strip, row, kc % 4);
    }
    // The remaining steps (all of them for a copying block) one at a time, from row `b_row` of a
    // strip of B (fewer than 4 steps: no strip boundary among them).
    let b = b.wrapping_add(b_row);
    // One step p: column p of the half strip, row p of B (`B[p, j]` at `bp + j·bj`); `ap`
    // advances with wrapping arithmetic, as after the last step it may point past the strip,
    // unread.
    for_each_p(B_STRIPS, kc, b, bw, bsb, |bp, bj| {
        // SAFETY: the loads read column p of the half strip (aligned unless COPY) and row p of
        // B; with COPY, the stores write column p of the copy's half strip.
        unsafe {
            let (a0, a1) = if COPY {
                // Read in place (columns `lda` apart, out of the hardware prefetchers' reach):
                // the half strip's column PF_A steps ahead, into L1 (one cache line, or two
                // when it straddles them).
                let pf = ap.wrapping_add(PF_A * lda);
                _mm_prefetch::<_MM_HINT_T0>(pf as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(MH - 1) as *const i8);
                let (a0, a1) = (_mm256_loadu_ps(ap), _mm256_loadu_ps(ap.add(8)));
                _mm256_store_ps(cp, a0);
                _mm256_store_ps(cp.add(8), a1);
                cp = cp.wrapping_add(MR);
                (a0, a1)
            } else {
                (_mm256_load_ps(ap), _mm256_load_ps(ap.add(8)))
            };
            fma_row(a0, a1, bp, bj, &mut lo, &mut hi);
        }
        ap = ap.wrapping_add(lda);
    });
    let alpha = _mm256_set1_ps(out.alpha);
    if out.rsc == 1 && out.rows == MH {
        for j in 0..N {
            // SAFETY: column j of the block holds MH contiguous values.
            unsafe {
                let cp = out.c.offset(j as isize * out.csc);
                for (acc, cp) in [(lo[j], cp), (hi[j], cp.add(8))] {
                    let prev = match out.prev {
                        Prev::Beta(0.0) => _mm256_setzero_ps(),
                        Prev::Beta(beta) => _mm256_mul_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(cp)),
                        Prev::Acc => _mm256_loadu_ps(cp),
                    };
                    _mm256_storeu_ps(cp, _mm256_fmadd_ps(alpha, acc, prev));
                }
            }
        }
    } else if out.csc == 1 {
        // C with contiguous rows (a transposed product, `Cᵀ = Bᵀ·Aᵀ`): each half of the
        // accumulators transposed in registers, then the same operations row by row, `N` lanes.
        // SAFETY: a plain vector of lane masks.
        let nmask = unsafe { _mm256_loadu_si256(LANE_MASKS[8 - N..].as_ptr().cast()) };
        for (h, half) in [lo, hi].iter().enumerate() {
            let mut r = [_mm256_setzero_ps(); 8];
            r[..N].copy_from_slice(half);
            for (q, acc) in transpose8(&r).into_iter().enumerate().take(out.rows.saturating_sub(8 * h)) {
                // SAFETY: row 8h + q of the block holds N contiguous values; the mask covers
                // exactly those.
                unsafe {
                    let cp = out.c.offset((8 * h + q) as isize * out.rsc);
                    let prev = match out.prev {
                        Prev::Beta(0.0) => _mm256_setzero_ps(),
                        Prev::Beta(beta) => {
                            _mm256_mul_ps(_mm256_set1_ps(beta), _mm256_maskload_ps(cp, nmask))
                        }
                        Prev::Acc => _mm256_maskload_ps(cp, nmask),
                    };
                    _mm256_maskstore_ps(cp, nmask, _mm256_fmadd_ps(alpha, acc, prev));
                }
            }
        }
    } else {
        // A partial block or strided C: the same operations element by element.
        let mut tmp = [0.0f32; MH];
        for j in 0..N {
            // SAFETY: tmp holds MH values.
            unsafe {
                _mm256_storeu_ps(tmp.as_mut_ptr(), lo[j]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), hi[j]);
            }
            // SAFETY: column j is inside the block of C.
            unsafe { combine_column(&out, j, &tmp) };
        }
    }
}
