//! The engine's forward loop at batch 1 in `f32` on CPUs with AVX-512, split over the threads.
//!
//! At batch 1 a step is a GEMV with `W_hh` (`G·H × H`; 4 MB for an LSTM with `H = 512`) and a
//! pointwise pass over `H` units; the GEMV streams `W_hh` from memory on every step. Here the
//! hidden units are split between the parts of [`for_each_part`]: part `j` owns units `u0..u1`
//! and packs once ([`PackedRows`]) the `G` row blocks of `W_hh` that feed them (each gate's rows
//! of its units, gate after gate), so each core reads only its share of the weights. Per step
//! `t`, each part:
//!
//! ```text
//! a   = P[gate rows of u0..u1, t]                  (the input projection, done before the loop;
//!                                                   a frozen cache: a = W_ih[those rows] · x_t)
//! a  += W_hh[those rows] · h_{t-1}                 (or v = ..., apart; strips in alternating order)
//! the cell's pointwise step on its units            (hid = u1 - u0: each gate block has nu rows)
//! barrier                                           (h_t complete before any part starts t+1)
//! ```
//!
//! Every value is computed by the same operations as in the general loop: the GEMV sums each row
//! in an order that depends on the row alone (and equals that of the GEMV the general loop's
//! one-column product takes), and the pointwise step is elementwise. The results are therefore
//! bit-identical for any number of parts and to the general forward.
//!
//! Each part keeps its packed rows, and a plain copy of the values it packed them from, across
//! calls: a call compares the part's rows of `W_hh` with that copy bit for bit and re-packs only
//! if they differ (a training step changed them), so a stale packing is never used. For an LSTM
//! with `H = 512` the comparison reads 8 MB in two sequential streams (0.1 to 0.3 ms on one core)
//! and packing writes 4 MB (0.2 to 0.45 ms); the copy costs 4 MB of memory. A cache whose
//! weights are frozen ([`Recurrence::freeze_weights`](crate::Recurrence::freeze_weights): a
//! stream's, whose model cannot change) skips the comparison, so that a stream's single steps
//! take this route too; each part then also packs its rows of `W_ih` once and projects the input
//! itself, step by step (a one-column GEMV, as the general loop's single steps do: the same
//! bits), so that a streamed step's whole work is split. A single step has no barrier: its
//! parts are claimed ([`for_each_claimed`]), so a worker that is asleep or not scheduled costs
//! the caller nothing but doing that part itself.

use std::sync::Mutex;

use rnn_tensor::packed::bf16::PackedBf16;
use rnn_tensor::packed::MR;
use rnn_tensor::parallel::{for_each_claimed, for_each_part, split_range};
use rnn_tensor::{Mat, PackedRows, Precision, Scalar};

use super::ops::{all_zero, SharedCols};
use super::{Biases, Cell, ForwardStep, Layer, LayerCache};
use crate::Recurrence;

/// `W_hh` is split between threads only from this many weights on (a GRU with `H ≥ 256`, 768 KB
/// of `f32`): below, it fits in one core's L2 and a step takes a few µs, not much more than what
/// handing half of it to another thread costs (about 1 µs there and back on the 2-core Xeon,
/// 0.5 µs until the worker starts). The tests split every size.
const MIN_SPLIT_WEIGHTS: usize = if cfg!(test) { 1 } else { 3 * 256 * 256 };

/// One part's buffers, kept in the cache and reused across calls.
#[derive(Debug, Default)]
struct PartBuffers<T> {
    /// Its `G·nu` rows of `W_hh`, in strips (`wb`: rounded to bf16, in the bf16 precision).
    w: PackedRows<T>,
    wb: PackedBf16,
    /// The values `w` was packed from, column by column (`G·nu` per column; in bf16 none: `wb`
    /// is compared with the weights itself), and the `(G, H, u0, u1)` and precision of the
    /// packing: when both match, the packing is up to date.
    src: Vec<T>,
    src_key: (usize, usize, usize, usize, Precision),
    /// Its `G·nu` rows of `W_ih`, in strips (`wbi`: rounded to bf16, in the bf16 precision), for
    /// a frozen cache's input projection, and the `(G, H, I, u0, u1)` and precision it was packed
    /// for (`(0, ..)`: not packed).
    wi: PackedRows<T>,
    wbi: PackedBf16,
    wi_key: (usize, usize, usize, usize, usize, Precision),
    /// Its rows of `b_ih + b_hh`, `b_ih`, `b_hh` (empty without biases).
    bias: [Vec<T>; 3],
    /// Its rows of `a_t` and `v_t`, and its units' blocks of the records of steps `t-1`, `t`.
    a: Vec<T>,
    v: Vec<T>,
    saved_prev: Vec<T>,
    saved: Vec<T>,
}

