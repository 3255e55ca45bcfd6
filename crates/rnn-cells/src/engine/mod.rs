//! The layer engine: one time loop, forward and backward, for every recurrent cell.
//!
//! A cell ([`Cell`]: the LSTM's, the GRU's, the vanilla RNN's) supplies only what is its own:
//! its gate count, the parts of its state, what it keeps per step for backward, and its
//! pointwise step, forward and backward, with the equations in its file. [`Layer`] runs any cell
//! over a sequence and owns everything else, once:
//!
//! - the input projection `P = W_ih·X` of all steps as one product (or, for input by index, a
//!   gather of `W_ih` columns), before the loop;
//! - `W_hh` packed once per sequence (`W_hhᵀ` once per backward) for the `T` step products;
//! - the split of the batch over the library's threads: each part owns a range of batch columns
//!   for the whole sequence, so every value is computed as without the split (the same bits for
//!   any thread count);
//! - the step product `W_hh·h_{t-1}`, added to the step's block of `P` or, for a cell whose
//!   hidden product stays apart ([`Cell::HIDDEN_APART`], the GRU's `r ⊙ (W_hn·h + b_hn)`), into
//!   a block of its own;
//! - the all-zero initial state skip (no product with `h_0 = 0`, forward or backward);
//! - backward: the gate gradients of the whole sequence kept in the strip layout that every
//!   product reading them takes in place (the step's `W_hhᵀ·dv_t`, `dW_hh`, `dW_ih`, `d_x`, the
//!   bias sums), the detached backward that skips the initial state's product, and `dW_ih`,
//!   `dW_hh`, `d_x` as one product each after the loop;
//! - batch 1 in `f32` on CPUs with AVX-512 (`batch1.rs`): a GEMV over `W_hh`'s rows packed once,
//!   with the hidden units split over the threads;
//! - the scratch buffers, in [`LayerCache`], reused from call to call.
//!
//! Per step `t`, over the step's block of `B` columns:
//!
//! ```text
//! a_t = P_t + W_hh·h_{t-1}        (or a_t = P_t and v_t = W_hh·h_{t-1} apart)
//! cell.forward:  gates_t, saved_t, h_t  from  a_t (v_t), h_{t-1}, saved_{t-1}, biases
//! ```
//!
//! and backward, for `t = T..1`:
//!
//! ```text
//! cell.backward: da_t (dv_t), the pointwise part of dh_{t-1}, d(carried parts)_{t-1}
//! dh_{t-1} (+)= W_hhᵀ·dv_t                                   (dv_t = da_t unless apart)
//! after the loop: dW_ih += dA·Xᵀ, d_x = W_ihᵀ·dA, dW_hh += Σ_t dv_t·h_{t-1}ᵀ,
//!                 db_ih += Σ_columns dA, db_hh += Σ_columns dV
//! ```
//!
//! Layout: column `t·B + b` of every `· × T·B` buffer is sample `b` at step `t`. A cell's step
//! record `saved_t` holds [`Cell::SAVED`] blocks of `H` rows per column, the first
//! [`Cell::CARRIED`] of them the state parts after `h` (the LSTM's `c`), so that the state at step
//! `t` is `h_t` and those blocks of `saved_t`.
//!
//! Adding a cell: implement [`Cell`] (see docs/03 for the walk-through); `Layer<T, YourCell>` is
//! then a [`Recurrence`] with every route above, and stacks, the language model and the shared
//! test suite take it as they are.

mod batch1;
mod bf16;
mod lengths;
pub(crate) mod ops;

pub use lengths::check_lengths;

use std::fmt::Debug;

use rnn_tensor::{Mat, MatView, MatViewMut, PackedLhs, Precision, Scalar, Trans};

use crate::params::{check_params, RecurrentParams};
use crate::{CellError, Recurrence, RecurrentState, SeqInput};
use ops::{
    add_sums, all_zero, bias_sums, check_seq, check_state_part, ensure_shape, for_each_batch_part,
    gradient_strips, hidden_pieces, hidden_weight_grad, hidden_weight_grad_sums, input_backward,
    project_input, SharedCols, StepWeight,
};

/// The biases of one step, as the cell's pointwise pass receives them: each empty for a layer
/// without biases, else `G·H` values (`G·nu` on the batch-1 route, for a part's units).
#[derive(Clone, Copy, Debug)]
pub struct Biases<'a, T> {
    /// `b_ih + b_hh`.
    pub sum: &'a [T],
    /// `b_ih`.
    pub ih: &'a [T],
    /// `b_hh`.
    pub hh: &'a [T],
}

/// One forward step of a cell over `nb` columns (each slice holds `nb` columns of the given
/// number of rows, column after column). `H` is the `hid` the cell is called with.
pub struct ForwardStep<'a, T> {
    /// `G·H` rows: on entry the pre-activations without biases (`W_ih·x_t + W_hh·h_{t-1}`, or
    /// `W_ih·x_t` alone for a cell whose hidden product stays apart); on exit whatever the cell's
    /// backward reads as `gates` (usually the activated gates).
    pub a: &'a mut [T],
    /// `G·H` rows of `W_hh·h_{t-1}` without bias for a cell whose hidden product stays apart
    /// ([`Cell::HIDDEN_APART`]); empty otherwise. Scratch: not kept.
    pub v: &'a mut [T],
    /// The biases.
    pub bias: Biases<'a, T>,
    /// `h_{t-1}`, `H` rows.
    pub h_prev: &'a [T],
    /// The record of step `t-1` ([`Cell::SAVED`]`·H` rows; at `t = 1` the initial state's carried
    /// parts, the other blocks zero).
    pub saved_prev: &'a [T],
    /// This step's record, written by the cell.
    pub saved: &'a mut [T],
    /// `h_t`, written by the cell.
    pub h: &'a mut [T],
}

