//! The f32 GEMM: `C = alpha·A·B + beta·C` with `A` in strips of [`MR`] rows, on AVX-512 or, where
//! AVX-512 is absent or capped ([`gemm_level`](crate::simd::gemm_level)), AVX2 with FMA (`avx2.rs`): the same strips,
//! the same loop nest and the same arithmetic, so both give the same bits.
//!
//! The AVX-512 micro-kernel keeps a `32 × N` block of `C` (`N ≤ NR`) in `2·N` zmm registers and adds
//! `A[:, p] ⊗ B[p, :]` for each `p` with one fused multiply-add per register: two 16-lane loads
//! of the strip, `N` broadcasts of the packed `B` panel.
//!
//! **Arithmetic (the same for every shape and split of a call).** `k` is cut into blocks of
//! [`KC`] starting at 0, a constant. Within a block every element of `C` has its own accumulator,
//! started at zero and updated by one FMA per `p` in increasing order; at the end of the block
//! `c ← fma(alpha, acc, prev)` where `prev` is `beta·c` for the first block (`0` when
//! `beta = 0`, `C` then is not read) and `c` for the others. Nothing depends on `m`, `n`, on where
//! a strip or panel starts, or on which of the two operands plays `A` (an FMA's product is
//! commutative), so an element of `C` gets the same bits whether the product is computed whole,
//! by halves of its rows or columns, or transposed.
//!
//! Loop nest (from outside): `k` blocks; column blocks of at most [`Blocking::nc`] (their `B`
//! block is packed into a thread-local buffer as panels of [`NR`] columns, `p`-major); groups of
//! [`Blocking::mc_strips`] strips of `A`; panels (one stays in L1 while the group's strips stream
//! from L2); strips.
//! When `A` is not a [`PackedLhs`](super::PackedLhs), each `k` block of it is packed into strips
//! per call (a thread-local buffer; group by group when `B` is one column block, so that `C`
//! stays in L2 across the `k` blocks), or, for a column-major `A` and a narrow `B`, read in
//! place (AVX-512: with masked loads; AVX2: whole strips, copied by the first panel). `B` is
//! packed per `k` block, or, when it is itself a strip packing (`gemm_packed_pair`), read in
//! place (its column `j` holds 32 consecutive values of `k` per strip). Each micro-kernel call
//! prefetches its block of `C` before its loop.
//!
//! Measured on the project's machine (Zen 5, one core, CPU time): 220 to 240 GFLOP/s with `A`
//! packed, against a 250 GFLOP/s FMA peak.
//!
//! Every entry point takes the [`Level`] of the kernel to run (AVX-512 or AVX2, never the
//! baseline), read once by the top-level call, so that a call keeps one route to the end.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ptr::null_mut;

use super::{SendPtr, MR};
use crate::linalg::{RawGemm, Strided};
use crate::parallel;
use crate::simd::Level;

mod avx2;

/// Columns of `C` per micro-kernel call (`2·NR` accumulators plus two registers for `A`).
pub(crate) const NR: usize = 12;
/// The `k` block: a constant, so that the arithmetic does not depend on the shape of a call.
pub(crate) const KC: usize = 256;
/// Products with at most this many columns read a column-major `A` in place instead of
/// packing it (packing costs `m·k` copies against `m·k·n` multiply-adds).
const DIRECT_MAX_N: usize = 96;
/// Such a product with more panels of `B` than this copies each strip of `A` into L1 (packs it)
/// once and runs every panel on the copy, instead of reading the strip in place once per panel:
/// a strip's columns lie `4·m` bytes apart (4 KB for an LSTM's `1024 × 256` weights), so they
/// share a few L1 sets and came from L2 for each panel. The first panel makes the copy as it
/// reads the strip in place ([`micro_copying`]: two stores per step `p`, where the kernel's
/// store port idles), the others read it.
///
/// Measured on the model-207 Xeon, one thread, `bench_table --gemm` (our `gemm` route, three
/// runs of each binary, alternating):
/// - with the copy a pass of its own before the panels, from 6 panels up: `1024 × 256 × 64`
///   1.03-1.07× faster than in place, `768 × 256 × 64` 1.09-1.11×; from 2 to 5 panels slower;
/// - with the copy made by the first panel: against that pass, `1024 × 256 × 64` 150 → 158-159
///   GFLOP/s, `768 × 256 × 64` 150-153 → 164, `256 × 256 × 64` 136-137 → 151-155; and from 2
///   panels up (this constant 1 instead of 5), against in place, `1024 × 256 × 32` 134-148 →
///   157, `768 × 256 × 32` 146-151 → 158, `256 × 256 × 32` 131-145 → 151, `512 × 128 × 32`
///   145 → 153. The cells' cases (`cell_*_fwdbwd`, whose forward products take this route)
///   1.02-1.03× faster (nine interleaved rounds).
///
/// The same bits: the micro-kernel sums the same values in the same order either way.
const STRIPWISE_PANELS: usize = 1;
/// The blocking of the loop nest below the `k` blocks, from the core's L2 size at run time
/// ([`cache::l2_bytes`](crate::cache::l2_bytes)): how many strips of `A` are multiplied by one
/// panel of `B` before the next panel (the panel stays in L1, the strips in L2), and how many
/// columns of `B` are packed at a time (`KC × nc` floats, in L2 with a group of strips). Each
/// gets at most a quarter of the L2, and at most the sizes tuned on the 1 and 2 MB L2s of the
/// project's machines (8 strips, 256 KB; 264 columns, 264 KB, so that 256 columns make one
/// block); a 256 KB L2 (many AVX2 laptops) gets 2 strips and 72 columns, so that the two blocks
/// still fit beside `C`. Only `KC` enters the arithmetic, so the blocking never changes a bit
/// (tested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// Strips of `A` per group.
    pub(crate) mc_strips: usize,
    /// Columns of `B` per packed block (a multiple of [`NR`]).
    pub(crate) nc: usize,
    /// Whether the AVX-512 kernel takes a block's columns in [`panels`] of balanced widths
    /// (always, but in the tests that check that this changes no bit).
    pub(crate) balanced_panels: bool,
}

impl Blocking {
    /// The blocking for an L2 of `l2` bytes.
    pub(crate) fn for_l2(l2: usize) -> Self {
        let quarter = l2 / 4;
        let f = std::mem::size_of::<f32>();
        Blocking {
            mc_strips: (quarter / (MR * KC * f)).clamp(2, 8),
            nc: (quarter / (KC * f)).next_multiple_of(NR).clamp(4 * NR, 22 * NR),
            balanced_panels: true,
        }
    }

