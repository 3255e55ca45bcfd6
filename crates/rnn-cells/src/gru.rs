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
//! Unlike the LSTM, the input and hidden sides differ (in the `n` block): the cell keeps its
//! hidden product apart ([`Cell::HIDDEN_APART`]), so the engine gives it `v` beside `u` and keeps
//! two gradient buffers, and `h_{t-1}` reaches `h_t` directly ([`Cell::DIRECT_H`]). The engine
//! ([`crate::engine`]) runs this pointwise step over sequences; the plain version of the whole
//! layer is [`crate::reference::gru`]. Per column the engine keeps the activated gates
//! `[r; z; n]` and the record `[v_n]`.

use rnn_tensor::activation::sigmoid;
use rnn_tensor::{Mat, Scalar};

use crate::engine::{BackwardStep, Cell, ForwardStep, Layer, LayerCache};
use crate::state::impl_state;
use crate::{CellError, RecurrentConfig, RecurrentParams};

/// The parameters of a [`Gru`] (and its gradients): `weight_ih` `[3H, I]`, `weight_hh`
/// `[3H, H]`, `bias_ih`, `bias_hh` `[3H]`, gates r, z, n.
pub type GruParams<T> = RecurrentParams<T>;

/// The state of a GRU: the output `h`, `H × B`.
#[derive(Clone, Debug, PartialEq)]
pub struct GruState<T: Scalar> {
    /// The hidden state (the output), `H × B`.
    pub h: Mat<T>,
}
impl_state!(GruState { h });

/// The GRU cell: its gates and its pointwise step (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GruCell;

/// A gated recurrent unit layer, as `torch.nn.GRU` with one layer.
pub type Gru<T> = Layer<T, GruCell>;
/// What a [`Gru`]'s forward keeps for backward.
pub type GruCache<T> = LayerCache<T>;
/// How to build a [`Gru`]: `GruConfig::new(input, hidden).with_bias(..).with_init(..).build(rng)`.
pub type GruConfig = RecurrentConfig<GruCell>;

impl<T: Scalar> Gru<T> {
    /// A GRU from existing tensors (for example loaded from PyTorch), checking their shapes.
    pub fn from_params(params: GruParams<T>) -> Result<Self, CellError> {
        Layer::new(params, GruCell)
    }
}

impl<T: Scalar> Cell<T> for GruCell {
    type State = GruState<T>;
    const NAME: &'static str = "GRU";
    const GATES: usize = 3;
    const CARRIED: usize = 0;
    const SAVED: usize = 1;
    const HIDDEN_APART: bool = true;
    const DIRECT_H: bool = true;

    fn state_from_parts(parts: Vec<Mat<T>>) -> GruState<T> {
        let [h]: [Mat<T>; 1] = parts.try_into().expect("a GRU state has one part");
        GruState { h }
    }

    fn forward(&self, hid: usize, s: ForwardStep<'_, T>) {
        pointwise_forward(hid, s.a, s.v, s.bias.ih, s.bias.hh, s.saved, s.h_prev, s.h);
    }

    fn backward(&self, hid: usize, s: BackwardStep<'_, T>) {
        pointwise_backward(hid, s.gates, s.saved, s.h_prev, s.d_out, s.dh, s.da, s.dv);
    }
}

