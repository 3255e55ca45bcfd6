//! The bf16 products: `Y = alpha·A·X + beta·Y` with `A` packed once in bf16 and `X`, `Y` in
//! `f32`, `X` rounded to bf16 per call, the products summed in `f32` by `vdpbf16ps`.
//!
//! **Layout.** [`PackedBf16`] holds `A` (`m × k`) in strips of [`MR`] = 32 rows, `k` taken in
//! pairs (`kp = ⌈k/2⌉`, an odd `k` padded with a zero column, the last strip with zero rows):
//! strip `s` is `2·MR·kp` values from a 64-byte boundary, and its pair `q` is 64 values, row
//! `r`'s two at `2r` (column `2q`) and `2r + 1` (column `2q + 1`). Those 64 values are two
//! 512-bit registers, rows 0–15 and 16–31, each lane a pair of one row: `vdpbf16ps` multiplies
//! it by the pair `(X[2q, j], X[2q + 1, j])` broadcast to every lane ([`Bf16Pairs`] holds `X` so,
//! one `u32` per pair, the even value in the low half).
//!
//! **Arithmetic (the same for every shape, split and route).** Every element of `Y` has its own
//! `f32` accumulator, started at zero, and for `q = 0, 1, …` in order takes the two products of
//! pair `q` as `vdpbf16ps` does: `acc ← (acc + a₂q₊₁·x₂q₊₁) + a₂q·x₂q`, each product exact (two
//! 8-bit mantissas), each sum rounded to nearest even, with inputs that are subnormal read as zero
//! and subnormal sums flushed to zero (its DAZ and FTZ). Then `y ← fma(alpha, acc, beta·y)` (`y`
//! is only written when `beta` is 0). No `k` blocking: a strip's pairs are read once per block
//! of columns. So a row's result does not depend on `m`, on the row's place in its strip, on how
//! many columns are multiplied at once or on the order of the strips, and the portable kernel
//! (`block_portable`, the definition) gives the bits of the AVX-512 one on every input whose
//! products and sums are not subnormal (the tests check it bit for bit).
//!
//! **Kernel.** A block of `S` strips × `N` columns keeps `2·S·N` accumulators in registers; per
//! pair it loads `2·S` registers of `A`, broadcasts `N` pairs of `X` and issues `2·S·N`
//! `vdpbf16ps`. One column (a GEMV, the batch-1 step) runs `S = 4` strips at once, so that eight
//! independent chains hide the instruction's latency; 2 to 4 columns run two strips; wider
//! blocks (up to 8 columns) one.

use super::MR;
use crate::bf16::Bf16;

#[cfg(target_arch = "x86_64")]
#[path = "bf16_amx.rs"]
mod amx;

/// Whether the bf16 products run on AMX tiles here (AMX-BF16, granted by the OS): they are then
/// many times faster than the `f32` ones, where on AVX-512 alone they are slower.
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether bf16 products are much faster than `f32` ones here: on AMX tiles
/// ([`amx_available`]), or with AVX512_BF16 on an AMD CPU, whose `vdpbf16ps` issues as often as
/// an FMA and so does twice the multiply-adds (measured on a Zen 4, EPYC family 25 model 17:
/// this module's kernel at 1.6-2.1 times the `f32` one's GFLOP/s on every product shape of
/// `bench_table --gemm`). Intel's cores without AMX issue it at half the FMA rate, so there
/// bf16 products are slower than `f32` ones (0.81-0.88 of them on a Xeon of model 207).
///
/// Decided from CPUID alone, unlike the choice between the two AVX-512 kernels (which is timed
/// once, [`PackedBf16::gemm`]): callers choose with it between computations that give different
/// bits (a bf16 backward rounds its gate gradients), and a choice made on a timing could differ
/// from one run to the next.
pub fn products_pay() -> bool {
    amx_available() || (crate::bf16::available() && crate::cache::is_amd())
}

/// Whether [`PackedBf16::gemm`] runs the FMA kernel here (AVX512_BF16 without AMX, where
/// `vdpbf16ps` does not pay: [`avx512::dot_pays`]): the one definition that its dispatch and
/// [`Bf16Pairs::set`] (which widens `X` only for that kernel) both read.
fn fma_kernel_runs() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !amx::available() && crate::bf16::available() && !avx512::dot_pays()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Columns of `X` per kernel block.
const NB: usize = 8;
/// How many pairs ahead the AVX-512 kernel prefetches each strip (8 pairs: 1 KB of a strip).
#[cfg(target_arch = "x86_64")]
const PF_Q: usize = 8;

/// A matrix `A` packed once in bf16 strips (see the module docs), for [`PackedBf16::gemm`].
#[derive(Debug, Default, Clone)]
pub struct PackedBf16 {
    m: usize,
    k: usize,
    /// The strips are `data[off..]` (64-byte aligned).
    off: usize,
    data: Vec<u16>,
}

/// The columns of a right operand `X` (`k × n`, `f32`) rounded to bf16 for
/// [`PackedBf16::gemm`], twice: paired for `vdpbf16ps` (`data[j·kp + q]` holds `X[2q, j]` in its
/// low 16 bits and `X[2q + 1, j]`, 0 past `k`, in its high 16 bits) and widened back to `f32`
/// for the FMA kernel (`wide[j·2kp + p]`, the same values). Reused across calls.
#[derive(Debug, Default, Clone)]
pub struct Bf16Pairs {
    kp: usize,
    n: usize,
    data: Vec<u32>,
    wide: Vec<f32>,
}

impl Bf16Pairs {
    /// Rounds the `k × n` column-major `x` (columns `k` apart) to bf16 pairs (and widens them
    /// back to `f32` where [`PackedBf16::gemm`] runs the FMA kernel, the only one that reads the
    /// widened copy).
    ///
    /// # Panics
    /// If `x.len() != k·n`.
    pub fn set(&mut self, x: &[f32], k: usize, n: usize) {
        self.set_for(x, k, n, fma_kernel_runs());
    }

