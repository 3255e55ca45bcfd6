//! The shared test suite: one generic function per property, written once against
//! [`Recurrence`] and instantiated for every cell (and stack) in `cell_suite.rs`.
//!
//! The scalar loss used throughout is `L = Σ W_out ⊙ outputs + Σ W_fin ⊙ final_state` with fixed
//! random weights, so `d_out = W_out` and `d_final = W_fin` and every gradient the backward pass
//! returns is exercised.

#![allow(dead_code)]

use rnn_cells::{Recurrence, RecurrentState, SeqInput};
use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
use rnn_tensor::{Mat, Parameters, Rng};

/// Tolerance of the gradient checks: the fourth-order central difference with step [`H`] in
/// f64 has truncation ~H⁴ and rounding ~ε·|L|/H, both far below this.
pub const GRAD_TOL: f64 = 1e-8;

/// The numeric-difference step. Smaller steps raise the rounding error (1e-5 already gives 2e-8
/// on the smallest gradients); larger ones make it likelier that a ReLU pre-activation lies within
/// the `±2H` stencil of its kink, where no difference quotient matches the one-sided derivative.
/// The property tests use a fixed seed, so such a case cannot appear by chance.
pub const H: f64 = 1e-4;

/// `max |numeric - analytic| / max(scale, 1e-2)` with `scale = max(|numeric| + |analytic|)`:
/// [`rel_error`] with its floor raised from 1e-8 to 1e-2. A gradient that is exactly zero (all
/// ReLU units dead, for instance) is then judged by the absolute error, which for these O(1)
/// losses is the difference quotient's rounding noise, ~1e-11, instead of that noise over 1e-8.
pub fn grad_error(numeric: &[f64], analytic: &[f64]) -> f64 {
    let scale = numeric.iter().zip(analytic).map(|(a, b)| a.abs() + b.abs()).fold(0.0, f64::max);
    rel_error(numeric, analytic) * scale.max(1e-8) / scale.max(1e-2)
}

/// Random numbers in `[-1, 1)` shaped like `m`.
pub fn rand_mat(rows: usize, cols: usize, rng: &mut Rng) -> Mat<f64> {
    Mat::from_fn(rows, cols, |_, _| rng.uniform(-1.0, 1.0))
}

/// A random state: `zero_state` with every number redrawn.
pub fn rand_state<C: Recurrence<f64>>(cell: &C, batch: usize, rng: &mut Rng) -> C::State
where
    C::State: RecurrentState<f64>,
{
    let z = cell.zero_state(batch);
    let v: Vec<f64> = z.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect();
    z.with_flat(&v)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The test loss of one fresh forward pass.
fn loss<C: Recurrence<f64>>(
    cell: &C,
    x: SeqInput<'_, f64>,
    batch: usize,
    h0: &C::State,
    w_out: &Mat<f64>,
    w_fin: &[f64],
) -> f64
where
    C::State: RecurrentState<f64>,
{
    let mut cache = C::Cache::default();
    let fin = cell.forward(x, batch, h0, &mut cache);
    dot(cell.outputs(&cache).as_slice(), w_out.as_slice()) + dot(&fin.to_flat(), w_fin)
}

/// The worst relative error between the backward pass and numeric gradients, over every
/// parameter tensor, the dense input and the initial state. Returns `(name, error)` pairs.
pub fn gradient_errors<C: Recurrence<f64> + Clone>(
    cell: &C,
    x: SeqInput<'_, f64>,
    batch: usize,
    seed: u64,
) -> Vec<(String, f64)>
where
    C::State: RecurrentState<f64>,
{
    let mut rng = Rng::seed_from(seed);
    let n = x.columns();
    let h0 = rand_state(cell, batch, &mut rng);
    let w_out = rand_mat(cell.hidden_size(), n, &mut rng);
    let w_fin: Vec<f64> = h0.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect();

    let mut cache = C::Cache::default();
    cell.forward(x, batch, &h0, &mut cache);
    let mut grads = cell.params().clone();
    grads.zero();
    let mut d_x = Mat::zeros(cell.input_size(), n);
    let d_h0 = cell.backward(x, &mut cache, &w_out, &h0.with_flat(&w_fin), &mut grads, Some(&mut d_x));

    let mut errors = Vec::new();
    let names: Vec<String> = grads.named_params().into_iter().map(|(s, _)| s).collect();
    for (k, name) in names.iter().enumerate() {
        let mut probe = cell.clone();
        let mut flat = probe.params().named_params()[k].1.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                probe.params_mut().named_params_mut()[k].1.copy_from_slice(v);
                loss(&probe, x, batch, &h0, &w_out, &w_fin)
            },
            &mut flat,
            H,
        );
        errors.push((name.clone(), grad_error(&num, grads.named_params()[k].1.as_slice())));
    }
    if let SeqInput::Dense(xm) = x {
        let mut flat = xm.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                loss(
                    cell,
                    SeqInput::Dense(&Mat::from_column_slice(xm.nrows(), xm.ncols(), v)),
                    batch,
                    &h0,
                    &w_out,
                    &w_fin,
                )
            },
            &mut flat,
            H,
        );
        errors.push(("input".into(), grad_error(&num, d_x.as_slice())));
    }
    let mut flat = h0.to_flat();
    let num = numeric_gradient(|v| loss(cell, x, batch, &h0.with_flat(v), &w_out, &w_fin), &mut flat, H);
    errors.push(("initial state".into(), grad_error(&num, &d_h0.to_flat())));
    errors
}

