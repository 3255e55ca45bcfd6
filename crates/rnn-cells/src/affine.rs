//! A temporal affine layer: the same `y = W·h + b` applied to every column (every step of every
//! sequence), as `torch.nn.Linear` applied over time.
//!
//! Shapes: `h` is `in × N`, `y` is `out × N` (`N = T·B`), `weight` is `[out, in]` and `bias`
//! `[out]`, PyTorch's layouts and names.
//!
//! Backward, for upstream `dy`:
//!
//! ```text
//! dW = dy · hᵀ        db = Σ_columns dy        dh = Wᵀ · dy
//! ```

use rnn_tensor::init::Init;
use rnn_tensor::{gemm, Mat, Parameters, Rng, Scalar, Trans};

use crate::CellError;

/// The parameters of an [`Affine`] layer (and, as the same type, their gradients).
#[derive(Clone, Debug, PartialEq)]
pub struct AffineParams<T: Scalar> {
    /// `[out, in]`.
    pub weight: Mat<T>,
    /// `[out]`, stored as an `out × 1` matrix.
    pub bias: Mat<T>,
    /// The name prefix, for example `"head."` gives `head.weight` and `head.bias`.
    pub prefix: String,
}

impl<T: Scalar> Parameters<T> for AffineParams<T> {
    fn named_params(&self) -> Vec<(String, &Mat<T>)> {
        vec![(format!("{}weight", self.prefix), &self.weight), (format!("{}bias", self.prefix), &self.bias)]
    }
    fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<T>)> {
        vec![
            (format!("{}weight", self.prefix), &mut self.weight),
            (format!("{}bias", self.prefix), &mut self.bias),
        ]
    }
}

/// `y = W·h + b` over every column.
#[derive(Clone, Debug, PartialEq)]
pub struct Affine<T: Scalar> {
    /// The parameters.
    pub params: AffineParams<T>,
}

/// How to build an [`Affine`] layer, as every layer of this crate is built:
/// `AffineConfig::new(input, output).with_init(..).with_prefix(..).build(rng)`.
#[derive(Clone, Debug, PartialEq)]
pub struct AffineConfig {
    input: usize,
    output: usize,
    init: Option<Init>,
    prefix: String,
}

impl AffineConfig {
    /// A layer from `input` to `output` features, initialised as `torch.nn.Linear`.
    pub fn new(input: usize, output: usize) -> Self {
        Self { input, output, init: None, prefix: String::new() }
    }

    /// The initialiser of the weight and the bias. Default: `torch.nn.Linear`'s
    /// `U(-1/sqrt(in), 1/sqrt(in))`.
    pub fn with_init(mut self, init: Init) -> Self {
        self.init = Some(init);
        self
    }

    /// The name prefix (`"head."` gives `head.weight`, `head.bias`). Default: none.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// Checks the sizes and the initialiser.
    pub fn check(&self) -> Result<(), CellError> {
        if self.input == 0 || self.output == 0 {
            return Err(CellError::InvalidConfig(format!(
                "an affine layer needs input > 0 and output > 0, got {} -> {}",
                self.input, self.output
            )));
        }
        if let Some(init) = self.init {
            init.check().map_err(|e| CellError::InvalidConfig(format!("affine layer initialiser: {e}")))?;
        }
        Ok(())
    }

    /// Checks the configuration and draws the weight, then the bias.
    pub fn build<T: Scalar>(&self, rng: &mut Rng) -> Result<Affine<T>, CellError> {
        self.check()?;
        let init = self.init.unwrap_or(Init::TorchRecurrent { hidden: self.input });
        let weight = init.matrix(self.output, self.input, rng);
        let bias = init.matrix(self.output, 1, rng);
        Ok(Affine { params: AffineParams { weight, bias, prefix: self.prefix.clone() } })
    }
}

impl<T: Scalar> Affine<T> {
    /// A layer from existing tensors (for example loaded from PyTorch), checking their shapes:
    /// `weight` `[out, in]` and `bias` `[out]`.
    pub fn from_params(params: AffineParams<T>) -> Result<Self, CellError> {
        let (out, inp) = params.weight.shape();
        if out == 0 || inp == 0 {
            return Err(CellError::InvalidConfig(format!(
                "affine parameters: {}weight is [{out}, {inp}], expected [out, in] with both > 0",
                params.prefix
            )));
        }
        if params.bias.shape() != (out, 1) {
            return Err(CellError::InvalidConfig(format!(
                "affine parameters: {}bias has {} values ({}x{}), expected [{out}] to match {}weight [{out}, {inp}]",
                params.prefix,
                params.bias.len(),
                params.bias.nrows(),
                params.bias.ncols(),
                params.prefix
            )));
        }
        Ok(Self { params })
    }

