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
use std::collections::BTreeMap;

use rnn_cells::{
    softmax_cross_entropy, with_torch_module, GruConfig, LstmConfig, Recurrence, Reduction, RnnConfig,
    SeqInput, Stack, TorchRecurrent, TorchTensor,
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
        let p = &f["params"][torch_name(&f, &pname)];
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
            Mat::from_row_slice(g.nrows(), g.ncols(), &nums(&f["grads"][torch_name(&f, &pname)])).as_slice(),
        );
        assert!(err < TOL, "{name}: gradient of {pname} differs by {err:e}");
    }
    let err = rel_error(d_x.as_slice(), &nums(&f["d_x"]));
    assert!(err < TOL, "{name}: input gradient differs by {err:e}");
    let err = rel_error(&d_h0.to_flat(), &layer_states(&f, &["d_h0", "d_c0"]));
    assert!(err < TOL, "{name}: initial-state gradient differs by {err:e}");
}

/// PyTorch's name of our parameter `name` in fixture `f`: the same, but for a cell's fixture
/// (`nn.LSTMCell`, ...), whose names have no `_l0`.
fn torch_name<'a>(f: &Value, name: &'a str) -> &'a str {
    match f["module"].as_str() {
        Some(m) if m.ends_with("Cell") => name.strip_suffix("_l0").unwrap_or(name),
        _ => name,
    }
}

fn rng() -> Rng {
    Rng::seed_from(0)
}

