//! The kernel layer: packed operands and the products and GEMVs on them, which the recurrent
//! layer engine (`rnn-cells`' `engine`) is built on. A user of the library needs [`gemm`] alone;
//! what is here is public so that the engine, in another crate, can reach it, and it is the one
//! place (with `kernel.rs` and `gemv.rs` beside it) where this crate's `unsafe` arithmetic lives.
//!
//! A left operand packed once and multiplied many times: `C = alpha·op(A)·B + beta·C` where
//! `op(A)` is fixed across calls, as `W_hh` is across the `T` steps of a recurrent layer.
//!
//! General-purpose GEMMs re-pack both operands on every call; for the per-step product of a
//! recurrent layer that is a fifth of the time (`W_hh` is re-packed `T` times). [`PackedLhs`]
//! packs `op(A)` once; [`gemm_packed`] then reads it as is.
//!
//! Layout (f32 on CPUs with AVX-512, or AVX2 and FMA, within the cap of
//! [`simd::max_level`]): strips of [`MR`] rows, the last one zero-padded;
//! strip `s` is stored `k`-major, `data[s·MR·k + p·MR + r] = op(A)[s·MR + r, p]`, starting on a
//! 64-byte boundary. Other element types and CPUs keep a column-major copy of `op(A)` and use
//! [`gemm`]. The layout is chosen when packing, the kernel when multiplying (once per call): the
//! AVX-512 and AVX2 kernels read the same strips and give the same bits, so a packing may be used
//! under another cap than it was packed under; strips used under the `portable` cap are copied
//! column-major per call and multiplied by matrixmultiply.
//!
//! A packing can also be filled column by column by the pass that computes its values
//! ([`PackedLhs::reset`], [`PackedLhs::columns_writer`]), multiplied over a range of its columns
//! ([`gemm_packed_cols`]), and serve as the right operand, read in place
//! ([`gemm_packed_pair`]): the LSTM's backward keeps `dA` so, for every product that reads it.
//!
//! [`times`] times every product of the f32 GEMM where it runs, by shape and route (off unless
//! turned on; `bench_table --products`).
//!
//! With the strip layout, products with one column go to a GEMV over the strips
//! (`gemv::gemv_strips_f32`) and the others to the AVX-512 kernel of `kernel.rs` (a 32 × 12
//! FMA micro-kernel) or its AVX2 build (`kernel/avx2.rs`, 16 × 6 register blocks), whose arithmetic does not depend on the shape of the call: each element of
//! `C` is one FMA chain over `p` per block of 256 values of `k` (blocks counted from 0), combined
//! as `c ← fma(alpha, acc, beta·c)`. So computing `C` whole, by blocks of its columns (for
//! example one per thread, as long as each block has two columns or more) or of its rows, or
//! through [`gemm`] (which uses the same kernel for f32 on these CPUs) gives the same bits. With
//! `alpha = 1` and `beta` 0 or 1 they are also matrixmultiply's bits on these CPUs (its AVX-512
//! kernel sums the same way).

pub mod bf16;
mod gemv;
#[cfg(target_arch = "x86_64")]
pub(crate) mod kernel;
#[cfg(test)]
mod tests;
pub mod times;

pub(crate) use gemv::{gemv_columns_f32, gemv_grouped_f32, pack_rows, COLUMN_ROWS, GROUP};
pub use gemv::{gemv_strips_f32, gemv_strips_f32_ordered, PREFETCH_AHEAD};

use nalgebra::{Dyn, Matrix, RawStorage, RawStorageMut};

use crate::linalg::{RawGemm, Strided};
use crate::simd::{self, Level};
use crate::{gemm, Mat, Scalar, Trans};

/// Rows per strip of the packed f32 layout.
pub const MR: usize = 32;

/// The f32 GEMM's blocking on this CPU, from its L2 size: `(strips of A per group, columns of B
/// per packed block)` (the strips are [`MR`] rows; see the kernel's docs), or `None` where
/// products take the portable route. It changes no bit; benchmarks print it beside the CPU.
pub fn gemm_blocking() -> Option<(usize, usize)> {
    #[cfg(target_arch = "x86_64")]
    if f32_kernel::<f32>().is_some() {
        let b = kernel::Blocking::current();
        return Some((b.mc_strips, b.nc));
    }
    None
}

/// The strip kernel for `T` now: `Some(Level::Avx512)` or `Some(Level::Avx2)`
/// ([`simd::gemm_level`]: the CPU's best within the cap) when `T` is `f32`, `None` otherwise
/// (the condition for the strip layout; the feature checks are cached loads, the type check
/// folds at compile time).
#[inline]
pub(crate) fn f32_kernel<T: Scalar>() -> Option<Level> {
    // (Only f32 has strips.)
    T::as_f32_ptr(std::ptr::null())?;
    match simd::gemm_level() {
        Level::Baseline => None,
        level => Some(level),
    }
}

/// `p` as the `f32` pointer it is: for the strip layout and the kernels' routes, which exist only
/// for `T = f32` ([`f32_kernel`]).
///
/// # Panics
/// If `T` is not `f32` (a route taken for the wrong type: a bug, not a user error).
#[inline(always)]
pub(crate) fn f32_ptr<T: Scalar>(p: *const T) -> *const f32 {
    T::as_f32_ptr(p).expect("an f32-only kernel route taken for f64")
}

