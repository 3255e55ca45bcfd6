//! A bidirectional layer, as `bidirectional=True` in `torch.nn.LSTM`, `GRU` and `RNN`: two layers
//! of the same cell read the same input, one from the first step to the last, the other (whose
//! tensors are named `..._reverse`) from the last to the first, and the output of step `t` is both
//! directions' outputs at `t` stacked, forward first:
//!
//! ```text
//! y_t = [h→_t ; h←_t]          (2H × B)
//! h→_t = cell(x_t, h→_{t-1}),  h←_t = cell(x_t, h←_{t+1})
//! ```
//!
//! Backward splits the output gradient into its two halves, runs each direction's backward and
//! adds their input gradients. The two directions are independent: with two threads they run
//! side by side, each on one thread (and with the same bits as one after the other, since each
//! direction's values do not depend on how its loop is split). The state is the two directions'
//! states, forward first, so a stack of bidirectional layers has PyTorch's `h_n` order: layer
//! by layer, direction by direction.

use std::ops::Range;
use std::sync::Mutex;

use rnn_tensor::parallel::{for_each_part, for_each_piece, num_threads, split_range};
use rnn_tensor::{Mat, Parameters, Scalar};

use crate::engine::ops::ensure_shape;
use crate::recurrence::BackwardKind;
use crate::{CellError, Recurrence, SeqInput};

/// The two directions of a [`Bidirectional`] layer (and, as the same type, their gradients).
#[derive(Clone, Debug, PartialEq)]
pub struct BidirectionalParams<C> {
    /// The direction that runs forward in time.
    pub forward: C,
    /// The direction that runs backward in time (its tensors are named `..._reverse`).
    pub reverse: C,
}

impl<T: Scalar, C: Recurrence<T>> Parameters<T> for BidirectionalParams<C> {
    fn named_params(&self) -> Vec<(String, &Mat<T>)> {
        let mut v = self.forward.params().named_params();
        v.extend(self.reverse.params().named_params());
        v
    }
    fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<T>)> {
        let mut v = self.forward.params_mut().named_params_mut();
        v.extend(self.reverse.params_mut().named_params_mut());
        v
    }
}

/// Two layers over the same input, one in each direction of time; outputs `2H` features per step.
#[derive(Clone, Debug, PartialEq)]
pub struct Bidirectional<C> {
    params: BidirectionalParams<C>,
}

/// What a [`Bidirectional`] layer's forward keeps for backward, and backward's buffers.
pub struct BidirectionalCache<T: Scalar, C: Recurrence<T>> {
    caches: [C::Cache; 2],
    /// `[h→; h←]` per column, `2H × T·B`.
    out: Mat<T>,
    /// Each direction's output gradient, `H × T·B`, and the reverse direction's input gradient.
    d_out: [Mat<T>; 2],
    d_x_reverse: Mat<T>,
}

impl<T: Scalar, C: Recurrence<T>> Default for BidirectionalCache<T, C> {
    fn default() -> Self {
        let e = || Mat::zeros(0, 0);
        Self {
            caches: [C::Cache::default(), C::Cache::default()],
            out: e(),
            d_out: [e(), e()],
            d_x_reverse: e(),
        }
    }
}

impl<C> Bidirectional<C> {
    /// A bidirectional layer of two directions: `reverse` must run backwards in time (build it
    /// with the config's `.with_reverse(true)`), and both must read the same input and have the
    /// same hidden size.
    pub fn new<T: Scalar>(forward: C, reverse: C) -> Result<Self, CellError>
    where
        C: Recurrence<T>,
    {
        if forward.input_size() != reverse.input_size() || forward.hidden_size() != reverse.hidden_size() {
            return Err(CellError::InvalidConfig(format!(
                "the two directions of a bidirectional layer must have the same sizes, got {} -> {} forward and {} -> {} reverse",
                forward.input_size(),
                forward.hidden_size(),
                reverse.input_size(),
                reverse.hidden_size()
            )));
        }
        let names = |c: &C| c.params().named_params().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        let (f, r) = (names(&forward), names(&reverse));
        if let Some(n) =
            f.iter().find(|n| n.ends_with("_reverse")).or_else(|| r.iter().find(|n| !n.ends_with("_reverse")))
        {
            return Err(CellError::InvalidConfig(format!(
                "{n} is in the wrong direction of a bidirectional layer; build the reverse direction with .with_reverse(true) and the forward one without"
            )));
        }
        Ok(Self { params: BidirectionalParams { forward, reverse } })
    }

    /// The two directions.
    pub fn directions(&self) -> &BidirectionalParams<C> {
        &self.params
    }