/// The pointwise part of one step: `u` (`3H × B`, `W_ih·x` without bias) is overwritten with the
/// activated gates; `v` (`W_hh·h_{t-1}` without bias) is read; `h` receives `h_t` from `h_prev`;
/// `v_n` receives `W_hn·h_{t-1} + b_hn`.
///
/// The biases are added inside the gate loop (`u + b_ih` and `v + b_hh`, each rounded, as
/// before the sums), one loop with them and one without, so that each is branch-free and
/// vectorises ([`Scalar::exp_v`], [`Scalar::tanh_v`]); it runs in its AVX-512 or AVX2 build
/// where available.
#[inline(always)]
fn pointwise_forward_impl<T: Scalar>(
    hid: usize,
    u: &mut [T],
    v: &[T],
    b_ih: &[T],
    b_hh: &[T],
    v_n: &mut [T],
    h_prev: &[T],
    h: &mut [T],
) {
    let cols = u.len() / (3 * hid);
    assert!(
        u.len() == 3 * hid * cols
            && v.len() == u.len()
            && [h.len(), h_prev.len(), v_n.len()] == [hid * cols; 3]
            && (b_ih.is_empty() || [b_ih.len(), b_hh.len()] == [3 * hid; 2]),
        "GRU pointwise: u {}, v {}, h {}, h_prev {}, v_n {}, biases {} and {} values for H = {hid}",
        u.len(),
        v.len(),
        h.len(),
        h_prev.len(),
        v_n.len(),
        b_ih.len(),
        b_hh.len()
    );
    let blocks = u
        .chunks_exact_mut(3 * hid)
        .zip(v.chunks_exact(3 * hid))
        .zip(v_n.chunks_exact_mut(hid))
        .zip(h_prev.chunks_exact(hid).zip(h.chunks_exact_mut(hid)));
    for (((ub, vb), vnb), (hp, hb)) in blocks {
        let (urz, un) = ub.split_at_mut(2 * hid);
        let (vrz, vn) = vb.split_at(2 * hid);
        if b_ih.is_empty() {
            column_forward::<T, false>(urz, un, vrz, vn, vnb, hp, hb, &[], &[]);
        } else {
            column_forward::<T, true>(urz, un, vrz, vn, vnb, hp, hb, b_ih, b_hh);
        }
    }
}

/// One column of [`pointwise_forward_impl`]: `urz` and `vrz` hold the column's `2H` values of
/// the r and z blocks, the other slices `H` values of one gate or state; with `BIAS`, `b_ih`
/// and `b_hh` hold `3H` values. Separate arguments, so that the compiler knows that none
/// overlaps another (see the LSTM's `column_forward`).
///
/// Two loops: first `r` and `z` (independent of each other), then `n` and `h_t`. One loop doing
/// both gives the same bits but ran about 15 % slower (Intel Xeon model 207, AVX-512, data
/// warm; docs/performance-log.md): each unit's chain from `r` through `n`'s `tanh` to `h` is long,
/// and the out-of-order window holds too few units of it to keep the divider and the FMA units
/// busy; the `r`, `z` loop has no such chain.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn column_forward<T: Scalar, const BIAS: bool>(
    urz: &mut [T],
    un: &mut [T],
    vrz: &[T],
    vn: &[T],
    v_n: &mut [T],
    h_prev: &[T],
    h: &mut [T],
    b_ih: &[T],
    b_hh: &[T],
) {
    let hid = h.len();
    let (urz, un) = (&mut urz[..2 * hid], &mut un[..hid]);
    let (vrz, vn, v_n, hp) = (&vrz[..2 * hid], &vn[..hid], &mut v_n[..hid], &h_prev[..hid]);
    let (bi, bh) = if BIAS { (&b_ih[..3 * hid], &b_hh[..3 * hid]) } else { (&[][..], &[][..]) };
    // r = σ(x_r + y_r), z = σ(x_z + y_z), with x = u + b_ih, y = v + b_hh (each rounded)
    for j in 0..2 * hid {
        let (x, y) = if BIAS { (urz[j] + bi[j], vrz[j] + bh[j]) } else { (urz[j], vrz[j]) };
        urz[j] = sigmoid(x + y);
    }
    let (r, z) = urz.split_at(hid);
    let (r, z) = (&r[..hid], &z[..hid]);
    for j in 0..hid {
        let (xn, yn) = if BIAS { (un[j] + bi[2 * hid + j], vn[j] + bh[2 * hid + j]) } else { (un[j], vn[j]) };
        // n = tanh(x_n + r ⊙ y_n)
        let n = (xn + r[j] * yn).tanh_v();
        un[j] = n;
        v_n[j] = yn;
        // h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
        h[j] = (T::ONE - z[j]) * n + z[j] * hp[j];
    }
}

rnn_tensor::dispatch_avx2! {
    /// [`pointwise_forward_impl`], in its AVX-512 or AVX2 build where available.
    fn pointwise_forward<T>(
        hid: usize,
        u: &mut [T],
        v: &[T],
        b_ih: &[T],
        b_hh: &[T],
        v_n: &mut [T],
        h_prev: &[T],
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