/// [`f32_ptr`] for a mutable pointer.
#[inline(always)]
pub(crate) fn f32_mut_ptr<T: Scalar>(p: *mut T) -> *mut f32 {
    T::as_f32_mut_ptr(p).expect("an f32-only kernel route taken for f64")
}

/// `C = alpha·A·B + beta·C` through the strip kernel with per-call packing, for `T = f32`.
/// Returns `false`, having done nothing, unless [`f32_kernel`] gives a kernel.
///
/// # Safety
/// Pointers valid for the shapes and strides; `C` does not alias `A` or `B`.
pub(crate) unsafe fn gemm_strided<T: Scalar>(g: RawGemm<T>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if let Some(level) = f32_kernel::<T>() {
        let f = |x: Strided<*const T>| Strided { ptr: f32_ptr(x.ptr), rs: x.rs, cs: x.cs };
        let g = RawGemm {
            m: g.m,
            k: g.k,
            n: g.n,
            alpha: g.alpha.to_f64() as f32,
            a: f(g.a),
            b: f(g.b),
            beta: g.beta.to_f64() as f32,
            c: Strided { ptr: f32_mut_ptr(g.c.ptr), rs: g.c.rs, cs: g.c.cs },
        };
        // SAFETY: the CPU has the features of `level`; the pointers are the caller's, as f32 (T
        // is f32); the rest is the caller's contract.
        unsafe { kernel::gemm_strided(g, level) };
        return true;
    }
    let _ = g;
    false
}

/// Rows of a matrix packed in the strip layout for repeated GEMVs, the batch-1 route of the
/// recurrent layers: each thread packs the rows of `W_hh` that belong to its hidden units once
/// ([`PackedRows::pack`]) and multiplies them by `h_{t-1}` at every step ([`PackedRows::gemv`]).
/// Exists only for `f32` on CPUs with AVX-512 (the GEMV's AVX-512 kernel) or AVX2 (its AVX2
/// build, the same bits), within the cap ([`PackedRows::available`]); the layers take their
/// general route otherwise.
///
/// The strips start on a 64-byte boundary, so that no 16-lane load of the kernel straddles two
/// cache lines (a plain `Vec` starts 16 bytes into one: every load then touched two lines, and
/// the product ran at half its speed from L2: 24 against 11 µs per step of a 256-unit GRU).
///
/// The strips go in groups of 4, each group's panels of 8 columns interleaved
/// (`gemv::column_offset`), so that the GEMV reads one stream and broadcasts each `x_p` once per
/// group, not once per strip: 1 KB of the matrix then costs 18 loads instead of 24, which is
/// what the product from L2 was waiting on (0.8 to 2 MB matrices, old / new time 1.11-1.14 a
/// product on the 2-core Xeon; the same bits, each row summed as in [`gemv_strips_f32`]).
#[derive(Debug, Default)]
pub struct PackedRows<T> {
    m: usize,
    k: usize,
    /// The packed values are `data[off..]` (`off` aligns the strips to 64 bytes).
    off: usize,
    data: Vec<T>,
}

impl<T: Scalar> PackedRows<T> {
    /// Whether the route exists for `T` on this CPU (`f32` with AVX-512F, or AVX2 and FMA), within
    /// the cap of [`simd::max_level`] (false under `portable`). Under AVX2 it runs the AVX2 build
    /// of the strip GEMV: measured on `seq_lstm_fwd_i65_h512_b1_t100` under the AVX2 cap, two
    /// threads, 4.5 ms against 15.2 ms on the general route, which cannot split a batch of one.
    pub fn available() -> bool {
        f32_kernel::<T>().is_some()
    }

    /// Packs rows `row(0..m)` of the column-major `rows × k` matrix `w` (values `w[p·rows + i]`),
    /// reusing the buffer.
    ///
    /// # Panics
    /// If [`PackedRows::available`] is false, or a row index is out of range.
    pub fn pack(&mut self, w: &[T], rows: usize, k: usize, m: usize, row: impl Fn(usize) -> usize) {
        assert!(Self::available(), "PackedRows::pack: no strip layout for {} on this CPU", T::NAME);
        assert!(w.len() == rows * k, "PackedRows::pack: {} values for {rows}x{k}", w.len());
        (self.m, self.k) = (m, k);
        let len = m.div_ceil(MR) * MR * k;
        // 16 floats of slack for the alignment (the buffer may have moved: realign).
        self.data.resize(len + 16, T::ZERO);
        self.off = Self::aligned_offset(&self.data);
        let data = &mut self.data[self.off..self.off + len];
        // SAFETY: T is f32 (`available`); the same values, reinterpreted as the f32 they are.
        let (w, out) = unsafe {
            (
                std::slice::from_raw_parts(f32_ptr(w.as_ptr()), w.len()),
                std::slice::from_raw_parts_mut(f32_mut_ptr(data.as_mut_ptr()), data.len()),
            )
        };
        pack_rows(GROUP, w, rows, k, m, row, out);
    }