/// One backward step of a cell over `nb` columns (slices as in [`ForwardStep`]).
pub struct BackwardStep<'a, T> {
    /// What the forward left in [`ForwardStep::a`].
    pub gates: &'a [T],
    /// The records of steps `t` and `t-1`.
    pub saved: &'a [T],
    /// See [`BackwardStep::saved`].
    pub saved_prev: &'a [T],
    /// `h_t`.
    pub h: &'a [T],
    /// `h_{t-1}`.
    pub h_prev: &'a [T],
    /// `δ_t`, the loss gradient with respect to the output `h_t`.
    pub d_out: &'a [T],
    /// On entry the gradient with respect to `h_t` from the steps after `t` (without `δ_t`);
    /// on exit, for a cell with [`Cell::DIRECT_H`], the pointwise part of the gradient with
    /// respect to `h_{t-1}` (the engine adds `W_hhᵀ·dv_t`); otherwise left for the engine to
    /// overwrite.
    pub dh: &'a mut [T],
    /// The gradient with respect to the carried parts ([`Cell::CARRIED`]`·H` rows): on entry at
    /// step `t`, on exit at step `t-1`.
    pub d_carried: &'a mut [T],
    /// Written: the gradient with respect to the input-side pre-activations (`G·H` rows), the
    /// operand of `dW_ih`, `d_x` and `db_ih` (and, unless the hidden product is apart, of the
    /// step product, `dW_hh` and `db_hh` too).
    pub da: &'a mut [T],
    /// Written, for a cell whose hidden product stays apart: the gradient with respect to
    /// `W_hh·h_{t-1} + b_hh` (`G·H` rows), the operand of the step product, `dW_hh` and `db_hh`.
    /// Empty otherwise.
    pub dv: &'a mut [T],
}

/// What a recurrent cell supplies to the engine: its shape constants and its pointwise step,
/// forward and backward. Implemented by the LSTM's, the GRU's and the vanilla RNN's cells; a
/// [`Layer`] runs it over sequences.
pub trait Cell<T: Scalar>: Copy + Default + Debug + PartialEq + Send + Sync + 'static {
    /// The cell's state, its parts `h` first and then the [`Cell::CARRIED`] carried parts.
    type State: RecurrentState<T>;
    /// Its name in messages (`"LSTM"`).
    const NAME: &'static str;
    /// Gates `G`: the tensors are `[G·H, ·]`.
    const GATES: usize;
    /// State parts after `h` carried from step to step (the LSTM's `c`: 1).
    const CARRIED: usize;
    /// Blocks of `H` rows kept per column and step for backward (at least [`Cell::CARRIED`]; the
    /// first blocks are the carried parts).
    const SAVED: usize;
    /// Whether `W_hh·h_{t-1}` stays apart from `W_ih·x_t` (the GRU, whose reset gate multiplies
    /// the hidden side of `n`), so that the input side and the hidden side have their own
    /// gradients.
    const HIDDEN_APART: bool;
    /// Whether `h_{t-1}` reaches `h_t` pointwise (the GRU's `z ⊙ h_{t-1}`), so that the gradient
    /// with respect to `h_{t-1}` has a pointwise part besides `W_hhᵀ·dv_t`.
    const DIRECT_H: bool;
    /// Whether the cell takes a projection `weight_hr` (the LSTM's `proj_size`). With one, the
    /// engine multiplies what the cell writes as `h` (`m_t`, `H` rows) by `W_hr` to get the output
    /// and carried `h_t` (`P` rows), and backward hands the cell `W_hrᵀ·(δ_t + dh_t)` as `dh` with
    /// a zero `d_out`. A cell that takes one must not read `h_prev` in its steps (it has `P` rows
    /// there) nor have [`Cell::DIRECT_H`]. Default: `false`.
    const PROJECTION: bool = false;

    /// A state from its parts, `h` first.
    fn state_from_parts(parts: Vec<Mat<T>>) -> Self::State;
    /// One forward step (`hid` = `H`, or a part's units on the batch-1 route).
    fn forward(&self, hid: usize, step: ForwardStep<'_, T>);
    /// One backward step.
    fn backward(&self, hid: usize, step: BackwardStep<'_, T>);
}

/// A recurrent layer: cell `C` run over sequences by the engine, with PyTorch's tensors.
/// [`Lstm`](crate::Lstm), [`Gru`](crate::Gru) and [`Rnn`](crate::Rnn) are its instances.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer<T: Scalar, C> {
    /// The tensors, under PyTorch's names.
    pub params: RecurrentParams<T>,
    cell: C,
}

/// What a [`Layer`]'s forward keeps for backward, and the scratch buffers of both directions.
/// Buffers grow to the largest sequence seen and are reused, so a second call of the same shape
/// allocates nothing.
#[derive(Debug, Default)]
pub struct LayerCache<T: Scalar> {
    batch: usize,
    /// What the cell left in `a`, `G·H × T·B`.
    gates: Mat<T>,
    /// The cell's records, `SAVED·H × T·B`.
    saved: Mat<T>,
    /// The outputs `h_1..h_T`, `H × T·B` (`P × T·B` with a projection).
    h: Mat<T>,
    /// With a projection: what the cell wrote as `h`, `m_t = o_t ⊙ tanh(c_t)`, `H × T·B`.
    m: Mat<T>,
    h0: Mat<T>,
    /// The initial record (carried parts of the initial state, other blocks zero), `SAVED·H × B`.
    saved0: Mat<T>,
    /// One step's hidden product for cells that keep it apart, `G·H × B`.
    v: Mat<T>,
    bias_sum: Vec<T>,
    /// `W_hh` packed for the forward's loop, `W_hhᵀ` for the backward's.
    w_hh_packed: PackedLhs<T>,
    w_hh_t_packed: PackedLhs<T>,
    /// `W_hr` packed for the forward's loop, `W_hrᵀ` for the backward's (projection only).
    w_hr_packed: PackedLhs<T>,
    w_hr_t_packed: PackedLhs<T>,
    /// Backward with a projection: the gradient with respect to every `h_t` (`P × T·B`, the
    /// operand of `dW_hr`), one step's `W_hrᵀ·dh_t` and a zero block (`H × B` each).
    dhs: Mat<T>,
    dm: Mat<T>,
    zeros: Mat<T>,
    /// Backward: `dA`, `dV` (apart only), each plain and in strips.
    da: Mat<T>,
    dv: Mat<T>,
    da_packed: PackedLhs<T>,
    dv_packed: PackedLhs<T>,
    /// A backward in bf16: one step's `dA` and `dV` (`G·H × B`), which the cell writes (they
    /// stay in L2) and which are then copied into `dA` and `dV`.
    da_step: Mat<T>,
    dv_step: Mat<T>,
    dh: Mat<T>,
    d_carried: Mat<T>,
    /// `W_ih` packed for a frozen cache's input projections (kept from call to call).
    w_ih_packed: PackedLhs<T>,
    /// `W_ihᵀ`, plain and packed, for `d_x`.
    w_ih_t: Mat<T>,
    w_ih_t_packed: PackedLhs<T>,
    b1: batch1::Scratch<T>,
    /// Set by [`Recurrence::freeze_weights`]: the packings of `W_hh` and `W_ih` (f32, bf16 and
    /// the batch-1 route's) are kept from call to call instead of being made (or, in bf16 and
    /// batch 1, compared with the weights) per call, and the batch-1 route takes single steps
    /// too.
    frozen: bool,
    /// The precision of the forward's products, set by [`Recurrence::set_precision`].
    precision: Precision,
    /// With [`Precision::Bf16`]: `W_hh` and `W_ih` rounded to bf16 and packed (`bf16.rs`).
    bf16_w_hh: bf16::Bf16Weight,
    bf16_w_ih: bf16::Bf16Weight,
    /// The backward of a bf16 forward: the operands its products saw, and the packings of a
    /// backward in bf16 (`bf16.rs`).
    bf16_rounded: bf16::Rounded<T>,
    bf16_back: bf16::BackwardPacks<T>,
    /// The last forward's per-sample lengths and the buffers of their loops (`lengths.rs`).
    var: lengths::Lengths<T>,
}

