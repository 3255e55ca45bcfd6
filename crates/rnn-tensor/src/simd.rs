//! Run-time selection of an AVX-512 or AVX2 build, and the one cap on every kernel.
//!
//! [`dispatch_avx2!`](crate::dispatch_avx2) wraps a (safe, `#[inline(always)]`) loop function in
//! a function of the same signature that runs a copy compiled with AVX-512 (`avx512f`, `bw`,
//! `dq`, `vl`) when the CPU has it, else a copy compiled with AVX2, else the baseline build (the
//! checks are cached loads). With the branch-free [`Scalar::exp_v`](crate::Scalar::exp_v) /
//! [`Scalar::tanh_v`](crate::Scalar::tanh_v), an activation loop then runs sixteen (or eight)
//! `f32` lanes at a time.
//!
//! Every build performs the same operations in the same order and gives the same bits: Rust
//! never contracts `a*b + c` into a fused multiply-add, and where a loop asks for one
//! (`mul_add`, as the polynomials of `fastmath` do) every build computes it rounded once: the
//! AVX-512 and AVX2 builds with the FMA instruction (the AVX2 build requires FMA, as every CPU
//! with AVX2 but a few of 2013 has it), the baseline build with libm's `fmaf`, slowly but
//! exactly. The loops use no horizontal reductions whose order would depend on the vector width.
//!
//! **The cap.** [`max_level`] caps every kernel of the crate, not only these loops: the f32
//! GEMM's micro-kernel (AVX-512, else AVX2 with FMA, else the column-major copy and
//! matrixmultiply), the batch-1 strip GEMV (its AVX-512 kernel, else its AVX2 build;
//! [`PackedRows::available`](crate::PackedRows) is false under `portable`) and the AVX2 builds of the small-product loops. It starts as
//! [`SIMD_ENV`] says (`RNN_MAX_SIMD=avx512|avx2|portable`, read once, at the first product;
//! unset: no cap) and [`set_max_level`] changes it at run time, so that a machine with AVX-512
//! can measure and test what a laptop with AVX2 runs. A program calls [`check_simd_env`] at
//! start-up to report a bad value (the lazy read ignores it). Every top-level call reads the cap
//! once and keeps its route to the end.

use std::sync::atomic::{AtomicU8, Ordering};

/// The environment variable that caps the kernels: `avx512` (no cap), `avx2` or `portable`
/// (the baseline build; `baseline` is accepted too).
pub const SIMD_ENV: &str = "RNN_MAX_SIMD";

/// A build of the dispatched loops, by instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The baseline build (x86-64: SSE2).
    Baseline = 0,
    /// AVX2 (with FMA, which the dispatched loops and the GEMM kernel use).
    Avx2 = 1,
    /// AVX-512 (`avx512f`, `avx512bw`, `avx512dq`, `avx512vl`).
    Avx512 = 2,
}

impl Level {
    /// Parses a level as [`SIMD_ENV`] spells it: `avx512`, `avx2`, `portable` or `baseline`
    /// (case and surrounding spaces ignored). The error lists the allowed values.
    pub fn parse(value: &str) -> Result<Level, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "avx512" => Ok(Level::Avx512),
            "avx2" => Ok(Level::Avx2),
            "portable" | "baseline" => Ok(Level::Baseline),
            _ => Err(format!("must be avx512, avx2 or portable, got {value:?}")),
        }
    }

    /// The level as [`SIMD_ENV`] spells it (`avx512`, `avx2`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Baseline => "portable",
        }
    }
}

/// No cap read yet: [`max_level`] reads [`SIMD_ENV`] on its first call.
const UNSET: u8 = u8::MAX;

static MAX_LEVEL: AtomicU8 = AtomicU8::new(UNSET);

/// Caps the kernels (see the [module docs](crate::simd)) from now on, over [`SIMD_ENV`]. The
/// gate loops give the same bits at every level; the f32 products the same bits at
/// [`Level::Avx512`] and [`Level::Avx2`], other bits (matrixmultiply's) at [`Level::Baseline`].
/// A [`PackedLhs`](crate::PackedLhs) packed under one cap may be used under another.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

