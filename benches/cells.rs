//! Cell forward + backward, f32, cases named as in `../shared/bench/torch_ref.py` so the numbers
//! sit beside PyTorch's:
//!
//! - `cell_{lstm,gru,rnn}_fwdbwd_i256_h256_b64`: one step from a zero state, backward of the
//!   output sum (PyTorch's `nn.LSTMCell`/`nn.GRUCell`/`nn.RNNCell` case);
//! - `seq_lstm_fwdbwd_i256_h256_b64_t24`: a 24-step sequence forward and backward;
//! - `seq_lstm_fwd_i65_h512_b1_t100`: a 100-step forward of batch 1 (the sampling path).
//!
//! `cargo bench --bench cells [-- NAME]`. Inputs are seeded; caches are reused across
//! iterations, as in training.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use rnn::cells::{GruConfig, LstmConfig, Recurrence, RnnConfig, SeqInput};
use rnn::tensor::init::Init;
use rnn::tensor::{Mat, Parameters, Rng};

fn randn(rows: usize, cols: usize, rng: &mut Rng) -> Mat<f32> {
    Init::Normal { mean: 0.0, std: 1.0 }.matrix(rows, cols, rng)
}

/// Forward over `steps` steps and backward of `sum(outputs)` from a random state.
fn fwd_bwd<R: Recurrence<f32>>(
    c: &mut Criterion,
    name: &str,
    cell: R,
    i: usize,
    b: usize,
    steps: usize,
    rng: &mut Rng,
) {
    let x = randn(i, steps * b, rng);
    let h0 = cell.zero_state(b);
    let mut cache = R::Cache::default();
    let d_out = Mat::from_element(cell.hidden_size(), steps * b, 1.0f32);
    let d_final = cell.zero_state(b);
    let mut grads = cell.params().clone();
    let mut d_x = Mat::zeros(i, steps * b);
    c.bench_function(name, |bench| {
        bench.iter(|| {
            cell.forward(SeqInput::Dense(&x), b, &h0, &mut cache);
            grads.zero();
            black_box(cell.backward(
                SeqInput::Dense(&x),
                &cache,
                &d_out,
                &d_final,
                &mut grads,
                Some(&mut d_x),
            ));
        })
    });
}

fn benches(c: &mut Criterion) {
    let mut rng = Rng::seed_from(0);
    let lstm = LstmConfig::new(256, 256).build::<f32>(&mut rng).unwrap();
    fwd_bwd(c, "cell_lstm_fwdbwd_i256_h256_b64", lstm.clone(), 256, 64, 1, &mut rng);
    let gru = GruConfig::new(256, 256).build::<f32>(&mut rng).unwrap();
    fwd_bwd(c, "cell_gru_fwdbwd_i256_h256_b64", gru, 256, 64, 1, &mut rng);
    let rnn = RnnConfig::new(256, 256).build::<f32>(&mut rng).unwrap();
    fwd_bwd(c, "cell_rnn_fwdbwd_i256_h256_b64", rnn, 256, 64, 1, &mut rng);
    fwd_bwd(c, "seq_lstm_fwdbwd_i256_h256_b64_t24", lstm, 256, 64, 24, &mut rng);

    let big = LstmConfig::new(65, 512).build::<f32>(&mut rng).unwrap();
    let x = randn(65, 100, &mut rng);
    let h0 = big.zero_state(1);
    let mut cache = Default::default();
    c.bench_function("seq_lstm_fwd_i65_h512_b1_t100", |bench| {
        bench.iter(|| black_box(big.forward(SeqInput::Dense(&x), 1, &h0, &mut cache)))
    });
}

criterion_group!(cells, benches);
criterion_main!(cells);
