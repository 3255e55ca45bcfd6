//! Run-time selection of an AVX2 build for the pointwise loops.
//!
//! [`dispatch_avx2!`](crate::dispatch_avx2) wraps a (safe, `#[inline(always)]`) loop function in
//! a function of the same signature that runs a copy compiled with AVX2 enabled when the CPU has
//! it (the check is a cached load) and the baseline build otherwise. With the branch-free
//! [`Scalar::exp_v`](crate::Scalar::exp_v) / [`Scalar::tanh_v`](crate::Scalar::tanh_v), an
//! activation loop then runs eight `f32` lanes at a time. FMA is not enabled, so both builds
//! perform the same operations in the same order and give the same bits.

/// Defines `fn $name<T: Scalar>(args) -> ret` that calls `$imp(args)` through an AVX2 build when
/// the CPU supports it. `$imp` should be `#[inline(always)]` so that its body is compiled with
/// AVX2 enabled.
///
/// ```
/// #[inline(always)]
/// fn double_impl<T: rnn_tensor::Scalar>(x: &mut [T]) {
///     x.iter_mut().for_each(|v| *v += *v);
/// }
/// rnn_tensor::dispatch_avx2! {
///     /// Doubles every element.
///     pub fn double<T>(x: &mut [T]) => double_impl
/// }
/// let mut v = [1.0f32, 2.0];
/// double(&mut v);
/// assert_eq!(v, [2.0, 4.0]);
/// ```
#[macro_export]
macro_rules! dispatch_avx2 {
    ($(#[$doc:meta])* $vis:vis fn $name:ident<$t:ident>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $imp:path) => {
        $(#[$doc])*
        $vis fn $name<$t: $crate::Scalar>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<$t: $crate::Scalar>($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                if ::std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2, the only requirement of `avx2`.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}
