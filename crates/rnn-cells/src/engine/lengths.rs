//! The engine's loops for a batch whose sequences have their own lengths `L_b ≤ T`, as PyTorch's
//! `pack_padded_sequence` then `pad_packed_sequence` give: sample `b` takes steps `0..L_b` (a
//! reverse layer starts at its own last step `L_b - 1`), its outputs past `L_b` are zero, and its
//! final state is the state after its last real step.
//!
//! The samples are ordered by length once, longest first (a permutation `perm`, undone at the
//! boundary: inputs, states and gradients come and go in the caller's order), so that at step `t`
//! the samples still running are the first `n_t`. Every buffer holds the real steps only, step
//! after step (step `t`'s `n_t` columns from column `off_t = n_0 + … + n_{t-1}`), so that every
//! product, the whole-sequence ones included, and every pointwise pass covers real steps only: the
//! cost follows the number of real steps, not `B × T`.
//!
//! Per step, the state each running sample starts from is gathered into one block (`hprev`,
//! `sprev`): the previous step's, or for a reverse layer's samples whose first step this is, the
//! initial state. `dW_hh` is summed step by step against those blocks. The loops run on one
//! thread (the products still split themselves when large), so the results do not depend on the
//! thread count: each product's shape is fixed by the lengths alone.

use rnn_tensor::{gemm, Mat, MatView, MatViewMut, Scalar, Trans};

use super::ops::{
    add_column_sums, ensure_shape, input_backward, project_input, weight_grad_product, StepWeight,
};
use super::{
    interleave, project_backward, project_forward, write_state, BackwardStep, Cell, ForwardStep, Layer,
    LayerCache, Order,
};
use crate::{CellError, Recurrence, RecurrentParams, RecurrentState, SeqInput};

/// Checks per-sample lengths against a batch of `batch` sequences of `steps` steps.
pub fn check_lengths(lengths: &[usize], batch: usize, steps: usize) -> Result<(), CellError> {
    if lengths.len() != batch {
        return Err(CellError::InvalidInput(format!(
            "{} lengths for a batch of {batch}: give one length per sequence",
            lengths.len()
        )));
    }
    if let Some((b, &l)) = lengths.iter().enumerate().find(|(_, &l)| l == 0 || l > steps) {
        return Err(CellError::InvalidInput(format!(
            "sequence {b} has length {l}; every length must be in 1..={steps} (the steps of the input)"
        )));
    }
    Ok(())
}

/// What the variable-length loops keep in the cache.
#[derive(Debug, Default)]
pub(super) struct Lengths<T: Scalar> {
    /// The lengths, in the caller's order (empty: no lengths).
    pub(super) lengths: Vec<usize>,
    /// `perm[p]` is the caller's sample at sorted position `p` (longest first).
    perm: Vec<usize>,
    /// `active[t]` = `n_t`, the samples still running at step `t`, and `off[t]` = the column of
    /// step `t`'s first in the compact buffers (`off[T]` = the real steps).
    active: Vec<usize>,
    off: Vec<usize>,
    /// `T`.
    pub(super) steps: usize,
    /// The input, by sorted position (dense) or its indices.
    x: Mat<T>,
    ix: Vec<usize>,
    /// The outputs in the caller's order (padded positions zero).
    pub(super) out: Mat<T>,
    /// One step's starting states: `H × B` (`P × B` with a projection) and `SAVED·H × B`.
    hprev: Mat<T>,
    sprev: Mat<T>,
    /// The gradients of the outputs, compact; the starting states of every step, compact.
    d_out: Mat<T>,
    d_x: Mat<T>,
    hprev_all: Mat<T>,
}

/// `dst` column `t·B + p` = `src` column `t·B + perm[p]` (or the inverse with `inverse`), for
/// every step.
fn permute_cols<T: Scalar>(src: &Mat<T>, perm: &[usize], inverse: bool, dst: &mut Mat<T>) {
    let (rows, n) = src.shape();
    let b = perm.len();
    ensure_shape(dst, rows, n);
    for t in 0..n / b.max(1) {
        for (p, &u) in perm.iter().enumerate() {
            let (from, to) = if inverse { (t * b + p, t * b + u) } else { (t * b + u, t * b + p) };
            dst.as_mut_slice()[to * rows..(to + 1) * rows]
                .copy_from_slice(&src.as_slice()[from * rows..(from + 1) * rows]);
        }
    }
}