    /// [`Bf16Pairs::set`], with the widened copy for the FMA kernel if `wide`.
    fn set_for(&mut self, x: &[f32], k: usize, n: usize, wide: bool) {
        assert_eq!(x.len(), k * n, "Bf16Pairs::set: {} values for {k}x{n}", x.len());
        let kp = k.div_ceil(2);
        (self.kp, self.n) = (kp, n);
        // Zero columns up to a multiple of 16, whole tiles for the AMX kernel.
        let len = n.div_ceil(16) * 16 * kp;
        // Every value is written below (no zeroing of the whole buffer first).
        self.data.resize(len, 0);
        // A pair is the two bf16 values in order (the even one in the low half), so a column's
        // pairs are its values rounded, one u16 each, and a zero after an odd k.
        for (col, out) in x.chunks_exact(k.max(1)).take(n).zip(self.data.chunks_exact_mut(kp.max(1))) {
            // SAFETY: `out` is kp u32 = 2·kp ≥ k u16, aligned for u16 (u32 is), and no other
            // reference to it lives while `halves` does.
            let halves = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u16>(), 2 * kp) };
            round_into_u16(col, &mut halves[..k]);
            halves[k..].fill(0);
        }
        self.data[kp * n..].fill(0);
        self.widen(wide);
    }

    /// [`Bf16Pairs::set`] on the transpose of rows `range` of the `rows × k` column-major `x`
    /// (values `x[p·rows + i]`): column `j` of the operand is row `range.start + j` of `x`, its
    /// `k` values `rows` apart. The same pairs as transposing those rows into a `k × n` copy and
    /// calling `set` on it, without the copy: with AVX-512, 16 rows × 16 pairs at a time (32
    /// columns of `x` loaded, rounded and paired, the 16 × 16 pairs transposed in registers).
    ///
    /// # Panics
    /// If `x.len() != rows·k` or `range` is not inside `0..rows`.
    pub fn set_rows(&mut self, x: &[f32], rows: usize, k: usize, range: std::ops::Range<usize>) {
        self.set_rows_for(&[(Some(x), k)], rows, range, fma_kernel_runs());
    }

    /// [`Bf16Pairs::set_rows`] on the matrix whose columns are those of `parts` side by side,
    /// each `(Some(x), c)` a `rows × c` column-major matrix, each `(None, c)` `c` columns of
    /// zeros: `k` is the sum of the `c`. A part that starts at an even column is paired by
    /// tiles; pairs across a boundary, one value at a time.
    ///
    /// # Panics
    /// If a part's `x.len() != rows·c` or `range` is not inside `0..rows`.
    pub fn set_rows_parts(
        &mut self,
        parts: &[(Option<&[f32]>, usize)],
        rows: usize,
        range: std::ops::Range<usize>,
    ) {
        self.set_rows_for(parts, rows, range, fma_kernel_runs());
    }

    /// [`Bf16Pairs::set_rows_parts`], with the widened copy for the FMA kernel if `wide`.
    fn set_rows_for(
        &mut self,
        parts: &[(Option<&[f32]>, usize)],
        rows: usize,
        range: std::ops::Range<usize>,
        wide: bool,
    ) {
        for &(x, c) in parts {
            if let Some(x) = x {
                assert_eq!(x.len(), rows * c, "Bf16Pairs::set_rows: {} values for {rows}x{c}", x.len());
            }
        }
        assert!(
            range.start <= range.end && range.end <= rows,
            "Bf16Pairs::set_rows: rows {range:?} of {rows}"
        );
        let k: usize = parts.iter().map(|p| p.1).sum();
        let (r0, n, kp) = (range.start, range.len(), k.div_ceil(2));
        (self.kp, self.n) = (kp, n);
        // Zero columns up to a multiple of 16, as `set` leaves them; every value is written.
        self.data.resize(n.div_ceil(16) * 16 * kp, 0);
        // Rows `..tiled_rows` have the pairs of `tiled` (ranges of q, in order) written by the
        // tiles; the rest are written one at a time below.
        let mut tiled_rows = 0;
        let mut tiled = [0..0, 0..0, 0..0, 0..0];
        #[cfg(target_arch = "x86_64")]
        if crate::simd::gemm_level() == crate::simd::Level::Avx512 {
            tiled_rows = n / 16 * 16;
            let mut p0 = 0;
            // At most four parts are tiled (the callers pass two); the others are paired one
            // value at a time.
            for (&(x, c), t) in parts.iter().zip(&mut tiled) {
                if let (Some(x), true) = (x, p0 % 2 == 0) {
                    let pairs = c / 32 * 16;
                    // SAFETY: the CPU has AVX-512F (the level says so); `x` holds `rows·c`
                    // values, rows `r0..r0 + n` exist, `2·pairs ≤ c`, and `data` holds `n·kp`
                    // pairs, of which this part's start at pair p0 / 2 and number at least
                    // `pairs` (p0 + c ≤ k).
                    unsafe {
                        avx512::pair_rows(x, rows, r0, tiled_rows, pairs, (kp, p0 / 2), &mut self.data)
                    };
                    *t = p0 / 2..p0 / 2 + pairs;
                }
                p0 += c;
            }
        }
        // Column p of the whole, row i: its part's value rounded, or 0 (zeros, past k).
        let value = |mut p: usize, i: usize| {
            for &(x, c) in parts {
                if p < c {
                    return x.map_or(0, |x| u32::from(Bf16::from_f32(x[p * rows + i]).0));
                }
                p -= c;
            }
            0
        };
        // Pairs `qs` of row i, into that row's `out`.
        let fill = |out: &mut [u32], qs: std::ops::Range<usize>, i: usize| {
            for (q, o) in out.iter_mut().enumerate().take(qs.end).skip(qs.start) {
                *o = value(2 * q, i) | value(2 * q + 1, i) << 16;
            }
        };
        for (j, out) in self.data.chunks_exact_mut(kp.max(1)).take(n).enumerate() {
            let i = r0 + j;
            // The pairs before, between and after the tiled ranges (all past the tiled rows).
            let mut q = 0;
            for t in if j < tiled_rows { &tiled[..] } else { &[] }.iter().filter(|t| !t.is_empty()) {
                fill(out, q..t.start, i);
                q = t.end;
            }
            fill(out, q..kp, i);
        }
        self.data[kp * n..].fill(0);
        self.widen(wide);
    }

    /// Refills the widened copy of the pairs for the FMA kernel if `wide`, else empties it.
    fn widen(&mut self, wide: bool) {
        let (kp, n) = (self.kp, self.n);
        self.wide.clear();
        if wide {
            self.wide.extend(
                self.data[..kp * n]
                    .iter()
                    .flat_map(|&p| [f32::from_bits(p << 16), f32::from_bits(p & 0xffff_0000)]),
            );
        }
    }

    /// Pairs per column.
    pub fn pairs(&self) -> usize {
        self.kp
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.n
    }
}

/// `dst = srcᵀ` for the `rows × cols` column-major `src`, into the `cols × rows` column-major
/// `dst` (exact copies of the values): with AVX-512, in tiles of 16 × 16 values transposed in
/// registers (16 loads and 16 stores of 64 bytes each), the edges one value at a time.
///
/// # Panics
/// If the lengths are not `rows·cols`.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() == rows * cols && dst.len() == rows * cols, "transpose: lengths for {rows}x{cols}");
    // Rows and columns of src that the tiles cover.
    let (mut rows16, mut cols16) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::gemm_level() == crate::simd::Level::Avx512 {
        (rows16, cols16) = (rows / 16 * 16, cols / 16 * 16);
        // SAFETY: the CPU has AVX-512F; the lengths were checked above.
        unsafe { avx512::transpose_tiles(src, rows, cols, dst) };
    }
    const TILE: usize = 32;
    // Columns past the tiles (every row), then rows past the tiles (the tiles' columns).
    for (j_range, i_range) in [(cols16..cols, 0..rows), (0..cols16, rows16..rows)] {
        for j0 in j_range.clone().step_by(TILE) {
            for i0 in i_range.clone().step_by(TILE) {
                for j in j0..(j0 + TILE).min(j_range.end) {
                    for i in i0..(i0 + TILE).min(i_range.end) {
                        dst[i * cols + j] = src[j * rows + i];
                    }
                }
            }
        }
    }
}

/// `out[i] = ` the bf16 bits of `x[i]` rounded ([`Bf16::from_f32`]), 16 at a time with AVX-512.
fn round_into_u16(x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::simd::gemm_level() == crate::simd::Level::Avx512 {
        done = x.len() / 16 * 16;
        // SAFETY: the CPU has AVX-512F (the level says so); both slices hold `done` values.
        unsafe { avx512::round_u16(&x[..done], &mut out[..done]) };
    }
    for (o, &v) in out[done..].iter_mut().zip(&x[done..]) {
        *o = Bf16::from_f32(v).0;
    }
}

impl PackedBf16 {
    /// Packs rows `row(0..m)` of the column-major `rows × k` matrix `w` (values `w[p·rows + i]`),
    /// rounded to bf16, reusing the buffer.
    ///
    /// # Panics
    /// If `w` does not hold `rows × k` values or a row index is out of range.
    pub fn pack(&mut self, w: &[f32], rows: usize, k: usize, m: usize, row: impl Fn(usize) -> usize) {
        assert_eq!(w.len(), rows * k, "PackedBf16::pack: {} values for {rows}x{k}", w.len());
        // Every block is written whole below (padding rows and columns as zeros).
        let out = self.reset(m, k);
        visit_pairs(w, rows, k, m, &row, |at, src| {
            match src {
                #[cfg(target_arch = "x86_64")]
                Pairs::Simd(c0, c1) => {
                    // SAFETY: the CPU has AVX-512F (`Pairs::Simd` is made only then); `c0`, `c1`
                    // are 32 values of `w` (`visit_pairs`); `out[at..at + 64]` is the block.
                    unsafe { avx512::store_pairs(c0, c1, &mut out[at..at + 2 * MR]) }
                }
                Pairs::Rows(s, q) => {
                    let d = &mut out[at..at + 2 * MR];
                    d.fill(0);
                    for (i, j, v) in scalar_pairs(w, rows, k, m, &row, s, q) {
                        d[2 * i + j] = v;
                    }
                }
            }
            true
        });
    }

    /// Sets the shape to `m × k` and returns the strips' values (`⌈m/MR⌉·2·MR·⌈k/2⌉`, from a
    /// 64-byte boundary: 32 values of slack for the alignment), not cleared: the packing
    /// routines write every block whole.
    fn reset(&mut self, m: usize, k: usize) -> &mut [u16] {
        let len = m.div_ceil(MR) * 2 * MR * k.div_ceil(2);
        (self.m, self.k) = (m, k);
        self.data.resize(len + 32, 0);
        self.off = (64 - self.data.as_ptr() as usize % 64) % 64 / 2;
        &mut self.data[self.off..self.off + len]
    }

