//! Long short-term memory, as `torch.nn.LSTM`.
//!
//! Forward, for each step `t` (`σ` the logistic sigmoid, `⊙` the elementwise product), with the
//! four gate blocks stacked in PyTorch's order i, f, g, o:
//!
//! ```text
//! a_t = W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh            (4H × B: blocks a_i, a_f, a_g, a_o)
//! i_t = σ(a_i)   f_t = σ(a_f)   g_t = tanh(a_g)   o_t = σ(a_o)
//! c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
//! h_t = o_t ⊙ tanh(c_t)
//! ```
//!
//! Backward through time, from `dh_T`, `dc_T` (the final-state gradient) and the output
//! gradients `δ_t`, for `t = T..1`:
//!
//! ```text
//! dh   = δ_t + dh_t                        (dh_t comes from step t+1, or the final state)
//! dc   = dc_t + dh ⊙ o_t ⊙ (1 - tanh²c_t)
//! da_i = dc ⊙ g_t ⊙ i_t(1-i_t)          da_f = dc ⊙ c_{t-1} ⊙ f_t(1-f_t)
//! da_g = dc ⊙ i_t ⊙ (1-g_t²)            da_o = dh ⊙ tanh(c_t) ⊙ o_t(1-o_t)
//! dc_{t-1} = dc ⊙ f_t
//! dh_{t-1} = W_hhᵀ · da_t
//! ```
//!
//! and after the loop, over the whole `4H × T·B` buffer `dA` of the `da_t`:
//! `dW_ih += dA·Xᵀ`, `dW_hh += Σ_t da_t·h_{t-1}ᵀ`, `db_ih = db_hh += Σ_columns dA`,
//! `d_x = W_ihᵀ·dA`. `dh_0`, `dc_0` are returned.
//!
//! Cost per sequence: one GEMM for the input projection, `T` GEMMs `W_hh·h_{t-1}` (GEMV for
//! `B = 1`), `T` pointwise passes; backward `T` GEMMs `W_hhᵀ·da_t` and three GEMMs after the loop.

use std::cell::RefCell;

#[path = "lstm_b1.rs"]
mod b1;

use rnn_tensor::activation::sigmoid;
use rnn_tensor::{gemm, Mat, PackedLhs, Rng, Scalar, Trans};

use crate::gated::{
    add_column_sums, all_zero, check_state_part, ensure_shape, for_each_batch_part, hidden_weight_grad,
    input_backward, project_input, summed_bias, GatedConfig, RecurrentParams, SharedCols, StepWeight,
};
use crate::{CellError, Recurrence, SeqInput, Stack};

/// The parameters of an [`Lstm`] (and its gradients): `weight_ih` `[4H, I]`, `weight_hh`
/// `[4H, H]`, `bias_ih`, `bias_hh` `[4H]`, gates i, f, g, o.
pub type LstmParams<T> = RecurrentParams<T>;

/// The state of an LSTM: the output `h` and the cell `c`, both `H × B`.
#[derive(Clone, Debug, PartialEq)]
pub struct LstmState<T: Scalar> {
    /// The hidden state (the output), `H × B`.
    pub h: Mat<T>,
    /// The cell state, `H × B`.
    pub c: Mat<T>,
}

/// Selects the LSTM in [`GatedConfig`]; never constructed.
#[derive(Debug, PartialEq)]
pub enum LstmKind {}

/// How to build a [`Lstm`]: `LstmConfig::new(input, hidden).with_bias(..).with_init(..).build(rng)`.
pub type LstmConfig = GatedConfig<LstmKind>;

impl LstmConfig {
    /// Checks the configuration and draws the weights (in PyTorch's order: `weight_ih`,
    /// `weight_hh`, `bias_ih`, `bias_hh`).
    pub fn build<T: Scalar>(&self, rng: &mut Rng) -> Result<Lstm<T>, CellError> {
        Ok(Lstm { params: self.build_params(4, "LSTM", rng)? })
    }

    /// A stack of `num_layers` LSTMs, as `torch.nn.LSTM(input, hidden, num_layers)`: layer 0
    /// reads `input` features, the others `hidden`; layer `k`'s tensors are named `_l{k}` and
    /// drawn in PyTorch's order, layer by layer.
    pub fn build_stack<T: Scalar>(
        &self,
        num_layers: usize,
        rng: &mut Rng,
    ) -> Result<Stack<Lstm<T>>, CellError> {
        Stack::from_fn(num_layers, |k| Ok(Lstm { params: self.for_layer(k).build_params(4, "LSTM", rng)? }))
    }
}

