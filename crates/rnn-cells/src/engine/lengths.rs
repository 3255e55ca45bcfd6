//! The engine's loops for a batch whose sequences have their own lengths `L_b ≤ T`, as PyTorch's
//! `pack_padded_sequence` then `pad_packed_sequence` give: sample `b` takes steps `0..L_b` (a
//! reverse layer starts at its own last step `L_b - 1`), its outputs past `L_b` are zero, and its
//! final state is the state after its last real step.
//!
//! The samples are ranked by length once, longest first, and dealt into [`LANES`] lanes like
//! cards (ranks 0, 2, 4, … to the first lane, 1, 3, 5, … to the second), each lane in rank order:
//! a permutation `perm` to positions, lane after lane, undone at the boundary (inputs, states and
//! gradients come and go in the caller's order). At step `t` the samples still running are the
//! `n_t` longest, so in each lane a prefix of it, and the lanes' shares differ by at most one.
//! Every buffer holds the real steps only, step after step (step `t`'s `n_t` columns from column
//! `off_t = n_0 + … + n_{t-1}`, lane after lane), so that every product, the whole-sequence ones
//! included, and every pointwise pass covers real steps only: the cost follows the number of real
//! steps, not `B × T`.
//!
//! Per step and lane, the states the running samples start from are the lane's columns of the
//! previous step, in place (forward in time), or, for a reverse layer whose samples join at their
//! own last steps, gathered into one block (`hprev`, `sprev`). `dW_hh`, `dW_ih` (and `dW_hr`) are
//! one product each after the loop, over the starting states kept for every real step.
//!
//! A lane reads only what it wrote, so with threads each takes its own lanes through the whole
//! loop ([`for_each_lane`]) and they never wait for each other; the lanes are the same for any
//! thread count, and so are the results, bit for bit. (Splitting every step's running samples
//! between the threads instead made them meet after every step: 13 % of a two-thread run spent
//! waiting, on the Xeon model 207 of docs/performance-log.md. A fixed split of the samples by length,
//! as the padded loop's, would leave the thread of the shorter ones idle at the end; dealt like
//! cards, the lanes keep equal shares of every step.)

use std::ops::Range;

use rnn_tensor::{gemm, parallel, Mat, MatView, MatViewMut, Precision, Scalar, Trans};

use super::ops::{
    add_sums, bias_sums, ensure_shape, for_each_lane, gradient_strips, input_backward, project_input,
    weight_grad_sums, SharedCols, StepWeight,
};
use super::{
    bf16, interleave, project_backward, project_forward, write_state, BackwardStep, Cell, ForwardStep, Layer,
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

/// The lanes a variable-length batch is dealt into (see the module docs). Two, the cores of the
/// project's machines: a loop runs on at most this many threads (four lanes ran the two-thread
/// benchmark 14 % slower; docs/performance-log.md). Fixed, so that the layout, and the results, do
/// not depend on the thread count.
const LANES: usize = 2;

/// The positions of the first lane of each of [`LANES`] (and the batch size after them), for a
/// batch of `b`: lane `l` holds the ranks `l, l + LANES, …` below `b`.
fn lane_starts(b: usize) -> [usize; LANES + 1] {
    let mut starts = [0; LANES + 1];
    for l in 0..LANES {
        starts[l + 1] = starts[l] + (b + LANES - 1 - l) / LANES;
    }
    starts
}

/// Where the running samples of each step are: their positions (lane by lane) and their columns
/// in the compact buffers.
#[derive(Clone, Copy)]
struct Steps<'a> {
    /// `n_t` and `off_t` (see [`Lengths`]).
    active: &'a [usize],
    off: &'a [usize],
    /// [`lane_starts`].
    starts: [usize; LANES + 1],
}