impl<T: Scalar> LayerCache<T> {
    /// The batch size of the last forward (0 before any).
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// The order in which a layer visits its steps: `t = 0..T` forward in time, `t = T-1..=0` for a
/// reverse layer. Step `s` of the visit is step [`Order::t`]`(s)` of the sequence; the state it
/// starts from is the initial one for `s = 0`, else the one left at step `t(s - 1)`.
#[derive(Clone, Copy)]
struct Order {
    steps: usize,
    reverse: bool,
}

impl Order {
    fn t(self, s: usize) -> usize {
        if self.reverse {
            self.steps - 1 - s
        } else {
            s
        }
    }
}

/// The carried parts of `state` (parts `1..`, each `H × B`) interleaved into `out` (`rows × B`):
/// column `b` of `out` is column `b` of each part in turn, zero past them.
fn interleave<T: Scalar, S: RecurrentState<T>>(
    state: &S,
    rows: usize,
    hid: usize,
    batch: usize,
    out: &mut Mat<T>,
) {
    ensure_shape(out, rows, batch);
    out.as_mut_slice().fill(T::ZERO);
    for k in 1..state.num_parts() {
        let p = state.part(k).as_slice();
        for b in 0..batch {
            out.as_mut_slice()[b * rows + (k - 1) * hid..][..hid].copy_from_slice(&p[b * hid..][..hid]);
        }
    }
}

/// The inverse of [`interleave`]: the first blocks of `H` rows of `batch` columns of `rows`
/// values (from `src[0]`) into the carried parts of `state`, each made `H × B`.
fn deinterleave<T: Scalar, S: RecurrentState<T>>(
    src: &[T],
    rows: usize,
    hid: usize,
    batch: usize,
    state: &mut S,
) {
    for k in 1..state.num_parts() {
        let p = state.part_mut(k);
        ensure_shape(p, hid, batch);
        for b in 0..batch {
            p.as_mut_slice()[b * hid..][..hid].copy_from_slice(&src[b * rows + (k - 1) * hid..][..hid]);
        }
    }
}

/// The projection's forward over a block of columns: `h = W_hr·m` (`m` holds `hid` rows per
/// column, `h` the projection's).
fn project_forward<T: Scalar>(w_hr: &StepWeight<'_, T>, m: &[T], h: &mut [T], hid: usize) {
    let n = m.len() / hid.max(1);
    let out = h.len() / n.max(1);
    w_hr.gemm(&MatView::from_slice(m, hid, n), T::ZERO, &mut MatViewMut::from_slice(h, out, n));
}

/// The projection's backward over a block of columns, from what step t+1 passed back (`dh`) and
/// the output gradient `δ_t`: `g = δ_t + dh`, the gradient of `h_t` (kept for `dW_hr`), and
/// `dm = W_hrᵀ·g`, the gradient of what the cell wrote (`w_hr_t` is `W_hrᵀ`).
fn project_backward<T: Scalar>(
    w_hr_t: &StepWeight<'_, T>,
    (dh, d_out): (&[T], &[T]),
    g: &mut [T],
    dm: &mut [T],
    out: usize,
) {
    g.iter_mut().zip(dh).zip(d_out).for_each(|((g, &d), &o)| *g = d + o);
    let n = g.len() / out.max(1);
    let hid = dm.len() / n.max(1);
    w_hr_t.gemm(&MatView::from_slice(g, out, n), T::ZERO, &mut MatViewMut::from_slice(dm, hid, n));
}

/// `dst = src`, reallocating only when the shape changes (`clone_from` would allocate).
fn copy_into<T: Scalar>(src: &Mat<T>, dst: &mut Mat<T>) {
    ensure_shape(dst, src.nrows(), src.ncols());
    dst.copy_from(src);
}

/// Makes `state` a copy of `h` (`out × batch`) and the carried parts held interleaved in
/// `carried`.
fn write_state<T: Scalar, S: RecurrentState<T>>(
    (h, out): (&[T], usize),
    carried: &[T],
    rows: usize,
    hid: usize,
    batch: usize,
    state: &mut S,
) {
    let p = state.part_mut(0);
    ensure_shape(p, out, batch);
    p.as_mut_slice().copy_from_slice(h);
    deinterleave(carried, rows, hid, batch, state);
}

impl<T: Scalar, C: Cell<T>> Layer<T, C> {
    /// A layer of cell `cell` from existing tensors, checking every shape (the error names the
    /// tensor and both shapes).
    pub fn new(params: RecurrentParams<T>, cell: C) -> Result<Self, CellError> {
        check_params::<T, C>(&params)?;
        Ok(Self { params, cell })
    }

