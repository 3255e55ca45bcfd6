//! The layer engine's routes, for every cell: f32 against f64 (the strips route of the backward
//! on AVX-512 CPUs), dense one-hot input against input by index (strips against the plain
//! gradient buffers, bit for bit), and the configuration convention's errors.

use std::sync::Mutex;

use rnn_cells::{
    Cell, GruCell, Layer, LayerCache, LstmCell, LstmConfig, Recurrence, RecurrentConfig, RecurrentParams,
    RecurrentState, RnnCell, SeqInput,
};
use rnn_tensor::activation::Activation;
use rnn_tensor::gradcheck::rel_error;
use rnn_tensor::init::Init;
use rnn_tensor::{Mat, Parameters, Rng};

/// Thread counts are global: the tests that set them run one at a time.
static THREADS: Mutex<()> = Mutex::new(());

/// One of the engine's cells, so that one generic test body runs over all of them.
#[derive(Clone, Copy)]
enum AnyCell {
    Lstm,
    Gru,
    Rnn(Activation),
}

const ALL: [(&str, AnyCell); 5] = [
    ("LSTM", AnyCell::Lstm),
    ("GRU", AnyCell::Gru),
    ("RNN tanh", AnyCell::Rnn(Activation::Tanh)),
    ("RNN relu", AnyCell::Rnn(Activation::Relu)),
    ("RNN sigmoid", AnyCell::Rnn(Activation::Sigmoid)),
];

/// Runs `f` on the cell `c` as the concrete type the engine instantiates.
macro_rules! with_cell {
    ($c:expr, $f:ident($($arg:expr),*)) => {
        match $c {
            AnyCell::Lstm => $f(LstmCell, $($arg),*),
            AnyCell::Gru => $f(GruCell, $($arg),*),
            AnyCell::Rnn(activation) => $f(RnnCell { activation }, $($arg),*),
        }
    };
}

fn widen(m: &Mat<f32>) -> Vec<f64> {
    m.iter().map(|&v| v as f64).collect()
}

/// The same seed gives the same weights in f32 and f64 (draws are made in f64), so the two
/// precisions agree to f32 rounding: tolerance 1e-5 on the outputs after 5 steps of batch 2.
fn f32_and_f64_agree<C: Cell<f32> + Cell<f64>>(cell: C, name: &str) {
    let cfg = RecurrentConfig::<C>::new(4, 5).with_cell(cell);
    let c64 = cfg.build::<f64>(&mut Rng::seed_from(1)).unwrap();
    let c32 = cfg.build::<f32>(&mut Rng::seed_from(1)).unwrap();
    let ix: Vec<usize> = (0..10).map(|k| k % 4).collect();
    let (mut k64, mut k32) = (LayerCache::default(), LayerCache::default());
    c64.forward(SeqInput::Index(&ix), 2, &c64.zero_state(2), &mut k64);
    c32.forward(SeqInput::Index(&ix), 2, &c32.zero_state(2), &mut k32);
    let e = rel_error(c64.outputs(&k64).as_slice(), &widen(c32.outputs(&k32)));
    assert!(e < 1e-5, "{name}: f32 against f64, rel_error {e:e}");
}

#[test]
fn f32_and_f64_agree_for_every_cell() {
    for (name, c) in ALL {
        with_cell!(c, f32_and_f64_agree(name));
    }
}