    /// This CPU's, read once (in the tests, the one a [`TestBlocking`] sets on this thread).
    pub(crate) fn current() -> Self {
        #[cfg(test)]
        if let Some(b) = TEST_BLOCKING.with(|t| t.get()) {
            return b;
        }
        static B: std::sync::OnceLock<Blocking> = std::sync::OnceLock::new();
        *B.get_or_init(|| Blocking::for_l2(crate::cache::l2_bytes()))
    }
}

#[cfg(test)]
thread_local! {
    static TEST_BLOCKING: std::cell::Cell<Option<Blocking>> = const { std::cell::Cell::new(None) };
}

/// Another CPU's blocking for this thread's products while the guard lives (tests only).
#[cfg(test)]
pub(crate) struct TestBlocking;

#[cfg(test)]
impl TestBlocking {
    pub(crate) fn set(b: Option<Blocking>) -> Self {
        TEST_BLOCKING.with(|t| t.set(b));
        TestBlocking
    }
}

#[cfg(test)]
impl Drop for TestBlocking {
    fn drop(&mut self) {
        TEST_BLOCKING.with(|t| t.set(None));
    }
}

/// How many steps `p` ahead the micro-kernel prefetches its strip of `A` into L1 (8 columns of
/// 128 bytes: 1 KB, about 100 cycles of work ahead, an L2 round trip and more). The strips stream
/// from L2 and the hardware prefetchers left the loads waiting on them: measured on the 2-core
/// Xeon, interleaved against no prefetch, +4 to +10 % on the whole-sequence products and on the
/// cases (`seq_lstm_fwdbwd` 1.08×, `cell_lstm_fwdbwd` 1.10×); 4 and 16 steps ahead did no better.
/// The AVX2 kernel prefetches only a strip it reads in place: on a packed strip the prefetch
/// cost it more issue slots than it saved waiting (see `avx2::block`).
const PF_A: usize = 8;

/// A reusable buffer whose usable part starts on a 64-byte boundary (a cache line, so that
/// every 16-lane load of a strip is aligned).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    v: Vec<f32>,
}

impl AlignedBuf {
    /// A 64-byte-aligned slice of `len` floats (contents unspecified).
    pub(crate) fn get(&mut self, len: usize) -> &mut [f32] {
        if self.v.len() < len + 16 {
            self.v.resize(len + 16, 0.0);
        }
        let off = cache_line_offset(self.v.as_ptr());
        &mut self.v[off..off + len]
    }
}

