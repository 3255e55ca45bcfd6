//! `backward_detached` (no initial-state gradient) must give exactly the parameter and input
//! gradients of `backward`: it only leaves out the last `W_hhᵀ` product, which feeds nothing
//! but `dh_0`. Same operations in the same order, so the comparison is exact (tolerance 0).

use rnn_cells::{GruConfig, LstmConfig, Recurrence, RnnConfig, SeqInput, Stack};
use rnn_tensor::init::Init;
use rnn_tensor::{Mat, Parameters, Rng};

fn check<R: Recurrence<f64>>(cell: &R, h0: &R::State, batch: usize, steps: usize, rng: &mut Rng, what: &str) {
    let normal = Init::Normal { mean: 0.0, std: 1.0 };
    let (i, h) = (cell.input_size(), cell.hidden_size());
    let x: Mat<f64> = normal.matrix(i, steps * batch, rng);
    let d_out: Mat<f64> = normal.matrix(h, steps * batch, rng);
    let d_final = cell.zero_state(batch);
    let mut cache = R::Cache::default();
    cell.forward(SeqInput::Dense(&x), batch, h0, &mut cache);
    let (mut g1, mut g2) = (cell.params().clone(), cell.params().clone());
    g1.zero();
    g2.zero();
    let (mut dx1, mut dx2) = (Mat::zeros(i, steps * batch), Mat::zeros(i, steps * batch));
    cell.backward(SeqInput::Dense(&x), &mut cache, &d_out, &d_final, &mut g1, Some(&mut dx1));
    cell.backward_detached(SeqInput::Dense(&x), &mut cache, &d_out, &d_final, &mut g2, Some(&mut dx2));
    for ((name, a), (_, b)) in g1.named_params().into_iter().zip(g2.named_params()) {
        assert_eq!(a, b, "{what}: {name} differs between backward and backward_detached");
    }
    assert_eq!(dx1, dx2, "{what}: the input gradient differs");
}

#[test]
fn detached_backward_gives_the_same_gradients() {
    let mut rng = Rng::seed_from(21);
    for steps in [1, 4] {
        let lstm = LstmConfig::new(3, 5).build::<f64>(&mut rng).unwrap();
        let mut s = lstm.zero_state(2);
        s.h = Init::Normal { mean: 0.0, std: 1.0 }.matrix(5, 2, &mut rng);
        check(&lstm, &s, 2, steps, &mut rng, "LSTM");
        let gru = GruConfig::new(3, 5).build::<f64>(&mut rng).unwrap();
        let h0 = rnn_cells::GruState { h: Init::Normal { mean: 0.0, std: 1.0 }.matrix(5, 2, &mut rng) };
        check(&gru, &h0, 2, steps, &mut rng, "GRU");
        let rnn = RnnConfig::new(3, 5).build::<f64>(&mut rng).unwrap();
        let s = rnn.zero_state(1);
        check(&rnn, &s, 1, steps, &mut rng, "RNN");
        let stack = LstmConfig::new(3, 4).build_stack::<f64>(2, &mut rng).unwrap();
        let s = stack.zero_state(2);
        check(&stack, &s, 2, steps, &mut rng, "LSTM stack");
        let stack: Stack<_> = Stack::from_fn(2, |k| {
            RnnConfig::new(if k == 0 { 3 } else { 4 }, 4).with_layer(k).build::<f64>(&mut rng)
        })
        .unwrap();
        let s = stack.zero_state(3);
        check(&stack, &s, 3, steps, &mut rng, "RNN stack");
    }
}