impl Steps<'_> {
    /// The samples of lane `lane` that run step `t`: its ranks below `n_t`.
    fn lane_len(&self, t: usize, lane: usize) -> usize {
        (self.active[t] + LANES - 1 - lane) / LANES
    }

    /// The positions of lane `lane` that run step `t` (a prefix of the lane).
    fn lane_range(&self, t: usize, lane: usize) -> Range<usize> {
        self.starts[lane]..self.starts[lane] + self.lane_len(t, lane)
    }

    /// The lane of position `q`.
    fn lane_of(&self, q: usize) -> usize {
        (1..LANES).take_while(|&l| q >= self.starts[l]).count()
    }

    /// Whether the sample at position `q` runs step `t`.
    fn runs(&self, t: usize, q: usize) -> bool {
        self.lane_range(t, self.lane_of(q)).contains(&q)
    }

    /// The compact column of step `t` of the sample at position `q` (which runs it): the lanes
    /// before its own, then its place in its lane.
    fn col(&self, t: usize, q: usize) -> usize {
        let lane = self.lane_of(q);
        self.off[t] + (0..lane).map(|l| self.lane_len(t, l)).sum::<usize>() + (q - self.starts[lane])
    }

    /// The positions that run step `t`, in the order of their compact columns.
    fn positions(&self, t: usize) -> impl Iterator<Item = usize> + '_ {
        (0..LANES).flat_map(move |lane| self.lane_range(t, lane))
    }
}

/// What the variable-length loops keep in the cache.
#[derive(Debug, Default)]
pub(super) struct Lengths<T: Scalar> {
    /// The lengths, in the caller's order (empty: no lengths).
    pub(super) lengths: Vec<usize>,
    /// `perm[q]` is the caller's sample at position `q` (lane by lane, see the module docs).
    perm: Vec<usize>,
    /// [`lane_starts`] of the batch.
    starts: [usize; LANES + 1],
    /// `active[t]` = `n_t`, the samples still running at step `t`, and `off[t]` = the column of
    /// step `t`'s first in the compact buffers (`off[T]` = the real steps).
    active: Vec<usize>,
    off: Vec<usize>,
    /// `T`.
    pub(super) steps: usize,
    /// The input of the real steps, compact (dense), or its indices.
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

impl<T: Scalar> Lengths<T> {
    /// Keeps `lengths` (one per sample, each in `1..=steps`) and lays the batch out: ranked
    /// longest first (ties keep the caller's order), dealt into the lanes (`perm`, `starts`),
    /// and each step's running samples and first compact column (`active`, `off`).
    fn set_layout(&mut self, lengths: &[usize], steps: usize) {
        let b = lengths.len();
        self.lengths.clear();
        self.lengths.extend_from_slice(lengths);
        let mut ranked: Vec<usize> = (0..b).collect();
        ranked.sort_by_key(|&u| std::cmp::Reverse(lengths[u]));
        self.starts = lane_starts(b);
        self.perm.clear();
        self.perm.extend((0..LANES).flat_map(|l| ranked.iter().skip(l).step_by(LANES).copied()));
        self.active.clear();
        self.active.extend((0..steps).map(|t| lengths.iter().filter(|&&l| l > t).count()));
        self.off.clear();
        self.off.push(0);
        for t in 0..steps {
            let next = self.off[t] + self.active[t];
            self.off.push(next);
        }
        self.steps = steps;
    }

