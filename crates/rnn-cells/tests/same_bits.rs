//! Results that must not depend on how they are computed, compared bit for bit (tolerance:
//! none).
//!
//! Threads: the recurrent layers split their time loops by batch columns over
//! `rnn_tensor::parallel`'s threads. Each column is computed exactly as without the split, so the outputs, final state,
//! all gradients and the initial-state gradient must be bit-identical for 1, 2 and 3 threads
//! (tolerance: none, the bits are compared), in f32 and f64, for LSTM, GRU and RNN.
//!
//! The shapes (H = 64, B = 40, T = 5) are large enough for the layers to split (parts of at
//! least 8 columns and 65 536 multiply-adds per step product), and B = 40 splits unevenly into
//! 3 parts (14, 13, 13 columns). The unsplit path itself is checked against numeric gradients and
//! PyTorch elsewhere.
//!
//! Builds: the pointwise gate loops run in an AVX-512, AVX2 or baseline build, picked at run
//! time; without FMA contraction all three give the same bits. The f32 products run on the
//! AVX-512 or the AVX2 kernel (the same bits), or under the `portable` cap on matrixmultiply
//! (other bits): so f32 layers are compared across the AVX-512 and AVX2 caps, f64 layers (whose
//! products never depend on the cap) across all three. On a CPU without AVX-512 (or AVX2) the
//! capped and uncapped runs take the same build and the test compares less. The cap is global:
//! the test that sets it holds [`CAP`] for writing, the others for reading.

use std::sync::{RwLock, RwLockReadGuard};

use rnn_cells::{GruConfig, LstmConfig, Recurrence, RecurrentState, RnnConfig, SeqInput};
use rnn_tensor::simd::{self, Level};
use rnn_tensor::{parallel, Mat, Parameters, Rng, Scalar};

const I: usize = 24;
const H: usize = 64;
const B: usize = 40;
const T: usize = 5;

/// Held for writing by the test that changes `simd::set_max_level`, for reading by the others
/// (a `portable` cap changes the bits of f32 products under them).
static CAP: RwLock<()> = RwLock::new(());

fn cap_unchanged() -> RwLockReadGuard<'static, ()> {
    CAP.read().unwrap_or_else(|e| e.into_inner())
}

fn random<S: Scalar>(rows: usize, cols: usize, rng: &mut Rng) -> Mat<S> {
    Mat::from_fn(rows, cols, |_, _| S::cast(rng.uniform(-1.0, 1.0)))
}

/// Every number a forward and two backward passes produce, as bits; `threads` is the pool's
/// thread count (another test may hold the pool for a moment, then a call runs unsplit: the
/// bits must not change either way).
fn run<S: Scalar, C: Recurrence<S>>(cell: &C, threads: usize) -> Vec<u64> {
    parallel::set_num_threads(threads);
    let mut rng = Rng::seed_from(7);
    let x = random::<S>(I, T * B, &mut rng);
    let d_out = random::<S>(cell.hidden_size(), T * B, &mut rng);
    let mut h0 = cell.zero_state(B);
    // A non-zero initial state and final-state gradient, drawn the same way for every run.
    let mut d_final = cell.zero_state(B);
    for _ in 0..2 {
        h0 = cell.forward(SeqInput::Dense(&random(I, B, &mut rng)), B, &h0, &mut C::Cache::default());
    }
    let mut cache = C::Cache::default();
    let fin = cell.forward(SeqInput::Dense(&x), B, &h0, &mut cache);
    d_final = cell.forward(SeqInput::Dense(&random(I, B, &mut rng)), B, &d_final, &mut C::Cache::default());
    let mut grads = cell.params().clone();
    grads.zero();
    let mut d_x = Mat::zeros(0, 0);
    let d_h0 = cell.backward(SeqInput::Dense(&x), &mut cache, &d_out, &d_final, &mut grads, Some(&mut d_x));
    let mut grads2 = grads.clone();
    grads2.zero();
    cell.backward_detached(SeqInput::Dense(&x), &mut cache, &d_out, &d_final, &mut grads2, None);
    let mut bits = Vec::new();
    let mut push = |m: &Mat<S>| bits.extend(m.iter().map(|v| v.to_f64().to_bits()));
    push(cell.outputs(&cache));
    for m in fin.parts().into_iter().chain(d_h0.parts()) {
        push(m);
    }
    push(&d_x);
    for (_, g) in grads.named_params().into_iter().chain(grads2.named_params()) {
        push(g);
    }
    bits
}

fn same_bits_for_any_thread_count<S: Scalar, C: Recurrence<S>>(cell: &C, name: &str) {
    let _cap = cap_unchanged();
    let one = run(cell, 1);
    for threads in [2, 3] {
        assert!(run(cell, threads) == one, "{name}: {threads} threads differ from one");
    }
}

