//! Streaming inference: a stream fed one step at a time gives the outputs and final state of one
//! forward over the whole sequence, allocates nothing per call after the first, refuses bad input
//! without changing its state, and its state can be read, set and reset.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use rnn_cells::{GruConfig, LstmConfig, Recurrence, RecurrentState, RnnConfig, SeqInput, Stream};
use rnn_tensor::gradcheck::rel_error;
use rnn_tensor::{Mat, Rng, Scalar};

/// Counts the allocations of the current thread (tests run on parallel threads).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local,
// which does not allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> usize {
    ALLOCATIONS.with(|a| a.get())
}

fn random<S: Scalar>(rows: usize, cols: usize, rng: &mut Rng) -> Mat<S> {
    Mat::from_fn(rows, cols, |_, _| S::cast(rng.uniform(-1.0, 1.0)))
}

/// Streams `steps` steps of `batch` sequences one step per call and compares with one forward
/// over the whole sequence: outputs and final state within `tol` (relative error; the step
/// products of a one-step call and of a sequence sum in the same order, so the difference is
/// rounding at most), and no allocation in the calls after the first.
fn streams_like_a_sequence<S: Scalar, M: Recurrence<S> + Clone>(
    model: M,
    batch: usize,
    tol: f64,
    name: &str,
) {
    let (steps, inputs) = (20, model.input_size());
    let mut rng = Rng::seed_from(5);
    let x = random::<S>(inputs, steps * batch, &mut rng);
    let mut cache = M::Cache::default();
    let fin = model.forward(SeqInput::Dense(&x), batch, &model.zero_state(batch), &mut cache);
    let want = model.outputs(&cache).clone();
    let mut stream = Stream::new(model, batch).unwrap();
    let mut got = Vec::new();
    let mut step_x = x.columns(0, batch).into_owned();
    let mut counted = 0;
    for t in 0..steps {
        step_x.copy_from(&x.columns(t * batch, batch));
        let before = allocations();
        let out = stream.step(SeqInput::Dense(&step_x)).unwrap();
        if t > 0 {
            counted += allocations() - before;
        }
        got.extend(out.iter().map(|v| v.to_f64()));
    }
    assert_eq!(counted, 0, "{name}: allocations in {} streamed steps", steps - 1);
    let want: Vec<f64> = want.iter().map(|v| v.to_f64()).collect();
    let e = rel_error(&want, &got);
    assert!(e <= tol, "{name}: streamed outputs against the sequence's, rel_error {e:e}");
    let e = rel_error(&fin.to_flat(), &stream.state().to_flat());
    assert!(e <= tol, "{name}: streamed final state against the sequence's, rel_error {e:e}");
}

#[test]
fn streaming_matches_the_whole_sequence_and_allocates_nothing() {
    let mut rng = Rng::seed_from(1);
    // Batch 1 (deployment) and a small batch; f32 (one forward over the sequence takes the batch-1
    // route there: the same sums, so equal to rounding) and f64.
    streams_like_a_sequence(LstmConfig::new(16, 64).build::<f32>(&mut rng).unwrap(), 1, 1e-6, "LSTM f32 B1");
    streams_like_a_sequence(GruConfig::new(16, 48).build::<f32>(&mut rng).unwrap(), 1, 1e-6, "GRU f32 B1");
    streams_like_a_sequence(RnnConfig::new(16, 40).build::<f32>(&mut rng).unwrap(), 3, 1e-6, "RNN f32 B3");
    let stack = LstmConfig::new(16, 32).build_stack::<f64>(2, &mut rng).unwrap();
    streams_like_a_sequence(stack, 2, 1e-13, "2-layer LSTM f64 B2");
}

#[test]
fn state_can_be_read_set_and_reset() {
    let mut rng = Rng::seed_from(2);
    let lstm = LstmConfig::new(3, 5).build::<f64>(&mut rng).unwrap();
    let ix = [0usize, 2, 1, 1];
    let mut a = Stream::new(lstm.clone(), 1).unwrap();
    a.step(SeqInput::Index(&ix[..2])).unwrap();
    let saved = a.state().clone();
    let out_a = a.step(SeqInput::Index(&ix[2..])).unwrap().clone();
    // Another stream continued from the saved state gives the same next outputs.
    let mut b = Stream::new(lstm.clone(), 1).unwrap();
    b.set_state(saved).unwrap();
    assert_eq!(b.step(SeqInput::Index(&ix[2..])).unwrap(), &out_a);
    // After reset, the stream is a fresh one.
    b.reset();
    let mut fresh = Stream::new(lstm.clone(), 1).unwrap();
    assert_eq!(b.step(SeqInput::Index(&ix)).unwrap(), fresh.step(SeqInput::Index(&ix)).unwrap());
    // A state of another shape is refused, naming both.
    let e = b.set_state(lstm.zero_state(2)).unwrap_err().to_string();
    assert!(e.contains("(5, 2)") && e.contains("(5, 1)"), "{e}");
}

