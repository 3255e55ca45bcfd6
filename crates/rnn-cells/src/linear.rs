//! The linear recurrence of the counting-ones stage: one state, one input, no nonlinearity.
//!
//! For a batch of `B` binary streams of `n` steps, each sample `b` evolves as
//!
//! ```text
//! s_k = s_{k-1}·w_rec + x_k·w_x        k = 1..n,   s_0 given (zero by default)
//! ```
//!
//! Shapes: `I = H = 1`; inputs `x` are `1 × (n·B)` (column `(k-1)·B + b` holds `x_k` of
//! sample `b`), states are `1 × B`, the outputs `s_1..s_n` are `1 × (n·B)`. The parameters
//! `w_x` and `w_rec` are `1 × 1` matrices named `"w_x"` and `"w_rec"`.
//!
//! Backward through time. Write `δ_k = dξ/ds_k` for the total gradient reaching state `k`: the
//! loss gradient on output `k` (`d_out`), plus, for `k = n`, the gradient on the final state
//! (`d_final`), plus what flows back from step `k+1`:
//!
//! ```text
//! δ_n     = d_out_n + d_final
//! δ_{k-1} = d_out_{k-1} + δ_k·w_rec          (δ_0 = δ_1·w_rec is dξ/ds_0)
//! dξ/dw_x   = Σ_k Σ_b δ_k·x_k
//! dξ/dw_rec = Σ_k Σ_b δ_k·s_{k-1}
//! dξ/dx_k   = δ_k·w_x
//! ```
//!
//! Unrolled, `s_n = w_x·Σ_k x_k·w_rec^{n-k} + s_0·w_rec^n`: a gradient reaching step `k` from
//! the end is scaled by `w_rec^{n-k}`, so it explodes once `|w_rec| > 1` and vanishes below.
//!
//! The stage's loss, [`last_state_mse`], is the mean squared error of the final state against
//! the targets over the batch, `ξ = (1/B)·Σ_b (s_{n,b} - t_b)²`, whose gradient is
//! `dξ/ds_{n,b} = 2·(s_{n,b} - t_b)/B`.

use rnn_tensor::init::Init;
use rnn_tensor::{Mat, Parameters, Rng, Scalar};

use crate::{CellError, Recurrence, SeqInput};

/// The parameters of a [`LinearCell`] (and, as the same type, their gradients).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearParams<T: Scalar> {
    /// The input weight, `1 × 1`, named `"w_x"`.
    pub w_x: Mat<T>,
    /// The recurrent weight, `1 × 1`, named `"w_rec"`.
    pub w_rec: Mat<T>,
}

impl<T: Scalar> LinearParams<T> {
    /// Parameters with the given values.
    pub fn new(w_x: T, w_rec: T) -> Self {
        Self { w_x: Mat::from_element(1, 1, w_x), w_rec: Mat::from_element(1, 1, w_rec) }
    }

    /// `w_x` as a number.
    pub fn wx(&self) -> T {
        self.w_x[(0, 0)]
    }

    /// `w_rec` as a number.
    pub fn wrec(&self) -> T {
        self.w_rec[(0, 0)]
    }
}

impl<T: Scalar> Parameters<T> for LinearParams<T> {
    fn named_params(&self) -> Vec<(String, &Mat<T>)> {
        vec![("w_x".into(), &self.w_x), ("w_rec".into(), &self.w_rec)]
    }
    fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<T>)> {
        vec![("w_x".into(), &mut self.w_x), ("w_rec".into(), &mut self.w_rec)]
    }
}

/// The state of a [`LinearCell`]: one value per sample.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearState<T: Scalar> {
    /// `s`, `1 × B`.
    pub s: Mat<T>,
}
crate::state::impl_state!(LinearState { s });

/// What [`LinearCell::forward`] keeps for backward.
#[derive(Clone, Debug, Default)]
pub struct LinearCache<T: Scalar> {
    /// `s_0`, `1 × B`.
    s0: Mat<T>,
    /// `s_1..s_n`, `1 × (n·B)`.
    states: Mat<T>,
    /// `B`.
    batch: usize,
}

/// Configuration of a [`LinearCell`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearConfig {
    /// The initial `(w_x, w_rec)`. Default `None`: both drawn from PyTorch's recurrent
    /// initialiser with `H = 1`, `U(-1, 1)`.
    pub weights: Option<(f64, f64)>,
}

impl Default for LinearConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl LinearConfig {
    /// The defaults. The cell has no sizes to choose: `I = H = 1`.
    pub fn new() -> Self {
        Self { weights: None }
    }

