//! Activations and their derivatives.
//!
//! The pointwise functions work on slices in place, because the cells apply them to blocks of
//! a preallocated gate buffer. Derivatives are taken from the activation's *output* where that is
//! cheaper: `sigmoid' = y(1-y)`, `tanh' = 1-y²`, `relu' = [y > 0]`.
//!
//! Softmax and log-softmax work on the columns of a matrix: each column is one prediction over
//! the classes (rows), matching the feature-major layout of the whole project.

use crate::{Mat, Scalar};

/// A pointwise nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `1 / (1 + e^{-x})`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `max(0, x)`.
    Relu,
    /// `x`.
    Identity,
}

impl Activation {
    /// The name PyTorch uses for `nonlinearity` (and `"sigmoid"`, `"identity"`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
            Activation::Identity => "identity",
        }
    }

    /// Parses [`Activation::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "relu" => Activation::Relu,
            "identity" => Activation::Identity,
            _ => return None,
        })
    }

    /// The activation of one value.
    #[inline]
    pub fn apply<T: Scalar>(self, x: T) -> T {
        match self {
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh_v(),
            Activation::Relu => relu(x),
            Activation::Identity => x,
        }
    }

    /// The derivative at the point whose *output* is `y`.
    #[inline]
    pub fn grad_from_output<T: Scalar>(self, y: T) -> T {
        match self {
            Activation::Sigmoid => y * (T::ONE - y),
            Activation::Tanh => T::ONE - y * y,
            Activation::Relu => {
                if y > T::ZERO {
                    T::ONE
                } else {
                    T::ZERO
                }
            }
            Activation::Identity => T::ONE,
        }
    }

    /// Applies the activation in place (vectorised: see [`Scalar::exp_v`]).
    pub fn forward_inplace<T: Scalar>(self, x: &mut [T]) {
        forward_inplace_dispatch(self, x);
    }

    /// `dx = dy ⊙ f'(x)`, with `f'` computed from the stored outputs `y`; written into `dy`.
    pub fn backward_inplace<T: Scalar>(self, y: &[T], dy: &mut [T]) {
        assert_eq!(y.len(), dy.len(), "activation backward: y has {} values, dy {}", y.len(), dy.len());
        for (d, &v) in dy.iter_mut().zip(y) {
            *d *= self.grad_from_output(v);
        }
    }
}

#[inline(always)]
fn forward_inplace_impl<T: Scalar>(act: Activation, x: &mut [T]) {
    match act {
        Activation::Sigmoid => x.iter_mut().for_each(|v| *v = sigmoid(*v)),
        Activation::Tanh => x.iter_mut().for_each(|v| *v = v.tanh_v()),
        Activation::Relu => x.iter_mut().for_each(|v| *v = relu(*v)),
        Activation::Identity => {}
    }
}

crate::dispatch_avx2! {
    /// [`Activation::forward_inplace`] in its AVX-512 or AVX2 build where available.
    fn forward_inplace_dispatch<T>(act: Activation, x: &mut [T]) => forward_inplace_impl
}

/// The logistic sigmoid, `1 / (1 + e^{-x})` (with [`Scalar::exp_v`]: vectorisable, within a few
/// ulp in `f32`, libm in `f64`).
#[inline(always)]
pub fn sigmoid<T: Scalar>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp_v())
}

/// `max(0, x)` (NaN stays NaN).
#[inline]
pub fn relu<T: Scalar>(x: T) -> T {
    if x < T::ZERO {
        T::ZERO
    } else {
        x
    }
}