    /// `y = alpha·R·x + beta·y` for the packed rows `R` (`m × k`), reading the strips in reverse
    /// order when `reverse` (the sum of each row is the same either way, see
    /// [`gemv_strips_f32_ordered`]).
    ///
    /// # Panics
    /// If the lengths do not match the packing.
    pub fn gemv(&self, alpha: T, x: &[T], beta: T, y: &mut [T], reverse: bool) {
        assert!(
            x.len() == self.k && y.len() == self.m,
            "PackedRows::gemv: {}x{} rows, x has {}, y {}",
            self.m,
            self.k,
            x.len(),
            y.len()
        );
        let data = &self.data[self.off..self.off + self.m.div_ceil(MR) * MR * self.k];
        // SAFETY: a packing exists only for f32 (`pack`); the same values as f32.
        let (w, x, y) = unsafe {
            (
                std::slice::from_raw_parts(f32_ptr(data.as_ptr()), data.len()),
                std::slice::from_raw_parts(f32_ptr(x.as_ptr()), x.len()),
                std::slice::from_raw_parts_mut(f32_mut_ptr(y.as_mut_ptr()), y.len()),
            )
        };
        let (alpha, beta) = (alpha.to_f64() as f32, beta.to_f64() as f32);
        gemv_grouped_f32(GROUP, self.m, self.k, w, alpha, x, beta, y, reverse);
    }

    /// The index of the first value of `data` on a 64-byte boundary.
    fn aligned_offset(data: &[T]) -> usize {
        #[cfg(target_arch = "x86_64")]
        return kernel::cache_line_offset(f32_ptr(data.as_ptr()));
        #[cfg(not(target_arch = "x86_64"))]
        return 0;
    }
}

/// How the data of a [`PackedLhs`] is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// A column-major copy of `op(A)` (`m×k`, column stride `m`).
    ColMajor,
    /// Strips of [`MR`] rows, `k`-major within a strip (see the module docs).
    Strips,
}

/// `op(A)`, packed for repeated products with [`gemm_packed`].
#[derive(Debug)]
pub struct PackedLhs<T> {
    m: usize,
    k: usize,
    layout: Layout,
    /// The packed values are `data[off..off + len]` (`off` aligns strips to 64 bytes).
    off: usize,
    data: Vec<T>,
}

impl<T: Scalar> Clone for PackedLhs<T> {
    /// A copy whose strips start on a 64-byte boundary of its own buffer (a plain copy of the
    /// `Vec` could start elsewhere in a cache line, and the kernel's aligned loads would fault).
    fn clone(&self) -> Self {
        let values = self.values();
        let mut data = Vec::with_capacity(values.len() + 16);
        let off = match self.layout {
            Layout::ColMajor => 0,
            #[cfg(target_arch = "x86_64")]
            Layout::Strips => kernel::cache_line_offset(f32_ptr(data.as_ptr())),
            #[cfg(not(target_arch = "x86_64"))]
            Layout::Strips => 0,
        };
        data.resize(off, T::ZERO);
        data.extend_from_slice(values);
        PackedLhs { m: self.m, k: self.k, layout: self.layout, off, data }
    }
}

impl<T: Scalar> Default for PackedLhs<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Scalar> PackedLhs<T> {
    /// An empty packing (0×0) whose buffer [`pack`](Self::pack) fills and reuses.
    pub fn new() -> Self {
        PackedLhs { m: 0, k: 0, layout: Layout::ColMajor, off: 0, data: Vec::new() }
    }

    /// Packs `op(a)`, reusing this value's buffer.
    pub fn pack<S: RawStorage<T, Dyn, Dyn>>(&mut self, a: &Matrix<T, Dyn, Dyn, S>, ta: Trans) {
        let (m, k) = match ta {
            Trans::No => a.shape(),
            Trans::Yes => (a.ncols(), a.nrows()),
        };
        self.m = m;
        self.k = k;
        self.off = 0;
        #[cfg(target_arch = "x86_64")]
        if let Some(level) = f32_kernel::<T>() {
            let (rs, cs) = a.strides();
            let (rs, cs) = match ta {
                Trans::No => (rs as isize, cs as isize),
                Trans::Yes => (cs as isize, rs as isize),
            };
            let len = m.div_ceil(MR) * MR * k;
            // 16 spare values (64 bytes of f32) to start the strips on a cache line.
            self.data.resize(len + 16, T::ZERO);
            self.off = kernel::cache_line_offset(f32_ptr(self.data.as_ptr()));
            self.layout = Layout::Strips;
            let out = &mut self.data[self.off..self.off + len];
            // Large packings (a layer's weights, packed at every training step) are split by
            // strips across the threads: a copy, the same values for any split.
            let parts = strip_parts(m, k);
            let mut pieces = Vec::with_capacity(parts);
            let mut rest = out;
            for i in 0..parts {
                let rows = crate::parallel::split_range(m, i, parts, MR);
                let (piece, r) = rest.split_at_mut(rows.len().div_ceil(MR) * MR * k);
                pieces.push((rows, piece));
                rest = r;
            }
            let a = SendPtr(f32_ptr(a.as_ptr()));
            crate::parallel::for_each_piece(pieces, |(rows, out)| {
                if rows.start >= rows.end {
                    return;
                }
                let len = out.len();
                // SAFETY: T is f32 (`f32_kernel`) and the CPU has the features of `level`; the
                // strides were read from `a`'s storage, and rows `rows` of it start
                // `rows.start·rs` from its first value; `out` holds their strips, `len` values.
                unsafe {
                    let out = std::slice::from_raw_parts_mut(f32_mut_ptr(out.as_mut_ptr()), len);
                    let at = a.get().offset(rows.start as isize * rs);
                    kernel::pack_strips(level, rows.len(), k, at, rs, cs, out)
                };
            });
            return;
        }
        let at = |i: usize, p: usize| match ta {
            Trans::No => a[(i, p)],
            Trans::Yes => a[(p, i)],
        };
        self.layout = Layout::ColMajor;
        self.data.clear();
        self.data.reserve(m * k);
        for p in 0..k {
            for i in 0..m {
                self.data.push(at(i, p));
            }
        }
    }

