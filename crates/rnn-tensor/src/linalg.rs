//! Matrix products on nalgebra storage.
//!
//! nalgebra's own `gemm` cannot take a transposed operand without copying it, and with a
//! one-column operand it still packs the whole left matrix (about 0.7 GFLOP/s on this project's
//! machine). [`gemm`] reads the strides of any nalgebra matrix or view, so `op(A) = A^T` is free,
//! and sends one-column products to a GEMV written for column-major data.
//!
//! The other products go, for f32 on CPUs with AVX-512 or with AVX2 and FMA (within the cap of
//! [`simd::max_level`](crate::simd::max_level)), to the FMA kernels of `packed` (both operands
//! packed per call into thread-local buffers, large products split across
//! [`parallel`](crate::parallel)'s threads, the same bits for any split and for either kernel);
//! otherwise small ones to a vectorised loop and the rest to matrixmultiply (which chooses its
//! own kernel from the CPU: the cap does not reach it).

use nalgebra::{Dyn, Matrix, RawStorage, RawStorageMut};

use crate::Scalar;

/// Whether an operand of [`gemm`] is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// Use the matrix as stored.
    No,
    /// Use its transpose.
    Yes,
}

/// Floating-point operations of one `m×k` by `k×n` product (for GFLOP/s reports).
pub fn gemm_flops(m: usize, k: usize, n: usize) -> f64 {
    2.0 * m as f64 * k as f64 * n as f64
}

/// Shape and strides of `op(X)`.
#[inline]
fn op_layout<T, S: RawStorage<T, Dyn, Dyn>>(
    x: &Matrix<T, Dyn, Dyn, S>,
    t: Trans,
) -> (usize, usize, isize, isize) {
    let (r, c) = x.shape();
    let (rs, cs) = x.strides();
    match t {
        Trans::No => (r, c, rs as isize, cs as isize),
        Trans::Yes => (c, r, cs as isize, rs as isize),
    }
}

/// A matrix on raw storage: its first element and its row and column strides.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided<P> {
    /// The element (0, 0).
    pub ptr: P,
    /// Distance between consecutive rows.
    pub rs: isize,
    /// Distance between consecutive columns.
    pub cs: isize,
}

impl<P> Strided<P> {
    /// The transposed matrix (the strides swapped).
    pub fn t(self) -> Self {
        Strided { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }
}

/// `C = alpha·A·B + beta·C` on raw storage: `A` is `m×k` (given as `LHS`: strided, or packed),
/// `B` is `k×n`, `C` is `m×n`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawGemm<T, Lhs = Strided<*const T>> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub alpha: T,
    pub a: Lhs,
    pub b: Strided<*const T>,
    pub beta: T,
    pub c: Strided<*mut T>,
}

