//! Variable-length batches: a batch whose sequences have their own lengths gives, for every
//! sample, exactly what that sample alone gives over its own steps (outputs, zero past its
//! length; final state; input and initial-state gradients), and parameter gradients that are the
//! sum of the samples' own. Checked for every cell, reverse and bidirectional layers, stacks and
//! LSTM projections, dense and index input, in f64 (relative error ≤ 1e-12), and bit for bit for
//! 1, 2 and 3 threads.

use std::sync::Mutex;

use rnn_cells::{GruConfig, LstmConfig, Recurrence, RecurrentState, RnnConfig, SeqInput};
use rnn_tensor::activation::Activation;
use rnn_tensor::gradcheck::rel_error;
use rnn_tensor::{Mat, Parameters, Rng, Scalar};

/// Thread counts are global: the tests that set them run one at a time.
static THREADS: Mutex<()> = Mutex::new(());

const TOL: f64 = 1e-12;

/// Column `b` of every part of `s`, as a batch-1 state shaped like `one`.
fn column<S: RecurrentState<f64>>(s: &S, b: usize, one: &S) -> S {
    let mut c = one.clone();
    for k in 0..s.num_parts() {
        c.part_mut(k).copy_from(&s.part(k).columns(b, 1));
    }
    c
}

fn random_state<S: RecurrentState<f64>>(z: &S, rng: &mut Rng) -> S {
    z.with_flat(&z.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<_>>())
}

/// The batch with `lengths` against each sample alone (see the module docs).
fn matches_samples_alone<M: Recurrence<f64>>(model: &M, lengths: &[usize], index: bool, name: &str) {
    let (b, t) = (lengths.len(), *lengths.iter().max().unwrap() + 1);
    let (i, h) = (model.input_size(), model.hidden_size());
    let mut rng = Rng::seed_from(17);
    let ix: Vec<usize> = (0..t * b).map(|_| rng.below(i)).collect();
    let x = if index {
        Mat::from_fn(i, t * b, |r, c| if ix[c] == r { 1.0 } else { 0.0 })
    } else {
        Mat::from_fn(i, t * b, |_, _| rng.uniform(-1.0, 1.0))
    };
    let d_out = Mat::from_fn(h, t * b, |_, _| rng.uniform(-1.0, 1.0));
    let h0 = random_state(&model.zero_state(b), &mut rng);
    let d_fin = random_state(&model.zero_state(b), &mut rng);
    let xin = if index { SeqInput::Index(&ix) } else { SeqInput::Dense(&x) };
    let mut cache = M::Cache::default();
    let fin = model.forward_lengths(xin, b, lengths, &h0, &mut cache);
    let out = model.outputs(&cache).clone();
    let mut grads = model.params().clone();
    grads.zero();
    let mut d_x = Mat::zeros(0, 0);
    let d_h0 = model.backward(xin, &mut cache, &d_out, &d_fin, &mut grads, (!index).then_some(&mut d_x));

    let one = model.zero_state(1);
    let mut want_grads = model.params().clone();
    want_grads.zero();
    let mut want_out = Mat::zeros(h, t * b);
    let mut want_dx = Mat::zeros(i, t * b);
    for (s, &len) in lengths.iter().enumerate() {
        let cols: Vec<usize> = (0..len).map(|step| step * b + s).collect();
        let xs = Mat::from_fn(i, len, |r, c| x[(r, cols[c])]);
        let ixs: Vec<usize> = cols.iter().map(|&c| ix[c]).collect();
        let ds = Mat::from_fn(h, len, |r, c| d_out[(r, cols[c])]);
        let xin_s = if index { SeqInput::Index(&ixs) } else { SeqInput::Dense(&xs) };
        let mut c = M::Cache::default();
        let fin_s = model.forward(xin_s, 1, &column(&h0, s, &one), &mut c);
        for (k, &col) in cols.iter().enumerate() {
            want_out.set_column(col, &model.outputs(&c).column(k));
        }
        let e = rel_error(&fin_s.to_flat(), &column(&fin, s, &one).to_flat());
        assert!(e <= TOL, "{name}: sample {s}'s final state, rel_error {e:e}");
        let mut dxs = Mat::zeros(0, 0);
        let d0 = model.backward(
            xin_s,
            &mut c,
            &ds,
            &column(&d_fin, s, &one),
            &mut want_grads,
            (!index).then_some(&mut dxs),
        );
        let e = rel_error(&d0.to_flat(), &column(&d_h0, s, &one).to_flat());
        assert!(e <= TOL, "{name}: sample {s}'s initial-state gradient, rel_error {e:e}");
        if !index {
            for (k, &col) in cols.iter().enumerate() {
                want_dx.set_column(col, &dxs.column(k));
            }
        }
    }
    let e = rel_error(out.as_slice(), want_out.as_slice());
    assert!(e <= TOL, "{name}: outputs (zero past each length), rel_error {e:e}");
    if !index {
        let e = rel_error(d_x.as_slice(), want_dx.as_slice());
        assert!(e <= TOL, "{name}: input gradient, rel_error {e:e}");
    }
    for ((n, g), (_, w)) in grads.named_params().into_iter().zip(want_grads.named_params()) {
        let e = rel_error(g.as_slice(), w.as_slice());
        assert!(e <= TOL, "{name}: {n}, rel_error {e:e}");
    }
}