    /// All-zero gradients shaped like the parameters.
    pub fn zero_grads<T: Scalar>(&self) -> BidirectionalParams<C>
    where
        C: Recurrence<T> + Clone,
    {
        let mut g = self.params.clone();
        g.zero();
        g
    }
}

/// Runs `f(0)` and `f(1)` (the forward and reverse directions), side by side when the library has
/// two threads or more; each runs whole on one thread.
fn both<R: Send>(f: impl Fn(usize) -> R + Sync) -> [R; 2] {
    let out: [Mutex<Option<R>>; 2] = [Mutex::new(None), Mutex::new(None)];
    for_each_part(2, |part| {
        for d in part.range(2, 1) {
            let r = f(d);
            *out[d].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        }
    });
    out.map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).expect("both directions ran"))
}

/// Values from which the copies between the directions' matrices and the stacked ones (and the
/// sum of the input gradients) are split between the threads by columns: each is a pass over a
/// few MB that one core would make alone while the other waits.
const SPLIT_VALUES: usize = 1 << 16;

/// The columns of an `n`-column pass over `values` values, in contiguous pieces: `parts` (the
/// thread count) when there is enough work, else one.
fn column_pieces(n: usize, values: usize, parts: usize) -> Vec<Range<usize>> {
    let pieces = parts.min(values / SPLIT_VALUES).clamp(1, n.max(1));
    (0..pieces).map(|i| split_range(n, i, pieces, 1)).collect()
}

/// `v` (`rows` values per column) cut at the columns of `pieces`.
fn cut<'a, T>(mut v: &'a mut [T], rows: usize, pieces: &[Range<usize>]) -> Vec<&'a mut [T]> {
    pieces
        .iter()
        .map(|c| {
            let (head, rest) = std::mem::take(&mut v).split_at_mut(c.len() * rows);
            v = rest;
            head
        })
        .collect()
}

/// `[a; b]` stacked per column: column `k` of `out` is column `k` of `a` then of `b` (split by
/// columns into up to `parts` pieces, run by the threads).
fn stack_rows<T: Scalar>(a: &Mat<T>, b: &Mat<T>, out: &mut Mat<T>, parts: usize) {
    let (h, n) = a.shape();
    ensure_shape(out, 2 * h, n);
    let pieces = column_pieces(n, 2 * h * n, parts);
    let work: Vec<_> = cut(out.as_mut_slice(), 2 * h, &pieces).into_iter().zip(&pieces).collect();
    for_each_piece(work, |(o, cols)| {
        let (x, y) =
            (&a.as_slice()[cols.start * h..cols.end * h], &b.as_slice()[cols.start * h..cols.end * h]);
        for ((o, x), y) in o.chunks_exact_mut(2 * h).zip(x.chunks_exact(h)).zip(y.chunks_exact(h)) {
            o[..h].copy_from_slice(x);
            o[h..].copy_from_slice(y);
        }
    });
}

/// The inverse of [`stack_rows`].
fn split_rows<T: Scalar>(m: &Mat<T>, a: &mut Mat<T>, b: &mut Mat<T>, parts: usize) {
    let (h2, n) = m.shape();
    let h = h2 / 2;
    ensure_shape(a, h, n);
    ensure_shape(b, h, n);
    let pieces = column_pieces(n, h2 * n, parts);
    let (xs, ys) = (cut(a.as_mut_slice(), h, &pieces), cut(b.as_mut_slice(), h, &pieces));
    let work: Vec<_> = xs.into_iter().zip(ys).zip(&pieces).collect();
    for_each_piece(work, |((x, y), cols)| {
        let o = &m.as_slice()[cols.start * h2..cols.end * h2];
        for ((o, x), y) in o.chunks_exact(h2).zip(x.chunks_exact_mut(h)).zip(y.chunks_exact_mut(h)) {
            x.copy_from_slice(&o[..h]);
            y.copy_from_slice(&o[h..]);
        }
    });
}

/// `acc += other`, elementwise (split as [`stack_rows`]).
fn add_into<T: Scalar>(acc: &mut Mat<T>, other: &Mat<T>, parts: usize) {
    assert_eq!(acc.shape(), other.shape(), "bidirectional: the two input gradients differ in shape");
    let (rows, n) = acc.shape();
    let pieces = column_pieces(n, rows * n, parts);
    let work: Vec<_> = cut(acc.as_mut_slice(), rows, &pieces).into_iter().zip(&pieces).collect();
    for_each_piece(work, |(acc, cols)| {
        for (x, &y) in acc.iter_mut().zip(&other.as_slice()[cols.start * rows..cols.end * rows]) {
            *x += y;
        }
    });
}

