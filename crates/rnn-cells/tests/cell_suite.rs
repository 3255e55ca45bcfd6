//! The shared suite (`common/mod.rs`) run over every cell and stack: a cell is added with one
//! line in `suite!`. Gradient checks run over random shapes with proptest, in f64.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rnn_cells::{GruConfig, LinearConfig, LstmConfig, Recurrence, RnnConfig, SeqInput, Stack};
use rnn_tensor::activation::Activation;
use rnn_tensor::Rng;

/// Instantiates every property of the suite for one cell. `$make` builds the cell from
/// `(input, hidden, &mut Rng)`; a cell with fixed sizes (the linear cell) may ignore them, the
/// tests read the sizes back from the cell.
macro_rules! suite {
    ($name:ident, $make:expr) => {
        suite!($name, $make, true);
    };
    // `step` is `false` for layers that read the sequence backwards (a reverse or bidirectional
    // layer), whose outputs depend on later steps, so that stepping cannot reproduce them.
    ($name:ident, $make:expr, $step:expr) => {
        mod $name {
            use super::*;

            fn make(i: usize, h: usize, seed: u64) -> impl rnn_cells::Recurrence<f64, State: rnn_cells::RecurrentState<f64>> + Clone {
                let mut rng = Rng::seed_from(seed);
                ($make)(i, h, &mut rng)
            }

            #[test]
            fn gradients_dense_fixed_shape() {
                let cell = make(4, 3, 1);
                let x = rand_mat(cell.input_size(), 3 * 2, &mut Rng::seed_from(2));
                assert_gradients(&cell, SeqInput::Dense(&x), 2, 3);
            }

            #[test]
            fn gradients_index_input() {
                let cell = make(5, 3, 4);
                let ix = [0usize, 4, 2, 2, 1, 3].map(|i| i % cell.input_size());
                assert_gradients(&cell, SeqInput::<f64>::Index(&ix), 3, 5);
            }

            #[test]
            fn step_matches_forward() {
                if !$step {
                    return;
                }
                let cell = make(4, 5, 6);
                let x = rand_mat(cell.input_size(), 4 * 3, &mut Rng::seed_from(7));
                assert_step_matches_forward(&cell, SeqInput::Dense(&x), 3, 8);
                let ix = [1usize, 0, 3, 3, 2, 1].map(|i| i % cell.input_size());
                assert_step_matches_forward(&cell, SeqInput::<f64>::Index(&ix), 1, 9);
            }

            #[test]
            fn index_matches_one_hot() {
                assert_index_matches_one_hot(&make(6, 4, 10), 2, 4, 11);
            }

            #[test]
            fn shape_errors_and_empty_sequence() {
                assert_shape_errors_and_empty_sequence(&make(3, 4, 12));
            }

            #[test]
            fn cache_reuse_is_exact() {
                assert_cache_reuse_is_exact(&make(3, 4, 13), 14);
            }

            proptest! {
                // A fixed seed and no persistence file: the same cases on every run.
                #![proptest_config(ProptestConfig {
                    cases: 16,
                    rng_seed: RngSeed::Fixed(0x1a7e5),
                    failure_persistence: None,
                    ..ProptestConfig::default()
                })]
                #[test]
                fn gradients_random_shapes(i in 1usize..5, h in 1usize..5, b in 1usize..4, t in 1usize..4, seed in 0u64..1000) {
                    let cell = make(i, h, seed);
                    let x = rand_mat(cell.input_size(), t * b, &mut Rng::seed_from(seed + 1));
                    for (name, err) in gradient_errors(&cell, SeqInput::Dense(&x), b, seed + 2) {
                        prop_assert!(err < GRAD_TOL, "dense input: {} relative error {:e}", name, err);
                    }
                    let mut rng = Rng::seed_from(seed + 3);
                    let ix: Vec<usize> = (0..t * b).map(|_| rng.below(cell.input_size())).collect();
                    for (name, err) in gradient_errors(&cell, SeqInput::<f64>::Index(&ix), b, seed + 4) {
                        prop_assert!(err < GRAD_TOL, "index input: {} relative error {:e}", name, err);
                    }
                }
            }
        }
    };
}