    /// Input size.
    pub fn input_size(&self) -> usize {
        self.params.weight.ncols()
    }

    /// Output size.
    pub fn output_size(&self) -> usize {
        self.params.weight.nrows()
    }

    /// All-zero gradients shaped like the parameters.
    pub fn zero_grads(&self) -> AffineParams<T> {
        let mut g = self.params.clone();
        g.zero();
        g
    }

    /// `y = W·h + b` into `y` (`out × N`), resized if needed.
    pub fn forward_into(&self, h: &Mat<T>, y: &mut Mat<T>) {
        let (out, n) = (self.output_size(), h.ncols());
        assert_eq!(
            h.nrows(),
            self.input_size(),
            "affine forward: h has {} rows, weight is {:?}",
            h.nrows(),
            self.params.weight.shape()
        );
        if y.shape() != (out, n) {
            *y = Mat::zeros(out, n);
        }
        let b = self.params.bias.as_slice();
        for col in y.as_mut_slice().chunks_exact_mut(out) {
            col.copy_from_slice(b);
        }
        gemm(T::ONE, &self.params.weight, Trans::No, h, Trans::No, T::ONE, y);
    }

    /// `y = W·h + b`, allocating `y`.
    pub fn forward(&self, h: &Mat<T>) -> Mat<T> {
        let mut y = Mat::zeros(0, 0);
        self.forward_into(h, &mut y);
        y
    }

    /// Adds `dW = dy·hᵀ` and `db = Σ dy` into `grads`, and returns `dh = Wᵀ·dy` (`in × N`).
    pub fn backward(&self, h: &Mat<T>, dy: &Mat<T>, grads: &mut AffineParams<T>) -> Mat<T> {
        let mut dh = Mat::zeros(self.input_size(), h.ncols());
        self.backward_into(h, dy, grads, &mut dh);
        dh
    }

    /// As [`Affine::backward`], writing `dh` into a caller's buffer of shape `in × N`.
    pub fn backward_into(&self, h: &Mat<T>, dy: &Mat<T>, grads: &mut AffineParams<T>, dh: &mut Mat<T>) {
        assert_eq!(
            dy.shape(),
            (self.output_size(), h.ncols()),
            "affine backward: dy is {:?}, h is {:?}",
            dy.shape(),
            h.shape()
        );
        // dW += dy · hᵀ
        gemm(T::ONE, dy, Trans::No, h, Trans::Yes, T::ONE, &mut grads.weight);
        // db += Σ_columns dy
        let out = self.output_size();
        let db = grads.bias.as_mut_slice();
        for col in dy.as_slice().chunks_exact(out) {
            for (d, &v) in db.iter_mut().zip(col) {
                *d += v;
            }
        }
        // dh = Wᵀ · dy
        gemm(T::ONE, &self.params.weight, Trans::Yes, dy, Trans::No, T::ZERO, dh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnn_tensor::gradcheck::{numeric_gradient, rel_error};

    #[test]
    fn gradients_match_numeric() {
        let mut rng = Rng::seed_from(11);
        let layer = AffineConfig::new(5, 3).with_prefix("head.").build::<f64>(&mut rng).unwrap();
        let h: Mat<f64> = Init::Normal { mean: 0.0, std: 1.0 }.matrix(5, 7, &mut rng);
        let w: Mat<f64> = Init::Normal { mean: 0.0, std: 1.0 }.matrix(3, 7, &mut rng);
        // loss = Σ w ⊙ y, so dy = w.
        let mut grads = layer.zero_grads();
        let dh = layer.backward(&h, &w, &mut grads);
        let names: Vec<String> = grads.named_params().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["head.weight", "head.bias"]);
        let mut flat_w = layer.params.weight.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                let mut l = layer.clone();
                l.params.weight.copy_from_slice(v);
                l.forward(&h).component_mul(&w).sum()
            },
            &mut flat_w,
            1e-3,
        );
        assert!(rel_error(&num, grads.weight.as_slice()) < 1e-10);
        let mut flat_b = layer.params.bias.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                let mut l = layer.clone();
                l.params.bias.copy_from_slice(v);
                l.forward(&h).component_mul(&w).sum()
            },
            &mut flat_b,
            1e-3,
        );
        assert!(rel_error(&num, grads.bias.as_slice()) < 1e-10);
        let mut flat_h = h.as_slice().to_vec();
        let num = numeric_gradient(
            |v| layer.forward(&Mat::from_column_slice(5, 7, v)).component_mul(&w).sum(),
            &mut flat_h,
            1e-3,
        );
        assert!(rel_error(&num, dh.as_slice()) < 1e-10);
    }

    #[test]
    fn zero_sizes_are_rejected() {
        let mut rng = Rng::seed_from(0);
        assert!(AffineConfig::new(0, 3).build::<f32>(&mut rng).is_err());
    }
}