    /// Where the running samples of each step are.
    fn layout(&self) -> Steps<'_> {
        Steps { active: &self.active, off: &self.off, starts: self.starts }
    }
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

/// Values a part of [`for_each_steps_part`] copies at least.
const MIN_COPY_VALUES: usize = 1 << 16;

/// Runs `f(steps)` on parts of the steps of `var` (contiguous ranges, of about equal real
/// columns), over the threads when each part copies [`MIN_COPY_VALUES`] values of `rows` per
/// column; otherwise `f(0..T)` on the caller. For the copies between the caller's padded layout
/// and the compact one, which touch each step's columns alone.
fn for_each_steps_part<T: Scalar>(var: &Lengths<T>, rows: usize, f: impl Fn(Range<usize>) + Sync) {
    let (steps, real) = (var.steps, var.off[var.steps]);
    match (real * rows / MIN_COPY_VALUES).min(steps) {
        0 | 1 => f(0..steps),
        parts => parallel::for_each_part(parts, |part| {
            // The steps whose first real column falls in this part's share of the real columns
            // (the steps no sample reaches, the last part's).
            let share = part.range(real, 1);
            let first =
                |c: usize| if c == real { steps } else { var.off[..steps].partition_point(|&o| o < c) };
            let ts = first(share.start)..first(share.end);
            if !ts.is_empty() {
                f(ts);
            }
        }),
    }
}

/// The compact columns (step `t`'s running samples, lane by lane) of a padded `rows × T·B`
/// matrix in the caller's order: `dst[col(t, q)] = src[t·B + perm[q]]`.
fn gather_real<T: Scalar>(src: &Mat<T>, var: &Lengths<T>, dst: &mut Mat<T>) {
    let (rows, b) = (src.nrows(), var.perm.len());
    ensure_shape(dst, rows, var.off[var.steps]);
    let (src, dst) = (src.as_slice(), SharedCols::new(dst));
    for_each_steps_part(var, rows, |ts| {
        for t in ts {
            // SAFETY: step t's columns of dst are this part's alone, and dst outlives the call.
            let block = unsafe { dst.slice_mut(var.off[t], var.active[t]) };
            for (to, q) in block.chunks_exact_mut(rows.max(1)).zip(var.layout().positions(t)) {
                let from = t * b + var.perm[q];
                to.copy_from_slice(&src[from * rows..(from + 1) * rows]);
            }
        }
    });
}

/// The inverse of [`gather_real`]: the padded `rows × T·B` matrix in the caller's order, zero at
/// the padded positions.
fn scatter_real<T: Scalar>(src: &Mat<T>, var: &Lengths<T>, dst: &mut Mat<T>) {
    let (rows, b) = (src.nrows(), var.perm.len());
    ensure_shape(dst, rows, var.steps * b);
    let (src, dst) = (src.as_slice(), SharedCols::new(dst));
    for_each_steps_part(var, rows, |ts| {
        for t in ts {
            // SAFETY: step t's block of dst is this part's alone, and dst outlives the call.
            let block = unsafe { dst.slice_mut(t * b, b) };
            block.fill(T::ZERO);
            for (i, q) in var.layout().positions(t).enumerate() {
                let from = var.off[t] + i;
                block[var.perm[q] * rows..(var.perm[q] + 1) * rows]
                    .copy_from_slice(&src[from * rows..(from + 1) * rows]);
            }
        }
    });
}

/// Where the steps of a variable-length loop find their starting states, shared by the parts of
/// [`for_each_lane`]: the states every step left (`h`, `saved`, compact), the initial ones
/// (by position), and `hprev`/`sprev`, one step's gathered starting states.
struct StepBufs<'a, T> {
    h: SharedCols<T>,
    saved: SharedCols<T>,
    hprev: SharedCols<T>,
    sprev: SharedCols<T>,
    h0: &'a Mat<T>,
    saved0: &'a Mat<T>,
}

impl<'a, T: Scalar> StepBufs<'a, T> {
    /// Shares the buffers, sizing `hprev`/`sprev` like the initial states (one column per sample).
    fn new(
        h: &mut Mat<T>,
        saved: &mut Mat<T>,
        hprev: &mut Mat<T>,
        sprev: &mut Mat<T>,
        h0: &'a Mat<T>,
        saved0: &'a Mat<T>,
    ) -> Self {
        ensure_shape(hprev, h0.nrows(), h0.ncols());
        ensure_shape(sprev, saved0.nrows(), saved0.ncols());
        let [h, saved, hprev, sprev] = [h, saved, hprev, sprev].map(SharedCols::new);
        StepBufs { h, saved, hprev, sprev, h0, saved0 }
    }

