//! The plain reference implementations (`rnn_cells::reference`) as the oracle of the fast cells.
//!
//! 1. The reference itself against numeric gradients (f64, the fourth-order difference of
//!    `common::H`), every gradient: each parameter tensor, the input, each part of the initial
//!    state. Tolerance: `common::GRAD_TOL` (1e-8) on `common::grad_error`.
//! 2. The fast cells (through `Recurrence`: `forward`, `outputs`, `backward`,
//!    `backward_detached`) against the reference on the same parameters and data: outputs, final
//!    state and every gradient (parameters, `d_x`, initial state), with one and two threads.
//!    Tolerance: `rel_error` ≤ 1e-12 in f64 and ≤ 1e-4 in f32 (the reference then runs in f32
//!    too). Random shapes with proptest, and fixed shapes for the routes random small shapes miss:
//!    batch 1 (the LSTM's batch-1 loop, split over the threads at `H = 256`), the time loop split
//!    over two threads (batch ≥ 16 and `B·G·H·H ≥ 2·65536`), and, in f32 on AVX-512 CPUs, the
//!    LSTM's `dA` in strips (any dense input).
//!
//! The loss behind the gradients is `L = Σ d_out ⊙ outputs + Σ d_final ⊙ final state` with random
//! `d_out`, `d_final`.

mod common;

use std::sync::Mutex;

use common::{grad_error, GRAD_TOL, H as STEP};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rnn_cells::reference::{gru, lstm, rnn};
use rnn_cells::{
    Gru, GruConfig, Lstm, LstmConfig, LstmState, Recurrence, RecurrentParams, Rnn, RnnConfig, RnnState,
    SeqInput,
};
use rnn_tensor::activation::Activation;
use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
use rnn_tensor::{parallel, Mat, Parameters, Rng, Scalar};

/// The thread count is global: the tests that change it take this lock.
static THREADS: Mutex<()> = Mutex::new(());

/// The GRU's state from its `h` (the one line to change when the state type changes).
fn gru_state<T: Scalar>(h: Mat<T>) -> <Gru<T> as Recurrence<T>>::State {
    rnn_cells::GruState { h }
}

/// A fast cell and its reference, with states as lists of matrices (`[h]` or `[h, c]`).
trait Oracle<T: Scalar>: Recurrence<T, Params = RecurrentParams<T>> {
    /// The state's matrices.
    fn parts(s: &Self::State) -> Vec<Mat<T>>;
    /// The state holding `v`.
    fn from_parts(v: Vec<Mat<T>>) -> Self::State;
    /// The reference forward with parameters `p`: (outputs, final state).
    fn ref_forward(
        &self,
        p: &RecurrentParams<T>,
        x: &Mat<T>,
        b: usize,
        s0: &[Mat<T>],
    ) -> (Mat<T>, Vec<Mat<T>>);
    /// The reference backward after its forward: (parameter gradients, `d_x`, initial-state gradient).
    fn ref_backward(
        &self,
        x: &Mat<T>,
        b: usize,
        s0: &[Mat<T>],
        d_out: &Mat<T>,
        d_fin: &[Mat<T>],
    ) -> (RecurrentParams<T>, Mat<T>, Vec<Mat<T>>);
}

impl<T: Scalar> Oracle<T> for Rnn<T> {
    fn parts(s: &RnnState<T>) -> Vec<Mat<T>> {
        vec![s.h.clone()]
    }
    fn from_parts(mut v: Vec<Mat<T>>) -> RnnState<T> {
        RnnState { h: v.remove(0) }
    }
    fn ref_forward(
        &self,
        p: &RecurrentParams<T>,
        x: &Mat<T>,
        b: usize,
        s0: &[Mat<T>],
    ) -> (Mat<T>, Vec<Mat<T>>) {
        let tr = rnn::forward(p, self.activation(), x, b, &s0[0]);
        (tr.outputs, vec![tr.h.last().unwrap().clone()])
    }
    fn ref_backward(
        &self,
        x: &Mat<T>,
        b: usize,
        s0: &[Mat<T>],
        d_out: &Mat<T>,
        d_fin: &[Mat<T>],
    ) -> (RecurrentParams<T>, Mat<T>, Vec<Mat<T>>) {
        let (p, f) = (self.params(), self.activation());
        let g = rnn::backward(p, f, x, &rnn::forward(p, f, x, b, &s0[0]), d_out, &d_fin[0]);
        (g.params, g.d_x, vec![g.d_h0])
    }
}

