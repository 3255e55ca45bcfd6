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
//! This file holds the cell's pointwise step, forward and backward; the layer engine
//! ([`crate::engine`]) runs it over sequences (the products, the threads, the batch-1 route).
//! The plain version of the whole layer, loops from these equations, is
//! [`crate::reference::lstm`]. Per column the engine keeps the activated gates `[i; f; g; o]`
//! and the record `[c_t; tanh c_t]` (`c` is the carried state part).

use rnn_tensor::activation::sigmoid;
use rnn_tensor::{Mat, Scalar};

use crate::engine::{BackwardStep, Cell, ForwardStep, Layer, LayerCache};
use crate::state::impl_state;
use crate::{CellError, RecurrentConfig, RecurrentParams};

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
impl_state!(LstmState { h, c });

/// The LSTM cell: its gates and its pointwise step (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LstmCell;

/// A long short-term memory layer, as `torch.nn.LSTM` with one layer.
pub type Lstm<T> = Layer<T, LstmCell>;
/// What an [`Lstm`]'s forward keeps for backward.
pub type LstmCache<T> = LayerCache<T>;
/// How to build an [`Lstm`]: `LstmConfig::new(input, hidden).with_bias(..).with_init(..).build(rng)`.
pub type LstmConfig = RecurrentConfig<LstmCell>;

impl<T: Scalar> Lstm<T> {
    /// An LSTM from existing tensors (for example loaded from PyTorch), checking their shapes.
    pub fn from_params(params: LstmParams<T>) -> Result<Self, CellError> {
        Layer::new(params, LstmCell)
    }
}

impl<T: Scalar> Cell<T> for LstmCell {
    type State = LstmState<T>;
    const NAME: &'static str = "LSTM";
    const GATES: usize = 4;
    const CARRIED: usize = 1;
    const SAVED: usize = 2;
    const HIDDEN_APART: bool = false;
    const DIRECT_H: bool = false;
    const PROJECTION: bool = true;

    fn state_from_parts(parts: Vec<Mat<T>>) -> LstmState<T> {
        let [h, c]: [Mat<T>; 2] = parts.try_into().expect("an LSTM state has two parts");
        LstmState { h, c }
    }

    fn forward(&self, hid: usize, s: ForwardStep<'_, T>) {
        pointwise_forward(hid, s.a, s.bias.sum, s.saved_prev, s.saved, s.h);
    }

    fn backward(&self, hid: usize, s: BackwardStep<'_, T>) {
        pointwise_backward(hid, s.gates, s.saved, s.saved_prev, s.d_out, s.dh, s.d_carried, s.da);
    }
}

/// The pointwise part of one step over `B` columns of pre-activations `a` (`4H` per column, bias
/// not yet added; `bias` is `b_ih + b_hh` or empty) and records (`[c; tanh c]`, `2H` per
/// column): reads `c_{t-1}` from `rec_prev`, writes `c_t`, `tanh(c_t)` into `rec`, `h_t` into `h`,
/// and overwrites `a` with the activated gates.
///
/// Per column, a pass over the gates and one over the state ([`column_forward`]), branch-free
/// (the vectorisable [`Scalar::exp_v`]/[`Scalar::tanh_v`]) and in its AVX-512 or AVX2 build
/// where the CPU has it.
#[inline(always)]
fn pointwise_forward_impl<T: Scalar>(
    hid: usize,
    a: &mut [T],
    bias: &[T],
    rec_prev: &[T],
    rec: &mut [T],
    h: &mut [T],
) {
    let cols = h.len() / hid.max(1);
    assert!(
        a.len() == 4 * hid * cols && rec_prev.len() == 2 * hid * cols && rec.len() == 2 * hid * cols,
        "LSTM pointwise: gates {}, records {} and {}, h {} values for H = {hid}",
        a.len(),
        rec_prev.len(),
        rec.len(),
        h.len()
    );
    let cols =
        a.chunks_exact_mut(4 * hid).zip(rec.chunks_exact_mut(2 * hid)).zip(rec_prev.chunks_exact(2 * hid));
    for (((gate, r), rp), hb) in cols.zip(h.chunks_exact_mut(hid)) {
        let (gi, rest) = gate.split_at_mut(hid);
        let (gf, rest) = rest.split_at_mut(hid);
        let (gg, go) = rest.split_at_mut(hid);
        let (cb, tb) = r.split_at_mut(hid);
        // The bias is added inside the loop (`a + b`, rounded, then the activations): one loop
        // with it and one without, each branch-free.
        if bias.is_empty() {
            column_forward::<T, false>(gi, gf, gg, go, &rp[..hid], cb, tb, hb, &[]);
        } else {
            column_forward::<T, true>(gi, gf, gg, go, &rp[..hid], cb, tb, hb, bias);
        }
    }
}

