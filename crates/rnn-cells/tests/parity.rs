//! Parity with PyTorch's `nn.LSTM`, `nn.GRU` and `nn.RNN` (tanh, relu), 1 and 3 layers, and
//! bidirectional (`bidirectional=True`, 1 and 2 layers, with and without bias), and
//! `F.cross_entropy` (both reductions): outputs,
//! final states, and the gradients of every parameter, of the input and of the initial states,
//! within a relative error of 1e-10 in f64 (the fixtures hold 15 significant digits).
//!
//! The fixtures in `tests/fixtures/layers/` come from `tools/gen_layer_fixtures.py` (torch 2.15,
//! seeds in each file's `generator` field); that script documents the loss and the layouts.
//! Loading is generic: a model is built with any weights, then every tensor is overwritten by
//! name from the fixture, so a cell is added with one line.

mod common;

use rnn_cells::RecurrentState;
use rnn_cells::{
    softmax_cross_entropy, GruConfig, LstmConfig, Recurrence, Reduction, RnnConfig, SeqInput, Stack,
};
use rnn_tensor::activation::Activation;
use rnn_tensor::gradcheck::rel_error;
use rnn_tensor::{Mat, Parameters, Rng};
use serde_json::Value;

/// Relative error allowed between our f64 results and PyTorch's.
const TOL: f64 = 1e-10;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/layers/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}; run tools/gen_layer_fixtures.py"));
    serde_json::from_str(&text).unwrap()
}

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().expect("a list of numbers").iter().map(|x| x.as_f64().unwrap()).collect()
}

fn size(f: &Value, key: &str) -> usize {
    f[key].as_u64().unwrap() as usize
}

/// The per-layer slices `[k·B·H, (k+1)·B·H)` of each listed (L·D, B, H) tensor, concatenated per
/// layer and direction: the flat order of `Vec<state>` (h then c for an LSTM; a bidirectional
/// layer's state is its forward direction's, then its reverse direction's).
fn layer_states(f: &Value, keys: &[&str]) -> Vec<f64> {
    let n = size(f, "batch") * size(f, "hidden");
    let parts: Vec<Vec<f64>> = keys.iter().filter(|k| !f[**k].is_null()).map(|k| nums(&f[*k])).collect();
    let directions = f["directions"].as_u64().unwrap_or(1) as usize;
    (0..size(f, "num_layers") * directions)
        .flat_map(|k| parts.iter().flat_map(move |p| p[k * n..(k + 1) * n].to_vec()))
        .collect()
}

