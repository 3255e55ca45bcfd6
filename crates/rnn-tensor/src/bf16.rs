//! bfloat16: the number format, and whether this CPU multiplies it.
//!
//! A bf16 value is the upper half of an `f32`: the same sign and 8-bit exponent, and 7 of the 23
//! bits of mantissa (8 with the implicit one), so about 2.4 decimal digits and the same range as
//! `f32`. Rounding an `f32` to bf16 rounds to nearest, ties to even ([`Bf16::from_f32`]); widening
//! back is exact ([`Bf16::to_f32`]). The product of two bf16 values has at most 16 significant
//! bits and is therefore exact in `f32`.
//!
//! CPUs with AVX512_BF16 (Intel from Cooper Lake and Sapphire Rapids on, AMD from Zen 4 on)
//! have `vdpbf16ps`: for each of 16 `f32` lanes it adds two products of bf16 pairs to an `f32`
//! accumulator, twice the multiply-adds of an `f32` FMA per instruction, from half the bytes.
//! [`crate::packed::bf16`] builds the products on it. Computing in bf16 is asked for with
//! [`Precision::Bf16`]; on a CPU without the instruction (or under a cap below AVX-512,
//! [`crate::simd::max_level`]) [`Precision::check`] is an error, never a slow emulation.

use std::fmt;

/// A bfloat16 value, stored as its 16 bits.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct Bf16(pub u16);

impl Bf16 {
    /// Zero.
    pub const ZERO: Bf16 = Bf16(0);

    /// `x` rounded to the nearest bf16, ties to even (as `vcvtne2ps2bf16` rounds); NaN stays a
    /// (quiet) NaN with the same sign.
    #[inline(always)]
    pub fn from_f32(x: f32) -> Bf16 {
        let b = x.to_bits();
        if x.is_nan() {
            return Bf16((b >> 16) as u16 | 0x40);
        }
        // Adding 0x7fff plus the lowest kept bit rounds the dropped half to nearest, ties to
        // even; a carry into the exponent is the correct rounding up (to infinity at the top).
        let round = 0x7fff + ((b >> 16) & 1);
        Bf16((b.wrapping_add(round) >> 16) as u16)
    }

    /// The value as an `f32` (exact).
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }

    /// `x` rounded to bf16 and widened back: the value a bf16 product sees in place of `x`.
    #[inline(always)]
    pub fn round(x: f32) -> f32 {
        Bf16::from_f32(x).to_f32()
    }
}

impl fmt::Debug for Bf16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}bf16", self.to_f32())
    }
}

/// Whether this CPU has `vdpbf16ps` (AVX512_BF16 with AVX-512F) and the cap
/// ([`crate::simd::max_level`]) allows AVX-512.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::max_level() >= crate::simd::Level::Avx512
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The precision of a model's products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// The products in the model's own type (`f32` or `f64`).
    #[default]
    Full,
    /// Mixed precision for `f32` models: the weights and the right operands of the products
    /// rounded to bf16, their products summed in `f32`; everything else (gate nonlinearities,
    /// states, losses) in `f32`.
    Bf16,
}

impl Precision {
    /// Parses `f32`/`f64`/`full` (the model's own type) or `bf16`.
    pub fn parse(s: &str) -> Result<Precision, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "f64" | "full" => Ok(Precision::Full),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(format!("the precision must be f32, f64 or bf16, got {s:?}")),
        }
    }

    /// An error (one line, naming what to do instead) if this precision cannot run here for
    /// models of element type `type_name` (`"f32"` or `"f64"`).
    pub fn check(self, type_name: &str) -> Result<(), String> {
        match self {
            Precision::Full => Ok(()),
            Precision::Bf16 if type_name != "f32" => {
                Err(format!("bf16 computes f32 models only, this one is {type_name}; convert it to f32 or use {type_name}"))
            }
            Precision::Bf16 if !available() => Err(format!(
                "bf16 needs a CPU with AVX512_BF16{}; this one cannot run it, use f32",
                if crate::simd::max_level() < crate::simd::Level::Avx512 { " and no SIMD cap below avx512" } else { "" }
            )),
            Precision::Bf16 => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round to nearest, ties to even, at every kind of value: exact ones, halfway cases both
    /// ways, the carry into the exponent, infinities and NaN.
    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(Bf16::from_f32(1.0).0, 0x3f80);
        assert_eq!(Bf16::from_f32(-2.0).0, 0xc000);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (down to 1).
        assert_eq!(Bf16::from_f32(1.0 + 1.0 / 256.0).0, 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up, to the even one.
        assert_eq!(Bf16::from_f32(1.0 + 3.0 / 256.0).0, 0x3f82);
        // Just above halfway rounds up.
        assert_eq!(Bf16::from_f32(f32::from_bits(0x3f80_8001)).0, 0x3f81);
        // The largest mantissa carries into the exponent.
        assert_eq!(Bf16::from_f32(f32::from_bits(0x3fff_ffff)).to_f32(), 2.0);
        assert_eq!(Bf16::from_f32(f32::MAX).to_f32(), f32::INFINITY);
        assert_eq!(Bf16::from_f32(f32::NEG_INFINITY).to_f32(), f32::NEG_INFINITY);
        assert!(Bf16::from_f32(f32::NAN).to_f32().is_nan());
        assert!(Bf16::from_f32(-f32::NAN).to_f32().is_sign_negative());
        // Widening is exact, and rounding a bf16 value gives itself.
        for bits in [0x0000u16, 0x8000, 0x3f80, 0x4049, 0x7f7f, 0x0080, 0xff7f] {
            assert_eq!(Bf16::from_f32(Bf16(bits).to_f32()).0, bits);
        }
        // The relative error is at most half a unit in the 8th bit: 2^-8.
        let mut x = 1.0e-30f32;
        while x < 1.0e30 {
            let r = Bf16::round(x);
            assert!(((r - x) / x).abs() <= 1.0 / 256.0, "{x} -> {r}");
            x *= 1.37;
        }
    }

    #[test]
    fn precisions_parse_and_check() {
        assert_eq!(Precision::parse("bf16"), Ok(Precision::Bf16));
        assert_eq!(Precision::parse(" F32 "), Ok(Precision::Full));
        let e = Precision::parse("fp8").unwrap_err();
        assert!(e.contains("f32, f64 or bf16") && !e.contains('\n'));
        assert_eq!(Precision::Full.check("f64"), Ok(()));
        let e = Precision::Bf16.check("f64").unwrap_err();
        assert!(e.contains("f32 models only") && !e.contains('\n'));
        assert_eq!(Precision::Bf16.check("f32").is_ok(), available());
    }
}