/// Every gradient of the f32 backward (on AVX-512 CPUs the route that keeps the gate gradients
/// in strips: the step products, `dW_ih`, `dW_hh`, `d_x` and the bias sums, on the `dW_ih` or
/// the `dW_hh` product, read them in place) against the f64 backward on the same weights and
/// inputs, from a non-zero initial state, forward and reverse in time, with dense input and with
/// the input as indices (one-hot: `dW_ih` is a scatter-add), with one thread and with the batch
/// split in two. Tolerance: rel_error < 1e-4 per gradient (f32 rounding over 6 steps; a wrong
/// column or strip, or one step left out of a sum, gives errors of order 1e-1).
fn f32_backward_matches_f64<C: Cell<f32> + Cell<f64>>(cell: C, name: &str) {
    let (inp, hid, batch, steps) = (37, 40, 24, 6);
    let n = steps * batch;
    let mut rng = Rng::seed_from(9);
    let x64 = Mat::from_fn(inp, n, |_, _| rng.uniform(-1.0, 1.0));
    let ix: Vec<usize> = (0..n).map(|_| rng.below(inp)).collect();
    let d64 = Mat::from_fn(hid, n, |_, _| rng.uniform(-1.0, 1.0));
    let (x32, d32) = (x64.map(|v| v as f32), d64.map(|v| v as f32));
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    for (reverse, one_hot) in [(false, false), (true, false), (false, true), (true, true)] {
        let cfg = RecurrentConfig::<C>::new(inp, hid).with_cell(cell).with_reverse(reverse);
        let l64 = cfg.build::<f64>(&mut Rng::seed_from(8)).unwrap();
        let l32 = cfg.build::<f32>(&mut Rng::seed_from(8)).unwrap();
        let (in64, in32) = if one_hot {
            (SeqInput::Index(&ix), SeqInput::Index(&ix))
        } else {
            (SeqInput::Dense(&x64), SeqInput::Dense(&x32))
        };
        let s64 = l64.zero_state(batch);
        let flat: Vec<f64> = s64.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect();
        let s64 = s64.with_flat(&flat);
        let s32 = l32.zero_state(batch).with_flat(&flat);
        let mut c64 = LayerCache::default();
        l64.forward(in64, batch, &s64, &mut c64);
        let mut g64 = l64.zero_grads();
        let mut dx64 = Mat::zeros(inp, n);
        let ds64 = l64.backward(in64, &mut c64, &d64, &s64, &mut g64, (!one_hot).then_some(&mut dx64));
        let what = format!(
            "{name}{}{}",
            if reverse { ", reverse" } else { "" },
            if one_hot { ", one-hot" } else { "" }
        );
        for threads in [1, 2] {
            let before = rnn_tensor::parallel::num_threads();
            rnn_tensor::parallel::set_num_threads(threads);
            let mut c32 = LayerCache::default();
            l32.forward(in32, batch, &s32, &mut c32);
            let mut g32 = l32.zero_grads();
            let mut dx32 = Mat::zeros(inp, n);
            let ds32 = l32.backward(in32, &mut c32, &d32, &s32, &mut g32, (!one_hot).then_some(&mut dx32));
            rnn_tensor::parallel::set_num_threads(before);
            let mut pairs = vec![("initial state".to_string(), ds64.to_flat(), ds32.to_flat())];
            if !one_hot {
                pairs.push(("d_x".to_string(), dx64.as_slice().to_vec(), widen(&dx32)));
            }
            for ((n64, m64), (_, m32)) in g64.named_params().into_iter().zip(g32.named_params()) {
                pairs.push((n64, m64.as_slice().to_vec(), widen(m32)));
            }
            for (tensor, a, b) in pairs {
                let e = rel_error(&a, &b);
                assert!(
                    e < 1e-4,
                    "{what} {tensor} with {threads} thread(s): f32 against f64, rel_error {e:e}"
                );
            }
        }
    }
}

#[test]
fn f32_backward_matches_f64_for_every_cell() {
    for (name, c) in ALL {
        with_cell!(c, f32_backward_matches_f64(name));
    }
}