/// A long short-term memory layer; see the module docs for the equations.
#[derive(Clone, Debug, PartialEq)]
pub struct Lstm<T: Scalar> {
    /// The tensors, under PyTorch's names.
    pub params: LstmParams<T>,
}

/// What [`Lstm::forward`](Recurrence::forward) keeps for backward. Buffers grow to the largest
/// sequence seen and are reused, so a second call of the same shape allocates nothing.
#[derive(Debug)]
pub struct LstmCache<T: Scalar> {
    batch: usize,
    /// Activated gates `[i; f; g; o]`, `4H × T·B`.
    gates: Mat<T>,
    /// Cell states `c_1..c_T`, `H × T·B`.
    c: Mat<T>,
    /// `tanh(c_t)`, `H × T·B`.
    tanh_c: Mat<T>,
    /// Outputs `h_1..h_T`, `H × T·B`.
    h: Mat<T>,
    h0: Mat<T>,
    c0: Mat<T>,
    bias: Vec<T>,
    /// `W_hh`, packed for the forward's time loop.
    w_hh_packed: PackedLhs<T>,
    /// Backward's buffers. Backward reads the cache through a shared reference (the trait's
    /// contract), so its own scratch space sits behind a `RefCell`.
    scratch: RefCell<LstmScratch<T>>,
    /// The batch-1 loop's buffers (`lstm_b1.rs`).
    b1: b1::B1Scratch,
}

#[derive(Debug)]
struct LstmScratch<T: Scalar> {
    /// Pre-activation gate gradients `dA`, `4H × T·B`.
    dgates: Mat<T>,
    /// `dA` in strips (f32 on CPUs with AVX-512, dense input), written column by column by the
    /// time loop: the operand of every product that reads `dA` (the step's `W_hhᵀ·da_t`, `dW_ih`,
    /// `dW_hh`, `d_x`) without a packing per product, and of the bias sums. `dgates` then only
    /// holds each part's current step (step 0's columns, reused).
    dgates_packed: PackedLhs<T>,
    /// `W_ihᵀ` in strips, for `d_x` from `dgates_packed`.
    w_ih_t_packed: PackedLhs<T>,
    dh: Mat<T>,
    dc: Mat<T>,
    /// `W_hhᵀ`, packed for the time loop of sequences of more than one step.
    w_hh_packed: PackedLhs<T>,
    /// `W_ihᵀ`, for the input gradient (see `input_backward`).
    w_ih_t: Mat<T>,
}

impl<T: Scalar> Default for LstmCache<T> {
    fn default() -> Self {
        let e = || Mat::zeros(0, 0);
        Self {
            batch: 0,
            gates: e(),
            c: e(),
            tanh_c: e(),
            h: e(),
            h0: e(),
            c0: e(),
            bias: Vec::new(),
            w_hh_packed: PackedLhs::new(),
            scratch: RefCell::new(LstmScratch {
                dgates: e(),
                dgates_packed: PackedLhs::new(),
                w_ih_t_packed: PackedLhs::new(),
                dh: e(),
                dc: e(),
                w_hh_packed: PackedLhs::new(),
                w_ih_t: e(),
            }),
            b1: Default::default(),
        }
    }
}

