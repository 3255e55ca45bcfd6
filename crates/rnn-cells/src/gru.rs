//! Gated recurrent unit, as `torch.nn.GRU`.
//!
//! Forward, for each step `t`, with the three gate blocks stacked in PyTorch's order r, z, n
//! (`u = W_ih·x_t + b_ih` and `v = W_hh·h_{t-1} + b_hh`, each `3H × B` with blocks `_r, _z, _n`):
//!
//! ```text
//! r_t = σ(u_r + v_r)      z_t = σ(u_z + v_z)
//! n_t = tanh(u_n + r_t ⊙ v_n)                    (the reset gate multiplies W_hn·h + b_hn)
//! h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}
//! ```
//!
//! Backward through time, from `dh_T` (the final-state gradient) and the output gradients
//! `δ_t`, for `t = T..1`:
//!
//! ```text
//! dh   = δ_t + dh_t
//! dn   = dh ⊙ (1 - z_t)                   dz = dh ⊙ (h_{t-1} - n_t)
//! du_n = dn ⊙ (1 - n_t²)                  dv_n = du_n ⊙ r_t
//! du_r = dv_r = du_n ⊙ v_n ⊙ r_t(1-r_t)    du_z = dv_z = dz ⊙ z_t(1-z_t)
//! dh_{t-1} = dh ⊙ z_t + W_hhᵀ · dv_t
//! ```
//!
//! and after the loop, over the `3H × T·B` buffers `dU`, `dV`: `dW_ih += dU·Xᵀ`,
//! `db_ih += Σ_columns dU`, `dW_hh += Σ_t dv_t·h_{t-1}ᵀ`, `db_hh += Σ_columns dV`, `d_x = W_ihᵀ·dU`.
//! Unlike the LSTM, the input and hidden sides differ (in the `n` block), so there are two
//! gradient buffers.

use std::cell::RefCell;

use rnn_tensor::activation::sigmoid;
use rnn_tensor::{gemm, Mat, PackedLhs, Rng, Scalar, Trans};

use crate::gated::{
    add_column_sums, ensure_shape, for_each_batch_part, hidden_weight_grad, input_backward, project_input,
    GatedConfig, RecurrentParams, SharedCols, StepWeight,
};
use crate::{CellError, Recurrence, SeqInput, Stack};

/// The parameters of a [`Gru`] (and its gradients): `weight_ih` `[3H, I]`, `weight_hh`
/// `[3H, H]`, `bias_ih`, `bias_hh` `[3H]`, gates r, z, n.
pub type GruParams<T> = RecurrentParams<T>;

/// Selects the GRU in [`GatedConfig`]; never constructed.
#[derive(Debug, PartialEq)]
pub enum GruKind {}

/// How to build a [`Gru`]: `GruConfig::new(input, hidden).with_bias(..).with_init(..).build(rng)`.
pub type GruConfig = GatedConfig<GruKind>;

impl GruConfig {
    /// Checks the configuration and draws the weights (PyTorch's order).
    pub fn build<T: Scalar>(&self, rng: &mut Rng) -> Result<Gru<T>, CellError> {
        Ok(Gru { params: self.build_params(3, "GRU", rng)? })
    }

    /// A stack of `num_layers` GRUs, as `torch.nn.GRU(input, hidden, num_layers)`.
    pub fn build_stack<T: Scalar>(
        &self,
        num_layers: usize,
        rng: &mut Rng,
    ) -> Result<Stack<Gru<T>>, CellError> {
        Stack::from_fn(num_layers, |k| Ok(Gru { params: self.for_layer(k).build_params(3, "GRU", rng)? }))
    }
}

/// A gated recurrent unit layer; see the module docs for the equations. Its state is `h`, `H × B`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gru<T: Scalar> {
    /// The tensors, under PyTorch's names.
    pub params: GruParams<T>,
}

/// What [`Gru::forward`](Recurrence::forward) keeps for backward; buffers are reused.
#[derive(Debug)]
pub struct GruCache<T: Scalar> {
    batch: usize,
    /// Activated gates `[r; z; n]`, `3H × T·B` (first the input projection `W_ih·X`).
    gates: Mat<T>,
    /// `v_n = W_hn·h_{t-1} + b_hn` per step, `H × T·B`.
    v_n: Mat<T>,
    /// Outputs `h_1..h_T`, `H × T·B`.
    h: Mat<T>,
    h0: Mat<T>,
    /// One step's `W_hh·h_{t-1}`, `3H × B`.
    v: Mat<T>,
    /// `W_hh`, packed for the forward's time loop.
    w_hh_packed: PackedLhs<T>,
    scratch: RefCell<GruScratch<T>>,
}