/// The mask of the first `min(n, 16)` lanes.
fn lane_mask(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// How many `f32` from `p` the next 64-byte boundary is (0 to 15).
pub(crate) fn cache_line_offset(p: *const f32) -> usize {
    (64 - p as usize % 64) % 64 / 4
}

thread_local! {
    static B_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
    static A_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// Where a product also adds the row sums of `A` (the columns it reads, in order of `p`): the
/// sums of rows `0..m` at `.0` and, unless null, a second copy of them at `.1`; both null: no
/// sums. Each strip's block of `k` is summed right after the micro-kernel read it for the first
/// panel, from L1 and L2, instead of in a pass of its own over an `A` that has left the caches.
#[derive(Clone, Copy)]
pub(crate) struct RowSums(pub(crate) *mut f32, pub(crate) *mut f32);

impl RowSums {
    /// No sums.
    pub(crate) const NONE: RowSums = RowSums(std::ptr::null_mut(), std::ptr::null_mut());

    /// These sums from row `i` on.
    fn at_row(self, i: usize) -> Self {
        let at = |p: *mut f32| if p.is_null() { p } else { p.wrapping_add(i) };
        RowSums(at(self.0), at(self.1))
    }
}

/// `sums[i] += Σ_p a[p·MR + i]` for `p` in `0..kc`, in order of `p`, for the `rows` rows of one
/// strip's block of `kc` columns (`.1` likewise unless null): on AVX-512 in one pass for both
/// sums, elsewhere by [`add_strip_sums`](super::add_strip_sums), whose arithmetic both are.
///
/// # Safety
/// `a` holds the block, `kc` columns of `MR` values; the sums hold `rows ≤ MR` values and nobody
/// else touches them during the call.
unsafe fn add_block_sums(a: *const f32, kc: usize, rows: usize, sums: RowSums, level: Level) {
    if level == Level::Avx512 {
        // SAFETY: the caller's contract; the level says the CPU has AVX-512F.
        return unsafe { add_block_sums_avx512(a, kc, rows, sums) };
    }
    // SAFETY: the caller's contract: the block, and `rows` values at each non-null sum.
    unsafe {
        let block = std::slice::from_raw_parts(a, kc * MR);
        let also = (!sums.1.is_null()).then(|| std::slice::from_raw_parts_mut(sums.1, rows));
        super::add_strip_sums(block, std::slice::from_raw_parts_mut(sums.0, rows), also);
    }
}

/// [`add_block_sums`] on AVX-512: both sums in one pass, two 16-lane adds per column and sum
/// (the same additions, lane by lane).
///
/// # Safety
/// As [`add_block_sums`], and the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn add_block_sums_avx512(a: *const f32, kc: usize, rows: usize, sums: RowSums) {
    let (m0, m1) = (lane_mask(rows), lane_mask(rows.saturating_sub(16)));
    let two = !sums.1.is_null();
    // SAFETY: the caller's contract: the sums hold `rows` values (the masks cover them), each
    // column of the block at least `rows` (read under the same masks).
    unsafe {
        let (mut s0, mut s1) =
            (_mm512_maskz_loadu_ps(m0, sums.0), _mm512_maskz_loadu_ps(m1, sums.0.wrapping_add(16)));
        let (mut t0, mut t1) = if two {
            (_mm512_maskz_loadu_ps(m0, sums.1), _mm512_maskz_loadu_ps(m1, sums.1.wrapping_add(16)))
        } else {
            (_mm512_setzero_ps(), _mm512_setzero_ps())
        };
        for p in 0..kc {
            let col = a.add(p * MR);
            let (a0, a1) = (_mm512_maskz_loadu_ps(m0, col), _mm512_maskz_loadu_ps(m1, col.wrapping_add(16)));
            s0 = _mm512_add_ps(s0, a0);
            s1 = _mm512_add_ps(s1, a1);
            if two {
                t0 = _mm512_add_ps(t0, a0);
                t1 = _mm512_add_ps(t1, a1);
            }
        }
        _mm512_mask_storeu_ps(sums.0, m0, s0);
        _mm512_mask_storeu_ps(sums.0.wrapping_add(16), m1, s1);
        if two {
            _mm512_mask_storeu_ps(sums.1, m0, t0);
            _mm512_mask_storeu_ps(sums.1.wrapping_add(16), m1, t1);
        }
    }
}

/// The left operand of [`gemm_f32`].
#[derive(Clone, Copy)]
pub(crate) enum Lhs<'a> {
    /// Already in strips, zero-padded: `A[s·MR + r, p] = data[s·stride + p·MR + r]` (the
    /// second field is `stride`; `MR·k` for a whole packing, more for a range of its columns).
    Strips(&'a [f32], usize),
    /// Any strides; each `k` block is packed into strips per call.
    Strided(Strided<*const f32>),
}

/// `C = alpha·A·B + beta·C` with the arithmetic described in the module docs, on the kernels of
/// `level`.
///
/// # Safety
/// The CPU has the features of `level` (AVX-512F, or AVX2 and FMA); the pointers are valid for the shapes and strides; `C` does not alias
/// `A` or `B`; a `Strips` slice holds `(⌈m/MR⌉ - 1)·stride + MR·k` values. With `bsb > 0`,
/// `B` is read in place from strips `bsb` apart: `B[p, j] = b.ptr[(p / MR)·bsb + j·b.cs + p % MR]`
/// with `b.cs = MR` (the columns of a strip packing; `b.rs` is unused).
unsafe fn gemm_f32(g: RawGemm<f32, Lhs<'_>>, bsb: usize, level: Level, sums: RowSums) {
    let Blocking { mc_strips, nc: block_cols, balanced_panels } = Blocking::current();
    let balanced = balanced_panels && level == Level::Avx512;
    let RawGemm { m, k, n, alpha, a, b, beta, c } = g;
    debug_assert!(bsb == 0 || b.cs == MR as isize);
    let Strided { ptr: b, rs: rsb, cs: csb } = b;
    let Strided { ptr: c, rs: rsc, cs: csc } = c;
    if m == 0 || n == 0 {
        return;
    }
    let strips = m.div_ceil(MR);
    if k == 0 {
        for j in 0..n {
            for i in 0..m {
                // SAFETY: (i, j) is inside C.
                unsafe {
                    let cij = c.offset(i as isize * rsc + j as isize * csc);
                    *cij = if beta == 0.0 { 0.0 } else { beta * *cij };
                }
            }
        }
        return;
    }
    B_BUF.with_borrow_mut(|bbuf| {
        A_BUF.with_borrow_mut(|abuf| {
            for kb in (0..k).step_by(KC) {
                let kc = KC.min(k - kb);
                let first = kb == 0;
                // The k block of A: strip s at `ablk + s·sa`, column p of the strip `lda` further
                // than column p - 1. With one block of columns, a per-call packing goes group by
                // group of strips instead (below), so that the packed block (256 KB) leaves room
                // in L2 for C across the k blocks.
                let per_group = matches!(a, Lhs::Strided(_)) && n <= block_cols;
                let (ablk, sa, lda, in_place) = match a {
                    Lhs::Strips(data, stride) => {
                        debug_assert!(data.len() >= (strips - 1) * stride + MR * k);
                        // SAFETY: offset kb·MR is inside strip 0.
                        (unsafe { data.as_ptr().add(kb * MR) }, stride, MR, false)
                    }
                    // Contiguous columns of A and few columns of B: read A in place (the AVX-512
                    // kernel masks rows past m); packing it would cost a sizeable part of the
                    // product.
                    Lhs::Strided(Strided { ptr, cs, .. }) if reads_in_place(&a, n) => {
                        // SAFETY: column kb is inside A.
                        (unsafe { ptr.offset(kb as isize * cs) }, MR, cs as usize, true)
                    }
                    Lhs::Strided(_) if per_group => (std::ptr::null(), MR * kc, MR, false),
                    Lhs::Strided(Strided { ptr, rs, cs }) => {
                        let buf = abuf.get(strips * MR * kc);
                        // SAFETY: columns kb..kb+kc of A are inside it.
                        unsafe { pack_strips(level, m, kc, ptr.offset(kb as isize * cs), rs, cs, buf) };
                        (buf.as_ptr(), MR * kc, MR, false)
                    }
                };
                let per_group = per_group && !in_place;
                for jc in (0..n).step_by(block_cols) {
                    let nc = block_cols.min(n - jc);
                    // Panel j0 of the block (kb.., jc..) of B at `bblk + j0·bpj`.
                    let (bblk, bpj) = if bsb > 0 {
                        // In place (kb is a multiple of KC, so of MR).
                        (b.wrapping_add(kb / MR * bsb + jc * MR), MR)
                    } else {
                        let bpk = bbuf.get(nc.div_ceil(NR) * NR * kc);
                        // SAFETY: the block (kb.., jc..) of B is inside B.
                        unsafe {
                            let at = b.offset(kb as isize * rsb + jc as isize * csb);
                            match level {
                                Level::Avx512 => pack_b(kc, nc, balanced, at, rsb, csb, bpk),
                                _ => avx2::pack_b(kc, nc, at, rsb, csb, bpk),
                            }
                        };
                        (bpk.as_ptr(), kc)
                    };
                    // Where strip s's block of C starts at column j: its rows as `Out` wants them.
                    let out_at = |s: usize, j: usize| Out {
                        c: c.wrapping_offset((s * MR) as isize * rsc + j as isize * csc),
                        rsc,
                        csc,
                        rows: MR.min(m - s * MR),
                        alpha,
                        prev: if first { Prev::Beta(beta) } else { Prev::Acc },
                    };
                    if in_place && (nc > STRIPWISE_PANELS * NR || level != Level::Avx512) {
                        // Wide enough (or AVX2, whose kernel reads A in place only this way):
                        // each strip copied into L1 once, then all the panels. The first panel
                        // reads the strip in place and copies it as it goes.
                        let strip = abuf.get(MR * kc);
                        debug_assert_eq!(bsb, 0);
                        for s in 0..strips {
                            let at = ablk.wrapping_add(s * MR);
                            for (q, (j0, w)) in panels(nc, balanced).enumerate() {
                                let (bp, out) = (bblk.wrapping_add(j0 * bpj), out_at(s, jc + j0));
                                let (copying, rows) = (q == 0, out.rows);
                                // SAFETY: strip s of A in place (`ablk` is column kb, columns
                                // `lda` apart, rows masked on AVX-512, whole on AVX2) or its
                                // copy, panel j0 of B and the C block (s·MR.., jc+j0..) are
                                // inside their buffers; the copy holds a strip.
                                unsafe {
                                    match level {
                                        Level::Avx512 if copying => {
                                            micro_copying(w, kc, at, lda, bp, out, strip.as_mut_ptr())
                                        }
                                        Level::Avx512 => {
                                            micro(w, kc, strip.as_ptr(), (MR, false), (bp, 0), out)
                                        }
                                        _ if copying && rows == MR => {
                                            avx2::micro_copying(w, kc, at, lda, bp, out, strip.as_mut_ptr())
                                        }
                                        _ => {
                                            if copying {
                                                // A last strip of fewer rows: packed first
                                                // (AVX2 has no masked reads in its loop).
                                                pack_strips(level, rows, kc, at, 1, lda as isize, strip);
                                            }
                                            avx2::micro(w, kc, strip.as_ptr(), (MR, false), (bp, 0), out)
                                        }
                                    }
                                };
                            }
                        }
                        continue;
                    }
                    for s0 in (0..strips).step_by(mc_strips) {
                        let s1 = strips.min(s0 + mc_strips);
                        // Strip s at `gblk + (s - gs0)·sa`.
                        let (gblk, gs0) = match a {
                            Lhs::Strided(Strided { ptr, rs, cs }) if per_group => {
                                let buf = abuf.get((s1 - s0) * MR * kc);
                                let rows = (m - s0 * MR).min((s1 - s0) * MR);
                                // SAFETY: rows s0·MR.. and columns kb..kb+kc of A are inside it.
                                unsafe {
                                    let at = ptr.offset((s0 * MR) as isize * rs + kb as isize * cs);
                                    pack_strips(level, rows, kc, at, rs, cs, buf)
                                };
                                (buf.as_ptr(), s0)
                            }
                            _ => (ablk, 0),
                        };
                        for (j0, w) in panels(nc, balanced) {
                            for s in s0..s1 {
                                let rows = MR.min(m - s * MR);
                                // SAFETY: strip s, panel j0/NR and the C block (s·MR.., jc+j0..)
                                // are inside their buffers.
                                unsafe {
                                    let micro = match level {
                                        Level::Avx512 => micro,
                                        _ => avx2::micro,
                                    };
                                    micro(
                                        w,
                                        kc,
                                        gblk.add((s - gs0) * sa),
                                        (lda, in_place),
                                        (bblk.wrapping_add(j0 * bpj), bsb),
                                        out_at(s, jc + j0),
                                    )
                                };
                                if j0 == 0 && jc == 0 && !sums.0.is_null() {
                                    // Sums come only with `A` in strips, whose columns are MR
                                    // apart.
                                    debug_assert_eq!(lda, MR);
                                    // SAFETY: strip s's block (kc columns of MR) was just read;
                                    // its rows' sums are this call's.
                                    unsafe {
                                        add_block_sums(
                                            gblk.add((s - gs0) * sa),
                                            kc,
                                            rows,
                                            sums.at_row(s * MR),
                                            level,
                                        )
                                    };
                                }
                            }
                        }
                    }
                }
            }
        })
    });
}

/// Products of more multiply-adds than this are split across [`parallel::num_threads`] threads.
/// First chosen as `1 << 23` (about 50 µs of work on one core) on the 2-core Xeon, two threads,
/// interleaved rounds against `1 << 26` (0.3 ms): the one-step cells' weight gradients
/// (`1024 × 64 × 256`, just above it) then split, `cell_lstm_fwdbwd` 1.40× and
/// `cell_gru_fwdbwd` 1.42× faster, `lm_rnn` 1.14× (its head's `65 × 256 × 1536` products
/// split), the other cases unchanged within the noise; `1 << 24` left the cells' products
/// whole. A second core that is busy with another process makes any split wait for it (the
/// head's products once ran ten times slower on two threads of this shared machine).
///
/// Lowered from `1 << 23` to `1 << 21` (about 12 µs of work) on the model-207 Xeon (no AMX),
/// two threads, seven interleaved rounds: the RNN cell's four `256 × 256 × 64` products
/// (`1 << 22` multiply-adds each) stayed whole, so two threads ran `cell_rnn_fwdbwd` slower than
/// one; split, 0.339 → 0.266 ms (medians; ranges 0.321-0.419 and 0.236-0.332). No other case
/// has a product between the two bounds outside a split time loop (whose products run inline).
pub(crate) const THREAD_MACS: usize = 1 << 21;

/// `C = alpha·A·B + beta·C` for f32 matrices with any strides: [`gemm_f32`] with `A` packed
/// per call, on the orientation that wastes the fewest padded rows (`Cᵀ = Bᵀ·Aᵀ` when `m` is
/// small and `n` large: the same bits, see the module docs), split across threads by strips of
/// rows or panels of columns when large.
///
/// # Safety
/// As [`gemm_f32`].
pub(crate) unsafe fn gemm_strided(g: RawGemm<f32>, level: Level) {
    // The micro-kernels compute `m` rounded up to strips, for each column.
    let (m, n) = (g.m, g.n);
    let flip = 10 * n.div_ceil(MR) * MR * m < 8 * m.div_ceil(MR) * MR * n;
    let g = if flip { RawGemm { m: n, n: m, a: g.b.t(), b: g.a.t(), c: g.c.t(), ..g } } else { g };
    let RawGemm { m, k, n, alpha, a, b, beta, c } = g;
    // SAFETY: the caller's contract.
    unsafe {
        gemm_parts(RawGemm { m, k, n, alpha, a: Lhs::Strided(a), b, beta, c }, 0, level, RowSums::NONE)
    };
}

/// [`gemm_f32`], split across [`parallel::num_threads`] threads by strips of rows or panels of
/// columns when larger than [`THREAD_MACS`] (the same bits for any split, see the module docs).
///
/// # Safety
/// As [`gemm_f32`].
pub(crate) unsafe fn gemm_parts(g: RawGemm<f32, Lhs<'_>>, bsb: usize, level: Level, sums: RowSums) {
    let (m, k, n) = (g.m, g.k, g.n);
    let _timer = super::times::Timer::start(m, k, n, || route_name(&g.a, n, bsb, sums));
    let parts = if m.saturating_mul(k).saturating_mul(n) > THREAD_MACS { parallel::num_threads() } else { 1 };
    let by_rows = m.div_ceil(MR) >= n.div_ceil(NR);
    let (g, sums) = (SendPtr(g), SendPtr(sums));
    parallel::for_each_part(parts, |part| {
        let g = g.get();
        let sums = sums.get();
        let (rows, cols) = if by_rows { (part.range(m, MR), 0..n) } else { (0..m, part.range(n, NR)) };
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        let (i0, j0) = (rows.start as isize, cols.start as isize);
        let a = match g.a {
            // SAFETY: row i0 is inside A.
            Lhs::Strided(a) => Lhs::Strided(Strided { ptr: unsafe { a.ptr.offset(i0 * a.rs) }, ..a }),
            // Parts by rows start on strip boundaries (`part.range(m, MR)`).
            Lhs::Strips(data, stride) => Lhs::Strips(&data[rows.start / MR * stride..], stride),
        };
        // SAFETY: the block (rows, cols) of C and the matching rows of A and columns of B are
        // inside them; the parts' blocks of C are disjoint. The caller checked `level`.
        unsafe {
            gemm_f32(
                RawGemm {
                    m: rows.len(),
                    k,
                    n: cols.len(),
                    alpha: g.alpha,
                    a,
                    b: Strided { ptr: g.b.ptr.offset(j0 * g.b.cs), ..g.b },
                    beta: g.beta,
                    c: Strided { ptr: g.c.ptr.offset(i0 * g.c.rs + j0 * g.c.cs), ..g.c },
                },
                bsb,
                level,
                // Parts by rows sum their own rows; by columns, the first part sums them all.
                if cols.start == 0 { sums.at_row(rows.start) } else { RowSums::NONE },
            )
        };
    });
}

/// Whether [`gemm_f32`] reads `A` in place for a product with `n` columns: contiguous columns
/// of `A` and few columns of `B` (the AVX-512 kernel masks rows past `m`; the AVX2 one reads
/// whole strips in place and packs a last partial strip).
fn reads_in_place(a: &Lhs<'_>, n: usize) -> bool {
    matches!(a, Lhs::Strided(Strided { rs: 1, cs, .. }) if *cs >= 0) && n <= DIRECT_MAX_N
}

/// How [`gemm_f32`] reads the operands of a call, for [`times`](super::times): the route of
/// the whole call (a call split by columns across threads may read `A` in place in parts narrow
/// enough for it when the whole call packs `A`).
fn route_name(a: &Lhs<'_>, n: usize, bsb: usize, sums: RowSums) -> &'static str {
    match (a, reads_in_place(a, n), bsb > 0, !sums.0.is_null()) {
        (Lhs::Strips(..), _, true, false) => "A in strips, B in strips",
        (Lhs::Strips(..), _, true, true) => "A in strips, B in strips, row sums",
        (Lhs::Strips(..), _, false, false) => "A in strips",
        (Lhs::Strips(..), _, false, true) => "A in strips, row sums",
        (Lhs::Strided(_), true, _, _) => "A in place",
        (Lhs::Strided(_), false, _, _) => "A packed per call",
    }
}

/// Packs rows `0..m`, columns `0..k` of the matrix at `a` (strides `rs`, `cs`) into strips
/// (`out[s·MR·k + p·MR + r] = A[s·MR + r, p]`, rows past `m` zero), with the code of `level`.
///
/// # Safety
/// The CPU has the features of `level` (AVX-512F, or AVX2); `a` valid for the shape and
/// strides; `out` holds `⌈m/MR⌉·MR·k` values.
pub(crate) unsafe fn pack_strips(
    level: Level,
    m: usize,
    k: usize,
    a: *const f32,
    rs: isize,
    cs: isize,
    out: &mut [f32],
) {
    // SAFETY: the caller's contract.
    unsafe {
        match level {
            Level::Avx512 => pack_strips_avx512(m, k, a, rs, cs, out),
            _ => avx2::pack_strips(m, k, a, rs, cs, out),
        }
    }
}

/// [`pack_strips`] with AVX-512.
///
/// # Safety
/// AVX-512F; as [`pack_strips`].
#[target_feature(enable = "avx512f")]
unsafe fn pack_strips_avx512(m: usize, k: usize, a: *const f32, rs: isize, cs: isize, out: &mut [f32]) {
    debug_assert_eq!(out.len(), m.div_ceil(MR) * MR * k);
    if k == 0 {
        return;
    }
    if rs == 1 {
        // Columns of A contiguous: two masked 16-lane copies per column of a strip (a memcpy
        // call per 32 values cost a sixth of a large product; going column by column across
        // all strips, writing 32 places far apart, was slower still).
        for (s, strip) in out.chunks_exact_mut(MR * k).enumerate() {
            let rows = MR.min(m - s * MR);
            let (m0, m1) = (lane_mask(rows), lane_mask(rows.saturating_sub(16)));
            // SAFETY: rows s·MR.. of A.
            let base = unsafe { a.add(s * MR) };
            for (p, dst) in strip.chunks_exact_mut(MR).enumerate() {
                // SAFETY: column p holds `rows` contiguous values from row s·MR (the masks cover
                // exactly those); dst holds MR values.
                unsafe {
                    let src = base.offset(p as isize * cs);
                    _mm512_storeu_ps(dst.as_mut_ptr(), _mm512_maskz_loadu_ps(m0, src));
                    _mm512_storeu_ps(
                        dst.as_mut_ptr().add(16),
                        _mm512_maskz_loadu_ps(m1, src.wrapping_add(16)),
                    );
                }
            }
        }
        return;
    }
    for (s, strip) in out.chunks_exact_mut(MR * k).enumerate() {
        let rows = MR.min(m - s * MR);
        // SAFETY: rows s·MR.. of A.
        let base = unsafe { a.offset((s * MR) as isize * rs) };
        if cs == 1 {
            // Rows of A contiguous (a transposed operand): 16×16 transposes.
            for h in 0..MR / 16 {
                let nv = rows.saturating_sub(16 * h).min(16);
                for p0 in (0..k).step_by(16) {
                    // SAFETY: rows 16h..16h+nv of the strip, columns p0.. of A; the output
                    // rows p0.. of the strip, lanes 16h..16h+16.
                    unsafe {
                        transpose_block(
                            base.wrapping_offset((16 * h) as isize * rs + p0 as isize),
                            rs,
                            nv,
                            16.min(k - p0),
                            strip.as_mut_ptr().add(p0 * MR + 16 * h),
                            MR,
                            16,
                        )
                    };
                }
            }
        } else {
            // SAFETY: rows s·MR.. of A; the strip holds MR·k values.
            unsafe { pack_strip_any(rows, k, base, rs, cs, strip) };
        }
    }
}

/// One strip of [`pack_strips`], element by element (any strides): `strip[p·MR + r] = A[r, p]`
/// for `r < rows`, zero below.
///
/// # Safety
/// `a` valid for `rows × k` with the strides; `strip` holds `MR·k` values.
#[inline(always)]
unsafe fn pack_strip_any(rows: usize, k: usize, a: *const f32, rs: isize, cs: isize, strip: &mut [f32]) {
    for p in 0..k {
        for r in 0..MR {
            strip[p * MR + r] =
                // SAFETY: (r, p) is inside A.
                if r < rows { unsafe { *a.offset(r as isize * rs + p as isize * cs) } } else { 0.0 };
        }
    }
}

/// Transposes a block of up to 16×16 values: input vector `v < nv` is the `len ≤ 16` values at
/// `src + v·stride` (vectors `nv..16` are zero); output vector `q < len` goes to
/// `dst + q·dstride`, its first `lanes` lanes (lane `v` = input vector `v`, value `q`).
///
/// # Safety
/// AVX-512F; the `nv` input runs and the `len` output runs of `lanes` values are valid.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose_block(
    src: *const f32,
    stride: isize,
    nv: usize,
    len: usize,
    dst: *mut f32,
    dstride: usize,
    lanes: usize,
) {
    let lmask = lane_mask(len);
    let mut r = [_mm512_setzero_ps(); 16];
    for (v, rv) in r.iter_mut().enumerate().take(nv) {
        // SAFETY: input run v.
        *rv = unsafe { _mm512_maskz_loadu_ps(lmask, src.offset(v as isize * stride)) };
    }
    let smask = lane_mask(lanes);
    for (q, o) in transpose16(&r).into_iter().enumerate().take(len) {
        // SAFETY: output run q.
        unsafe { _mm512_mask_storeu_ps(dst.add(q * dstride), smask, o) };
    }
}

/// The transpose of a 16×16 block held in registers: lane `v` of output `q` is lane `q` of
/// input `v`.
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
    // Within 128-bit lanes: pairs, then quadruples (u[4i + c], lane L = column 4L + c of rows
    // 4i..4i+4).
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        u[4 * i] = _mm512_shuffle_ps::<0x44>(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_shuffle_ps::<0x44>(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * i + 1], t[4 * i + 3]);
    }
    // Across 128-bit lanes: output q = 4L + c gathers lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let x = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
        let y = _mm512_shuffle_f32x4::<0xDD>(u[c], u[4 + c]);
        let x2 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
        let y2 = _mm512_shuffle_f32x4::<0xDD>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(x, x2);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(y, y2);
        out[8 + c] = _mm512_shuffle_f32x4::<0xDD>(x, x2);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(y, y2);
    }
    out
}