/// Unsorted lengths with ties, one sequence of the full length and one of a single step.
const LENGTHS: [usize; 5] = [3, 5, 1, 5, 4];

#[test]
fn every_cell_matches_its_samples_alone() {
    let mut rng = Rng::seed_from(1);
    let lstm = LstmConfig::new(4, 5).build::<f64>(&mut rng).unwrap();
    matches_samples_alone(&lstm, &LENGTHS, false, "LSTM");
    matches_samples_alone(&lstm, &LENGTHS, true, "LSTM, index input");
    let gru = GruConfig::new(4, 6).build::<f64>(&mut rng).unwrap();
    matches_samples_alone(&gru, &LENGTHS, false, "GRU");
    let rnn = RnnConfig::new(4, 3).with_activation(Activation::Relu).build::<f64>(&mut rng).unwrap();
    matches_samples_alone(&rnn, &LENGTHS, false, "RNN relu");
    let rnn = RnnConfig::new(4, 3).with_bias(false).build::<f64>(&mut rng).unwrap();
    matches_samples_alone(&rnn, &[2, 2], false, "RNN tanh, no bias, equal lengths");
}

#[test]
fn reverse_bidirectional_and_stacks_match_their_samples_alone() {
    let mut rng = Rng::seed_from(2);
    let rev = LstmConfig::new(4, 5).with_reverse(true).build::<f64>(&mut rng).unwrap();
    matches_samples_alone(&rev, &LENGTHS, false, "reverse LSTM");
    let bigru = GruConfig::new(4, 3).build_bidirectional::<f64>(&mut rng).unwrap();
    matches_samples_alone(&bigru, &LENGTHS, false, "bidirectional GRU");
    let stack = LstmConfig::new(4, 3).build_bidirectional_stack::<f64>(2, &mut rng).unwrap();
    matches_samples_alone(&stack, &LENGTHS, false, "2-layer bidirectional LSTM");
    matches_samples_alone(&stack, &LENGTHS, true, "2-layer bidirectional LSTM, index input");
    let stack = RnnConfig::new(4, 3).build_stack::<f64>(3, &mut rng).unwrap();
    matches_samples_alone(&stack, &[1, 4, 2], false, "3-layer RNN");
}

#[test]
fn projected_lstms_match_their_samples_alone() {
    let mut rng = Rng::seed_from(4);
    let proj = LstmConfig::new(4, 5).with_proj_size(2);
    matches_samples_alone(&proj.build::<f64>(&mut rng).unwrap(), &LENGTHS, false, "LSTM proj_size 2");
    let rev = proj.with_reverse(true).build::<f64>(&mut rng).unwrap();
    matches_samples_alone(&rev, &LENGTHS, true, "reverse LSTM proj_size 2, index input");
    let stack = proj.build_bidirectional_stack::<f64>(2, &mut rng).unwrap();
    matches_samples_alone(&stack, &LENGTHS, false, "2-layer bidirectional LSTM proj_size 2");
}

/// Outputs, final state, parameter, input and initial-state gradients of a forward with lengths
/// and its backward, as bits, with `threads` threads.
fn lengths_bits<S: Scalar, M: Recurrence<S>>(
    model: &M,
    lengths: &[usize],
    threads: usize,
    seed: u64,
) -> Vec<u64> {
    rnn_tensor::parallel::set_num_threads(threads);
    let mut rng = Rng::seed_from(seed);
    let (b, t) = (lengths.len(), lengths.iter().max().copied().unwrap_or(0));
    let x = Mat::<S>::from_fn(model.input_size(), t * b, |_, _| S::cast(rng.uniform(-1.0, 1.0)));
    let d_out = Mat::<S>::from_fn(model.hidden_size(), t * b, |_, _| S::cast(rng.uniform(-1.0, 1.0)));
    let mut cache = M::Cache::default();
    let h0 = model.zero_state(b);
    let h0 = h0.with_flat(&h0.to_flat().iter().map(|_| rng.uniform(-0.5, 0.5)).collect::<Vec<_>>());
    let fin = model.forward_lengths(SeqInput::Dense(&x), b, lengths, &h0, &mut cache);
    let mut g = model.params().clone();
    g.zero();
    let mut d_x = Mat::zeros(0, 0);
    let d0 = model.backward(SeqInput::Dense(&x), &mut cache, &d_out, &fin, &mut g, Some(&mut d_x));
    let mut bits: Vec<u64> = model.outputs(&cache).iter().map(|v| v.to_f64().to_bits()).collect();
    for m in fin.parts().into_iter().chain(d0.parts()).chain(g.named_params().into_iter().map(|(_, m)| m)) {
        bits.extend(m.iter().map(|v| v.to_f64().to_bits()));
    }
    bits.extend(d_x.iter().map(|v| v.to_f64().to_bits()));
    bits
}