/// One column of [`pointwise_forward_impl`]: each slice holds the column's `H` values of one
/// gate or state; with `BIAS`, `bias` holds the `4H` values of `b_ih + b_hh`. Separate
/// arguments, so the compiler knows that none overlaps another (within one function, slices
/// split from one buffer need run-time overlap checks, and the scalar fallback those checks
/// select ran a quarter of this pass; fields of one struct, measured, four times as slow).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn column_forward<T: Scalar, const BIAS: bool>(
    gi: &mut [T],
    gf: &mut [T],
    gg: &mut [T],
    go: &mut [T],
    c_prev: &[T],
    c: &mut [T],
    tanh_c: &mut [T],
    h: &mut [T],
    bias: &[T],
) {
    let n = h.len();
    let (gi, gf, gg, go) = (&mut gi[..n], &mut gf[..n], &mut gg[..n], &mut go[..n]);
    let (c_prev, c, tanh_c) = (&c_prev[..n], &mut c[..n], &mut tanh_c[..n]);
    let (bi, bf, bg, bo) = if BIAS {
        (&bias[..n], &bias[n..2 * n], &bias[2 * n..3 * n], &bias[3 * n..4 * n])
    } else {
        (&[][..], &[][..], &[][..], &[][..])
    };
    // Two loops, the gates and then the state: the same bits as one loop doing both, which
    // ran about 12 % slower (Intel Xeon model 207, AVX-512, data warm; docs/performance-log.md):
    // each unit's chain from its gates through `c_t` and `tanh(c_t)` to `h_t` is long, and the
    // out-of-order window holds too few units of it to keep the divider and the FMA units busy.
    for j in 0..n {
        let (ai, af, ag, ao) = if BIAS {
            (gi[j] + bi[j], gf[j] + bf[j], gg[j] + bg[j], go[j] + bo[j])
        } else {
            (gi[j], gf[j], gg[j], go[j])
        };
        (gi[j], gf[j], gg[j], go[j]) = (sigmoid(ai), sigmoid(af), ag.tanh_v(), sigmoid(ao));
    }
    for j in 0..n {
        let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
        // c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)
        let ct = f * c_prev[j] + i * g;
        let tc = ct.tanh_v();
        c[j] = ct;
        tanh_c[j] = tc;
        h[j] = o * tc;
    }
}

rnn_tensor::dispatch_avx2! {
    /// [`pointwise_forward_impl`], in its AVX-512 or AVX2 build where available.
    fn pointwise_forward<T>(hid: usize, a: &mut [T], bias: &[T], rec_prev: &[T], rec: &mut [T], h: &mut [T]) => pointwise_forward_impl
}

/// The pointwise part of one backward step over `B` columns: activated gates (`4H` per column),
/// the records of steps `t` and `t-1` (`2H`), the output gradient `δ_t` and `dh_t` (`H`). Writes
/// the pre-activation gradients `da_t` into `dg` (`4H`) and replaces `dc_t` by `dc_{t-1}`.
#[inline(always)]
fn pointwise_backward_impl<T: Scalar>(
    hid: usize,
    gates: &[T],
    rec: &[T],
    rec_prev: &[T],
    d_out: &[T],
    dh: &[T],
    dc: &mut [T],
    dg: &mut [T],
) {
    let n = dc.len();
    assert!(
        gates.len() == 4 * n
            && dg.len() == 4 * n
            && rec.len() == 2 * n
            && rec_prev.len() == 2 * n
            && [d_out.len(), dh.len()] == [n; 2],
        "LSTM pointwise backward: gates {}, dg {}, records {} and {}, H×B blocks {n}, {}, {}",
        gates.len(),
        dg.len(),
        rec.len(),
        rec_prev.len(),
        d_out.len(),
        dh.len()
    );
    let cols = gates.chunks_exact(4 * hid).zip(dg.chunks_exact_mut(4 * hid));
    let cols = cols.zip(rec.chunks_exact(2 * hid)).zip(rec_prev.chunks_exact(2 * hid));
    for (b, (((g4, dg4), r), rp)) in cols.enumerate() {
        let col = b * hid..(b + 1) * hid;
        let (gi, rest) = g4.split_at(hid);
        let (gf, rest) = rest.split_at(hid);
        let (gg, go) = rest.split_at(hid);
        let (di, rest) = dg4.split_at_mut(hid);
        let (df, rest) = rest.split_at_mut(hid);
        let (dgg, dgo) = rest.split_at_mut(hid);
        // Every slice cut to H values, so that the loop below has no bounds checks and vectorises.
        let (tc, cp, go, dgo) = (&r[hid..2 * hid], &rp[..hid], &go[..hid], &mut dgo[..hid]);
        let (dout, dhb) = (&d_out[col.clone()], &dh[col.clone()]);
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
        rec: &[T],
        rec_prev: &[T],
        d_out: &[T],
        dh: &[T],
        dc: &mut [T],
        dg: &mut [T],
    ) => pointwise_backward_impl
}
