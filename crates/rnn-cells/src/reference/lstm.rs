//! The LSTM, plainly: the spec of [`Lstm`](crate::Lstm).
//!
//! Forward, for `t = 1..T` (`σ` the logistic sigmoid, `⊙` the elementwise product), the four
//! gate blocks of `a_t` (`4H × B`) in PyTorch's order i, f, g, o:
//!
//! ```text
//! a_t = W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh
//! i_t = σ(a_i)   f_t = σ(a_f)   g_t = tanh(a_g)   o_t = σ(a_o)
//! c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
//! m_t = o_t ⊙ tanh(c_t)
//! h_t = m_t                       (with a projection, proj_size P: h_t = W_hr·m_t, P × B)
//! ```
//!
//! Backward, from the output gradients `δ_t` and `dh_T`, `dc_T` (the final state's gradient),
//! for `t = T..1`:
//!
//! ```text
//! dh_t  = δ_t + (W_hhᵀ·da_{t+1}, or dh_T at t = T)
//! dm    = dh_t                        (with a projection: dW_hr += dh_t·m_tᵀ, dm = W_hrᵀ·dh_t)
//! dc    = dc_t + dm ⊙ o_t ⊙ (1 - tanh²c_t)        (dc_t from step t+1, or dc_T)
//! da_i  = dc ⊙ g_t ⊙ i_t(1-i_t)        da_f = dc ⊙ c_{t-1} ⊙ f_t(1-f_t)
//! da_g  = dc ⊙ i_t ⊙ (1-g_t²)          da_o = dm ⊙ tanh(c_t) ⊙ o_t(1-o_t)
//! dW_ih += da_t·x_tᵀ      db_ih += Σ_b da_t      d_x_t = W_ihᵀ·da_t
//! dW_hh += da_t·h_{t-1}ᵀ  db_hh += Σ_b da_t
//! dc_{t-1} = dc ⊙ f_t     dh_{t-1} = W_hhᵀ·da_t
//! ```

use rnn_tensor::activation::sigmoid;
use rnn_tensor::{Mat, Parameters, Scalar};

use super::{add_column_sums, affine, block, concat_steps, set_step, stack_blocks, step};
use crate::RecurrentParams;

/// What [`forward`] computed: the outputs and every state, for [`backward`].
#[derive(Clone, Debug)]
pub struct LstmTrace<T: Scalar> {
    /// `B`.
    pub batch: usize,
    /// `h_0, h_1, ..., h_T`, each `H × B` (`P × B` with a projection; `h[0]` is the initial state,
    /// `h[T]` the final one).
    pub h: Vec<Mat<T>>,
    /// `c_0, c_1, ..., c_T`, each `H × B`.
    pub c: Vec<Mat<T>>,
    /// `h_1..h_T` side by side, `H × (T·B)` (`P × (T·B)`).
    pub outputs: Mat<T>,
}

/// What [`backward`] returns.
#[derive(Clone, Debug)]
pub struct LstmGrads<T: Scalar> {
    /// `dL/dW_ih`, `dL/dW_hh`, `dL/db_ih`, `dL/db_hh` (and `dL/dW_hr`).
    pub params: RecurrentParams<T>,
    /// `dL/dx`, `I × (T·B)`.
    pub d_x: Mat<T>,
    /// `dL/dh_0`, `H × B` (`P × B`).
    pub d_h0: Mat<T>,
    /// `dL/dc_0`, `H × B`.
    pub d_c0: Mat<T>,
}

/// The gates `(i_t, f_t, g_t, o_t)` of step `t`, each `H × B`.
fn gates<T: Scalar>(p: &RecurrentParams<T>, x_t: &Mat<T>, h_prev: &Mat<T>) -> [Mat<T>; 4] {
    let hid = p.cell_size();
    let a = affine(&p.weight_ih, &p.bias_ih, x_t) + affine(&p.weight_hh, &p.bias_hh, h_prev);
    let i = block(&a, 0, hid).map(sigmoid);
    let f = block(&a, 1, hid).map(sigmoid);
    let g = block(&a, 2, hid).map(|v| v.tanh());
    let o = block(&a, 3, hid).map(sigmoid);
    [i, f, g, o]
}

/// `h_t` from `m_t`: `W_hr·m_t` with a projection, else `m_t` itself.
fn project<T: Scalar>(p: &RecurrentParams<T>, m: Mat<T>) -> Mat<T> {
    match &p.weight_hr {
        Some(w_hr) => w_hr * m,
        None => m,
    }
}