#[test]
fn bad_input_is_an_error_and_leaves_the_state() {
    let mut rng = Rng::seed_from(3);
    let gru = GruConfig::new(4, 6).build::<f32>(&mut rng).unwrap();
    let mut s = Stream::new(gru, 2).unwrap();
    s.step(SeqInput::Dense(&random(4, 2, &mut rng))).unwrap();
    let before = s.state().clone();
    for (what, x) in [("rows", random::<f32>(3, 2, &mut rng)), ("columns", random::<f32>(4, 3, &mut rng))] {
        assert!(s.step(SeqInput::Dense(&x)).is_err(), "{what}");
    }
    assert!(s.step(SeqInput::Index(&[1, 9])).is_err(), "an index out of range");
    assert!(s.step(SeqInput::Index(&[])).is_err(), "no step");
    assert_eq!(s.state(), &before);
    assert!(Stream::new(GruConfig::new(4, 6).build::<f32>(&mut rng).unwrap(), 0).is_err());
}

/// A stream's cache is frozen (`freeze_weights`: its model cannot change), so at batch 1 each
/// step takes the packed batch-1 route (split between the threads from a 256-unit GRU on);
/// an unfrozen layer's single steps take the general loop. Both sum every value in the same
/// order: the outputs are the same bits, with 1, 2 and 3 threads.
#[test]
fn frozen_single_steps_are_the_general_loops_bits() {
    let mut rng = Rng::seed_from(4);
    let lstm = LstmConfig::new(24, 256).build::<f32>(&mut rng).unwrap();
    let gru = GruConfig::new(24, 96).build::<f32>(&mut rng).unwrap();
    let gru256 = GruConfig::new(40, 256).build::<f32>(&mut rng).unwrap();
    fn check<M: Recurrence<f32> + Clone>(model: M, name: &str) {
        let before = rnn_tensor::parallel::num_threads();
        for threads in [1, 2, 3] {
            rnn_tensor::parallel::set_num_threads(threads);
            check_with(model.clone(), &format!("{name}, {threads} threads"));
        }
        rnn_tensor::parallel::set_num_threads(before);
    }
    fn check_with<M: Recurrence<f32> + Clone>(model: M, name: &str) {
        let mut rng = Rng::seed_from(6);
        let mut stream = Stream::new(model.clone(), 1).unwrap();
        let mut state = model.zero_state(1);
        for t in 0..6 {
            let x = random::<f32>(model.input_size(), 1, &mut rng);
            let got = stream.step(SeqInput::Dense(&x)).unwrap().clone();
            let mut cache = M::Cache::default();
            state = model.forward(SeqInput::Dense(&x), 1, &state, &mut cache);
            let want = model.outputs(&cache);
            let same = got.iter().zip(want.iter()).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: step {t} differs between the frozen stream and a fresh cache");
        }
    }
    check(lstm, "LSTM 256");
    check(gru, "GRU 96");
    check(gru256, "GRU 256");
}

/// A frozen cache keeps `W_ih` and `W_hh` packed from call to call (what an evaluation's chunks
/// do): over chunks of several steps and of one, at batches above 1 (the general loop, not the
/// batch-1 route), a frozen 2-layer stack gives the same bits as fresh caches, outputs and
/// carried states, and so does a frozen cache after the weights it packed were used by another
/// cache (nothing shared between caches).
#[test]
fn frozen_chunks_are_fresh_caches_bits() {
    fn check<M: Recurrence<f32> + Clone>(model: M, name: &str) {
        let mut rng = Rng::seed_from(8);
        let batch = 5;
        let mut frozen = M::Cache::default();
        model.freeze_weights(&mut frozen);
        let (mut got_state, mut want_state) = (model.zero_state(batch), model.zero_state(batch));
        for (call, steps) in [3usize, 1, 4, 2].into_iter().enumerate() {
            let x = random::<f32>(model.input_size(), steps * batch, &mut rng);
            got_state = model.forward(SeqInput::Dense(&x), batch, &got_state, &mut frozen);
            let mut fresh = M::Cache::default();
            want_state = model.forward(SeqInput::Dense(&x), batch, &want_state, &mut fresh);
            let (got, want) = (model.outputs(&frozen), model.outputs(&fresh));
            assert_eq!(got.shape(), want.shape(), "{name}: call {call}");
            let same = got.iter().zip(want.iter()).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: the outputs of call {call} ({steps} steps) differ from a fresh cache's");
            assert_eq!(got_state, want_state, "{name}: the state after call {call}");
        }
    }
    let mut rng = Rng::seed_from(7);
    check(LstmConfig::new(20, 40).build_stack::<f32>(2, &mut rng).unwrap(), "LSTM 2×40");
    check(GruConfig::new(20, 36).build_stack::<f32>(2, &mut rng).unwrap(), "GRU 2×36");
    check(RnnConfig::new(20, 33).build_stack::<f32>(2, &mut rng).unwrap(), "RNN 2×33");
}
