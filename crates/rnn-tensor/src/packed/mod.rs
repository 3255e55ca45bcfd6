//! A left operand packed once and multiplied many times: `C = alpha·op(A)·B + beta·C` where
//! `op(A)` is fixed across calls, as `W_hh` is across the `T` steps of a recurrent layer.
//!
//! General-purpose GEMMs re-pack both operands on every call; for the per-step product of a
//! recurrent layer that is a fifth of the time (`W_hh` is re-packed `T` times). [`PackedLhs`]
//! packs `op(A)` once; [`gemm_packed`] then reads it as is.
//!
//! Layout (f32 on CPUs with AVX-512): strips of [`MR`] rows, the last one zero-padded; strip `s`
//! is stored `k`-major, `data[s·MR·k + p·MR + r] = op(A)[s·MR + r, p]`, starting on a 64-byte
//! boundary. Other element types and CPUs keep a column-major copy of `op(A)` and use [`gemm`].
//!
//! With the strip layout, products with one column go to a GEMV over the strips
//! (`gemv::gemv_strips_f32`) and the others to the AVX-512 kernel of `kernel.rs` (a 32 × 12
//! FMA micro-kernel), whose arithmetic does not depend on the shape of the call: each element of
//! `C` is one FMA chain over `p` per block of 256 values of `k` (blocks counted from 0), combined
//! as `c ← fma(alpha, acc, beta·c)`. So computing `C` whole, by blocks of its columns (for
//! example one per thread, as long as each block has two columns or more) or of its rows, or
//! through [`gemm`] (which uses the same kernel for f32 on these CPUs) gives the same bits. With
//! `alpha = 1` and `beta` 0 or 1 they are also matrixmultiply's bits on these CPUs (its AVX-512
//! kernel sums the same way).

mod gemv;
#[cfg(target_arch = "x86_64")]
pub(crate) mod kernel;
#[cfg(test)]
mod tests;

use std::any::TypeId;

pub use gemv::{gemv_strips_f32, gemv_strips_f32_ordered, PREFETCH_AHEAD};

use nalgebra::{Dyn, Matrix, RawStorage, RawStorageMut};

use crate::linalg::{RawGemm, Strided};
use crate::{gemm, Scalar, Trans};

/// Rows per strip of the packed f32 layout.
pub const MR: usize = 32;

/// Whether `T` is `f32` and the CPU has AVX-512F: the condition for the strip layout and the
/// AVX-512 kernel (the feature check is a cached load; the type check folds at compile time).
#[inline]
pub(crate) fn f32_avx512<T: 'static>() -> bool {
    #[cfg(test)]
    if tests::PORTABLE.get() {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C = alpha·A·B + beta·C` through the AVX-512 kernel with per-call packing, for `T = f32`.
/// Returns `false`, having done nothing, unless [`f32_avx512`] holds.
///
/// # Safety
/// Pointers valid for the shapes and strides; `C` does not alias `A` or `B`.
pub(crate) unsafe fn gemm_strided<T: Scalar>(g: RawGemm<T>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if f32_avx512::<T>() {
        let f = |x: Strided<*const T>| Strided { ptr: x.ptr as *const f32, rs: x.rs, cs: x.cs };
        let g = RawGemm {
            m: g.m,
            k: g.k,
            n: g.n,
            alpha: g.alpha.to_f64() as f32,
            a: f(g.a),
            b: f(g.b),
            beta: g.beta.to_f64() as f32,
            c: Strided { ptr: g.c.ptr as *mut f32, rs: g.c.rs, cs: g.c.cs },
        };
        // SAFETY: T is f32, so the casts are identities; AVX-512F is present; the rest is the
        // caller's contract.
        unsafe { kernel::gemm_strided(g) };
        return true;
    }
    let _ = g;
    false
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
            Layout::Strips => kernel::cache_line_offset(data.as_ptr() as *const f32),
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
        if f32_avx512::<T>() {
            let (rs, cs) = a.strides();
            let (rs, cs) = match ta {
                Trans::No => (rs as isize, cs as isize),
                Trans::Yes => (cs as isize, rs as isize),
            };
            let len = m.div_ceil(MR) * MR * k;
            // 16 spare values (64 bytes of f32) to start the strips on a cache line.
            self.data.resize(len + 16, T::ZERO);
            self.off = kernel::cache_line_offset(self.data.as_ptr() as *const f32);
            self.layout = Layout::Strips;
            // SAFETY: T is f32 (`f32_avx512`) and the CPU has AVX-512F; the strides were read
            // from `a`'s storage; the slice holds `len` values.
            unsafe {
                let out = &mut self.data[self.off..self.off + len];
                let out = std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut f32, len);
                kernel::pack_strips(m, k, a.as_ptr() as *const f32, rs, cs, out)
            };
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
    match a.layout {
        Layout::ColMajor => {
            let av = nalgebra::DMatrixView::from_slice(a.values(), a.m, a.k);
            gemm(alpha, &av, Trans::No, b, tb, beta, c);
        }
        #[cfg(target_arch = "x86_64")]
        Layout::Strips => {
            let (m, k) = (a.m, a.k);
            let (kb, n) = match tb {
                Trans::No => b.shape(),
                Trans::Yes => (b.ncols(), b.nrows()),
            };
            assert!(
                k == kb && c.shape() == (m, n),
                "gemm_packed: op(A) is {m}x{k}, op(B) is {kb}x{n}, C is {}x{}",
                c.nrows(),
                c.ncols()
            );
            let (rsb, csb) = b.strides();
            let (rsb, csb) = match tb {
                Trans::No => (rsb as isize, csb as isize),
                Trans::Yes => (csb as isize, rsb as isize),
            };
            let (rsc, csc) = c.strides();
            // The layout is only produced when T is f32 (`f32_avx512`), so these casts are
            // identities.
            debug_assert!(TypeId::of::<T>() == TypeId::of::<f32>());
            let data = a.values();
            // SAFETY: T is f32 (above).
            let data = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f32, data.len()) };
            let (alpha, beta) = (alpha.to_f64() as f32, beta.to_f64() as f32);
            let (bp, cp) = (b.as_ptr() as *const f32, c.as_mut_ptr() as *mut f32);
            if n == 1 && (rsb == 1 || k == 1) && (rsc == 1 || m == 1) {
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
                    a: kernel::Lhs::Strips(data),
                    b: Strided { ptr: bp, rs: rsb, cs: csb },
                    beta,
                    c: Strided { ptr: cp, rs: rsc as isize, cs: csc as isize },
                };
                // SAFETY: the layout exists only where AVX-512F was detected; shapes and strides
                // come from live storage; C is borrowed mutably.
                unsafe { kernel::gemm_f32(g) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Layout::Strips => unreachable!("strip layout is only produced for f32 with AVX-512"),
    }
}
