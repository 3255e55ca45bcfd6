//! Every public constructor of the cells refuses bad values with a `CellError` (never a panic):
//! zero sizes, non-finite or inverted initialisations, non-finite weights, a bad dropout,
//! mismatched or empty stacks.

use rnn_cells::{Affine, AffineConfig, GruConfig, LinearConfig, LstmConfig, RnnConfig, Stack};
use rnn_tensor::init::Init;
use rnn_tensor::Rng;

fn bad_inits() -> Vec<Init> {
    vec![
        Init::Uniform { lo: f64::NAN, hi: 1.0 },
        Init::Uniform { lo: 1.0, hi: -1.0 },
        Init::Uniform { lo: 0.0, hi: f64::INFINITY },
        Init::Normal { mean: 0.0, std: -1.0 },
        Init::Normal { mean: f64::NAN, std: 1.0 },
        Init::TorchRecurrent { hidden: 0 },
    ]
}

#[test]
fn cell_configs_reject_bad_values() {
    let mut rng = Rng::seed_from(0);
    for (i, h) in [(0, 3), (3, 0), (0, 0)] {
        assert!(RnnConfig::new(i, h).build::<f64>(&mut rng).is_err(), "rnn {i}x{h}");
        assert!(LstmConfig::new(i, h).build::<f64>(&mut rng).is_err(), "lstm {i}x{h}");
        assert!(GruConfig::new(i, h).build::<f32>(&mut rng).is_err(), "gru {i}x{h}");
        assert!(AffineConfig::new(i, h).build::<f64>(&mut rng).is_err(), "affine {i}x{h}");
    }
    for init in bad_inits() {
        assert!(RnnConfig::new(2, 3).with_init(init).build::<f64>(&mut rng).is_err(), "rnn {init:?}");
        assert!(LstmConfig::new(2, 3).with_init(init).build::<f64>(&mut rng).is_err(), "lstm {init:?}");
        assert!(GruConfig::new(2, 3).with_init(init).build::<f64>(&mut rng).is_err(), "gru {init:?}");
        assert!(AffineConfig::new(2, 3).with_init(init).build::<f64>(&mut rng).is_err(), "affine {init:?}");
    }
    // Existing tensors are checked too: a bias of the wrong length is named, with both shapes.
    let mut p = AffineConfig::new(2, 3).with_prefix("head.").build::<f64>(&mut rng).unwrap().params;
    p.bias = rnn_tensor::Mat::zeros(2, 1);
    let e = Affine::from_params(p).unwrap_err().to_string();
    assert!(e.contains("head.bias") && e.contains("[3]") && e.contains("[3, 2]"), "{e}");
    for (wx, wr) in [(f64::NAN, 1.0), (1.0, f64::INFINITY)] {
        assert!(LinearConfig::new().with_weights(wx, wr).build::<f64>(&mut rng).is_err(), "{wx} {wr}");
    }
    // The good values build, so the refusals above are about the values.
    assert!(LstmConfig::new(2, 3).build::<f64>(&mut rng).is_ok());
    assert!(LinearConfig::new().with_weights(0.5, 1.0).build::<f64>(&mut rng).is_ok());
}

#[test]
fn stacks_reject_bad_layers_and_dropout() {
    let mut rng = Rng::seed_from(1);
    assert!(Stack::<rnn_cells::Lstm<f64>>::new::<f64>(vec![]).is_err(), "an empty stack");
    let l0 = LstmConfig::new(2, 3).build::<f64>(&mut rng).unwrap();
    // The second layer must read 3 inputs (the first layer's hidden size), not 5.
    let l1 = LstmConfig::new(5, 3).with_layer(1).build::<f64>(&mut rng).unwrap();
    assert!(Stack::new::<f64>(vec![l0.clone(), l1]).is_err(), "mismatched layer sizes");
    let l1 = LstmConfig::new(3, 3).with_layer(1).build::<f64>(&mut rng).unwrap();
    let stack = Stack::new::<f64>(vec![l0, l1]).unwrap();
    for p in [-0.1, 1.0, f64::NAN, f64::INFINITY] {
        assert!(stack.clone().with_dropout(p).is_err(), "dropout {p}");
    }
    assert!(stack.with_dropout(0.5).is_ok());
}

/// A projection only on the LSTM, smaller than the hidden size, and shaped to match `weight_hh`.
#[test]
fn projections_that_do_not_fit_are_errors() {
    let mut rng = Rng::seed_from(5);
    let e = GruConfig::new(2, 4).with_proj_size(2).build::<f64>(&mut rng).unwrap_err().to_string();
    assert!(e.contains("GRU") && e.contains("proj_size 2") && e.contains("only the LSTM"), "{e}");
    let e = RnnConfig::new(2, 4).with_proj_size(1).build::<f64>(&mut rng).unwrap_err().to_string();
    assert!(e.contains("only the LSTM"), "{e}");
    for p in [4, 5] {
        let e = LstmConfig::new(2, 4).with_proj_size(p).build::<f64>(&mut rng).unwrap_err().to_string();
        assert!(e.contains(&format!("proj_size {p} must be smaller than the hidden size 4")), "{e}");
    }
    // Existing tensors: weight_hr on a GRU, or of the wrong shape, is named with both shapes.
    let mut p = GruConfig::new(2, 4).build::<f64>(&mut rng).unwrap().params;
    p.weight_hr = Some(rnn_tensor::Mat::zeros(2, 4));
    let e = rnn_cells::Gru::from_params(p).unwrap_err().to_string();
    assert!(e.contains("weight_hr_l0") && e.contains("only the LSTM"), "{e}");
    let mut p = LstmConfig::new(2, 4).with_proj_size(2).build::<f64>(&mut rng).unwrap().params;
    p.weight_hr = Some(rnn_tensor::Mat::zeros(3, 4));
    let e = rnn_cells::Lstm::from_params(p.clone()).unwrap_err().to_string();
    assert!(e.contains("weight_hh_l0 is [16, 2], expected [16, 3]"), "{e}");
    p.weight_hr = Some(rnn_tensor::Mat::zeros(2, 5));
    let e = rnn_cells::Lstm::from_params(p).unwrap_err().to_string();
    assert!(e.contains("weight_hr_l0 is [2, 5], expected [proj_size, 4]"), "{e}");
}