/// `nn.LSTMCell`, `nn.GRUCell` and `nn.RNNCell` (relu, no bias) applied at every step in a
/// loop: our one-layer modules, outputs and every gradient.
#[test]
fn cells_applied_at_every_step() {
    check(LstmConfig::new(3, 4).build::<f64>(&mut rng()).unwrap(), "lstm_cell");
    check(GruConfig::new(2, 3).build::<f64>(&mut rng()).unwrap(), "gru_cell");
    let relu = RnnConfig::new(3, 4).with_activation(Activation::Relu).with_bias(false);
    check(relu.build::<f64>(&mut rng()).unwrap(), "rnn_cell_relu_nobias");
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

/// A `state_dict`: tensors by name.
type StateDict = BTreeMap<String, TorchTensor<f64>>;

/// A fixture's parameters as PyTorch's `state_dict`: names, shapes and row-major values.
fn state_dict(f: &Value) -> StateDict {
    f["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| {
            let shape = p["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            (k.clone(), TorchTensor { shape, data: nums(&p["data"]) })
        })
        .collect()
}

/// The forward of `model`, loaded from the fixture's state_dict alone, against PyTorch's outputs
/// and final states (1e-10).
fn forward_matches<R: Recurrence<f64>>(model: &R, f: &Value, name: &str) {
    let (i, b, t) = (size(f, "input"), size(f, "batch"), size(f, "steps"));
    let zero = model.zero_state(b);
    let h0 = zero.with_flat(&layer_states(f, &["h0", "c0"]));
    let x = Mat::from_column_slice(i, t * b, &nums(&f["x"]));
    let mut cache = R::Cache::default();
    let fin = model.forward(SeqInput::Dense(&x), b, &h0, &mut cache);
    let err = rel_error(model.outputs(&cache).as_slice(), &nums(&f["out"]));
    assert!(err < TOL, "{name}: output differs by {err:e}");
    let err = rel_error(&fin.to_flat(), &layer_states(f, &["h_n", "c_n"]));
    assert!(err < TOL, "{name}: final state differs by {err:e}");
}

/// Every module fixture (LSTM, GRU, RNN tanh and relu; 1 to 3 layers; one and two directions;
/// with and without bias) loaded by `TorchRecurrent::from_state_dict` from its tensors alone:
/// the kind, sizes, layers and directions it infers are PyTorch's, and so are the outputs and
/// final states (1e-10).
#[test]
fn state_dicts_load_as_they_are() {
    let names = [
        "lstm_l1",
        "lstm_l3",
        "lstm_l1_nobias",
        "gru_l1",
        "gru_l3",
        "rnn_tanh_l1",
        "rnn_tanh_l3",
        "rnn_relu_l1",
        "rnn_relu_l3",
        "lstm_bi_l1",
        "lstm_bi_l2",
        "lstm_bi_l2_nobias",
        "gru_bi_l1",
        "gru_bi_l2",
        "rnn_tanh_bi_l2",
        "rnn_relu_bi_l1",
        "lstm_cell",
        "gru_cell",
        "rnn_cell_relu_nobias",
    ];
    for name in names {
        let f = fixture(name);
        let act = Activation::from_name(f["nonlinearity"].as_str().unwrap()).unwrap_or(Activation::Tanh);
        let tensors = state_dict(&f);
        let shape = rnn_cells::torch::module_shape(&tensors).unwrap();
        let directions = f["directions"].as_u64().unwrap_or(1) as usize;
        assert_eq!(shape.kind.to_lowercase(), f["kind"].as_str().unwrap(), "{name}");
        assert_eq!(
            (shape.input, shape.hidden, shape.layers, shape.bidirectional, shape.bias),
            (
                size(&f, "input"),
                size(&f, "hidden"),
                size(&f, "num_layers"),
                directions == 2,
                f["bias"].as_bool().unwrap()
            ),
            "{name}"
        );
        assert_eq!(shape.cell, f["module"].as_str().is_some_and(|m| m.ends_with("Cell")), "{name}");
        let module = TorchRecurrent::from_state_dict(&tensors, act).unwrap();
        assert_eq!(module.output_size(), directions * size(&f, "hidden"), "{name}");
        with_torch_module!(&module, |m| forward_matches(m, &f, name));
    }
}

/// What does not fit is an error naming the tensor (and the shapes), never a panic.
#[test]
fn state_dicts_that_do_not_fit_are_errors() {
    // The error of fixture `base`'s state_dict after `edit`.
    let edited = |base: &str, edit: &dyn Fn(&mut StateDict)| {
        let mut t = state_dict(&fixture(base));
        edit(&mut t);
        TorchRecurrent::from_state_dict(&t, Activation::Tanh).unwrap_err().to_string()
    };
    let err = |edit: &dyn Fn(&mut StateDict)| edited("lstm_bi_l2", edit);
    let e = err(&|t| {
        t.remove("weight_hh_l1_reverse");
    });
    assert!(e.contains("weight_hh_l1_reverse"), "{e}");
    let e = err(&|t| t.get_mut("weight_ih_l1").unwrap().shape = vec![12, 3]);
    assert!(e.contains("weight_ih_l1") && e.contains("[12, 3]") && e.contains("[12, 6]"), "{e}");
    let e = err(&|t| {
        t.insert("weight_hr_l0".into(), TorchTensor { shape: vec![2, 3], data: vec![0.0; 6] });
    });
    assert!(e.contains("weight_hr_l0") && e.contains("proj_size"), "{e}");
    let e = err(&|t| {
        t.insert("running_mean".into(), TorchTensor { shape: vec![3], data: vec![0.0; 3] });
    });
    assert!(e.contains("unknown tensor running_mean"), "{e}");
    let e = err(&|t| {
        t.insert("bias_ih_l5".into(), TorchTensor { shape: vec![12], data: vec![0.0; 12] });
    });
    // A tensor of a sixth layer makes the module six layers deep: layer 2's tensors are missing.
    assert!(e.contains("the state_dict has no bias_ih_l2"), "{e}");
    let e = err(&|t| t.get_mut("weight_hh_l0").unwrap().shape = vec![10, 3]);
    assert!(e.contains("weight_hh_l0") && e.contains("[10, 3]"), "{e}");
    // A cell's state_dict with a tensor no cell has, or mixed with a module's: not a cell's.
    let cell_err = |edit: &dyn Fn(&mut StateDict)| edited("lstm_cell", edit);
    let e = cell_err(&|t| {
        t.insert("weight_hr".into(), TorchTensor { shape: vec![2, 4], data: vec![0.0; 8] });
    });
    assert!(e.contains("unknown tensor bias_hh:") && e.contains("a cell's weight_ih"), "{e}");
    let e = cell_err(&|t| {
        let w = t.remove("weight_ih").unwrap();
        t.insert("weight_ih_l0".into(), w);
    });
    assert!(e.contains("unknown tensor bias_hh:"), "{e}");
    let e = cell_err(&|t| t.get_mut("weight_hh").unwrap().shape = vec![16, 5]);
    assert!(e.contains("weight_hh is [16, 5]"), "{e}");
}