    /// [`PackedBf16::pack`] of `wᵀ` (`m × k`) for the `k × m` column-major `w` (values
    /// `w[i·k + p] = wᵀ[i, p]`), without a transposed copy: a pair of `wᵀ`'s row `i` is two
    /// consecutive values of `w`'s column `i`. With AVX-512, a strip and 16 pairs at a time (per
    /// half strip, 16 columns of `w` loaded 32 values each, rounded and narrowed into pairs, and
    /// the 16 × 16 pairs transposed in registers); the rest one value at a time. The same
    /// packing as transposing `w` and calling `pack` (tested).
    ///
    /// # Panics
    /// If `w` does not hold `k × m` values.
    pub fn pack_transposed(&mut self, w: &[f32], k: usize, m: usize) {
        assert_eq!(w.len(), k * m, "PackedBf16::pack_transposed: {} values for {k}x{m}", w.len());
        let kp = k.div_ceil(2);
        // Every block is written whole below (by a tile or one value at a time).
        let out = self.reset(m, k);
        // Strips `..full` have their pairs `..tiled` written by the tiles.
        let (mut full, mut tiled) = (0, 0);
        #[cfg(target_arch = "x86_64")]
        if crate::simd::gemm_level() == crate::simd::Level::Avx512 {
            (full, tiled) = (m / MR, k / 32 * 16);
            // SAFETY: the CPU has AVX-512F (the level says so); `w` holds `k·m` values, the
            // strips `..full` are whole (32 columns of w each), `2·tiled ≤ k`, and `out` holds
            // the strips of `kp` pairs.
            unsafe { avx512::pack_transposed_tiles(w, k, full, tiled, kp, out) };
        }
        for s in 0..m.div_ceil(MR) {
            for q in if s < full { tiled } else { 0 }..kp {
                let block = &mut out[s * 2 * MR * kp + q * 2 * MR..][..2 * MR];
                for (v, d) in block.iter_mut().enumerate() {
                    let (i, p) = (s * MR + v / 2, 2 * q + v % 2);
                    *d = if i < m && p < k { Bf16::from_f32(w[i * k + p]).0 } else { 0 };
                }
            }
        }
    }

    /// Whether the packing holds exactly rows `row(0..m)` of the `rows × k` matrix `w` rounded
    /// to bf16 (the shape and every bit): a cheaper check than keeping and comparing a copy of
    /// `w`, and the right one, since a change of a weight that rounds to the same bf16 value
    /// leaves the products as they were. Reads `w` once and the packing once, and stops at the
    /// first difference.
    pub fn matches(&self, w: &[f32], rows: usize, k: usize, m: usize, row: impl Fn(usize) -> usize) -> bool {
        if (self.m, self.k) != (m, k) || w.len() != rows * k || (self.data.is_empty() && m * k > 0) {
            return false;
        }
        let packed = self.strips();
        visit_pairs(w, rows, k, m, &row, |at, src| match src {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `pack`, reading the block instead of writing it.
            Pairs::Simd(c0, c1) => unsafe { avx512::same_pairs(c0, c1, &packed[at..at + 2 * MR]) },
            Pairs::Rows(s, q) => {
                let d = &packed[at..at + 2 * MR];
                scalar_pairs(w, rows, k, m, &row, s, q).all(|(i, j, v)| d[2 * i + j] == v)
            }
        })
    }

    /// Rows `m` of the packed matrix.
    pub fn rows(&self) -> usize {
        self.m
    }

    /// Columns `k` of the packed matrix.
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes of the packing (the weights a product streams).
    pub fn bytes(&self) -> usize {
        2 * self.m.div_ceil(MR) * 2 * MR * self.k.div_ceil(2)
    }

    fn strips(&self) -> &[u16] {
        &self.data[self.off..self.off + self.bytes() / 2]
    }

    /// `Y = alpha·A·X + beta·Y`, `X` given as [`Bf16Pairs`] (`k × n`), `Y` column-major `m × n`
    /// (columns `m` apart; only written when `beta` is 0, so it may then hold NaN). With
    /// `reverse` the strips are visited last to first (the same bits: rows are independent), so
    /// that a loop alternating the direction finds the strips it read last still in cache.
    /// Runs the AVX-512 BF16 kernel when [`crate::bf16::available`], else the portable one.
    ///
    /// # Panics
    /// If the shapes do not match.
    pub fn gemm(&self, alpha: f32, x: &Bf16Pairs, beta: f32, y: &mut [f32], reverse: bool) {
        self.run(Kernel::Best, alpha, x, beta, y, reverse);
    }

    /// [`PackedBf16::gemm`] through the portable kernel, whatever the CPU: the definition of the
    /// arithmetic, for tests and for CPUs without AVX512_BF16.
    pub fn gemm_reference(&self, alpha: f32, x: &Bf16Pairs, beta: f32, y: &mut [f32]) {
        self.run(Kernel::Portable, alpha, x, beta, y, false);
    }

    /// The product through `kernel`; false (nothing done) when an AVX-512 kernel is asked for on
    /// a CPU without AVX512_BF16.
    ///
    /// # Panics
    /// If the shapes do not match.
    fn run(
        &self,
        kernel: Kernel,
        alpha: f32,
        x: &Bf16Pairs,
        beta: f32,
        y: &mut [f32],
        reverse: bool,
    ) -> bool {
        let (m, kp, n) = (self.m, self.k.div_ceil(2), x.n);
        assert!(
            x.kp == kp && y.len() == m * n,
            "PackedBf16::gemm: A is {m}x{} ({kp} pairs), X has {} pairs x {n}, Y has {} values",
            self.k,
            x.kp,
            y.len()
        );
        if m == 0 || n == 0 {
            return true;
        }
        #[cfg(target_arch = "x86_64")]
        if matches!(kernel, Kernel::Best | Kernel::Amx) && amx::available() {
            // SAFETY: AMX is available (tile state granted); the shapes were checked above and
            // `x` is padded to whole tiles of columns (`Bf16Pairs::set`).
            unsafe { amx::gemm(m, kp, self.strips(), alpha, x, beta, y, reverse) };
            return true;
        }
        #[cfg(target_arch = "x86_64")]
        if matches!(kernel, Kernel::Best | Kernel::Dot | Kernel::Fma) && crate::bf16::available() {
            let fma = match kernel {
                Kernel::Fma => true,
                Kernel::Dot => false,
                // Not AMX, AVX512_BF16 here: the FMA kernel unless `vdpbf16ps` pays.
                _ => fma_kernel_runs(),
            };
            assert!(
                !fma || x.wide.len() == 2 * kp * n,
                "PackedBf16::gemm: X was set without its widened copy"
            );
            // SAFETY: the CPU has AVX-512F and AVX512_BF16; the shapes were checked above.
            unsafe { avx512::gemm(m, kp, self.strips(), alpha, x, beta, y, reverse, fma) };
            return true;
        }
        if matches!(kernel, Kernel::Dot | Kernel::Fma | Kernel::Amx) {
            return false;
        }
        gemm_portable(m, kp, self.strips(), alpha, x, beta, y, reverse);
        true
    }
}

/// Which kernel [`PackedBf16::run`] takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// The AMX one where the CPU has AMX-BF16 ([`amx::available`]), else the faster AVX-512
    /// one where it has AVX512_BF16 ([`avx512::dot_pays`]), else the portable one.
    Best,
    /// The AMX kernel (tests only).
    #[cfg_attr(not(test), allow(dead_code))]
    Amx,
    /// The definition, element by element.
    Portable,
    /// The `vdpbf16ps` kernel (tests only).
    #[cfg_attr(not(test), allow(dead_code))]
    Dot,
    /// The FMA kernel (tests only).
    #[cfg_attr(not(test), allow(dead_code))]
    Fma,
}

/// Where the values of one block (one strip, one pair of columns) come from.
enum Pairs {
    /// The block's 32 rows are consecutive rows of `w`: 32 values of column `2q` and of column
    /// `2q + 1` (`None` past `k`), for the AVX-512 routine.
    #[cfg(target_arch = "x86_64")]
    Simd(*const f32, Option<*const f32>),
    /// Any rows: strip `s`, pair `q`, element by element.
    Rows(usize, usize),
}

/// Calls `f(at, pairs)` for every block of the packing of rows `row(0..m)` of `w` (`at`: the
/// block's first value in the strips), until `f` returns false; returns whether it never did.
/// Strips go in groups of 8 and, per pair of columns, the group's strips in turn, so the reads
/// are runs of two columns (as the f32 strips are packed).
fn visit_pairs(
    w: &[f32],
    rows: usize,
    k: usize,
    m: usize,
    row: &impl Fn(usize) -> usize,
    mut f: impl FnMut(usize, Pairs) -> bool,
) -> bool {
    const GROUP: usize = 8;
    let (kp, strips) = (k.div_ceil(2), m.div_ceil(MR));
    #[cfg(target_arch = "x86_64")]
    let simd = crate::simd::gemm_level() == crate::simd::Level::Avx512;
    for g0 in (0..strips).step_by(GROUP) {
        // The first row of each strip of the group if its rows are consecutive (and all there).
        let first: [Option<usize>; GROUP] = std::array::from_fn(|j| {
            let s = g0 + j;
            let r0 = if s * MR + MR <= m { row(s * MR) } else { return None };
            (r0 + MR <= rows && (1..MR).all(|r| row(s * MR + r) == r0 + r)).then_some(r0)
        });
        for q in 0..kp {
            for (s, first) in (g0..(g0 + GROUP).min(strips)).zip(first) {
                let at = s * 2 * MR * kp + q * 2 * MR;
                let src = match first {
                    #[cfg(target_arch = "x86_64")]
                    Some(r0) if simd => {
                        let c0 = w[2 * q * rows + r0..][..MR].as_ptr();
                        let c1 = (2 * q + 1 < k).then(|| w[(2 * q + 1) * rows + r0..][..MR].as_ptr());
                        Pairs::Simd(c0, c1)
                    }
                    _ => Pairs::Rows(s, q),
                };
                if !f(at, src) {
                    return false;
                }
            }
        }
    }
    true
}