    /// The cell (its settings).
    pub fn cell(&self) -> &C {
        &self.cell
    }

    /// Whether the layer has biases.
    pub fn has_bias(&self) -> bool {
        self.params.bias_ih.is_some()
    }

    /// The cell's units `H` (the size of the LSTM's `c`): the hidden size, or with a projection
    /// the columns of `weight_hr` (the output then has `P` rows, [`Recurrence::hidden_size`]).
    pub fn cell_size(&self) -> usize {
        self.params.cell_size()
    }

    /// All-zero gradients shaped (and named) like the parameters.
    pub fn zero_grads(&self) -> RecurrentParams<T> {
        self.params.zeros_like()
    }

    /// [`Recurrence::backward`], writing the initial-state gradient into `d_h0` (its parts are
    /// reshaped if needed): allocates nothing once the cache and `d_h0` have their shapes.
    pub fn backward_into(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut LayerCache<T>,
        d_out: &Mat<T>,
        d_final: &C::State,
        grads: &mut RecurrentParams<T>,
        d_x: Option<&mut Mat<T>>,
        d_h0: &mut C::State,
    ) {
        self.backward_impl(x, cache, d_out, d_final, grads, d_x, Some(d_h0), false);
    }

    /// The general forward loop (any batch, any element type), on a cache set up by `forward`.
    fn forward_loop(&self, steps: usize, cache: &mut LayerCache<T>) {
        let (hid, out, batch) = (self.cell_size(), self.hidden_size(), cache.batch);
        let (g, rows) = (C::GATES * hid, C::SAVED * hid);
        let LayerCache {
            gates,
            saved,
            h,
            m,
            h0,
            saved0,
            v,
            bias_sum,
            w_hh_packed,
            w_hr_packed,
            precision,
            bf16_w_hh,
            frozen,
            ..
        } = cache;
        ensure_shape(v, if C::HIDDEN_APART { g } else { 0 }, batch);
        let w_hh = match precision {
            Precision::Bf16 => StepWeight::Bf16(bf16_w_hh.refresh(&self.params.weight_hh, *frozen)),
            Precision::Full if *frozen => StepWeight::kept(&self.params.weight_hh, w_hh_packed),
            Precision::Full => StepWeight::new(&self.params.weight_hh, Trans::No, steps, w_hh_packed),
        };
        let w_hr = self.projection(Trans::No, w_hr_packed);
        let bias = self.biases(bias_sum);
        let (gates, saved, h, v) =
            (SharedCols::new(gates), SharedCols::new(saved), SharedCols::new(h), SharedCols::new(v));
        let m = SharedCols::new(m);
        let (h0, saved0) = (&*h0, &*saved0);
        // A zero initial state (the usual one) adds nothing: skip its product.
        let h0_zero = all_zero(h0);
        let order = Order { steps, reverse: self.params.reverse };
        for_each_batch_part(batch, self.part_macs(), |cols| {
            let nb = cols.len();
            for s in 0..steps {
                let t = order.t(s);
                let col = t * batch + cols.start;
                // SAFETY: this part alone reads and writes columns `cols` of each step block of
                // gates, saved and h and of v, and the matrices outlive the call; the step's
                // columns and step t-1's are distinct, so the slices below do not overlap.
                let (a_t, saved_t, h_t) =
                    unsafe { (gates.slice_mut(col, nb), saved.slice_mut(col, nb), h.slice_mut(col, nb)) };
                // SAFETY: step t-1's columns `cols` of h and saved: this part's alone (it wrote
                // them last step), only read here, distinct from step t's; the matrices outlive
                // the call.
                let (h_prev, saved_prev): (&[T], &[T]) = if s == 0 {
                    (
                        &h0.as_slice()[cols.start * out..cols.end * out],
                        &saved0.as_slice()[cols.start * rows..cols.end * rows],
                    )
                } else {
                    let prev = order.t(s - 1) * batch + cols.start;
                    unsafe { (&*h.slice_mut(prev, nb), &*saved.slice_mut(prev, nb)) }
                };
                // SAFETY: columns `cols` of the one-step buffer v are this part's alone, and v
                // outlives the call.
                let v_t: &mut [T] =
                    if C::HIDDEN_APART { unsafe { v.slice_mut(cols.start, nb) } } else { &mut [] };
                // SAFETY: columns `cols` of step t's block of m are this part's alone, and m
                // outlives the call.
                let mut m_t = w_hr.is_some().then(|| unsafe { m.slice_mut(col, nb) });
                let skip = s == 0 && h0_zero;
                let h_prev_m = MatView::from_slice(h_prev, out, nb);
                if C::HIDDEN_APART {
                    // v_t = W_hh·h_{t-1}
                    if skip {
                        v_t.fill(T::ZERO);
                    } else {
                        w_hh.gemm(&h_prev_m, T::ZERO, &mut MatViewMut::from_slice(v_t, g, nb));
                    }
                } else if !skip {
                    // a_t += W_hh·h_{t-1}
                    w_hh.gemm(&h_prev_m, T::ONE, &mut MatViewMut::from_slice(a_t, g, nb));
                }
                // With a projection the cell writes m_t, and h_t = W_hr·m_t.
                let cell_h = m_t.as_deref_mut().unwrap_or(&mut *h_t);
                let step =
                    ForwardStep { a: a_t, v: v_t, bias, h_prev, saved_prev, saved: saved_t, h: cell_h };
                self.cell.forward(hid, step);
                if let (Some(w), Some(m_t)) = (&w_hr, m_t) {
                    project_forward(w, m_t, h_t, hid);
                }
            }
        });
    }

    /// `W_hr` (`W_hrᵀ` with `Trans::Yes`) for a loop's products, if the layer has a projection:
    /// always packed, so that the parts' products take the packed kernel whatever their width
    /// and the bits do not depend on the split.
    fn projection<'a>(&'a self, trans: Trans, buf: &'a mut PackedLhs<T>) -> Option<StepWeight<'a, T>> {
        self.params.weight_hr.as_ref().map(|w| StepWeight::new(w, trans, 2, buf))
    }