suite!(lstm, |i, h, rng: &mut Rng| LstmConfig::new(i, h).build::<f64>(rng).unwrap());
suite!(lstm_no_bias, |i, h, rng: &mut Rng| LstmConfig::new(i, h).with_bias(false).build::<f64>(rng).unwrap());
suite!(lstm_stack3, |i, h, rng: &mut Rng| LstmConfig::new(i, h).build_stack::<f64>(3, rng).unwrap());
suite!(gru, |i, h, rng: &mut Rng| GruConfig::new(i, h).build::<f64>(rng).unwrap());
suite!(gru_no_bias, |i, h, rng: &mut Rng| GruConfig::new(i, h).with_bias(false).build::<f64>(rng).unwrap());
suite!(gru_stack2, |i, h, rng: &mut Rng| GruConfig::new(i, h).build_stack::<f64>(2, rng).unwrap());
suite!(linear, |_, _, rng: &mut Rng| LinearConfig::new().build::<f64>(rng).unwrap());
suite!(rnn_tanh, |i, h, rng: &mut Rng| RnnConfig::new(i, h).build::<f64>(rng).unwrap());
suite!(rnn_relu, |i, h, rng: &mut Rng| RnnConfig::new(i, h)
    .with_activation(Activation::Relu)
    .build::<f64>(rng)
    .unwrap());
suite!(rnn_sigmoid_no_bias, |i, h, rng: &mut Rng| RnnConfig::new(i, h)
    .with_activation(Activation::Sigmoid)
    .with_bias(false)
    .build::<f64>(rng)
    .unwrap());
suite!(rnn_stack3, |i, h, rng: &mut Rng| Stack::from_fn(3, |k| RnnConfig::new(
    if k == 0 { i } else { h },
    h
)
.with_layer(k)
.build::<f64>(rng))
.unwrap());
// Projections need H ≥ 2: the suite's `h` (from 1) becomes H = h + 1 and P = ⌈h / 2⌉.
suite!(lstm_proj, |i, h: usize, rng: &mut Rng| LstmConfig::new(i, h + 1)
    .with_proj_size(h.div_ceil(2))
    .build::<f64>(rng)
    .unwrap());
suite!(lstm_proj_stack2, |i, h: usize, rng: &mut Rng| LstmConfig::new(i, h + 1)
    .with_proj_size(h.div_ceil(2))
    .with_bias(false)
    .build_stack::<f64>(2, rng)
    .unwrap());
suite!(
    lstm_proj_bidirectional_stack2,
    |i, h: usize, rng: &mut Rng| LstmConfig::new(i, h + 1)
        .with_proj_size(h.div_ceil(2))
        .build_bidirectional_stack::<f64>(2, rng)
        .unwrap(),
    false
);
suite!(
    lstm_reverse,
    |i, h, rng: &mut Rng| LstmConfig::new(i, h).with_reverse(true).build::<f64>(rng).unwrap(),
    false
);
suite!(
    lstm_bidirectional,
    |i, h, rng: &mut Rng| LstmConfig::new(i, h).build_bidirectional::<f64>(rng).unwrap(),
    false
);
suite!(
    gru_bidirectional_stack2,
    |i, h, rng: &mut Rng| GruConfig::new(i, h).build_bidirectional_stack::<f64>(2, rng).unwrap(),
    false
);
suite!(
    rnn_relu_bidirectional_stack3,
    |i, h, rng: &mut Rng| RnnConfig::new(i, h)
        .with_activation(Activation::Relu)
        .with_bias(false)
        .build_bidirectional_stack::<f64>(3, rng)
        .unwrap(),
    false
);