/// With dense input the f32 backward keeps the input-side gradients in strips (AVX-512 CPUs);
/// with the same input as indices it keeps them plain (the scatter-add reads them). The forward
/// values are the same bits (a one-hot product adds exact zeros), so `dW_hh`, the biases'
/// gradients and the initial-state gradients must be the same bits too (tolerance: none), with
/// one thread and with two (the time loop split into two batch parts); `dW_ih` agrees to 1e-6.
/// `H = 40`: `G·H` is not a multiple of the 32-row strips for any cell.
fn strips_backward_matches_plain_backward<C: Cell<f32>>(cell: C, name: &str) {
    let (inp, hid, batch, steps) = (30, 40, 24, 5);
    let layer =
        RecurrentConfig::<C>::new(inp, hid).with_cell(cell).build::<f32>(&mut Rng::seed_from(3)).unwrap();
    let mut rng = Rng::seed_from(4);
    let ix: Vec<usize> = (0..steps * batch).map(|_| rng.below(inp)).collect();
    let onehot = Mat::from_fn(inp, ix.len(), |i, k| if ix[k] == i { 1.0f32 } else { 0.0 });
    let d_out = Mat::from_fn(hid, ix.len(), |_, _| rng.uniform(-1.0, 1.0) as f32);
    let z = layer.zero_state(batch);
    let h0 = z.with_flat(&z.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<_>>());
    let d_fin = z.with_flat(&z.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<_>>());
    let run = |x: SeqInput<'_, f32>| {
        let mut cache = LayerCache::default();
        layer.forward(x, batch, &h0, &mut cache);
        let mut g = layer.zero_grads();
        let d0 = layer.backward(x, &mut cache, &d_out, &d_fin, &mut g, None);
        (g, d0)
    };
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let threads = rnn_tensor::parallel::num_threads();
    for t in [1, 2] {
        rnn_tensor::parallel::set_num_threads(t);
        let (gd, dd) = run(SeqInput::Dense(&onehot));
        let (gi, di) = run(SeqInput::Index(&ix));
        assert!(gd.weight_hh == gi.weight_hh, "{name}, {t} threads: dW_hh");
        assert!(gd.bias_ih == gi.bias_ih && gd.bias_hh == gi.bias_hh, "{name}, {t} threads: db");
        assert!(dd == di, "{name}, {t} threads: initial-state gradients");
        let e = rel_error(&widen(&gd.weight_ih), &widen(&gi.weight_ih));
        assert!(e < 1e-6, "{name}, {t} threads: dW_ih, rel_error {e:e}");
    }
    rnn_tensor::parallel::set_num_threads(threads);
}

#[test]
fn strips_backward_matches_plain_backward_for_every_cell() {
    for (name, c) in ALL {
        with_cell!(c, strips_backward_matches_plain_backward(name));
    }
}

/// A change that makes a layer's tensors wrong.
type Spoil = fn(&mut RecurrentParams<f64>);

/// The configuration convention: sizes and initialisers are checked at `build`, and
/// `from_params` names the tensor and both shapes.
fn configuration_errors<C: Cell<f64>>(cell: C, name: &str) {
    let mut rng = Rng::seed_from(0);
    let e = RecurrentConfig::<C>::new(0, 3).with_cell(cell).build::<f64>(&mut rng).unwrap_err();
    assert!(e.to_string().contains("input size > 0"), "{name}: {e}");
    assert!(RecurrentConfig::<C>::new(2, 0).with_cell(cell).build::<f64>(&mut rng).is_err());
    let bad = Init::Uniform { lo: 1.0, hi: -1.0 };
    assert!(RecurrentConfig::<C>::new(2, 3).with_cell(cell).with_init(bad).build::<f64>(&mut rng).is_err());
    let layer =
        RecurrentConfig::<C>::new(3, 16).with_cell(cell).with_layer(1).build::<f64>(&mut rng).unwrap();
    // PyTorch's bound: every weight within 1/sqrt(H).
    assert!(layer.params.weight_hh.iter().all(|v| v.abs() <= 0.25), "{name}");
    assert_eq!(layer.params.weight_ih.shape(), (C::GATES * 16, 3), "{name}");
    let good = layer.params.clone();
    let cases: [(&str, Spoil, &str); 3] = [
        ("weight_hh_l1", |p| p.weight_hh = Mat::zeros(p.weight_hh.nrows(), 15), "expected ["),
        ("bias_ih_l1", |p| p.bias_ih = Some(Mat::zeros(7, 1)), "expected ["),
        ("bias", |p| p.bias_hh = None, "neither"),
    ];
    for (tensor, spoil, says) in cases {
        let mut p = good.clone();
        spoil(&mut p);
        let e = Layer::new(p, cell).unwrap_err().to_string();
        assert!(e.contains(tensor) && e.contains(says) && e.contains(name), "{name}, {tensor}: {e}");
    }
    assert!(Layer::new(good, cell).is_ok());
}