/// Asserts every gradient error is below [`GRAD_TOL`].
pub fn assert_gradients<C: Recurrence<f64> + Clone>(cell: &C, x: SeqInput<'_, f64>, batch: usize, seed: u64)
where
    C::State: RecurrentState<f64>,
{
    for (name, err) in gradient_errors(cell, x, batch, seed) {
        assert!(err < GRAD_TOL, "{name}: relative error {err:e} (tolerance {GRAD_TOL:e})");
    }
}

/// Running `step` T times gives the same outputs and final state as one `forward`
/// (tolerance 1e-12: the same operations in the same order, up to GEMM blocking).
pub fn assert_step_matches_forward<C: Recurrence<f64>>(
    cell: &C,
    x: SeqInput<'_, f64>,
    batch: usize,
    seed: u64,
) where
    C::State: RecurrentState<f64>,
{
    let mut rng = Rng::seed_from(seed);
    let h0 = rand_state(cell, batch, &mut rng);
    let mut cache = C::Cache::default();
    let fin = cell.forward(x, batch, &h0, &mut cache);
    let out = cell.outputs(&cache);
    let mut s = h0.clone();
    for t in 0..x.columns() / batch {
        match x {
            SeqInput::Dense(m) => {
                cell.step(SeqInput::Dense(&m.columns(t * batch, batch).into_owned()), &mut s)
            }
            SeqInput::Index(ix) => cell.step(SeqInput::Index(&ix[t * batch..(t + 1) * batch]), &mut s),
        }
        let err =
            rel_error(C::state_output(&s).as_slice(), out.columns(t * batch, batch).into_owned().as_slice());
        assert!(err < 1e-12, "step {t}: step and forward outputs differ by {err:e}");
    }
    let err = rel_error(&s.to_flat(), &fin.to_flat());
    assert!(err < 1e-12, "final state: step and forward differ by {err:e}");
}

/// Index input gives exactly the one-hot dense input's outputs, final state and parameter
/// gradients (tolerance 1e-13: a gather is the product with a one-hot column).
pub fn assert_index_matches_one_hot<C: Recurrence<f64>>(cell: &C, batch: usize, steps: usize, seed: u64)
where
    C::State: RecurrentState<f64>,
{
    let mut rng = Rng::seed_from(seed);
    let i = cell.input_size();
    let ix: Vec<usize> = (0..steps * batch).map(|_| rng.below(i)).collect();
    let one_hot = Mat::from_fn(i, ix.len(), |r, c| if ix[c] == r { 1.0 } else { 0.0 });
    let h0 = rand_state(cell, batch, &mut rng);
    let w_out = rand_mat(cell.hidden_size(), ix.len(), &mut rng);
    let d_fin = rand_state(cell, batch, &mut rng);
    let run = |x: SeqInput<'_, f64>| {
        let mut cache = C::Cache::default();
        let fin = cell.forward(x, batch, &h0, &mut cache);
        let mut g = cell.params().clone();
        g.zero();
        let dh0 = cell.backward(x, &mut cache, &w_out, &d_fin, &mut g, None);
        (cell.outputs(&cache).clone(), fin.to_flat(), g, dh0.to_flat())
    };
    let (oa, fa, ga, da) = run(SeqInput::Index(&ix));
    let (ob, fb, gb, db) = run(SeqInput::Dense(&one_hot));
    assert!(rel_error(oa.as_slice(), ob.as_slice()) < 1e-13, "outputs differ");
    assert!(rel_error(&fa, &fb) < 1e-13, "final states differ");
    assert!(rel_error(&da, &db) < 1e-13, "initial-state gradients differ");
    for ((name, a), (_, b)) in ga.named_params().into_iter().zip(gb.named_params()) {
        let err = rel_error(a.as_slice(), b.as_slice());
        assert!(err < 1e-13, "{name}: index and one-hot gradients differ by {err:e}");
    }
}