    /// Starts from the given weights instead of random ones.
    pub fn with_weights(mut self, w_x: f64, w_rec: f64) -> Self {
        self.weights = Some((w_x, w_rec));
        self
    }

    /// Checks the configuration and builds the cell; `rng` draws the weights unless they were
    /// given.
    pub fn build<T: Scalar>(self, rng: &mut Rng) -> Result<LinearCell<T>, CellError> {
        let (w_x, w_rec) = match self.weights {
            Some((a, b)) => {
                if !(a.is_finite() && b.is_finite()) {
                    return Err(CellError::InvalidConfig(format!(
                        "the linear cell's weights must be finite, got w_x = {a}, w_rec = {b}"
                    )));
                }
                (a, b)
            }
            None => {
                let init = Init::TorchRecurrent { hidden: 1 };
                (init.sample(rng), init.sample(rng))
            }
        };
        Ok(LinearCell { params: LinearParams::new(T::cast(w_x), T::cast(w_rec)) })
    }
}

/// The linear recurrence `s_k = s_{k-1}·w_rec + x_k·w_x` (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct LinearCell<T: Scalar> {
    /// The parameters.
    pub params: LinearParams<T>,
}

impl<T: Scalar> LinearCell<T> {
    /// All-zero gradients shaped like the parameters.
    pub fn zero_grads(&self) -> LinearParams<T> {
        LinearParams::new(T::ZERO, T::ZERO)
    }

    /// The stage's training objective in one call: runs the sequence `x` (`1 × (n·B)`) from a
    /// zero state, computes [`last_state_mse`] of the final state against `targets` (length
    /// `B`), and **adds** `dξ/dw_x` and `dξ/dw_rec` into `grads`. Returns the loss.
    pub fn mse_gradients(
        &self,
        x: &Mat<T>,
        batch: usize,
        targets: &[T],
        cache: &mut LinearCache<T>,
        grads: &mut LinearParams<T>,
    ) -> Result<T, CellError> {
        check_sequence(x, batch)?;
        let s0 = self.zero_state(batch);
        let last = self.forward(SeqInput::Dense(x), batch, &s0, cache);
        let (loss, d_last) = last_state_mse(&last.s, targets)?;
        let d_out = Mat::zeros(1, x.ncols());
        self.backward(SeqInput::Dense(x), cache, &d_out, &LinearState { s: d_last }, grads, None);
        Ok(loss)
    }

    /// The final state for a sequence `x` (`1 × (n·B)`) from a zero state, without a cache:
    /// the model's counts.
    pub fn run(&self, x: &Mat<T>, batch: usize) -> Result<Mat<T>, CellError> {
        check_sequence(x, batch)?;
        let (wx, wr) = (self.params.wx(), self.params.wrec());
        let mut s = Mat::zeros(1, batch);
        for block in x.as_slice().chunks_exact(batch) {
            for (v, &xk) in s.iter_mut().zip(block) {
                // s_k = s_{k-1}·w_rec + x_k·w_x
                *v = *v * wr + xk * wx;
            }
        }
        Ok(s)
    }
}

/// Checks that `x` is a `1 × (n·B)` sequence for a batch of `batch`.
fn check_sequence<T: Scalar>(x: &Mat<T>, batch: usize) -> Result<(), CellError> {
    if x.nrows() != 1 || batch == 0 || !x.ncols().is_multiple_of(batch) {
        return Err(CellError::InvalidInput(format!(
            "the linear cell needs inputs of shape 1 × (steps·batch) with batch > 0, \
             got {:?} with batch {batch}",
            x.shape()
        )));
    }
    Ok(())
}

/// The input value of column `j`: the dense value, or 1 for an index input (the one-hot of
/// the single input feature).
#[inline]
fn input_at<T: Scalar>(x: &SeqInput<'_, T>, j: usize) -> T {
    match x {
        SeqInput::Dense(m) => m[(0, j)],
        SeqInput::Index(ix) => {
            assert!(ix[j] == 0, "linear cell: index input {} at column {j}, input size is 1", ix[j]);
            T::ONE
        }
    }
}

impl<T: Scalar> Recurrence<T> for LinearCell<T> {
    type State = LinearState<T>;
    type Params = LinearParams<T>;
    type Cache = LinearCache<T>;

    fn input_size(&self) -> usize {
        1
    }
    fn hidden_size(&self) -> usize {
        1
    }
    fn params(&self) -> &LinearParams<T> {
        &self.params
    }
    fn params_mut(&mut self) -> &mut LinearParams<T> {
        &mut self.params
    }

