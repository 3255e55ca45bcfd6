//! What the shared suite cannot say about stacks: dropout in training, truncated BPTT with a
//! carried state, and construction errors.

mod common;

use common::{rand_mat, rand_state, GRAD_TOL};
use rnn_cells::RecurrentState;
use rnn_cells::{GruConfig, Lstm, LstmConfig, Recurrence, SeqInput, Stack};
use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
use rnn_tensor::{Mat, Parameters, Rng};

fn lstm_stack(i: usize, h: usize, layers: usize, seed: u64) -> Stack<Lstm<f64>> {
    LstmConfig::new(i, h).build_stack(layers, &mut Rng::seed_from(seed)).unwrap()
}

/// With dropout, the backward pass uses the masks of its forward: the gradient of a training
/// forward with fixed masks (the same Rng seed each time) matches the numeric one.
#[test]
fn dropout_gradients_match_numeric_with_fixed_masks() {
    let stack = lstm_stack(3, 4, 3, 1).with_dropout(0.4).unwrap();
    let mut rng = Rng::seed_from(2);
    let (b, t) = (2, 3);
    let x = rand_mat(3, t * b, &mut rng);
    let h0 = rand_state(&stack, b, &mut rng);
    let w = rand_mat(4, t * b, &mut rng);
    let loss = |s: &Stack<Lstm<f64>>| {
        let mut cache = Default::default();
        s.forward_train(SeqInput::Dense(&x), b, &h0, &mut cache, Some(&mut Rng::seed_from(9)));
        s.outputs(&cache).component_mul(&w).sum()
    };
    let mut cache = Default::default();
    stack.forward_train(SeqInput::Dense(&x), b, &h0, &mut cache, Some(&mut Rng::seed_from(9)));
    let mut grads = stack.zero_grads();
    let zero = stack.zero_state(b);
    stack.backward(SeqInput::Dense(&x), &mut cache, &w, &zero, &mut grads, None);
    let names: Vec<String> = grads.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 12);
    assert_eq!(names[4], "weight_ih_l1");
    for (k, name) in names.iter().enumerate() {
        let mut probe = stack.clone();
        let mut flat = probe.params().named_params()[k].1.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                probe.params_mut().named_params_mut()[k].1.copy_from_slice(v);
                loss(&probe)
            },
            &mut flat,
            1e-4,
        );
        let err = rel_error(&num, grads.named_params()[k].1.as_slice());
        assert!(err < GRAD_TOL, "{name}: {err:e}");
    }
    // Training with dropout changes the outputs; evaluation (no Rng) is the plain forward.
    let mut eval = Default::default();
    stack.forward(SeqInput::Dense(&x), b, &h0, &mut eval);
    let mut no_rng = Default::default();
    stack.forward_train(SeqInput::Dense(&x), b, &h0, &mut no_rng, None);
    assert_eq!(stack.outputs(&eval), stack.outputs(&no_rng));
    assert!(rel_error(stack.outputs(&eval).as_slice(), stack.outputs(&cache).as_slice()) > 1e-3);
    let plain = lstm_stack(3, 4, 3, 1);
    let mut plain_cache = Default::default();
    plain.forward(SeqInput::Dense(&x), b, &h0, &mut plain_cache);
    assert_eq!(stack.outputs(&eval), plain.outputs(&plain_cache));
}

/// Two windows of 3 steps with the state carried across give the same outputs and final state
/// as one window of 6, and chaining the returned initial-state gradient of the second window
/// into the first as its final-state gradient gives the full sequence's gradients (tolerance
/// 1e-12: the same arithmetic split differently).
#[test]
fn truncated_bptt_with_carried_state_matches_full_sequence() {
    let stack = GruConfig::new(3, 4).build_stack::<f64>(2, &mut Rng::seed_from(4)).unwrap();
    let mut rng = Rng::seed_from(5);
    let b = 2;
    let x = rand_mat(3, 6 * b, &mut rng);
    let h0 = rand_state(&stack, b, &mut rng);
    let w = rand_mat(4, 6 * b, &mut rng);
    let d_fin = rand_state(&stack, b, &mut rng);

    let mut full = Default::default();
    let fin_full = stack.forward(SeqInput::Dense(&x), b, &h0, &mut full);
    let mut g_full = stack.zero_grads();
    let d0_full = stack.backward(SeqInput::Dense(&x), &mut full, &w, &d_fin, &mut g_full, None);

    let (x1, x2) = (x.columns(0, 3 * b).into_owned(), x.columns(3 * b, 3 * b).into_owned());
    let (w1, w2) = (w.columns(0, 3 * b).into_owned(), w.columns(3 * b, 3 * b).into_owned());
    let (mut c1, mut c2) = (Default::default(), Default::default());
    let mid = stack.forward(SeqInput::Dense(&x1), b, &h0, &mut c1);
    let fin = stack.forward(SeqInput::Dense(&x2), b, &mid, &mut c2);
    let mut joined = stack.outputs(&c1).clone().resize_horizontally(6 * b, 0.0);
    joined.columns_mut(3 * b, 3 * b).copy_from(stack.outputs(&c2));
    assert!(rel_error(joined.as_slice(), stack.outputs(&full).as_slice()) < 1e-12);
    assert!(rel_error(&fin.to_flat(), &fin_full.to_flat()) < 1e-12);

    let mut g = stack.zero_grads();
    let d_mid = stack.backward(SeqInput::Dense(&x2), &mut c2, &w2, &d_fin, &mut g, None);
    let d0 = stack.backward(SeqInput::Dense(&x1), &mut c1, &w1, &d_mid, &mut g, None);
    assert!(rel_error(&d0.to_flat(), &d0_full.to_flat()) < 1e-12);
    for ((name, a), (_, b)) in g.named_params().into_iter().zip(g_full.named_params()) {
        assert!(rel_error(a.as_slice(), b.as_slice()) < 1e-12, "{name}");
    }
}

#[test]
fn construction_errors_say_what_to_fix() {
    let mut rng = Rng::seed_from(0);
    let l0 = LstmConfig::new(3, 4).build::<f64>(&mut rng).unwrap();
    let wrong_input = LstmConfig::new(5, 4).with_layer(1).build::<f64>(&mut rng).unwrap();
    let e = Stack::new(vec![l0.clone(), wrong_input]).unwrap_err().to_string();
    assert!(e.contains("input size 4"), "{e}");
    let unnamed = LstmConfig::new(4, 4).build::<f64>(&mut rng).unwrap();
    let e = Stack::new(vec![l0.clone(), unnamed]).unwrap_err().to_string();
    assert!(e.contains(".with_layer(1)"), "{e}");
    assert!(Stack::<Lstm<f64>>::new(vec![]).is_err());
    assert!(LstmConfig::new(3, 4).build_stack::<f64>(0, &mut rng).is_err());
    let s = Stack::new(vec![l0]).unwrap();
    assert!(s.clone().with_dropout(1.0).is_err());
    assert!(s.clone().with_dropout(-0.1).is_err());
    assert!(s.with_dropout(0.5).is_ok());
    let e = lstm_stack(3, 4, 2, 0).check_input(SeqInput::Dense(&Mat::zeros(3, 4)), 2, &vec![]).unwrap_err();
    assert!(e.to_string().contains("zero_state"), "{e}");
}