/// Packs the `kc × nc` block of `B` at `b` as its [`panels`] (`balanced` as there), the panel of
/// `w` columns from `j0` at `out[j0·kc..]`, `p`-major: `out[j0·kc + p·w + j] = B[p, j0 + j]`.
///
/// # Safety
/// AVX-512F; `b` valid for the shape and strides; `out` holds at least `⌈nc/NR⌉·NR·kc` values.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(
    kc: usize,
    nc: usize,
    balanced: bool,
    b: *const f32,
    rsb: isize,
    csb: isize,
    out: &mut [f32],
) {
    for (j0, w) in panels(nc, balanced) {
        let panel = &mut out[j0 * kc..j0 * kc + w * kc];
        if csb == 1 {
            let mask = lane_mask(w);
            for (p, dst) in panel.chunks_exact_mut(w).enumerate() {
                // SAFETY: row p of B holds w contiguous values from column j0, dst holds w.
                unsafe {
                    let src = b.offset(p as isize * rsb + j0 as isize);
                    _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, _mm512_maskz_loadu_ps(mask, src));
                }
            }
        } else if rsb == 1 {
            // Columns of B contiguous (the common case): 16×16 transposes.
            for p0 in (0..kc).step_by(16) {
                // SAFETY: columns j0..j0+w, rows p0.. of B; rows p0.. of the panel.
                unsafe {
                    transpose_block(
                        b.offset(j0 as isize * csb + p0 as isize),
                        csb,
                        w,
                        16.min(kc - p0),
                        panel.as_mut_ptr().add(p0 * w),
                        w,
                        w,
                    )
                };
            }
        } else {
            // SAFETY: columns j0..j0+w of B.
            unsafe { pack_panel_any(kc, w, b.offset(j0 as isize * csb), rsb, csb, panel) };
        }
    }
}