/// `C = alpha·op(A)·op(B) + beta·C`.
///
/// Shapes: `op(A)` is `m×k`, `op(B)` is `k×n`, `C` is `m×n`; any of them may be views
/// (`columns`, `rows`, ...) of larger matrices. When `beta` is zero, `C` is only written, so
/// it may hold garbage (even NaN) beforehand.
///
/// # Panics
/// If the shapes do not agree; the message names both shapes.
pub fn gemm<T, SA, SB, SC>(
    alpha: T,
    a: &Matrix<T, Dyn, Dyn, SA>,
    ta: Trans,
    b: &Matrix<T, Dyn, Dyn, SB>,
    tb: Trans,
    beta: T,
    c: &mut Matrix<T, Dyn, Dyn, SC>,
) where
    T: Scalar,
    SA: RawStorage<T, Dyn, Dyn>,
    SB: RawStorage<T, Dyn, Dyn>,
    SC: RawStorageMut<T, Dyn, Dyn>,
{
    let (m, k, rsa, csa) = op_layout(a, ta);
    let (kb, n, rsb, csb) = op_layout(b, tb);
    assert!(
        k == kb && c.shape() == (m, n),
        "gemm: op(A) is {m}x{k}, op(B) is {kb}x{n}, C is {}x{}",
        c.nrows(),
        c.ncols()
    );
    if m == 0 || n == 0 {
        return;
    }
    let (rsc, csc) = c.strides();
    let (rsc, csc) = (rsc as isize, csc as isize);
    if k == 0 {
        scale(c, beta);
        return;
    }
    if n == 1 && (rsb == 1 || k == 1) {
        // GEMV: y = alpha·op(A)·x + beta·y with x and y contiguous.
        if rsc == 1 || m == 1 {
            // SAFETY: shapes and strides were read from live nalgebra storage; C is borrowed
            // mutably, so it cannot alias A or B.
            unsafe {
                let x = std::slice::from_raw_parts(b.as_ptr(), k);
                let y = std::slice::from_raw_parts_mut(c.as_mut_ptr(), m);
                gemv(m, k, alpha, a.as_ptr(), rsa, csa, x, beta, y);
            }
            return;
        }
    }
    let raw = RawGemm {
        m,
        k,
        n,
        alpha,
        a: Strided { ptr: a.as_ptr(), rs: rsa, cs: csa },
        b: Strided { ptr: b.as_ptr(), rs: rsb, cs: csb },
        beta,
        c: Strided { ptr: c.as_mut_ptr(), rs: rsc, cs: csc },
    };
    // SAFETY (all three routes): shapes and strides were read from live nalgebra storage; C is
    // borrowed mutably, so it cannot alias A or B.
    // f32 on AVX-512 or AVX2 + FMA: the kernels of `packed`, faster than the two below at every
    // size (AVX-512 at 32×32×32: 140 GFLOP/s, gemm_small 40).
    if unsafe { crate::packed::gemm_strided(raw) } {
        return;
    }
    if m * k * n <= SMALL_GEMM_MACS && unsafe { gemm_small(raw) } {
        return;
    }
    // matrixmultiply handles every stride combination.
    unsafe {
        T::gemm_raw(m, k, n, alpha, raw.a.ptr, rsa, csa, raw.b.ptr, rsb, csb, beta, raw.c.ptr, rsc, csc)
    };
}

fn scale<T: Scalar, SC: RawStorageMut<T, Dyn, Dyn>>(c: &mut Matrix<T, Dyn, Dyn, SC>, beta: T) {
    for j in 0..c.ncols() {
        for i in 0..c.nrows() {
            let v = c[(i, j)];
            c[(i, j)] = if beta == T::ZERO { T::ZERO } else { beta * v };
        }
    }
}

