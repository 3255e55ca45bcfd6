//! The vanilla (Elman) recurrent cell, as PyTorch's `nn.RNN`.
//!
//! For input `x_t` (`I × B`) and previous state `h_{t-1}` (`H × B`):
//!
//! ```text
//! a_t = W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh        (pre-activation, H × B)
//! h_t = f(a_t)                                        f ∈ {tanh, relu, sigmoid, identity}
//! ```
//!
//! with PyTorch's names and layouts: `weight_ih_l{k}` `[H, I]`, `weight_hh_l{k}` `[H, H]`,
//! `bias_ih_l{k}` and `bias_hh_l{k}` `[H]` (left out when the cell has no bias, like
//! `bias=False`). PyTorch initialises every tensor from `U(-1/√H, 1/√H)`, and so does
//! [`RnnConfig`] unless told otherwise.
//!
//! ## Backpropagation through time
//!
//! Given `dL/dh_t` from above (`d_out`, `H × B` per step) and `dL/dh_T` from a later consumer of
//! the final state (`d_final`), walking `t = T … 1`:
//!
//! ```text
//! dh_t   = d_out_t + W_hhᵀ·da_{t+1}         (the second term is d_final at t = T)
//! da_t   = dh_t ⊙ f'(a_t)                   (f' read off h_t: tanh 1-h², sigmoid h(1-h), relu [h>0])
//! dh_0   = W_hhᵀ·da_1
//! ```
//!
//! and after the loop, over all steps at once (`dA = [da_1 … da_T]`, `H × (T·B)`):
//!
//! ```text
//! dW_ih = dA·Xᵀ                             (Index input: scatter-add of dA's columns)
//! dW_hh = Σ_t da_t·h_{t-1}ᵀ = dA[:, B..]·[h_1 … h_{T-1}]ᵀ + dA[:, ..B]·h_0ᵀ
//! db_ih = db_hh = Σ_columns dA
//! dX    = W_ihᵀ·dA
//! ```
//!
//! ## Where the time goes
//! The input projection `W_ih·X` of every step is one GEMM before the time loop, straight into
//! the output buffer; inside the loop only `W_hh·h_{t-1}` (a GEMV when `B = 1`) and the
//! activation run. Backward keeps every `da_t` in one buffer so the three parameter/input
//! products are one GEMM each after the loop. All buffers live in [`RnnCache`] and are reused,
//! so a training loop allocates nothing once they have grown to size (use
//! [`Rnn::forward_into`] and [`Rnn::backward_into`], which also write the final state and
//! `dh_0` into the caller's buffers).

use std::cell::RefCell;

use rnn_tensor::activation::Activation;
use rnn_tensor::init::Init;
use rnn_tensor::{gemm, Mat, MatView, MatViewMut, PackedLhs, Parameters, Rng, Scalar, Trans};

use crate::gated::{
    add_column_sums, for_each_batch_part, input_backward, RecurrentParams, SharedCols, StepWeight,
};
use crate::{CellError, Recurrence, SeqInput, Stack};

/// Configuration of an [`Rnn`] cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnConfig {
    /// Input size `I` (required, > 0).
    pub input: usize,
    /// Hidden size `H` (required, > 0).
    pub hidden: usize,
    /// The nonlinearity `f`. Default [`Activation::Tanh`] (PyTorch's default).
    pub activation: Activation,
    /// Whether the cell has `bias_ih` and `bias_hh`. Default `true`.
    pub bias: bool,
    /// The initialiser of every tensor. Default `None`: PyTorch's `U(-1/√H, 1/√H)`.
    pub init: Option<Init>,
    /// The layer index `k` in the names (`weight_ih_l{k}`). Default 0.
    pub layer: usize,
}

impl RnnConfig {
    /// A cell from `input` to `hidden` units with PyTorch's defaults.
    pub fn new(input: usize, hidden: usize) -> Self {
        Self { input, hidden, activation: Activation::Tanh, bias: true, init: None, layer: 0 }
    }

    /// Sets the nonlinearity.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Turns the biases on or off.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets the initialiser of every tensor (weights and biases).
    pub fn with_init(mut self, init: Init) -> Self {
        self.init = Some(init);
        self
    }

    /// Sets the layer index used in the parameter names.
    pub fn with_layer(mut self, layer: usize) -> Self {
        self.layer = layer;
        self
    }