    /// The starting states of the running samples `cols` (positions, one lane's) of the step of
    /// visit `s`. Forward in time after the first step they all ran the previous visit (the
    /// running samples only shrink, longest first), so their states are that step's columns of
    /// the lane, in place. Otherwise (a reverse layer's samples join as it reaches their last
    /// steps, from the initial state) they are gathered into columns `cols` of `hprev`/`sprev`.
    ///
    /// # Safety
    /// The previous visit's columns of `h` and `saved` are complete and nothing writes them while
    /// the slices live; no other lane touches columns `cols` of `hprev`/`sprev` meanwhile.
    unsafe fn starting_states(
        &self,
        order: Order,
        s: usize,
        cols: &Range<usize>,
        steps: Steps<'_>,
    ) -> (&[T], &[T]) {
        let (out, rows, na) = (self.h.rows(), self.saved.rows(), cols.len());
        if s > 0 && !order.reverse {
            let pc = steps.col(order.t(s - 1), cols.start);
            // SAFETY: the caller's contract (the previous visit's columns).
            return unsafe { (self.h.elems(pc * out, na * out), self.saved.elems(pc * rows, na * rows)) };
        }
        // The previous step visited, if any.
        let tp = (s > 0).then(|| order.t(s - 1));
        for p in cols.clone() {
            let (hs, ss): (&[T], &[T]) = if let Some(tp) = tp.filter(|&tp| steps.runs(tp, p)) {
                let c = steps.col(tp, p);
                // SAFETY: the caller's contract (the previous visit's columns).
                unsafe { (self.h.elems(c * out, out), self.saved.elems(c * rows, rows)) }
            } else {
                (
                    &self.h0.as_slice()[p * out..(p + 1) * out],
                    &self.saved0.as_slice()[p * rows..(p + 1) * rows],
                )
            };
            // SAFETY: column p of hprev and sprev is this lane's alone (the caller's contract).
            unsafe {
                self.hprev.elems_mut(p * out, out).copy_from_slice(hs);
                self.sprev.elems_mut(p * rows, rows).copy_from_slice(ss);
            }
        }
        // SAFETY: as above; written just now, by this lane.
        unsafe {
            (self.hprev.elems(cols.start * out, na * out), self.sprev.elems(cols.start * rows, na * rows))
        }
    }
}

