//! The forward in bf16 ([`Precision::Bf16`](rnn_tensor::Precision::Bf16)): the same loops, with
//! the products through the bf16 kernel of `rnn_tensor::packed::bf16`; and its backward, the
//! `f32` backward of the operands those products saw ([`Rounded`]).
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
//!
//! Where bf16 products are much faster than `f32` ones ([`backward_in_bf16`]: on AMX tiles, or
//! where `vdpbf16ps` issues at the FMA rate, as on AMD's Zen 4), the backward's products run in
//! bf16 too: `W_hhᵀ` and `W_ihᵀ` rounded and packed once per backward, the gate gradients
//! `dA`/`dV` rounded as each product's right operand, and the weight gradients `dA·bf16(X)ᵀ` with
//! `dA` packed rounded ([`BackwardPacks`]); the sums stay `f32`. Elsewhere they run the `f32`
//! kernels on the rounded operands ([`Rounded`]): on Intel's cores without AMX a bf16 product is
//! slower than the `f32` one (0.81-0.88 of it on the step shapes, on a Xeon whose `vdpbf16ps`
//! issues once every two cycles against two FMAs a cycle), and rounding `dA` would only lose
//! accuracy.

use std::cell::RefCell;
use std::ops::Range;

use rnn_tensor::packed::bf16::{Bf16Pairs, PackedBf16};
use rnn_tensor::{Bf16, Mat, Scalar};

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

/// The backward of a bf16 forward multiplies what the forward's products multiplied: `W_ih`,
/// `W_hh`, a dense `x` and the `h_{t-1}` fed to the step products, each rounded to bf16 (held
/// exactly in `f32`, so the backward runs the `f32` kernels). Rounding is taken as the identity
/// (the straight-through rule): `d_x = bf16(W_ih)ᵀ·dA`, `d_h_{t-1} += bf16(W_hh)ᵀ·dV_t`,
/// `dW_ih += dA·bf16(X)ᵀ`, `dW_hh += Σ_t dV_t·bf16(h_{t-1})ᵀ`, the exact gradients of the function
/// the forward computed but for the rounding steps. The cell's own derivatives read the `f32`
/// gates, `c` and `h` the forward kept, as in `f32`.
///
/// These copies are the only values the backward reads in bf16, and they lose nothing: they
/// are bit for bit the operands the forward's products used. The gates, `c` and the gradients
/// stay `f32`; rounding them would add an error of up to 2⁻⁸ to every derivative.
#[derive(Debug, Default)]
pub(crate) struct Rounded<T: Scalar> {
    pub(crate) w_ih: Mat<T>,
    pub(crate) w_hh: Mat<T>,
    pub(crate) x: Mat<T>,
    pub(crate) h0: Mat<T>,
    pub(crate) h: Mat<T>,
}

/// `dst = src` rounded to bf16 (and widened back to `f32`, exactly), `dst` reshaped to `src`'s
/// shape.
pub(crate) fn round_into<T: Scalar>(src: &Mat<T>, dst: &mut Mat<T>) {
    super::ops::ensure_shape(dst, src.nrows(), src.ncols());
    for (d, &s) in f32s_mut(dst.as_mut_slice()).iter_mut().zip(f32s(src.as_slice())) {
        *d = Bf16::round(s);
    }
}