#[test]
fn configuration_errors_name_the_tensor() {
    for (_, c) in ALL {
        let name = match c {
            AnyCell::Lstm => "LSTM",
            AnyCell::Gru => "GRU",
            AnyCell::Rnn(_) => "RNN",
        };
        with_cell!(c, configuration_errors(name));
    }
    // The aliases keep their names: an LSTM built by LstmConfig is a Layer of LstmCell.
    let lstm = LstmConfig::new(2, 3).build::<f32>(&mut Rng::seed_from(1)).unwrap();
    assert_eq!(*lstm.cell(), LstmCell);
}

/// A reverse layer over a sequence is the forward layer, with the same tensors, over the
/// sequence reversed in time: outputs reversed, the same final state, and the same gradients,
/// from a non-zero initial state, in f64 (rel_error < 1e-12: only the order of the weight
/// gradients' sums differs).
fn reverse_is_forward_on_reversed_time<C: Cell<f64>>(cell: C, name: &str) {
    let (inp, hid, batch, steps) = (5, 6, 3, 4);
    let mut rng = Rng::seed_from(21);
    let rev = RecurrentConfig::<C>::new(inp, hid)
        .with_cell(cell)
        .with_reverse(true)
        .build::<f64>(&mut rng)
        .unwrap();
    let mut p = rev.params.clone();
    p.reverse = false;
    let fwd = Layer::new(p, cell).unwrap();
    let n = steps * batch;
    let x = Mat::from_fn(inp, n, |_, _| rng.uniform(-1.0, 1.0));
    let d_out = Mat::from_fn(hid, n, |_, _| rng.uniform(-1.0, 1.0));
    // Column t·B + b goes to (T-1-t)·B + b.
    let flip =
        |m: &Mat<f64>| Mat::from_fn(m.nrows(), n, |i, c| m[(i, (steps - 1 - c / batch) * batch + c % batch)]);
    let z = rev.zero_state(batch);
    let h0 = z.with_flat(&z.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<_>>());
    let d_fin = z.with_flat(&z.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<_>>());
    let run = |layer: &Layer<f64, C>, x: &Mat<f64>, d_out: &Mat<f64>| {
        let mut cache = LayerCache::default();
        let fin = layer.forward(SeqInput::Dense(x), batch, &h0, &mut cache);
        let out = layer.outputs(&cache).clone();
        let mut g = layer.zero_grads();
        let mut d_x = Mat::zeros(0, 0);
        let d0 = layer.backward(SeqInput::Dense(x), &mut cache, d_out, &d_fin, &mut g, Some(&mut d_x));
        (out, fin, g, d_x, d0)
    };
    let (out_r, fin_r, g_r, dx_r, d0_r) = run(&rev, &x, &d_out);
    let (out_f, fin_f, g_f, dx_f, d0_f) = run(&fwd, &flip(&x), &flip(&d_out));
    let mut pairs = vec![
        ("outputs", out_r.as_slice().to_vec(), flip(&out_f).as_slice().to_vec()),
        ("final state", fin_r.to_flat(), fin_f.to_flat()),
        ("d_x", dx_r.as_slice().to_vec(), flip(&dx_f).as_slice().to_vec()),
        ("initial state", d0_r.to_flat(), d0_f.to_flat()),
    ];
    for ((n, a), (_, b)) in g_r.named_params().into_iter().zip(g_f.named_params()) {
        assert!(n.ends_with("_reverse"), "{name}: {n}");
        pairs.push(("a gradient", a.as_slice().to_vec(), b.as_slice().to_vec()));
    }
    for (what, a, b) in pairs {
        let e = rel_error(&a, &b);
        assert!(e < 1e-12, "{name} {what}: reverse against forward on reversed time, rel_error {e:e}");
    }
}

#[test]
fn reverse_layers_are_forward_layers_on_reversed_time() {
    for (name, c) in ALL {
        with_cell!(c, reverse_is_forward_on_reversed_time(name));
    }
}