impl<T: Scalar> Oracle<T> for Lstm<T> {
    fn parts(s: &LstmState<T>) -> Vec<Mat<T>> {
        vec![s.h.clone(), s.c.clone()]
    }
    fn from_parts(mut v: Vec<Mat<T>>) -> LstmState<T> {
        let c = v.remove(1);
        LstmState { h: v.remove(0), c }
    }
    fn ref_forward(
        &self,
        p: &RecurrentParams<T>,
        x: &Mat<T>,
        b: usize,
        s0: &[Mat<T>],
    ) -> (Mat<T>, Vec<Mat<T>>) {
        let tr = lstm::forward(p, x, b, &s0[0], &s0[1]);
        (tr.outputs, vec![tr.h.last().unwrap().clone(), tr.c.last().unwrap().clone()])
    }
    fn ref_backward(
        &self,
        x: &Mat<T>,
        b: usize,
        s0: &[Mat<T>],
        d_out: &Mat<T>,
        d_fin: &[Mat<T>],
    ) -> (RecurrentParams<T>, Mat<T>, Vec<Mat<T>>) {
        let p = self.params();
        let g = lstm::backward(p, x, &lstm::forward(p, x, b, &s0[0], &s0[1]), d_out, &d_fin[0], &d_fin[1]);
        (g.params, g.d_x, vec![g.d_h0, g.d_c0])
    }
}

impl<T: Scalar> Oracle<T> for Gru<T> {
    fn parts(s: &Self::State) -> Vec<Mat<T>> {
        vec![Self::state_output(s).clone()]
    }
    fn from_parts(mut v: Vec<Mat<T>>) -> Self::State {
        gru_state(v.remove(0))
    }
    fn ref_forward(
        &self,
        p: &RecurrentParams<T>,
        x: &Mat<T>,
        b: usize,
        s0: &[Mat<T>],
    ) -> (Mat<T>, Vec<Mat<T>>) {
        let tr = gru::forward(p, x, b, &s0[0]);
        (tr.outputs, vec![tr.h.last().unwrap().clone()])
    }
    fn ref_backward(
        &self,
        x: &Mat<T>,
        b: usize,
        s0: &[Mat<T>],
        d_out: &Mat<T>,
        d_fin: &[Mat<T>],
    ) -> (RecurrentParams<T>, Mat<T>, Vec<Mat<T>>) {
        let p = self.params();
        let g = gru::backward(p, x, &gru::forward(p, x, b, &s0[0]), d_out, &d_fin[0]);
        (g.params, g.d_x, vec![g.d_h0])
    }
}

/// Which cell, and how it is built.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Rnn(Activation),
    Lstm,
    /// The LSTM with a projection (`proj_size`, from 1 to `H - 1`, drawn from the seed).
    LstmProj,
    Gru,
}

/// The projection size of a [`Kind::LstmProj`] case: in `1..hidden` (`hidden ≥ 2`).
fn proj_size(hidden: usize, seed: u64) -> usize {
    1 + (seed as usize) % (hidden - 1)
}

const ACTIVATIONS: [Activation; 4] =
    [Activation::Tanh, Activation::Relu, Activation::Sigmoid, Activation::Identity];