    /// Makes this an `m×k` packing to be filled column by column through
    /// [`columns_writer`](Self::columns_writer) (for example by the pass that computes those
    /// columns, instead of packing a finished matrix with [`pack`](Self::pack)), reusing the
    /// buffer. The values are unspecified until written, except the strips' padding rows, which
    /// are zero.
    pub fn reset(&mut self, m: usize, k: usize) {
        self.m = m;
        self.k = k;
        self.off = 0;
        #[cfg(target_arch = "x86_64")]
        if f32_kernel::<T>().is_some() {
            let len = m.div_ceil(MR) * MR * k;
            if self.data.len() < len + 16 {
                self.data.resize(len + 16, T::ZERO);
            }
            self.off = kernel::cache_line_offset(f32_ptr(self.data.as_ptr()));
            self.layout = Layout::Strips;
            if !m.is_multiple_of(MR) {
                // The last strip, padding rows included.
                let last = self.off + (m / MR) * MR * k;
                self.data[last..last + MR * k].fill(T::ZERO);
            }
            return;
        }
        self.layout = Layout::ColMajor;
        self.data.resize(m * k, T::ZERO);
    }

    /// A handle through which the parts of a parallel pass each write their own columns of
    /// `op(A)` (after [`reset`](Self::reset)).
    pub fn columns_writer(&mut self) -> PackedColumns<'_, T> {
        let base = self.off;
        PackedColumns {
            ptr: self.data[base..].as_mut_ptr(),
            m: self.m,
            k: self.k,
            layout: self.layout,
            _buf: std::marker::PhantomData,
        }
    }

    /// Whether the values are in strips (f32 on CPUs with AVX-512 or AVX2 and FMA, within the
    /// cap when packed), where [`gemm_packed_pair`] reads the right operand in place; otherwise
    /// they are a column-major copy.
    pub fn is_strips(&self) -> bool {
        self.layout == Layout::Strips
    }

    /// `a[i] += Σ_p op(A)[i, p]` for each row `i` (`a` holds `m` values), and the same for `b`
    /// if given, each sum in order of `p`: the bits of adding the columns one after another.
    ///
    /// # Panics
    /// If `a` or `b` does not hold `m` values.
    pub fn add_row_sums(&self, a: &mut [T], b: Option<&mut [T]>) {
        self.add_row_sums_of(0..self.k, a, b);
    }

    /// [`add_row_sums`](Self::add_row_sums) over columns `cols` of `op(A)` alone, in order.
    ///
    /// # Panics
    /// If `a` or `b` does not hold `m` values, or `cols` runs past the `k` columns.
    pub fn add_row_sums_of(&self, cols: std::ops::Range<usize>, a: &mut [T], mut b: Option<&mut [T]>) {
        let (m, k) = (self.m, self.k);
        assert!(
            a.len() == m
                && b.as_ref().is_none_or(|b| b.len() == m)
                && cols.start <= cols.end
                && cols.end <= k,
            "PackedLhs::add_row_sums_of: {} and {:?} sums for {m} rows, columns {cols:?} of {k}",
            a.len(),
            b.as_ref().map(|b| b.len())
        );
        let v = self.values();
        match self.layout {
            Layout::ColMajor => {
                for col in v.chunks_exact(m.max(1)).take(cols.end).skip(cols.start) {
                    a.iter_mut().zip(col).for_each(|(o, &x)| *o += x);
                    if let Some(b) = b.as_deref_mut() {
                        b.iter_mut().zip(col).for_each(|(o, &x)| *o += x);
                    }
                }
            }
            Layout::Strips => {
                // Each strip's sums are its own (in order of `p`): split by strips across the
                // threads when large, the same bits for any split.
                let parts = strip_parts(m, cols.len());
                let mut pieces = Vec::with_capacity(parts);
                let (mut ra, mut rb) = (a, b);
                for i in 0..parts {
                    let rows = crate::parallel::split_range(m, i, parts, MR);
                    let (pa, na) = ra.split_at_mut(rows.len());
                    let (pb, nb) = match rb {
                        Some(b) => {
                            let (pb, nb) = b.split_at_mut(rows.len());
                            (Some(pb), Some(nb))
                        }
                        None => (None, None),
                    };
                    pieces.push((rows.start / MR, pa, pb));
                    (ra, rb) = (na, nb);
                }
                crate::parallel::for_each_piece(pieces, |(s0, a, mut b)| {
                    let strips = v.chunks_exact((MR * k).max(1)).skip(s0).take(a.len().div_ceil(MR));
                    for (s, strip) in strips.enumerate() {
                        let rows = s * MR..a.len().min(s * MR + MR);
                        let strip = &strip[cols.start * MR..cols.end * MR];
                        add_strip_sums(strip, &mut a[rows.clone()], b.as_deref_mut().map(|b| &mut b[rows]));
                    }
                });
            }
        }
    }

    /// `out[i + m·targets[p]] += op(A)[i, p]` for every row `i` and column `p`, the columns in
    /// order: the product `op(A)·Xᵀ` with `X` one-hot (column `p` of `X` is `e_{targets[p]}`),
    /// added into the column-major `out` (`m` rows): a one-hot input's `dW_ih += dA·Xᵀ` from a
    /// `dA` kept in strips. Split by strips across the threads when large; every element's sum
    /// keeps the order of `p`, so the bits are those of adding the columns one after another.
    ///
    /// With `sums` (`m` values), also `sums[i] += op(A)[i, p]` in the same pass, in order of `p`:
    /// the bits of [`add_row_sums`](Self::add_row_sums) (a GRU's `db_ih`, which no product over
    /// `dA` reads when the input is one-hot), without a pass of its own over `op(A)`.
    ///
    /// # Panics
    /// If `targets` does not hold `k` values, `out` is not whole columns of `m` rows, a target
    /// is not one of its columns, or `sums` does not hold `m` values.
    pub fn add_columns_into(&self, targets: &[usize], out: &mut [T], sums: Option<&mut [T]>) {
        let (m, k) = (self.m, self.k);
        let cols = out.len().checked_div(m).unwrap_or(0);
        assert!(
            targets.len() == k
                && out.len().is_multiple_of(m.max(1))
                && targets.iter().all(|&t| t < cols)
                && sums.as_ref().is_none_or(|s| s.len() == m),
            "PackedLhs::add_columns_into: {} targets for {k} columns, {} values for {m} rows, targets below {cols} needed, {:?} sums",
            targets.len(),
            out.len(),
            sums.as_ref().map(|s| s.len())
        );
        if m == 0 || k == 0 {
            return;
        }
        let v = self.values();
        let layout = self.layout;
        let dst = SendPtr(out.as_mut_ptr());
        let sum_dst = sums.map(|s| SendPtr(s.as_mut_ptr()));
        let parts = strip_parts(m, k);
        crate::parallel::for_each_part(parts, |part| {
            let rows = part.range(m, MR);
            for (p, &t) in targets.iter().enumerate() {
                // Column p's values of rows `rows`: whole strips from rows.start (a multiple of
                // MR), or one run of the column-major copy.
                let mut i = rows.start;
                while i < rows.end {
                    let (src, n) = match layout {
                        Layout::Strips => {
                            let n = MR.min(m - i);
                            (&v[(i / MR) * MR * k + p * MR..][..n], n)
                        }
                        Layout::ColMajor => (&v[p * m + i..p * m + rows.end], rows.end - i),
                    };
                    // SAFETY: rows `rows` of column t are inside `out` (t < cols, checked) and
                    // this part's alone: the parts' row ranges are disjoint; `out` is borrowed
                    // mutably for the call.
                    let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(t * m + i), n) };
                    d.iter_mut().zip(src).for_each(|(o, &x)| *o += x);
                    if let Some(sp) = &sum_dst {
                        // SAFETY: rows i..i + n of the m sums (checked), this part's alone as
                        // above; `sums` is borrowed mutably for the call.
                        let a = unsafe { std::slice::from_raw_parts_mut(sp.get().add(i), n) };
                        a.iter_mut().zip(src).for_each(|(o, &x)| *o += x);
                    }
                    i += n;
                }
            }
        });
    }

    /// The packed values.
    fn values(&self) -> &[T] {
        let len = match self.layout {
            Layout::ColMajor => self.m * self.k,
            Layout::Strips => self.m.div_ceil(MR) * MR * self.k,
        };
        &self.data[self.off..self.off + len]
    }

    /// `(m, k)`: the shape of `op(A)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.m, self.k)
    }
}

