//! The vanilla RNN, plainly: the spec of [`Rnn`](crate::Rnn).
//!
//! Forward, for `t = 1..T` (`f` one of tanh, relu, sigmoid, identity):
//!
//! ```text
//! a_t = W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh
//! h_t = f(a_t)
//! ```
//!
//! Backward, from the output gradients `δ_t` and `dh_T` (the final state's gradient), for
//! `t = T..1` (`f'` read off the output: tanh `1 - h²`, sigmoid `h(1-h)`, relu `[h > 0]`,
//! identity `1`):
//!
//! ```text
//! dh_t     = δ_t + (W_hhᵀ·da_{t+1}, or dh_T at t = T)
//! da_t     = dh_t ⊙ f'(a_t)
//! dW_ih   += da_t·x_tᵀ      db_ih += Σ_b da_t      d_x_t = W_ihᵀ·da_t
//! dW_hh   += da_t·h_{t-1}ᵀ  db_hh += Σ_b da_t
//! dh_{t-1} = W_hhᵀ·da_t
//! ```

use rnn_tensor::activation::Activation;
use rnn_tensor::{Mat, Parameters, Scalar};

use super::{add_column_sums, affine, concat_steps, set_step, step};
use crate::RecurrentParams;

/// What [`forward`] computed: the outputs and every state, for [`backward`].
#[derive(Clone, Debug)]
pub struct RnnTrace<T: Scalar> {
    /// `B`.
    pub batch: usize,
    /// `h_0, h_1, ..., h_T`, each `H × B` (`h[0]` is the initial state, `h[T]` the final one).
    pub h: Vec<Mat<T>>,
    /// `h_1..h_T` side by side, `H × (T·B)`.
    pub outputs: Mat<T>,
}

/// What [`backward`] returns.
#[derive(Clone, Debug)]
pub struct RnnGrads<T: Scalar> {
    /// `dL/dW_ih`, `dL/dW_hh`, `dL/db_ih`, `dL/db_hh`.
    pub params: RecurrentParams<T>,
    /// `dL/dx`, `I × (T·B)`.
    pub d_x: Mat<T>,
    /// `dL/dh_0`, `H × B`.
    pub d_h0: Mat<T>,
}

/// Runs the RNN over `x` (`I × (T·B)`) from `h0` (`H × B`).
pub fn forward<T: Scalar>(
    p: &RecurrentParams<T>,
    f: Activation,
    x: &Mat<T>,
    batch: usize,
    h0: &Mat<T>,
) -> RnnTrace<T> {
    let steps = x.ncols() / batch;
    let mut h = vec![h0.clone()];
    for t in 1..=steps {
        let x_t = step(x, t, batch);
        let a = affine(&p.weight_ih, &p.bias_ih, &x_t) + affine(&p.weight_hh, &p.bias_hh, &h[t - 1]);
        h.push(a.map(|v| f.apply(v))); // h_t = f(a_t)
    }
    let outputs = if steps > 0 { concat_steps(&h[1..]) } else { Mat::zeros(h0.nrows(), 0) };
    RnnTrace { batch, h, outputs }
}

/// Backpropagation through time: `d_out` is `dL/d outputs` (`H × (T·B)`), `d_h_final` is
/// `dL/dh_T` (`H × B`).
pub fn backward<T: Scalar>(
    p: &RecurrentParams<T>,
    f: Activation,
    x: &Mat<T>,
    trace: &RnnTrace<T>,
    d_out: &Mat<T>,
    d_h_final: &Mat<T>,
) -> RnnGrads<T> {
    let (batch, steps) = (trace.batch, trace.h.len() - 1);
    let mut grads = p.clone();
    grads.zero();
    let mut d_x = Mat::zeros(x.nrows(), x.ncols());
    let mut dh = d_h_final.clone(); // dh_T
    for t in (1..=steps).rev() {
        let (x_t, h_prev, h_t) = (step(x, t, batch), &trace.h[t - 1], &trace.h[t]);
        dh += step(d_out, t, batch); // dh_t = δ_t + (what step t+1 passed back)
        let da = dh.zip_map(h_t, |d, y| d * f.grad_from_output(y)); // da_t = dh_t ⊙ f'(a_t)
        grads.weight_ih += &da * x_t.transpose(); // dW_ih += da_t·x_tᵀ
        grads.weight_hh += &da * h_prev.transpose(); // dW_hh += da_t·h_{t-1}ᵀ
        add_column_sums(&mut grads.bias_ih, &da); // db_ih += Σ_b da_t
        add_column_sums(&mut grads.bias_hh, &da); // db_hh += Σ_b da_t
        set_step(&mut d_x, t, batch, &(p.weight_ih.transpose() * &da)); // d_x_t = W_ihᵀ·da_t
        dh = p.weight_hh.transpose() * &da; // dh_{t-1} = W_hhᵀ·da_t
    }
    RnnGrads { params: grads, d_x, d_h0: dh }
}