    /// The multiply-adds per column of the smallest product in a step (the step product, and the
    /// projection's), which decides whether the time loops split the batch: every part's products
    /// then stay above `gemm`'s small-product route, as the whole batch's are, so that in `f64`
    /// (whose packed weights are plain matrices) both take the same route and give the same bits.
    fn part_macs(&self) -> usize {
        let (g, out) = (C::GATES * self.cell_size(), self.hidden_size());
        match &self.params.weight_hr {
            Some(w) => (g * out).min(w.len()),
            None => g * out,
        }
    }

    /// The biases as the cell receives them; `sum` is filled with `b_ih + b_hh`.
    fn biases<'a>(&'a self, sum: &'a mut Vec<T>) -> Biases<'a, T> {
        sum.clear();
        match (&self.params.bias_ih, &self.params.bias_hh) {
            (Some(bi), Some(bh)) => {
                // Over the plain slices (nalgebra's iterators add one value at a time: an eighth
                // of a streaming GRU step went there).
                sum.extend(bi.as_slice().iter().zip(bh.as_slice()).map(|(&a, &b)| a + b));
                Biases { sum, ih: bi.as_slice(), hh: bh.as_slice() }
            }
            _ => Biases { sum, ih: &[], hh: &[] },
        }
    }

    /// Backpropagation through time, writing the initial-state gradient into `d_h0`; without
    /// it, the last step product, needed only for that gradient, is skipped.
    #[allow(clippy::too_many_arguments)]
    fn backward_impl(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut LayerCache<T>,
        d_out: &Mat<T>,
        d_final: &C::State,
        grads: &mut RecurrentParams<T>,
        d_x: Option<&mut Mat<T>>,
        d_h0: Option<&mut C::State>,
        overwrite: bool,
    ) {
        let lengths = !cache.var.lengths.is_empty();
        let (hid, out, batch) = (self.cell_size(), self.hidden_size(), cache.batch);
        // The padded columns T·B (with lengths, `h` holds the real steps only).
        let n = if lengths { cache.var.steps * batch } else { cache.h.ncols() };
        assert!(batch > 0, "{} backward: the cache holds no forward pass; call forward first", C::NAME);
        assert!(
            d_out.shape() == (out, n) && x.columns() == n,
            "{} backward: d_out is {:?} and x has {} columns, the forward had H×N = {out}×{n}",
            C::NAME,
            d_out.shape(),
            x.columns()
        );
        assert!(
            d_final.num_parts() == 1 + C::CARRIED
                && (0..=C::CARRIED)
                    .all(|k| d_final.part(k).shape() == (if k == 0 { out } else { hid }, batch)),
            "{} backward: d_final has parts {:?}, expected h {out}×{batch} and {} of {hid}×{batch}",
            C::NAME,
            d_final.parts().iter().map(|m| m.shape()).collect::<Vec<_>>(),
            C::CARRIED
        );
        if lengths {
            if overwrite {
                rnn_tensor::Parameters::zero(grads);
            }
            return self.backward_lengths(x, cache, d_out, d_final, grads, d_x, d_h0);
        }
        // An overwrite: each weight gradient's first product takes beta = 0 (`grad_beta`) and reads nothing
        // of it; the few values that other passes add into start from zeros.
        let grad_beta = if overwrite { T::ZERO } else { T::ONE };
        if overwrite {
            let small = [&mut grads.bias_ih, &mut grads.bias_hh, &mut grads.weight_hr];
            small.into_iter().flatten().for_each(|m| m.as_mut_slice().fill(T::ZERO));
        }
        let init_grad = d_h0.is_some();
        let (steps, g, rows, crows) = (n / batch, C::GATES * hid, C::SAVED * hid, C::CARRIED * hid);
        let LayerCache {
            gates,
            saved,
            h,
            m,
            h0,
            saved0,
            da,
            dv,
            da_packed,
            dv_packed,
            da_step,
            dv_step,
            dh,
            d_carried,
            w_hh_t_packed,
            w_hr_t_packed,
            dhs,
            dm,
            zeros,
            w_ih_t,
            w_ih_t_packed,
            precision,
            bf16_rounded: rounded,
            bf16_back,
            ..
        } = cache;
        // A bf16 forward's backward with its products in bf16 too, where that is faster (AMX,
        // or `vdpbf16ps` at the FMA rate): they round their operands themselves. Elsewhere, the
        // f32 backward of the operands the forward's products saw (bf16.rs).
        let bwd16 = *precision == Precision::Bf16 && bf16::backward_in_bf16();
        if bwd16 {
            bf16_back.pack_w_hh_t(&self.params.weight_hh);
        }
        let (w_ih, w_hh, x, h0_op, h_op) = if *precision == Precision::Bf16 && !bwd16 {
            bf16::round_into(&self.params.weight_ih, &mut rounded.w_ih);
            bf16::round_into(&self.params.weight_hh, &mut rounded.w_hh);
            bf16::round_into(h0, &mut rounded.h0);
            bf16::round_into(h, &mut rounded.h);
            let x = bf16::round_input(x, &mut rounded.x);
            (&rounded.w_ih, &rounded.w_hh, x, &rounded.h0, &rounded.h)
        } else {
            (&self.params.weight_ih, &self.params.weight_hh, x, &*h0, &*h)
        };
        copy_into(d_final.part(0), dh);
        interleave(d_final, crows, hid, batch, d_carried);
        // W_hhᵀ packed once (a one-step sequence reads it as stored).
        let w_hh_t = if bwd16 {
            StepWeight::Bf16(&bf16_back.w_hh_t)
        } else {
            StepWeight::new(w_hh, Trans::Yes, steps, w_hh_t_packed)
        };
        // With a projection, W_hrᵀ, the gradients of every h_t, and the cell's dh
        // (W_hrᵀ·(δ_t + dh_t)) beside a zero d_out.
        let w_hr_t = self.projection(Trans::Yes, w_hr_t_packed);
        let proj_cols = |c: usize| if w_hr_t.is_some() { c } else { 0 };
        ensure_shape(dhs, out, proj_cols(n));
        ensure_shape(dm, hid, proj_cols(batch));
        ensure_shape(zeros, hid, proj_cols(batch));
        zeros.as_mut_slice().fill(T::ZERO);
        let (da_strips, dv_strips) = gradient_strips((da_packed, dv_packed), g, n, C::HIDDEN_APART, bwd16);
        let step_strips = if C::HIDDEN_APART { dv_strips } else { da_strips };
        // A buffer kept in strips needs plain columns for one step only (each part's step 0
        // columns, reused as scratch by every step).
        ensure_shape(da, g, if da_strips { batch } else { n });
        ensure_shape(dv, if C::HIDDEN_APART { g } else { 0 }, if dv_strips { batch } else { n });
        ensure_shape(da_step, if bwd16 { g } else { 0 }, batch);
        ensure_shape(dv_step, if bwd16 && C::HIDDEN_APART { g } else { 0 }, batch);
        let da_writer = da_packed.columns_writer();
        let dv_writer = dv_packed.columns_writer();
        let step_writer = if C::HIDDEN_APART { &dv_writer } else { &da_writer };
        let (gs, ss, hs, ms) = (gates.as_slice(), saved.as_slice(), h.as_slice(), m.as_slice());
        let (h0s, s0s, zs) = (h0.as_slice(), saved0.as_slice(), zeros.as_slice());
        let (da_m, dv_m, dh_m, dc_m) =
            (SharedCols::new(da), SharedCols::new(dv), SharedCols::new(dh), SharedCols::new(d_carried));
        let (dhs_m, dm_m) = (SharedCols::new(dhs), SharedCols::new(dm));
        let (da_s_m, dv_s_m) = (SharedCols::new(da_step), SharedCols::new(dv_step));
        let beta = if C::DIRECT_H { T::ONE } else { T::ZERO };
        let order = Order { steps, reverse: self.params.reverse };
        for_each_batch_part(batch, self.part_macs(), |cols| {
            let nb = cols.len();
            // The steps in the reverse of the forward's visit.
            for s in (0..steps).rev() {
                let t = order.t(s);
                let col = t * batch + cols.start;
                let blk = |r: usize, c: usize| c * r..(c + nb) * r;
                let (h_prev, saved_prev) = if s == 0 {
                    (&h0s[blk(out, cols.start)], &s0s[blk(rows, cols.start)])
                } else {
                    let prev = order.t(s - 1) * batch + cols.start;
                    (&hs[blk(out, prev)], &ss[blk(rows, prev)])
                };
                // Where this step's gradients go: their own columns of dA and dV or, kept in
                // strips, this part's columns of step 0 (reused as scratch) and then the strips.
                // A bf16 backward keeps dA and dV plain: the cell writes this part's columns of
                // the step buffers, which stay in L2, and they are copied into dA and dV. Written
                // there directly, a line at a time into a buffer of the whole sequence that has
                // left the caches, the stores stalled the cell: its LSTM pass took 18 % of
                // `lm_lstm_2x256_b64_t24_v65_bf16` at one thread, now 7 % and the copy 5 %.
                let a_col = if da_strips || bwd16 { cols.start } else { col };
                let v_col = if dv_strips || bwd16 { cols.start } else { col };
                let (da_w, dv_w) = if bwd16 { (&da_s_m, &dv_s_m) } else { (&da_m, &dv_m) };
                // SAFETY: this part alone reads and writes columns `cols` of dh and d_carried
                // and of each step block of dA and dV (or of the step buffers), and the matrices
                // outlive the call.
                let (dh_p, dc_p, da_t) = unsafe {
                    (
                        dh_m.slice_mut(cols.start, nb),
                        dc_m.slice_mut(cols.start, nb),
                        da_w.slice_mut(a_col, nb),
                    )
                };
                // SAFETY: this part alone reads and writes columns `cols` of each step block of
                // dV (or its scratch step, or of the step buffer), and the matrices outlive the
                // call.
                let dv_t: &mut [T] =
                    if C::HIDDEN_APART { unsafe { dv_w.slice_mut(v_col, nb) } } else { &mut [] };
                let d_out_t = &d_out.as_slice()[blk(out, col)];
                // What the cell sees as its output h, its d_out and its dh: with a projection,
                // m_t, zero and W_hrᵀ·(δ_t + dh_t).
                let (h_cell, d_out_cell, dh_cell): (&[T], &[T], &mut [T]) = if let Some(w) = &w_hr_t {
                    // SAFETY: columns `cols` of step t's block of dhs and of dm are this part's
                    // alone, and the matrices outlive the call.
                    let (g_t, dm_t) = unsafe { (dhs_m.slice_mut(col, nb), dm_m.slice_mut(cols.start, nb)) };
                    project_backward(w, (dh_p, d_out_t), g_t, dm_t, out);
                    (&ms[blk(hid, col)], &zs[blk(hid, cols.start)], dm_t)
                } else {
                    (&hs[blk(out, col)], d_out_t, dh_p)
                };
                let step = BackwardStep {
                    gates: &gs[blk(g, col)],
                    saved: &ss[blk(rows, col)],
                    saved_prev,
                    h: h_cell,
                    h_prev,
                    d_out: d_out_cell,
                    dh: dh_cell,
                    d_carried: dc_p,
                    da: da_t,
                    dv: dv_t,
                };
                self.cell.backward(hid, step);
                if bwd16 {
                    // SAFETY: columns `col..col + nb` of dA and dV and this part's columns of
                    // the step buffers are this part's alone; the cell's borrows have ended.
                    unsafe {
                        da_m.slice_mut(col, nb).copy_from_slice(da_s_m.slice_mut(a_col, nb));
                        if C::HIDDEN_APART {
                            dv_m.slice_mut(col, nb).copy_from_slice(dv_s_m.slice_mut(v_col, nb));
                        }
                    }
                }
                if da_strips {
                    // SAFETY: columns `col..col + nb` of the strips and the columns of dA just
                    // written are this part's alone; the cell's borrow of them has ended.
                    unsafe { da_writer.write(col, da_m.slice_mut(a_col, nb)) };
                }
                if dv_strips {
                    // SAFETY: columns `col..col + nb` of dV's strips and the columns of dV just
                    // written are this part's alone; the cell's borrow of them has ended.
                    unsafe { dv_writer.write(col, dv_m.slice_mut(v_col, nb)) };
                }
                // dh_prev (+)= W_hhᵀ · dv_t
                if s > 0 || init_grad {
                    let (op, op_col) = if C::HIDDEN_APART { (dv_w, v_col) } else { (da_w, a_col) };
                    // SAFETY: this step's columns of dA or dV and columns `cols` of dh are this
                    // part's alone, and the cell's borrows of them have ended.
                    let (op_t, mut dh_t) =
                        unsafe { (op.cols_mut(op_col, nb), dh_m.cols_mut(cols.start, nb)) };
                    if step_strips {
                        // SAFETY: this part wrote these columns of the strips above, and nothing
                        // writes them during the product.
                        unsafe { w_hh_t.gemm_from(step_writer, col, &op_t, beta, &mut dh_t) };
                    } else {
                        w_hh_t.gemm(&op_t, beta, &mut dh_t);
                    }
                }
            }
        });
        // After the loop, one product each over the whole buffers.
        let (da, dv, da_packed, dv_packed) = (&*da, &*dv, &*da_packed, &*dv_packed);
        let dap = da_strips.then_some(da_packed);
        let (step_m, step_p) = if C::HIDDEN_APART { (dv, dv_strips.then_some(dv_packed)) } else { (da, dap) };
        // The bias gradients: db_hh += Σ_columns dV; db_ih += Σ_columns dA (and db_hh too when dV
        // is dA), each with a product that reads those columns (see `bias_sums`).
        let dense = matches!(x, SeqInput::Dense(_));
        let (hh_sums, da_sums) = bias_sums(C::HIDDEN_APART, dense, (&mut grads.bias_ih, &mut grads.bias_hh));
        // In bf16, when dV is dA and the input dense, dW_hh and dW_ih multiply the same D: it is
        // packed once, over every column (dW_hh's operand then has h0's columns, zeros for a
        // zero state, beside the outputs). Not for an odd batch, which would put the outputs at
        // an odd column, where pairs straddle the boundary and are not paired by tiles.
        let reuse_d = bwd16 && !C::HIDDEN_APART && dense && h0_op.ncols() % 2 == 0 && h_op.ncols() > 0;
        // dW_hh += Σ_t dv_t · h_{t-1}ᵀ
        let dw_hh = &mut grads.weight_hh;
        if bwd16 {
            if overwrite {
                dw_hh.as_mut_slice().fill(T::ZERO);
            }
            let (b, n, reverse) = (h0_op.ncols(), h_op.ncols(), self.params.reverse);
            if reuse_d {
                // Every column of D, packed once for dW_ih too: the outputs before (after) each
                // step, with h0 (or zeros for a zero state) for the first (last) step's columns.
                bf16_back.pack_d(step_m, 0..n);
                let h0_part = ((!all_zero(h0_op)).then_some(h0_op.as_slice()), b);
                let (_, _, rest_prev) = hidden_pieces(b, n, reverse);
                let rest = (Some(&h_op.as_slice()[rest_prev * out..(rest_prev + n - b) * out]), n - b);
                bf16_back.weight_grad(&if reverse { [rest, h0_part] } else { [h0_part, rest] }, dw_hh);
            } else {
                hidden_weight_grad(h0_op, h_op, reverse, |k0, src, c0, nc| {
                    bf16_back.pack_d(step_m, k0..k0 + nc);
                    bf16_back.weight_grad(&[(Some(&src.as_slice()[c0 * out..(c0 + nc) * out]), nc)], dw_hh);
                });
            }
            if let Some((a, b)) = hh_sums {
                add_sums(step_m, step_p, a, b);
            }
        } else {
            hidden_weight_grad_sums(
                (h0_op, h_op, self.params.reverse),
                step_m,
                step_p,
                (grad_beta, dw_hh),
                hh_sums,
            );
        }
        // dW_hr += Σ_t dh_t · m_tᵀ
        if let Some(dw) = &mut grads.weight_hr {
            rnn_tensor::gemm(T::ONE, dhs, Trans::No, m, Trans::Yes, T::ONE, dw);
        }
        // dW_ih += dA · Xᵀ (or the scatter-add);  d_x = W_ihᵀ · dA
        match x {
            SeqInput::Dense(xm) if bwd16 => {
                if let Some((bi, bh)) = da_sums {
                    add_sums(da, dap, bi, bh);
                }
                if overwrite {
                    grads.weight_ih.as_mut_slice().fill(T::ZERO);
                }
                if !reuse_d {
                    bf16_back.pack_d(da, 0..da.ncols());
                }
                bf16_back.weight_grad(&[(Some(xm.as_slice()), da.ncols())], &mut grads.weight_ih);
                if let Some(dx) = d_x {
                    bf16_back.input_grad(&self.params.weight_ih, da, dx);
                }
            }
            _ => {
                let dw_ih = (grad_beta, &mut grads.weight_ih);
                input_backward(w_ih, x, da, dap, dw_ih, d_x, w_ih_t, w_ih_t_packed, da_sums)
            }
        }
        if let Some(d_h0) = d_h0 {
            write_state((dh.as_slice(), out), d_carried.as_slice(), crows, hid, batch, d_h0);
        }
    }
}

impl<T: Scalar, C: Cell<T>> Recurrence<T> for Layer<T, C> {
    type State = C::State;
    type Params = RecurrentParams<T>;
    type Cache = LayerCache<T>;