/// Packings of at least this many values are made, and their row sums taken, by all threads
/// (`PackedLhs::pack`, `PackedLhs::add_row_sums`; 256 KB of f32, a quarter of a 2×256 LSTM
/// layer's `W_hh`). They ran on one thread while the other waited: 1.2 % of a default charlm
/// training step's samples for the packings alone (perf, 2-core Xeon).
const PACK_SPLIT: usize = 1 << 16;

/// The parts an `m×k` packing's strip-by-strip pass is split into: one per thread (at most one
/// per strip) from [`PACK_SPLIT`] values, else one.
fn strip_parts(m: usize, k: usize) -> usize {
    if m * k >= PACK_SPLIT {
        crate::parallel::num_threads().min(m.div_ceil(MR))
    } else {
        1
    }
}

/// `a[i] += Σ_p strip[p·MR + i]` (and `b` likewise) for the `a.len() ≤ MR` rows of one strip,
/// in order of `p`.
fn add_strip_sums<T: Scalar>(strip: &[T], a: &mut [T], b: Option<&mut [T]>) {
    let n = a.len();
    let (mut acc_a, mut acc_b) = ([T::ZERO; MR], [T::ZERO; MR]);
    acc_a[..n].copy_from_slice(a);
    if let Some(b) = b.as_deref() {
        acc_b[..n].copy_from_slice(b);
    }
    for col in strip.chunks_exact(MR) {
        acc_a.iter_mut().zip(col).for_each(|(o, &x)| *o += x);
        if b.is_some() {
            acc_b.iter_mut().zip(col).for_each(|(o, &x)| *o += x);
        }
    }
    a.copy_from_slice(&acc_a[..n]);
    if let Some(b) = b {
        b.copy_from_slice(&acc_b[..n]);
    }
}

