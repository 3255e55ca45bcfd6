//! Branch-free `exp` and `tanh` for `f32`, written so that loops calling them vectorise.
//!
//! libm's `expf`/`tanhf` are calls the compiler cannot vectorise; in the recurrent cells they
//! cost more than the matrix products (a third of an LSTM training step). These follow Cephes'
//! `expf` and `tanhf`:
//!
//! ```text
//! e^x   = 2^n · p(r),  n = round(x·log2 e), r = x - n·ln 2 (ln 2 split in two for exactness),
//!         p a degree-7 polynomial (Cephes' coefficients); x clamped to [-87.3, 88.3]
//! tanh x = x + x³·q(x²)                for |x| < 0.625 (Cephes' odd polynomial)
//!        = sign(x)·(1 - 2 / (e^{2|x|} + 1))   otherwise
//! ```
//!
//! The polynomials run as chains of fused multiply-adds (`mul_add`: one rounding a step, half
//! the instructions of a multiply and an add, the same bits in every build of
//! [`crate::simd`]). Both are within 2 ulp of the correctly rounded result over their range
//! (checked against `f64` below); `f64` keeps libm (the PyTorch parity tests compare in `f64`).

/// `e^x` for `f32`; inputs outside `[-87.3, 88.3]` are clamped (giving about 1e-38 and 2e38).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = C1 + C2, C1 exact in few bits so n·C1 is exact.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x.mul_add(LOG2E, MAGIC);
    let n = t - MAGIC;
    let bits_n = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    // r = x - n·ln 2, with n·C1 exact and each step one rounding (a fused multiply-add).
    let r = (-n).mul_add(C2, (-n).mul_add(C1, x));
    let z = r * r;
    let p = 1.987_569_1e-4f32.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 0.166_666_65);
    let p = p.mul_add(r, 0.5);
    let p = p.mul_add(z, r) + 1.0;
    // 2^n from its exponent bits; n is in [-126, 127] after the clamp.
    p * f32::from_bits(((bits_n + 127) as u32) << 23)
}

/// `tanh(x)` for `f32`.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let q = (-5.704_988_7e-3f32).mul_add(z, 2.063_909e-2);
    let q = q.mul_add(z, -5.373_971_6e-2);
    let q = q.mul_add(z, 0.133_314_42);
    let q = q.mul_add(z, -0.333_332_8);
    let small = (q * z).mul_add(x, x);
    // 1 - 2/(e^{2a} + 1): e^{2a} saturates at 2e38 for a > 44, giving exactly 1.
    let large = (1.0 - 2.0 / (exp_f32(2.0 * a) + 1.0)).copysign(x);
    if a < 0.625 {
        small
    } else {
        large
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance in units in the last place between `got` and the correctly rounded `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn exp_and_tanh_are_within_two_ulp() {
        // A dense sweep of the ranges the cells meet, against f64 libm.
        let (mut worst_exp, mut worst_tanh) = (0f64, 0f64);
        for k in -200_000..=200_000 {
            let x = k as f32 * 4.3e-4; // [-86, 86]
            worst_exp = worst_exp.max(ulps(exp_f32(x), (x as f64).exp()));
            let y = k as f32 * 1e-4; // [-20, 20], dense around 0
            worst_tanh = worst_tanh.max(ulps(tanh_f32(y), (y as f64).tanh()));
        }
        assert!(worst_exp <= 2.0, "exp: {worst_exp} ulp");
        assert!(worst_tanh <= 2.0, "tanh: {worst_tanh} ulp");
    }

    #[test]
    fn extremes_saturate_without_nan() {
        assert_eq!(tanh_f32(100.0), 1.0);
        assert_eq!(tanh_f32(-100.0), -1.0);
        assert_eq!(tanh_f32(0.0), 0.0);
        assert!(exp_f32(1000.0).is_finite() && exp_f32(1000.0) > 1e38);
        assert!(exp_f32(-1000.0) >= 0.0 && exp_f32(-1000.0) < 1e-37);
        // sigmoid's form 1/(1+e^{-x}) stays in [0, 1] at the extremes.
        assert_eq!(1.0 / (1.0 + exp_f32(-200.0)), 1.0);
        assert!(1.0 / (1.0 + exp_f32(200.0)) < 1e-37);
    }
}