#[derive(Debug)]
struct GruScratch<T: Scalar> {
    /// `dU`, `3H × T·B`.
    du: Mat<T>,
    /// `dV`, `3H × T·B`.
    dv: Mat<T>,
    dh: Mat<T>,
    /// `W_hhᵀ`, packed for the time loop of sequences of more than one step.
    w_hh_packed: PackedLhs<T>,
    /// `W_ihᵀ`, for the input gradient (see `input_backward`).
    w_ih_t: Mat<T>,
}

impl<T: Scalar> Default for GruCache<T> {
    fn default() -> Self {
        let e = || Mat::zeros(0, 0);
        Self {
            batch: 0,
            gates: e(),
            v_n: e(),
            h: e(),
            h0: e(),
            v: e(),
            w_hh_packed: PackedLhs::new(),
            scratch: RefCell::new(GruScratch {
                du: e(),
                dv: e(),
                dh: e(),
                w_hh_packed: PackedLhs::new(),
                w_ih_t: e(),
            }),
        }
    }
}

/// The pointwise part of one step: `u` (`3H × B`, `W_ih·x` without bias) is overwritten with the
/// activated gates, `v` (`W_hh·h_{t-1}` without bias, scratch) receives `b_hh`; on entry `h`
/// holds `h_{t-1}`, on exit `h_t`; `v_n` (if given) receives `W_hn·h_{t-1} + b_hn`.
///
/// The biases are added in their own passes so that the fused gate loop is branch-free and
/// vectorises ([`Scalar::exp_v`], [`Scalar::tanh_v`]); it runs in its AVX-512 or AVX2 build where available.
#[inline(always)]
fn pointwise_forward_impl<T: Scalar>(
    hid: usize,
    u: &mut [T],
    v: &mut [T],
    b_ih: Option<&Mat<T>>,
    b_hh: Option<&Mat<T>>,
    mut v_n: Option<&mut [T]>,
    h: &mut [T],
) {
    let cols = u.len() / (3 * hid);
    assert!(
        u.len() == 3 * hid * cols && v.len() == u.len() && h.len() == hid * cols,
        "GRU pointwise: u {}, v {}, h {} values for H = {hid}",
        u.len(),
        v.len(),
        h.len()
    );
    for (b, (ub, vb)) in u.chunks_exact_mut(3 * hid).zip(v.chunks_exact_mut(3 * hid)).enumerate() {
        if let (Some(bi), Some(bh)) = (b_ih, b_hh) {
            ub.iter_mut().zip(bi.as_slice()).for_each(|(x, &y)| *x += y);
            vb.iter_mut().zip(bh.as_slice()).for_each(|(x, &y)| *x += y);
        }
        let (ur, rest) = ub.split_at_mut(hid);
        let (uz, un) = rest.split_at_mut(hid);
        let (vr, rest) = vb.split_at(hid);
        let (vz, vn) = rest.split_at(hid);
        let hb = &mut h[b * hid..(b + 1) * hid];
        for j in 0..hid {
            // r = σ(u_r + v_r), z = σ(u_z + v_z), n = tanh(u_n + r ⊙ v_n)
            let r = sigmoid(ur[j] + vr[j]);
            let z = sigmoid(uz[j] + vz[j]);
            let n = (un[j] + r * vn[j]).tanh_v();
            (ur[j], uz[j], un[j]) = (r, z, n);
            // h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
            hb[j] = (T::ONE - z) * n + z * hb[j];
        }
        if let Some(s) = v_n.as_deref_mut() {
            s[b * hid..(b + 1) * hid].copy_from_slice(vn);
        }
    }
}

rnn_tensor::dispatch_avx2! {
    /// [`pointwise_forward_impl`], in its AVX-512 or AVX2 build where available.
    fn pointwise_forward<T>(
        hid: usize,
        u: &mut [T],
        v: &mut [T],
        b_ih: Option<&Mat<T>>,
        b_hh: Option<&Mat<T>>,
        v_n: Option<&mut [T]>,
        h: &mut [T],
    ) => pointwise_forward_impl
}