/// Raw pointers (a product's, or one buffer's), shared with the parts of a
/// [`for_each_part`](crate::parallel::for_each_part) call: the parts read shared operands and each writes its own
/// disjoint elements (a block of `C`, rows of a packing), while the caller's borrows keep them
/// alive and otherwise untouched.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<P>(pub(crate) P);
impl<P: Copy> SendPtr<P> {
    /// The pointers (a method, so that closures capture the wrapper, not its field).
    pub(crate) fn get(&self) -> P {
        self.0
    }
}
// SAFETY: the parts read shared operands and write disjoint elements (see the type's docs).
unsafe impl<P> Send for SendPtr<P> {}
// SAFETY: as above.
unsafe impl<P> Sync for SendPtr<P> {}

/// Columns of a [`PackedLhs`] being filled by the parts of a parallel pass (see
/// [`PackedLhs::columns_writer`]); holds the packing's buffer mutably borrowed.
pub struct PackedColumns<'a, T> {
    ptr: *mut T,
    m: usize,
    k: usize,
    layout: Layout,
    _buf: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the parts write disjoint columns (the contract of `write`); T values move between
// threads as in any `Vec<T>` (Scalar: Send + Sync).
unsafe impl<T: Send> Send for PackedColumns<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for PackedColumns<'_, T> {}

impl<T: Scalar> PackedColumns<'_, T> {
    /// [`gemm_packed_pair`] with `op(P)` this packing: `C = alpha·op(A)·op(P)[:, j0..j0 + n] +
    /// beta·C` for `C` `m×n`.
    ///
    /// # Safety
    /// Columns `j0..j0 + n` have been written and no part writes them during the call.
    ///
    /// # Panics
    /// If the shapes do not agree.
    pub unsafe fn gemm_pair<SC: RawStorageMut<T, Dyn, Dyn>>(
        &self,
        alpha: T,
        a: &PackedLhs<T>,
        j0: usize,
        beta: T,
        c: &mut Matrix<T, Dyn, Dyn, SC>,
    ) {
        // SAFETY: the caller's contract.
        unsafe { pair_raw(alpha, a, (self.ptr, self.m, self.k, self.layout), j0, beta, c) };
    }

    /// Writes columns `start..start + src.len() / m` of `op(A)` from `src`, column-major
    /// (`m` values per column).
    ///
    /// # Safety
    /// No other part writes these columns meanwhile.
    ///
    /// # Panics
    /// If `src` is not whole columns or they run past `k`.
    pub unsafe fn write(&self, start: usize, src: &[T]) {
        let (m, k) = (self.m, self.k);
        let cols = src.len().checked_div(m).unwrap_or(0);
        assert!(
            cols * m == src.len() && start + cols <= k,
            "PackedColumns::write: {} values from column {start} of an {m}x{k} packing",
            src.len()
        );
        for (q, col) in src.chunks_exact(m.max(1)).enumerate() {
            let p = start + q;
            match self.layout {
                // SAFETY: column p is inside the buffer (m·k values); the caller's contract
                // keeps other writers off it.
                Layout::ColMajor => unsafe {
                    std::slice::from_raw_parts_mut(self.ptr.add(p * m), m).copy_from_slice(col)
                },
                Layout::Strips => {
                    let whole = col.chunks_exact(MR);
                    let tail = whole.remainder();
                    for (s, part) in whole.enumerate() {
                        // SAFETY: rows s·MR.. of column p of strip s, inside the ⌈m/MR⌉·MR·k
                        // values; as above. (A fixed-size copy: inline moves, not a memmove call.)
                        unsafe {
                            let dst = self.ptr.add(s * MR * k + p * MR) as *mut [T; MR];
                            *dst = *(part.as_ptr() as *const [T; MR]);
                        }
                    }
                    if !tail.is_empty() {
                        // SAFETY: as above, the last strip's first rows.
                        unsafe {
                            std::slice::from_raw_parts_mut(self.ptr.add(m / MR * MR * k + p * MR), tail.len())
                                .copy_from_slice(tail)
                        };
                    }
                }
            }
        }
    }
}