/// The pointwise part of one step over a `4H × B` block of pre-activations `a` (bias not yet
/// added; `bias` is `b_ih + b_hh` or empty). On entry `c` holds `c_{t-1}`, on exit `c_t`; `a` is
/// overwritten with the activated gates, `h` with `h_t`, `tanh_c` with `tanh(c_t)`.
///
/// One fused pass per column, branch-free (the vectorisable [`Scalar::exp_v`]/[`Scalar::tanh_v`])
/// and in its AVX-512 or AVX2 build where the CPU has it.
#[inline(always)]
fn pointwise_forward_impl<T: Scalar>(
    hid: usize,
    a: &mut [T],
    bias: &[T],
    c: &mut [T],
    tanh_c: &mut [T],
    h: &mut [T],
) {
    let cols = a.len() / (4 * hid);
    assert!(
        a.len() == 4 * hid * cols
            && c.len() == hid * cols
            && tanh_c.len() == hid * cols
            && h.len() == hid * cols,
        "LSTM pointwise: gates {}, c {}, tanh_c {}, h {} values for H = {hid}",
        a.len(),
        c.len(),
        tanh_c.len(),
        h.len()
    );
    for (b, gate) in a.chunks_exact_mut(4 * hid).enumerate() {
        if !bias.is_empty() {
            gate.iter_mut().zip(bias).for_each(|(v, &bv)| *v += bv);
        }
        let (gi, rest) = gate.split_at_mut(hid);
        let (gf, rest) = rest.split_at_mut(hid);
        let (gg, go) = rest.split_at_mut(hid);
        let col = b * hid..(b + 1) * hid;
        let (cb, hb, tb) = (&mut c[col.clone()], &mut h[col.clone()], &mut tanh_c[col]);
        for j in 0..hid {
            let i = sigmoid(gi[j]);
            let f = sigmoid(gf[j]);
            let g = gg[j].tanh_v();
            let o = sigmoid(go[j]);
            (gi[j], gf[j], gg[j], go[j]) = (i, f, g, o);
            // c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)
            let ct = f * cb[j] + i * g;
            let tc = ct.tanh_v();
            cb[j] = ct;
            tb[j] = tc;
            hb[j] = o * tc;
        }
    }
}

rnn_tensor::dispatch_avx2! {
    /// [`pointwise_forward_impl`], in its AVX-512 or AVX2 build where available.
    fn pointwise_forward<T>(hid: usize, a: &mut [T], bias: &[T], c: &mut [T], tanh_c: &mut [T], h: &mut [T]) => pointwise_forward_impl
}

/// The pointwise part of one backward step, for one step's blocks: activated gates (`4H × B`),
/// `tanh(c_t)`, `c_{t-1}`, the output gradient `δ_t` and `dh_t` (each `H × B`). Writes the
/// pre-activation gradients `da_t` into `dg` (`4H × B`) and replaces `dc_t` by `dc_{t-1}`.
#[inline(always)]
fn pointwise_backward_impl<T: Scalar>(
    hid: usize,
    gates: &[T],
    tanh_c: &[T],
    c_prev: &[T],
    d_out: &[T],
    dh: &[T],
    dc: &mut [T],
    dg: &mut [T],
) {
    let n = tanh_c.len();
    assert!(
        gates.len() == 4 * n
            && dg.len() == 4 * n
            && [c_prev.len(), d_out.len(), dh.len(), dc.len()] == [n; 4],
        "LSTM pointwise backward: gates {}, dg {}, H×B blocks {n}, {}, {}, {}, {}",
        gates.len(),
        dg.len(),
        c_prev.len(),
        d_out.len(),
        dh.len(),
        dc.len()
    );
    for (b, (g4, dg4)) in gates.chunks_exact(4 * hid).zip(dg.chunks_exact_mut(4 * hid)).enumerate() {
        let col = b * hid..(b + 1) * hid;
        let (gi, rest) = g4.split_at(hid);
        let (gf, rest) = rest.split_at(hid);
        let (gg, go) = rest.split_at(hid);
        let (di, rest) = dg4.split_at_mut(hid);
        let (df, rest) = rest.split_at_mut(hid);
        let (dgg, dgo) = rest.split_at_mut(hid);
        let (tc, cp, dout, dhb) =
            (&tanh_c[col.clone()], &c_prev[col.clone()], &d_out[col.clone()], &dh[col.clone()]);
        let dcb = &mut dc[col];
        for j in 0..hid {
            let (i, f, g, o, tcj) = (gi[j], gf[j], gg[j], go[j], tc[j]);
            // dh = δ_t + dh_t
            let dht = dhb[j] + dout[j];
            // dc = dc_t + dh ⊙ o ⊙ (1 - tanh²c_t)
            let dct = dcb[j] + dht * o * (T::ONE - tcj * tcj);
            // da_i = dc ⊙ g ⊙ i(1-i);  da_f = dc ⊙ c_{t-1} ⊙ f(1-f)
            di[j] = dct * g * i * (T::ONE - i);
            df[j] = dct * cp[j] * f * (T::ONE - f);
            // da_g = dc ⊙ i ⊙ (1-g²);  da_o = dh ⊙ tanh(c_t) ⊙ o(1-o)
            dgg[j] = dct * i * (T::ONE - g * g);
            dgo[j] = dht * tcj * o * (T::ONE - o);
            // dc_{t-1} = dc ⊙ f
            dcb[j] = dct * f;
        }
    }
}

