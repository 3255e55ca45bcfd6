use std::fmt::{Debug, Display};

mod sealed {
    /// Seals [`Scalar`](super::Scalar): the kernels rely on it being `f32` or `f64` only.
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// The floating-point type every layer and optimizer is generic over: `f32` or `f64`.
///
/// It is `nalgebra::RealField` (so `exp`, `tanh`, `sqrt`, ... are available in generic code)
/// plus conversions and the raw GEMM kernel for the type. The trait is sealed: the kernels choose
/// their route per type at compile time through it ([`Scalar::as_f32_ptr`]: the AVX-512 f32
/// route for `f32`, matrixmultiply for `f64`), never by inspecting types at run time.
pub trait Scalar:
    sealed::Sealed + nalgebra::RealField + Copy + Default + Debug + Display + Send + Sync + PartialOrd + 'static
{
    /// `"f32"` or `"f64"`, as used in checkpoints and on the command line.
    const NAME: &'static str;
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Machine epsilon.
    const EPS: Self;

    /// Converts from `f64` (rounding to nearest for `f32`).
    fn cast(v: f64) -> Self;
    /// Converts to `f64` exactly.
    fn to_f64(self) -> f64;
    /// Converts a count.
    fn from_usize(n: usize) -> Self {
        Self::cast(n as f64)
    }

    /// `e^x`, in a form that loops over slices vectorise: for `f32` a branch-free polynomial
    /// within 2 ulp (see `fastmath`), for `f64` libm's `exp`.
    fn exp_v(self) -> Self;
    /// `tanh(x)`, vectorisable as [`Scalar::exp_v`]: for `f32` within 2 ulp, for `f64` libm.
    fn tanh_v(self) -> Self;

    /// `Some(p)` as a pointer to `f32` when `Self` is `f32` (the identity), `None` for `f64`:
    /// how the f32-only kernels (strips, the AVX-512 micro-kernel, the strip GEMV) reach their
    /// operands from generic code. Resolved at compile time per type.
    fn as_f32_ptr(p: *const Self) -> Option<*const f32>;
    /// [`Scalar::as_f32_ptr`] for a mutable pointer.
    fn as_f32_mut_ptr(p: *mut Self) -> Option<*mut f32>;

    /// Raw column-major GEMM with arbitrary strides: `C = alpha·A·B + beta·C`,
    /// `A` is `m×k`, `B` is `k×n`, `C` is `m×n`.
    ///
    /// # Safety
    /// The pointers must be valid for the given shapes and strides, `c` must not alias `a` or `b`.
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

macro_rules! impl_scalar {
    ($t:ty, $name:literal, $gemm:path, $exp:path, $tanh:path, $f32:expr) => {
        impl Scalar for $t {
            const NAME: &'static str = $name;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const EPS: Self = <$t>::EPSILON;

            #[inline]
            fn cast(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp_v(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn tanh_v(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn as_f32_ptr(p: *const Self) -> Option<*const f32> {
                #[allow(clippy::redundant_closure_call)]
                ($f32)(p)
            }
            #[inline(always)]
            fn as_f32_mut_ptr(p: *mut Self) -> Option<*mut f32> {
                #[allow(clippy::redundant_closure_call)]
                ($f32)(p as *const Self).map(|q| q as *mut f32)
            }
            #[inline]
            unsafe fn gemm_raw(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: forwarded from the caller's contract.
                unsafe { $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}

impl_scalar!(
    f32,
    "f32",
    matrixmultiply::sgemm,
    crate::fastmath::exp_f32,
    crate::fastmath::tanh_f32,
    |p: *const f32| Some(p)
);
impl_scalar!(f64, "f64", matrixmultiply::dgemm, f64::exp, f64::tanh, |_: *const f64| None::<*const f32>);
