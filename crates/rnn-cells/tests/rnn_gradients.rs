//! The vanilla RNN against loop-by-loop forward code and numeric gradients, for every activation,
//! with and without biases, dense and index input (moved here from `rnn.rs` when the cell became
//! a pointwise step of the layer engine).

use proptest::prelude::{any, proptest, ProptestConfig};
use rnn_cells::{Recurrence, Rnn, RnnCache, RnnConfig, RnnState, SeqInput};
use rnn_tensor::activation::Activation;
use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
use rnn_tensor::init::Init;
use rnn_tensor::{Mat, Parameters, Rng};

/// A loop-by-loop reference forward: returns (pre-activations, outputs), both `H × (T·B)`.
fn naive_forward(cell: &Rnn<f64>, x: &Mat<f64>, batch: usize, h0: &Mat<f64>) -> (Mat<f64>, Mat<f64>) {
    let p = cell.params();
    let (h, i) = p.weight_ih.shape();
    let n = x.ncols();
    let mut pre = Mat::zeros(h, n);
    let mut out = Mat::zeros(h, n);
    for c in 0..n {
        let (t, b) = (c / batch, c % batch);
        for r in 0..h {
            let mut a = 0.0;
            for k in 0..i {
                a += p.weight_ih[(r, k)] * x[(k, c)];
            }
            for k in 0..h {
                let prev = if t == 0 { h0[(k, b)] } else { out[(k, c - batch)] };
                a += p.weight_hh[(r, k)] * prev;
            }
            if let (Some(bi), Some(bh)) = (&p.bias_ih, &p.bias_hh) {
                a += bi[r] + bh[r];
            }
            pre[(r, c)] = a;
            out[(r, c)] = cell.activation().apply(a);
        }
    }
    (pre, out)
}

fn one_hot(ix: &[usize], size: usize) -> Mat<f64> {
    Mat::from_fn(size, ix.len(), |r, c| if ix[c] == r { 1.0 } else { 0.0 })
}

struct Case {
    cell: Rnn<f64>,
    x: Mat<f64>,
    ix: Option<Vec<usize>>,
    batch: usize,
    h0: Mat<f64>,
    w_out: Mat<f64>,
    w_final: Mat<f64>,
}

impl Case {
    fn input(&self) -> SeqInput<'_, f64> {
        match &self.ix {
            Some(ix) => SeqInput::Index(ix),
            None => SeqInput::Dense(&self.x),
        }
    }

    /// L = Σ w_out ⊙ [h_1 … h_T] + Σ w_final ⊙ h_T, through the cell's own forward.
    fn loss(&self, cell: &Rnn<f64>, x: &Mat<f64>, h0: &Mat<f64>) -> f64 {
        let mut cache = RnnCache::default();
        let input = match &self.ix {
            Some(ix) => SeqInput::Index(ix),
            None => SeqInput::Dense(x),
        };
        let fin = cell.forward(input, self.batch, &RnnState { h: h0.clone() }, &mut cache);
        cell.outputs(&cache).component_mul(&self.w_out).sum() + fin.h.component_mul(&self.w_final).sum()
    }
}

/// Draws a case; for relu, redraws until every pre-activation is at least 0.05 from the kink,
/// so the numeric differences (steps of 2e-4 in any parameter) never cross it.
fn draw_case(
    seed: u64,
    i: usize,
    h: usize,
    b: usize,
    t: usize,
    act: Activation,
    bias: bool,
    index: bool,
) -> Case {
    let mut rng = Rng::seed_from(seed);
    loop {
        let cell = RnnConfig::new(i, h)
            .with_activation(act)
            .with_bias(bias)
            .with_init(Init::Uniform { lo: -0.8, hi: 0.8 })
            .with_layer(2)
            .build::<f64>(&mut rng)
            .unwrap();
        let ix: Option<Vec<usize>> = index.then(|| (0..t * b).map(|_| rng.below(i)).collect());
        let x = match &ix {
            Some(ix) => one_hot(ix, i),
            None => Init::Normal { mean: 0.0, std: 1.0 }.matrix(i, t * b, &mut rng),
        };
        let h0 = Init::Uniform { lo: -0.9, hi: 0.9 }.matrix(h, b, &mut rng);
        let w_out = Init::Normal { mean: 0.0, std: 1.0 }.matrix(h, t * b, &mut rng);
        let w_final = Init::Normal { mean: 0.0, std: 1.0 }.matrix(h, b, &mut rng);
        let (pre, _) = naive_forward(&cell, &x, b, &h0);
        if act != Activation::Relu || pre.iter().all(|a| a.abs() > 0.05) {
            return Case { cell, x, ix, batch: b, h0, w_out, w_final };
        }
    }
}