/// `backward_detached_overwrite` of `model` from gradients filled with NaN (a read of any of them
/// would show) against `zero` then `backward_detached`, bit for bit (tolerance: none), with one
/// thread and two; `lengths` runs the variable-length forward first.
fn overwrite_matches_zero_then_add<R: Recurrence<f32>>(
    model: &R,
    x: SeqInput<'_, f32>,
    batch: usize,
    lengths: Option<&[usize]>,
    h0: &R::State,
    what: &str,
) {
    let n = x.columns();
    let mut rng = Rng::seed_from(n as u64);
    let d_out = Mat::from_fn(model.hidden_size(), n, |_, _| rng.uniform(-1.0, 1.0) as f32);
    let d_fin = model.zero_state(batch);
    let run = |overwrite: bool| {
        let mut cache = R::Cache::default();
        match lengths {
            Some(l) => model.forward_lengths(x, batch, l, h0, &mut cache),
            None => model.forward(x, batch, h0, &mut cache),
        };
        let mut g = model.params().clone();
        g.named_params_mut().into_iter().for_each(|(_, m)| m.fill(f32::NAN));
        if overwrite {
            model.backward_detached_overwrite(x, &mut cache, &d_out, &d_fin, &mut g, None);
        } else {
            g.zero();
            model.backward_detached(x, &mut cache, &d_out, &d_fin, &mut g, None);
        }
        g.named_params()
            .into_iter()
            .map(|(k, m)| (k, m.iter().map(|v| v.to_bits()).collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    };
    let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let threads = rnn_tensor::parallel::num_threads();
    for t in [1, 2] {
        rnn_tensor::parallel::set_num_threads(t);
        let (want, got) = (run(false), run(true));
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            assert!(w == g, "{what}, {t} thread(s): {name} overwritten differs from zero then add");
        }
    }
    rnn_tensor::parallel::set_num_threads(threads);
}

/// Every cell, forward and reverse in time, dense and one-hot input, one step and five, from a
/// zero and a non-zero initial state; a bidirectional stack; variable lengths.
fn overwrite_cases<C: Cell<f32>>(cell: C, name: &str) {
    let (inp, hid, batch) = (30, 40, 24);
    for (reverse, steps, one_hot, zero_h0) in [
        (false, 5, false, false),
        (true, 5, false, false),
        (false, 5, true, true),
        (true, 5, true, false),
        (false, 1, false, true),
        (false, 1, true, false),
    ] {
        let layer = RecurrentConfig::<C>::new(inp, hid)
            .with_cell(cell)
            .with_reverse(reverse)
            .build::<f32>(&mut Rng::seed_from(5))
            .unwrap();
        let mut rng = Rng::seed_from(6);
        let n = steps * batch;
        let x = Mat::from_fn(inp, n, |_, _| rng.uniform(-1.0, 1.0) as f32);
        let ix: Vec<usize> = (0..n).map(|_| rng.below(inp)).collect();
        let z = layer.zero_state(batch);
        let h0 = if zero_h0 {
            z
        } else {
            z.with_flat(&z.to_flat().iter().map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<_>>())
        };
        let input = if one_hot { SeqInput::Index(&ix) } else { SeqInput::Dense(&x) };
        let what = format!("{name}, reverse {reverse}, {steps} steps, one-hot {one_hot}, zero h0 {zero_h0}");
        overwrite_matches_zero_then_add(&layer, input, batch, None, &h0, &what);
        if steps > 1 && !one_hot {
            let lengths: Vec<usize> = (0..batch).map(|b| 1 + b % steps).collect();
            overwrite_matches_zero_then_add(
                &layer,
                input,
                batch,
                Some(&lengths),
                &h0,
                &format!("{what}, lengths"),
            );
        }
    }
    let stack = RecurrentConfig::<C>::new(inp, hid)
        .with_cell(cell)
        .build_bidirectional_stack::<f32>(2, &mut Rng::seed_from(7))
        .unwrap();
    let mut rng = Rng::seed_from(8);
    let x = Mat::from_fn(inp, 4 * batch, |_, _| rng.uniform(-1.0, 1.0) as f32);
    let h0 = stack.zero_state(batch);
    overwrite_matches_zero_then_add(
        &stack,
        SeqInput::Dense(&x),
        batch,
        None,
        &h0,
        &format!("{name} bidirectional stack"),
    );
}

#[test]
fn overwriting_gradients_matches_zeroing_then_adding_for_every_cell() {
    for (name, c) in ALL {
        with_cell!(c, overwrite_cases(name));
    }
}