/// One comparison: the cell's shape and the data's.
#[derive(Clone, Copy, Debug)]
struct Case {
    kind: Kind,
    input: usize,
    hidden: usize,
    batch: usize,
    steps: usize,
    bias: bool,
    /// The initial state is all zero (else random).
    zero_state: bool,
    /// The input is by index (the reference gets its one-hot matrix).
    index: bool,
    seed: u64,
}

fn random<T: Scalar>(rows: usize, cols: usize, rng: &mut Rng) -> Mat<T> {
    Mat::from_fn(rows, cols, |_, _| T::cast(rng.uniform(-1.0, 1.0)))
}

/// Records `what` in `errors` if `rel_error(a, b)` exceeds `tol`.
fn check<T: Scalar>(errors: &mut Vec<String>, what: &str, a: &Mat<T>, b: &Mat<T>, tol: f64) {
    let e = rel_error(a.as_slice(), b.as_slice());
    if e > tol {
        errors.push(format!("{what}: rel_error {e:e} > {tol:e}"));
    }
}

/// [`check`] on each part of two states (`h`, then `c`).
fn check_parts<T: Scalar>(errors: &mut Vec<String>, what: &str, a: &[Mat<T>], b: &[Mat<T>], tol: f64) {
    assert_eq!(a.len(), b.len(), "{what}: {} state parts against {}", a.len(), b.len());
    for ((a, b), part) in a.iter().zip(b).zip(["h", "c"]) {
        check(errors, &format!("{what} ({part})"), a, b, tol);
    }
}

/// The fast cell against the reference on `case`, with one and two threads: every mismatch, named.
fn compare<T: Scalar, C: Oracle<T>>(cell: &C, case: &Case, tol: f64) -> Vec<String> {
    let (i, b) = (case.input, case.batch);
    let n = case.steps * b;
    let mut rng = Rng::seed_from(case.seed);
    let ix: Vec<usize> = (0..n).map(|_| rng.below(i)).collect();
    let x_dense = if case.index {
        Mat::from_fn(i, n, |r, k| if ix[k] == r { T::ONE } else { T::ZERO })
    } else {
        random::<T>(i, n, &mut rng)
    };
    let x = if case.index { SeqInput::Index(&ix) } else { SeqInput::Dense(&x_dense) };
    // The state's parts: h (P rows with a projection), then the carried ones (H rows).
    let rows: Vec<usize> = C::parts(&cell.zero_state(b)).iter().map(|m| m.nrows()).collect();
    let s0: Vec<Mat<T>> = rows
        .iter()
        .map(|&r| if case.zero_state { Mat::zeros(r, b) } else { random(r, b, &mut rng) })
        .collect();
    let d_out = random::<T>(cell.hidden_size(), n, &mut rng);
    let d_fin: Vec<Mat<T>> = rows.iter().map(|&r| random(r, b, &mut rng)).collect();

    let (ref_out, ref_fin) = cell.ref_forward(cell.params(), &x_dense, b, &s0);
    let (ref_g, ref_dx, ref_ds0) = cell.ref_backward(&x_dense, b, &s0, &d_out, &d_fin);

    let mut errors = Vec::new();
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let before = parallel::num_threads();
    for threads in [1, 2] {
        parallel::set_num_threads(threads);
        let at = |what: &str| format!("{threads} thread(s), {what}");
        let mut cache = C::Cache::default();
        let fin = cell.forward(x, b, &C::from_parts(s0.clone()), &mut cache);
        check(&mut errors, &at("outputs"), cell.outputs(&cache), &ref_out, tol);
        check_parts(&mut errors, &at("final state"), &C::parts(&fin), &ref_fin, tol);
        let d_fin_state = C::from_parts(d_fin.clone());
        let mut g = cell.params().zeros_like();
        let mut d_x = Mat::zeros(i, n);
        let d_x_arg = (!case.index).then_some(&mut d_x);
        let ds0 = cell.backward(x, &mut cache, &d_out, &d_fin_state, &mut g, d_x_arg);
        check_parts(&mut errors, &at("initial-state gradient"), &C::parts(&ds0), &ref_ds0, tol);
        if !case.index {
            check(&mut errors, &at("d_x"), &d_x, &ref_dx, tol);
        }
        let mut g_det = cell.params().zeros_like();
        let mut d_x_det = Mat::zeros(i, n);
        cell.backward_detached(
            x,
            &mut cache,
            &d_out,
            &d_fin_state,
            &mut g_det,
            Some(&mut d_x_det).filter(|_| !case.index),
        );
        if !case.index {
            check(&mut errors, &at("d_x (detached)"), &d_x_det, &ref_dx, tol);
        }
        let named = |p: &RecurrentParams<T>| {
            p.named_params().into_iter().map(|(s, m)| (s, m.clone())).collect::<Vec<_>>()
        };
        for (gr, how) in [(&g, ""), (&g_det, " (detached)")] {
            let (mine, want) = (named(gr), named(&ref_g));
            assert_eq!(mine.len(), want.len(), "{case:?}: parameter lists differ");
            for ((name, a), (_, r)) in mine.into_iter().zip(want) {
                check(&mut errors, &at(&format!("{name}{how}")), &a, &r, tol);
            }
        }
    }
    parallel::set_num_threads(before);
    errors
}