/// Runs the LSTM over `x` (`I × (T·B)`) from `(h0, c0)` (`H × B` each; `h0` is `P × B` with a
/// projection).
pub fn forward<T: Scalar>(
    p: &RecurrentParams<T>,
    x: &Mat<T>,
    batch: usize,
    h0: &Mat<T>,
    c0: &Mat<T>,
) -> LstmTrace<T> {
    let steps = x.ncols() / batch;
    let (mut h, mut c) = (vec![h0.clone()], vec![c0.clone()]);
    for t in 1..=steps {
        let [i, f, g, o] = gates(p, &step(x, t, batch), &h[t - 1]);
        c.push(f.component_mul(&c[t - 1]) + i.component_mul(&g)); // c_t = f ⊙ c_{t-1} + i ⊙ g
        let m = o.component_mul(&c[t].map(|v| v.tanh())); // m_t = o ⊙ tanh(c_t)
        h.push(project(p, m)); // h_t = m_t, or W_hr·m_t
    }
    let outputs = if steps > 0 { concat_steps(&h[1..]) } else { Mat::zeros(h0.nrows(), 0) };
    LstmTrace { batch, h, c, outputs }
}

/// Backpropagation through time: `d_out` is `dL/d outputs` (`H × (T·B)`), `d_h_final` and
/// `d_c_final` are `dL/dh_T` and `dL/dc_T` (`H × B`).
pub fn backward<T: Scalar>(
    p: &RecurrentParams<T>,
    x: &Mat<T>,
    trace: &LstmTrace<T>,
    d_out: &Mat<T>,
    d_h_final: &Mat<T>,
    d_c_final: &Mat<T>,
) -> LstmGrads<T> {
    let (batch, steps) = (trace.batch, trace.h.len() - 1);
    let one = T::ONE;
    let mut grads = p.clone();
    grads.zero();
    let mut d_x = Mat::zeros(x.nrows(), x.ncols());
    let (mut dh, mut dc) = (d_h_final.clone(), d_c_final.clone()); // dh_T, dc_T
    for t in (1..=steps).rev() {
        let (x_t, h_prev, c_prev) = (step(x, t, batch), &trace.h[t - 1], &trace.c[t - 1]);
        let [i, f, g, o] = gates(p, &x_t, h_prev);
        let tanh_c = trace.c[t].map(|v| v.tanh());
        dh += step(d_out, t, batch); // dh_t = δ_t + (what step t+1 passed back)
        let dm = match (&p.weight_hr, &mut grads.weight_hr) {
            (Some(w_hr), Some(dw_hr)) => {
                *dw_hr += &dh * o.component_mul(&tanh_c).transpose(); // dW_hr += dh_t·m_tᵀ
                w_hr.transpose() * &dh // dm = W_hrᵀ·dh_t
            }
            _ => dh.clone(), // dm = dh_t
        };
        dc += dm.component_mul(&o).zip_map(&tanh_c, |d, th| d * (one - th * th)); // dc += dm ⊙ o ⊙ (1 - tanh²c_t)
        let da_i = dc.component_mul(&g).zip_map(&i, |d, i| d * i * (one - i)); // da_i = dc ⊙ g ⊙ i(1-i)
        let da_f = dc.component_mul(c_prev).zip_map(&f, |d, f| d * f * (one - f)); // da_f = dc ⊙ c_{t-1} ⊙ f(1-f)
        let da_g = dc.component_mul(&i).zip_map(&g, |d, g| d * (one - g * g)); // da_g = dc ⊙ i ⊙ (1-g²)
        let da_o = dm.component_mul(&tanh_c).zip_map(&o, |d, o| d * o * (one - o)); // da_o = dm ⊙ tanh c_t ⊙ o(1-o)
        let da = stack_blocks(&[&da_i, &da_f, &da_g, &da_o]);
        grads.weight_ih += &da * x_t.transpose(); // dW_ih += da_t·x_tᵀ
        grads.weight_hh += &da * h_prev.transpose(); // dW_hh += da_t·h_{t-1}ᵀ
        add_column_sums(&mut grads.bias_ih, &da); // db_ih += Σ_b da_t
        add_column_sums(&mut grads.bias_hh, &da); // db_hh += Σ_b da_t
        set_step(&mut d_x, t, batch, &(p.weight_ih.transpose() * &da)); // d_x_t = W_ihᵀ·da_t
        dc = dc.component_mul(&f); // dc_{t-1} = dc ⊙ f_t
        dh = p.weight_hh.transpose() * &da; // dh_{t-1} = W_hhᵀ·da_t
    }
    LstmGrads { params: grads, d_x, d_h0: dh, d_c0: dc }
}