/// The values of block `(s, q)` one by one: `(row in the strip, column in the pair, bf16 bits)`.
fn scalar_pairs<'a>(
    w: &'a [f32],
    rows: usize,
    k: usize,
    m: usize,
    row: &'a impl Fn(usize) -> usize,
    s: usize,
    q: usize,
) -> impl Iterator<Item = (usize, usize, u16)> + 'a {
    (0..MR.min(m - s * MR)).flat_map(move |i| {
        (0..2)
            .filter(move |j| 2 * q + j < k)
            .map(move |j| (i, j, Bf16::from_f32(w[(2 * q + j) * rows + row(s * MR + i)]).0))
    })
}

/// The strips of a call in the order it visits them, in blocks of `S` strips (the last ones
/// one at a time): `(first strip, S)`.
fn strip_blocks(strips: usize, s: usize, reverse: bool) -> impl Iterator<Item = (usize, usize)> {
    let full = strips / s;
    let blocks = full + strips % s;
    let at = move |i: usize| if i < full { (i * s, s) } else { (full * s + (i - full), 1) };
    (0..blocks).map(move |i| at(if reverse { blocks - 1 - i } else { i }))
}

/// Strips per block for a block of `w` columns (see the module docs).
fn strips_per_block(w: usize) -> usize {
    match w {
        1 => 4,
        2..=4 => 2,
        _ => 1,
    }
}

/// A bf16 value as `f32`, subnormals read as zero (`vdpbf16ps`'s DAZ).
#[inline(always)]
fn daz(v: u16) -> f32 {
    if v & 0x7f80 == 0 {
        f32::from_bits(((v & 0x8000) as u32) << 16)
    } else {
        Bf16(v).to_f32()
    }
}

/// A subnormal `f32` flushed to zero of its sign (`vdpbf16ps`'s FTZ).
#[inline(always)]
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// One `vdpbf16ps` lane: `(acc + a_hi·x_hi) + a_lo·x_lo` (see the module docs).
#[inline(always)]
fn dot_pair(acc: f32, a: u32, x: u32) -> f32 {
    let acc = ftz(acc + daz((a >> 16) as u16) * daz((x >> 16) as u16));
    ftz(acc + daz(a as u16) * daz(x as u16))
}

