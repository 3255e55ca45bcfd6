//! The forward in bf16 ([`Precision::Bf16`](rnn_tensor::Precision::Bf16)): the same loops, with
//! the products through the bf16 kernel of `rnn_tensor::packed::bf16`.
//!
//! ```text
//! P   = bf16(W_ih) · bf16(X)            the input projection, all steps at once, summed in f32
//! a_t = P_t + bf16(W_hh) · bf16(h_{t-1})   every step
//! ```
//!
//! The weights are rounded to bf16 once and packed ([`Bf16Weight`], kept in the layer's cache
//! and re-packed when the weights no longer round to the packed values); the right operands
//! (`x_t`, `h_{t-1}`) are rounded per product. Everything else stays `f32`: the biases, the
//! gate nonlinearities, the cell state `c` and `h` itself (only its copy fed to the next product
//! is rounded), so the error of a step is that of its products' operands, at most 2⁻⁸ relative
//! each; their products are exact in `f32` and summed in `f32`. An index (one-hot) input gathers the `f32` columns of `W_ih`
//! as in `f32`: there is no product to round.
//!
//! The kernel's arithmetic does not depend on the columns multiplied together or on the order of
//! the strips, so the results are bit-identical for any thread count and through the batch-1
//! route or the general one.

use std::cell::RefCell;

use rnn_tensor::packed::bf16::{Bf16Pairs, PackedBf16};
use rnn_tensor::{Mat, Scalar};

use crate::SeqInput;

/// A weight matrix rounded to bf16 and packed for the kernel.
#[derive(Debug, Default)]
pub(crate) struct Bf16Weight {
    shape: (usize, usize),
    packed: PackedBf16,
}

impl Bf16Weight {
    /// `w` (all its rows), packed: re-packed unless the packing holds `w` rounded to bf16 bit
    /// for bit ([`PackedBf16::matches`]: a weight that changed but rounds as before changes no
    /// product), or, with `frozen` (weights promised not to change), unless the shape is the
    /// same.
    pub(crate) fn refresh<T: Scalar>(&mut self, w: &Mat<T>, frozen: bool) -> &PackedBf16 {
        let w32 = f32s(w.as_slice());
        let (rows, k) = w.shape();
        let same = self.shape == w.shape() && (frozen || self.packed.matches(w32, rows, k, rows, |r| r));
        if !same {
            self.shape = w.shape();
            self.packed.pack(w32, rows, k, rows, |r| r);
        }
        &self.packed
    }
}

/// `v` as the `f32` values it holds.
///
/// # Panics
/// If `T` is not `f32` (the bf16 precision is accepted for `f32` models only, see
/// `Precision::check`).
pub(crate) fn f32s<T: Scalar>(v: &[T]) -> &[f32] {
    let p = T::as_f32_ptr(v.as_ptr()).expect("the bf16 route taken for a model that is not f32");
    // SAFETY: T is f32 (the pointer exists only then): the same memory, the same values.
    unsafe { std::slice::from_raw_parts(p, v.len()) }
}

/// [`f32s`] for a mutable slice.
pub(crate) fn f32s_mut<T: Scalar>(v: &mut [T]) -> &mut [f32] {
    let p = T::as_f32_mut_ptr(v.as_mut_ptr()).expect("the bf16 route taken for a model that is not f32");
    // SAFETY: T is f32: the same memory, borrowed mutably for as long as `v` is.
    unsafe { std::slice::from_raw_parts_mut(p, v.len()) }
}

thread_local! {
    /// The rounded right operand of this thread's products.
    static PAIRS: RefCell<Bf16Pairs> = RefCell::new(Bf16Pairs::default());
}

/// `y = W·x + beta·y` for the `k × n` column-major `x` and the `m × n` column-major `y`
/// (`k`, `m` the packing's), `x` rounded to bf16 into this thread's buffer. With `reverse` the
/// strips are read last to first (the same bits).
pub(crate) fn gemm<T: Scalar>(w: &PackedBf16, x: &[T], beta: T, y: &mut [T], reverse: bool) {
    let (k, n) = (w.cols(), y.len() / w.rows().max(1));
    PAIRS.with_borrow_mut(|pairs| {
        pairs.set(f32s(x), k, n);
        w.gemm(1.0, pairs, beta.to_f64() as f32, f32s_mut(y), reverse);
    });
}