/// `case` in f64 (tolerance 1e-12) and f32 (1e-4), the cells built from the same seed; every
/// mismatch, prefixed with the precision.
fn compare_both(case: &Case) -> Vec<String> {
    fn run<T: Scalar>(case: &Case, tol: f64) -> Vec<String> {
        let mut rng = Rng::seed_from(case.seed ^ 0x5eed);
        let (i, h) = (case.input, case.hidden);
        match case.kind {
            Kind::Rnn(f) => {
                let cell = RnnConfig::new(i, h)
                    .with_activation(f)
                    .with_bias(case.bias)
                    .build::<T>(&mut rng)
                    .unwrap();
                compare(&cell, case, tol)
            }
            Kind::Lstm => {
                compare(&LstmConfig::new(i, h).with_bias(case.bias).build::<T>(&mut rng).unwrap(), case, tol)
            }
            Kind::LstmProj => {
                let config =
                    LstmConfig::new(i, h).with_bias(case.bias).with_proj_size(proj_size(h, case.seed));
                compare(&config.build::<T>(&mut rng).unwrap(), case, tol)
            }
            Kind::Gru => {
                compare(&GruConfig::new(i, h).with_bias(case.bias).build::<T>(&mut rng).unwrap(), case, tol)
            }
        }
    }
    let mut errors: Vec<String> = run::<f64>(case, 1e-12).into_iter().map(|e| format!("f64, {e}")).collect();
    errors.extend(run::<f32>(case, 1e-4).into_iter().map(|e| format!("f32, {e}")));
    errors
}

fn small_case(kind: Kind) -> impl Strategy<Value = Case> {
    // A projection needs H ≥ 2 (0 < P < H).
    let min_hidden: usize = if matches!(kind, Kind::LstmProj) { 2 } else { 1 };
    (
        1usize..6,
        min_hidden..9,
        1usize..5,
        1usize..5,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u64..1_000_000,
    )
        .prop_map(move |(input, hidden, batch, steps, bias, zero_state, index, seed)| Case {
            kind,
            input,
            hidden,
            batch,
            steps,
            bias,
            zero_state,
            index,
            seed,
        })
}

fn any_activation() -> impl Strategy<Value = Activation> {
    prop::sample::select(ACTIVATIONS.to_vec())
}