/// The compact columns (step `t`'s running samples, by sorted position) of a padded
/// `rows × T·B` matrix in the caller's order: `dst[off_t + p] = src[t·B + perm[p]]`.
fn gather_real<T: Scalar>(src: &Mat<T>, var: &Lengths<T>, dst: &mut Mat<T>) {
    let (rows, b) = (src.nrows(), var.perm.len());
    ensure_shape(dst, rows, var.off[var.steps]);
    for t in 0..var.steps {
        for p in 0..var.active[t] {
            let (from, to) = (t * b + var.perm[p], var.off[t] + p);
            dst.as_mut_slice()[to * rows..(to + 1) * rows]
                .copy_from_slice(&src.as_slice()[from * rows..(from + 1) * rows]);
        }
    }
}

/// The inverse of [`gather_real`]: the padded `rows × T·B` matrix in the caller's order, zero at
/// the padded positions.
fn scatter_real<T: Scalar>(src: &Mat<T>, var: &Lengths<T>, dst: &mut Mat<T>) {
    let (rows, b) = (src.nrows(), var.perm.len());
    ensure_shape(dst, rows, var.steps * b);
    dst.as_mut_slice().fill(T::ZERO);
    for t in 0..var.steps {
        for p in 0..var.active[t] {
            let (from, to) = (var.off[t] + p, t * b + var.perm[p]);
            dst.as_mut_slice()[to * rows..(to + 1) * rows]
                .copy_from_slice(&src.as_slice()[from * rows..(from + 1) * rows]);
        }
    }
}

impl<T: Scalar, C: Cell<T>> Layer<T, C> {
    /// Where the samples running at visit `s` find their starting states: forward in time after
    /// the first step, they all ran the previous visit (the running samples only shrink, longest
    /// first), so their states are the first columns of that step's, in place (`Some` of its
    /// first column). Otherwise (a reverse layer's samples join as it reaches their last steps,
    /// from the initial state) they are gathered into `hprev`/`sprev` (`None`).
    fn prev_states(&self, cache: &mut LayerCache<T>, order: Order, s: usize) -> Option<usize> {
        if s > 0 && !order.reverse {
            Some(cache.var.off[order.t(s - 1)])
        } else {
            self.gather_prev(cache, order, s);
            None
        }
    }

    /// Fills `hprev`/`sprev` with the starting states of step `t`'s `n` running samples: the
    /// state left at step `tp` for those that ran it, else the initial state.
    fn gather_prev(&self, cache: &mut LayerCache<T>, order: Order, s: usize) {
        let (out, b) = (self.hidden_size(), cache.batch);
        let rows = C::SAVED * self.cell_size();
        let t = order.t(s);
        let n = cache.var.active[t];
        // The previous step visited, and how many samples ran it.
        let (tp, ran) = if s == 0 { (0, 0) } else { (order.t(s - 1), cache.var.active[order.t(s - 1)]) };
        let LayerCache { h, saved, h0, saved0, var, .. } = cache;
        ensure_shape(&mut var.hprev, out, b);
        ensure_shape(&mut var.sprev, rows, b);
        for p in 0..n {
            let (hs, ss, col) = if p < ran { (&*h, &*saved, var.off[tp] + p) } else { (&*h0, &*saved0, p) };
            var.hprev.as_mut_slice()[p * out..(p + 1) * out]
                .copy_from_slice(&hs.as_slice()[col * out..(col + 1) * out]);
            var.sprev.as_mut_slice()[p * rows..(p + 1) * rows]
                .copy_from_slice(&ss.as_slice()[col * rows..(col + 1) * rows]);
        }
    }