    /// Checks the configuration.
    pub fn check(&self) -> Result<(), CellError> {
        if self.input == 0 || self.hidden == 0 {
            return Err(CellError::InvalidConfig(format!(
                "an RNN cell needs input > 0 and hidden > 0, got input {} and hidden {}",
                self.input, self.hidden
            )));
        }
        if let Some(init) = self.init {
            init.check().map_err(|e| CellError::InvalidConfig(format!("RNN cell: {e}")))?;
        }
        Ok(())
    }

    /// A stack of `num_layers` RNN cells, as `torch.nn.RNN(input, hidden, num_layers)`: layer 0
    /// reads `input` features, the others `hidden`; layer `k`'s tensors are named `_l{k}` and
    /// drawn in PyTorch's order, layer by layer. The activation and bias apply to every layer.
    pub fn build_stack<T: Scalar>(
        &self,
        num_layers: usize,
        rng: &mut Rng,
    ) -> Result<Stack<Rnn<T>>, CellError> {
        Stack::from_fn(num_layers, |k| {
            let input = if k == 0 { self.input } else { self.hidden };
            RnnConfig { input, ..*self }.with_layer(k).build(rng)
        })
    }

    /// Checks the configuration and draws the parameters, in PyTorch's order
    /// (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`).
    pub fn build<T: Scalar>(&self, rng: &mut Rng) -> Result<Rnn<T>, CellError> {
        self.check()?;
        let (i, h) = (self.input, self.hidden);
        let init = self.init.unwrap_or(Init::TorchRecurrent { hidden: h });
        let weight_ih = init.matrix(h, i, rng);
        let weight_hh = init.matrix(h, h, rng);
        let (bias_ih, bias_hh) = if self.bias {
            (Some(init.matrix(h, 1, rng)), Some(init.matrix(h, 1, rng)))
        } else {
            (None, None)
        };
        Rnn::from_params(
            RnnParams { weight_ih, weight_hh, bias_ih, bias_hh, layer: self.layer },
            self.activation,
        )
    }
}

/// The parameters of an [`Rnn`] cell (and, as the same type, their gradients): `weight_ih`
/// `[H, I]`, `weight_hh` `[H, H]`, `bias_ih`, `bias_hh` `[H]` (`None` without bias), the layout
/// every recurrent layer shares (with `G = 1`).
pub type RnnParams<T> = RecurrentParams<T>;

/// The state of an [`Rnn`] cell: the hidden vector of every sample.
#[derive(Clone, Debug, PartialEq)]
pub struct RnnState<T: Scalar> {
    /// `h`, `H × B`.
    pub h: Mat<T>,
}

/// What [`Rnn::forward`] keeps for backward, plus the scratch buffers of backward.
/// Reused between calls: buffers are reallocated only when a shape changes.
#[derive(Debug)]
pub struct RnnCache<T: Scalar> {
    /// `h_1 … h_T`, `H × (T·B)`.
    outputs: Mat<T>,
    /// `h_0`, `H × B`.
    h0: Mat<T>,
    /// `W_hh`, packed for the forward's time loop.
    w_hh_packed: PackedLhs<T>,
    /// Backward scratch: every `da_t` (`H × (T·B)`), the running `dh` (`H × B`), `W_ihᵀ` for the
    /// input gradient and `W_hhᵀ` packed for the time loop.
    scratch: RefCell<RnnScratch<T>>,
}

/// `(dA, dh, W_ihᵀ, packed W_hhᵀ)`: backward's buffers.
type RnnScratch<T> = (Mat<T>, Mat<T>, Mat<T>, PackedLhs<T>);

impl<T: Scalar> Default for RnnCache<T> {
    fn default() -> Self {
        Self {
            outputs: Mat::zeros(0, 0),
            h0: Mat::zeros(0, 0),
            w_hh_packed: PackedLhs::new(),
            scratch: RefCell::new((Mat::zeros(0, 0), Mat::zeros(0, 0), Mat::zeros(0, 0), PackedLhs::new())),
        }
    }
}

impl<T: Scalar> RnnCache<T> {
    /// The batch size of the last forward.
    pub fn batch(&self) -> usize {
        self.h0.ncols()
    }
}

/// Resizes `m` to `rows × cols` if it has another shape (contents are then unspecified).
fn ensure_shape<T: Scalar>(m: &mut Mat<T>, rows: usize, cols: usize) {
    if m.shape() != (rows, cols) {
        *m = Mat::zeros(rows, cols);
    }
}

/// The vanilla RNN cell `h_t = f(W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh)`; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Rnn<T: Scalar> {
    params: RnnParams<T>,
    activation: Activation,
}

