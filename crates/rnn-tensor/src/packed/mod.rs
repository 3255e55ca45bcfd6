//! A left operand packed once and multiplied many times: `C = alpha·op(A)·B + beta·C` where
//! `op(A)` is fixed across calls, as `W_hh` is across the `T` steps of a recurrent layer.
//!
//! General-purpose GEMMs re-pack both operands on every call; for the per-step product of a
//! recurrent layer that is a fifth of the time (`W_hh` is re-packed `T` times). [`PackedLhs`]
//! packs `op(A)` once; [`gemm_packed`] then reads it as is.
//!
//! Layout (f32 on CPUs with AVX-512): strips of [`MR`] rows, the last one zero-padded; strip `s`
//! is stored `k`-major, `data[s·MR·k + p·MR + r] = op(A)[s·MR + r, p]`. Other element types and
//! CPUs keep a column-major copy of `op(A)` and use [`gemm`].

mod gemv;

pub use gemv::{gemv_strips_f32, gemv_strips_f32_ordered, PREFETCH_AHEAD};

use nalgebra::{Dyn, Matrix, RawStorage, RawStorageMut};

use crate::{gemm, Scalar, Trans};

/// Rows per strip of the packed f32 layout.
#[allow(dead_code)]
pub const MR: usize = 32;

/// How the data of a [`PackedLhs`] is laid out.
#[allow(dead_code)] // `Strips` is produced by the f32 AVX-512 packing
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// A column-major copy of `op(A)` (`m×k`, column stride `m`).
    ColMajor,
    /// Strips of [`MR`] rows, `k`-major within a strip (see the module docs).
    Strips,
}

/// `op(A)`, packed for repeated products with [`gemm_packed`].
#[derive(Clone, Debug)]
pub struct PackedLhs<T> {
    m: usize,
    k: usize,
    layout: Layout,
    data: Vec<T>,
}

impl<T: Scalar> Default for PackedLhs<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Scalar> PackedLhs<T> {
    /// An empty packing (0×0) whose buffer [`pack`](Self::pack) fills and reuses.
    pub fn new() -> Self {
        PackedLhs { m: 0, k: 0, layout: Layout::ColMajor, data: Vec::new() }
    }

    /// Packs `op(a)`, reusing this value's buffer.
    pub fn pack<S: RawStorage<T, Dyn, Dyn>>(&mut self, a: &Matrix<T, Dyn, Dyn, S>, ta: Trans) {
        let (m, k) = match ta {
            Trans::No => a.shape(),
            Trans::Yes => (a.ncols(), a.nrows()),
        };
        let at = |i: usize, p: usize| match ta {
            Trans::No => a[(i, p)],
            Trans::Yes => a[(p, i)],
        };
        self.m = m;
        self.k = k;
        self.layout = Layout::ColMajor;
        self.data.clear();
        self.data.reserve(m * k);
        for p in 0..k {
            for i in 0..m {
                self.data.push(at(i, p));
            }
        }
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
            let av = nalgebra::DMatrixView::from_slice(&a.data, a.m, a.k);
            gemm(alpha, &av, Trans::No, b, tb, beta, c);
        }
        Layout::Strips => unreachable!("strip layout is only produced for f32 with AVX-512"),
    }
}
