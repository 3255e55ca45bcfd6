//! Sequences as PyTorch stores them, to and from this crate's layout.
//!
//! This crate lays a sequence of `T` steps over a batch of `B` out as a `F × (T·B)` matrix whose
//! column `t·B + b` is sample `b` at step `t`. PyTorch's recurrent modules take row-major tensors
//! `[T, B, F]` (sequence first, the default) or `[B, T, F]` (`batch_first=True`):
//!
//! - `[T, B, F]` row-major is element `(t, b, f)` at `(t·B + b)·F + f`: exactly this crate's
//!   column-major `F × (T·B)`, so the conversion is a copy;
//! - `[B, T, F]` row-major is element `(t, b, f)` at `(b·T + t)·F + f`: the conversion moves each
//!   sample's `F` values as a block.

use rnn_tensor::{Mat, Scalar};

use crate::CellError;

/// How a PyTorch tensor of sequences is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqOrder {
    /// `[T, B, F]`, PyTorch's default (`batch_first=False`).
    SeqFirst,
    /// `[B, T, F]` (`batch_first=True`).
    BatchFirst,
}

impl SeqOrder {
    /// The shape `[T, B, F]` or `[B, T, F]`.
    pub fn shape(self, steps: usize, batch: usize, features: usize) -> [usize; 3] {
        match self {
            SeqOrder::SeqFirst => [steps, batch, features],
            SeqOrder::BatchFirst => [batch, steps, features],
        }
    }

    /// `(T, B, F)` from a tensor's shape in this order.
    pub fn steps_batch_features(self, shape: &[usize]) -> Result<(usize, usize, usize), CellError> {
        let [a, b, f] = <[usize; 3]>::try_from(shape).map_err(|_| {
            CellError::InvalidInput(format!(
                "a sequence tensor has 3 dimensions ({}), got shape {shape:?}",
                self.name()
            ))
        })?;
        Ok(match self {
            SeqOrder::SeqFirst => (a, b, f),
            SeqOrder::BatchFirst => (b, a, f),
        })
    }

    fn name(self) -> &'static str {
        match self {
            SeqOrder::SeqFirst => "[T, B, F]",
            SeqOrder::BatchFirst => "[B, T, F], batch_first",
        }
    }
}

/// A row-major PyTorch tensor of `shape` (`[T, B, F]` or `[B, T, F]` per `order`) as this crate's
/// `F × (T·B)` matrix; also returns `B`.
pub fn from_torch<T: Scalar>(
    data: &[T],
    shape: &[usize],
    order: SeqOrder,
) -> Result<(Mat<T>, usize), CellError> {
    let (t, b, f) = order.steps_batch_features(shape)?;
    if data.len() != t * b * f {
        return Err(CellError::InvalidInput(format!(
            "a {shape:?} tensor holds {} values, got {}",
            t * b * f,
            data.len()
        )));
    }
    let m = match order {
        SeqOrder::SeqFirst => Mat::from_column_slice(f, t * b, data),
        SeqOrder::BatchFirst => {
            let mut m = Mat::zeros(f, t * b);
            for (c, col) in m.as_mut_slice().chunks_exact_mut(f.max(1)).enumerate().take(t * b) {
                let (step, sample) = (c / b, c % b);
                col.copy_from_slice(&data[(sample * t + step) * f..][..f]);
            }
            m
        }
    };
    Ok((m, b))
}

/// This crate's `F × (T·B)` matrix as a row-major PyTorch tensor in `order`, with its shape.
///
/// # Panics
/// If `batch` is zero or does not divide the columns.
pub fn to_torch<T: Scalar>(m: &Mat<T>, batch: usize, order: SeqOrder) -> (Vec<T>, [usize; 3]) {
    let (f, n) = m.shape();
    assert!(batch > 0 && n % batch == 0, "to_torch: {n} columns are not whole steps of a batch of {batch}");
    let t = n / batch;
    let data = match order {
        SeqOrder::SeqFirst => m.as_slice().to_vec(),
        SeqOrder::BatchFirst => {
            let mut out = vec![T::ZERO; f * n];
            for (c, col) in m.as_slice().chunks_exact(f.max(1)).enumerate().take(n) {
                let (step, sample) = (c / batch, c % batch);
                out[(sample * t + step) * f..][..f].copy_from_slice(col);
            }
            out
        }
    };
    (data, order.shape(t, batch, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Element `(t, b, f)` lands at column `t·B + b`, row `f`, from either order, and back.
    #[test]
    fn both_orders_round_trip_element_by_element() {
        let (t, b, f) = (3, 4, 2);
        let value = |t: usize, b: usize, f: usize| (100 * t + 10 * b + f) as f64;
        let seq_first: Vec<f64> =
            (0..t).flat_map(|s| (0..b).flat_map(move |n| (0..f).map(move |k| value(s, n, k)))).collect();
        let batch_first: Vec<f64> =
            (0..b).flat_map(|n| (0..t).flat_map(move |s| (0..f).map(move |k| value(s, n, k)))).collect();
        for (data, order) in [(&seq_first, SeqOrder::SeqFirst), (&batch_first, SeqOrder::BatchFirst)] {
            let (m, batch) = from_torch(data, &order.shape(t, b, f), order).unwrap();
            assert_eq!((batch, m.shape()), (b, (f, t * b)));
            for s in 0..t {
                for n in 0..b {
                    for k in 0..f {
                        assert_eq!(m[(k, s * b + n)], value(s, n, k), "{order:?} ({s}, {n}, {k})");
                    }
                }
            }
            assert_eq!(to_torch(&m, b, order), (data.clone(), order.shape(t, b, f)));
        }
        assert!(from_torch(&seq_first, &[t, b], SeqOrder::SeqFirst).is_err());
        assert!(from_torch(&seq_first[1..], &[t, b, f], SeqOrder::BatchFirst).is_err());
    }
}