    fn input_size(&self) -> usize {
        self.params.input_size()
    }
    fn hidden_size(&self) -> usize {
        self.params.hidden_size()
    }
    fn params(&self) -> &RecurrentParams<T> {
        &self.params
    }
    fn params_mut(&mut self) -> &mut RecurrentParams<T> {
        &mut self.params
    }
    fn zero_state(&self, batch: usize) -> C::State {
        let (hid, out) = (self.cell_size(), self.hidden_size());
        C::state_from_parts(
            (0..=C::CARRIED).map(|k| Mat::zeros(if k == 0 { out } else { hid }, batch)).collect(),
        )
    }
    fn state_output(state: &C::State) -> &Mat<T> {
        state.part(0)
    }

    fn check_input(&self, x: SeqInput<'_, T>, batch: usize, h0: &C::State) -> Result<(), CellError> {
        check_seq(&x, batch, self.input_size())?;
        if h0.num_parts() != 1 + C::CARRIED {
            return Err(CellError::InvalidInput(format!(
                "the initial state has {} parts, an {} state has {}",
                h0.num_parts(),
                C::NAME,
                1 + C::CARRIED
            )));
        }
        (0..h0.num_parts()).try_for_each(|k| {
            let (name, rows) = if k == 0 { ("h", self.hidden_size()) } else { ("c", self.cell_size()) };
            check_state_part(name, h0.part(k), rows, batch)
        })
    }