/// The pointwise part of one backward step, for one step's blocks: activated gates `[r; z; n]`
/// (`3H × B`), `v_n`, `h_{t-1}` and `δ_t` (`H × B`). On entry `dh` holds `dh_t` from the step
/// after, on exit the direct part `dh ⊙ z` of `dh_{t-1}`; writes `du_t` and `dv_t` (`3H × B`).
#[inline(always)]
fn pointwise_backward_impl<T: Scalar>(
    hid: usize,
    gates: &[T],
    v_n: &[T],
    h_prev: &[T],
    d_out: &[T],
    dh: &mut [T],
    du: &mut [T],
    dv: &mut [T],
) {
    let n = v_n.len();
    assert!(
        gates.len() == 3 * n
            && du.len() == 3 * n
            && dv.len() == 3 * n
            && [h_prev.len(), d_out.len(), dh.len()] == [n; 3],
        "GRU pointwise backward: gates {}, du {}, dv {}, H×B blocks {n}, {}, {}, {}",
        gates.len(),
        du.len(),
        dv.len(),
        h_prev.len(),
        d_out.len(),
        dh.len()
    );
    let chunks =
        gates.chunks_exact(3 * hid).zip(du.chunks_exact_mut(3 * hid)).zip(dv.chunks_exact_mut(3 * hid));
    for (b, ((g3, du3), dv3)) in chunks.enumerate() {
        let col = b * hid..(b + 1) * hid;
        let (gr, rest) = g3.split_at(hid);
        let (gz, gn) = rest.split_at(hid);
        let (dur, rest) = du3.split_at_mut(hid);
        let (duz, dun) = rest.split_at_mut(hid);
        let (dvr, rest) = dv3.split_at_mut(hid);
        let (dvz, dvn) = rest.split_at_mut(hid);
        let (vn, hp, dout) = (&v_n[col.clone()], &h_prev[col.clone()], &d_out[col.clone()]);
        let dhb = &mut dh[col];
        for j in 0..hid {
            let (r, z, nn) = (gr[j], gz[j], gn[j]);
            // dh = δ_t + dh_t
            let dht = dhb[j] + dout[j];
            // dn = dh ⊙ (1 - z);  dz = dh ⊙ (h_{t-1} - n)
            let dn = dht * (T::ONE - z);
            let dz = dht * (hp[j] - nn);
            // du_n = dn ⊙ (1 - n²);  dv_n = du_n ⊙ r
            let d_un = dn * (T::ONE - nn * nn);
            // du_r = dv_r = du_n ⊙ v_n ⊙ r(1-r);  du_z = dv_z = dz ⊙ z(1-z)
            let dar = d_un * vn[j] * r * (T::ONE - r);
            let daz = dz * z * (T::ONE - z);
            (dur[j], duz[j], dun[j]) = (dar, daz, d_un);
            (dvr[j], dvz[j], dvn[j]) = (dar, daz, d_un * r);
            // the direct path: dh_{t-1} = dh ⊙ z (+ W_hhᵀ · dv_t after this pass)
            dhb[j] = dht * z;
        }
    }
}

rnn_tensor::dispatch_avx2! {
    /// [`pointwise_backward_impl`], in its AVX-512 or AVX2 build where available.
    fn pointwise_backward<T>(
        hid: usize,
        gates: &[T],
        v_n: &[T],
        h_prev: &[T],
        d_out: &[T],
        dh: &mut [T],
        du: &mut [T],
        dv: &mut [T],
    ) => pointwise_backward_impl
}

impl<T: Scalar> Gru<T> {
    /// All-zero gradients shaped like the parameters.
    pub fn zero_grads(&self) -> GruParams<T> {
        self.params.zeros_like()
    }

