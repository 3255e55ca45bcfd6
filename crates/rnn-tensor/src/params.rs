//! Named parameter buffers: the contract between cells, optimizers and checkpoints.
//!
//! A model exposes its tensors as `(name, matrix)` pairs with PyTorch's names
//! (`weight_ih_l0`, `bias_hh_l0`, `head.weight`, ...). Gradients are a value of the same type
//! as the parameters, so the two lists line up by construction; [`pair_params`] checks that
//! they do and hands optimizers flat [`ParamMut`] views. Optimizers keep their state by name,
//! which is also what a checkpoint stores.

use crate::{Mat, Scalar, TensorError};

/// A model's (or a gradient's) tensors, each with its PyTorch name, in a fixed order.
pub trait Parameters<T: Scalar> {
    /// Every tensor with its name.
    fn named_params(&self) -> Vec<(String, &Mat<T>)>;
    /// Every tensor with its name, mutably, in the same order as [`Parameters::named_params`].
    fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<T>)>;

    /// The total number of scalars.
    fn num_scalars(&self) -> usize {
        self.named_params().iter().map(|(_, m)| m.len()).sum()
    }

    /// Sets every tensor to zero (used to clear gradients).
    fn zero(&mut self) {
        for (_, m) in self.named_params_mut() {
            // Through the flat slice: a memset (nalgebra's fill walks element by element).
            m.as_mut_slice().fill(T::ZERO);
        }
    }
}

/// One parameter tensor and its gradient, as flat slices in memory (column-major) order.
#[derive(Debug)]
pub struct ParamMut<'a, T> {
    /// The PyTorch name.
    pub name: String,
    /// The values, updated by the optimizer.
    pub value: &'a mut [T],
    /// The gradient of the loss with respect to `value`.
    pub grad: &'a [T],
}

/// Pairs parameters with their gradients, checking that names and shapes agree.
pub fn pair_params<'a, T: Scalar, P: Parameters<T> + ?Sized>(
    params: &'a mut P,
    grads: &'a P,
) -> Result<Vec<ParamMut<'a, T>>, TensorError> {
    let g = grads.named_params();
    let p = params.named_params_mut();
    if p.len() != g.len() {
        return Err(TensorError::ParamMismatch(format!(
            "{} parameter tensors but {} gradient tensors",
            p.len(),
            g.len()
        )));
    }
    p.into_iter()
        .zip(g)
        .map(|((pn, pv), (gn, gv))| {
            if pn != gn || pv.shape() != gv.shape() {
                return Err(TensorError::ParamMismatch(format!(
                    "parameter {pn} {:?} paired with gradient {gn} {:?}",
                    pv.shape(),
                    gv.shape()
                )));
            }
            Ok(ParamMut { name: pn, value: pv.as_mut_slice(), grad: gv.as_slice() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Two {
        a: Mat<f64>,
        b: Mat<f64>,
    }
    impl Parameters<f64> for Two {
        fn named_params(&self) -> Vec<(String, &Mat<f64>)> {
            vec![("a".into(), &self.a), ("b".into(), &self.b)]
        }
        fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<f64>)> {
            vec![("a".into(), &mut self.a), ("b".into(), &mut self.b)]
        }
    }

    #[test]
    fn pairs_by_name_and_rejects_shape_mismatch() {
        let mut p = Two { a: Mat::zeros(2, 3), b: Mat::zeros(1, 1) };
        let mut g = p.clone();
        g.a.fill(1.0);
        assert_eq!(p.num_scalars(), 7);
        {
            let pairs = pair_params(&mut p, &g).unwrap();
            assert_eq!(pairs[0].name, "a");
            assert_eq!(pairs[0].grad, &[1.0; 6]);
        }
        g.b = Mat::zeros(2, 1);
        let err = pair_params(&mut p, &g).unwrap_err();
        assert!(err.to_string().contains("parameter b"), "{err}");
        g.zero();
        assert!(g.a.iter().all(|&v| v == 0.0));
    }
}