impl<T, C> Recurrence<T> for Bidirectional<C>
where
    T: Scalar,
    C: Recurrence<T> + Clone + std::fmt::Debug + Sync,
    C::Cache: Send,
    C::Params: Send,
{
    /// The forward direction's state, then the reverse direction's.
    type State = Vec<C::State>;
    type Params = BidirectionalParams<C>;
    type Cache = BidirectionalCache<T, C>;

    fn input_size(&self) -> usize {
        self.params.forward.input_size()
    }
    /// `2H`: the size of each step's output (both directions).
    fn hidden_size(&self) -> usize {
        2 * self.params.forward.hidden_size()
    }
    fn params(&self) -> &BidirectionalParams<C> {
        &self.params
    }
    fn params_mut(&mut self) -> &mut BidirectionalParams<C> {
        &mut self.params
    }
    fn zero_state(&self, batch: usize) -> Vec<C::State> {
        vec![self.params.forward.zero_state(batch), self.params.reverse.zero_state(batch)]
    }
    /// The forward direction's `h` (`H × B`): the state a step-by-step reader would carry (the
    /// reverse direction's final state belongs to the first step).
    fn state_output(state: &Vec<C::State>) -> &Mat<T> {
        C::state_output(&state[0])
    }

    fn check_input(&self, x: SeqInput<'_, T>, batch: usize, h0: &Vec<C::State>) -> Result<(), CellError> {
        if h0.len() != 2 {
            return Err(CellError::InvalidInput(format!(
                "a bidirectional layer's state has 2 entries (forward, reverse), got {}; start from zero_state(batch)",
                h0.len()
            )));
        }
        self.params.forward.check_input(x, batch, &h0[0])?;
        self.params.reverse.check_input(x, batch, &h0[1])
    }

    /// Both directions over the one step (a sequence of length 1).
    fn step(&self, x: SeqInput<'_, T>, state: &mut Vec<C::State>) {
        let batch = C::state_output(&state[0]).ncols();
        *state = self.forward(x, batch, state, &mut BidirectionalCache::default());
    }

    fn forward(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &Vec<C::State>,
        cache: &mut Self::Cache,
    ) -> Vec<C::State> {
        self.forward_both(x, batch, None, h0, cache)
    }

    fn forward_lengths(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        lengths: &[usize],
        h0: &Vec<C::State>,
        cache: &mut Self::Cache,
    ) -> Vec<C::State> {
        self.forward_both(x, batch, Some(lengths), h0, cache)
    }

    fn outputs<'c>(&self, cache: &'c Self::Cache) -> &'c Mat<T> {
        &cache.out
    }

    fn backward(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Vec<C::State>,
        grads: &mut BidirectionalParams<C>,
        d_x: Option<&mut Mat<T>>,
    ) -> Vec<C::State> {
        self.backward_both(x, cache, d_out, d_final, grads, d_x, BackwardKind::WithInit)
            .expect("the initial-state gradient was asked for")
    }

    fn backward_detached(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Vec<C::State>,
        grads: &mut BidirectionalParams<C>,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_both(x, cache, d_out, d_final, grads, d_x, BackwardKind::Detached);
    }

    fn backward_detached_overwrite(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Vec<C::State>,
        grads: &mut BidirectionalParams<C>,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_both(x, cache, d_out, d_final, grads, d_x, BackwardKind::Overwrite);
    }

    fn freeze_weights(&self, cache: &mut Self::Cache) {
        let [f, r] = &mut cache.caches;
        self.params.forward.freeze_weights(f);
        self.params.reverse.freeze_weights(r);
    }

    fn set_precision(
        &self,
        cache: &mut Self::Cache,
        precision: rnn_tensor::Precision,
    ) -> Result<(), CellError> {
        let [f, r] = &mut cache.caches;
        self.params.forward.set_precision(&mut Default::default(), precision)?;
        self.params.forward.set_precision(f, precision)?;
        self.params.reverse.set_precision(r, precision)
    }
}