impl<T: Scalar> Rnn<T> {
    /// A cell from existing parameters (for example loaded from PyTorch), checking their shapes.
    pub fn from_params(params: RnnParams<T>, activation: Activation) -> Result<Self, CellError> {
        let (h, i) = params.weight_ih.shape();
        let bad = |what: String| Err(CellError::InvalidConfig(format!("RNN parameters: {what}")));
        if h == 0 || i == 0 {
            return bad(format!("weight_ih is {h}x{i}; it must be [hidden, input] with both > 0"));
        }
        if params.weight_hh.shape() != (h, h) {
            return bad(format!(
                "weight_hh is {:?}, expected ({h}, {h}) to match weight_ih",
                params.weight_hh.shape()
            ));
        }
        match (&params.bias_ih, &params.bias_hh) {
            (None, None) => {}
            (Some(a), Some(b)) => {
                if a.shape() != (h, 1) || b.shape() != (h, 1) {
                    return bad(format!(
                        "bias_ih is {:?} and bias_hh {:?}, both must be ({h}, 1)",
                        a.shape(),
                        b.shape()
                    ));
                }
            }
            _ => return bad("give both bias_ih and bias_hh, or neither (bias=False)".into()),
        }
        Ok(Self { params, activation })
    }

    /// The nonlinearity.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Whether the cell has biases.
    pub fn has_bias(&self) -> bool {
        self.params.bias_ih.is_some()
    }

    /// All-zero gradients shaped (and named) like the parameters.
    pub fn zero_grads(&self) -> RnnParams<T> {
        let mut g = self.params.clone();
        g.zero();
        g
    }

    /// Writes `b_ih + b_hh` into every column of `block` (or zeros without bias).
    fn fill_bias(&self, block: &mut [T]) {
        let h = self.hidden_size();
        match (&self.params.bias_ih, &self.params.bias_hh) {
            (Some(bi), Some(bh)) => {
                for col in block.chunks_exact_mut(h) {
                    for ((c, &x), &y) in col.iter_mut().zip(bi.as_slice()).zip(bh.as_slice()) {
                        *c = x + y;
                    }
                }
            }
            _ => block.fill(T::ZERO),
        }
    }

    /// `out = W_ih·x + b_ih + b_hh` for every column of `x`; `out` is `H × x.columns()`.
    fn input_projection(&self, x: SeqInput<'_, T>, out: &mut Mat<T>) {
        let (h, i) = self.params.weight_ih.shape();
        match x {
            SeqInput::Dense(xm) => {
                assert_eq!(
                    (xm.nrows(), xm.ncols()),
                    (i, out.ncols()),
                    "RNN input projection: x is {:?}, weight_ih is {:?}",
                    xm.shape(),
                    self.params.weight_ih.shape()
                );
                self.fill_bias(out.as_mut_slice());
                // A = W_ih·X + (b_ih + b_hh)
                gemm(T::ONE, &self.params.weight_ih, Trans::No, xm, Trans::No, T::ONE, out);
            }
            SeqInput::Index(ix) => {
                assert_eq!(
                    ix.len(),
                    out.ncols(),
                    "RNN input projection: {} indices for {} columns",
                    ix.len(),
                    out.ncols()
                );
                self.fill_bias(out.as_mut_slice());
                let w = self.params.weight_ih.as_slice();
                for (col, &k) in out.as_mut_slice().chunks_exact_mut(h).zip(ix) {
                    assert!(k < i, "RNN input: index {k} is out of range for input size {i}");
                    // A[:, c] = W_ih[:, x_c] + b
                    for (c, &wv) in col.iter_mut().zip(&w[k * h..(k + 1) * h]) {
                        *c += wv;
                    }
                }
            }
        }
    }