    /// The forward with per-sample lengths (see the module docs), on a cache whose shapes are
    /// set; writes the final state into `fin` in the caller's order.
    pub(super) fn forward_lengths_loop(
        &self,
        x: SeqInput<'_, T>,
        lengths: &[usize],
        h0: &C::State,
        cache: &mut LayerCache<T>,
        fin: &mut C::State,
    ) {
        let (hid, out, b, n) = (self.cell_size(), self.hidden_size(), cache.batch, x.columns());
        let (steps, g, rows) = (n / b, C::GATES * hid, C::SAVED * hid);
        let order = Order { steps, reverse: self.params.reverse };
        let var = &mut cache.var;
        var.lengths.clear();
        var.lengths.extend_from_slice(lengths);
        var.perm.clear();
        var.perm.extend(0..b);
        // Longest first; ties keep the caller's order.
        var.perm.sort_by_key(|&u| std::cmp::Reverse(lengths[u]));
        var.active.clear();
        var.active.extend((0..steps).map(|t| lengths.iter().filter(|&&l| l > t).count()));
        var.off.clear();
        var.off.push(0);
        for t in 0..steps {
            let next = var.off[t] + var.active[t];
            var.off.push(next);
        }
        var.steps = steps;
        let real = var.off[steps];
        // The input of the real steps, compact.
        let xs = match x {
            SeqInput::Dense(m) => {
                let mut xc = std::mem::take(&mut var.x);
                gather_real(m, var, &mut xc);
                var.x = xc;
                SeqInput::Dense(&var.x)
            }
            SeqInput::Index(ix) => {
                var.ix.clear();
                for t in 0..steps {
                    var.ix.extend((0..var.active[t]).map(|p| ix[t * b + var.perm[p]]));
                }
                SeqInput::Index(&var.ix)
            }
        };
        ensure_shape(&mut cache.gates, g, real);
        ensure_shape(&mut cache.saved, rows, real);
        ensure_shape(&mut cache.h, out, real);
        ensure_shape(&mut cache.m, if self.params.weight_hr.is_some() { hid } else { 0 }, real);
        project_input(&self.params.weight_ih, xs, &mut cache.gates);
        let mut h0m = Mat::zeros(out, b);
        permute_cols(h0.part(0), &var.perm, false, &mut h0m);
        cache.h0 = h0m;
        let mut s0 = Mat::zeros(0, 0);
        interleave(h0, rows, hid, b, &mut s0);
        permute_cols(&s0, &var.perm, false, &mut cache.saved0);
        let mut bias_sum = std::mem::take(&mut cache.bias_sum);
        let mut w_packed = std::mem::take(&mut cache.w_hh_packed);
        let mut w_hr_packed = std::mem::take(&mut cache.w_hr_packed);
        let mut v = Mat::zeros(if C::HIDDEN_APART { g } else { 0 }, b);
        {
            let bias = self.biases(&mut bias_sum);
            let w_hh = StepWeight::new(&self.params.weight_hh, Trans::No, steps, &mut w_packed);
            let w_hr = self.projection(Trans::No, &mut w_hr_packed);
            for s in 0..steps {
                let t = order.t(s);
                let na = cache.var.active[t];
                if na == 0 {
                    continue;
                }
                let prev = self.prev_states(cache, order, s);
                let LayerCache { gates, saved, h, m, var, .. } = &mut *cache;
                let col = var.off[t];
                // Step t's columns come after every earlier step's (forward in time).
                let (h_done, h_rest) = h.as_mut_slice().split_at_mut(col * out);
                let (s_done, s_rest) = saved.as_mut_slice().split_at_mut(col * rows);
                let (hprev, sprev): (&[T], &[T]) = match prev {
                    Some(pc) => (&h_done[pc * out..(pc + na) * out], &s_done[pc * rows..(pc + na) * rows]),
                    None => (&var.hprev.as_slice()[..na * out], &var.sprev.as_slice()[..na * rows]),
                };
                let a_t = &mut gates.as_mut_slice()[col * g..(col + na) * g];
                let v_t = &mut v.as_mut_slice()[..if C::HIDDEN_APART { na * g } else { 0 }];
                let hp = MatView::from_slice(hprev, out, na);
                if C::HIDDEN_APART {
                    w_hh.gemm(&hp, T::ZERO, &mut MatViewMut::from_slice(v_t, g, na));
                } else {
                    w_hh.gemm(&hp, T::ONE, &mut MatViewMut::from_slice(a_t, g, na));
                }
                let h_t = &mut h_rest[..na * out];
                // With a projection the cell writes m_t, and h_t = W_hr·m_t.
                let mut m_t = w_hr.is_some().then(|| &mut m.as_mut_slice()[col * hid..(col + na) * hid]);
                let step = ForwardStep {
                    a: a_t,
                    v: v_t,
                    bias,
                    h_prev: hprev,
                    saved_prev: sprev,
                    saved: &mut s_rest[..na * rows],
                    h: m_t.as_deref_mut().unwrap_or(&mut *h_t),
                };
                self.cell.forward(hid, step);
                if let (Some(w), Some(m_t)) = (&w_hr, m_t) {
                    project_forward(w, m_t, h_t, hid);
                }
            }
        }
        cache.bias_sum = bias_sum;
        cache.w_hh_packed = w_packed;
        cache.w_hr_packed = w_hr_packed;
        // The final state of each sample: after its last step (L_b - 1), or step 0 in reverse.
        let mut last_h = Mat::zeros(out, b);
        let mut last_s = Mat::zeros(rows, b);
        for (p, &u) in cache.var.perm.iter().enumerate() {
            let t = if self.params.reverse { 0 } else { lengths[u] - 1 };
            let c = cache.var.off[t] + p;
            last_h.as_mut_slice()[u * out..(u + 1) * out]
                .copy_from_slice(&cache.h.as_slice()[c * out..(c + 1) * out]);
            last_s.as_mut_slice()[u * rows..(u + 1) * rows]
                .copy_from_slice(&cache.saved.as_slice()[c * rows..(c + 1) * rows]);
        }
        write_state((last_h.as_slice(), out), last_s.as_slice(), rows, hid, b, fin);
        let LayerCache { h, var, .. } = cache;
        let mut out = std::mem::take(&mut var.out);
        scatter_real(h, var, &mut out);
        var.out = out;
    }