/// Numeric gradients by the 4th-order central difference, step 1e-4 (truncation ~1e-16,
/// rounding ~1e-12 relative): every tensor must agree to rel_error < 1e-8.
///
/// One exception, for relu: when every unit a tensor reaches is dead (all its analytic
/// gradients exactly 0), rel_error compares rounding noise with its 1e-8 floor; there we
/// require the numeric gradient to be noise, |g| < 1e-10 (the loss is O(10), so its rounding
/// over a 12·1e-4 denominator is ~1e-12).
fn assert_close(num: &[f64], analytic: &[f64], what: &str) {
    if analytic.iter().all(|&g| g == 0.0) {
        let worst = num.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        assert!(worst < 1e-10, "{what}: analytic gradient is 0, numeric reaches {worst:e}");
    } else {
        let err = rel_error(num, analytic);
        assert!(err < 1e-8, "{what}: rel_error {err:e}\nnumeric  {num:?}\nanalytic {analytic:?}");
    }
}

fn check_case(c: &Case) {
    let cell = &c.cell;
    // Forward against the reference loops (tolerance: a few ulps of sums of O(10) terms).
    let mut cache = RnnCache::default();
    let fin = cell.forward(c.input(), c.batch, &RnnState { h: c.h0.clone() }, &mut cache);
    let (_, want) = naive_forward(cell, &c.x, c.batch, &c.h0);
    assert!((cell.outputs(&cache) - &want).abs().max() < 1e-13);
    let steps = c.x.ncols() / c.batch;
    assert_eq!(fin.h, cell.outputs(&cache).columns((steps - 1) * c.batch, c.batch));

    let mut grads = cell.zero_grads();
    let mut d_x = Mat::zeros(c.x.nrows(), c.x.ncols());
    let dense = c.ix.is_none();
    let d_h0 = cell.backward(
        c.input(),
        &mut cache,
        &c.w_out,
        &RnnState { h: c.w_final.clone() },
        &mut grads,
        dense.then_some(&mut d_x),
    );
    let names: Vec<String> = grads.named_params().into_iter().map(|(n, _)| n).collect();
    let want_names: &[&str] = if cell.has_bias() {
        &["weight_ih_l2", "weight_hh_l2", "bias_ih_l2", "bias_hh_l2"]
    } else {
        &["weight_ih_l2", "weight_hh_l2"]
    };
    assert_eq!(names, want_names);

    let n_params = cell.params().named_params().len();
    for p in 0..n_params {
        let analytic = grads.named_params()[p].1.as_slice().to_vec();
        let mut flat = cell.params().named_params()[p].1.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                let mut m = cell.clone();
                m.params_mut().named_params_mut()[p].1.copy_from_slice(v);
                c.loss(&m, &c.x, &c.h0)
            },
            &mut flat,
            1e-4,
        );
        assert_close(&num, &analytic, &format!("{:?} {}", cell.activation(), names[p]));
    }
    let mut flat = c.h0.as_slice().to_vec();
    let num = numeric_gradient(
        |v| c.loss(cell, &c.x, &Mat::from_column_slice(c.h0.nrows(), c.batch, v)),
        &mut flat,
        1e-4,
    );
    assert_close(&num, d_h0.h.as_slice(), &format!("{:?} d_h0", cell.activation()));
    if dense {
        let mut flat = c.x.as_slice().to_vec();
        let num = numeric_gradient(
            |v| c.loss(cell, &Mat::from_column_slice(c.x.nrows(), c.x.ncols(), v), &c.h0),
            &mut flat,
            1e-4,
        );
        assert_close(&num, d_x.as_slice(), &format!("{:?} d_x", cell.activation()));
    }

    // Index input gives the same parameter gradients as its dense one-hot equivalent.
    if let Some(ix) = &c.ix {
        let mut cache_d = RnnCache::default();
        let h0 = RnnState { h: c.h0.clone() };
        cell.forward(SeqInput::Dense(&c.x), c.batch, &h0, &mut cache_d);
        let mut g_dense = cell.zero_grads();
        let d_h0_dense = cell.backward(
            SeqInput::Dense(&c.x),
            &mut cache_d,
            &c.w_out,
            &RnnState { h: c.w_final.clone() },
            &mut g_dense,
            None,
        );
        assert!((&g_dense.weight_ih - &grads.weight_ih).abs().max() < 1e-13, "index {ix:?}");
        assert!((&d_h0_dense.h - &d_h0.h).abs().max() < 1e-13);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn gradients_match_numeric(
        seed in 0u64..1_000_000,
        i in 1usize..5,
        h in 1usize..7,
        b in 1usize..4,
        t in 1usize..6,
        bias in any::<bool>(),
        index in any::<bool>(),
    ) {
        for act in [Activation::Tanh, Activation::Relu, Activation::Sigmoid] {
            check_case(&draw_case(seed, i, h, b, t, act, bias, index));
        }
    }
}