    /// The forward pass over `x.columns() / batch` steps from `h0`, keeping what backward needs
    /// in `cache` and writing the final state into `h_final` (`H × B`, resized if needed).
    /// Allocates nothing once the cache and `h_final` have their shapes.
    pub fn forward_into(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &Mat<T>,
        cache: &mut RnnCache<T>,
        h_final: &mut Mat<T>,
    ) {
        let h = self.hidden_size();
        let n = x.columns();
        assert!(
            batch > 0 && n.is_multiple_of(batch),
            "RNN forward: {n} input columns is not a whole number of steps of batch {batch}"
        );
        assert_eq!(h0.shape(), (h, batch), "RNN forward: h0 is {:?}, expected ({h}, {batch})", h0.shape());
        let steps = n / batch;
        let hb = h * batch;
        ensure_shape(&mut cache.outputs, h, n);
        ensure_shape(&mut cache.h0, h, batch);
        cache.h0.copy_from(h0);
        // All steps' input projections at once, straight into the output buffer.
        self.input_projection(x, &mut cache.outputs);
        let act = self.activation;
        // The time loop, split by batch columns: each part owns columns `cols` of every step
        // block for the whole loop, so the parts never touch the same memory and each column is
        // computed exactly as without the split.
        let w_hh = StepWeight::new(&self.params.weight_hh, Trans::No, steps, &mut cache.w_hh_packed);
        let outs = SharedCols::new(&mut cache.outputs);
        for_each_batch_part(batch, h * h, |cols| {
            let nb = cols.len();
            for t in 0..steps {
                let col = t * batch + cols.start;
                // SAFETY: this part alone reads and writes columns `cols` of each step block, and
                // the outputs outlive the call.
                let mut cur = unsafe { outs.cols_mut(col, nb) };
                // a_t += W_hh·h_{t-1}
                if t == 0 {
                    w_hh.gemm(&h0.columns(cols.start, nb), T::ONE, &mut cur);
                } else {
                    w_hh.gemm(&unsafe { outs.cols_mut(col - batch, nb) }, T::ONE, &mut cur);
                }
                // h_t = f(a_t)
                act.forward_inplace(unsafe { outs.slice_mut(col, nb) });
            }
        });
        let out = cache.outputs.as_slice();
        ensure_shape(h_final, h, batch);
        if steps == 0 {
            h_final.copy_from(h0);
        } else {
            h_final.as_mut_slice().copy_from_slice(&out[(steps - 1) * hb..]);
        }
    }

    /// Backpropagation through time for the last forward (see the module docs), writing
    /// `dL/dh_0` into `d_h0` (`H × B`, resized if needed). Parameter gradients are added into
    /// `grads`; `d_x`, if given, is overwritten (dense input only). Allocates nothing once the
    /// cache's scratch buffers have their shapes.
    pub fn backward_into(
        &self,
        x: SeqInput<'_, T>,
        cache: &RnnCache<T>,
        d_out: &Mat<T>,
        d_final: &Mat<T>,
        grads: &mut RnnParams<T>,
        d_x: Option<&mut Mat<T>>,
        d_h0: &mut Mat<T>,
    ) {
        self.backward_with(x, cache, d_out, d_final, grads, d_x, Some(d_h0));
    }