/// One panel of [`pack_b`], element by element (any strides): `panel[p·w + j] = B[p, j]`.
///
/// # Safety
/// `b` valid for `kc × w` with the strides; `panel` holds `kc·w` values.
#[inline(always)]
unsafe fn pack_panel_any(kc: usize, w: usize, b: *const f32, rsb: isize, csb: isize, panel: &mut [f32]) {
    for j in 0..w {
        // SAFETY: column j of B.
        let col = unsafe { b.offset(j as isize * csb) };
        for p in 0..kc {
            // SAFETY: (p, j) is inside B.
            panel[p * w + j] = unsafe { *col.offset(p as isize * rsb) };
        }
    }
}

/// The panels `(j0, w)` of a block of `nc` columns of `B`, in order: `⌈nc/NR⌉` of them, [`NR`]
/// wide but the last or, `balanced` (the AVX-512 kernel's, see [`Blocking`]), of widths that
/// differ by at most one (64 columns: 10, 11, 11, 10, 11, 11). A panel of `w` columns does `2w`
/// multiply-adds per 128 bytes of its strip of `A`, which comes from L2, and a narrow last panel
/// (the 4 of `64 = 5·12 + 4`) waited on those loads. Measured on the model-207 Xeon, one thread,
/// `1024 × 256 × n`: 164.9 → 167.0 GFLOP/s at `n = 64`, 161.1 → 168.8 at `n = 16`. The AVX2
/// kernel takes a panel in halves of 6 columns, so it keeps the panels of `NR`. The widths do
/// not change a bit: each value of `C` is summed over `k` alone (tested).
pub(crate) fn panels(nc: usize, balanced: bool) -> impl Iterator<Item = (usize, usize)> {
    let count = nc.div_ceil(NR);
    (0..count).map(move |q| {
        if balanced {
            let (a, b) = (q * nc / count, (q + 1) * nc / count);
            (a, b - a)
        } else {
            (q * NR, NR.min(nc - q * NR))
        }
    })
}