    fn step(&self, x: SeqInput<'_, T>, state: &mut C::State) {
        let batch = Self::state_output(state).ncols();
        assert_eq!(
            x.columns(),
            batch,
            "{} step: {} input columns for a state of batch {batch}",
            C::NAME,
            x.columns()
        );
        *state = self.forward(x, batch, state, &mut LayerCache::default());
    }

    fn forward(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &C::State,
        cache: &mut LayerCache<T>,
    ) -> C::State {
        let mut fin = h0.clone();
        self.forward_into(x, batch, h0, cache, &mut fin);
        fin
    }

    fn forward_into(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &C::State,
        cache: &mut LayerCache<T>,
        fin: &mut C::State,
    ) {
        if let Err(e) = self.check_input(x, batch, h0) {
            panic!("{} forward: {e}", C::NAME);
        }
        let (hid, out, n) = (self.cell_size(), self.hidden_size(), x.columns());
        let (steps, rows) = (n / batch, C::SAVED * hid);
        cache.batch = batch;
        cache.var.lengths.clear();
        ensure_shape(&mut cache.gates, C::GATES * hid, n);
        ensure_shape(&mut cache.saved, rows, n);
        ensure_shape(&mut cache.h, out, n);
        ensure_shape(&mut cache.m, if self.params.weight_hr.is_some() { hid } else { 0 }, n);
        copy_into(h0.part(0), &mut cache.h0);
        interleave(h0, rows, hid, batch, &mut cache.saved0);
        if steps > 0 {
            // Batch 1 takes the packed GEMV for a sequence, or for one step once its packing is
            // kept across calls (frozen weights: streaming).
            let packed_pays = steps > 1 || cache.frozen;
            let batch1 =
                batch == 1 && packed_pays && batch1::available::<T>() && self.params.weight_hr.is_none();
            // A frozen cache's dense input at batch 1: each part of the batch-1 loop projects
            // its own rows of it, step by step.
            let parts_project = match x {
                SeqInput::Dense(xm) if batch1 && cache.frozen => Some(xm),
                _ => None,
            };
            // Otherwise P = W_ih · X for every step at once (or the gather of W_ih columns); a
            // frozen cache keeps W_ih packed too.
            match x {
                _ if parts_project.is_some() => {}
                _ if cache.precision == Precision::Bf16 => bf16::project_input(
                    &self.params.weight_ih,
                    &mut cache.bf16_w_ih,
                    cache.frozen,
                    x,
                    &mut cache.gates,
                ),
                // A frozen cache keeps W_ih packed from call to call (the same bits as packing
                // it per call: the product's arithmetic does not depend on the packing).
                SeqInput::Dense(xm) if cache.frozen => {
                    let w = StepWeight::kept(&self.params.weight_ih, &mut cache.w_ih_packed);
                    w.gemm(xm, T::ZERO, &mut cache.gates);
                }
                _ => project_input(&self.params.weight_ih, x, &mut cache.gates),
            }
            if batch1 {
                batch1::forward(self, steps, cache, parts_project);
            } else {
                self.forward_loop(steps, cache);
            }
        }
        let (h, saved) = if steps == 0 {
            (cache.h0.as_slice(), cache.saved0.as_slice())
        } else {
            // The last step visited: T-1, or 0 in reverse.
            let last = Order { steps, reverse: self.params.reverse }.t(steps - 1) * batch;
            (
                &cache.h.as_slice()[last * out..][..batch * out],
                &cache.saved.as_slice()[last * rows..][..batch * rows],
            )
        };
        write_state((h, out), saved, rows, hid, batch, fin);
    }