rnn_tensor::dispatch_avx2! {
    /// [`pointwise_backward_impl`], in its AVX-512 or AVX2 build where available.
    fn pointwise_backward<T>(
        hid: usize,
        gates: &[T],
        tanh_c: &[T],
        c_prev: &[T],
        d_out: &[T],
        dh: &[T],
        dc: &mut [T],
        dg: &mut [T],
    ) => pointwise_backward_impl
}

impl<T: Scalar> Lstm<T> {
    /// All-zero gradients shaped like the parameters.
    pub fn zero_grads(&self) -> LstmParams<T> {
        self.params.zeros_like()
    }

    /// [`Recurrence::backward`]; with `init_grad` false the last `W_hhᵀ` product, needed only
    /// for the initial-state gradient, is skipped and `None` returned.
    fn backward_inner(
        &self,
        x: SeqInput<'_, T>,
        cache: &LstmCache<T>,
        d_out: &Mat<T>,
        d_final: &LstmState<T>,
        grads: &mut LstmParams<T>,
        d_x: Option<&mut Mat<T>>,
        init_grad: bool,
    ) -> Option<LstmState<T>> {
        let (hid, n, batch) = (self.hidden_size(), cache.h.ncols(), cache.batch);
        assert!(
            d_out.shape() == (hid, n) && x.columns() == n,
            "LSTM backward: d_out is {:?} and x has {} columns, the forward had H×N = {hid}×{n}",
            d_out.shape(),
            x.columns()
        );
        assert!(
            d_final.h.shape() == (hid, batch) && d_final.c.shape() == (hid, batch),
            "LSTM backward: d_final is h {:?}, c {:?}, expected {hid}×{batch}",
            d_final.h.shape(),
            d_final.c.shape()
        );
        assert!(batch > 0, "LSTM backward: the cache holds no forward pass");
        let steps = n / batch;
        let blk = hid * batch;
        let mut guard = cache.scratch.borrow_mut();
        let s = &mut *guard;
        ensure_shape(&mut s.dgates, 4 * hid, n);
        s.dh.clone_from(&d_final.h);
        s.dc.clone_from(&d_final.c);
        let (gates, c, tanh_c) = (cache.gates.as_slice(), cache.c.as_slice(), cache.tanh_c.as_slice());
        // W_hhᵀ packed once (read through the transpose, W_hh would be packed with a strided
        // gather on every step); a one-step sequence reads it as stored.
        let w_hh_t = StepWeight::new(&self.params.weight_hh, Trans::Yes, steps, &mut s.w_hh_packed);
        // The time loop, split by batch columns as the forward's: each part owns columns `cols`
        // of dA's step blocks and of dh, dc for the whole loop.
        let (dgates, dh, dc) =
            (SharedCols::new(&mut s.dgates), SharedCols::new(&mut s.dh), SharedCols::new(&mut s.dc));
        // dA in strips only (see `LstmScratch::dgates_packed`); a one-hot input's scatter-add
        // reads the plain dA.
        let strips_only = matches!(x, SeqInput::Dense(_)) && {
            s.dgates_packed.reset(4 * hid, n);
            s.dgates_packed.is_strips()
        };
        let dgates_packed = s.dgates_packed.columns_writer();
        let c0 = cache.c0.as_slice();
        for_each_batch_part(batch, 4 * hid * hid, |cols| {
            let nb = cols.len();
            let (lo, hi) = (cols.start * hid, cols.end * hid);
            for t in (0..steps).rev() {
                let col = t * batch + cols.start;
                let (blk_lo, blk_hi) = (t * blk + lo, t * blk + hi);
                let c_prev = if t == 0 { &c0[lo..hi] } else { &c[blk_lo - blk..blk_hi - blk] };
                // SAFETY (dA, dh, dc, here and below): this part alone reads and writes columns
                // `cols` of dh, dc and of each step block of dA, and the matrices outlive the call.
                let (dh_p, dc_p) = unsafe { (dh.slice_mut(cols.start, nb), dc.slice_mut(cols.start, nb)) };
                // Where this step's da_t goes: its own columns of dA, or, with strips only, the
                // part's columns of step 0 (reused as scratch) and then the strips.
                let dcol = if strips_only { cols.start } else { col };
                let da_t = unsafe { dgates.slice_mut(dcol, nb) };
                pointwise_backward(
                    hid,
                    &gates[4 * blk_lo..4 * blk_hi],
                    &tanh_c[blk_lo..blk_hi],
                    c_prev,
                    &d_out.as_slice()[blk_lo..blk_hi],
                    dh_p,
                    dc_p,
                    da_t,
                );
                if strips_only {
                    // SAFETY: as above, the same columns of the strips.
                    unsafe { dgates_packed.write(col, da_t) };
                }
                // dh_{t-1} = W_hhᵀ · da_t
                if t > 0 || init_grad {
                    let da_t = unsafe { dgates.cols_mut(dcol, nb) };
                    let mut dh_p = unsafe { dh.cols_mut(cols.start, nb) };
                    if strips_only {
                        // SAFETY: this part wrote these columns of the strips above.
                        unsafe { w_hh_t.gemm_from(&dgates_packed, col, &da_t, T::ZERO, &mut dh_p) };
                    } else {
                        w_hh_t.gemm(&da_t, T::ZERO, &mut dh_p);
                    }
                }
            }
        });
        // After the loop, each one product over the whole dA buffer:
        // dW_hh += Σ_t da_t · h_{t-1}ᵀ
        let dp = strips_only.then_some(&s.dgates_packed);
        hidden_weight_grad(&s.dgates, dp, &cache.h0, &cache.h, &mut grads.weight_hh);
        // db_ih += Σ_columns dA, db_hh += Σ_columns dA
        if let (Some(bi), Some(bh)) = (&mut grads.bias_ih, &mut grads.bias_hh) {
            match dp {
                Some(p) => p.add_row_sums(bi.as_mut_slice(), Some(bh.as_mut_slice())),
                None => add_column_sums(&s.dgates, bi, Some(bh)),
            }
        }
        // dW_ih += dA · Xᵀ (or scatter-add), d_x = W_ihᵀ · dA
        input_backward(
            &self.params.weight_ih,
            x,
            &s.dgates,
            dp,
            &mut grads.weight_ih,
            d_x,
            &mut s.w_ih_t,
            &mut s.w_ih_t_packed,
        );
        init_grad.then(|| LstmState { h: s.dh.clone(), c: s.dc.clone() })
    }
}

