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
//! This file holds the cell's pointwise step; the layer engine ([`crate::engine`]) runs it over
//! sequences, and [`crate::reference::rnn`] is the plain version of the whole layer. The engine
//! keeps nothing per step but the outputs: `f'` is read off `h_t`.

use rnn_tensor::activation::Activation;
use rnn_tensor::{Mat, Scalar};

use crate::engine::{BackwardStep, Cell, ForwardStep, Layer, LayerCache};
use crate::state::impl_state;
use crate::{CellError, RecurrentConfig, RecurrentParams};

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
impl_state!(RnnState { h });

/// The vanilla RNN cell: its nonlinearity `f` (PyTorch's `nonlinearity`; default tanh).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RnnCell {
    /// `f`.
    pub activation: Activation,
}

impl Default for RnnCell {
    fn default() -> Self {
        RnnCell { activation: Activation::Tanh }
    }
}

/// The vanilla RNN layer `h_t = f(W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh)`, as `torch.nn.RNN`.
pub type Rnn<T> = Layer<T, RnnCell>;
/// What an [`Rnn`]'s forward keeps for backward.
pub type RnnCache<T> = LayerCache<T>;
/// How to build an [`Rnn`]: `RnnConfig::new(input, hidden).with_activation(..).build(rng)`.
pub type RnnConfig = RecurrentConfig<RnnCell>;

impl RnnConfig {
    /// The nonlinearity `f`. Default: tanh.
    pub fn with_activation(self, activation: Activation) -> Self {
        self.with_cell(RnnCell { activation })
    }
}

impl<T: Scalar> Rnn<T> {
    /// A cell from existing parameters (for example loaded from PyTorch), checking their shapes.
    pub fn from_params(params: RnnParams<T>, activation: Activation) -> Result<Self, CellError> {
        Layer::new(params, RnnCell { activation })
    }

    /// The nonlinearity.
    pub fn activation(&self) -> Activation {
        self.cell().activation
    }
}

impl<T: Scalar> Cell<T> for RnnCell {
    type State = RnnState<T>;
    const NAME: &'static str = "RNN";
    const GATES: usize = 1;
    const CARRIED: usize = 0;
    const SAVED: usize = 0;
    const HIDDEN_APART: bool = false;
    const DIRECT_H: bool = false;

    fn state_from_parts(parts: Vec<Mat<T>>) -> RnnState<T> {
        let [h]: [Mat<T>; 1] = parts.try_into().expect("an RNN state has one part");
        RnnState { h }
    }

    fn forward(&self, hid: usize, s: ForwardStep<'_, T>) {
        // h_t = f(a_t + b_ih + b_hh)
        if s.bias.sum.is_empty() {
            s.h.copy_from_slice(s.a);
        } else {
            for (hc, ac) in s.h.chunks_exact_mut(hid).zip(s.a.chunks_exact(hid)) {
                for ((h, &a), &b) in hc.iter_mut().zip(ac).zip(s.bias.sum) {
                    *h = a + b;
                }
            }
        }
        self.activation.forward_inplace(s.h);
    }

    fn backward(&self, _hid: usize, s: BackwardStep<'_, T>) {
        // da_t = (δ_t + dh_t) ⊙ f'(a_t), with f' read off h_t
        let f = self.activation;
        for (((da, &d), &dh), &y) in s.da.iter_mut().zip(s.d_out).zip(&*s.dh).zip(s.h) {
            *da = (d + dh) * f.grad_from_output(y);
        }
    }
}
