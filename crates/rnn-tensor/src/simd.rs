//! Run-time selection of an AVX-512 or AVX2 build for the pointwise loops.
//!
//! [`dispatch_avx2!`](crate::dispatch_avx2) wraps a (safe, `#[inline(always)]`) loop function in
//! a function of the same signature that runs a copy compiled with AVX-512 (`avx512f`, `bw`,
//! `dq`, `vl`) when the CPU has it, else a copy compiled with AVX2, else the baseline build (the
//! checks are cached loads). With the branch-free [`Scalar::exp_v`](crate::Scalar::exp_v) /
//! [`Scalar::tanh_v`](crate::Scalar::tanh_v), an activation loop then runs sixteen (or eight)
//! `f32` lanes at a time.
//!
//! Every build performs the same operations in the same order and gives the same bits: Rust
//! never contracts `a*b + c` into a fused multiply-add (even where the AVX-512 build could), and
//! the loops use no horizontal reductions whose order would depend on the vector width.
//! [`set_max_level`] caps the build used, so tests can compare them.

use std::sync::atomic::{AtomicU8, Ordering};

/// A build of the dispatched loops, by instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The baseline build (x86-64: SSE2).
    Baseline = 0,
    /// AVX2.
    Avx2 = 1,
    /// AVX-512 (`avx512f`, `avx512bw`, `avx512dq`, `avx512vl`).
    Avx512 = 2,
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Avx512 as u8);

/// Caps the build [`dispatch_avx2!`](crate::dispatch_avx2) functions use (default: the best the
/// CPU has). For tests and measurements: every build gives the same results.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The cap set by [`set_max_level`].
pub fn max_level() -> Level {
    match MAX_LEVEL.load(Ordering::Relaxed) {
        0 => Level::Baseline,
        1 => Level::Avx2,
        _ => Level::Avx512,
    }
}

/// The build a dispatched function runs now: the best the CPU has, within [`max_level`].
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let cap = MAX_LEVEL.load(Ordering::Relaxed);
        if cap >= Level::Avx512 as u8
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Level::Avx512;
        }
        if cap >= Level::Avx2 as u8 && std::arch::is_x86_feature_detected!("avx2") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Defines `fn $name<T: Scalar>(args) -> ret` that calls `$imp(args)` through an AVX-512 or
/// AVX2 build when the CPU supports it (see the [module docs](crate::simd)). `$imp` should be
/// `#[inline(always)]` so that its body is compiled with the features enabled.
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
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
                unsafe fn avx512<$t: $crate::Scalar>($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<$t: $crate::Scalar>($($arg: $ty),*) $(-> $ret)? {
                    $imp($($arg),*)
                }
                match $crate::simd::level() {
                    // SAFETY: `level` reports AVX-512 only when the CPU has all four features.
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: the CPU supports AVX2, the only requirement of `avx2`.
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Baseline => {}
                }
            }
            $imp($($arg),*)
        }
    };
}