/// A dense `x` rounded into `dst` (an index input has no product to round: itself).
pub(crate) fn round_input<'a, T: Scalar>(x: SeqInput<'a, T>, dst: &'a mut Mat<T>) -> SeqInput<'a, T> {
    match x {
        SeqInput::Dense(xm) => {
            round_into(xm, dst);
            SeqInput::Dense(dst)
        }
        SeqInput::Index(_) => x,
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
    let k = w.cols();
    split_columns(w, 0.0, y, |pairs, cols| pairs.set(f32s(&x[cols.start * k..cols.end * k]), k, cols.len()));
}

/// `Y = W·X + beta·Y` over `Y`'s columns split between the threads as [`gemm_split`] splits
/// them, each part rounding its columns of `X` into this thread's buffer with `round_x`.
fn split_columns<T: Scalar>(
    w: &PackedBf16,
    beta: f32,
    y: &mut Mat<T>,
    round_x: impl Fn(&mut Bf16Pairs, Range<usize>) + Sync,
) {
    let n = y.ncols();
    let ys = super::ops::SharedCols::new(y);
    super::ops::for_each_batch_part(n, w.rows() * w.cols(), |cols| {
        // SAFETY: each part writes its own columns of y, which outlives the call.
        let yp = unsafe { ys.slice_mut(cols.start, cols.len()) };
        PAIRS.with_borrow_mut(|pairs| {
            round_x(pairs, cols);
            w.gemm(1.0, pairs, beta, f32s_mut(yp), false);
        });
    });
}

/// Whether a bf16 forward's backward runs its products in bf16 too: where bf16 products are
/// much faster than `f32` ones (`rnn_tensor::packed::bf16::products_pay`: on AMX tiles, many
/// times; with `vdpbf16ps` at the FMA rate, as on AMD's Zen 4, about twice). There the gate
/// gradients `dA`/`dV` are rounded to bf16 as each product's right operand (as PyTorch's
/// autocast does), adding a relative error of up to 2⁻⁸ to each product's operand; elsewhere
/// the backward's products stay `f32` on the rounded operands ([`Rounded`]). Decided from the
/// CPU's identity, never timed, so that a machine always gives the same bits.
pub(crate) fn backward_in_bf16() -> bool {
    #[cfg(test)]
    if F32_BACKWARD.with(|f| f.get()) {
        return false;
    }
    rnn_tensor::packed::bf16::products_pay()
}

#[cfg(test)]
thread_local! {
    /// Test hook: when set, [`backward_in_bf16`] is false, so that a CPU where bf16 products pay
    /// tests the `f32` backward of the rounded operands too.
    pub(crate) static F32_BACKWARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The packings of a backward in bf16 ([`backward_in_bf16`]): `W_hhᵀ` and (for `d_x`) `W_ihᵀ`
/// rounded, and the left operand of a weight-gradient product; each grown and never shrunk (so
/// that a backward allocates nothing once warm).
#[derive(Debug, Default)]
pub(crate) struct BackwardPacks<T: Scalar> {
    pub(crate) w_hh_t: PackedBf16,
    w_ih_t: PackedBf16,
    d: PackedBf16,
    /// The element type of the matrices packed.
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: Scalar> BackwardPacks<T> {
    /// Packs `W_hhᵀ` rounded to bf16.
    pub(crate) fn pack_w_hh_t(&mut self, w_hh: &Mat<T>) {
        pack_transposed(w_hh, &mut self.w_hh_t);
    }

    /// Packs `D[:, cols]` rounded to bf16 as the left operand of [`BackwardPacks::weight_grad`].
    pub(crate) fn pack_d(&mut self, d: &Mat<T>, cols: Range<usize>) {
        let g = d.nrows();
        self.d.pack(f32s(&d.as_slice()[cols.start * g..cols.end * g]), g, cols.len(), g, |i| i);
    }

    /// `dw += D_p · Xᵀ` in bf16, `D_p` the `kn` columns [`BackwardPacks::pack_d`] packed last and
    /// `X` the columns of `parts` side by side (`kn` in all; `(Some(x), c)`: `x` is `r × c`
    /// column-major, `(None, c)`: `c` columns of zeros; at most two parts), `dw` `D.nrows() × r`.
    /// `X`'s rows are rounded into pairs as the right operand's columns (no transposed copy),
    /// the columns of `dw` split between the threads, each part pairing its own rows.
    pub(crate) fn weight_grad(&self, parts: &[(Option<&[T]>, usize)], dw: &mut Mat<T>) {
        let (g, r) = dw.shape();
        let kn = self.d.cols();
        assert!(
            self.d.rows() == g && parts.len() <= 2 && parts.iter().map(|p| p.1).sum::<usize>() == kn,
            "bf16 weight gradient: {} parts for {g} x {kn}",
            parts.len()
        );
        if kn == 0 || g == 0 || r == 0 {
            return;
        }
        let mut xs: [(Option<&[f32]>, usize); 2] = [(None, 0); 2];
        for (x, &(p, c)) in xs.iter_mut().zip(parts) {
            *x = (p.map(f32s), c);
        }
        let xs = &xs[..parts.len()];
        split_columns(&self.d, 1.0, dw, |pairs, part| pairs.set_rows_parts(xs, r, part));
    }

    /// `d_x = W_ihᵀ·D` in bf16 over all of `D`'s columns (`W_ihᵀ` packed rounded here).
    pub(crate) fn input_grad(&mut self, w_ih: &Mat<T>, d: &Mat<T>, dx: &mut Mat<T>) {
        pack_transposed(w_ih, &mut self.w_ih_t);
        super::ops::ensure_shape(dx, self.w_ih_t.rows(), d.ncols());
        gemm_split(&self.w_ih_t, d.as_slice(), dx);
    }
}

/// `wᵀ` rounded to bf16 and packed into `out` (no transposed copy).
fn pack_transposed<T: Scalar>(w: &Mat<T>, out: &mut PackedBf16) {
    let (k, rows) = w.shape();
    out.pack_transposed(f32s(w.as_slice()), k, rows);
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

    /// A bf16 stream fed one step at a time, or chunks of 2 and 3 steps, gives the bits of the
    /// bf16 forward over the whole sequence (its packings are kept across calls, frozen; each
    /// part of a split step projects its own rows of the input), at 1, 2 and 3 threads.
    #[test]
    fn stream_steps_are_the_sequence() {
        if !bf16_here() {
            return;
        }
        let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        let (input, hid, steps) = (8, 48, 5);
        let l = layer(LstmCell, input, hid, 9);
        let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps, &mut Rng::seed_from(10));
        rnn_tensor::parallel::set_num_threads(1);
        let want = run(&l, &x, 1, None, &l.zero_state(1), Precision::Bf16);
        for threads in [1, 2, 3] {
            rnn_tensor::parallel::set_num_threads(threads);
            for chunks in [&[1usize, 1, 1, 1, 1][..], &[2, 3]] {
                let mut stream = Stream::new(l.clone(), 1).unwrap();
                stream.set_precision(Precision::Bf16).unwrap();
                let mut t0 = 0;
                for &n in chunks {
                    let xt = x.columns(t0, n).into_owned();
                    let out = stream.step(SeqInput::Dense(&xt)).unwrap().as_slice().to_vec();
                    let w = want[0][t0 * hid..(t0 + n) * hid].to_vec();
                    assert!(same_bits(&[out], &[w]), "steps {t0}.. of chunks {chunks:?}, {threads} threads");
                    t0 += n;
                }
            }
        }
        rnn_tensor::parallel::set_num_threads(1);
    }

    /// The gradients of a bf16 forward: parameter gradients (named), `d_x` and `d_h0`, from
    /// `d_out` and a zero `d_final`, with or without lengths.
    fn grads<C: Cell<f32>>(
        layer: &Layer<f32, C>,
        x: &Mat<f32>,
        batch: usize,
        lengths: Option<&[usize]>,
        h0: &C::State,
        d_out: &Mat<f32>,
        precision: Precision,
    ) -> Vec<Vec<f32>> {
        use rnn_tensor::Parameters;
        let mut cache = LayerCache::default();
        layer.set_precision(&mut cache, precision).unwrap();
        match lengths {
            Some(l) => layer.forward_lengths(SeqInput::Dense(x), batch, l, h0, &mut cache),
            None => layer.forward(SeqInput::Dense(x), batch, h0, &mut cache),
        };
        let mut g = layer.zero_grads();
        let mut d_x = Mat::zeros(0, 0);
        let d_final = layer.zero_state(batch);
        let d_h0 = layer.backward(SeqInput::Dense(x), &mut cache, d_out, &d_final, &mut g, Some(&mut d_x));
        let mut v: Vec<Vec<f32>> = g.named_params().iter().map(|(_, m)| m.as_slice().to_vec()).collect();
        v.push(d_x.as_slice().to_vec());
        v.extend(d_h0.parts().iter().map(|m| m.as_slice().to_vec()));
        v
    }

    /// One step's backward is the `f32` backward of the rounded operands: from an `h_0` that
    /// bf16 holds exactly, the bf16 layer's gradients (weights, biases, `d_x`, `d_h0`) equal the
    /// `f32` layer's with `W_ih`, `W_hh` and `x` rounded, up to the order of the forward's `f32`
    /// sums (tolerance 2e-5 absolute on values of order 1; a backward through the unrounded
    /// weights is off by about 1e-3), at batch 1 and 4, with and without lengths, for every cell.
    /// Where the backward's products run in bf16 ([`super::backward_in_bf16`]), they also round
    /// the gate gradients: then each gradient but the biases is within u = 2⁻⁸ of the `f32`
    /// one, norm-wise (measured up to 0.0024).
    fn one_step_backward<C: Cell<f32> + Default>(cell: C) {
        let (input, hid) = (29, 40);
        let l = layer(cell, input, hid, 13);
        let mut lr = l.clone();
        lr.params.weight_ih = rounded(&l.params.weight_ih);
        lr.params.weight_hh = rounded(&l.params.weight_hh);
        let mut rng = Rng::seed_from(14);
        for batch in [1, 4] {
            let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, batch, &mut rng);
            let d_out = Init::Normal { mean: 0.0, std: 1.0 }.matrix(hid, batch, &mut rng);
            let zero = l.zero_state(batch);
            let flat: Vec<f64> =
                zero.to_flat().iter().map(|_| Bf16::round(rng.uniform(-1.0, 1.0) as f32) as f64).collect();
            let h0 = zero.with_flat(&flat);
            let ones = vec![1; batch];
            for lens in [None, Some(&ones[..])] {
                let got = grads(&l, &x, batch, lens, &h0, &d_out, Precision::Bf16);
                let want = grads(&lr, &rounded(&x), batch, lens, &h0, &d_out, Precision::Full);
                // Where the backward's products run in bf16, the gate gradients are rounded
                // too: norm-wise within u = 2⁻⁸ (the biases, sums of the f32 gate gradients,
                // within 2e-5 as before).
                let rounded_da = super::backward_in_bf16();
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(g.len(), w.len());
                    let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
                    let e = relative(&got[k..=k], std::slice::from_ref(&w64));
                    let bias = k == 2 || k == 3;
                    if rounded_da && !bias {
                        assert!(e <= 1.0 / 256.0, "{} batch {batch} gradient {k}: {e}", C::NAME);
                        continue;
                    }
                    for (g, w) in g.iter().zip(w) {
                        assert!(
                            (g - w).abs() <= 2e-5,
                            "{} batch {batch} lengths {lens:?} gradient {k}: {g} vs {w}",
                            C::NAME
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn one_step_backward_is_the_rounded_f32_backward() {
        if !bf16_here() {
            return;
        }
        both_backwards(|| {
            one_step_backward(LstmCell);
            one_step_backward(GruCell);
            one_step_backward(RnnCell::default());
        });
    }

    /// Runs `check` with each backward: in bf16 where bf16 products pay, and the `f32` one of the
    /// rounded operands (through the test hook; the only one elsewhere).
    fn both_backwards(check: impl Fn()) {
        for f32_backward in [false, true] {
            super::F32_BACKWARD.with(|f| f.set(f32_backward));
            check();
        }
        super::F32_BACKWARD.with(|f| f.set(false));
    }

    /// `‖a - b‖ / ‖b‖` over the values of every part.
    fn relative(a: &[Vec<f32>], b: &[Vec<f64>]) -> f64 {
        let (mut d, mut n) = (0.0, 0.0);
        for (a, b) in a.iter().flatten().zip(b.iter().flatten()) {
            d += (*a as f64 - b) * (*a as f64 - b);
            n += b * b;
        }
        (d / n).sqrt()
    }

    /// Against `f64`: over 12 steps, batch 3 or 4, from a non-zero `h_0`, in either direction of
    /// time, each gradient of the bf16
    /// layer (every parameter, `d_x`, `d_h0`) is within 4u = 2⁻⁶ (norm-wise, relative) of the
    /// `f64` layer's with the same weights, u = 2⁻⁸ being bf16's unit roundoff (8 significant
    /// bits): each product's two operands are rounded with a relative error of at most u, and
    /// the gradients are sums of such products through the steps (and, where the backward's
    /// products run in bf16, the gate gradients are rounded as well). Measured on the AMX Xeon,
    /// with the backward's products in bf16: 0.0007 to 0.0037 (with lengths of 2 to 12 steps:
    /// 0.0008 to 0.0035; with the f32 backward of the rounded operands, before AMX was used:
    /// 0.0007 to 0.0033); an `f32` layer: below 2e-7.
    fn near_f64<C: Cell<f32> + Cell<f64> + Default>(cell: C, reverse: bool, batch: usize) {
        use rnn_tensor::Parameters;
        let (input, hid, steps) = (10, 24, 12);
        let mut l = layer(cell, input, hid, 15);
        l.params.reverse = reverse;
        let mut l64 = RecurrentConfig::<C>::new(input, hid)
            .with_cell(cell)
            .with_reverse(reverse)
            .build::<f64>(&mut Rng::seed_from(15))
            .unwrap();
        for ((_, d), (_, s)) in l64.params.named_params_mut().into_iter().zip(l.params.named_params()) {
            *d = s.map(|v| v as f64);
        }
        let mut rng = Rng::seed_from(16);
        let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps * batch, &mut rng);
        let d_out = Init::Normal { mean: 0.0, std: 1.0 }.matrix(hid, steps * batch, &mut rng);
        let zero = l.zero_state(batch);
        let flat: Vec<f64> = zero.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect();
        let h0 = zero.with_flat(&flat);
        let h0_64 = l64.zero_state(batch).with_flat(&h0.to_flat());
        let lengths: Vec<usize> = (0..batch).map(|b| steps - 5 * b % 11).collect();
        for lens in [None, Some(&lengths[..])] {
            let mut cache = LayerCache::default();
            let x64 = x.map(|v| v as f64);
            match lens {
                Some(ls) => l64.forward_lengths(SeqInput::Dense(&x64), batch, ls, &h0_64, &mut cache),
                None => l64.forward(SeqInput::Dense(&x64), batch, &h0_64, &mut cache),
            };
            let mut g = l64.zero_grads();
            let mut d_x = Mat::zeros(0, 0);
            let d_h0 = l64.backward(
                SeqInput::Dense(&x64),
                &mut cache,
                &d_out.map(|v| v as f64),
                &l64.zero_state(batch),
                &mut g,
                Some(&mut d_x),
            );
            let mut want: Vec<Vec<f64>> =
                g.named_params().iter().map(|(_, m)| m.as_slice().to_vec()).collect();
            want.push(d_x.as_slice().to_vec());
            want.extend(d_h0.parts().iter().map(|m| m.as_slice().to_vec()));
            let got = grads(&l, &x, batch, lens, &h0, &d_out, Precision::Bf16);
            let full = grads(&l, &x, batch, lens, &h0, &d_out, Precision::Full);
            for k in 0..want.len() {
                let (e, e32) = (relative(&got[k..=k], &want[k..=k]), relative(&full[k..=k], &want[k..=k]));
                assert!(
                    e <= 1.0 / 64.0 && e > 0.0,
                    "{} lengths {lens:?} gradient {k}: {e}",
                    <C as Cell<f32>>::NAME
                );
                assert!(e32 < 1e-5, "{} lengths {lens:?} gradient {k} in f32: {e32}", <C as Cell<f32>>::NAME);
            }
        }
    }

    #[test]
    fn gradients_are_within_bf16_bounds_of_f64() {
        if !bf16_here() {
            return;
        }
        both_backwards(|| {
            for (reverse, batch) in [(false, 3), (true, 3), (false, 4), (true, 4)] {
                near_f64(LstmCell, reverse, batch);
                near_f64(GruCell, reverse, batch);
                near_f64(RnnCell::default(), reverse, batch);
            }
        });
    }

    /// The backward's bits do not depend on the threads (1, 2, 3), with and without lengths,
    /// batch 20 (tolerance: none).
    #[test]
    fn backward_bits_do_not_depend_on_threads() {
        if !bf16_here() {
            return;
        }
        let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        let (input, hid, steps, batch) = (9, 70, 6, 20);
        let l = layer(GruCell, input, hid, 17);
        let l2 = layer(LstmCell, input, hid, 18);
        let mut rng = Rng::seed_from(19);
        let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps * batch, &mut rng);
        let d_out = Init::Normal { mean: 0.0, std: 1.0 }.matrix(hid, steps * batch, &mut rng);
        let lengths: Vec<usize> = (0..batch).map(|b| 1 + (b * 7) % steps).collect();
        for lens in [None, Some(&lengths[..])] {
            rnn_tensor::parallel::set_num_threads(1);
            let want = grads(&l, &x, batch, lens, &l.zero_state(batch), &d_out, Precision::Bf16);
            let want2 = grads(&l2, &x, batch, lens, &l2.zero_state(batch), &d_out, Precision::Bf16);
            for threads in [2, 3] {
                rnn_tensor::parallel::set_num_threads(threads);
                let got = grads(&l, &x, batch, lens, &l.zero_state(batch), &d_out, Precision::Bf16);
                let got2 = grads(&l2, &x, batch, lens, &l2.zero_state(batch), &d_out, Precision::Bf16);
                assert!(same_bits(&got, &want), "gru {threads} threads, lengths {}", lens.is_some());
                assert!(same_bits(&got2, &want2), "lstm {threads} threads, lengths {}", lens.is_some());
            }
        }
        rnn_tensor::parallel::set_num_threads(1);
    }

    /// What bf16 does not cover is refused in one line: an f64 model, an LSTM with a projection.
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
    }
}