#[test]
fn lstm_split_is_bit_identical() {
    let mut rng = Rng::seed_from(1);
    same_bits_for_any_thread_count(&LstmConfig::new(I, H).build::<f32>(&mut rng).unwrap(), "LSTM f32");
    same_bits_for_any_thread_count(&LstmConfig::new(I, H).build::<f64>(&mut rng).unwrap(), "LSTM f64");
    // With a projection, the loop splits only when the projection's product per part (P·H per
    // column) stays above the small-product route too: in f64 a part's small product rounds
    // differently from the whole batch's. H = 64 and P = 32 must not split (split, it did
    // differ); H = 128 and P = 96 split.
    for (h, p) in [(H, 32), (2 * H, 96)] {
        let proj = LstmConfig::new(I, h).with_proj_size(p);
        same_bits_for_any_thread_count(
            &proj.build::<f32>(&mut rng).unwrap(),
            &format!("LSTM {h}, proj {p}, f32"),
        );
        same_bits_for_any_thread_count(
            &proj.build::<f64>(&mut rng).unwrap(),
            &format!("LSTM {h}, proj {p}, f64"),
        );
    }
}

#[test]
fn gru_split_is_bit_identical() {
    let mut rng = Rng::seed_from(2);
    same_bits_for_any_thread_count(&GruConfig::new(I, H).build::<f32>(&mut rng).unwrap(), "GRU f32");
    same_bits_for_any_thread_count(&GruConfig::new(I, H).build::<f64>(&mut rng).unwrap(), "GRU f64");
}

#[test]
fn rnn_split_is_bit_identical() {
    // The vanilla RNN's step product is H·H per column: H = 64 over 20 columns is below the
    // split threshold, so this cell gets a wider layer.
    let mut rng = Rng::seed_from(3);
    let cfg = RnnConfig::new(I, 2 * H);
    same_bits_for_any_thread_count(&cfg.build::<f32>(&mut rng).unwrap(), "RNN f32");
    same_bits_for_any_thread_count(&cfg.build::<f64>(&mut rng).unwrap(), "RNN f64");
}

/// Bidirectional layers run their two directions side by side on two threads (each direction
/// unsplit) and one after the other on one: the same bits.
#[test]
fn bidirectional_is_bit_identical() {
    let mut rng = Rng::seed_from(4);
    let lstm = LstmConfig::new(I, H).build_bidirectional::<f32>(&mut rng).unwrap();
    same_bits_for_any_thread_count(&lstm, "bidirectional LSTM f32");
    let gru = GruConfig::new(I, H).build_bidirectional_stack::<f64>(2, &mut rng).unwrap();
    same_bits_for_any_thread_count(&gru, "bidirectional 2-layer GRU f64");
}

/// LSTM, GRU and RNN (tanh) with H = 37 (so the vector loops have ragged tails): in f64 the
/// AVX-512, AVX2 and baseline builds of the gate loops give the same bits; in f32 the AVX-512
/// and AVX2 caps (gate loops and the products' kernels) do, on one thread and on two. H = 160
/// as a second size: strips with a ragged last one, panels and `k` past one 256 block in the
/// backward products.
#[test]
fn simd_builds_are_bit_identical() {
    fn runs<S: Scalar, C: Recurrence<S>>(cell: &C, name: &str, levels: &[Level]) {
        simd::set_max_level(levels[0]);
        let first = run(cell, 1);
        for &level in &levels[1..] {
            simd::set_max_level(level);
            assert!(run(cell, 1) == first, "{name}: the {level:?} build differs from the {:?}", levels[0]);
            assert!(run(cell, 2) == first, "{name}: the {level:?} build on 2 threads differs");
        }
    }
    let _cap = CAP.write().unwrap_or_else(|e| e.into_inner());
    let all = [Level::Baseline, Level::Avx2, Level::Avx512];
    let kernels = [Level::Avx512, Level::Avx2];
    let mut rng = Rng::seed_from(4);
    for h in [37, 160] {
        runs(&LstmConfig::new(I, h).build::<f64>(&mut rng).unwrap(), &format!("LSTM {h} f64"), &all);
        runs(&LstmConfig::new(I, h).build::<f32>(&mut rng).unwrap(), &format!("LSTM {h} f32"), &kernels);
        runs(&GruConfig::new(I, h).build::<f64>(&mut rng).unwrap(), &format!("GRU {h} f64"), &all);
        runs(&GruConfig::new(I, h).build::<f32>(&mut rng).unwrap(), &format!("GRU {h} f32"), &kernels);
        runs(&RnnConfig::new(I, h).build::<f64>(&mut rng).unwrap(), &format!("RNN {h} f64"), &all);
        runs(&RnnConfig::new(I, h).build::<f32>(&mut rng).unwrap(), &format!("RNN {h} f32"), &kernels);
    }
    simd::set_max_level(Level::Avx512);
}