impl<T: Scalar> Recurrence<T> for Lstm<T> {
    type State = LstmState<T>;
    type Params = LstmParams<T>;
    type Cache = LstmCache<T>;

    fn input_size(&self) -> usize {
        self.params.input_size()
    }
    fn hidden_size(&self) -> usize {
        self.params.hidden_size()
    }
    fn params(&self) -> &LstmParams<T> {
        &self.params
    }
    fn params_mut(&mut self) -> &mut LstmParams<T> {
        &mut self.params
    }
    fn zero_state(&self, batch: usize) -> LstmState<T> {
        let hid = self.hidden_size();
        LstmState { h: Mat::zeros(hid, batch), c: Mat::zeros(hid, batch) }
    }
    fn state_output(state: &LstmState<T>) -> &Mat<T> {
        &state.h
    }

    fn check_input(&self, x: SeqInput<'_, T>, batch: usize, h0: &LstmState<T>) -> Result<(), CellError> {
        crate::gated::check_seq(&x, batch, self.input_size())?;
        check_state_part("h", &h0.h, self.hidden_size(), batch)?;
        check_state_part("c", &h0.c, self.hidden_size(), batch)
    }

    fn step(&self, x: SeqInput<'_, T>, state: &mut LstmState<T>) {
        let batch = state.h.ncols();
        assert_eq!(
            x.columns(),
            batch,
            "LSTM step: {} input columns for a state of batch {batch}",
            x.columns()
        );
        if let Err(e) = self.check_input(x, batch, state) {
            panic!("LSTM step: {e}");
        }
        let hid = self.hidden_size();
        let mut a = Mat::zeros(4 * hid, batch);
        let mut bias = Vec::new();
        summed_bias(&self.params, &mut bias);
        project_input(&self.params.weight_ih, x, &mut a);
        // a += W_hh · h_{t-1}  (a GEMV when B = 1)
        gemm(T::ONE, &self.params.weight_hh, Trans::No, &state.h, Trans::No, T::ONE, &mut a);
        let mut tanh_c = vec![T::ZERO; hid * batch];
        pointwise_forward(
            hid,
            a.as_mut_slice(),
            &bias,
            state.c.as_mut_slice(),
            &mut tanh_c,
            state.h.as_mut_slice(),
        );
    }