/// The portable kernel: the arithmetic of the module docs, element by element.
#[allow(clippy::too_many_arguments)]
fn gemm_portable(
    m: usize,
    kp: usize,
    a: &[u16],
    alpha: f32,
    x: &Bf16Pairs,
    beta: f32,
    y: &mut [f32],
    reverse: bool,
) {
    let strips = m.div_ceil(MR);
    for (s, _) in strip_blocks(strips, 1, reverse) {
        let strip = &a[s * 2 * MR * kp..][..2 * MR * kp];
        for j in 0..x.n {
            let xc = &x.data[j * kp..][..kp];
            for r in 0..MR.min(m - s * MR) {
                let mut acc = 0.0f32;
                for (q, &xq) in xc.iter().enumerate() {
                    let aq = strip[q * 2 * MR + 2 * r] as u32 | (strip[q * 2 * MR + 2 * r + 1] as u32) << 16;
                    acc = dot_pair(acc, aq, xq);
                }
                let yv = &mut y[j * m + s * MR + r];
                let prev = if beta == 0.0 { 0.0 } else { beta * *yv };
                *yv = alpha.mul_add(acc, prev);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{strip_blocks, strips_per_block, Bf16Pairs, MR, NB, PF_Q};

    /// Where a block writes: `Y`'s element (row 0 of the block's first strip, its first column),
    /// the distance between columns, the valid rows from the block's first row on, and `alpha`,
    /// `beta`.
    #[derive(Clone, Copy)]
    struct Out {
        y: *mut f32,
        ldy: usize,
        rows: usize,
        alpha: f32,
        beta: f32,
    }

    /// Whether the `vdpbf16ps` kernel is the faster here, measured once per process: 16
    /// independent chains of `vdpbf16ps` against 16 of `vfmadd` (the best of 5 runs of 2,048
    /// rounds each, about 0.1 ms in all). `vdpbf16ps` does the work of two FMAs, so it pays when
    /// it issues at more than two-thirds of the FMA rate (leaving a margin for the FMA kernel's
    /// conversions). Measured on the 2-core Xeon (family 6, model 167): one `vdpbf16ps` per two
    /// cycles against two FMAs per cycle, so there the FMA kernel runs (1.3 to 1.6 times as fast
    /// on the step products). Either kernel gives the same bits.
    pub(super) fn dot_pays() -> bool {
        static DOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // SAFETY: `gemm`'s callers run this only where the CPU has AVX-512F and AVX512_BF16.
        *DOT.get_or_init(|| unsafe { calibrate() })
    }

    /// The measurement of [`dot_pays`].
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn calibrate() -> bool {
        const ROUNDS: usize = 2048;
        let best = |f: &mut dyn FnMut()| {
            (0..5)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed()
                })
                .min()
                .unwrap_or_default()
        };
        let (one, half) = (_mm512_set1_ps(1.0), _mm512_set1_ps(0.5));
        let (pa, pb) = (bh(_mm512_set1_epi16(0x3f80)), bh(_mm512_set1_epi16(0x3f00)));
        let dot = best(&mut || {
            let mut acc = [_mm512_setzero_ps(); 16];
            for _ in 0..ROUNDS {
                for a in acc.iter_mut() {
                    *a = _mm512_dpbf16_ps(*a, pa, pb);
                }
            }
            std::hint::black_box(acc);
        });
        let fma = best(&mut || {
            let mut acc = [_mm512_setzero_ps(); 16];
            for _ in 0..ROUNDS {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, one, half);
                }
            }
            std::hint::black_box(acc);
        });
        dot.as_secs_f64() < 1.5 * fma.as_secs_f64()
    }

    /// Rounds 16 `f32` to bf16 as [`Bf16::from_f32`](crate::Bf16::from_f32) does, each in the
    /// low half of its 32-bit lane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn round_lanes(v: __m512) -> __m512i {
        let b = _mm512_castps_si512(v);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
        let rounded =
            _mm512_srli_epi32::<16>(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)));
        let nan = _mm512_or_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(0x40));
        _mm512_mask_blend_epi32(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), rounded, nan)
    }

    /// The 16 × 16 tiles of [`super::transpose`]: `dst[i·cols + j] = src[j·rows + i]` for
    /// `i < rows / 16 · 16`, `j < cols / 16 · 16` (the rest is not written).
    ///
    /// # Safety
    /// AVX-512F; `src` and `dst` hold `rows·cols` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_tiles(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
        debug_assert!(src.len() == rows * cols && dst.len() == rows * cols);
        for j0 in (0..cols / 16 * 16).step_by(16) {
            for i0 in (0..rows / 16 * 16).step_by(16) {
                // r[l] = src[(j0 + l)·rows + i0..][..16]: 16 values of column j0 + l.
                // SAFETY: j0 + l < cols and i0 + 16 ≤ rows, so each load lies inside src.
                let mut r: [__m512; 16] = std::array::from_fn(|l| unsafe {
                    _mm512_loadu_ps(src.as_ptr().add((j0 + l) * rows + i0))
                });
                transpose16(&mut r);
                for (l, v) in r.iter().enumerate() {
                    // SAFETY: i0 + l < rows and j0 + 16 ≤ cols, so each store lies inside dst.
                    unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add((i0 + l) * cols + j0), *v) };
                }
            }
        }
    }

    /// Transposes the 16 × 16 matrix whose row `l` is `r[l]`: lane `i` of `r[l]` goes to lane `l`
    /// of `r[i]` (pairs of rows interleaved by 32 bits, then by 64, then by 128-bit lanes twice).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for p in 0..8 {
            t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        let (lo, hi) = (
            |a: __m512, b: __m512| {
                _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            },
            |a: __m512, b: __m512| {
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            },
        );
        for q in 0..4 {
            let b = 4 * q;
            r[b] = lo(t[b], t[b + 2]);
            r[b + 1] = hi(t[b], t[b + 2]);
            r[b + 2] = lo(t[b + 1], t[b + 3]);
            r[b + 3] = hi(t[b + 1], t[b + 3]);
        }
        for h in 0..2 {
            let b = 8 * h;
            for c in 0..4 {
                t[b + c] = _mm512_shuffle_f32x4::<0x88>(r[b + c], r[b + 4 + c]);
                t[b + 4 + c] = _mm512_shuffle_f32x4::<0xdd>(r[b + c], r[b + 4 + c]);
            }
        }
        for c in 0..8 {
            r[c] = _mm512_shuffle_f32x4::<0x88>(t[c], t[8 + c]);
            r[8 + c] = _mm512_shuffle_f32x4::<0xdd>(t[c], t[8 + c]);
        }
    }

    /// The tiles of [`super::Bf16Pairs::set_rows_parts`] for one part: for rows `j < n` (a
    /// multiple of 16) of the operand (row `r0 + j` of `x`, `rows × c` column-major) and pairs
    /// `q < pairs` (a multiple of 16, `2·pairs ≤ c`) of the part, `out[j·kp + q0 + q]` = the
    /// rounded `x[2q·rows + r0 + j]` in the low half, `x[(2q + 1)·rows + r0 + j]` in the high.
    ///
    /// # Safety
    /// AVX-512F; `x` holds at least `2·pairs·rows` values with `r0 + n ≤ rows`, `out` holds
    /// `n·kp` values and `q0 + pairs ≤ kp`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pair_rows(
        x: &[f32],
        rows: usize,
        r0: usize,
        n: usize,
        pairs: usize,
        (kp, q0): (usize, usize),
        out: &mut [u32],
    ) {
        debug_assert!(
            r0 + n <= rows && x.len() >= rows * 2 * pairs && out.len() >= n * kp && q0 + pairs <= kp
        );
        for j0 in (0..n).step_by(16) {
            for p0 in (0..pairs).step_by(16) {
                // r[l], lane i: the pair p0 + l of row j0 + i.
                let mut r: [__m512; 16] = std::array::from_fn(|l| {
                    let c = 2 * (p0 + l);
                    // SAFETY: columns c and c + 1 < 2·pairs, rows r0 + j0..+16 ≤ rows: both
                    // loads lie inside x.
                    let (lo, hi) = unsafe {
                        let at = |col: usize| x.as_ptr().add(col * rows + r0 + j0);
                        (round_lanes(_mm512_loadu_ps(at(c))), round_lanes(_mm512_loadu_ps(at(c + 1))))
                    };
                    _mm512_castsi512_ps(_mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi)))
                });
                transpose16(&mut r);
                for (i, v) in r.iter().enumerate() {
                    // SAFETY: row j0 + i < n and pairs q0 + p0..q0 + p0 + 16 ≤ q0 + pairs ≤ kp:
                    // inside out.
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr().add((j0 + i) * kp + q0 + p0).cast(), *v) };
                }
            }
        }
    }

    /// The tiles of [`super::PackedBf16::pack_transposed`]: for strips `s < full` (whole) and
    /// pairs `q < tiled` (a multiple of 16, `2·tiled ≤ k`), block `(s, q)` of `out` (strips of
    /// `kp` pairs) from columns `32s..32s + 32` of the `k × m` column-major `w`, values `2q`,
    /// `2q + 1`.
    ///
    /// # Safety
    /// AVX-512F; `w` holds at least `32·full·k` values, `2·tiled ≤ k`, `tiled ≤ kp`, and `out`
    /// holds `full` strips of `2·MR·kp` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_transposed_tiles(
        w: &[f32],
        k: usize,
        full: usize,
        tiled: usize,
        kp: usize,
        out: &mut [u16],
    ) {
        debug_assert!(w.len() >= full * MR * k && 2 * tiled <= k && out.len() >= full * 2 * MR * kp);
        for s in 0..full {
            for q0 in (0..tiled).step_by(16) {
                for h in 0..2 {
                    // r[l], lane t: the pair q0 + t of row 16h + l of the strip (column
                    // 32s + 16h + l of w): its 32 values from 2·q0 rounded, narrowed to 16
                    // bits and read back as 16 pairs.
                    let mut r: [__m512; 16] = std::array::from_fn(|l| {
                        // SAFETY: column 32s + 16h + l < 32·full of w, values 2·q0..2·q0 + 32
                        // ≤ 2·tiled ≤ k of it.
                        let (lo, hi) = unsafe {
                            let at = w.as_ptr().add((s * MR + 16 * h + l) * k + 2 * q0);
                            (
                                _mm512_cvtepi32_epi16(round_lanes(_mm512_loadu_ps(at))),
                                _mm512_cvtepi32_epi16(round_lanes(_mm512_loadu_ps(at.add(16)))),
                            )
                        };
                        _mm512_castsi512_ps(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi))
                    });
                    transpose16(&mut r);
                    for (t, v) in r.iter().enumerate() {
                        // SAFETY: block (s, q0 + t) with q0 + t < tiled ≤ kp, its values
                        // 32h..32h + 32 (rows 16h..16h + 16): inside strip s of out.
                        unsafe {
                            let at = out.as_mut_ptr().add(s * 2 * MR * kp + (q0 + t) * 2 * MR + 32 * h);
                            _mm512_storeu_ps(at.cast(), *v);
                        }
                    }
                }
            }
        }
    }

    /// [`super::round_into_u16`] on 16 values at a time.
    ///
    /// # Safety
    /// AVX-512F; `x.len() == out.len()`, a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn round_u16(x: &[f32], out: &mut [u16]) {
        for (xs, os) in x.chunks_exact(16).zip(out.chunks_exact_mut(16)) {
            // SAFETY: 16 values read from `xs` and 16 written to `os` (unaligned).
            unsafe {
                let r = round_lanes(_mm512_loadu_ps(xs.as_ptr()));
                _mm256_storeu_si256(os.as_mut_ptr().cast(), _mm512_cvtepi32_epi16(r));
            }
        }
    }

    /// The block of 32 rows from their values in column `2q` (`c0`) and `2q + 1` (`c1`, zeros
    /// without): two registers of pairs, rows 0-15 and 16-31.
    ///
    /// # Safety
    /// AVX-512F; `c0` and `c1` hold 32 values each.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn pair_lanes(c0: *const f32, c1: Option<*const f32>) -> [__m512i; 2] {
        let mut v = [_mm512_setzero_si512(); 2];
        for (h, v) in v.iter_mut().enumerate() {
            // SAFETY: values 16h..16h+16 of the 32 (the caller's contract).
            let (lo, hi) = unsafe {
                (
                    round_lanes(_mm512_loadu_ps(c0.add(16 * h))),
                    match c1 {
                        Some(c1) => round_lanes(_mm512_loadu_ps(c1.add(16 * h))),
                        None => _mm512_setzero_si512(),
                    },
                )
            };
            *v = _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi));
        }
        v
    }

    /// Writes the block of [`pair_lanes`] into `out` (64 values).
    ///
    /// # Safety
    /// As [`pair_lanes`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store_pairs(c0: *const f32, c1: Option<*const f32>, out: &mut [u16]) {
        assert_eq!(out.len(), 2 * MR);
        // SAFETY: the caller's contract; `out` holds the 64 values written (unaligned stores).
        unsafe {
            let v = pair_lanes(c0, c1);
            _mm512_storeu_si512(out.as_mut_ptr().cast(), v[0]);
            _mm512_storeu_si512(out.as_mut_ptr().add(MR).cast(), v[1]);
        }
    }

    /// Whether `packed` (64 values) holds the block of [`pair_lanes`].
    ///
    /// # Safety
    /// As [`pair_lanes`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn same_pairs(c0: *const f32, c1: Option<*const f32>, packed: &[u16]) -> bool {
        assert_eq!(packed.len(), 2 * MR);
        // SAFETY: the caller's contract; `packed` holds the 64 values read.
        unsafe {
            let v = pair_lanes(c0, c1);
            let p0 = _mm512_loadu_si512(packed.as_ptr().cast());
            let p1 = _mm512_loadu_si512(packed.as_ptr().add(MR).cast());
            _mm512_cmpneq_epi32_mask(v[0], p0) == 0 && _mm512_cmpneq_epi32_mask(v[1], p1) == 0
        }
    }

    /// `v`'s 32 16-bit lanes typed as bf16.
    #[inline(always)]
    fn bh(v: __m512i) -> __m512bh {
        // SAFETY: two 512-bit vector types of the same size, every bit pattern valid in both.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    /// The mask of the first `min(n, 16)` lanes.
    fn lane_mask(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }

    /// See [`super::PackedBf16::gemm`].
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX512_BF16; `a` holds `⌈m/MR⌉` strips of `2·MR·kp` values from
    /// a 64-byte boundary; `x` has `kp` pairs per column and `y` holds `m × x.n` values.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn gemm(
        m: usize,
        kp: usize,
        a: &[u16],
        alpha: f32,
        x: &Bf16Pairs,
        beta: f32,
        y: &mut [f32],
        reverse: bool,
        fma: bool,
    ) {
        let (strips, sa) = (m.div_ceil(MR), 2 * MR * kp);
        debug_assert!(a.len() >= strips * sa && y.len() >= m * x.n && x.data.len() >= kp * x.n);
        for c0 in (0..x.n).step_by(NB) {
            let w = NB.min(x.n - c0);
            let per = strips_per_block(w);
            for (s0, s) in strip_blocks(strips, per, reverse) {
                let out = Out {
                    // In range: row s0·MR < m of column c0 < n.
                    y: y[c0 * m + s0 * MR..].as_mut_ptr(),
                    ldy: m,
                    rows: m - s0 * MR,
                    alpha,
                    beta,
                };
                let ap = a[s0 * sa..].as_ptr();
                // SAFETY: strips s0..s0+s exist (`strip_blocks`), columns c0..c0+w of X (in the
                // layout the kernel reads) and of Y exist; the CPU has the features (this
                // function's contract).
                unsafe {
                    if fma {
                        block_of::<true>(s, w, kp, ap, sa, x.wide[c0 * 2 * kp..].as_ptr().cast(), out)
                    } else {
                        block_of::<false>(s, w, kp, ap, sa, x.data[c0 * kp..].as_ptr(), out)
                    }
                }
            }
        }
    }

    /// `block_fma::<S, N>` (with `FMA`, `x` then pointing to the widened values) or
    /// `block::<S, N>`, for `S` in 1, 2, 4 and `N` in `1..=NB`, chosen at run time.
    ///
    /// # Safety
    /// As [`block`] or [`block_fma`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block_of<const FMA: bool>(
        s: usize,
        w: usize,
        kp: usize,
        a: *const u16,
        sa: usize,
        x: *const u32,
        out: Out,
    ) {
        macro_rules! by_width {
            ($s:literal) => {
                match w {
                    1 => kernel::<FMA, $s, 1>(kp, a, sa, x, out),
                    2 => kernel::<FMA, $s, 2>(kp, a, sa, x, out),
                    3 => kernel::<FMA, $s, 3>(kp, a, sa, x, out),
                    4 => kernel::<FMA, $s, 4>(kp, a, sa, x, out),
                    5 => kernel::<FMA, $s, 5>(kp, a, sa, x, out),
                    6 => kernel::<FMA, $s, 6>(kp, a, sa, x, out),
                    7 => kernel::<FMA, $s, 7>(kp, a, sa, x, out),
                    8 => kernel::<FMA, $s, 8>(kp, a, sa, x, out),
                    _ => unreachable!("block width {w}"),
                }
            };
        }
        // SAFETY: the caller's contract.
        unsafe {
            match s {
                4 => by_width!(4),
                2 => by_width!(2),
                1 => by_width!(1),
                _ => unreachable!("{s} strips per block"),
            }
        }
    }

    /// One block through the FMA kernel or the `vdpbf16ps` one.
    ///
    /// # Safety
    /// As [`block_of`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn kernel<const FMA: bool, const S: usize, const N: usize>(
        kp: usize,
        a: *const u16,
        sa: usize,
        x: *const u32,
        out: Out,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            if FMA {
                block_fma::<S, N>(kp, a, sa, x.cast(), out)
            } else {
                block::<S, N>(kp, a, sa, x, out)
            }
        }
    }

    /// [`block`] with the pairs widened to `f32` in registers and two FMAs per pair, the odd
    /// column's first: `acc ← fma(a₂q₊₁, x₂q₊₁, acc)`, then `acc ← fma(a₂q, x₂q, acc)`. A product
    /// of two bf16 values is exact in `f32`, so each FMA rounds once, as each of `vdpbf16ps`'s
    /// two sums does, in the same order: the same bits (subnormals aside). It needs AVX-512F
    /// only, and on CPUs whose `vdpbf16ps` issues at half the FMA rate it is the faster.
    ///
    /// # Safety
    /// As [`block`], with `x` holding `N` columns of `2·kp` widened values, `2·kp` apart.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block_fma<const S: usize, const N: usize>(
        kp: usize,
        a: *const u16,
        sa: usize,
        x: *const f32,
        out: Out,
    ) {
        let mut acc = [[[_mm512_setzero_ps(); 2]; N]; S];
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for q in 0..kp {
            for (s, acc) in acc.iter_mut().enumerate() {
                // SAFETY: pair q of strip s, as in `block`; the prefetch never faults.
                let (v0, v1) = unsafe {
                    let ap = a.add(s * sa + q * 2 * MR);
                    let pf = ap.wrapping_add(PF_Q * 2 * MR) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(pf);
                    _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(64));
                    (_mm512_load_si512(ap.cast()), _mm512_load_si512(ap.add(32).cast()))
                };
                // Each 32-bit lane holds a row's pair: the odd column's value is its high half
                // (as f32: the lane with the low half cleared), the even one's its low half
                // (shifted up).
                let odd = [
                    _mm512_castsi512_ps(_mm512_and_si512(v0, hi)),
                    _mm512_castsi512_ps(_mm512_and_si512(v1, hi)),
                ];
                let even = [
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v0)),
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v1)),
                ];
                for (j, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: values 2q and 2q+1 of column j of the widened X.
                    let (xe, xo) = unsafe {
                        (
                            _mm512_set1_ps(*x.add(j * 2 * kp + 2 * q)),
                            _mm512_set1_ps(*x.add(j * 2 * kp + 2 * q + 1)),
                        )
                    };
                    for h in 0..2 {
                        acc[h] = _mm512_fmadd_ps(odd[h], xo, acc[h]);
                        acc[h] = _mm512_fmadd_ps(even[h], xe, acc[h]);
                    }
                }
            }
        }
        // SAFETY: the caller's contract (as `block`'s).
        unsafe { store(&acc, out) };
    }

    /// `y ← fma(alpha, acc, beta·y)` on the valid rows of each strip's columns.
    ///
    /// # Safety
    /// As [`block`]'s for `out`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store<const S: usize, const N: usize>(acc: &[[[__m512; 2]; N]; S], out: Out) {
        let alpha = _mm512_set1_ps(out.alpha);
        let beta = _mm512_set1_ps(out.beta);
        for (s, acc) in acc.iter().enumerate() {
            let rows = out.rows.saturating_sub(s * MR);
            let masks = [lane_mask(rows), lane_mask(rows.saturating_sub(16))];
            for (j, acc) in acc.iter().enumerate() {
                for (h, (&acc, &mk)) in acc.iter().zip(&masks).enumerate() {
                    // SAFETY: the valid rows of the block's column j (the masks cover exactly
                    // them); a strip with no valid rows has empty masks and touches nothing.
                    unsafe {
                        let yp = out.y.add(j * out.ldy).wrapping_add(s * MR + 16 * h);
                        let prev = if out.beta == 0.0 {
                            _mm512_setzero_ps()
                        } else {
                            _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(mk, yp))
                        };
                        _mm512_mask_storeu_ps(yp, mk, _mm512_fmadd_ps(alpha, acc, prev));
                    }
                }
            }
        }
    }

    /// `S` strips × `N` columns: one `vdpbf16ps` chain per element over the `kp` pairs, in
    /// order, then `y ← fma(alpha, acc, beta·y)` on the valid rows.
    ///
    /// # Safety
    /// AVX-512F and AVX512_BF16; `a` holds `S` strips `sa` values apart, each `2·MR·kp` values
    /// from a 64-byte boundary; `x` holds `N` columns of `kp` pairs, `kp` apart; `out.y` holds
    /// `N` columns `out.ldy` apart of `min(out.rows, S·MR)` values.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn block<const S: usize, const N: usize>(
        kp: usize,
        a: *const u16,
        sa: usize,
        x: *const u32,
        out: Out,
    ) {
        let mut acc = [[[_mm512_setzero_ps(); 2]; N]; S];
        for q in 0..kp {
            let mut xq = [_mm512_setzero_si512(); N];
            for (j, v) in xq.iter_mut().enumerate() {
                // SAFETY: pair q of column j of X.
                *v = _mm512_set1_epi32(unsafe { *x.add(j * kp + q) } as i32);
            }
            for (s, acc) in acc.iter_mut().enumerate() {
                // SAFETY: pair q of strip s: 64 values from a 64-byte boundary (the strip starts
                // on one and every pair is 128 bytes). The prefetch address may lie past the
                // strip (a prefetch never faults); it is computed without `add`'s contract.
                let (a0, a1) = unsafe {
                    let ap = a.add(s * sa + q * 2 * MR);
                    let pf = ap.wrapping_add(PF_Q * 2 * MR) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(pf);
                    _mm_prefetch::<_MM_HINT_T0>(pf.wrapping_add(64));
                    (_mm512_load_si512(ap.cast()), _mm512_load_si512(ap.add(32).cast()))
                };
                let (a0, a1) = (bh(a0), bh(a1));
                for j in 0..N {
                    let b = bh(xq[j]);
                    acc[j][0] = _mm512_dpbf16_ps(acc[j][0], a0, b);
                    acc[j][1] = _mm512_dpbf16_ps(acc[j][1], a1, b);
                }
            }
        }
        // SAFETY: the caller's contract.
        unsafe { store(&acc, out) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()
    }

    /// Both AVX-512 kernels give the portable kernel's bits (no tolerance) for every block shape
    /// (1 to 19 columns: every width and the remainders), strip counts that are and are not
    /// multiples of 4 and 2, odd and even `k`, both strip orders, `beta` 0 and not, `alpha` 1
    /// and not; and each element is within the bound of bf16 rounding of the f64 product.
    #[test]
    fn kernel_matches_the_definition() {
        let mut rng = Rng::seed_from(5);
        for &(m, k) in &[(1usize, 1usize), (32, 2), (33, 7), (70, 64), (129, 65), (256, 512), (5, 300)] {
            let w = random(m * k, &mut rng);
            let mut a = PackedBf16::default();
            a.pack(&w, m, k, m, |r| r);
            for n in [1usize, 2, 3, 4, 5, 8, 9, 19] {
                let xv = random(k * n, &mut rng);
                let mut x = Bf16Pairs::default();
                x.set_for(&xv, k, n, true);
                let y0 = random(m * n, &mut rng);
                for (alpha, beta, reverse) in [(1.0f32, 0.0f32, false), (0.5, 1.0, true), (1.0, -0.25, false)]
                {
                    let mut want = y0.clone();
                    a.gemm_reference(alpha, &x, beta, &mut want);
                    for fma in [false, true] {
                        let mut got = y0.clone();
                        let kernel = if fma { Kernel::Fma } else { Kernel::Dot };
                        if !a.run(kernel, alpha, &x, beta, &mut got, reverse) {
                            continue; // no AVX512_BF16 here: the portable kernel is all there is
                        }
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                w.to_bits(),
                                "m {m} k {k} n {n} fma {fma} element {i}: {g} vs {w}"
                            );
                        }
                    }
                    let mut got = y0.clone();
                    a.gemm(alpha, &x, beta, &mut got, reverse);
                    // Against f64 on the rounded operands: each of the k sums rounds once in
                    // f32 (relative 2^-24 of a partial sum at most Σ|a·x|).
                    for j in 0..n {
                        for r in 0..m {
                            let (mut exact, mut mag) = (0.0f64, 0.0f64);
                            for p in 0..k {
                                let t = Bf16::round(w[p * m + r]) as f64 * Bf16::round(xv[j * k + p]) as f64;
                                exact += t;
                                mag += t.abs();
                            }
                            let e = alpha as f64 * exact + beta as f64 * y0[j * m + r] as f64;
                            let tol = (k as f64 + 2.0) * 6.0e-8 * (mag + y0[j * m + r].abs() as f64) + 1e-30;
                            let g = got[j * m + r] as f64;
                            assert!((g - e).abs() <= tol, "m {m} k {k} n {n} ({r}, {j}): {g} vs {e}");
                        }
                    }
                }
            }
        }
    }

    /// The AMX kernel (where the CPU has it): its bits do not depend on where an element sits
    /// (no tolerance). Every column of a 37-column product equals that column multiplied alone
    /// (1 column: a tile of 15 zero columns) and within other blocks (columns 3.. of the
    /// product), every row equals that row packed 5 places further on (another strip, another
    /// half), and the reversed strip order changes nothing; for `k` with and without a tail of
    /// pairs (`kp mod 16`), one tile of pairs and several. And each element is within the
    /// bound of `f32` summation of the exact products (as for the other kernels, tested above).
    #[test]
    fn amx_bits_do_not_depend_on_position() {
        let mut rng = Rng::seed_from(21);
        for &(m, k) in &[(45usize, 32usize), (70, 7), (64, 300), (33, 256)] {
            let w = random(m * k, &mut rng);
            let mut a = PackedBf16::default();
            a.pack(&w, m, k, m, |r| r);
            let n = 37;
            let xv = random(k * n, &mut rng);
            let mut x = Bf16Pairs::default();
            x.set(&xv, k, n);
            let mut all = vec![0.0f32; m * n];
            if !a.run(Kernel::Amx, 1.0, &x, 0.0, &mut all, false) {
                return; // no AMX here
            }
            let mut rev = vec![0.0f32; m * n];
            a.run(Kernel::Amx, 1.0, &x, 0.0, &mut rev, true);
            assert!(all.iter().zip(&rev).all(|(p, q)| p.to_bits() == q.to_bits()), "m {m} k {k} reversed");
            for j in [0, 5, 16, 36] {
                let mut one = Bf16Pairs::default();
                one.set(&xv[j * k..(j + 1) * k], k, 1);
                let mut y = vec![0.0f32; m];
                a.run(Kernel::Amx, 1.0, &one, 0.0, &mut y, false);
                assert!(
                    y.iter().zip(&all[j * m..]).all(|(p, q)| p.to_bits() == q.to_bits()),
                    "m {m} k {k}: column {j} alone"
                );
            }
            let tail = n - 3;
            let mut part = Bf16Pairs::default();
            part.set(&xv[3 * k..], k, tail);
            let mut y = vec![0.0f32; m * tail];
            a.run(Kernel::Amx, 1.0, &part, 0.0, &mut y, false);
            assert!(
                y.iter().zip(&all[3 * m..]).all(|(p, q)| p.to_bits() == q.to_bits()),
                "m {m} k {k}: columns 3.. as their own product"
            );
            // Rows shifted by 5: packed row i is row (i + m - 5) mod m, so row r lands at r + 5.
            let mut shifted = PackedBf16::default();
            shifted.pack(&w, m, k, m, |i| (i + m - 5) % m);
            let mut ys = vec![0.0f32; m * n];
            shifted.run(Kernel::Amx, 1.0, &x, 0.0, &mut ys, false);
            for j in 0..n {
                for r in 0..m {
                    let (p, q) = (ys[j * m + (r + 5) % m], all[j * m + r]);
                    assert_eq!(p.to_bits(), q.to_bits(), "m {m} k {k}: row {r} shifted, column {j}");
                }
            }
        }
    }

    /// `transpose` moves every value to its place (exact), for row and column counts below,
    /// at and past the 16 of a tile, and `Bf16Pairs::set` holds each value rounded as
    /// `Bf16::from_f32` rounds it, with a zero after an odd `k` and zero columns up to 16.
    #[test]
    fn transpose_and_pairs_hold_the_values() {
        let mut rng = Rng::seed_from(22);
        for &(rows, cols) in &[(1usize, 1usize), (7, 16), (16, 16), (33, 45), (48, 17), (256, 70)] {
            let src = random(rows * cols, &mut rng);
            let mut dst = vec![0.0; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        dst[i * cols + j].to_bits(),
                        src[j * rows + i].to_bits(),
                        "{rows}x{cols} ({i}, {j})"
                    );
                }
            }
            let (k, n) = (rows, cols);
            let mut x = Bf16Pairs::default();
            x.set(&src, k, n);
            let kp = k.div_ceil(2);
            assert_eq!(x.data.len(), n.div_ceil(16) * 16 * kp);
            for (idx, &p) in x.data.iter().enumerate() {
                let (j, q) = (idx / kp, idx % kp);
                let at = |r: usize| if j < n && r < k { Bf16::from_f32(src[j * k + r]).0 as u32 } else { 0 };
                assert_eq!(p, at(2 * q) | at(2 * q + 1) << 16, "{k}x{n} column {j} pair {q}");
            }
        }
    }

    /// `Bf16Pairs::set_rows` gives exactly the pairs (and widened copy) of transposing the rows
    /// and calling `set`: row ranges and `k` below, at and past a 16 × 16 tile of pairs, odd `k`,
    /// ranges that start inside a tile, infinities, NaNs and values that round up, into a
    /// buffer last filled for a larger shape.
    #[test]
    fn pairs_of_rows_are_the_pairs_of_the_transpose() {
        let mut rng = Rng::seed_from(24);
        let mut x = Bf16Pairs::default();
        for &(rows, k, r0, n) in &[
            (1usize, 1usize, 0usize, 1usize),
            (16, 32, 0, 16),
            (40, 33, 3, 35),
            (256, 70, 16, 240),
            (256, 1536, 0, 128),
            (300, 65, 200, 100),
            (20, 2, 5, 0),
        ] {
            let mut src = random(rows * k, &mut rng);
            for (i, v) in src.iter_mut().enumerate().step_by(37) {
                *v = [f32::INFINITY, f32::NAN, f32::from_bits(0x3f80_8000), -0.0][i % 4];
            }
            let mut t = vec![0.0; rows * k];
            transpose(&src, rows, k, &mut t);
            for wide in [false, true] {
                let mut want = Bf16Pairs::default();
                want.set_for(&t[r0 * k..(r0 + n) * k], k, n, wide);
                x.set_for(&random(64 * 90, &mut rng), 64, 90, true);
                x.set_rows_for(&[(Some(&src[..]), k)], rows, r0..r0 + n, wide);
                assert_eq!((x.pairs(), x.cols()), (want.pairs(), want.cols()), "{rows}x{k} rows {r0}+{n}");
                assert!(x.data == want.data, "{rows}x{k} rows {r0}+{n}: pairs");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert!(bits(&x.wide) == bits(&want.wide), "{rows}x{k} rows {r0}+{n}: widened");
            }
        }
    }

    /// `PackedBf16::pack_transposed` packs what transposing and `pack` pack: whole and partial
    /// strips, `k` below, at and past 32 and odd, infinities, NaNs and ties, into a buffer last
    /// filled for a larger shape.
    #[test]
    fn packing_the_transpose_is_packing_a_transposed_copy() {
        let mut rng = Rng::seed_from(27);
        let mut got = PackedBf16::default();
        for &(k, m) in &[(1usize, 1usize), (32, 32), (33, 45), (1024, 256), (64, 70), (7, 96), (256, 1024)] {
            let mut w = random(k * m, &mut rng);
            for (i, v) in w.iter_mut().enumerate().step_by(41) {
                *v = [f32::INFINITY, f32::NAN, f32::from_bits(0x3f80_8000), -0.0][i % 4];
            }
            let mut t = vec![0.0; k * m];
            transpose(&w, k, m, &mut t);
            let mut want = PackedBf16::default();
            want.pack(&t, m, k, m, |r| r);
            got.pack(&random(300 * 300, &mut rng), 300, 300, 300, |r| r);
            got.pack_transposed(&w, k, m);
            assert_eq!((got.rows(), got.cols()), (m, k));
            assert!(got.strips() == want.strips(), "{k}x{m}");
        }
    }

    /// `Bf16Pairs::set_rows_parts` gives the pairs of `set_rows` on the parts laid side by side
    /// (zeros for the `None` parts): boundaries at even and odd columns, parts of zero columns,
    /// zeros first or last, with row ranges that do and do not fill a tile.
    #[test]
    fn pairs_of_parts_are_the_pairs_of_the_whole() {
        let mut rng = Rng::seed_from(26);
        let mut x = Bf16Pairs::default();
        for cols in [&[-64i64, 960][..], &[960, -64], &[64, 960], &[7, 40], &[-3, 33], &[0, 34, -2, 0], &[35]]
        {
            for &(rows, r0, n) in &[(256usize, 0usize, 256usize), (40, 3, 35), (48, 16, 16)] {
                let parts: Vec<(Option<Vec<f32>>, usize)> = cols
                    .iter()
                    .map(|&c| {
                        if c < 0 {
                            (None, (-c) as usize)
                        } else {
                            (Some(random(rows * c as usize, &mut rng)), c as usize)
                        }
                    })
                    .collect();
                let mut whole = Vec::new();
                for (v, c) in &parts {
                    whole.extend(v.clone().unwrap_or_else(|| vec![0.0; rows * c]));
                }
                let k = parts.iter().map(|p| p.1).sum::<usize>();
                let mut want = Bf16Pairs::default();
                want.set_rows_for(&[(Some(&whole[..]), k)], rows, r0..r0 + n, true);
                let refs: Vec<(Option<&[f32]>, usize)> =
                    parts.iter().map(|(v, c)| (v.as_deref(), *c)).collect();
                x.set_rows_for(&refs, rows, r0..r0 + n, true);
                assert_eq!((x.pairs(), x.cols()), (want.pairs(), want.cols()), "{cols:?} rows {r0}+{n}");
                assert!(x.data == want.data, "{cols:?} rows {r0}+{n}: pairs");
                assert!(
                    x.wide.iter().map(|f| f.to_bits()).eq(want.wide.iter().map(|f| f.to_bits())),
                    "{cols:?}: widened"
                );
            }
        }
    }

    /// Buffers reused for a smaller shape hold exactly what fresh ones would (nothing of the
    /// larger one is left in the padding): odd `k`, a partial last strip, a row map, and columns
    /// short of a tile.
    #[test]
    fn reused_buffers_hold_no_stale_values() {
        let mut rng = Rng::seed_from(23);
        let (mut a, mut x) = (PackedBf16::default(), Bf16Pairs::default());
        let big = random(96 * 64, &mut rng);
        a.pack(&big, 96, 64, 96, |r| r);
        x.set(&random(64 * 40, &mut rng), 64, 40);
        for &(m, k, n, shift) in &[(45usize, 7usize, 3usize, 0usize), (33, 5, 17, 4), (20, 3, 1, 1)] {
            let w = random(m * k, &mut rng);
            let xv = random(k * n, &mut rng);
            let map = |r: usize| (r + shift) % m;
            a.pack(&w, m, k, m, map);
            x.set(&xv, k, n);
            let (mut fa, mut fx) = (PackedBf16::default(), Bf16Pairs::default());
            fa.pack(&w, m, k, m, map);
            fx.set(&xv, k, n);
            assert!(a.strips() == fa.strips(), "packing {m}x{k} shift {shift}");
            assert!(x.data == fx.data, "pairs {k}x{n}");
            a.pack(&big, 96, 64, 96, |r| r);
            x.set(&random(64 * 40, &mut rng), 64, 40);
        }
    }

    /// Packing a subset of rows through a row map packs exactly those rows: the product equals
    /// the full product's rows.
    #[test]
    fn row_map_picks_rows() {
        let mut rng = Rng::seed_from(6);
        let (rows, k, n) = (96, 33, 3);
        let w = random(rows * k, &mut rng);
        let xv = random(k * n, &mut rng);
        let mut x = Bf16Pairs::default();
        x.set(&xv, k, n);
        let (mut full, mut part) = (PackedBf16::default(), PackedBf16::default());
        full.pack(&w, rows, k, rows, |r| r);
        part.pack(&w, rows, k, 40, |r| 50 + r);
        let (mut yf, mut yp) = (vec![0.0; rows * n], vec![0.0; 40 * n]);
        full.gemm(1.0, &x, 0.0, &mut yf, false);
        part.gemm(1.0, &x, 0.0, &mut yp, false);
        for j in 0..n {
            assert_eq!(&yp[j * 40..][..40], &yf[j * rows + 50..][..40]);
        }
    }

    /// Packing through the AVX-512 routine (strips of consecutive rows) gives the bits of the
    /// scalar one (other row maps, or a cap below AVX-512), NaN, infinities and ties included; `matches` holds for the
    /// weights packed, for a weight changed below bf16's resolution, and not for one changed
    /// enough to round differently, a changed shape or -0 for +0.
    #[test]
    fn packing_routes_agree_and_matches_sees_changes() {
        let mut rng = Rng::seed_from(7);
        let (rows, k) = (96, 9);
        let mut w = random(rows * k, &mut rng);
        w[5] = f32::NAN;
        w[40] = f32::INFINITY;
        w[77] = 1.0 + 3.0 / 256.0; // a tie, rounded up to the even value
        w[100] = 0.0;
        let (mut simd, mut scalar) = (PackedBf16::default(), PackedBf16::default());
        simd.pack(&w, rows, k, rows, |r| r);
        {
            // The scalar routine: this thread capped below AVX-512.
            let _cap = crate::simd::TestCap::set(crate::simd::Level::Avx2);
            scalar.pack(&w, rows, k, rows, |r| r);
            assert!(simd.matches(&w, rows, k, rows, |r| r));
        }
        assert_eq!(simd.strips(), scalar.strips());
        let mut by_rows = PackedBf16::default();
        by_rows.pack(&w, rows, k, 40, |r| (r * 7) % rows);
        assert!(by_rows.matches(&w, rows, k, 40, |r| (r * 7) % rows));
        for m in [&simd, &scalar] {
            assert!(m.matches(&w, rows, k, rows, |r| r));
        }
        let mut small = w.clone();
        small[50] = f32::from_bits(w[50].to_bits() ^ 1); // the lowest bit: the same bf16
        assert!(simd.matches(&small, rows, k, rows, |r| r));
        let mut big = w.clone();
        big[rows * k - 1] += 0.5;
        assert!(!simd.matches(&big, rows, k, rows, |r| r));
        let mut sign = w.clone();
        sign[100] = -0.0;
        assert!(!simd.matches(&sign, rows, k, rows, |r| r));
        assert!(!simd.matches(&w[..rows * (k - 1)], rows, k - 1, rows, |r| r));
    }

    /// The emulation reads subnormal inputs as zero and flushes subnormal sums, as the
    /// instruction does.
    #[test]
    fn denormals_flush() {
        let tiny = 0x0001u32; // a subnormal bf16
        assert_eq!(dot_pair(0.0, tiny, 0x3f80), 0.0);
        let small = Bf16::from_f32(1.0e-20).0 as u32;
        // 1e-40 is subnormal in f32: flushed.
        assert_eq!(dot_pair(0.0, small, small), 0.0);
        assert_eq!(dot_pair(1.0, 0x3f80 | 0x3f80 << 16, 0x4000 | 0x4000 << 16), 5.0);
    }
}
