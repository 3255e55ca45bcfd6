//! Weight initialisers. Every draw is made in `f64` and rounded to the scalar type, so an `f32`
//! model and an `f64` model built from the same seed start from the same numbers.

use crate::{Mat, Rng, Scalar, TensorError};

/// A weight initialiser.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `U(lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// `N(mean, std²)`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// PyTorch's default for recurrent layers: `U(-1/sqrt(hidden), 1/sqrt(hidden))`.
    TorchRecurrent {
        /// The hidden size `H`.
        hidden: usize,
    },
    /// All zeros.
    Zeros,
}

impl Init {
    /// Checks the arguments.
    pub fn check(&self) -> Result<(), TensorError> {
        match *self {
            Init::Uniform { lo, hi } if !(lo.is_finite() && hi.is_finite() && lo <= hi) => {
                Err(TensorError::InvalidInit(format!("uniform needs finite lo <= hi, got [{lo}, {hi}]")))
            }
            Init::Normal { mean, std } if !(mean.is_finite() && std.is_finite() && std >= 0.0) => {
                Err(TensorError::InvalidInit(format!(
                    "normal needs a finite mean and std >= 0, got mean {mean}, std {std}"
                )))
            }
            Init::TorchRecurrent { hidden: 0 } => {
                Err(TensorError::InvalidInit("the PyTorch initialiser needs hidden > 0".into()))
            }
            _ => Ok(()),
        }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            Init::Uniform { lo, hi } => rng.uniform(lo, hi),
            Init::Normal { mean, std } => rng.normal(mean, std),
            Init::TorchRecurrent { hidden } => {
                let k = 1.0 / (hidden as f64).sqrt();
                rng.uniform(-k, k)
            }
            Init::Zeros => 0.0,
        }
    }

    /// A `rows×cols` matrix filled column by column.
    pub fn matrix<T: Scalar>(&self, rows: usize, cols: usize, rng: &mut Rng) -> Mat<T> {
        Mat::from_fn(rows, cols, |_, _| T::cast(self.sample(rng)))
    }

    /// Fills an existing buffer in memory order.
    pub fn fill<T: Scalar>(&self, out: &mut [T], rng: &mut Rng) {
        for v in out {
            *v = T::cast(self.sample(rng));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_bound_and_checks() {
        let mut rng = Rng::seed_from(1);
        let m: Mat<f64> = Init::TorchRecurrent { hidden: 16 }.matrix(64, 16, &mut rng);
        assert!(m.iter().all(|v| v.abs() <= 0.25));
        assert!(m.iter().any(|v| v.abs() > 0.2));
        assert!(Init::Uniform { lo: 1.0, hi: 0.0 }.check().is_err());
        assert!(Init::Normal { mean: 0.0, std: f64::NAN }.check().is_err());
        assert!(Init::TorchRecurrent { hidden: 0 }.check().is_err());
        let mean = (0..20_000).map(|_| Init::Normal { mean: 2.0, std: 0.5 }.sample(&mut rng)).sum::<f64>()
            / 20_000.0;
        assert!((mean - 2.0).abs() < 0.02, "{mean}");
    }
}