    fn zero_state(&self, batch: usize) -> LinearState<T> {
        LinearState { s: Mat::zeros(1, batch) }
    }

    fn state_output(state: &LinearState<T>) -> &Mat<T> {
        &state.s
    }

    fn step(&self, x: SeqInput<'_, T>, state: &mut LinearState<T>) {
        let b = state.s.ncols();
        assert_eq!(x.columns(), b, "linear step: {} input columns for a state of batch {b}", x.columns());
        let (wx, wr) = (self.params.wx(), self.params.wrec());
        for j in 0..b {
            // s_k = s_{k-1}·w_rec + x_k·w_x
            state.s[(0, j)] = state.s[(0, j)] * wr + input_at(&x, j) * wx;
        }
    }

    fn forward(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &LinearState<T>,
        cache: &mut LinearCache<T>,
    ) -> LinearState<T> {
        let cols = x.columns();
        assert!(
            batch > 0 && cols.is_multiple_of(batch) && h0.s.shape() == (1, batch),
            "linear forward: {cols} input columns, batch {batch}, s_0 {:?}",
            h0.s.shape()
        );
        let (wx, wr) = (self.params.wx(), self.params.wrec());
        if cache.states.shape() != (1, cols) {
            cache.states = Mat::zeros(1, cols);
        }
        cache.s0.clone_from(&h0.s);
        cache.batch = batch;
        let s = cache.states.as_mut_slice();
        // The input projection of every step at once: s_k ← x_k·w_x.
        for (j, v) in s.iter_mut().enumerate() {
            *v = input_at(&x, j) * wx;
        }
        // Then the recurrence: s_k += s_{k-1}·w_rec, block by block.
        if cols > 0 {
            for (v, &p) in s[..batch].iter_mut().zip(h0.s.as_slice()) {
                *v += p * wr;
            }
        }
        for j in batch..cols {
            let prev = s[j - batch];
            s[j] += prev * wr;
        }
        let last =
            if cols == 0 { h0.s.clone() } else { cache.states.columns(cols - batch, batch).into_owned() };
        LinearState { s: last }
    }

    fn outputs<'c>(&self, cache: &'c LinearCache<T>) -> &'c Mat<T> {
        &cache.states
    }

    fn backward(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut LinearCache<T>,
        d_out: &Mat<T>,
        d_final: &LinearState<T>,
        grads: &mut LinearParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) -> LinearState<T> {
        let (batch, cols) = (cache.batch, cache.states.ncols());
        assert!(
            x.columns() == cols && d_out.shape() == (1, cols) && d_final.s.shape() == (1, batch),
            "linear backward: x has {} columns, d_out {:?} and d_final {:?} for a forward of 1 × {cols}, batch {batch}",
            x.columns(),
            d_out.shape(),
            d_final.s.shape()
        );
        let (wx, wr) = (self.params.wx(), self.params.wrec());
        let s = cache.states.as_slice();
        let dout = d_out.as_slice();
        // δ_k for every step, filled from the end: δ_n = d_out_n + d_final,
        // δ_{k-1} = d_out_{k-1} + δ_k·w_rec.
        let mut delta = vec![T::ZERO; cols];
        let mut d_s0 = d_final.s.clone();
        for j in (0..cols).rev() {
            let carry = if j + batch < cols { delta[j + batch] * wr } else { d_final.s[(0, j % batch)] };
            delta[j] = dout[j] + carry;
        }
        if cols > 0 {
            // dξ/ds_0 = δ_1·w_rec
            for (d, &v) in d_s0.as_mut_slice().iter_mut().zip(&delta[..batch]) {
                *d = v * wr;
            }
        }
        // After the loop, over all steps at once:
        // dξ/dw_x += Σ δ_k·x_k;  dξ/dw_rec += Σ δ_k·s_{k-1} (s_0 for the first block).
        let mut gx = T::ZERO;
        let mut grec = T::ZERO;
        for j in 0..cols {
            gx += delta[j] * input_at(&x, j);
            let prev = if j < batch { cache.s0[(0, j)] } else { s[j - batch] };
            grec += delta[j] * prev;
        }
        grads.w_x[(0, 0)] += gx;
        grads.w_rec[(0, 0)] += grec;
        if let (Some(dx), SeqInput::Dense(_)) = (d_x, x) {
            if dx.shape() != (1, cols) {
                *dx = Mat::zeros(1, cols);
            }
            // dξ/dx_k = δ_k·w_x
            for (d, &v) in dx.as_mut_slice().iter_mut().zip(&delta) {
                *d = v * wx;
            }
        }
        LinearState { s: d_s0 }
    }
}