/// How a micro-kernel's accumulators combine with `C`.
#[derive(Clone, Copy)]
pub(crate) enum Prev {
    /// The first `k` block: `c ← fma(alpha, acc, beta·c)` (`0` instead of `beta·c` when
    /// `beta = 0`).
    Beta(f32),
    /// A later block: `c ← fma(alpha, acc, c)`.
    Acc,
}

/// Where and how a micro-kernel writes its block of `C`.
#[derive(Clone, Copy)]
pub(crate) struct Out {
    c: *mut f32,
    rsc: isize,
    csc: isize,
    rows: usize,
    alpha: f32,
    prev: Prev,
}

/// `kernel::<IN_PLACE, B_STRIPS, COPY, w>(args)` for a width `w` known at run time
/// (`1 ≤ w ≤ NR`).
macro_rules! kernel_of_width {
    ($in_place:literal, $bs:literal, $copy:literal, $w:expr, $($arg:expr),*) => {
        match $w {
            12 => kernel::<$in_place, $bs, $copy, 12>($($arg),*),
            11 => kernel::<$in_place, $bs, $copy, 11>($($arg),*),
            10 => kernel::<$in_place, $bs, $copy, 10>($($arg),*),
            9 => kernel::<$in_place, $bs, $copy, 9>($($arg),*),
            8 => kernel::<$in_place, $bs, $copy, 8>($($arg),*),
            7 => kernel::<$in_place, $bs, $copy, 7>($($arg),*),
            6 => kernel::<$in_place, $bs, $copy, 6>($($arg),*),
            5 => kernel::<$in_place, $bs, $copy, 5>($($arg),*),
            4 => kernel::<$in_place, $bs, $copy, 4>($($arg),*),
            3 => kernel::<$in_place, $bs, $copy, 3>($($arg),*),
            2 => kernel::<$in_place, $bs, $copy, 2>($($arg),*),
            1 => kernel::<$in_place, $bs, $copy, 1>($($arg),*),
            w => unreachable!("micro-kernel width {w}"),
        }
    };
}