/// The buffers of every part, one lock per part (taken once per call, uncontended).
#[derive(Debug)]
pub(super) struct Scratch<T> {
    parts: Vec<Mutex<PartBuffers<T>>>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Self { parts: Vec::new() }
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: when set, [`available`] is false and the general loop runs.
    pub(crate) static GENERAL_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the route exists for `T` on this CPU.
pub(super) fn available<T: Scalar>() -> bool {
    #[cfg(test)]
    if GENERAL_ONLY.with(|g| g.get()) {
        return false;
    }
    PackedRows::<T>::available()
}

/// `dst[k·nu..(k+1)·nu]` = units `u0..u0+nu` of block `k` of the `blocks·H` values of column
/// `col` of `m`, for each block.
///
/// # Safety
/// Nobody writes those values during the call, and `m` outlives it.
unsafe fn gather<T: Scalar>(m: &SharedCols<T>, col: usize, hid: usize, u0: usize, nu: usize, dst: &mut [T]) {
    let rows = dst.len() / nu.max(1) * hid;
    for (k, d) in dst.chunks_exact_mut(nu).enumerate() {
        // SAFETY: the caller's contract.
        d.copy_from_slice(unsafe { m.elems(col * rows + k * hid + u0, nu) });
    }
}

/// [`gather`] from a plain slice of `blocks·H` values (the biases, the initial record).
fn gather_units<T: Copy>(src: &[T], hid: usize, u0: usize, nu: usize, dst: &mut [T]) {
    for (k, d) in dst.chunks_exact_mut(nu).enumerate() {
        d.copy_from_slice(&src[k * hid + u0..][..nu]);
    }
}

/// The inverse of [`gather`].
///
/// # Safety
/// Nobody else reads or writes those values during the call, and `m` outlives it.
unsafe fn scatter<T: Scalar>(src: &[T], m: &SharedCols<T>, col: usize, hid: usize, u0: usize, nu: usize) {
    let rows = src.len() / nu.max(1) * hid;
    for (k, s) in src.chunks_exact(nu).enumerate() {
        // SAFETY: the caller's contract.
        unsafe { m.elems_mut(col * rows + k * hid + u0, nu) }.copy_from_slice(s);
    }
}

/// Runs the time loop of a batch-1 forward (`steps ≥ 1`) on a cache whose `h0`, `saved0` are
/// set, filling `gates`, `saved`, `h`: `gates` holds the input projection, or `x` is given (a
/// frozen cache's dense input, `I × T`) and each part projects its rows.
pub(super) fn forward<T: Scalar, C: Cell<T>>(
    layer: &Layer<T, C>,
    steps: usize,
    cache: &mut LayerCache<T>,
    x: Option<&Mat<T>>,
) {
    let hid = layer.hidden_size();
    let (g, sv) = (C::GATES, C::SAVED);
    let w_hh = layer.params.weight_hh.as_slice();
    let parts = if g * hid * hid < MIN_SPLIT_WEIGHTS {
        1
    } else {
        rnn_tensor::parallel::num_threads().clamp(1, hid.div_ceil(MR))
    };
    let LayerCache { gates, saved, h, h0, saved0, bias_sum, b1, frozen, precision, .. } = cache;
    let (frozen, precision) = (*frozen, *precision);
    b1.parts.resize_with(parts, Default::default);
    let bias = layer.biases(bias_sum);
    let h0_zero = all_zero(h0);
    let (h0, saved0) = (h0.as_slice(), saved0.as_slice());
    let (gates, saved, h) = (SharedCols::new(gates), SharedCols::new(saved), SharedCols::new(h));
    let bufs = &b1.parts;
    let cell = layer.cell();
    // Part `index` of `count`; `barrier` meets the other parts (never called for one step).
    let run = |index: usize, count: usize, barrier: &dyn Fn()| {
        let units = split_range(hid, index, count, MR);
        let (u0, nu) = (units.start, units.len());
        if nu == 0 {
            // Still meet the others at every barrier.
            (1..steps).for_each(|_| barrier());
            return;
        }
        let mut guard = bufs[index].lock().unwrap_or_else(|e| e.into_inner());
        let PartBuffers { w, wb, src, src_key, wi, wbi, wi_key, bias: b, a, v, saved_prev, saved: saved_t } =
            &mut *guard;
        // Packed row r is row (r / nu)·H + u0 + r mod nu of W_hh: each gate's rows of the units.
        let key = (g, hid, u0, u0 + nu, precision);
        // Frozen weights (a stream's): the packing made on the first call stays valid. In bf16
        // the packing itself is compared with the weights rounded (no copy is kept).
        let row = |r| (r / nu) * hid + u0 + r % nu;
        let current = *src_key == key
            && (frozen
                || match precision {
                    Precision::Full => same_rows(w_hh, g, hid, u0, nu, src),
                    Precision::Bf16 => wb.matches(super::bf16::f32s(w_hh), g * hid, hid, g * nu, row),
                });
        if !current {
            *src_key = key;
            match precision {
                Precision::Full => {
                    copy_rows(w_hh, g, hid, u0, nu, src);
                    w.pack(w_hh, g * hid, hid, g * nu, row);
                }
                Precision::Bf16 => wb.pack(super::bf16::f32s(w_hh), g * hid, hid, g * nu, row),
            }
        }
        if let Some(x) = x {
            let inputs = x.nrows();
            let key = (g, hid, inputs, u0, u0 + nu, precision);
            if *wi_key != key {
                let w_ih = layer.params.weight_ih.as_slice();
                match precision {
                    Precision::Full => wi.pack(w_ih, g * hid, inputs, g * nu, row),
                    Precision::Bf16 => wbi.pack(super::bf16::f32s(w_ih), g * hid, inputs, g * nu, row),
                }
                *wi_key = key;
            }
        }
        // W_hh's rows times h_{t-1}, into y: y = W·h (beta 0) or y += W·h (beta 1).
        let product = |h_prev: &[T], beta: T, y: &mut [T], reverse: bool| match precision {
            Precision::Full => w.gemv(T::ONE, h_prev, beta, y, reverse),
            Precision::Bf16 => super::bf16::gemm(wb, h_prev, beta, y, reverse),
        };
        for (dst, full) in b.iter_mut().zip([bias.sum, bias.ih, bias.hh]) {
            dst.resize(if full.is_empty() { 0 } else { g * nu }, T::ZERO);
            if !full.is_empty() {
                gather_units(full, hid, u0, nu, dst);
            }
        }
        let part_bias = Biases { sum: &b[0], ih: &b[1], hh: &b[2] };
        a.resize(g * nu, T::ZERO);
        v.resize(if C::HIDDEN_APART { g * nu } else { 0 }, T::ZERO);
        saved_prev.resize(sv * nu, T::ZERO);
        saved_t.resize(sv * nu, T::ZERO);
        for s in 0..steps {
            // Step s of the visit is step t of the sequence (t = s, or T-1-s in reverse), and it
            // starts from step tp's state.
            let (t, tp) =
                if layer.params.reverse { (steps - 1 - s, steps - s) } else { (s, s.wrapping_sub(1)) };
            // SAFETY (h_prev): column tp of h was completed by every part before the last
            // barrier and nobody writes it any more.
            let h_prev = if s == 0 { h0 } else { unsafe { h.elems(tp * hid, hid) } };
            if s == 0 {
                gather_units(saved0, hid, u0, nu, saved_prev);
            } else {
                // SAFETY: column tp of saved was completed by every part before the last
                // barrier and nobody writes it any more.
                unsafe { gather(&saved, tp, hid, u0, nu, saved_prev) };
            }
            match x {
                // a = W_ih · x_t, this part's rows.
                Some(x) => {
                    let xt = &x.as_slice()[t * x.nrows()..][..x.nrows()];
                    match precision {
                        Precision::Full => wi.gemv(T::ONE, xt, T::ZERO, a, false),
                        Precision::Bf16 => super::bf16::gemm(wbi, xt, T::ZERO, a, false),
                    }
                }
                // SAFETY: this part alone touches its units of column t of gates.
                None => unsafe { gather(&gates, t, hid, u0, nu, a) },
            }
            // a += W_hh · h_{t-1} (or v = W_hh · h_{t-1}), this part's rows; every other step
            // reads the strips backwards, starting with those the last step read last (in L2).
            let skip = s == 0 && h0_zero;
            if C::HIDDEN_APART {
                if skip {
                    v.fill(T::ZERO);
                } else {
                    product(h_prev, T::ZERO, v, s % 2 == 1);
                }
            } else if !skip {
                product(h_prev, T::ONE, a, s % 2 == 1);
            }
            // SAFETY: this part alone touches its units of column t of h.
            let h_t = unsafe { h.elems_mut(t * hid + u0, nu) };
            let step = ForwardStep {
                a,
                v,
                bias: part_bias,
                h_prev: &h_prev[u0..u0 + nu],
                saved_prev,
                saved: saved_t,
                h: h_t,
            };
            cell.forward(nu, step);
            // SAFETY: this part alone touches its units of column t of gates and saved.
            unsafe {
                scatter(a, &gates, t, hid, u0, nu);
                scatter(saved_t, &saved, t, hid, u0, nu);
            }
            if s + 1 < steps {
                barrier();
            }
        }
    };
    if steps == 1 {
        // No barrier: a part whose worker is late is done by the caller (a stream's step).
        for_each_claimed(parts, |index, count| run(index, count, &|| ()));
    } else {
        for_each_part(parts, |part| run(part.index, part.count, &|| part.barrier()));
    }
}

/// Whether the part's rows of `w_hh` (`G·H × H`, units `u0..u0+nu` of each gate) are bitwise
/// those in `src`. Reads both once, front to back, comparing bytes (a `memcmp` per block of `nu`
/// values: -0 against +0 counts as a change); stops at the first difference (after a training
/// step, in the first column).
fn same_rows<T: Scalar>(w_hh: &[T], g: usize, hid: usize, u0: usize, nu: usize, src: &[T]) -> bool {
    if src.len() != g * nu * hid {
        return false;
    }
    src.chunks_exact(g * nu).enumerate().all(|(p, col)| {
        (0..g).all(|k| bytes(&w_hh[p * g * hid + k * hid + u0..][..nu]) == bytes(&col[k * nu..(k + 1) * nu]))
    })
}

/// The bytes of `v`.
fn bytes<T: Scalar>(v: &[T]) -> &[u8] {
    // SAFETY: `T` is `f32` or `f64` (Scalar is sealed): plain values without padding, every byte
    // initialised; the slice covers exactly `v`'s memory, borrowed for as long as `v` is.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Copies the part's rows of `w_hh` into `src`, column by column (the layout [`same_rows`] reads).
fn copy_rows<T: Scalar>(w_hh: &[T], g: usize, hid: usize, u0: usize, nu: usize, src: &mut Vec<T>) {
    src.clear();
    for p in 0..hid {
        for k in 0..g {
            src.extend_from_slice(&w_hh[p * g * hid + k * hid + u0..][..nu]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GruCell, LstmCell, RecurrentConfig, RecurrentState, RnnCell, SeqInput};
    use rnn_tensor::activation::Activation;
    use rnn_tensor::init::Init;
    use rnn_tensor::Rng;

    /// Thread counts are global: the tests that set them run one at a time.
    static THREADS: Mutex<()> = Mutex::new(());

    /// The forward's final state and everything it keeps: outputs, gates, records; with a
    /// frozen cache (a stream's: the parts project their own rows of the input) or not.
    fn forward<C: Cell<f32>>(
        layer: &Layer<f32, C>,
        x: SeqInput<'_, f32>,
        h0: &C::State,
        frozen: bool,
    ) -> Vec<Vec<f32>> {
        let mut cache = LayerCache::default();
        if frozen {
            layer.freeze_weights(&mut cache);
        }
        let fin = layer.forward(x, 1, h0, &mut cache);
        let mut v = fin.parts().iter().map(|m| m.as_slice().to_vec()).collect::<Vec<_>>();
        v.extend([&cache.h, &cache.gates, &cache.saved].iter().map(|m| m.as_slice().to_vec()));
        v
    }

    /// What [`forward`] returns, computed one step per call (the state carried), each call on a
    /// fresh cache: what a stream fed one step at a time gives.
    fn forward_stepwise<C: Cell<f32>>(
        layer: &Layer<f32, C>,
        x: SeqInput<'_, f32>,
        h0: &C::State,
    ) -> Vec<Vec<f32>> {
        let mut state = h0.clone();
        let mut kept = vec![Vec::new(); 3];
        for t in 0..x.columns() {
            let column;
            let xt = match x {
                SeqInput::Dense(m) => {
                    column = m.columns(t, 1).into_owned();
                    SeqInput::Dense(&column)
                }
                SeqInput::Index(ix) => SeqInput::Index(&ix[t..t + 1]),
            };
            let mut cache = LayerCache::default();
            state = layer.forward(xt, 1, &state, &mut cache);
            for (k, m) in kept.iter_mut().zip([&cache.h, &cache.gates, &cache.saved]) {
                k.extend_from_slice(m.as_slice());
            }
        }
        let mut v = state.parts().iter().map(|m| m.as_slice().to_vec()).collect::<Vec<_>>();
        v.extend(kept);
        v
    }

    /// Bit-identical to the general loop, with 1, 2 and 3 threads, for every cell, dense and
    /// index input, with and without biases, from a zero and a non-zero state, for hidden sizes
    /// that are and are not multiples of 32, over several steps and one, on a cache and on a
    /// frozen one (a stream's) (tolerance: none).
    fn bit_identical<C: Cell<f32>>(cell: C) {
        let mut rng = Rng::seed_from(11);
        for &(input, hid, steps, bias) in &[
            (5usize, 64usize, 7usize, true),
            (3, 37, 4, false),
            (65, 96, 12, true),
            (2, 1, 3, true),
            (6, 80, 1, true),
        ] {
            let layer = RecurrentConfig::<C>::new(input, hid)
                .with_cell(cell)
                .with_bias(bias)
                .build::<f32>(&mut rng)
                .unwrap();
            let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps, &mut rng);
            let ix: Vec<usize> = (0..steps).map(|t| (t * 7) % input).collect();
            let zero = layer.zero_state(1);
            let flat: Vec<f64> = zero.to_flat().iter().map(|_| rng.uniform(-0.5, 0.5)).collect();
            for h0 in [zero.clone(), zero.with_flat(&flat)] {
                for input in [SeqInput::Dense(&x), SeqInput::Index(&ix)] {
                    GENERAL_ONLY.with(|g| g.set(true));
                    let whole = forward(&layer, input, &h0, false);
                    let stepwise = forward_stepwise(&layer, input, &h0);
                    GENERAL_ONLY.with(|g| g.set(false));
                    for (threads, frozen) in [1, 2, 3].into_iter().flat_map(|t| [(t, false), (t, true)]) {
                        rnn_tensor::parallel::set_num_threads(threads);
                        let got = forward(&layer, input, &h0, frozen);
                        // A frozen cache projects the input a step at a time (as a stream's
                        // single steps do): its bits are those of the general loop called once
                        // per step; otherwise those of the general loop over the sequence.
                        let want =
                            if frozen && matches!(input, SeqInput::Dense(_)) { &stepwise } else { &whole };
                        for (w, g) in want.iter().zip(&got) {
                            let same = w.len() == g.len()
                                && w.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(
                                same,
                                "{} dense {} H {hid} T {steps} bias {bias} threads {threads} frozen {frozen}",
                                C::NAME,
                                matches!(input, SeqInput::Dense(_))
                            );
                        }
                    }
                }
            }
        }
        rnn_tensor::parallel::set_num_threads(1);
    }

    #[test]
    fn bit_identical_to_general_forward() {
        if !available::<f32>() {
            return; // no route to compare on this CPU (the general loop is all there is)
        }
        let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        bit_identical(LstmCell);
        bit_identical(GruCell);
        bit_identical(RnnCell { activation: Activation::Tanh });
        bit_identical(RnnCell { activation: Activation::Relu });
    }

    /// The packing kept in the cache is never stale: after a change of one weight of `W_hh`
    /// (in the first and in the last part's rows), the next forward with the same cache equals a
    /// fresh general forward, with 1 and 2 threads.
    fn sees_changed_weights<C: Cell<f32>>(cell: C) {
        let mut rng = Rng::seed_from(12);
        let mut layer = RecurrentConfig::<C>::new(4, 40).with_cell(cell).build::<f32>(&mut rng).unwrap();
        let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(4, 5, &mut rng);
        let h0 = layer.zero_state(1);
        let rows = C::GATES * 40;
        for threads in [1, 2] {
            rnn_tensor::parallel::set_num_threads(threads);
            let mut cache = LayerCache::default();
            for (r, c) in [(3, 7), (rows - 1, 39), (rows / 2, 0)] {
                layer.forward(SeqInput::Dense(&x), 1, &h0, &mut cache);
                layer.params.weight_hh[(r, c)] += 0.5;
                let fin = layer.forward(SeqInput::Dense(&x), 1, &h0, &mut cache);
                GENERAL_ONLY.with(|g| g.set(true));
                let want = layer.forward(SeqInput::Dense(&x), 1, &h0, &mut LayerCache::default());
                GENERAL_ONLY.with(|g| g.set(false));
                assert_eq!(fin, want, "{} threads {threads}, W_hh[{r}, {c}] changed", C::NAME);
            }
        }
        rnn_tensor::parallel::set_num_threads(1);
    }

    #[test]
    fn sees_changed_weights_for_every_cell() {
        let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        sees_changed_weights(LstmCell);
        sees_changed_weights(GruCell);
        sees_changed_weights(RnnCell::default());
    }
}