/// Checks a model (a lone cell for 1-layer fixtures, a stack for 3) against a fixture.
fn check<R: Recurrence<f64>>(mut model: R, name: &str)
where
    R::State: RecurrentState<f64>,
{
    let f = fixture(name);
    let (i, b, t) = (size(&f, "input"), size(&f, "batch"), size(&f, "steps"));
    // The output size: H, or 2H for a bidirectional model.
    let h = model.hidden_size();
    let mut loaded = 0;
    for (pname, m) in model.params_mut().named_params_mut() {
        let p = &f["params"][&pname];
        assert!(!p.is_null(), "{name}: PyTorch has no parameter {pname}");
        let shape: Vec<usize> =
            p["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let cols = if shape.len() == 2 { shape[1] } else { 1 };
        assert_eq!((m.nrows(), m.ncols()), (shape[0], cols), "{name}: {pname} shape");
        // PyTorch's row-major [rows, cols] into our column-major matrix.
        m.copy_from(&Mat::from_row_slice(shape[0], cols, &nums(&p["data"])));
        loaded += 1;
    }
    assert_eq!(
        loaded,
        f["params"].as_object().unwrap().len(),
        "{name}: not every PyTorch parameter was loaded"
    );

    let zero = model.zero_state(b);
    let (h0, d_fin) = (
        zero.with_flat(&layer_states(&f, &["h0", "c0"])),
        zero.with_flat(&layer_states(&f, &["w_hn", "w_cn"])),
    );
    // x is (T, B, I) row-major: exactly our I × (T·B) column-major layout.
    let x = Mat::from_column_slice(i, t * b, &nums(&f["x"]));
    let mut cache = R::Cache::default();
    let fin = model.forward(SeqInput::Dense(&x), b, &h0, &mut cache);
    let err = rel_error(model.outputs(&cache).as_slice(), &nums(&f["out"]));
    assert!(err < TOL, "{name}: output differs by {err:e}");
    let err = rel_error(&fin.to_flat(), &layer_states(&f, &["h_n", "c_n"]));
    assert!(err < TOL, "{name}: final state differs by {err:e}");

    let w_out = Mat::from_column_slice(h, t * b, &nums(&f["w_out"]));
    let mut grads = model.params().clone();
    grads.zero();
    let mut d_x = Mat::zeros(i, t * b);
    let d_h0 = model.backward(SeqInput::Dense(&x), &mut cache, &w_out, &d_fin, &mut grads, Some(&mut d_x));
    for (pname, g) in grads.named_params() {
        let err = rel_error(
            g.as_slice(),
            Mat::from_row_slice(g.nrows(), g.ncols(), &nums(&f["grads"][&pname])).as_slice(),
        );
        assert!(err < TOL, "{name}: gradient of {pname} differs by {err:e}");
    }
    let err = rel_error(d_x.as_slice(), &nums(&f["d_x"]));
    assert!(err < TOL, "{name}: input gradient differs by {err:e}");
    let err = rel_error(&d_h0.to_flat(), &layer_states(&f, &["d_h0", "d_c0"]));
    assert!(err < TOL, "{name}: initial-state gradient differs by {err:e}");
}

fn rng() -> Rng {
    Rng::seed_from(0)
}

#[test]
fn lstm_one_layer() {
    check(LstmConfig::new(3, 3).build::<f64>(&mut rng()).unwrap(), "lstm_l1");
}

#[test]
fn lstm_one_layer_without_bias() {
    check(LstmConfig::new(3, 3).with_bias(false).build::<f64>(&mut rng()).unwrap(), "lstm_l1_nobias");
}

#[test]
fn lstm_three_layers() {
    check(LstmConfig::new(2, 2).build_stack::<f64>(3, &mut rng()).unwrap(), "lstm_l3");
}

#[test]
fn gru_one_layer() {
    check(GruConfig::new(3, 4).build::<f64>(&mut rng()).unwrap(), "gru_l1");
}

#[test]
fn gru_three_layers() {
    check(GruConfig::new(2, 2).build_stack::<f64>(3, &mut rng()).unwrap(), "gru_l3");
}

#[test]
fn softmax_cross_entropy_both_reductions() {
    let f = fixture("softmax_ce");
    let (v, n) = (size(&f, "classes"), size(&f, "steps") * size(&f, "batch"));
    // logits (T·B, V) row-major is our V × (T·B) column-major.
    let z = Mat::from_column_slice(v, n, &nums(&f["logits"]));
    let y: Vec<usize> = nums(&f["targets"]).iter().map(|&t| t as usize).collect();
    for (key, red) in [("mean", Reduction::Mean), ("sum_time_mean_batch", Reduction::SumTimeMeanBatch)] {
        let mut d = Mat::zeros(0, 0);
        let loss = softmax_cross_entropy(&z, &y, size(&f, "batch"), red, Some(&mut d)).unwrap();
        let want = f[key]["loss"].as_f64().unwrap();
        assert!((loss - want).abs() <= TOL * want.abs(), "{key}: loss {loss} vs PyTorch {want}");
        let err = rel_error(d.as_slice(), &nums(&f[key]["grad"]));
        assert!(err < TOL, "{key}: gradient differs by {err:e}");
    }
}

fn rnn_stack(i: usize, h: usize, act: Activation) -> Stack<rnn_cells::Rnn<f64>> {
    let mut rng = rng();
    Stack::from_fn(3, |k| {
        RnnConfig::new(if k == 0 { i } else { h }, h).with_activation(act).with_layer(k).build(&mut rng)
    })
    .unwrap()
}

#[test]
fn rnn_tanh_one_layer() {
    check(RnnConfig::new(3, 4).build::<f64>(&mut rng()).unwrap(), "rnn_tanh_l1");
}

#[test]
fn rnn_tanh_three_layers() {
    check(rnn_stack(2, 3, Activation::Tanh), "rnn_tanh_l3");
}

#[test]
fn rnn_relu_one_layer() {
    check(
        RnnConfig::new(3, 4).with_activation(Activation::Relu).build::<f64>(&mut rng()).unwrap(),
        "rnn_relu_l1",
    );
}

#[test]
fn rnn_relu_three_layers() {
    check(rnn_stack(2, 3, Activation::Relu), "rnn_relu_l3");
}

#[test]
fn lstm_bidirectional() {
    check(LstmConfig::new(3, 3).build_bidirectional::<f64>(&mut rng()).unwrap(), "lstm_bi_l1");
    check(LstmConfig::new(2, 3).build_bidirectional_stack::<f64>(2, &mut rng()).unwrap(), "lstm_bi_l2");
    check(
        LstmConfig::new(2, 2).with_bias(false).build_bidirectional_stack::<f64>(2, &mut rng()).unwrap(),
        "lstm_bi_l2_nobias",
    );
}

#[test]
fn gru_bidirectional() {
    check(GruConfig::new(3, 4).build_bidirectional::<f64>(&mut rng()).unwrap(), "gru_bi_l1");
    check(GruConfig::new(2, 3).build_bidirectional_stack::<f64>(2, &mut rng()).unwrap(), "gru_bi_l2");
}

#[test]
fn rnn_bidirectional() {
    check(RnnConfig::new(3, 3).build_bidirectional_stack::<f64>(2, &mut rng()).unwrap(), "rnn_tanh_bi_l2");
    check(
        RnnConfig::new(3, 4)
            .with_activation(Activation::Relu)
            .build_bidirectional::<f64>(&mut rng())
            .unwrap(),
        "rnn_relu_bi_l1",
    );
}