impl<T: Scalar, C: Cell<T>> Layer<T, C> {
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
        var.set_layout(lengths, steps);
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
                let mut vix = std::mem::take(&mut var.ix);
                vix.clear();
                for t in 0..steps {
                    vix.extend(var.layout().positions(t).map(|q| ix[t * b + var.perm[q]]));
                }
                var.ix = vix;
                SeqInput::Index(&var.ix)
            }
        };
        ensure_shape(&mut cache.gates, g, real);
        ensure_shape(&mut cache.saved, rows, real);
        ensure_shape(&mut cache.h, out, real);
        ensure_shape(&mut cache.m, if self.params.weight_hr.is_some() { hid } else { 0 }, real);
        if cache.precision == Precision::Bf16 {
            bf16::project_input(
                &self.params.weight_ih,
                &mut cache.bf16_w_ih,
                cache.frozen,
                xs,
                &mut cache.gates,
            );
        } else {
            project_input(&self.params.weight_ih, xs, &mut cache.gates);
        }
        let mut h0m = Mat::zeros(out, b);
        permute_cols(h0.part(0), &var.perm, false, &mut h0m);
        cache.h0 = h0m;
        let mut s0 = Mat::zeros(0, 0);
        interleave(h0, rows, hid, b, &mut s0);
        permute_cols(&s0, &var.perm, false, &mut cache.saved0);
        let mut bias_sum = std::mem::take(&mut cache.bias_sum);
        let mut w_packed = std::mem::take(&mut cache.w_hh_packed);
        let mut w_bf16 = std::mem::take(&mut cache.bf16_w_hh);
        let mut w_hr_packed = std::mem::take(&mut cache.w_hr_packed);
        let mut v = Mat::zeros(if C::HIDDEN_APART { g } else { 0 }, b);
        {
            let bias = self.biases(&mut bias_sum);
            let w_hh = match cache.precision {
                Precision::Bf16 => StepWeight::Bf16(w_bf16.refresh(&self.params.weight_hh, cache.frozen)),
                Precision::Full => StepWeight::new(&self.params.weight_hh, Trans::No, steps, &mut w_packed),
            };
            let w_hr = self.projection(Trans::No, &mut w_hr_packed);
            let LayerCache { gates, saved, h, m, h0, saved0, var, .. } = &mut *cache;
            let bufs = StepBufs::new(h, saved, &mut var.hprev, &mut var.sprev, h0, saved0);
            let (gates, m, v) = (SharedCols::new(gates), SharedCols::new(m), SharedCols::new(&mut v));
            let layout = var.layout();
            for_each_lane(LANES, steps, b, self.part_macs(), |lane, s| {
                let t = order.t(s);
                let cols = layout.lane_range(t, lane);
                if cols.is_empty() {
                    return;
                }
                let (na, col) = (cols.len(), layout.col(t, cols.start));
                // SAFETY: the states step t starts from were completed before this visit (by
                // this lane's last one), and nothing writes them during it.
                let (hprev, sprev) = unsafe { bufs.starting_states(order, s, &cols, layout) };
                // SAFETY: this lane alone touches columns `cols` of step t's blocks of gates, m,
                // saved and h, and of the one-step buffer v; none of them is a starting state.
                let (a_t, v_t, saved_t, h_t) = unsafe {
                    (
                        gates.slice_mut(col, na),
                        if C::HIDDEN_APART { v.slice_mut(cols.start, na) } else { &mut [] },
                        bufs.saved.slice_mut(col, na),
                        bufs.h.slice_mut(col, na),
                    )
                };
                let hp = MatView::from_slice(hprev, out, na);
                if C::HIDDEN_APART {
                    w_hh.gemm(&hp, T::ZERO, &mut MatViewMut::from_slice(v_t, g, na));
                } else {
                    w_hh.gemm(&hp, T::ONE, &mut MatViewMut::from_slice(a_t, g, na));
                }
                // With a projection the cell writes m_t, and h_t = W_hr·m_t.
                // SAFETY: as above (columns `cols` of step t's block of m).
                let mut m_t = w_hr.is_some().then(|| unsafe { m.slice_mut(col, na) });
                let step = ForwardStep {
                    a: a_t,
                    v: v_t,
                    bias,
                    h_prev: hprev,
                    saved_prev: sprev,
                    saved: saved_t,
                    h: m_t.as_deref_mut().unwrap_or(&mut *h_t),
                };
                self.cell.forward(hid, step);
                if let (Some(w), Some(m_t)) = (&w_hr, m_t) {
                    project_forward(w, m_t, h_t, hid);
                }
            });
        }
        cache.bias_sum = bias_sum;
        cache.w_hh_packed = w_packed;
        cache.bf16_w_hh = w_bf16;
        cache.w_hr_packed = w_hr_packed;
        // The final state of each sample: after its last step (L_b - 1), or step 0 in reverse.
        let mut last_h = Mat::zeros(out, b);
        let mut last_s = Mat::zeros(rows, b);
        let layout = cache.var.layout();
        for (p, &u) in cache.var.perm.iter().enumerate() {
            let t = if self.params.reverse { 0 } else { lengths[u] - 1 };
            let c = layout.col(t, p);
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
        let mut da_packed = std::mem::take(&mut cache.da_packed);
        let mut dv_packed = std::mem::take(&mut cache.dv_packed);
        let mut w_packed = std::mem::take(&mut cache.w_hh_t_packed);
        let mut w_hr_packed = std::mem::take(&mut cache.w_hr_t_packed);
        // With a projection: the gradients of every h_t (compact, for dW_hr), one step's
        // W_hrᵀ·dh_t (the cell's dh) and a zero d_out.
        let mut dhs = std::mem::take(&mut cache.dhs);
        ensure_shape(&mut dhs, out, if proj { real } else { 0 });
        let (mut dm, zeros) =
            if proj { (Mat::zeros(hid, b), Mat::zeros(hid, b)) } else { Default::default() };
        let beta = if C::DIRECT_H { T::ONE } else { T::ZERO };
        // After a bf16 forward: where bf16 products pay (bf16.rs), the backward's products in
        // bf16 too (they round their operands themselves); elsewhere the f32 backward of the
        // operands the forward's products saw (bf16.rs).
        let bwd16 = cache.precision == Precision::Bf16 && super::bf16::backward_in_bf16();
        let bf16 = cache.precision == Precision::Bf16 && !bwd16;
        // As the padded backward: dA (dV apart) written into the strips of its packing step by
        // step where `gradient_strips` says so; the plain buffer then holds one step's columns,
        // reused by every step.
        let (da_strips, dv_strips) =
            gradient_strips((&mut da_packed, &mut dv_packed), g, real, C::HIDDEN_APART, bwd16);
        let step_strips = if C::HIDDEN_APART { dv_strips } else { da_strips };
        ensure_shape(&mut da, g, if da_strips { b } else { real });
        ensure_shape(&mut dv, if C::HIDDEN_APART { g } else { 0 }, if dv_strips { b } else { real });
        let mut back = std::mem::take(&mut cache.bf16_back);
        if bwd16 {
            back.pack_w_hh_t(&self.params.weight_hh);
        }
        let mut rounded = std::mem::take(&mut cache.bf16_rounded);
        if bf16 {
            super::bf16::round_into(&self.params.weight_ih, &mut rounded.w_ih);
            super::bf16::round_into(&self.params.weight_hh, &mut rounded.w_hh);
        }
        let (w_ih, w_hh) = if bf16 {
            (&rounded.w_ih, &rounded.w_hh)
        } else {
            (&self.params.weight_ih, &self.params.weight_hh)
        };
        {
            let w_hh_t = if bwd16 {
                StepWeight::Bf16(&back.w_hh_t)
            } else {
                StepWeight::new(w_hh, Trans::Yes, steps, &mut w_packed)
            };
            let w_hr_t = self.projection(Trans::Yes, &mut w_hr_packed);
            let (da_writer, dv_writer) = (da_packed.columns_writer(), dv_packed.columns_writer());
            let step_writer = if C::HIDDEN_APART { &dv_writer } else { &da_writer };
            let LayerCache { gates, saved, h, m, h0, saved0, var, .. } = &mut *cache;
            let bufs = StepBufs::new(h, saved, &mut var.hprev, &mut var.sprev, h0, saved0);
            let (gates, m, d_out) = (&*gates, &*m, &var.d_out);
            let [hprev_all, da, dv, dhs, dh, dc, dm] =
                [&mut var.hprev_all, &mut da, &mut dv, &mut dhs, &mut dh, &mut dc, &mut dm]
                    .map(SharedCols::new);
            let layout = var.layout();
            // Visit i of the loop is visit steps-1-i of the forward.
            let back = |i: usize| steps - 1 - i;
            for_each_lane(LANES, steps, b, self.part_macs(), |lane, i| {
                let s = back(i);
                let t = order.t(s);
                let cols = layout.lane_range(t, lane);
                if cols.is_empty() {
                    return;
                }
                let (na, col, c0) = (cols.len(), layout.col(t, cols.start), cols.start);
                // SAFETY: the states step t started from were left by the forward; nothing writes
                // them now (the backward writes only gradients and the gathered hprev/sprev, whose
                // columns `cols` are this lane's).
                let (hprev, sprev) = unsafe { bufs.starting_states(order, s, &cols, layout) };
                // SAFETY (every slice_mut below): this lane alone touches columns `cols` of step
                // t's blocks of hprev_all, da, dv and dhs, and of the one-step buffers dh, dc and
                // dm (a lane's visits run in order, one after the other).
                // Kept for dW_hh, one product after the loop.
                unsafe { hprev_all.slice_mut(col, na) }.copy_from_slice(hprev);
                // (Kept in strips: this lane's columns of the one-step buffer.)
                let da_t = unsafe { da.slice_mut(if da_strips { c0 } else { col }, na) };
                let dv_t: &mut [T] = if C::HIDDEN_APART {
                    unsafe { dv.slice_mut(if dv_strips { c0 } else { col }, na) }
                } else {
                    &mut []
                };
                let d_out_t = &d_out.as_slice()[col * out..(col + na) * out];
                let dh_t = unsafe { dh.slice_mut(c0, na) };
                // What the cell sees as its output h, its d_out and its dh: with a projection,
                // m_t, zero and W_hrᵀ·(δ_t + dh_t).
                let (h_cell, d_out_cell, dh_cell): (&[T], &[T], &mut [T]) = if let Some(w) = &w_hr_t {
                    let g_t = unsafe { dhs.slice_mut(col, na) };
                    let dm_t = unsafe { dm.slice_mut(c0, na) };
                    project_backward(w, (&*dh_t, d_out_t), g_t, dm_t, out);
                    (
                        &m.as_slice()[col * hid..(col + na) * hid],
                        &zeros.as_slice()[c0 * hid..(c0 + na) * hid],
                        dm_t,
                    )
                } else {
                    // SAFETY: step t's columns of h, written by the forward, only read now.
                    (unsafe { bufs.h.elems(col * out, na * out) }, d_out_t, &mut *dh_t)
                };
                let step = BackwardStep {
                    gates: &gates.as_slice()[col * g..(col + na) * g],
                    saved: unsafe { bufs.saved.elems(col * rows, na * rows) },
                    saved_prev: sprev,
                    h: h_cell,
                    h_prev: hprev,
                    d_out: d_out_cell,
                    dh: dh_cell,
                    d_carried: unsafe { dc.slice_mut(c0, na) },
                    da: &mut *da_t,
                    dv: &mut *dv_t,
                };
                self.cell.backward(hid, step);
                if da_strips {
                    // SAFETY: columns col..col + na of dA's strips are this lane's alone in
                    // this visit (as of the plain buffers above); no product reads them yet.
                    unsafe { da_writer.write(col, da_t) };
                }
                if dv_strips {
                    // SAFETY: columns col..col + na of dV's strips are this lane's alone in
                    // this visit (as of the plain buffers above); no product reads them yet.
                    unsafe { dv_writer.write(col, dv_t) };
                }
                let op_t: &[T] = if C::HIDDEN_APART { dv_t } else { da_t };
                // dh_prev (+)= W_hhᵀ · dv_t
                if s > 0 || init_grad {
                    let op_t = MatView::from_slice(op_t, g, na);
                    let mut dh_v = MatViewMut::from_slice(dh_t, out, na);
                    if step_strips {
                        // SAFETY: this lane wrote these columns of the strips just above,
                        // and nothing writes them during the product.
                        unsafe { w_hh_t.gemm_from(step_writer, col, &op_t, beta, &mut dh_v) };
                    } else {
                        w_hh_t.gemm(&op_t, beta, &mut dh_v);
                    }
                }
            });
        }
        cache.w_hh_t_packed = w_packed;
        cache.w_hr_t_packed = w_hr_packed;
        // dW_hr += Σ_t dh_t · m_tᵀ, over the real steps at once
        if let Some(dw) = &mut grads.weight_hr {
            gemm(T::ONE, &dhs, Trans::No, &cache.m, Trans::Yes, T::ONE, dw);
        }
        cache.dhs = dhs;
        // The products after the loop read dA (dV) from its strips where it was written there.
        let (dap, dvp) = (da_strips.then_some(&da_packed), dv_strips.then_some(&dv_packed));
        // dW_hh += Σ_t dv_t · hprev_tᵀ, over the real steps at once
        let hprev_all = if bf16 {
            super::bf16::round_into(&cache.var.hprev_all, &mut rounded.h);
            &rounded.h
        } else {
            &cache.var.hprev_all
        };
        // The bias gradients: db_hh += Σ_columns dV; db_ih += Σ_columns dA (and db_hh too when dV
        // is dA), each with a product that reads those columns (see `bias_sums`).
        let dense = matches!(x, SeqInput::Dense(_));
        let (hh_sums, da_sums) = bias_sums(C::HIDDEN_APART, dense, (&mut grads.bias_ih, &mut grads.bias_hh));
        let (d, dp) = if C::HIDDEN_APART { (&dv, dvp) } else { (&da, dap) };
        // In bf16, dW_ih's left operand is dW_hh's when dV is dA (every column of both): packed
        // once.
        let reuse_d = bwd16 && !C::HIDDEN_APART && dense;
        if bwd16 {
            back.pack_d(d, 0..d.ncols());
            back.weight_grad(&[(Some(hprev_all.as_slice()), d.ncols())], &mut grads.weight_hh);
            if let Some((a, b)) = hh_sums {
                add_sums(d, dp, a, b);
            }
        } else {
            weight_grad_sums(d, dp, hprev_all, (T::ONE, &mut grads.weight_hh), hh_sums);
        }
        // dW_ih += dA · Xᵀ (or the scatter-add);  d_x = W_ihᵀ · dA, back in the caller's order.
        let LayerCache { var, w_ih_t, w_ih_t_packed, .. } = &mut *cache;
        let xs = match x {
            SeqInput::Dense(_) => SeqInput::Dense(&var.x),
            SeqInput::Index(_) => SeqInput::Index(&var.ix),
        };
        let xs = if bf16 { super::bf16::round_input(xs, &mut rounded.x) } else { xs };
        let want_dx = d_x.is_some() && matches!(x, SeqInput::Dense(_));
        match xs {
            SeqInput::Dense(xm) if bwd16 => {
                if let Some((bi, bh)) = da_sums {
                    add_sums(&da, dap, bi, bh);
                }
                if !reuse_d {
                    back.pack_d(&da, 0..da.ncols());
                }
                back.weight_grad(&[(Some(xm.as_slice()), da.ncols())], &mut grads.weight_ih);
                if want_dx {
                    back.input_grad(&self.params.weight_ih, &da, &mut var.d_x);
                }
            }
            _ => input_backward(
                w_ih,
                xs,
                &da,
                dap,
                (T::ONE, &mut grads.weight_ih),
                want_dx.then_some(&mut var.d_x),
                w_ih_t,
                w_ih_t_packed,
                da_sums,
            ),
        }
        if let (Some(dx), true) = (d_x, want_dx) {
            scatter_real(&var.d_x, var, dx);
        }
        if let Some(d_h0) = d_h0 {
            let (mut uh, mut uc) = (Mat::zeros(0, 0), Mat::zeros(0, 0));
            permute_cols(&dh, &var.perm, true, &mut uh);
            permute_cols(&dc, &var.perm, true, &mut uc);
            write_state((uh.as_slice(), out), uc.as_slice(), crows, hid, b, d_h0);
        }
        cache.bf16_rounded = rounded;
        cache.bf16_back = back;
        cache.da = da;
        cache.dv = dv;
        cache.da_packed = da_packed;
        cache.dv_packed = dv_packed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lanes deal the ranks like cards, and at every step each lane's running samples are a
    /// prefix of it, their compact columns the step's, lane after lane, each exactly once.
    #[test]
    fn lanes_hold_each_running_sample_once() {
        for lengths in [vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], vec![2], vec![4, 4], vec![1, 7, 7, 2, 9]] {
            let (b, steps) = (lengths.len(), *lengths.iter().max().unwrap());
            let mut var = Lengths::<f32>::default();
            var.set_layout(&lengths, steps);
            let (perm, off, starts) = (&var.perm, &var.off, var.starts);
            assert_eq!(starts[LANES], b);
            // Dealt like cards: position q of lane l holds rank l + LANES·(q - starts[l]), the
            // ranks longest first with ties in the caller's order.
            let mut ranked: Vec<usize> = (0..b).collect();
            ranked.sort_by_key(|&u| (std::cmp::Reverse(lengths[u]), u));
            for l in 0..LANES {
                for q in starts[l]..starts[l + 1] {
                    assert_eq!(perm[q], ranked[l + LANES * (q - starts[l])], "{lengths:?} position {q}");
                }
            }
            let layout = var.layout();
            for t in 0..steps {
                // The running positions: those whose samples are longer than t.
                let mut running: Vec<usize> = (0..b).filter(|&q| lengths[perm[q]] > t).collect();
                let cols: Vec<usize> = layout.positions(t).map(|q| layout.col(t, q)).collect();
                assert_eq!(cols, (off[t]..off[t + 1]).collect::<Vec<_>>(), "{lengths:?} step {t}");
                let mut listed: Vec<usize> = layout.positions(t).collect();
                listed.sort_unstable();
                running.sort_unstable();
                assert_eq!(listed, running, "{lengths:?} step {t}");
                for q in 0..b {
                    assert_eq!(layout.runs(t, q), lengths[perm[q]] > t, "{lengths:?} step {t} position {q}");
                }
                // Each lane's running samples are a prefix of it, and the lanes' shares differ by
                // at most one.
                let lens: Vec<usize> = (0..LANES).map(|l| layout.lane_len(t, l)).collect();
                assert!(lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1, "{lengths:?} step {t}");
                for l in 0..LANES {
                    assert_eq!(layout.lane_range(t, l).start, starts[l]);
                    assert!(layout.lane_range(t, l).end <= starts[l + 1]);
                }
            }
        }
    }
}