/// [`gemm`] with `beta = 0` over many columns (an input projection), the columns split between
/// the threads as the time loops split a batch ([`for_each_batch_part`](super::ops::for_each_batch_part);
/// the same bits for any split).
pub(crate) fn gemm_split<T: Scalar>(w: &PackedBf16, x: &[T], y: &mut Mat<T>) {
    let (k, n) = (w.cols(), y.ncols());
    let ys = super::ops::SharedCols::new(y);
    super::ops::for_each_batch_part(n, w.rows() * k, |cols| {
        // SAFETY: each part writes its own columns of y, which outlives the call.
        let yp = unsafe { ys.slice_mut(cols.start, cols.len()) };
        gemm(w, &x[cols.start * k..cols.end * k], T::ZERO, yp, false);
    });
}

/// The input projection in bf16: `out = bf16(W_ih)·bf16(X)` for a dense input, the gather of
/// `W_ih`'s `f32` columns for an index input.
pub(crate) fn project_input<T: Scalar>(
    w_ih: &Mat<T>,
    packed: &mut Bf16Weight,
    frozen: bool,
    x: SeqInput<'_, T>,
    out: &mut Mat<T>,
) {
    match x {
        SeqInput::Dense(xm) => {
            let w = packed.refresh(w_ih, frozen);
            gemm_split(w, xm.as_slice(), out);
        }
        SeqInput::Index(_) => super::ops::project_input(w_ih, x, out),
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch1::GENERAL_ONLY;
    use super::super::{Cell, Layer, LayerCache};
    use crate::{GruCell, LstmCell, Recurrence, RecurrentConfig, RecurrentState, RnnCell, SeqInput, Stream};
    use rnn_tensor::init::Init;
    use rnn_tensor::{Bf16, Mat, Precision, Rng};

    /// Thread counts are global: the tests that set them run one at a time.
    static THREADS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Whether the CPU runs bf16 (on one without, `set_precision` must refuse it, and does).
    fn bf16_here() -> bool {
        let layer = RecurrentConfig::<LstmCell>::new(2, 3).build::<f32>(&mut Rng::seed_from(1)).unwrap();
        let ok = layer.set_precision(&mut LayerCache::default(), Precision::Bf16);
        assert_eq!(ok.is_ok(), rnn_tensor::bf16::available());
        ok.is_ok()
    }

    fn layer<C: Cell<f32> + Default>(cell: C, input: usize, hid: usize, seed: u64) -> Layer<f32, C> {
        RecurrentConfig::<C>::new(input, hid).with_cell(cell).build::<f32>(&mut Rng::seed_from(seed)).unwrap()
    }

    /// The outputs and the final state's parts of a forward in `precision`.
    fn run<C: Cell<f32>>(
        layer: &Layer<f32, C>,
        x: &Mat<f32>,
        batch: usize,
        lengths: Option<&[usize]>,
        h0: &C::State,
        precision: Precision,
    ) -> Vec<Vec<f32>> {
        let mut cache = LayerCache::default();
        layer.set_precision(&mut cache, precision).unwrap();
        let fin = match lengths {
            Some(l) => layer.forward_lengths(SeqInput::Dense(x), batch, l, h0, &mut cache),
            None => layer.forward(SeqInput::Dense(x), batch, h0, &mut cache),
        };
        let mut v = vec![layer.outputs(&cache).as_slice().to_vec()];
        v.extend(fin.parts().iter().map(|m| m.as_slice().to_vec()));
        v
    }

    fn rounded(m: &Mat<f32>) -> Mat<f32> {
        m.map(Bf16::round)
    }

    fn same_bits(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()))
    }

    /// One step is the product of the rounded operands: the bf16 forward from an `h_0` that bf16
    /// holds exactly equals the `f32` forward of the layer with `W_ih`, `W_hh` and `x` rounded to
    /// bf16, up to the order of the `f32` sums (tolerance 2e-6, absolute, on values of order 1),
    /// at batch 1 and 4, for every cell.
    fn one_step<C: Cell<f32> + Default>(cell: C) {
        let (input, hid) = (37, 45);
        let l = layer(cell, input, hid, 3);
        let mut lr = l.clone();
        lr.params.weight_ih = rounded(&l.params.weight_ih);
        lr.params.weight_hh = rounded(&l.params.weight_hh);
        let mut rng = Rng::seed_from(4);
        for batch in [1, 4] {
            let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, batch, &mut rng);
            let zero = l.zero_state(batch);
            let flat: Vec<f64> =
                zero.to_flat().iter().map(|_| Bf16::round(rng.uniform(-1.0, 1.0) as f32) as f64).collect();
            let h0 = zero.with_flat(&flat);
            let got = run(&l, &x, batch, None, &h0, Precision::Bf16);
            let want = run(&lr, &rounded(&x), batch, None, &h0, Precision::Full);
            for (g, w) in got.iter().flatten().zip(want.iter().flatten()) {
                assert!((g - w).abs() <= 2e-6, "{} batch {batch}: {g} vs {w}", C::NAME);
            }
        }
    }

    #[test]
    fn one_step_multiplies_the_rounded_operands() {
        if !bf16_here() {
            return;
        }
        one_step(LstmCell);
        one_step(GruCell);
        one_step(RnnCell::default());
    }

    /// Over 40 steps the bf16 forward stays near the `f32` one: every output within 0.005 of it
    /// (the rounding of `h_{t-1}`, at most 2⁻⁸ relative, is fed through 40 steps of a layer whose
    /// PyTorch initialisation keeps `|W_hh·δ|` below `|δ|`; measured: 0.0009 for the LSTM), and
    /// not equal to it (the rounding happens).
    fn near_f32<C: Cell<f32> + Default>(cell: C) {
        let (input, hid, steps, batch) = (16, 64, 40, 3);
        let l = layer(cell, input, hid, 5);
        let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps * batch, &mut Rng::seed_from(6));
        let h0 = l.zero_state(batch);
        let got = run(&l, &x, batch, None, &h0, Precision::Bf16);
        let want = run(&l, &x, batch, None, &h0, Precision::Full);
        let worst = got[0].iter().zip(&want[0]).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 0.005 && worst > 0.0, "{}: largest difference {worst}", C::NAME);
    }

    #[test]
    fn many_steps_stay_near_f32() {
        if !bf16_here() {
            return;
        }
        near_f32(LstmCell);
        near_f32(GruCell);
        near_f32(RnnCell::default());
    }

    /// The bits do not depend on the route or the threads: batch 1 through the batch-1 loop and
    /// through the general one, batches of 1 and 20 at 1, 2 and 3 threads, and each sample of a
    /// variable-length batch equals that sample run alone (no tolerance).
    fn same_bits_everywhere<C: Cell<f32> + Default>(cell: C) {
        let (input, hid, steps) = (9, 70, 6);
        let l = layer(cell, input, hid, 7);
        let mut rng = Rng::seed_from(8);
        let x1 = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps, &mut rng);
        let h01 = l.zero_state(1);
        rnn_tensor::parallel::set_num_threads(1);
        GENERAL_ONLY.with(|g| g.set(true));
        let general = run(&l, &x1, 1, None, &h01, Precision::Bf16);
        GENERAL_ONLY.with(|g| g.set(false));
        let batch = 20;
        let xb = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps * batch, &mut rng);
        let h0b = l.zero_state(batch);
        let want_b = run(&l, &xb, batch, None, &h0b, Precision::Bf16);
        for threads in [1, 2, 3] {
            rnn_tensor::parallel::set_num_threads(threads);
            assert!(
                same_bits(&run(&l, &x1, 1, None, &h01, Precision::Bf16), &general),
                "{} b1 {threads}",
                C::NAME
            );
            assert!(
                same_bits(&run(&l, &xb, batch, None, &h0b, Precision::Bf16), &want_b),
                "{} b20 {threads}",
                C::NAME
            );
        }
        // Variable lengths: sample b alone, its own steps.
        let lengths: Vec<usize> = (0..batch).map(|b| 1 + (b * 7) % steps).collect();
        let var = run(&l, &xb, batch, Some(&lengths), &h0b, Precision::Bf16);
        for (b, &len) in lengths.iter().enumerate() {
            let xs = Mat::from_fn(input, len, |i, t| xb[(i, t * batch + b)]);
            let alone = run(&l, &xs, 1, None, &h01, Precision::Bf16);
            for t in 0..len {
                let got = &var[0][(t * batch + b) * hid..][..hid];
                assert!(
                    same_bits(&[got.to_vec()], &[alone[0][t * hid..][..hid].to_vec()]),
                    "{} sample {b} step {t}",
                    C::NAME
                );
            }
        }
        rnn_tensor::parallel::set_num_threads(1);
    }

    #[test]
    fn bits_do_not_depend_on_route_or_threads() {
        if !bf16_here() {
            return;
        }
        let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        same_bits_everywhere(LstmCell);
        same_bits_everywhere(GruCell);
        same_bits_everywhere(RnnCell::default());
    }

    /// A bf16 stream fed one step at a time gives the bits of the bf16 forward over the whole
    /// sequence (its packings are kept across calls, frozen).
    #[test]
    fn stream_steps_are_the_sequence() {
        if !bf16_here() {
            return;
        }
        let (input, hid, steps) = (8, 48, 5);
        let l = layer(LstmCell, input, hid, 9);
        let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps, &mut Rng::seed_from(10));
        let want = run(&l, &x, 1, None, &l.zero_state(1), Precision::Bf16);
        let mut stream = Stream::new(l, 1).unwrap();
        stream.set_precision(Precision::Bf16).unwrap();
        for t in 0..steps {
            let xt = x.columns(t, 1).into_owned();
            let out = stream.step(SeqInput::Dense(&xt)).unwrap().as_slice().to_vec();
            assert!(same_bits(&[out], &[want[0][t * hid..][..hid].to_vec()]), "step {t}");
        }
    }

    /// What bf16 does not cover is refused in one line: an f64 model, an LSTM with a projection;
    /// and a backward from a bf16 forward panics with a message naming it.
    #[test]
    fn refusals() {
        let mut rng = Rng::seed_from(11);
        let l64 = RecurrentConfig::<LstmCell>::new(2, 3).build::<f64>(&mut rng).unwrap();
        let e = l64.set_precision(&mut LayerCache::default(), Precision::Bf16).unwrap_err().to_string();
        assert!(e.contains("f32 models only") && !e.contains('\n'), "{e}");
        if !bf16_here() {
            return;
        }
        let proj = RecurrentConfig::<LstmCell>::new(2, 4).with_proj_size(2).build::<f32>(&mut rng).unwrap();
        let e = proj.set_precision(&mut LayerCache::default(), Precision::Bf16).unwrap_err().to_string();
        assert!(e.contains("projections") && !e.contains('\n'), "{e}");
        let l = layer(GruCell, 2, 3, 12);
        let mut cache = LayerCache::default();
        l.set_precision(&mut cache, Precision::Bf16).unwrap();
        let x = Mat::from_element(2, 2, 0.5f32);
        l.forward(SeqInput::Dense(&x), 1, &l.zero_state(1), &mut cache);
        let mut grads = l.params.clone();
        let d_out = Mat::from_element(3, 2, 1.0f32);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            l.backward(SeqInput::Dense(&x), &mut cache, &d_out, &l.zero_state(1), &mut grads, None);
        }));
        let msg = caught.unwrap_err();
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("bf16") && msg.contains("train in f32"), "{msg}");
    }
}
