//! Numeric gradients by central differences, and the error used to compare them.
//!
//! [`numeric_gradient`] uses the fourth-order central difference
//!
//! ```text
//! f'(x) ≈ (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h
//! ```
//!
//! whose truncation error is O(h⁴) instead of the O(h²) of the two-point formula, so a larger
//! step (h = 1e-4 in f64) keeps both truncation (~h⁴ = 1e-16) and rounding (~ε/h = 1e-12)
//! errors small. [`numeric_gradient_2pt`] is the plain `(f(x+h) - f(x-h)) / 2h`.
//!
//! [`rel_error`] is `max_i |a_i - b_i| / max(1e-8, max_i (|a_i| + |b_i|))`: the largest
//! absolute difference, relative to the scale of the gradient as a whole. Unlike an elementwise
//! ratio, a gradient entry that is zero up to rounding cannot make it blow up.

use crate::Scalar;

/// The numeric gradient of `f` at `x`, by the fourth-order central difference with step `h`.
/// `x` is perturbed in place and restored exactly.
pub fn numeric_gradient<T: Scalar, F: FnMut(&[T]) -> T>(mut f: F, x: &mut [T], h: f64) -> Vec<T> {
    let h_t = T::cast(h);
    let two = T::cast(2.0);
    let eight = T::cast(8.0);
    let mut g = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let orig = x[i];
        let mut at = |v: T, x: &mut [T]| {
            x[i] = v;
            f(x)
        };
        let fp2 = at(orig + two * h_t, x);
        let fp1 = at(orig + h_t, x);
        let fm1 = at(orig - h_t, x);
        let fm2 = at(orig - two * h_t, x);
        x[i] = orig;
        g.push((-fp2 + eight * fp1 - eight * fm1 + fm2) / (T::cast(12.0) * h_t));
    }
    g
}

/// The numeric gradient of `f` at `x` by the two-point central difference `(f(x+h) - f(x-h)) / 2h`.
pub fn numeric_gradient_2pt<T: Scalar, F: FnMut(&[T]) -> T>(mut f: F, x: &mut [T], h: f64) -> Vec<T> {
    let h_t = T::cast(h);
    let mut g = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + h_t;
        let fp = f(x);
        x[i] = orig - h_t;
        let fm = f(x);
        x[i] = orig;
        g.push((fp - fm) / (T::cast(2.0) * h_t));
    }
    g
}

/// `max_i |a_i - b_i| / max(1e-8, max_i (|a_i| + |b_i|))`, computed in `f64`.
///
/// Returns infinity if any value is non-finite, so a NaN can never pass a check.
///
/// # Panics
/// If the lengths differ.
pub fn rel_error<T: Scalar>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len(), "rel_error: {} values against {}", a.len(), b.len());
    let mut diff = 0.0f64;
    let mut scale = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x.to_f64(), y.to_f64());
        if !x.is_finite() || !y.is_finite() {
            return f64::INFINITY;
        }
        diff = diff.max((x - y).abs());
        scale = scale.max(x.abs() + y.abs());
    }
    diff / scale.max(1e-8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_of_known_function() {
        // f(x, y) = x² y + sin(y): ∇ = (2xy, x² + cos y)
        let mut p = [1.3f64, -0.4];
        let g = numeric_gradient(|v| v[0] * v[0] * v[1] + v[1].sin(), &mut p, 1e-3);
        let want = [2.0 * 1.3 * -0.4, 1.3f64 * 1.3 + (-0.4f64).cos()];
        assert!(rel_error(&g, &want) < 1e-11, "{}", rel_error(&g, &want));
        assert_eq!(p, [1.3, -0.4], "x was not restored");
        let g2 = numeric_gradient_2pt(|v| v[0] * v[0] * v[1] + v[1].sin(), &mut p, 1e-5);
        assert!(rel_error(&g2, &want) < 1e-9);
    }

    #[test]
    fn rel_error_flags_differences_and_nan() {
        assert_eq!(rel_error(&[1.0f64, 2.0], &[1.0, 2.0]), 0.0);
        assert!(rel_error(&[1.0f64, 2.0], &[1.0, 2.2]) > 0.04);
        assert!(rel_error(&[f64::NAN], &[1.0]).is_infinite());
        assert_eq!(rel_error::<f64>(&[0.0], &[0.0]), 0.0);
    }
}
