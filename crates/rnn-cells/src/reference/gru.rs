//! The GRU, plainly, in PyTorch's form: the spec of [`Gru`](crate::Gru).
//!
//! Forward, for `t = 1..T`, with `u = W_ih·x_t + b_ih` and `v = W_hh·h_{t-1} + b_hh` (each
//! `3H × B`, gate blocks in PyTorch's order r, z, n):
//!
//! ```text
//! r_t = σ(u_r + v_r)      z_t = σ(u_z + v_z)
//! n_t = tanh(u_n + r_t ⊙ v_n)             (the reset gate multiplies W_hn·h_{t-1} + b_hn)
//! h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
//! ```
//!
//! Backward, from the output gradients `δ_t` and `dh_T` (the final state's gradient), for
//! `t = T..1`:
//!
//! ```text
//! dh_t  = δ_t + (dh_t from step t+1, or dh_T at t = T)
//! dn    = dh_t ⊙ (1 - z_t)               dz   = dh_t ⊙ (h_{t-1} - n_t)
//! du_n  = dn ⊙ (1 - n_t²)                dv_n = du_n ⊙ r_t
//! du_r  = dv_r = du_n ⊙ v_n ⊙ r_t(1-r_t)  du_z = dv_z = dz ⊙ z_t(1-z_t)
//! dW_ih += du_t·x_tᵀ      db_ih += Σ_b du_t      d_x_t = W_ihᵀ·du_t
//! dW_hh += dv_t·h_{t-1}ᵀ  db_hh += Σ_b dv_t
//! dh_{t-1} = dh_t ⊙ z_t + W_hhᵀ·dv_t
//! ```

use rnn_tensor::activation::sigmoid;
use rnn_tensor::{Mat, Parameters, Scalar};

use super::{add_column_sums, affine, block, concat_steps, set_step, stack_blocks, step};
use crate::RecurrentParams;

/// What [`forward`] computed: the outputs and every state, for [`backward`].
#[derive(Clone, Debug)]
pub struct GruTrace<T: Scalar> {
    /// `B`.
    pub batch: usize,
    /// `h_0, h_1, ..., h_T`, each `H × B` (`h[0]` is the initial state, `h[T]` the final one).
    pub h: Vec<Mat<T>>,
    /// `h_1..h_T` side by side, `H × (T·B)`.
    pub outputs: Mat<T>,
}

/// What [`backward`] returns.
#[derive(Clone, Debug)]
pub struct GruGrads<T: Scalar> {
    /// `dL/dW_ih`, `dL/dW_hh`, `dL/db_ih`, `dL/db_hh`.
    pub params: RecurrentParams<T>,
    /// `dL/dx`, `I × (T·B)`.
    pub d_x: Mat<T>,
    /// `dL/dh_0`, `H × B`.
    pub d_h0: Mat<T>,
}

/// The gates `(r_t, z_t, n_t)` of step `t` and `v_n = W_hn·h_{t-1} + b_hn`, each `H × B`.
fn gates<T: Scalar>(p: &RecurrentParams<T>, x_t: &Mat<T>, h_prev: &Mat<T>) -> [Mat<T>; 4] {
    let hid = p.hidden_size();
    let u = affine(&p.weight_ih, &p.bias_ih, x_t);
    let v = affine(&p.weight_hh, &p.bias_hh, h_prev);
    let r = (block(&u, 0, hid) + block(&v, 0, hid)).map(sigmoid);
    let z = (block(&u, 1, hid) + block(&v, 1, hid)).map(sigmoid);
    let v_n = block(&v, 2, hid);
    let n = (block(&u, 2, hid) + r.component_mul(&v_n)).map(|a| a.tanh());
    [r, z, n, v_n]
}

/// Runs the GRU over `x` (`I × (T·B)`) from `h0` (`H × B`).
pub fn forward<T: Scalar>(p: &RecurrentParams<T>, x: &Mat<T>, batch: usize, h0: &Mat<T>) -> GruTrace<T> {
    let steps = x.ncols() / batch;
    let mut h = vec![h0.clone()];
    for t in 1..=steps {
        let [_, z, n, _] = gates(p, &step(x, t, batch), &h[t - 1]);
        let h_t = z.zip_map(&n, |z, n| (T::ONE - z) * n) + z.component_mul(&h[t - 1]);
        h.push(h_t); // h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
    }
    let outputs = if steps > 0 { concat_steps(&h[1..]) } else { Mat::zeros(h0.nrows(), 0) };
    GruTrace { batch, h, outputs }
}

/// Backpropagation through time: `d_out` is `dL/d outputs` (`H × (T·B)`), `d_h_final` is
/// `dL/dh_T` (`H × B`).
pub fn backward<T: Scalar>(
    p: &RecurrentParams<T>,
    x: &Mat<T>,
    trace: &GruTrace<T>,
    d_out: &Mat<T>,
    d_h_final: &Mat<T>,
) -> GruGrads<T> {
    let (batch, steps) = (trace.batch, trace.h.len() - 1);
    let one = T::ONE;
    let mut grads = p.clone();
    grads.zero();
    let mut d_x = Mat::zeros(x.nrows(), x.ncols());
    let mut dh = d_h_final.clone(); // dh_T
    for t in (1..=steps).rev() {
        let (x_t, h_prev) = (step(x, t, batch), &trace.h[t - 1]);
        let [r, z, n, v_n] = gates(p, &x_t, h_prev);
        dh += step(d_out, t, batch); // dh_t = δ_t + (what step t+1 passed back)
        let dn = dh.zip_map(&z, |d, z| d * (one - z)); // dn = dh ⊙ (1 - z)
        let dz = dh.component_mul(&(h_prev - &n)); // dz = dh ⊙ (h_{t-1} - n)
        let du_n = dn.zip_map(&n, |d, n| d * (one - n * n)); // du_n = dn ⊙ (1 - n²)
        let dv_n = du_n.component_mul(&r); // dv_n = du_n ⊙ r
        let du_r = du_n.component_mul(&v_n).zip_map(&r, |d, r| d * r * (one - r)); // du_r = du_n ⊙ v_n ⊙ r(1-r)
        let du_z = dz.zip_map(&z, |d, z| d * z * (one - z)); // du_z = dz ⊙ z(1-z)
        let du = stack_blocks(&[&du_r, &du_z, &du_n]);
        let dv = stack_blocks(&[&du_r, &du_z, &dv_n]); // dv_r = du_r, dv_z = du_z
        grads.weight_ih += &du * x_t.transpose(); // dW_ih += du_t·x_tᵀ
        grads.weight_hh += &dv * h_prev.transpose(); // dW_hh += dv_t·h_{t-1}ᵀ
        add_column_sums(&mut grads.bias_ih, &du); // db_ih += Σ_b du_t
        add_column_sums(&mut grads.bias_hh, &dv); // db_hh += Σ_b dv_t
        set_step(&mut d_x, t, batch, &(p.weight_ih.transpose() * &du)); // d_x_t = W_ihᵀ·du_t
        dh = dh.component_mul(&z) + p.weight_hh.transpose() * &dv; // dh_{t-1} = dh ⊙ z + W_hhᵀ·dv_t
    }
    GruGrads { params: grads, d_x, d_h0: dh }
}