    /// [`Recurrence::backward`]; with `init_grad` false the last `W_hhᵀ` product, needed only
    /// for the initial-state gradient, is skipped and `None` returned.
    fn backward_inner(
        &self,
        x: SeqInput<'_, T>,
        cache: &GruCache<T>,
        d_out: &Mat<T>,
        d_final: &Mat<T>,
        grads: &mut GruParams<T>,
        d_x: Option<&mut Mat<T>>,
        init_grad: bool,
    ) -> Option<Mat<T>> {
        let (hid, n, batch) = (self.hidden_size(), cache.h.ncols(), cache.batch);
        assert!(batch > 0, "GRU backward: the cache holds no forward pass");
        assert!(
            d_out.shape() == (hid, n) && x.columns() == n && d_final.shape() == (hid, batch),
            "GRU backward: d_out is {:?}, d_final {:?}, x has {} columns; the forward had H = {hid}, N = {n}, B = {batch}",
            d_out.shape(),
            d_final.shape(),
            x.columns()
        );
        let (steps, blk) = (n / batch, hid * batch);
        let mut guard = cache.scratch.borrow_mut();
        let s = &mut *guard;
        ensure_shape(&mut s.du, 3 * hid, n);
        ensure_shape(&mut s.dv, 3 * hid, n);
        s.dh.clone_from(d_final);
        let (gates, h, v_n) = (cache.gates.as_slice(), cache.h.as_slice(), cache.v_n.as_slice());
        // W_hhᵀ packed once (a one-step sequence reads it as stored).
        let w_hh_t = StepWeight::new(&self.params.weight_hh, Trans::Yes, steps, &mut s.w_hh_packed);
        // The time loop, split by batch columns as the forward's: each part owns columns `cols`
        // of dU's and dV's step blocks and of dh for the whole loop.
        let (du, dv, dh) =
            (SharedCols::new(&mut s.du), SharedCols::new(&mut s.dv), SharedCols::new(&mut s.dh));
        let h0 = cache.h0.as_slice();
        for_each_batch_part(batch, 3 * hid * hid, |cols| {
            let nb = cols.len();
            let (lo, hi) = (cols.start * hid, cols.end * hid);
            for t in (0..steps).rev() {
                let col = t * batch + cols.start;
                let (blk_lo, blk_hi) = (t * blk + lo, t * blk + hi);
                let h_prev = if t == 0 { &h0[lo..hi] } else { &h[blk_lo - blk..blk_hi - blk] };
                // SAFETY (dU, dV, dh, here and below): this part alone reads and writes columns
                // `cols` of dh and of each step block of dU and dV, and they outlive the call.
                pointwise_backward(
                    hid,
                    &gates[3 * blk_lo..3 * blk_hi],
                    &v_n[blk_lo..blk_hi],
                    h_prev,
                    &d_out.as_slice()[blk_lo..blk_hi],
                    unsafe { dh.slice_mut(cols.start, nb) },
                    unsafe { du.slice_mut(col, nb) },
                    unsafe { dv.slice_mut(col, nb) },
                );
                // dh_{t-1} += W_hhᵀ · dv_t
                if t > 0 || init_grad {
                    let dv_t = unsafe { dv.cols_mut(col, nb) };
                    w_hh_t.gemm(&dv_t, T::ONE, &mut unsafe { dh.cols_mut(cols.start, nb) });
                }
            }
        });
        // After the loop, one product each over the whole buffers:
        // dW_hh += Σ_t dv_t · h_{t-1}ᵀ
        hidden_weight_grad(&s.dv, None, &cache.h0, &cache.h, &mut grads.weight_hh);
        // db_ih += Σ_columns dU;  db_hh += Σ_columns dV
        if let (Some(bi), Some(bh)) = (&mut grads.bias_ih, &mut grads.bias_hh) {
            add_column_sums(&s.du, bi, None);
            add_column_sums(&s.dv, bh, None);
        }
        // dW_ih += dU · Xᵀ (or scatter-add);  d_x = W_ihᵀ · dU
        input_backward(
            &self.params.weight_ih,
            x,
            &s.du,
            None,
            &mut grads.weight_ih,
            d_x,
            &mut s.w_ih_t,
            &mut PackedLhs::new(),
        );
        init_grad.then(|| s.dh.clone())
    }
}

impl<T: Scalar> Recurrence<T> for Gru<T> {
    type State = Mat<T>;
    type Params = GruParams<T>;
    type Cache = GruCache<T>;

    fn input_size(&self) -> usize {
        self.params.input_size()
    }
    fn hidden_size(&self) -> usize {
        self.params.hidden_size()
    }
    fn params(&self) -> &GruParams<T> {
        &self.params
    }
    fn params_mut(&mut self) -> &mut GruParams<T> {
        &mut self.params
    }
    fn zero_state(&self, batch: usize) -> Mat<T> {
        Mat::zeros(self.hidden_size(), batch)
    }
    fn state_output(state: &Mat<T>) -> &Mat<T> {
        state
    }