/// Compiles a small-product kernel twice, as is and with AVX2 enabled, and picks the AVX2
/// build at run time when the CPU has it and the cap allows it (the checks are cached loads). FMA is deliberately not
/// enabled: every lane then performs the same multiplies and adds in the same order as the
/// baseline build, so results are bit-identical whichever build runs.
macro_rules! avx2_dispatch {
    ($(#[$doc:meta])* fn $name:ident / $avx2:ident => $imp:ident ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $(#[$doc])*
        unsafe fn $name<T: Scalar>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if crate::simd::level() >= crate::simd::Level::Avx2 {
                // SAFETY: the CPU supports AVX2; the rest is the caller's contract.
                return unsafe { $avx2($($arg),*) };
            }
            // SAFETY: the caller's contract.
            unsafe { $imp($($arg),*) }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2<T: Scalar>($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: the caller's contract.
            unsafe { $imp($($arg),*) }
        }
    };
}

avx2_dispatch! {
    /// [`gemm_small_impl`], in its AVX2 build where available.
    ///
    /// # Safety
    /// As [`gemm_small_impl`].
    fn gemm_small / gemm_small_avx2 => gemm_small_impl(g: RawGemm<T>) -> bool
}

avx2_dispatch! {
    /// [`gemv_impl`], in its AVX2 build where available.
    ///
    /// # Safety
    /// As [`gemv_impl`].
    fn gemv / gemv_avx2 => gemv_impl(
        m: usize, k: usize, alpha: T, a: *const T, rs: isize, cs: isize, x: &[T], beta: T, y: &mut [T],
    )
}

/// Products of at most this many multiply-adds skip matrixmultiply: at these sizes its
/// packing, and the packing buffer it allocates on every call, cost more than the arithmetic
/// (the recurrent cells' batch-1 training steps are made of such products).
const SMALL_GEMM_MACS: usize = 32 * 32 * 32;

/// `C = alpha·op(A)·op(B) + beta·C` for small products, one column of `C` at a time, if the
/// layout allows a vectorisable loop; returns `false` (having done nothing) otherwise.
///
/// The problem is oriented so that a column of `C` is contiguous, using `Cᵀ = op(B)ᵀ·op(A)ᵀ`
/// if needed; then each column is either a sum of scaled columns of `A` (AXPYs, when `A`'s
/// columns are contiguous) or a dot product per row of `A` (when `A`'s rows and `B`'s columns
/// are contiguous).
///
/// # Safety
/// Pointers valid for the shapes and strides; `c` must not alias `a` or `b`.
#[inline(always)]
unsafe fn gemm_small_impl<T: Scalar>(g: RawGemm<T>) -> bool {
    let RawGemm { m, k, n, alpha, a, b, beta, c } = g;
    let Strided { ptr: a, rs: rsa, cs: csa } = a;
    let Strided { ptr: b, rs: rsb, cs: csb } = b;
    let Strided { ptr: c, rs: rsc, cs: csc } = c;
    #[derive(Clone, Copy, PartialEq)]
    enum Kernel {
        Axpy,
        Dot,
    }
    // The kernel for one orientation (C with `m` rows and row stride `rsc`), if its layout
    // allows one. AXPYs need long contiguous columns of A; with fewer than 4 rows the
    // per-column updates are scalar and a dot product is better when the layout allows it.
    let kernel = |m: usize, rsa: isize, csa: isize, rsb: isize, rsc: isize, short_axpy: bool| {
        if !(rsc == 1 || m == 1) {
            None
        } else if (rsa == 1 || m == 1) && (m >= 4 || short_axpy) {
            Some(Kernel::Axpy)
        } else if k == 1 || (csa == 1 && rsb == 1) {
            Some(Kernel::Dot)
        } else {
            None
        }
    };
    let as_is = |short| kernel(m, rsa, csa, rsb, rsc, short);
    let flipped = |short| kernel(n, csb, rsb, csa, csc, short);
    let (m, n, a, rsa, csa, b, rsb, csb, csc, kern) =
        match (as_is(false), flipped(false), as_is(true), flipped(true)) {
            (Some(kern), ..) | (None, None, Some(kern), _) => (m, n, a, rsa, csa, b, rsb, csb, csc, kern),
            // Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands and every pair of strides.
            (None, Some(kern), ..) | (None, None, None, Some(kern)) => {
                (n, m, b, csb, rsb, a, csa, rsa, rsc, kern)
            }
            (None, None, None, None) => return false,
        };
    for j in 0..n {
        // SAFETY: column j of C holds m contiguous elements (rsc == 1 or m == 1 after orienting).
        let y = unsafe { std::slice::from_raw_parts_mut(c.offset(j as isize * csc), m) };
        match kern {
            Kernel::Axpy => {
                // SAFETY: column p of op(A) holds m contiguous elements at a + p·csa; (p, j) is
                // inside op(B).
                unsafe {
                    axpy_columns(
                        m,
                        k,
                        alpha,
                        a,
                        csa,
                        |p| *b.offset(p as isize * rsb + j as isize * csb),
                        beta,
                        y,
                    )
                };
            }
            Kernel::Dot => {
                // SAFETY: column j of op(B) holds k contiguous elements.
                let x = unsafe { std::slice::from_raw_parts(b.offset(j as isize * csb), k) };
                for (i, yi) in y.iter_mut().enumerate() {
                    // SAFETY: row i of op(A) holds k contiguous elements.
                    let row = unsafe { std::slice::from_raw_parts(a.offset(i as isize * rsa), k) };
                    let v = alpha * dot(row, x);
                    *yi = if beta == T::ZERO { v } else { v + beta * *yi };
                }
            }
        }
    }
    true
}

/// `y = alpha·Σ_p x(p)·A[:, p] + beta·y` for an `m×k` matrix `A` whose columns are contiguous
/// (column `p` starts at `a + p·cs`); with `beta = 0`, `y` is only written.
///
/// The columns are taken in panels of 8 and streamed top to bottom, each panel adding
/// `Σ_l x(p+l)·A[i, p+l]` to `y[i]`: every column is read once, sequentially (eight streams the
/// prefetcher follows), and `y` is read and written once per panel from L1 (rows go in chunks
/// of 2048). Reading a large matrix in row blocks across all its columns instead jumps a whole
/// column (8 KB for 4H = 2048) per load and ran at a tenth of the memory bandwidth.
///
/// # Safety
/// `a` must be valid for the shape and stride.
#[inline(always)]
unsafe fn axpy_columns<T: Scalar>(
    m: usize,
    k: usize,
    alpha: T,
    a: *const T,
    cs: isize,
    x: impl Fn(usize) -> T,
    beta: T,
    y: &mut [T],
) {
    const P: usize = 8;
    const ROWS: usize = crate::packed::COLUMN_ROWS;
    debug_assert_eq!(y.len(), m);
    if beta == T::ZERO {
        y.fill(T::ZERO);
    } else if beta != T::ONE {
        y.iter_mut().for_each(|v| *v *= beta);
    }
    for (blk, yb) in y.chunks_mut(ROWS).enumerate() {
        let (i0, len) = (blk * ROWS, yb.len());
        // SAFETY: rows i0..i0+len of column p are inside A.
        let col =
            |p: usize| unsafe { std::slice::from_raw_parts(a.offset(p as isize * cs + i0 as isize), len) };
        let mut p = 0;
        while p + P <= k {
            let s: [T; P] = std::array::from_fn(|l| alpha * x(p + l));
            let c: [&[T]; P] = std::array::from_fn(|l| col(p + l));
            for (i, yi) in yb.iter_mut().enumerate() {
                // SAFETY: every column slice holds `len` elements and i < len.
                let e = |l: usize| s[l] * unsafe { *c[l].get_unchecked(i) };
                // y_i += Σ_l s_l·A[i, p+l], summed in a fixed order
                *yi += ((e(0) + e(1)) + (e(2) + e(3))) + ((e(4) + e(5)) + (e(6) + e(7)));
            }
            p += P;
        }
        for q in p..k {
            let s = alpha * x(q);
            for (yi, &v) in yb.iter_mut().zip(col(q)) {
                *yi += s * v;
            }
        }
    }
}

/// `y = alpha·A·x + beta·y` for an `m×k` matrix `A` with strides `(rs, cs)`.
///
/// Two kernels cover the layouts that occur: unit row stride (A's columns are contiguous:
/// an AXPY per column) and unit column stride (A's rows are contiguous: a dot product per row,
/// with eight independent accumulators so the compiler can vectorise it).
///
/// # Safety
/// `a` must be valid for the shape and strides.
#[inline(always)]
unsafe fn gemv_impl<T: Scalar>(
    m: usize,
    k: usize,
    alpha: T,
    a: *const T,
    rs: isize,
    cs: isize,
    x: &[T],
    beta: T,
    y: &mut [T],
) {
    if beta == T::ZERO {
        y.fill(T::ZERO);
    } else if beta != T::ONE {
        y.iter_mut().for_each(|v| *v *= beta);
    }
    if rs == 1 {
        // f32 on AVX-512: the same sums in a kernel of its own.
        if let (Some(af), Some(xf), Some(yf)) =
            (T::as_f32_ptr(a), T::as_f32_ptr(x.as_ptr()), T::as_f32_mut_ptr(y.as_mut_ptr()))
        {
            // SAFETY: T is f32 (the pointers are the same values); column j holds m contiguous
            // elements, x k and y m.
            let done = unsafe {
                let (xf, yf) = (std::slice::from_raw_parts(xf, k), std::slice::from_raw_parts_mut(yf, m));
                crate::packed::gemv_columns_f32(alpha.to_f64() as f32, af, cs, xf, yf)
            };
            if done {
                return;
            }
        }
        // SAFETY: column j holds m contiguous elements.
        unsafe { axpy_columns(m, k, alpha, a, cs, |j| x[j], T::ONE, y) };
    } else if cs == 1 {
        for (i, yi) in y.iter_mut().enumerate() {
            // SAFETY: row i holds k contiguous elements.
            let row = unsafe { std::slice::from_raw_parts(a.offset(i as isize * rs), k) };
            *yi += alpha * dot(row, x);
        }
    } else {
        for (i, yi) in y.iter_mut().enumerate() {
            let mut acc = T::ZERO;
            for (j, &xj) in x.iter().enumerate() {
                // SAFETY: (i, j) is inside the matrix.
                acc += unsafe { *a.offset(i as isize * rs + j as isize * cs) } * xj;
            }
            *yi += alpha * acc;
        }
    }
}

/// Dot product with eight independent partial sums (vectorisable, deterministic).
#[inline(always)]
pub(crate) fn dot<T: Scalar>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = T::ZERO;
    for (&x, &y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use crate::Mat;

    fn naive(a: &Mat<f64>, ta: Trans, b: &Mat<f64>, tb: Trans) -> Mat<f64> {
        let a = if ta == Trans::Yes { a.transpose() } else { a.clone() };
        let b = if tb == Trans::Yes { b.transpose() } else { b.clone() };
        &a * &b
    }

    #[test]
    fn gemm_matches_naive_for_every_transpose_and_gemv() {
        let mut rng = Rng::seed_from(7);
        // Small products take gemm_small, (40, 37, 35) matrixmultiply.
        for &(m, k, n) in
            &[(5, 3, 4), (17, 9, 1), (1, 8, 6), (33, 20, 1), (4, 1, 1), (16, 7, 16), (1, 16, 8), (40, 37, 35)]
        {
            for ta in [Trans::No, Trans::Yes] {
                for tb in [Trans::No, Trans::Yes] {
                    let a_shape = if ta == Trans::No { (m, k) } else { (k, m) };
                    let b_shape = if tb == Trans::No { (k, n) } else { (n, k) };
                    let a = Mat::from_fn(a_shape.0, a_shape.1, |_, _| rng.uniform(-1.0, 1.0));
                    let b = Mat::from_fn(b_shape.0, b_shape.1, |_, _| rng.uniform(-1.0, 1.0));
                    let c0 = Mat::from_fn(m, n, |_, _| rng.uniform(-1.0, 1.0));
                    let mut c = c0.clone();
                    gemm(0.5, &a, ta, &b, tb, 2.0, &mut c);
                    let want = naive(&a, ta, &b, tb) * 0.5 + c0 * 2.0;
                    let err = (&c - &want).abs().max();
                    assert!(err < 1e-12, "({m},{k},{n}) {ta:?} {tb:?}: err {err}");
                }
            }
        }
    }

    #[test]
    fn avx2_build_is_bit_identical() {
        // Only meaningful where the dispatcher would pick the AVX2 build.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            let mut rng = Rng::seed_from(12);
            for &(m, k, n) in &[(16, 7, 16), (19, 5, 3), (1, 16, 8), (16, 16, 1)] {
                let a = Mat::from_fn(m, k, |_, _| rng.uniform(-1.0, 1.0) as f32);
                let b = Mat::from_fn(k, n, |_, _| rng.uniform(-1.0, 1.0) as f32);
                let c0 = Mat::from_fn(m, n, |_, _| rng.uniform(-1.0, 1.0) as f32);
                let (mut c1, mut c2) = (c0.clone(), c0.clone());
                // SAFETY: the matrices are live and of the given shapes, C is a separate buffer.
                unsafe {
                    let raw = |c: &mut Mat<f32>| RawGemm {
                        m,
                        k,
                        n,
                        alpha: 0.7,
                        a: Strided { ptr: a.as_ptr(), rs: 1, cs: m as isize },
                        b: Strided { ptr: b.as_ptr(), rs: 1, cs: k as isize },
                        beta: 1.3,
                        c: Strided { ptr: c.as_mut_ptr(), rs: 1, cs: m as isize },
                    };
                    let base = gemm_small_impl(raw(&mut c1));
                    let avx = gemm_small_avx2(raw(&mut c2));
                    assert!(base && avx);
                }
                let bits = |c: &Mat<f32>| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&c1), bits(&c2), "({m},{k},{n})");
            }
        }
    }

    /// The column-major GEMV (`n = 1`) in f32 gives the same bits on every route: its AVX-512
    /// kernel, the AVX2 and portable builds of `axpy_columns` (this thread capped), and the strip
    /// GEMV on the same matrix packed. Rows not a multiple of 16 or 32 and more than one chunk
    /// of `COLUMN_ROWS`, `k` not a multiple of 8, `A` a view whose columns lie further apart
    /// than `m`, `alpha` and `beta` not 1.
    #[test]
    fn f32_gemv_same_bits_on_every_route() {
        use crate::simd::{Level, TestCap};
        let mut rng = Rng::seed_from(21);
        for &(m, k) in &[(1usize, 1usize), (15, 8), (33, 9), (100, 77), (1024, 256), (2048 + 47, 19)] {
            let big = Mat::<f32>::from_fn(m + 5, k, |_, _| rng.uniform(-1.0, 1.0) as f32);
            let a = big.rows(3, m);
            let x = Mat::<f32>::from_fn(k, 1, |_, _| rng.uniform(-1.0, 1.0) as f32);
            let y0 = Mat::<f32>::from_fn(m, 1, |_, _| rng.uniform(-1.0, 1.0) as f32);
            for &(alpha, beta) in &[(1.0f32, 0.0f32), (1.0, 1.0), (-0.75, 1.5)] {
                let run = |level: Level| {
                    let _cap = TestCap::set(level);
                    let mut y = y0.clone();
                    gemm(alpha, &a, Trans::No, &x, Trans::No, beta, &mut y);
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let best = run(Level::Avx512);
                assert_eq!(best, run(Level::Avx2), "({m},{k}) alpha {alpha} beta {beta}: AVX2");
                assert_eq!(best, run(Level::Baseline), "({m},{k}) alpha {alpha} beta {beta}: portable");
                let mut packed = vec![0.0f32; m.div_ceil(crate::packed::MR) * crate::packed::MR * k];
                crate::packed::pack_rows(1, a.clone_owned().as_slice(), m, k, m, |i| i, &mut packed);
                let mut y = y0.as_slice().to_vec();
                crate::packed::gemv_strips_f32(m, k, &packed, alpha, x.as_slice(), beta, &mut y);
                let strips: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                assert_eq!(best, strips, "({m},{k}) alpha {alpha} beta {beta}: strips");
            }
        }
    }

    #[test]
    fn gemm_into_column_block_of_larger_matrix() {
        let mut rng = Rng::seed_from(3);
        let a = Mat::from_fn(6, 4, |_, _| rng.uniform(-1.0, 1.0));
        let b = Mat::from_fn(4, 3, |_, _| rng.uniform(-1.0, 1.0));
        let mut big = Mat::from_element(6, 9, f64::NAN);
        gemm(1.0, &a, Trans::No, &b, Trans::No, 0.0, &mut big.columns_mut(3, 3));
        let want = &a * &b;
        assert!((big.columns(3, 3) - want).abs().max() < 1e-12);
        assert!(big.column(0)[0].is_nan(), "gemm wrote outside its block");
    }
}