#[cfg(test)]
thread_local! {
    /// A further cap on this thread only, for the crate's tests: they compare the kernels
    /// without changing the route of tests running beside them (a top-level call reads the cap
    /// on its calling thread and hands the route to its parts).
    pub(crate) static TEST_CAP: std::cell::Cell<Level> = const { std::cell::Cell::new(Level::Avx512) };
}

/// This thread's cap at a level until dropped (the crate's tests; see `TEST_CAP`).
#[cfg(test)]
pub(crate) struct TestCap(Level);

#[cfg(test)]
impl TestCap {
    /// Caps this thread at `level`; the drop restores the cap before.
    pub(crate) fn set(level: Level) -> TestCap {
        TestCap(TEST_CAP.replace(level))
    }
}

#[cfg(test)]
impl Drop for TestCap {
    fn drop(&mut self) {
        TEST_CAP.set(self.0);
    }
}

/// The cap: set by [`set_max_level`], else by [`SIMD_ENV`] (read once; a value that does not
/// parse is ignored here, [`check_simd_env`] reports it), else [`Level::Avx512`] (no cap).
pub fn max_level() -> Level {
    #[cfg(test)]
    return global_max_level().min(TEST_CAP.get());
    #[cfg(not(test))]
    global_max_level()
}

/// The cap of the whole process (see [`max_level`]).
fn global_max_level() -> Level {
    match MAX_LEVEL.load(Ordering::Relaxed) {
        0 => Level::Baseline,
        1 => Level::Avx2,
        UNSET => {
            let level = check_simd_env().ok().flatten().unwrap_or(Level::Avx512);
            // A concurrent `set_max_level` wins over the environment.
            let _ = MAX_LEVEL.compare_exchange(UNSET, level as u8, Ordering::Relaxed, Ordering::Relaxed);
            global_max_level()
        }
        _ => Level::Avx512,
    }
}

/// Checks [`SIMD_ENV`] and returns the cap it sets: `Ok(None)` when it is unset or empty, an
/// error naming the variable and the allowed values otherwise. A program calls this at start-up,
/// so that a bad value is an error instead of being ignored.
pub fn check_simd_env() -> Result<Option<Level>, String> {
    match std::env::var(SIMD_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("{SIMD_ENV} is not valid Unicode; set it to avx512, avx2 or portable or unset it"))
        }
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Level::parse(&v)
            .map(Some)
            .map_err(|e| format!("{SIMD_ENV} {e}; set it to avx512, avx2 or portable or unset it")),
    }
}