/// The tutorial's loss: the mean squared error of the final states `last` (`1 × B`) against the
/// `targets` (length `B`), `ξ = (1/B)·Σ_b (s_{n,b} - t_b)²`.
///
/// Returns `ξ` and `dξ/ds_n = 2·(s_n - t)/B` (`1 × B`).
pub fn last_state_mse<T: Scalar>(last: &Mat<T>, targets: &[T]) -> Result<(T, Mat<T>), CellError> {
    if last.nrows() != 1 || last.ncols() != targets.len() || targets.is_empty() {
        return Err(CellError::InvalidInput(format!(
            "last_state_mse needs one target per sequence: states {:?}, {} targets",
            last.shape(),
            targets.len()
        )));
    }
    let n = <T as Scalar>::from_usize(targets.len());
    let mut loss = T::ZERO;
    let mut grad = Mat::zeros(1, targets.len());
    for (j, &t) in targets.iter().enumerate() {
        let e = last[(0, j)] - t;
        loss += e * e;
        // dξ/ds_{n,b} = 2·(s_{n,b} - t_b)/B
        grad[(0, j)] = T::cast(2.0) * e / n;
    }
    Ok((loss / n, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;
    use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
    use rnn_tensor::Rng;

    /// The loss `Σ w_out ⊙ outputs + Σ w_fin ⊙ s_n` for fixed random weights, so every output and
    /// the final state carry a gradient.
    fn probe_loss(
        cell: &LinearCell<f64>,
        x: &Mat<f64>,
        batch: usize,
        s0: &Mat<f64>,
        w_out: &Mat<f64>,
        w_fin: &Mat<f64>,
    ) -> f64 {
        let mut cache = LinearCache::default();
        let last = cell.forward(SeqInput::Dense(x), batch, &LinearState { s: s0.clone() }, &mut cache);
        cell.outputs(&cache).component_mul(w_out).sum() + last.s.component_mul(w_fin).sum()
    }

    fn binary(rng: &mut Rng, cols: usize) -> Mat<f64> {
        Mat::from_fn(1, cols, |_, _| if rng.bit() { 1.0 } else { 0.0 })
    }

    proptest! {
        // A fixed seed and no persistence file: the same cases on every run.
        #![proptest_config(ProptestConfig {
            cases: 32,
            rng_seed: RngSeed::Fixed(0x11ea7),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        /// Every gradient of the cell against the fourth-order numeric one (h = 1e-4), relative
        /// error below 1e-9 in f64, over random batch, length and weights with 0.25 ≤ |w_rec| ≤ 1.6
        /// and 0.25 ≤ |w_x| ≤ 2 (a zero weight makes the input or s_0 gradient exactly zero, which
        /// the relative error cannot judge against rounding noise).
        #[test]
        fn gradients_match_numeric(
            batch in 1usize..6,
            steps in 1usize..12,
            wx in prop_oneof![-2.0f64..-0.25, 0.25f64..2.0],
            wrec in prop_oneof![-1.6f64..-0.25, 0.25f64..1.6],
            seed in 0u64..1000,
        ) {
            let mut rng = Rng::seed_from(seed);
            let cols = steps * batch;
            let x = binary(&mut rng, cols);
            let normal = Init::Normal { mean: 0.0, std: 1.0 };
            let s0: Mat<f64> = normal.matrix(1, batch, &mut rng);
            let w_out: Mat<f64> = normal.matrix(1, cols, &mut rng);
            let w_fin: Mat<f64> = normal.matrix(1, batch, &mut rng);
            let cell = LinearConfig::new().with_weights(wx, wrec).build::<f64>(&mut rng).unwrap();

            let mut cache = LinearCache::default();
            cell.forward(SeqInput::Dense(&x), batch, &LinearState { s: s0.clone() }, &mut cache);
            let mut grads = cell.zero_grads();
            let mut dx = Mat::zeros(0, 0);
            let ds0 = cell.backward(SeqInput::Dense(&x), &mut cache, &w_out, &LinearState { s: w_fin.clone() }, &mut grads, Some(&mut dx));

            let mut w = [wx, wrec];
            let num = numeric_gradient(|v| {
                let c = LinearCell { params: LinearParams::new(v[0], v[1]) };
                probe_loss(&c, &x, batch, &s0, &w_out, &w_fin)
            }, &mut w, 1e-4);
            let err = rel_error(&num, &[grads.wx(), grads.wrec()]);
            prop_assert!(err < 1e-9, "weights: numeric {num:?}, analytic {grads:?}, rel error {err:e}");

            let mut xs = x.as_slice().to_vec();
            // The probe loss is linear in the inputs and in s_0, so the difference formula is
            // exact for any step: a large one (0.5) keeps the rounding error (~ε·|ξ|/h) small.
            let num = numeric_gradient(|v| probe_loss(&cell, &Mat::from_row_slice(1, cols, v), batch, &s0, &w_out, &w_fin), &mut xs, 0.5);
            let err = rel_error(&num, dx.as_slice());
            prop_assert!(err < 1e-9, "inputs: rel error {err:e}");

            let mut s0v = s0.as_slice().to_vec();
            let num = numeric_gradient(|v| probe_loss(&cell, &x, batch, &Mat::from_row_slice(1, batch, v), &w_out, &w_fin), &mut s0v, 0.5);
            let err = rel_error(&num, ds0.s.as_slice());
            prop_assert!(err < 1e-9, "s_0: rel error {err:e}");
        }

        /// The stage's loss gradient (MSE of the last state), including the exploding region
        /// |w_rec| > 1, against the numeric one: relative error below 1e-9 in f64. |w_rec| ≥ 0.25:
        /// at w_rec = 0 only the last input reaches s_n and both gradients can be exactly zero.
        #[test]
        fn mse_gradients_match_numeric(
            batch in 1usize..6,
            steps in 1usize..12,
            wx in -2.0f64..2.0,
            wrec in prop_oneof![-2.5f64..-0.25, 0.25f64..2.5],
            seed in 0u64..1000,
        ) {
            let mut rng = Rng::seed_from(seed);
            // At least one 1, so the gradient is not zero up to rounding (all-zero streams give
            // s_n = 0 whatever the weights).
            let mut x = binary(&mut rng, steps * batch);
            x[(0, 0)] = 1.0;
            let targets: Vec<f64> = (0..batch).map(|_| rng.uniform(0.0, steps as f64)).collect();
            let cell = LinearConfig::new().with_weights(wx, wrec).build::<f64>(&mut rng).unwrap();
            let mut grads = cell.zero_grads();
            let mut cache = LinearCache::default();
            let loss = cell.mse_gradients(&x, batch, &targets, &mut cache, &mut grads).unwrap();

            let loss_at = |v: &[f64]| {
                let c = LinearCell { params: LinearParams::new(v[0], v[1]) };
                last_state_mse(&c.run(&x, batch).unwrap(), &targets).unwrap().0
            };
            prop_assert!((loss - loss_at(&[wx, wrec])).abs() <= 1e-12 * loss.abs().max(1.0));
            let mut w = [wx, wrec];
            let num = numeric_gradient(loss_at, &mut w, 1e-4);
            let err = rel_error(&num, &[grads.wx(), grads.wrec()]);
            prop_assert!(err < 1e-9, "numeric {num:?}, analytic {grads:?}, rel error {err:e}");
        }
    }

    #[test]
    fn counts_ones_with_unit_weights_and_names_params() {
        let mut rng = Rng::seed_from(0);
        let cell = LinearConfig::new().with_weights(1.0, 1.0).build::<f32>(&mut rng).unwrap();
        // Two sequences of three steps, step-major: (1,0,1) and (1,1,1).
        let x = Mat::from_row_slice(1, 6, &[1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(cell.run(&x, 2).unwrap().as_slice(), &[2.0, 3.0]);
        let names: Vec<String> = cell.params.named_params().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["w_x", "w_rec"]);
        // The same through index inputs (every 1 is index 0 of a one-feature one-hot).
        let mut cache = LinearCache::default();
        let last = cell.forward(SeqInput::Index(&[0, 0]), 1, &cell.zero_state(1), &mut cache);
        assert_eq!(last.s[(0, 0)], 2.0);
        assert_eq!(cell.outputs(&cache).as_slice(), &[1.0, 2.0]);
    }

    #[test]
    fn user_errors_are_reported() {
        let mut rng = Rng::seed_from(0);
        assert!(LinearConfig::new().with_weights(f64::NAN, 1.0).build::<f64>(&mut rng).is_err());
        let cell = LinearConfig::new().build::<f64>(&mut rng).unwrap();
        assert!(cell.params.wx().abs() <= 1.0 && cell.params.wrec().abs() <= 1.0);
        let x = Mat::zeros(1, 5);
        let e = cell.run(&x, 2).unwrap_err();
        assert!(e.to_string().contains("steps·batch"), "{e}");
        let e = last_state_mse(&Mat::zeros(1, 2), &[1.0]).unwrap_err();
        assert!(e.to_string().contains("one target per sequence"), "{e}");
    }
}