    /// [`Rnn::backward_into`], skipping the last product `W_hhᵀ·da_1` when `d_h0` is `None`
    /// (the initial state needs no gradient).
    fn backward_with(
        &self,
        x: SeqInput<'_, T>,
        cache: &RnnCache<T>,
        d_out: &Mat<T>,
        d_final: &Mat<T>,
        grads: &mut RnnParams<T>,
        d_x: Option<&mut Mat<T>>,
        d_h0: Option<&mut Mat<T>>,
    ) {
        let h = self.hidden_size();
        let batch = cache.batch();
        assert!(batch > 0, "RNN backward: the cache holds no forward pass; call forward first");
        let n = cache.outputs.ncols();
        assert_eq!(x.columns(), n, "RNN backward: x has {} columns, the forward had {n}", x.columns());
        assert_eq!(
            d_out.shape(),
            (h, n),
            "RNN backward: d_out is {:?}, outputs are ({h}, {n})",
            d_out.shape()
        );
        assert_eq!(
            d_final.shape(),
            (h, batch),
            "RNN backward: d_final is {:?}, expected ({h}, {batch})",
            d_final.shape()
        );
        assert_eq!(
            grads.weight_ih.shape(),
            self.params.weight_ih.shape(),
            "RNN backward: grads.weight_ih is {:?}, weight_ih is {:?}",
            grads.weight_ih.shape(),
            self.params.weight_ih.shape()
        );
        let steps = n / batch;
        let act = self.activation;
        let mut scratch = cache.scratch.borrow_mut();
        let (da, dh, w_ih_t, packed) = &mut *scratch;
        ensure_shape(da, h, n);
        ensure_shape(dh, h, batch);
        dh.copy_from(d_final);
        // W_hhᵀ packed once (a one-step sequence reads it as stored).
        let w_hh_t = StepWeight::new(&self.params.weight_hh, Trans::Yes, steps, packed);
        let hs = cache.outputs.as_slice();
        let init_grad = d_h0.is_some();
        // The time loop, split by batch columns as the forward's: each part owns columns `cols`
        // of dA's step blocks and of dh for the whole loop.
        let (das, dhs) = (SharedCols::new(da), SharedCols::new(dh));
        for_each_batch_part(batch, h * h, |cols| {
            let nb = cols.len();
            for t in (0..steps).rev() {
                let col = t * batch + cols.start;
                let vals = col * h..(col + nb) * h;
                // SAFETY (dA, dh, here and below): this part alone reads and writes columns
                // `cols` of dh and of each step block of dA, and they outlive the call.
                let (da_t, dh_p) = unsafe { (das.slice_mut(col, nb), dhs.slice_mut(cols.start, nb)) };
                // dh_t = d_out_t + W_hhᵀ·da_{t+1}   (dh holds the second term)
                // da_t = dh_t ⊙ f'(a_t), with f' read off h_t
                for (((a, &g), &r), &y) in
                    da_t.iter_mut().zip(&d_out.as_slice()[vals.clone()]).zip(&*dh_p).zip(&hs[vals])
                {
                    *a = (g + r) * act.grad_from_output(y);
                }
                // dh_{t-1} (recurrent part) = W_hhᵀ·da_t
                if t > 0 || init_grad {
                    let da_t = MatView::from_slice(da_t, h, nb);
                    w_hh_t.gemm(&da_t, T::ZERO, &mut MatViewMut::from_slice(dh_p, h, nb));
                }
            }
        });
        // dh_0 = W_hhᵀ·da_1 (or d_final when there were no steps)
        if let Some(d_h0) = d_h0 {
            ensure_shape(d_h0, h, batch);
            d_h0.copy_from(dh);
        }
        let da: &Mat<T> = da;
        if steps > 0 {
            // dW_hh += dA[:, B..]·[h_1 … h_{T-1}]ᵀ + dA[:, ..B]·h_0ᵀ
            let later = n - batch;
            gemm(
                T::ONE,
                &da.columns(batch, later),
                Trans::No,
                &cache.outputs.columns(0, later),
                Trans::Yes,
                T::ONE,
                &mut grads.weight_hh,
            );
            gemm(
                T::ONE,
                &da.columns(0, batch),
                Trans::No,
                &cache.h0,
                Trans::Yes,
                T::ONE,
                &mut grads.weight_hh,
            );
        }
        // db_ih += Σ_columns dA, db_hh += Σ_columns dA
        if let (Some(gi), Some(gh)) = (&mut grads.bias_ih, &mut grads.bias_hh) {
            add_column_sums(da, gi, Some(gh));
        }
        // dW_ih += dA·Xᵀ (Index input: the scatter-add dW_ih[:, x_c] += dA[:, c]), and
        // dX = W_ihᵀ·dA through an explicit W_ihᵀ
        input_backward(
            &self.params.weight_ih,
            x,
            da,
            None,
            &mut grads.weight_ih,
            d_x,
            w_ih_t,
            &mut PackedLhs::new(),
        );
    }
}

impl<T: Scalar> Recurrence<T> for Rnn<T> {
    type State = RnnState<T>;
    type Params = RnnParams<T>;
    type Cache = RnnCache<T>;

    fn input_size(&self) -> usize {
        self.params.weight_ih.ncols()
    }

    fn hidden_size(&self) -> usize {
        self.params.weight_ih.nrows()
    }

    fn params(&self) -> &RnnParams<T> {
        &self.params
    }

    fn params_mut(&mut self) -> &mut RnnParams<T> {
        &mut self.params
    }

    fn zero_state(&self, batch: usize) -> RnnState<T> {
        RnnState { h: Mat::zeros(self.hidden_size(), batch) }
    }

    fn state_output(state: &RnnState<T>) -> &Mat<T> {
        &state.h
    }

    fn step(&self, x: SeqInput<'_, T>, state: &mut RnnState<T>) {
        let (h, batch) = state.h.shape();
        assert_eq!(
            h,
            self.hidden_size(),
            "RNN step: state has {h} rows, hidden size is {}",
            self.hidden_size()
        );
        assert_eq!(x.columns(), batch, "RNN step: x has {} columns, the state {batch}", x.columns());
        // One H × B buffer per call: the old h is read while the new one is computed.
        let mut a = Mat::zeros(h, batch);
        self.input_projection(x, &mut a);
        // a = W_ih·x + b + W_hh·h ; h = f(a)
        gemm(T::ONE, &self.params.weight_hh, Trans::No, &state.h, Trans::No, T::ONE, &mut a);
        self.activation.forward_inplace(a.as_mut_slice());
        state.h = a;
    }