/// Which f32 GEMM micro-kernel runs now: [`Level::Avx512`] (AVX-512F), [`Level::Avx2`] (AVX2 and
/// FMA) or [`Level::Baseline`] (neither: matrixmultiply), the best the CPU has within
/// [`max_level`]. A top-level product reads it once.
pub fn gemm_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let cap = max_level();
        if cap >= Level::Avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if cap >= Level::Avx2
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The build a dispatched function runs now: the best the CPU has, within [`max_level`].
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let cap = max_level();
        if cap >= Level::Avx512
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Level::Avx512;
        }
        if cap >= Level::Avx2
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// The f32 multiply-add peak of one core at [`gemm_level`], in GFLOP/s (two flops per lane of a
/// fused multiply-add): the best of several timed runs of twelve independent chains of 16-lane
/// (AVX-512) or 8-lane (AVX2) FMAs, enough to keep every FMA unit busy through its latency, for
/// about `seconds` in all. `None` at [`Level::Baseline`]. The bound that no product can pass, for
/// `bench_table`'s comparisons; it depends on the clock the core runs at, so measure it in the
/// sitting it bounds.
pub fn fma_peak_gflops(seconds: f64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        const CHAINS: usize = 12;
        /// `iters` rounds of one FMA per chain; returns a value that depends on every chain.
        #[target_feature(enable = "avx512f")]
        fn chains512(iters: usize) -> f32 {
            let (a, b) = (
                _mm512_set1_ps(std::hint::black_box(0.999_999_9)),
                _mm512_set1_ps(std::hint::black_box(1e-7)),
            );
            let mut acc = [_mm512_set1_ps(1.0); CHAINS];
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = _mm512_fmadd_ps(*x, a, b);
                }
            }
            acc.iter().fold(0.0, |s, &x| s + _mm512_reduce_add_ps(x))
        }
        #[target_feature(enable = "avx2,fma")]
        fn chains256(iters: usize) -> f32 {
            let (a, b) = (
                _mm256_set1_ps(std::hint::black_box(0.999_999_9)),
                _mm256_set1_ps(std::hint::black_box(1e-7)),
            );
            let mut acc = [_mm256_set1_ps(1.0); CHAINS];
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = _mm256_fmadd_ps(*x, a, b);
                }
            }
            let mut lanes = [0.0f32; 8];
            acc.iter().fold(0.0, |s, &x| {
                // SAFETY: `lanes` holds 8 values.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), x) };
                s + lanes.iter().sum::<f32>()
            })
        }
        let (lanes, run): (usize, fn(usize) -> f32) = match gemm_level() {
            // SAFETY: `gemm_level` reports AVX-512 only when the CPU has AVX-512F.
            Level::Avx512 => (16, |n| unsafe { chains512(n) }),
            // SAFETY: `gemm_level` reports AVX2 only when the CPU has AVX2 and FMA.
            Level::Avx2 => (8, |n| unsafe { chains256(n) }),
            Level::Baseline => return None,
        };
        const ITERS: usize = 1 << 20;
        let start = std::time::Instant::now();
        let mut best = 0.0f64;
        while best == 0.0 || start.elapsed().as_secs_f64() < seconds {
            let t = std::time::Instant::now();
            std::hint::black_box(run(std::hint::black_box(ITERS)));
            let flops = (2 * lanes * CHAINS * ITERS) as f64;
            best = best.max(flops / t.elapsed().as_secs_f64().max(1e-9) / 1e9);
        }
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = seconds;
        None
    }
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
                #[target_feature(enable = "avx2,fma")]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment's spellings, and the one-line error for anything else.
    #[test]
    fn levels_parse() {
        assert_eq!(Level::parse("avx512"), Ok(Level::Avx512));
        assert_eq!(Level::parse(" AVX2 "), Ok(Level::Avx2));
        assert_eq!(Level::parse("portable"), Ok(Level::Baseline));
        assert_eq!(Level::parse("baseline"), Ok(Level::Baseline));
        for level in [Level::Avx512, Level::Avx2, Level::Baseline] {
            assert_eq!(Level::parse(level.name()), Ok(level));
        }
        for bad in ["", "sse2", "avx", "avx-512"] {
            let e = Level::parse(bad).unwrap_err();
            assert!(e.contains("avx512, avx2 or portable") && !e.contains('\n'), "{bad}: {e}");
        }
        // (The variable itself is checked in child processes: crates/charlm/tests/reliability.rs.)
    }

    /// The peak exists exactly where a vector kernel does, and is a positive, finite rate.
    #[test]
    fn fma_peak_is_measured_at_the_kernels_level() {
        match gemm_level() {
            Level::Baseline => assert_eq!(fma_peak_gflops(0.01), None),
            _ => {
                let peak = fma_peak_gflops(0.01).expect("a vector kernel has a peak");
                assert!(peak.is_finite() && peak > 0.0, "{peak}");
            }
        }
        let _cap = TestCap::set(Level::Baseline);
        assert_eq!(fma_peak_gflops(0.01), None);
    }

    /// This thread's test cap lowers the level the kernels see, and only here.
    #[test]
    fn test_cap_is_per_thread() {
        {
            let _cap = TestCap::set(Level::Avx2);
            assert!(gemm_level() <= Level::Avx2 && level() <= Level::Avx2);
            let other = std::thread::spawn(max_level).join().unwrap();
            assert_eq!(other, global_max_level());
            let _inner = TestCap::set(Level::Baseline);
            assert_eq!(gemm_level(), Level::Baseline);
        }
        assert_eq!(max_level(), global_max_level());
    }
}