/// Bad shapes are reported by `check_input` with a message, and a sequence of zero steps
/// returns the initial state, an empty output, `d_final` as the initial-state gradient and no
/// parameter gradient.
pub fn assert_shape_errors_and_empty_sequence<C: Recurrence<f64>>(cell: &C)
where
    C::State: RecurrentState<f64>,
{
    let (i, h) = (cell.input_size(), cell.hidden_size());
    let s2 = cell.zero_state(2);
    let x = Mat::zeros(i, 6);
    assert!(cell.check_input(SeqInput::Dense(&x), 2, &s2).is_ok());
    let bad_rows = Mat::zeros(i + 1, 6);
    let e = cell.check_input(SeqInput::Dense(&bad_rows), 2, &s2).unwrap_err();
    assert!(e.to_string().contains("rows"), "{e}");
    let e = cell.check_input(SeqInput::Dense(&x), 4, &cell.zero_state(4)).unwrap_err();
    assert!(e.to_string().contains("multiple"), "{e}");
    assert!(cell.check_input(SeqInput::Dense(&x), 0, &cell.zero_state(0)).is_err());
    let e = cell.check_input(SeqInput::Dense(&x), 3, &s2).unwrap_err();
    assert!(e.to_string().contains("state"), "{e}");
    let e = cell.check_input(SeqInput::<f64>::Index(&[0, i]), 2, &s2).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");

    let mut rng = Rng::seed_from(5);
    let h0 = rand_state(cell, 2, &mut rng);
    let empty = Mat::zeros(i, 0);
    let mut cache = C::Cache::default();
    let fin = cell.forward(SeqInput::Dense(&empty), 2, &h0, &mut cache);
    assert_eq!(fin.to_flat(), h0.to_flat());
    assert_eq!(cell.outputs(&cache).shape(), (h, 0));
    let mut g = cell.params().clone();
    g.zero();
    let d_fin = rand_state(cell, 2, &mut rng);
    let d0 = cell.backward(SeqInput::Dense(&empty), &mut cache, &Mat::zeros(h, 0), &d_fin, &mut g, None);
    assert_eq!(d0.to_flat(), d_fin.to_flat());
    assert!(g.named_params().iter().all(|(_, m)| m.iter().all(|&v| v == 0.0)));
}

/// A cache reused across calls of different shapes gives bit-identical results to a fresh one.
pub fn assert_cache_reuse_is_exact<C: Recurrence<f64>>(cell: &C, seed: u64)
where
    C::State: RecurrentState<f64>,
{
    let mut rng = Rng::seed_from(seed);
    let i = cell.input_size();
    let run = |cache: &mut C::Cache, x: &Mat<f64>, batch: usize, h0: &C::State, w: &Mat<f64>| {
        let fin = cell.forward(SeqInput::Dense(x), batch, h0, cache);
        let mut g = cell.params().clone();
        g.zero();
        let mut dx = Mat::zeros(i, x.ncols());
        let d0 = cell.backward(SeqInput::Dense(x), cache, w, h0, &mut g, Some(&mut dx));
        let gflat: Vec<f64> = g.named_params().iter().flat_map(|(_, m)| m.iter().copied()).collect();
        (cell.outputs(cache).clone(), fin.to_flat(), d0.to_flat(), gflat, dx)
    };
    let (xa, ha, wa) = (
        rand_mat(i, 12, &mut rng),
        rand_state(cell, 3, &mut rng),
        rand_mat(cell.hidden_size(), 12, &mut rng),
    );
    let (xb, hb, wb) = (
        rand_mat(i, 10, &mut rng),
        rand_state(cell, 2, &mut rng),
        rand_mat(cell.hidden_size(), 10, &mut rng),
    );
    let mut shared = C::Cache::default();
    let first = run(&mut shared, &xa, 3, &ha, &wa);
    let _ = run(&mut shared, &xb, 2, &hb, &wb);
    let again = run(&mut shared, &xa, 3, &ha, &wa);
    let fresh = run(&mut C::Cache::default(), &xa, 3, &ha, &wa);
    assert!(first == again && again == fresh, "a reused cache changed the results");
}