impl<C> Bidirectional<C> {
    /// Both directions' forward, side by side, with or without per-sample lengths.
    fn forward_both<T>(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        lengths: Option<&[usize]>,
        h0: &Vec<C::State>,
        cache: &mut BidirectionalCache<T, C>,
    ) -> Vec<C::State>
    where
        T: Scalar,
        C: Recurrence<T> + Clone + std::fmt::Debug + Sync,
        C::Cache: Send,
        C::Params: Send,
    {
        if let Err(e) = self.check_input(x, batch, h0) {
            panic!("bidirectional forward: {e}");
        }
        let dirs = [&self.params.forward, &self.params.reverse];
        let caches: [Mutex<&mut C::Cache>; 2] = {
            let [a, b] = &mut cache.caches;
            [Mutex::new(a), Mutex::new(b)]
        };
        let finals = both(|d| {
            let mut c = caches[d].lock().unwrap_or_else(|e| e.into_inner());
            match lengths {
                Some(l) => dirs[d].forward_lengths(x, batch, l, &h0[d], &mut c),
                None => dirs[d].forward(x, batch, &h0[d], &mut c),
            }
        });
        let [f, r] = &cache.caches;
        stack_rows(dirs[0].outputs(f), dirs[1].outputs(r), &mut cache.out, num_threads());
        finals.into()
    }

    /// Both directions' backward, each the backward `kind` names.
    #[allow(clippy::too_many_arguments)]
    fn backward_both<T>(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut BidirectionalCache<T, C>,
        d_out: &Mat<T>,
        d_final: &[C::State],
        grads: &mut BidirectionalParams<C>,
        d_x: Option<&mut Mat<T>>,
        kind: BackwardKind,
    ) -> Option<Vec<C::State>>
    where
        T: Scalar,
        C: Recurrence<T> + Sync,
        C::Cache: Send,
        C::Params: Send,
    {
        assert!(
            d_final.len() == 2 && d_out.nrows() == 2 * self.params.forward.hidden_size(),
            "bidirectional backward: d_out has {} rows and d_final {} entries, expected {} and 2",
            d_out.nrows(),
            d_final.len(),
            2 * self.params.forward.hidden_size()
        );
        let BidirectionalCache { caches, d_out: halves, d_x_reverse, .. } = cache;
        let [h_f, h_b] = halves;
        split_rows(d_out, h_f, h_b, num_threads());
        let mut d_x = d_x.filter(|_| matches!(x, SeqInput::Dense(_)));
        let want_dx = d_x.is_some();
        let dirs = [&self.params.forward, &self.params.reverse];
        let [c_f, c_b] = caches;
        let BidirectionalParams { forward: g_f, reverse: g_b } = grads;
        let jobs = [
            Mutex::new((c_f, g_f.params_mut(), d_x.as_deref_mut(), &*h_f)),
            Mutex::new((c_b, g_b.params_mut(), want_dx.then_some(&mut *d_x_reverse), &*h_b)),
        ];
        let d0 = both(|d| {
            let mut job = jobs[d].lock().unwrap_or_else(|e| e.into_inner());
            let (c, g, dx, dy) = &mut *job;
            let dx = dx.as_deref_mut();
            kind.run(dirs[d], x, c, dy, &d_final[d], g, dx)
        });
        if let Some(dx) = d_x {
            // d_x = d_x→ + d_x←
            add_into(dx, d_x_reverse, num_threads());
        }
        let [a, b] = d0;
        (kind == BackwardKind::WithInit)
            .then(|| vec![a.expect("forward ran backward"), b.expect("reverse ran backward")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnn_tensor::Rng;

    /// The copies between the directions' matrices and the stacked one, and the sum of the input
    /// gradients, split into 1, 2 and 3 pieces of columns, against plain loops: the same values
    /// (tolerance: none) on 40 units × 5000 columns (enough values for three pieces).
    #[test]
    fn split_copies_and_sum_match_plain_loops() {
        let mut rng = Rng::seed_from(4);
        let (h, n) = (40, 5000);
        let a = Mat::<f32>::from_fn(h, n, |_, _| rng.uniform(-1.0, 1.0) as f32);
        let b = Mat::<f32>::from_fn(h, n, |_, _| rng.uniform(-1.0, 1.0) as f32);
        let stacked = Mat::from_fn(2 * h, n, |i, k| if i < h { a[(i, k)] } else { b[(i - h, k)] });
        for parts in [1, 2, 3] {
            assert_eq!(column_pieces(n, h * n, parts).len(), parts);
            let mut out = Mat::zeros(0, 0);
            stack_rows(&a, &b, &mut out, parts);
            assert!(out == stacked, "stack_rows, {parts} pieces");
            let (mut x, mut y) = (Mat::zeros(0, 0), Mat::zeros(0, 0));
            split_rows(&stacked, &mut x, &mut y, parts);
            assert!(x == a && y == b, "split_rows, {parts} pieces");
            let mut sum = a.clone();
            add_into(&mut sum, &b, parts);
            assert!(sum == &a + &b, "add_into, {parts} pieces");
        }
    }
}