    /// Backpropagation through time for a forward with lengths; as `backward_impl`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward_lengths(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut LayerCache<T>,
        d_out: &Mat<T>,
        d_final: &C::State,
        grads: &mut RecurrentParams<T>,
        d_x: Option<&mut Mat<T>>,
        d_h0: Option<&mut C::State>,
    ) {
        let (hid, out, b) = (self.cell_size(), self.hidden_size(), cache.batch);
        let (steps, g, rows, crows) = (cache.var.steps, C::GATES * hid, C::SAVED * hid, C::CARRIED * hid);
        let proj = self.params.weight_hr.is_some();
        let real = cache.var.off[steps];
        let order = Order { steps, reverse: self.params.reverse };
        let init_grad = d_h0.is_some();
        {
            let var = &mut cache.var;
            let mut dc = std::mem::take(&mut var.d_out);
            gather_real(d_out, var, &mut dc);
            var.d_out = dc;
            ensure_shape(&mut var.hprev_all, out, real);
        }
        let mut dh = Mat::zeros(out, b);
        permute_cols(d_final.part(0), &cache.var.perm, false, &mut dh);
        let mut dc0 = Mat::zeros(0, 0);
        interleave(d_final, crows, hid, b, &mut dc0);
        let mut dc = Mat::zeros(crows, b);
        permute_cols(&dc0, &cache.var.perm, false, &mut dc);
        let mut da = std::mem::take(&mut cache.da);
        let mut dv = std::mem::take(&mut cache.dv);
        ensure_shape(&mut da, g, real);
        ensure_shape(&mut dv, if C::HIDDEN_APART { g } else { 0 }, real);
        let mut w_packed = std::mem::take(&mut cache.w_hh_t_packed);
        let mut w_hr_packed = std::mem::take(&mut cache.w_hr_t_packed);
        // With a projection: the gradients of every h_t (compact, for dW_hr), one step's
        // W_hrᵀ·dh_t (the cell's dh) and a zero d_out.
        let mut dhs = std::mem::take(&mut cache.dhs);
        ensure_shape(&mut dhs, out, if proj { real } else { 0 });
        let (mut dm, zeros) =
            if proj { (Mat::zeros(hid, b), Mat::zeros(hid, b)) } else { Default::default() };
        let beta = if C::DIRECT_H { T::ONE } else { T::ZERO };
        {
            let w_hh_t = StepWeight::new(&self.params.weight_hh, Trans::Yes, steps, &mut w_packed);
            let w_hr_t = self.projection(Trans::Yes, &mut w_hr_packed);
            for s in (0..steps).rev() {
                let t = order.t(s);
                let na = cache.var.active[t];
                if na == 0 {
                    continue;
                }
                let prev = self.prev_states(cache, order, s);
                let LayerCache { gates, saved, h, m, var, .. } = &mut *cache;
                let col = var.off[t];
                let (hprev, sprev): (&[T], &[T]) = match prev {
                    Some(pc) => (
                        &h.as_slice()[pc * out..(pc + na) * out],
                        &saved.as_slice()[pc * rows..(pc + na) * rows],
                    ),
                    None => (&var.hprev.as_slice()[..na * out], &var.sprev.as_slice()[..na * rows]),
                };
                // Kept for dW_hh, one product after the loop.
                var.hprev_all.as_mut_slice()[col * out..(col + na) * out].copy_from_slice(hprev);
                let da_t = &mut da.as_mut_slice()[col * g..(col + na) * g];
                let dv_t: &mut [T] =
                    if C::HIDDEN_APART { &mut dv.as_mut_slice()[col * g..(col + na) * g] } else { &mut [] };
                let d_out_t = &var.d_out.as_slice()[col * out..(col + na) * out];
                // What the cell sees as its output h, its d_out and its dh: with a projection,
                // m_t, zero and W_hrᵀ·(δ_t + dh_t).
                let (h_cell, d_out_cell, dh_cell): (&[T], &[T], &mut [T]) = if let Some(w) = &w_hr_t {
                    let g_t = &mut dhs.as_mut_slice()[col * out..(col + na) * out];
                    let dm_t = &mut dm.as_mut_slice()[..na * hid];
                    project_backward(w, (&dh.as_slice()[..na * out], d_out_t), g_t, dm_t, out);
                    (&m.as_slice()[col * hid..(col + na) * hid], &zeros.as_slice()[..na * hid], dm_t)
                } else {
                    (&h.as_slice()[col * out..(col + na) * out], d_out_t, &mut dh.as_mut_slice()[..na * out])
                };
                let step = BackwardStep {
                    gates: &gates.as_slice()[col * g..(col + na) * g],
                    saved: &saved.as_slice()[col * rows..(col + na) * rows],
                    saved_prev: sprev,
                    h: h_cell,
                    h_prev: hprev,
                    d_out: d_out_cell,
                    dh: dh_cell,
                    d_carried: &mut dc.as_mut_slice()[..na * crows],
                    da: da_t,
                    dv: dv_t,
                };
                self.cell.backward(hid, step);
                let op = if C::HIDDEN_APART { &dv } else { &da };
                let op_t = op.columns(col, na);
                // dh_prev (+)= W_hhᵀ · dv_t
                if s > 0 || init_grad {
                    let mut dh_t = MatViewMut::from_slice(&mut dh.as_mut_slice()[..na * out], out, na);
                    w_hh_t.gemm(&op_t, beta, &mut dh_t);
                }
            }
        }
        cache.w_hh_t_packed = w_packed;
        cache.w_hr_t_packed = w_hr_packed;
        // dW_hr += Σ_t dh_t · m_tᵀ, over the real steps at once
        if let Some(dw) = &mut grads.weight_hr {
            gemm(T::ONE, &dhs, Trans::No, &cache.m, Trans::Yes, T::ONE, dw);
        }
        cache.dhs = dhs;
        // dA packed once for the products that read it (dW_hh, dW_ih, and d_x in place), instead
        // of each packing it.
        let mut da_packed = std::mem::take(&mut cache.da_packed);
        let dap = (matches!(x, SeqInput::Dense(_)) && {
            da_packed.pack(&da, Trans::No);
            da_packed.is_strips()
        })
        .then_some(&da_packed);
        // dW_hh += Σ_t dv_t · hprev_tᵀ, over the real steps at once
        if C::HIDDEN_APART {
            gemm(T::ONE, &dv, Trans::No, &cache.var.hprev_all, Trans::Yes, T::ONE, &mut grads.weight_hh);
        } else {
            weight_grad_product(&da, dap, 0, &cache.var.hprev_all, &mut grads.weight_hh);
        }
        // db_ih += Σ_columns dA;  db_hh += Σ_columns dV
        if let (Some(bi), Some(bh)) = (&mut grads.bias_ih, &mut grads.bias_hh) {
            if C::HIDDEN_APART {
                add_column_sums(&da, bi, None);
                add_column_sums(&dv, bh, None);
            } else {
                add_column_sums(&da, bi, Some(bh));
            }
        }
        // dW_ih += dA · Xᵀ (or the scatter-add);  d_x = W_ihᵀ · dA, back in the caller's order.
        let LayerCache { var, w_ih_t, w_ih_t_packed, .. } = &mut *cache;
        let xs = match x {
            SeqInput::Dense(_) => SeqInput::Dense(&var.x),
            SeqInput::Index(_) => SeqInput::Index(&var.ix),
        };
        let want_dx = d_x.is_some() && matches!(x, SeqInput::Dense(_));
        input_backward(
            &self.params.weight_ih,
            xs,
            &da,
            dap,
            &mut grads.weight_ih,
            want_dx.then_some(&mut var.d_x),
            w_ih_t,
            w_ih_t_packed,
        );
        if let (Some(dx), true) = (d_x, want_dx) {
            scatter_real(&var.d_x, var, dx);
        }
        if let Some(d_h0) = d_h0 {
            let (mut uh, mut uc) = (Mat::zeros(0, 0), Mat::zeros(0, 0));
            permute_cols(&dh, &var.perm, true, &mut uh);
            permute_cols(&dc, &var.perm, true, &mut uc);
            write_state((uh.as_slice(), out), uc.as_slice(), crows, hid, b, d_h0);
        }
        cache.da = da;
        cache.dv = dv;
        cache.da_packed = da_packed;
    }
}