    fn step(&self, x: SeqInput<'_, T>, state: &mut Mat<T>) {
        let batch = state.ncols();
        assert_eq!(
            x.columns(),
            batch,
            "GRU step: {} input columns for a state of batch {batch}",
            x.columns()
        );
        if let Err(e) = self.check_input(x, batch, state) {
            panic!("GRU step: {e}");
        }
        let hid = self.hidden_size();
        let mut u = Mat::zeros(3 * hid, batch);
        let mut v = Mat::zeros(3 * hid, batch);
        project_input(&self.params.weight_ih, x, &mut u);
        // v = W_hh · h_{t-1}  (a GEMV when B = 1)
        gemm(T::ONE, &self.params.weight_hh, Trans::No, state, Trans::No, T::ZERO, &mut v);
        let p = &self.params;
        pointwise_forward(
            hid,
            u.as_mut_slice(),
            v.as_mut_slice(),
            p.bias_ih.as_ref(),
            p.bias_hh.as_ref(),
            None,
            state.as_mut_slice(),
        );
    }

    fn forward(&self, x: SeqInput<'_, T>, batch: usize, h0: &Mat<T>, cache: &mut GruCache<T>) -> Mat<T> {
        if let Err(e) = self.check_input(x, batch, h0) {
            panic!("GRU forward: {e}");
        }
        let (hid, n) = (self.hidden_size(), x.columns());
        let steps = n / batch;
        cache.batch = batch;
        ensure_shape(&mut cache.gates, 3 * hid, n);
        ensure_shape(&mut cache.v_n, hid, n);
        ensure_shape(&mut cache.h, hid, n);
        ensure_shape(&mut cache.v, 3 * hid, batch);
        cache.h0.clone_from(h0);
        // U = W_ih · X for every step at once (or the gather of W_ih columns).
        project_input(&self.params.weight_ih, x, &mut cache.gates);
        let p = &self.params;
        // The time loop, split by batch columns: each part owns columns `cols` of every step
        // block (gates, v_n, h) and of `v` for the whole loop, so the parts never touch the same
        // memory and each column is computed exactly as without the split.
        let w_hh = StepWeight::new(&p.weight_hh, Trans::No, steps, &mut cache.w_hh_packed);
        let (gates, v_n, h, v) = (
            SharedCols::new(&mut cache.gates),
            SharedCols::new(&mut cache.v_n),
            SharedCols::new(&mut cache.h),
            SharedCols::new(&mut cache.v),
        );
        let h0m = &cache.h0;
        for_each_batch_part(batch, 3 * hid * hid, |cols| {
            let nb = cols.len();
            for t in 0..steps {
                let col = t * batch + cols.start;
                // SAFETY (all four matrices, here and below): this part alone reads and writes
                // columns `cols` of `v` and of each step block, and the matrices outlive the call.
                let mut v_p = unsafe { v.cols_mut(cols.start, nb) };
                let h_t = unsafe { h.slice_mut(col, nb) };
                // v = W_hh · h_{t-1}; then h_t starts as a copy of h_{t-1}, updated in place.
                if t == 0 {
                    let h0_p = h0m.columns(cols.start, nb);
                    w_hh.gemm(&h0_p, T::ZERO, &mut v_p);
                    h_t.copy_from_slice(&h0m.as_slice()[cols.start * hid..cols.end * hid]);
                } else {
                    let prev = unsafe { h.cols_mut(col - batch, nb) };
                    w_hh.gemm(&prev, T::ZERO, &mut v_p);
                    h_t.copy_from_slice(unsafe { h.slice_mut(col - batch, nb) });
                }
                pointwise_forward(
                    hid,
                    unsafe { gates.slice_mut(col, nb) },
                    unsafe { v.slice_mut(cols.start, nb) },
                    p.bias_ih.as_ref(),
                    p.bias_hh.as_ref(),
                    Some(unsafe { v_n.slice_mut(col, nb) }),
                    h_t,
                );
            }
        });
        if steps == 0 {
            return h0.clone();
        }
        cache.h.columns(n - batch, batch).into_owned()
    }

    fn outputs<'c>(&self, cache: &'c GruCache<T>) -> &'c Mat<T> {
        &cache.h
    }

    fn backward(
        &self,
        x: SeqInput<'_, T>,
        cache: &GruCache<T>,
        d_out: &Mat<T>,
        d_final: &Mat<T>,
        grads: &mut GruParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) -> Mat<T> {
        self.backward_inner(x, cache, d_out, d_final, grads, d_x, true)
            .expect("the initial-state gradient was asked for")
    }

    fn backward_detached(
        &self,
        x: SeqInput<'_, T>,
        cache: &GruCache<T>,
        d_out: &Mat<T>,
        d_final: &Mat<T>,
        grads: &mut GruParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_inner(x, cache, d_out, d_final, grads, d_x, false);
    }
}