#[test]
fn batch_one_gradients_match_numeric() {
    // Batch 1 with several steps takes the W_hhᵀ-copy route in backward; make sure every
    // activation, dense and index input, runs through it whatever proptest draws.
    for act in [Activation::Tanh, Activation::Relu, Activation::Sigmoid] {
        for (bias, index) in [(true, false), (false, true)] {
            check_case(&draw_case(21, 3, 6, 1, 5, act, bias, index));
        }
    }
}

#[test]
fn gradients_accumulate_and_buffers_are_reused() {
    let c = draw_case(3, 3, 4, 2, 5, Activation::Tanh, true, false);
    let cell = &c.cell;
    let mut cache = RnnCache::default();
    let mut fin = RnnState { h: Mat::zeros(0, 0) };
    let mut d_h0 = RnnState { h: Mat::zeros(0, 0) };
    let (h0, w_final) = (RnnState { h: c.h0.clone() }, RnnState { h: c.w_final.clone() });
    let mut once = cell.zero_grads();
    cell.forward_into(c.input(), c.batch, &h0, &mut cache, &mut fin);
    cell.backward_into(c.input(), &mut cache, &c.w_out, &w_final, &mut once, None, &mut d_h0);
    let mut twice = cell.zero_grads();
    for _ in 0..2 {
        cell.forward_into(c.input(), c.batch, &h0, &mut cache, &mut fin);
        cell.backward_into(c.input(), &mut cache, &c.w_out, &w_final, &mut twice, None, &mut d_h0);
    }
    assert!((&twice.weight_hh - &once.weight_hh * 2.0).abs().max() < 1e-14);
    assert!((twice.bias_ih.unwrap() - once.bias_ih.unwrap() * 2.0).abs().max() < 1e-14);
}

#[test]
fn step_matches_forward() {
    let c = draw_case(9, 3, 5, 2, 4, Activation::Sigmoid, true, false);
    let mut cache = RnnCache::default();
    let mut state = RnnState { h: c.h0.clone() };
    let fin = c.cell.forward(c.input(), 2, &state, &mut cache);
    for t in 0..4 {
        let xt = c.x.columns(t * 2, 2).into_owned();
        c.cell.step(SeqInput::Dense(&xt), &mut state);
    }
    assert!((&fin.h - &state.h).abs().max() < 1e-15);
}

#[test]
fn config_and_params_are_checked() {
    let mut rng = Rng::seed_from(0);
    assert!(RnnConfig::new(0, 4).build::<f32>(&mut rng).is_err());
    assert!(RnnConfig::new(2, 4)
        .with_init(Init::Uniform { lo: 1.0, hi: -1.0 })
        .build::<f32>(&mut rng)
        .is_err());
    let cell = RnnConfig::new(3, 4).build::<f64>(&mut rng).unwrap();
    // PyTorch's default bound 1/sqrt(H) = 0.5.
    assert!(cell.params().weight_hh.iter().all(|v| v.abs() <= 0.5));
    let mut p = cell.params().clone();
    p.bias_hh = None;
    let e = Rnn::from_params(p, Activation::Tanh).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    let mut p = cell.params().clone();
    p.weight_hh = Mat::zeros(4, 3);
    assert!(Rnn::from_params(p, Activation::Tanh).is_err());
}