/// The micro-kernel for a panel `w` columns wide (`1 ≤ w ≤ NR`), `A`'s columns `lda` apart,
/// packed (aligned, zero-padded) or read in place (masked), `B` a packed panel (`bsb = 0`) or
/// in strips `bsb` apart (see [`kernel`]).
///
/// # Safety
/// As [`kernel`].
#[target_feature(enable = "avx512f")]
unsafe fn micro(
    w: usize,
    kc: usize,
    a: *const f32,
    (lda, in_place): (usize, bool),
    (b, bsb): (*const f32, usize),
    out: Out,
) {
    // SAFETY: the caller's contract.
    unsafe {
        match (in_place, bsb > 0) {
            (true, false) => kernel_of_width!(true, false, false, w, kc, a, lda, b, bsb, out, null_mut()),
            (false, false) => kernel_of_width!(false, false, false, w, kc, a, lda, b, bsb, out, null_mut()),
            (false, true) => kernel_of_width!(false, true, false, w, kc, a, lda, b, bsb, out, null_mut()),
            (true, true) => kernel_of_width!(true, true, false, w, kc, a, lda, b, bsb, out, null_mut()),
        }
    }
}

/// [`micro`] for a strip of `A` read in place (columns `lda` apart) and a packed panel of `B`,
/// that also copies the strip as it reads it, as [`pack_strips`] would (rows past `out.rows`
/// zero), into `copy` (`MR·kc` values, 64-byte aligned): the first panel of a wide product, whose
/// other panels then read the copy from L1 (see [`STRIPWISE_PANELS`]).
///
/// # Safety
/// As [`kernel`]; `copy` is valid for `MR·kc` values, aligned, and overlaps nothing else.
#[target_feature(enable = "avx512f")]
unsafe fn micro_copying(
    w: usize,
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    out: Out,
    copy: *mut f32,
) {
    // SAFETY: the caller's contract.
    unsafe { kernel_of_width!(true, false, true, w, kc, a, lda, b, 0, out, copy) }
}