    fn forward(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &LstmState<T>,
        cache: &mut LstmCache<T>,
    ) -> LstmState<T> {
        if let Err(e) = self.check_input(x, batch, h0) {
            panic!("LSTM forward: {e}");
        }
        let (hid, n) = (self.hidden_size(), x.columns());
        let steps = n / batch;
        cache.batch = batch;
        ensure_shape(&mut cache.gates, 4 * hid, n);
        ensure_shape(&mut cache.c, hid, n);
        ensure_shape(&mut cache.tanh_c, hid, n);
        ensure_shape(&mut cache.h, hid, n);
        cache.h0.clone_from(&h0.h);
        cache.c0.clone_from(&h0.c);
        summed_bias(&self.params, &mut cache.bias);
        // A = W_ih · X for every step at once (or the gather of W_ih columns).
        project_input(&self.params.weight_ih, x, &mut cache.gates);
        // Batch 1 in f32: the loop of lstm_b1.rs (hidden units split over the threads).
        if batch == 1 && steps > 0 && b1::run(self, cache) {
            return LstmState {
                h: cache.h.columns(n - 1, 1).into_owned(),
                c: cache.c.columns(n - 1, 1).into_owned(),
            };
        }
        // The time loop, split by batch columns: each part owns columns `cols` of every step
        // block (gates, c, tanh c, h) for the whole loop, so the parts never touch the same memory
        // and each column is computed exactly as without the split.
        let w_hh = StepWeight::new(&self.params.weight_hh, Trans::No, steps, &mut cache.w_hh_packed);
        let (gates, c, tanh_c, h) = (
            SharedCols::new(&mut cache.gates),
            SharedCols::new(&mut cache.c),
            SharedCols::new(&mut cache.tanh_c),
            SharedCols::new(&mut cache.h),
        );
        let (h0m, c0m, bias) = (&cache.h0, &cache.c0, &cache.bias[..]);
        // A zero initial state (the usual one) adds nothing: skip its product (a_0 + 0 = a_0).
        let h0_zero = all_zero(h0m);
        for_each_batch_part(batch, 4 * hid * hid, |cols| {
            let nb = cols.len();
            for t in 0..steps {
                let col = t * batch + cols.start;
                // SAFETY (all four matrices, here and below): this part alone reads and writes
                // columns `cols` of each step block, and the matrices outlive the call.
                let mut a_t = unsafe { gates.cols_mut(col, nb) };
                // a_t += W_hh · h_{t-1}
                if t == 0 {
                    if !h0_zero {
                        w_hh.gemm(&h0m.columns(cols.start, nb), T::ONE, &mut a_t);
                    }
                } else {
                    w_hh.gemm(&unsafe { h.cols_mut(col - batch, nb) }, T::ONE, &mut a_t);
                }
                // c_t starts as a copy of c_{t-1} and is updated in place.
                let c_t = unsafe { c.slice_mut(col, nb) };
                if t == 0 {
                    c_t.copy_from_slice(&c0m.as_slice()[cols.start * hid..cols.end * hid]);
                } else {
                    c_t.copy_from_slice(unsafe { c.slice_mut(col - batch, nb) });
                }
                pointwise_forward(
                    hid,
                    unsafe { gates.slice_mut(col, nb) },
                    bias,
                    c_t,
                    unsafe { tanh_c.slice_mut(col, nb) },
                    unsafe { h.slice_mut(col, nb) },
                );
            }
        });
        if steps == 0 {
            return h0.clone();
        }
        LstmState {
            h: cache.h.columns(n - batch, batch).into_owned(),
            c: cache.c.columns(n - batch, batch).into_owned(),
        }
    }