    fn outputs<'c>(&self, cache: &'c LayerCache<T>) -> &'c Mat<T> {
        if cache.var.lengths.is_empty() {
            &cache.h
        } else {
            &cache.var.out
        }
    }

    fn forward_lengths(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        lengths: &[usize],
        h0: &C::State,
        cache: &mut LayerCache<T>,
    ) -> C::State {
        if let Err(e) =
            self.check_input(x, batch, h0).and_then(|_| check_lengths(lengths, batch, x.columns() / batch))
        {
            panic!("{} forward: {e}", C::NAME);
        }
        cache.batch = batch;
        // The loop sizes the buffers to the real steps.
        let mut fin = h0.clone();
        self.forward_lengths_loop(x, lengths, h0, cache, &mut fin);
        fin
    }

    fn backward(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut LayerCache<T>,
        d_out: &Mat<T>,
        d_final: &C::State,
        grads: &mut RecurrentParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) -> C::State {
        let mut d_h0 = d_final.clone();
        self.backward_impl(x, cache, d_out, d_final, grads, d_x, Some(&mut d_h0), false);
        d_h0
    }

    fn freeze_weights(&self, cache: &mut LayerCache<T>) {
        cache.frozen = true;
    }

    fn set_precision(&self, cache: &mut LayerCache<T>, precision: Precision) -> Result<(), CellError> {
        precision.check(T::NAME).map_err(CellError::InvalidConfig)?;
        if precision == Precision::Bf16 && self.params.weight_hr.is_some() {
            return Err(CellError::InvalidConfig(
                "bf16 does not cover LSTM projections (weight_hr) yet; run this model in f32".into(),
            ));
        }
        cache.precision = precision;
        Ok(())
    }

    fn backward_detached(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut LayerCache<T>,
        d_out: &Mat<T>,
        d_final: &C::State,
        grads: &mut RecurrentParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_impl(x, cache, d_out, d_final, grads, d_x, None, false);
    }

    fn backward_detached_overwrite(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut LayerCache<T>,
        d_out: &Mat<T>,
        d_final: &C::State,
        grads: &mut RecurrentParams<T>,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_impl(x, cache, d_out, d_final, grads, d_x, None, true);
    }
}