    fn forward(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &RnnState<T>,
        cache: &mut RnnCache<T>,
    ) -> RnnState<T> {
        let mut h = Mat::zeros(0, 0);
        self.forward_into(x, batch, &h0.h, cache, &mut h);
        RnnState { h }
    }

    fn outputs<'c>(&self, cache: &'c RnnCache<T>) -> &'c Mat<T> {
        &cache.outputs
    }

    fn backward(
        &self,
        x: SeqInput<'_, T>,
        cache: &RnnCache<T>,
        d_out: &Mat<T>,
        d_final: &RnnState<T>,
        grads: &mut RnnParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) -> RnnState<T> {
        let mut h = Mat::zeros(0, 0);
        self.backward_into(x, cache, d_out, &d_final.h, grads, d_x, &mut h);
        RnnState { h }
    }

    fn backward_detached(
        &self,
        x: SeqInput<'_, T>,
        cache: &RnnCache<T>,
        d_out: &Mat<T>,
        d_final: &RnnState<T>,
        grads: &mut RnnParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_with(x, cache, d_out, &d_final.h, grads, d_x, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, proptest, ProptestConfig};
    use rnn_tensor::gradcheck::{numeric_gradient, rel_error};

    /// A loop-by-loop reference forward: returns (pre-activations, outputs), both `H × (T·B)`.
    fn naive_forward(cell: &Rnn<f64>, x: &Mat<f64>, batch: usize, h0: &Mat<f64>) -> (Mat<f64>, Mat<f64>) {
        let p = cell.params();
        let (h, i) = p.weight_ih.shape();
        let n = x.ncols();
        let mut pre = Mat::zeros(h, n);
        let mut out = Mat::zeros(h, n);
        for c in 0..n {
            let (t, b) = (c / batch, c % batch);
            for r in 0..h {
                let mut a = 0.0;
                for k in 0..i {
                    a += p.weight_ih[(r, k)] * x[(k, c)];
                }
                for k in 0..h {
                    let prev = if t == 0 { h0[(k, b)] } else { out[(k, c - batch)] };
                    a += p.weight_hh[(r, k)] * prev;
                }
                if let (Some(bi), Some(bh)) = (&p.bias_ih, &p.bias_hh) {
                    a += bi[r] + bh[r];
                }
                pre[(r, c)] = a;
                out[(r, c)] = cell.activation().apply(a);
            }
        }
        (pre, out)
    }

    fn one_hot(ix: &[usize], size: usize) -> Mat<f64> {
        Mat::from_fn(size, ix.len(), |r, c| if ix[c] == r { 1.0 } else { 0.0 })
    }

    struct Case {
        cell: Rnn<f64>,
        x: Mat<f64>,
        ix: Option<Vec<usize>>,
        batch: usize,
        h0: Mat<f64>,
        w_out: Mat<f64>,
        w_final: Mat<f64>,
    }

    impl Case {
        fn input(&self) -> SeqInput<'_, f64> {
            match &self.ix {
                Some(ix) => SeqInput::Index(ix),
                None => SeqInput::Dense(&self.x),
            }
        }

        /// L = Σ w_out ⊙ [h_1 … h_T] + Σ w_final ⊙ h_T, through the cell's own forward.
        fn loss(&self, cell: &Rnn<f64>, x: &Mat<f64>, h0: &Mat<f64>) -> f64 {
            let mut cache = RnnCache::default();
            let input = match &self.ix {
                Some(ix) => SeqInput::Index(ix),
                None => SeqInput::Dense(x),
            };
            let fin = cell.forward(input, self.batch, &RnnState { h: h0.clone() }, &mut cache);
            cell.outputs(&cache).component_mul(&self.w_out).sum() + fin.h.component_mul(&self.w_final).sum()
        }
    }

    /// Draws a case; for relu, redraws until every pre-activation is at least 0.05 from the kink,
    /// so the numeric differences (steps of 2e-4 in any parameter) never cross it.
    fn draw_case(
        seed: u64,
        i: usize,
        h: usize,
        b: usize,
        t: usize,
        act: Activation,
        bias: bool,
        index: bool,
    ) -> Case {
        let mut rng = Rng::seed_from(seed);
        loop {
            let cell = RnnConfig::new(i, h)
                .with_activation(act)
                .with_bias(bias)
                .with_init(Init::Uniform { lo: -0.8, hi: 0.8 })
                .with_layer(2)
                .build::<f64>(&mut rng)
                .unwrap();
            let ix: Option<Vec<usize>> = index.then(|| (0..t * b).map(|_| rng.below(i)).collect());
            let x = match &ix {
                Some(ix) => one_hot(ix, i),
                None => Init::Normal { mean: 0.0, std: 1.0 }.matrix(i, t * b, &mut rng),
            };
            let h0 = Init::Uniform { lo: -0.9, hi: 0.9 }.matrix(h, b, &mut rng);
            let w_out = Init::Normal { mean: 0.0, std: 1.0 }.matrix(h, t * b, &mut rng);
            let w_final = Init::Normal { mean: 0.0, std: 1.0 }.matrix(h, b, &mut rng);
            let (pre, _) = naive_forward(&cell, &x, b, &h0);
            if act != Activation::Relu || pre.iter().all(|a| a.abs() > 0.05) {
                return Case { cell, x, ix, batch: b, h0, w_out, w_final };
            }
        }
    }

    /// Numeric gradients by the 4th-order central difference, step 1e-4 (truncation ~1e-16,
    /// rounding ~1e-12 relative): every tensor must agree to rel_error < 1e-8.
    ///
    /// One exception, for relu: when every unit a tensor reaches is dead (all its analytic
    /// gradients exactly 0), rel_error compares rounding noise with its 1e-8 floor; there we
    /// require the numeric gradient to be noise, |g| < 1e-10 (the loss is O(10), so its rounding
    /// over a 12·1e-4 denominator is ~1e-12).
    fn assert_close(num: &[f64], analytic: &[f64], what: &str) {
        if analytic.iter().all(|&g| g == 0.0) {
            let worst = num.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            assert!(worst < 1e-10, "{what}: analytic gradient is 0, numeric reaches {worst:e}");
        } else {
            let err = rel_error(num, analytic);
            assert!(err < 1e-8, "{what}: rel_error {err:e}\nnumeric  {num:?}\nanalytic {analytic:?}");
        }
    }

    fn check_case(c: &Case) {
        let cell = &c.cell;
        // Forward against the reference loops (tolerance: a few ulps of sums of O(10) terms).
        let mut cache = RnnCache::default();
        let fin = cell.forward(c.input(), c.batch, &RnnState { h: c.h0.clone() }, &mut cache);
        let (_, want) = naive_forward(cell, &c.x, c.batch, &c.h0);
        assert!((cell.outputs(&cache) - &want).abs().max() < 1e-13);
        let steps = c.x.ncols() / c.batch;
        assert_eq!(fin.h, cell.outputs(&cache).columns((steps - 1) * c.batch, c.batch));

        let mut grads = cell.zero_grads();
        let mut d_x = Mat::zeros(c.x.nrows(), c.x.ncols());
        let dense = c.ix.is_none();
        let d_h0 = cell.backward(
            c.input(),
            &cache,
            &c.w_out,
            &RnnState { h: c.w_final.clone() },
            &mut grads,
            dense.then_some(&mut d_x),
        );
        let names: Vec<String> = grads.named_params().into_iter().map(|(n, _)| n).collect();
        let want_names: &[&str] = if cell.has_bias() {
            &["weight_ih_l2", "weight_hh_l2", "bias_ih_l2", "bias_hh_l2"]
        } else {
            &["weight_ih_l2", "weight_hh_l2"]
        };
        assert_eq!(names, want_names);

        let n_params = cell.params().named_params().len();
        for p in 0..n_params {
            let analytic = grads.named_params()[p].1.as_slice().to_vec();
            let mut flat = cell.params().named_params()[p].1.as_slice().to_vec();
            let num = numeric_gradient(
                |v| {
                    let mut m = cell.clone();
                    m.params_mut().named_params_mut()[p].1.copy_from_slice(v);
                    c.loss(&m, &c.x, &c.h0)
                },
                &mut flat,
                1e-4,
            );
            assert_close(&num, &analytic, &format!("{:?} {}", cell.activation(), names[p]));
        }
        let mut flat = c.h0.as_slice().to_vec();
        let num = numeric_gradient(
            |v| c.loss(cell, &c.x, &Mat::from_column_slice(c.h0.nrows(), c.batch, v)),
            &mut flat,
            1e-4,
        );
        assert_close(&num, d_h0.h.as_slice(), &format!("{:?} d_h0", cell.activation()));
        if dense {
            let mut flat = c.x.as_slice().to_vec();
            let num = numeric_gradient(
                |v| c.loss(cell, &Mat::from_column_slice(c.x.nrows(), c.x.ncols(), v), &c.h0),
                &mut flat,
                1e-4,
            );
            assert_close(&num, d_x.as_slice(), &format!("{:?} d_x", cell.activation()));
        }

        // Index input gives the same parameter gradients as its dense one-hot equivalent.
        if let Some(ix) = &c.ix {
            let mut cache_d = RnnCache::default();
            let h0 = RnnState { h: c.h0.clone() };
            cell.forward(SeqInput::Dense(&c.x), c.batch, &h0, &mut cache_d);
            let mut g_dense = cell.zero_grads();
            let d_h0_dense = cell.backward(
                SeqInput::Dense(&c.x),
                &cache_d,
                &c.w_out,
                &RnnState { h: c.w_final.clone() },
                &mut g_dense,
                None,
            );
            assert!((&g_dense.weight_ih - &grads.weight_ih).abs().max() < 1e-13, "index {ix:?}");
            assert!((&d_h0_dense.h - &d_h0.h).abs().max() < 1e-13);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        #[test]
        fn gradients_match_numeric(
            seed in 0u64..1_000_000,
            i in 1usize..5,
            h in 1usize..7,
            b in 1usize..4,
            t in 1usize..6,
            bias in any::<bool>(),
            index in any::<bool>(),
        ) {
            for act in [Activation::Tanh, Activation::Relu, Activation::Sigmoid] {
                check_case(&draw_case(seed, i, h, b, t, act, bias, index));
            }
        }
    }

    #[test]
    fn batch_one_gradients_match_numeric() {
        // Batch 1 with several steps takes the W_hhᵀ-copy route in backward; make sure every
        // activation, dense and index input, runs through it whatever proptest draws.
        for act in [Activation::Tanh, Activation::Relu, Activation::Sigmoid] {
            for (bias, index) in [(true, false), (false, true)] {
                check_case(&draw_case(21, 3, 6, 1, 5, act, bias, index));
            }
        }
    }

    #[test]
    fn gradients_accumulate_and_buffers_are_reused() {
        let c = draw_case(3, 3, 4, 2, 5, Activation::Tanh, true, false);
        let cell = &c.cell;
        let mut cache = RnnCache::default();
        let mut fin = Mat::zeros(0, 0);
        let mut d_h0 = Mat::zeros(0, 0);
        let mut once = cell.zero_grads();
        cell.forward_into(c.input(), c.batch, &c.h0, &mut cache, &mut fin);
        cell.backward_into(c.input(), &cache, &c.w_out, &c.w_final, &mut once, None, &mut d_h0);
        let mut twice = cell.zero_grads();
        for _ in 0..2 {
            cell.forward_into(c.input(), c.batch, &c.h0, &mut cache, &mut fin);
            cell.backward_into(c.input(), &cache, &c.w_out, &c.w_final, &mut twice, None, &mut d_h0);
        }
        assert!((&twice.weight_hh - &once.weight_hh * 2.0).abs().max() < 1e-14);
        assert!((twice.bias_ih.unwrap() - once.bias_ih.unwrap() * 2.0).abs().max() < 1e-14);
    }

    #[test]
    fn step_matches_forward() {
        let c = draw_case(9, 3, 5, 2, 4, Activation::Sigmoid, true, false);
        let mut cache = RnnCache::default();
        let mut state = RnnState { h: c.h0.clone() };
        let fin = c.cell.forward(c.input(), 2, &state, &mut cache);
        for t in 0..4 {
            let xt = c.x.columns(t * 2, 2).into_owned();
            c.cell.step(SeqInput::Dense(&xt), &mut state);
        }
        assert!((&fin.h - &state.h).abs().max() < 1e-15);
    }

    #[test]
    fn config_and_params_are_checked() {
        let mut rng = Rng::seed_from(0);
        assert!(RnnConfig::new(0, 4).build::<f32>(&mut rng).is_err());
        assert!(RnnConfig::new(2, 4)
            .with_init(Init::Uniform { lo: 1.0, hi: -1.0 })
            .build::<f32>(&mut rng)
            .is_err());
        let cell = RnnConfig::new(3, 4).build::<f64>(&mut rng).unwrap();
        // PyTorch's default bound 1/sqrt(H) = 0.5.
        assert!(cell.params().weight_hh.iter().all(|v| v.abs() <= 0.5));
        let mut p = cell.params().clone();
        p.bias_hh = None;
        let e = Rnn::from_params(p, Activation::Tanh).unwrap_err();
        assert!(e.to_string().contains("bias"), "{e}");
        let mut p = cell.params().clone();
        p.weight_hh = Mat::zeros(4, 3);
        assert!(Rnn::from_params(p, Activation::Tanh).is_err());
    }
}