    fn outputs<'c>(&self, cache: &'c LstmCache<T>) -> &'c Mat<T> {
        &cache.h
    }

    fn backward(
        &self,
        x: SeqInput<'_, T>,
        cache: &LstmCache<T>,
        d_out: &Mat<T>,
        d_final: &LstmState<T>,
        grads: &mut LstmParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) -> LstmState<T> {
        self.backward_inner(x, cache, d_out, d_final, grads, d_x, true)
            .expect("the initial-state gradient was asked for")
    }

    fn backward_detached(
        &self,
        x: SeqInput<'_, T>,
        cache: &LstmCache<T>,
        d_out: &Mat<T>,
        d_final: &LstmState<T>,
        grads: &mut LstmParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_inner(x, cache, d_out, d_final, grads, d_x, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnn_tensor::gradcheck::rel_error;
    use rnn_tensor::init::Init;

    /// The same seed gives the same weights in f32 and f64 (draws are made in f64), so the two
    /// precisions agree to f32 rounding (tolerance 1e-5 after 5 steps).
    #[test]
    fn f32_and_f64_agree() {
        let c64 = LstmConfig::new(4, 5).build::<f64>(&mut Rng::seed_from(1)).unwrap();
        let c32 = LstmConfig::new(4, 5).build::<f32>(&mut Rng::seed_from(1)).unwrap();
        let ix: Vec<usize> = (0..10).map(|k| k % 4).collect();
        let mut cache64 = LstmCache::default();
        let mut cache32 = LstmCache::default();
        c64.forward(SeqInput::Index(&ix), 2, &c64.zero_state(2), &mut cache64);
        c32.forward(SeqInput::Index(&ix), 2, &c32.zero_state(2), &mut cache32);
        let out32: Vec<f64> = cache32.h.iter().map(|&v| v as f64).collect();
        assert!(rel_error(cache64.h.as_slice(), &out32) < 1e-5);
    }

    /// Every gradient of the f32 backward with dense input (on AVX-512 CPUs the route that
    /// keeps `dA` in strips: the step products, `dW_ih`, `dW_hh`, `d_x` and the bias sums read
    /// it in place) against the f64 backward on the same weights and inputs, with one thread
    /// and with the batch split in two. Tolerance: rel_error < 1e-4 per gradient (f32 rounding
    /// over 6 steps; a wrong column or strip gives errors of order 1).
    #[test]
    fn f32_dense_backward_matches_f64() {
        let (inp, hid, batch, steps) = (37, 40, 24, 6);
        let l64 = LstmConfig::new(inp, hid).build::<f64>(&mut Rng::seed_from(8)).unwrap();
        let l32 = LstmConfig::new(inp, hid).build::<f32>(&mut Rng::seed_from(8)).unwrap();
        let mut rng = Rng::seed_from(9);
        let n = steps * batch;
        let x64 = Mat::from_fn(inp, n, |_, _| rng.uniform(-1.0, 1.0));
        let d64 = Mat::from_fn(hid, n, |_, _| rng.uniform(-1.0, 1.0));
        let (x32, d32) = (x64.map(|v| v as f32), d64.map(|v| v as f32));
        let mut c64 = LstmCache::default();
        l64.forward(SeqInput::Dense(&x64), batch, &l64.zero_state(batch), &mut c64);
        let mut g64 = l64.zero_grads();
        let mut dx64 = Mat::zeros(inp, n);
        l64.backward(SeqInput::Dense(&x64), &c64, &d64, &l64.zero_state(batch), &mut g64, Some(&mut dx64));
        for threads in [1, 2] {
            let before = rnn_tensor::parallel::num_threads();
            rnn_tensor::parallel::set_num_threads(threads);
            let mut c32 = LstmCache::default();
            l32.forward(SeqInput::Dense(&x32), batch, &l32.zero_state(batch), &mut c32);
            let mut g32 = l32.zero_grads();
            let mut dx32 = Mat::zeros(inp, n);
            l32.backward(
                SeqInput::Dense(&x32),
                &c32,
                &d32,
                &l32.zero_state(batch),
                &mut g32,
                Some(&mut dx32),
            );
            rnn_tensor::parallel::set_num_threads(before);
            let widen = |m: &Mat<f32>| m.iter().map(|&v| v as f64).collect::<Vec<f64>>();
            let pairs = [
                ("d_x", dx64.as_slice(), widen(&dx32)),
                ("weight_ih", g64.weight_ih.as_slice(), widen(&g32.weight_ih)),
                ("weight_hh", g64.weight_hh.as_slice(), widen(&g32.weight_hh)),
                ("bias_ih", g64.bias_ih.as_ref().unwrap().as_slice(), widen(g32.bias_ih.as_ref().unwrap())),
                ("bias_hh", g64.bias_hh.as_ref().unwrap().as_slice(), widen(g32.bias_hh.as_ref().unwrap())),
            ];
            for (name, a, b) in pairs {
                let e = rel_error(a, &b);
                assert!(e < 1e-4, "{name} with {threads} thread(s): f32 against f64, rel_error {e:e}");
            }
        }
    }

    /// The f32 backward with dense input keeps `dA` in strips only (AVX-512 CPUs); with the same
    /// input as indices it keeps the plain `dA`. The forward values are the same bits (a
    /// one-hot product adds exact zeros), so `dW_hh`, the biases' gradients and the initial-state
    /// gradients must be the same bits too (tolerance: none), with one thread and with two
    /// (the time loop split into two batch parts). `4H = 160` is not a multiple of the
    /// 32-row strips.
    #[test]
    fn strips_backward_matches_plain_backward() {
        let (inp, hid, batch, steps) = (30, 40, 24, 5);
        let lstm = LstmConfig::new(inp, hid).build::<f32>(&mut Rng::seed_from(3)).unwrap();
        let mut rng = Rng::seed_from(4);
        let ix: Vec<usize> = (0..steps * batch).map(|_| rng.below(inp)).collect();
        let onehot = Mat::from_fn(inp, ix.len(), |i, k| if ix[k] == i { 1.0f32 } else { 0.0 });
        let d_out = Mat::from_fn(hid, ix.len(), |_, _| rng.uniform(-1.0, 1.0) as f32);
        let h0 = LstmState {
            h: Mat::from_fn(hid, batch, |_, _| rng.uniform(-1.0, 1.0) as f32),
            c: Mat::from_fn(hid, batch, |_, _| rng.uniform(-1.0, 1.0) as f32),
        };
        let d_fin = LstmState { h: h0.c.clone(), c: h0.h.clone() };
        let run = |x: SeqInput<'_, f32>| {
            let mut cache = LstmCache::default();
            lstm.forward(x, batch, &h0, &mut cache);
            let mut g = lstm.zero_grads();
            let d0 = lstm.backward(x, &cache, &d_out, &d_fin, &mut g, None);
            (g, d0)
        };
        let threads = rnn_tensor::parallel::num_threads();
        for t in [1, 2] {
            rnn_tensor::parallel::set_num_threads(t);
            let (gd, dd) = run(SeqInput::Dense(&onehot));
            let (gi, di) = run(SeqInput::Index(&ix));
            assert!(gd.weight_hh == gi.weight_hh, "{t} threads: dW_hh");
            assert!(gd.bias_ih == gi.bias_ih && gd.bias_hh == gi.bias_hh, "{t} threads: db");
            assert!(dd == di, "{t} threads: initial-state gradients");
            assert!(rel_error(gd.weight_ih.as_slice(), gi.weight_ih.as_slice()) < 1e-6, "{t} threads: dW_ih");
        }
        rnn_tensor::parallel::set_num_threads(threads);
    }

    #[test]
    fn configuration_errors() {
        let mut rng = Rng::seed_from(0);
        let e = LstmConfig::new(0, 3).build::<f64>(&mut rng).unwrap_err();
        assert!(e.to_string().contains("input size > 0"), "{e}");
        assert!(LstmConfig::new(2, 0).build::<f64>(&mut rng).is_err());
        let bad = Init::Uniform { lo: 1.0, hi: -1.0 };
        assert!(LstmConfig::new(2, 3).with_init(bad).build::<f64>(&mut rng).is_err());
        // PyTorch's bound: every weight within 1/sqrt(H).
        let l = LstmConfig::new(3, 16).build::<f64>(&mut rng).unwrap();
        assert!(l.params.weight_hh.iter().all(|v| v.abs() <= 0.25));
        assert_eq!(l.params.weight_ih.shape(), (64, 3));
    }
}