/// `C = alpha·op(A)·op(B) + beta·C` with `op(A)` from `a`; as [`gemm`] otherwise (when `beta`
/// is zero `C` is only written).
///
/// # Panics
/// If the shapes do not agree; the message names them.
pub fn gemm_packed<T, SB, SC>(
    alpha: T,
    a: &PackedLhs<T>,
    b: &Matrix<T, Dyn, Dyn, SB>,
    tb: Trans,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Scalar,
    SB: RawStorage<T, Dyn, Dyn>,
    SC: RawStorageMut<T, Dyn, Dyn>,
{
    let kb = if tb == Trans::No { b.nrows() } else { b.ncols() };
    assert!(kb == a.k, "gemm_packed: op(A) is {}x{}, op(B) has {kb} rows", a.m, a.k);
    gemm_packed_cols(alpha, a, 0, b, tb, beta, c);
}

/// `C = alpha·op(A)·op(P)[:, j0..j0 + n] + beta·C` with both operands packed: `op(P)` is the
/// right operand, read in place from its strips (no per-call packing of it). `C` is `m×n` for
/// `op(A)` `m×k` and `op(P)` `k×·`. The bits are those of [`gemm_packed`] with `op(P)`'s columns
/// as a plain matrix, for `n ≥ 2` (one column goes to the kernel, not to [`gemm_packed`]'s
/// GEMV).
///
/// # Panics
/// If the shapes do not agree; the message names them.
pub fn gemm_packed_pair<T, SC>(
    alpha: T,
    a: &PackedLhs<T>,
    p: &PackedLhs<T>,
    j0: usize,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Scalar,
    SC: RawStorageMut<T, Dyn, Dyn>,
{
    let v = p.values();
    // SAFETY: `v` is p's packing, borrowed for the call.
    unsafe { pair_raw(alpha, a, (v.as_ptr(), p.m, p.k, p.layout), j0, beta, c) };
}

/// [`gemm_packed_pair`] with `op(P)` given by its first packed value, shape and layout.
///
/// # Safety
/// `p` holds an `m×k` packing of the layout; columns `j0..j0 + n` of it are not written during
/// the call (others may be).
unsafe fn pair_raw<T, SC>(
    alpha: T,
    a: &PackedLhs<T>,
    (p, pm, pk, layout): (*const T, usize, usize, Layout),
    j0: usize,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Scalar,
    SC: RawStorageMut<T, Dyn, Dyn>,
{
    let n = c.ncols();
    assert!(
        a.k == pm && j0 + n <= pk && c.nrows() == a.m,
        "gemm_packed_pair: op(A) is {}x{}, op(P) is {pm}x{pk} from column {j0}, C is {}x{n}",
        a.m,
        a.k,
        c.nrows()
    );
    match (a.layout, layout, f32_kernel::<T>()) {
        #[cfg(target_arch = "x86_64")]
        (Layout::Strips, Layout::Strips, Some(level)) => {
            let (rsc, csc) = c.strides();
            // The layout is only produced when T is f32 (`f32_kernel`).
            let da = a.values();
            // SAFETY: the same values, as the f32 they are.
            let da = unsafe { std::slice::from_raw_parts(f32_ptr(da.as_ptr()), da.len()) };
            let g = RawGemm {
                m: a.m,
                k: a.k,
                n,
                alpha: alpha.to_f64() as f32,
                a: kernel::Lhs::Strips(da, MR * a.k),
                b: Strided { ptr: f32_ptr(p).wrapping_add(j0 * MR), rs: 1, cs: MR as isize },
                beta: beta.to_f64() as f32,
                c: Strided { ptr: f32_mut_ptr(c.as_mut_ptr()), rs: rsc as isize, cs: csc as isize },
            };
            // SAFETY: the CPU has the features of `level`; op(P)'s strips hold rows 0..k of
            // columns j0..j0+n, `MR·pk` apart (the caller's contract); C is borrowed mutably.
            unsafe { kernel::gemm_parts(g, MR * pk, level, kernel::RowSums::NONE) };
        }
        (_, Layout::ColMajor, _) => {
            // SAFETY: columns j0..j0+n of a column-major packing (the caller's contract).
            let cols = unsafe { std::slice::from_raw_parts(p.add(j0 * pm), n * pm) };
            let pv = nalgebra::DMatrixView::from_slice(cols, pm, n);
            gemm_packed(alpha, a, &pv, Trans::No, beta, c);
        }
        _ => {
            // Packings of different layouts (made under different caps), or strips under the
            // portable cap: op(P)'s columns copied out of their strips.
            // SAFETY: columns j0..j0+n of a strip packing (the caller's contract).
            let pv = unsafe { strip_columns(p, pm, pk, j0, n) };
            gemm_packed(alpha, a, &pv, Trans::No, beta, c);
        }
    }
}

/// Columns `j0..j0 + n` of the `m×k` strip packing at `p`, as a column-major matrix.
///
/// # Safety
/// `p` holds an `m×k` strip packing (`⌈m/MR⌉·MR·k` values); columns `j0..j0 + n` of it are not
/// written during the call.
unsafe fn strip_columns<T: Scalar>(p: *const T, m: usize, k: usize, j0: usize, n: usize) -> Mat<T> {
    assert!(j0 + n <= k, "strip_columns: columns {j0}..{} of {k}", j0 + n);
    // SAFETY: (i, j0 + j) is inside the packing.
    Mat::from_fn(m, n, |i, j| unsafe { *p.add(i / MR * MR * k + (j0 + j) * MR + i % MR) })
}

/// `C = alpha·op(A)[:, k0..k0 + kb]·op(B) + beta·C` with `op(A)` from `a` and `kb` the rows of
/// `op(B)`: [`gemm_packed`] on a range of `op(A)`'s columns. Its `k` blocks start at `k0`, so the
/// bits are those of [`gemm`] on `op(A).columns(k0, kb)`. (Both functions split products of
/// more than about 0.3 ms of work across [`parallel`](crate::parallel)'s threads, as [`gemm`]
/// does; a call from inside a part runs on that part's thread.)
///
/// # Panics
/// If the shapes do not agree; the message names them.
pub fn gemm_packed_cols<T, SB, SC>(
    alpha: T,
    a: &PackedLhs<T>,
    k0: usize,
    b: &Matrix<T, Dyn, Dyn, SB>,
    tb: Trans,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Scalar,
    SB: RawStorage<T, Dyn, Dyn>,
    SC: RawStorageMut<T, Dyn, Dyn>,
{
    packed_cols(alpha, a, k0, b, tb, beta, c, None);
}

/// [`gemm_packed_cols`] that also adds the row sums of the columns `k0..` of `op(A)` it reads
/// into `sums` (and into `also`, if given): the bits of
/// [`PackedLhs::add_row_sums_of`]`(k0..k0 + kb, sums, also)` after the product. On the strip
/// kernels each strip's block of columns is summed right after the product read it, from L1 and
/// L2, instead of in a pass of its own (a weight gradient `dW += dA·Xᵀ` and the bias gradient
/// `db += Σ_columns dA` read the same `dA`, which by then has left the caches).
///
/// # Panics
/// If the shapes do not agree, or a sum does not hold one value per row of `op(A)`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_sums<T, SB, SC>(
    alpha: T,
    a: &PackedLhs<T>,
    k0: usize,
    b: &Matrix<T, Dyn, Dyn, SB>,
    tb: Trans,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
    sums: &mut [T],
    also: Option<&mut [T]>,
) where
    T: Scalar,
    SB: RawStorage<T, Dyn, Dyn>,
    SC: RawStorageMut<T, Dyn, Dyn>,
{
    let kb = if tb == Trans::No { b.nrows() } else { b.ncols() };
    assert!(
        k0 + kb <= a.k,
        "gemm_packed_sums: op(A) is {}x{}, columns {k0}.. of it times op(B) of {kb} rows",
        a.m,
        a.k
    );
    assert!(
        sums.len() == a.m && also.as_ref().is_none_or(|b| b.len() == a.m),
        "gemm_packed_sums: {} and {:?} sums for {} rows",
        sums.len(),
        also.as_ref().map(|b| b.len()),
        a.m
    );
    packed_cols(alpha, a, k0, b, tb, beta, c, Some((sums, also)));
}

/// [`gemm_packed_cols`], adding the row sums of the columns of `op(A)` it reads as
/// [`gemm_packed_sums`] says when `sums` is given.
#[allow(clippy::too_many_arguments)]
fn packed_cols<T, SB, SC>(
    alpha: T,
    a: &PackedLhs<T>,
    k0: usize,
    b: &Matrix<T, Dyn, Dyn, SB>,
    tb: Trans,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
    sums: Option<(&mut [T], Option<&mut [T]>)>,
) where
    T: Scalar,
    SB: RawStorage<T, Dyn, Dyn>,
    SC: RawStorageMut<T, Dyn, Dyn>,
{
    let (kb, n) = match tb {
        Trans::No => b.shape(),
        Trans::Yes => (b.ncols(), b.nrows()),
    };
    assert!(
        k0 + kb <= a.k && c.shape() == (a.m, n),
        "gemm_packed: op(A) is {}x{}, columns {k0}.. of it times op(B) {kb}x{n}, C is {}x{}",
        a.m,
        a.k,
        c.nrows(),
        c.ncols()
    );
    match (a.layout, f32_kernel::<T>()) {
        (Layout::ColMajor, _) => {
            let av = nalgebra::DMatrixView::from_slice(a.values(), a.m, a.k);
            gemm(alpha, &av.columns(k0, kb), Trans::No, b, tb, beta, c);
        }
        #[cfg(target_arch = "x86_64")]
        (Layout::Strips, Some(level)) => {
            let (m, k, whole) = (a.m, kb, k0 == 0 && kb == a.k);
            let (rsb, csb) = b.strides();
            let (rsb, csb) = match tb {
                Trans::No => (rsb as isize, csb as isize),
                Trans::Yes => (csb as isize, rsb as isize),
            };
            let (rsc, csc) = c.strides();
            // The layout is only produced when T is f32 (`f32_kernel`).
            let data = &a.values()[k0 * MR..];
            // SAFETY: the same values, as the f32 they are.
            let data = unsafe { std::slice::from_raw_parts(f32_ptr(data.as_ptr()), data.len()) };
            let (alpha, beta) = (alpha.to_f64() as f32, beta.to_f64() as f32);
            let (bp, cp) = (f32_ptr(b.as_ptr()), f32_mut_ptr(c.as_mut_ptr()));
            if whole && n == 1 && (rsb == 1 || k == 1) && (rsc == 1 || m == 1) {
                // SAFETY: one column of k contiguous values in B, of m in C, which is borrowed
                // mutably and so cannot alias B.
                let (x, y) =
                    unsafe { (std::slice::from_raw_parts(bp, k), std::slice::from_raw_parts_mut(cp, m)) };
                gemv::gemv_strips_f32(m, k, data, alpha, x, beta, y);
            } else {
                let g = RawGemm {
                    m,
                    k,
                    n,
                    alpha,
                    a: kernel::Lhs::Strips(data, MR * a.k),
                    b: Strided { ptr: bp, rs: rsb, cs: csb },
                    beta,
                    c: Strided { ptr: cp, rs: rsc as isize, cs: csc as isize },
                };
                let rs = match sums {
                    Some((s, also)) => {
                        let also = also.map_or(std::ptr::null_mut(), |b| f32_mut_ptr(b.as_mut_ptr()));
                        kernel::RowSums(f32_mut_ptr(s.as_mut_ptr()), also)
                    }
                    None => kernel::RowSums::NONE,
                };
                // SAFETY: the CPU has the features of `level`; shapes and strides come from
                // live storage; C and the sums are borrowed mutably.
                unsafe { kernel::gemm_parts(g, 0, level, rs) };
                return;
            }
        }
        _ => {
            // Strips under the portable cap (packed under a higher one): the columns copied out.
            // SAFETY: the packing is borrowed for the call.
            let av = unsafe { strip_columns(a.values().as_ptr(), a.m, a.k, k0, kb) };
            gemm(alpha, &av, Trans::No, b, tb, beta, c);
        }
    }
    // Every other route: the sums in a pass of their own.
    if let Some((s, also)) = sums {
        a.add_row_sums_of(k0..k0 + kb, s, also);
    }
}