/// Softmax over each column of `logits`, in place.
pub fn softmax_columns<T: Scalar>(logits: &mut Mat<T>) {
    let rows = logits.nrows();
    if rows == 0 {
        return;
    }
    for col in logits.as_mut_slice().chunks_exact_mut(rows) {
        let m = col.iter().copied().fold(col[0], |a, b| if b > a { b } else { a });
        let mut s = T::ZERO;
        for v in col.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        let inv = T::ONE / s;
        col.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Log-softmax over each column of `logits`, in place: `x - max - ln Σ e^{x - max}`.
pub fn log_softmax_columns<T: Scalar>(logits: &mut Mat<T>) {
    let rows = logits.nrows();
    if rows == 0 {
        return;
    }
    for col in logits.as_mut_slice().chunks_exact_mut(rows) {
        let m = col.iter().copied().fold(col[0], |a, b| if b > a { b } else { a });
        let s = col.iter().fold(T::ZERO, |acc, &v| acc + (v - m).exp());
        let lse = m + s.ln();
        col.iter_mut().for_each(|v| *v -= lse);
    }
}

/// Backward of column softmax: given outputs `p` and upstream `dp`, returns
/// `dx = p ⊙ (dp - Σ_rows p ⊙ dp)` per column.
pub fn softmax_columns_backward<T: Scalar>(p: &Mat<T>, dp: &Mat<T>) -> Mat<T> {
    assert_eq!(p.shape(), dp.shape(), "softmax backward: p is {:?}, dp is {:?}", p.shape(), dp.shape());
    let mut dx = dp.clone();
    for (j, mut col) in dx.column_iter_mut().enumerate() {
        let dot: T = p.column(j).dot(&dp.column(j));
        for (i, v) in col.iter_mut().enumerate() {
            *v = p[(i, j)] * (*v - dot);
        }
    }
    dx
}

/// Backward of column log-softmax: given outputs `l` and upstream `dl`, returns
/// `dx = dl - softmax ⊙ Σ_rows dl` per column (softmax = e^l).
pub fn log_softmax_columns_backward<T: Scalar>(l: &Mat<T>, dl: &Mat<T>) -> Mat<T> {
    assert_eq!(l.shape(), dl.shape(), "log-softmax backward: l is {:?}, dl is {:?}", l.shape(), dl.shape());
    let mut dx = dl.clone();
    for (j, mut col) in dx.column_iter_mut().enumerate() {
        let s: T = dl.column(j).sum();
        for (i, v) in col.iter_mut().enumerate() {
            *v -= l[(i, j)].exp() * s;
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{numeric_gradient, rel_error};
    use crate::Rng;

    #[test]
    fn pointwise_derivatives_match_numeric() {
        for act in [Activation::Sigmoid, Activation::Tanh, Activation::Relu, Activation::Identity] {
            let xs = [-2.3f64, -0.7, 0.4, 1.9];
            for &x in &xs {
                let y = act.apply(x);
                let mut v = [x];
                let num = numeric_gradient(|p| act.apply(p[0]), &mut v, 1e-4);
                let err = rel_error(&num, &[act.grad_from_output(y)]);
                assert!(err < 1e-9, "{act:?} at {x}: {err}");
            }
        }
    }

    #[test]
    fn softmax_and_log_softmax_agree_and_backprop() {
        let mut rng = Rng::seed_from(5);
        let x: Mat<f64> = Mat::from_fn(7, 3, |_, _| rng.uniform(-3.0, 3.0) + 500.0);
        let mut p = x.clone();
        softmax_columns(&mut p);
        let mut l = x.clone();
        log_softmax_columns(&mut l);
        for j in 0..3 {
            assert!((p.column(j).sum() - 1.0).abs() < 1e-12);
        }
        assert!((l.map(f64::exp) - &p).abs().max() < 1e-12);
        // Gradient of sum(w ⊙ log_softmax(x)) against numeric.
        let w: Mat<f64> = Mat::from_fn(7, 3, |_, _| rng.uniform(-1.0, 1.0));
        let analytic = log_softmax_columns_backward(&l, &w);
        let mut flat: Vec<f64> = x.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                let mut m = Mat::from_column_slice(7, 3, v);
                log_softmax_columns(&mut m);
                m.component_mul(&w).sum()
            },
            &mut flat,
            1e-4,
        );
        assert!(rel_error(&num, analytic.as_slice()) < 1e-9);
        let analytic = softmax_columns_backward(&p, &w);
        let num = numeric_gradient(
            |v| {
                let mut m = Mat::from_column_slice(7, 3, v);
                softmax_columns(&mut m);
                m.component_mul(&w).sum()
            },
            &mut flat,
            1e-4,
        );
        assert!(rel_error(&num, analytic.as_slice()) < 1e-9);
    }
}