/// The same bits for 1, 2 and 3 threads: with threads, the lanes of the batch (fixed, whatever
/// the thread count) go to their own threads and the products of the whole sequence split
/// themselves, all keeping the bits. Unidirectional layers split their own loops (a
/// bidirectional layer runs its two directions side by side instead, each loop whole); shapes
/// large enough for the loops to split (a batch of 40 samples of 1 to 6 steps), f32 and f64, from
/// a non-zero initial state. Tolerance: none.
#[test]
fn lengths_give_the_same_bits_for_any_thread_count() {
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let threads = rnn_tensor::parallel::num_threads();
    let lengths: Vec<usize> = (0..40).map(|s| 1 + (7 * s) % 6).collect();
    fn check<S: Scalar, M: Recurrence<S>>(model: &M, lengths: &[usize], name: &str) {
        let one = lengths_bits(model, lengths, 1, 5);
        for n in [2, 3] {
            assert!(lengths_bits(model, lengths, n, 5) == one, "{name}: {n} threads differ from one");
        }
    }
    let mut rng = Rng::seed_from(3);
    let lstm = LstmConfig::new(64, 128);
    check(&lstm.build_bidirectional::<f32>(&mut rng).unwrap(), &lengths, "bidirectional LSTM f32");
    check(&lstm.build::<f32>(&mut rng).unwrap(), &lengths, "LSTM f32");
    check(&lstm.with_reverse(true).build::<f32>(&mut rng).unwrap(), &lengths, "reverse LSTM f32");
    check(&lstm.with_proj_size(96).build::<f32>(&mut rng).unwrap(), &lengths, "projected LSTM f32");
    check(&GruConfig::new(64, 160).build::<f32>(&mut rng).unwrap(), &lengths, "GRU f32");
    check(
        &GruConfig::new(64, 160).with_reverse(true).build::<f64>(&mut rng).unwrap(),
        &lengths,
        "reverse GRU f64",
    );
    check(&lstm.build::<f64>(&mut rng).unwrap(), &lengths, "LSTM f64");
    rnn_tensor::parallel::set_num_threads(threads);
}

/// Outputs past each sample's length are zero, also where the copy back to the caller's layout
/// is split between threads and no sample reaches the last steps (a batch of 96, lengths 1 to 6,
/// 8 steps, 512 units), in a cache that a run over the 8 steps (one sample 7) filled; the same
/// bits with 1 and 2 threads. Tolerance: none.
#[test]
fn padded_outputs_are_zero_when_the_copies_split() {
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let threads = rnn_tensor::parallel::num_threads();
    let lengths: Vec<usize> = (0..96).map(|s| 1 + (7 * s) % 6).collect();
    let (b, t) = (lengths.len(), 8);
    let mut rng = Rng::seed_from(11);
    let model = LstmConfig::new(16, 512).build::<f32>(&mut rng).unwrap();
    let x = Mat::<f32>::from_fn(16, t * b, |_, _| rng.uniform(-1.0, 1.0) as f32);
    let run = |n: usize| {
        rnn_tensor::parallel::set_num_threads(n);
        // A cache that a run over (almost) every step used first: its outputs there are not zero.
        let mut cache = Default::default();
        let full: Vec<usize> = (0..b).map(|s| if s == 0 { t - 1 } else { t }).collect();
        model.forward_lengths(SeqInput::Dense(&x), b, &full, &model.zero_state(b), &mut cache);
        model.forward_lengths(SeqInput::Dense(&x), b, &lengths, &model.zero_state(b), &mut cache);
        model.outputs(&cache).clone()
    };
    let (one, two) = (run(1), run(2));
    rnn_tensor::parallel::set_num_threads(threads);
    assert!(one.iter().zip(two.iter()).all(|(p, q)| p.to_bits() == q.to_bits()), "2 threads differ from one");
    for step in 0..t {
        for (s, &len) in lengths.iter().enumerate() {
            let col = one.column(step * b + s);
            let zero = col.iter().all(|&v| v == 0.0);
            assert_eq!(zero, step >= len, "step {step} of sample {s} (length {len})");
        }
    }
}

#[test]
fn lengths_that_do_not_fit_are_errors() {
    use rnn_cells::engine::check_lengths;
    assert!(check_lengths(&[1, 2], 2, 3).is_ok());
    let e = check_lengths(&[1, 2, 3], 2, 3).unwrap_err().to_string();
    assert!(e.contains("3 lengths for a batch of 2"), "{e}");
    let e = check_lengths(&[0, 2], 2, 3).unwrap_err().to_string();
    assert!(e.contains("sequence 0 has length 0") && e.contains("1..=3"), "{e}");
    assert!(check_lengths(&[4, 2], 2, 3).is_err());
}