proptest! {
    // A fixed seed and no persistence file: the same cases on every run.
    #![proptest_config(ProptestConfig {
        cases: 32,
        rng_seed: RngSeed::Fixed(0x0e1a_c1e0),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn rnn_matches_reference(case in any_activation().prop_flat_map(|f| small_case(Kind::Rnn(f)))) {
        let errors = compare_both(&case);
        prop_assert!(errors.is_empty(), "{:?}:\n{}", case, errors.join("\n"));
    }

    #[test]
    fn lstm_matches_reference(case in small_case(Kind::Lstm)) {
        let errors = compare_both(&case);
        prop_assert!(errors.is_empty(), "{:?}:\n{}", case, errors.join("\n"));
    }

    #[test]
    fn projected_lstm_matches_reference(case in small_case(Kind::LstmProj)) {
        let errors = compare_both(&case);
        prop_assert!(errors.is_empty(), "{:?}:\n{}", case, errors.join("\n"));
    }

    #[test]
    fn gru_matches_reference(case in small_case(Kind::Gru)) {
        let errors = compare_both(&case);
        prop_assert!(errors.is_empty(), "{:?}:\n{}", case, errors.join("\n"));
    }
}

/// The shapes every run must see, whatever proptest draws: batch 1 over one step and several,
/// zero and random initial states, index input, no bias, every activation; and the large shapes
/// (`B = 16`, `B·G·H·H ≥ 2·65536`) whose time loop splits over two threads, and the LSTM's batch-1
/// loop at `H = 256` (where it splits its hidden units over the threads).
#[test]
fn fixed_shapes_match_reference() {
    let case = |kind, input, hidden, batch, steps| Case {
        kind,
        input,
        hidden,
        batch,
        steps,
        bias: true,
        zero_state: false,
        index: false,
        seed: (input * 1000 + hidden * 100 + batch * 10 + steps) as u64,
    };
    let mut cases = Vec::new();
    for kind in ACTIVATIONS.map(Kind::Rnn).into_iter().chain([Kind::Lstm, Kind::LstmProj, Kind::Gru]) {
        for (batch, steps) in [(1, 1), (1, 5), (3, 1), (3, 4)] {
            let c = case(kind, 4, 6, batch, steps);
            cases.push(c);
            cases.push(Case { zero_state: true, ..c });
            cases.push(Case { index: true, bias: false, ..c });
        }
    }
    // The split time loops: RNN 16·96² = 147 456, GRU 16·3·64² = 196 608, LSTM 16·4·64².
    for f in ACTIVATIONS {
        cases.push(case(Kind::Rnn(f), 8, 96, 16, 3));
    }
    cases.push(case(Kind::Gru, 8, 64, 16, 3));
    cases.push(case(Kind::Lstm, 8, 64, 16, 3));
    cases.push(Case { zero_state: true, ..case(Kind::Lstm, 8, 64, 17, 2) });
    cases.push(Case { index: true, ..case(Kind::Lstm, 8, 64, 16, 3) });
    cases.push(case(Kind::LstmProj, 8, 64, 16, 3));
    cases.push(Case { zero_state: true, ..case(Kind::LstmProj, 8, 96, 17, 2) });
    cases.push(case(Kind::Lstm, 8, 256, 1, 3));
    cases.push(Case { zero_state: true, ..case(Kind::Lstm, 8, 256, 1, 2) });
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let e = compare_both(c);
            (!e.is_empty()).then(|| format!("{c:?}:\n{}", e.join("\n")))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The reference's every gradient (parameters, input, each part of the initial state) against
/// numeric gradients, in f64, on small random shapes of each cell. Tolerance: [`GRAD_TOL`].
#[test]
fn reference_matches_numeric_gradients() {
    let mut rng = Rng::seed_from(0x9ad);
    for round in 0..3 {
        for kind in ACTIVATIONS.map(Kind::Rnn).into_iter().chain([Kind::Lstm, Kind::LstmProj, Kind::Gru]) {
            let (i, h, b, t) = (1 + rng.below(4), 1 + rng.below(4), 1 + rng.below(3), 1 + rng.below(4));
            // A projection needs H ≥ 2 (0 < P < H).
            let h = if matches!(kind, Kind::LstmProj) { h.max(2) } else { h };
            let bias = round != 1;
            let seed = rng.below(1 << 20) as u64;
            let errors = match kind {
                Kind::Rnn(f) => {
                    let cell = RnnConfig::new(i, h)
                        .with_activation(f)
                        .with_bias(bias)
                        .build::<f64>(&mut rng)
                        .unwrap();
                    numeric_errors(&cell, b, t, seed)
                }
                Kind::Lstm => numeric_errors(
                    &LstmConfig::new(i, h).with_bias(bias).build(&mut rng).unwrap(),
                    b,
                    t,
                    seed,
                ),
                Kind::LstmProj => numeric_errors(
                    &LstmConfig::new(i, h)
                        .with_bias(bias)
                        .with_proj_size(proj_size(h, seed))
                        .build(&mut rng)
                        .unwrap(),
                    b,
                    t,
                    seed,
                ),
                Kind::Gru => {
                    numeric_errors(&GruConfig::new(i, h).with_bias(bias).build(&mut rng).unwrap(), b, t, seed)
                }
            };
            for (name, err) in errors {
                assert!(
                    err < GRAD_TOL,
                    "{kind:?}, I={i} H={h} B={b} T={t} bias={bias}: {name} relative error {err:e} (tolerance {GRAD_TOL:e})"
                );
            }
        }
    }
}

/// `(name, grad_error)` of every gradient of the reference for `cell`'s parameters.
fn numeric_errors<C: Oracle<f64>>(cell: &C, b: usize, t: usize, seed: u64) -> Vec<(String, f64)> {
    let mut rng = Rng::seed_from(seed);
    let (i, h, n) = (cell.input_size(), cell.hidden_size(), t * b);
    let rows: Vec<usize> = C::parts(&cell.zero_state(b)).iter().map(|m| m.nrows()).collect();
    let x = random::<f64>(i, n, &mut rng);
    let s0: Vec<Mat<f64>> = rows.iter().map(|&r| random(r, b, &mut rng)).collect();
    let d_out = random::<f64>(h, n, &mut rng);
    let d_fin: Vec<Mat<f64>> = rows.iter().map(|&r| random(r, b, &mut rng)).collect();
    let dot = |a: &Mat<f64>, b: &Mat<f64>| a.dot(b);
    let loss = |p: &RecurrentParams<f64>, x: &Mat<f64>, s0: &[Mat<f64>]| {
        let (out, fin) = cell.ref_forward(p, x, b, s0);
        dot(&out, &d_out) + fin.iter().zip(&d_fin).map(|(f, d)| dot(f, d)).sum::<f64>()
    };
    let (g, d_x, d_s0) = cell.ref_backward(&x, b, &s0, &d_out, &d_fin);
    let p = cell.params().clone();
    let mut errors = Vec::new();
    for (k, (name, analytic)) in g.named_params().into_iter().enumerate() {
        let mut probe = p.clone();
        let mut flat = p.named_params()[k].1.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                probe.named_params_mut()[k].1.copy_from_slice(v);
                loss(&probe, &x, &s0)
            },
            &mut flat,
            STEP,
        );
        errors.push((name, grad_error(&num, analytic.as_slice())));
    }
    let num = numeric_gradient(
        |v| loss(&p, &Mat::from_column_slice(i, n, v), &s0),
        &mut x.as_slice().to_vec(),
        STEP,
    );
    errors.push(("input".into(), grad_error(&num, d_x.as_slice())));
    for (k, d) in d_s0.iter().enumerate() {
        let num = numeric_gradient(
            |v| {
                let mut s = s0.clone();
                s[k] = Mat::from_column_slice(rows[k], b, v);
                loss(&p, &x, &s)
            },
            &mut s0[k].as_slice().to_vec(),
            STEP,
        );
        errors.push((format!("initial state part {k}"), grad_error(&num, d.as_slice())));
    }
    errors
}