/// `MR × N` block: `acc = Σ_p A[:, p] ⊗ B[p, :]` over `kc` values of `p` (one FMA chain per
/// element, in order of `p`), then combined with `C` as `out` says.
///
/// `B` is a packed panel (`B[p, j] = b[p·N + j]`) or, with `B_STRIPS`, the columns of a strip
/// packing read in place (`B[p, j] = b[(p / MR)·bsb + j·MR + p % MR]`: `B` itself packed as a
/// [`PackedLhs`](super::PackedLhs), column `j` holding `MR` consecutive values per strip).
/// With `COPY`, each column of the strip is also stored, as loaded (rows past `out.rows` zero),
/// at `copy + p·MR`; without, `copy` is not used.
///
/// # Safety
/// AVX-512F; `a` holds `kc` columns of `MR` values `lda` apart (64-byte aligned unless
/// `IN_PLACE`, when only the first `out.rows` of each column are read), `b` holds the `kc × N`
/// values of its layout; `out.c` is valid for `out.rows × N` with its strides; with `COPY`,
/// `copy` is valid for `MR·kc` values, 64-byte aligned, and overlaps none of them.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn kernel<const IN_PLACE: bool, const B_STRIPS: bool, const COPY: bool, const N: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    bsb: usize,
    out: Out,
    copy: *mut f32,
) {
    let (m0, m1) = (lane_mask(out.rows), lane_mask(out.rows.saturating_sub(16)));
    if out.rsc == 1 {
        // Start fetching the block of C now: with a large C it comes from L3 or memory, and
        // the loop below hides the wait.
        for j in 0..N {
            let cp = out.c.wrapping_offset(j as isize * out.csc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(cp);
            _mm_prefetch::<_MM_HINT_T0>(cp.wrapping_add(64));
        }
    }
    let mut lo = [_mm512_setzero_ps(); N];
    let mut hi = [_mm512_setzero_ps(); N];
    let mut ap = a;
    let mut cp = copy;
    // One step p: column p of the strip block, row p of B (`B[p, j]` at `bp + j·bj`); `ap`
    // advances with wrapping arithmetic, as after the last step it may point past the strip,
    // unread.
    for_each_p(B_STRIPS, kc, b, N, bsb, |bp, bj| {
        // SAFETY: the loads read column p of the strip block (in place: only its first `rows`
        // values, the masks) and row p of B; with COPY, the stores write column p of the copy.
        unsafe {
            // The strip's column PF_A steps ahead, into L1 (two cache lines).
            let pf = ap.wrapping_add(PF_A * lda) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(pf);
            _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(64));
            let (a0, a1) = if IN_PLACE {
                (_mm512_maskz_loadu_ps(m0, ap), _mm512_maskz_loadu_ps(m1, ap.wrapping_add(16)))
            } else {
                (_mm512_load_ps(ap), _mm512_load_ps(ap.add(16)))
            };
            if COPY {
                // Column p of the copy (the masked loads left rows past `rows` zero).
                _mm512_store_ps(cp, a0);
                _mm512_store_ps(cp.add(16), a1);
                cp = cp.add(MR);
            }
            for j in 0..N {
                let bj = _mm512_set1_ps(*bp.add(j * bj));
                lo[j] = _mm512_fmadd_ps(a0, bj, lo[j]);
                hi[j] = _mm512_fmadd_ps(a1, bj, hi[j]);
            }
        }
        ap = ap.wrapping_add(lda);
    });
    let alpha = _mm512_set1_ps(out.alpha);
    if out.rsc == 1 {
        for j in 0..N {
            // SAFETY: column j of the block holds `rows` contiguous values; the masks cover
            // exactly those.
            unsafe {
                let cp = out.c.offset(j as isize * out.csc);
                combine_lanes(cp, m0, lo[j], alpha, out.prev);
                combine_lanes(cp.wrapping_add(16), m1, hi[j], alpha, out.prev);
            }
        }
    } else if out.csc == 1 {
        // C with contiguous rows (a transposed product, `Cᵀ = Bᵀ·Aᵀ`): each half of the
        // accumulators transposed in registers, then the same operations row by row, `N` lanes.
        let nmask = lane_mask(N);
        for (h, half) in [lo, hi].iter().enumerate() {
            let mut r = [_mm512_setzero_ps(); 16];
            r[..N].copy_from_slice(half);
            for (q, acc) in transpose16(&r).into_iter().enumerate().take(out.rows.saturating_sub(16 * h)) {
                // SAFETY: row 16h + q of the block holds N contiguous values; the mask covers
                // exactly those.
                unsafe {
                    combine_lanes(out.c.offset((16 * h + q) as isize * out.rsc), nmask, acc, alpha, out.prev)
                };
            }
        }
    } else {
        // C with strided rows and columns: the same operations element by element.
        let mut tmp = [0.0f32; MR];
        for j in 0..N {
            // SAFETY: tmp holds MR values.
            unsafe {
                _mm512_storeu_ps(tmp.as_mut_ptr(), lo[j]);
                _mm512_storeu_ps(tmp.as_mut_ptr().add(16), hi[j]);
            }
            // SAFETY: column j is inside the block of C.
            unsafe { combine_column(&out, j, &tmp) };
        }
    }
}

/// `c ← fma(alpha, acc, prev)` on the lanes of `mask` of the 16 values at `cp`, `prev` as
/// [`Prev`] says (`C` is not read when it is `Beta(0)`).
///
/// # Safety
/// AVX-512F; the lanes of `mask` at `cp` are valid.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn combine_lanes(cp: *mut f32, mask: __mmask16, acc: __m512, alpha: __m512, prev: Prev) {
    // SAFETY: the caller's contract; masked lanes are neither read nor written.
    unsafe {
        let prev = match prev {
            Prev::Beta(0.0) => _mm512_setzero_ps(),
            Prev::Beta(beta) => _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(mask, cp)),
            Prev::Acc => _mm512_maskz_loadu_ps(mask, cp),
        };
        _mm512_mask_storeu_ps(cp, mask, _mm512_fmadd_ps(alpha, acc, prev));
    }
}

/// Calls `step(bp, bj)` for `p` in `0..kc`, in order, with row `p` of `B` at `bp` (`B[p, j]` at
/// `bp + j·bj`): a packed panel, `B[p, j] = b[p·bw + j]`, or with `b_strips` the columns of a
/// strip packing read in place, `B[p, j] = b[(p / MR)·bsb + j·MR + p % MR]`. The pointers are
/// computed with wrapping arithmetic; `step` reads them.
///
/// For the strips, one loop over `p` (a loop over strips around one over rows kept the
/// accumulators in memory) that carries the strip's start and the row in it from step to step.
/// Computed from `p` at every step, `(p / MR)·bsb` took a shift and an integer multiply, which
/// runs on one of the two ports of the 256-bit fused multiply-adds: 7-12 % of the AVX2 kernel's
/// time on the step products and up to 7 % of the AVX-512 kernel's (docs/performance-log.md,
/// "2026-12-03 evening").
#[inline(always)]
pub(crate) fn for_each_p(
    b_strips: bool,
    kc: usize,
    b: *const f32,
    bw: usize,
    bsb: usize,
    mut step: impl FnMut(*const f32, usize),
) {
    if b_strips {
        // B[p, 0] at `strip + r`, with `strip` = b + (p / MR)·bsb and r = p % MR.
        let (mut strip, mut r) = (b, 0);
        for _ in 0..kc {
            step(strip.wrapping_add(r), MR);
            r += 1;
            if r == MR {
                (strip, r) = (strip.wrapping_add(bsb), 0);
            }
        }
    } else {
        let mut bp = b;
        for _ in 0..kc {
            step(bp, 1);
            bp = bp.wrapping_add(bw);
        }
    }
}

/// Column `j` of a block of `C` from the accumulators of its rows (`acc[i]` for row
/// `i < out.rows`), element by element, with the vector code's operations: `c ← fma(alpha, acc,
/// prev)`, `prev` as `out.prev` says.
///
/// # Safety
/// Column `j` of `out`'s block (`out.rows` values, strides `out.rsc`, `out.csc`) is valid.
#[inline(always)]
pub(crate) unsafe fn combine_column(out: &Out, j: usize, acc: &[f32]) {
    for (i, &acc) in acc.iter().enumerate().take(out.rows) {
        // SAFETY: (i, j) is inside the block of C.
        unsafe {
            let cp = out.c.offset(i as isize * out.rsc + j as isize * out.csc);
            let prev = match out.prev {
                Prev::Beta(0.0) => 0.0,
                Prev::Beta(beta) => beta * *cp,
                Prev::Acc => *cp,
            };
            *cp = out.alpha.mul_add(acc, prev);
        }
    }
}
