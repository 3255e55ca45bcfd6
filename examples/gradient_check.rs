//! Checks every hand-written gradient of the recurrent layers against numeric differentiation,
//! on the tutorial's toy problem: batch 2, 3 timesteps, hidden 6, input 20, output 20, f64.
//!
//! Each model is `cell(s) → affine head → softmax cross-entropy` (the tutorial's reduction: the
//! sum over time averaged over the batch), from a zero initial state, with inputs `N(0, 1)` and
//! targets drawn from `0..10` as in the tutorial. For every parameter tensor it prints
//! `name relative error: X`, where X is `max |analytic - numeric| / max(|analytic| + |numeric|)`
//! and the numeric gradient is the fourth-order central difference with h = 1e-3. It exits with
//! status 1 if any error exceeds 1e-7.
//!
//! ```text
//! cargo run --example gradient_check                # the tutorial's seed
//! cargo run --example gradient_check -- --seed 3      # other random weights and data
//! ```

use rnn::cells::{
    softmax_cross_entropy, Affine, AffineConfig, GruConfig, LstmConfig, Recurrence, Reduction, RnnConfig,
    SeqInput,
};
use rnn::tensor::gradcheck::{numeric_gradient, rel_error};
use rnn::tensor::init::Init;
use rnn::tensor::{Mat, Parameters, Rng};

const BATCH: usize = 2;
const STEPS: usize = 3;
const HIDDEN: usize = 6;
const INPUT: usize = 20;
const OUTPUT: usize = 20;
/// The largest relative error accepted.
const THRESHOLD: f64 = 1e-7;

/// The toy problem's data: `x` is `INPUT × (T·B)`, one target per column.
struct Toy {
    x: Mat<f64>,
    y: Vec<usize>,
}

/// The loss of `model → head → softmax CE`; with `grads`, also its gradients (added into them).
fn loss<R: Recurrence<f64>>(
    model: &R,
    head: &Affine<f64>,
    toy: &Toy,
    grads: Option<(&mut R::Params, &mut rnn::cells::AffineParams<f64>)>,
) -> f64 {
    let h0 = model.zero_state(BATCH);
    let mut cache = R::Cache::default();
    model.forward(SeqInput::Dense(&toy.x), BATCH, &h0, &mut cache);
    let h = model.outputs(&cache);
    let logits = head.forward(h);
    let mut d_logits = Mat::zeros(0, 0);
    let want_grads = grads.is_some();
    let l = softmax_cross_entropy(
        &logits,
        &toy.y,
        BATCH,
        Reduction::SumTimeMeanBatch,
        want_grads.then_some(&mut d_logits),
    )
    .expect("the toy targets fit the head");
    if let Some((g_model, g_head)) = grads {
        let dh = head.backward(h, &d_logits, g_head);
        model.backward(SeqInput::Dense(&toy.x), &mut cache, &dh, &h0, g_model, None);
    }
    l
}

/// Prints each parameter's relative error and returns the largest.
fn check<R: Recurrence<f64> + Clone>(title: &str, model: R, head: &Affine<f64>, toy: &Toy) -> f64 {
    println!("{title}");
    let mut g_model = model.params().clone();
    g_model.zero();
    let mut g_head = head.zero_grads();
    loss(&model, head, toy, Some((&mut g_model, &mut g_head)));
    let mut worst = 0.0f64;
    let mut report = |name: String, err: f64| {
        println!("  {name} relative error: {err:.6e}");
        worst = worst.max(err);
    };
    for (k, (name, g)) in g_model.named_params().into_iter().enumerate() {
        let mut probe = model.clone();
        let mut flat = probe.params().named_params()[k].1.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                probe.params_mut().named_params_mut()[k].1.copy_from_slice(v);
                loss(&probe, head, toy, None)
            },
            &mut flat,
            1e-3,
        );
        report(name, rel_error(&num, g.as_slice()));
    }
    for (k, (name, g)) in g_head.named_params().into_iter().enumerate() {
        let mut probe = head.clone();
        let mut flat = probe.params.named_params()[k].1.as_slice().to_vec();
        let num = numeric_gradient(
            |v| {
                probe.params.named_params_mut()[k].1.copy_from_slice(v);
                loss(&model, &probe, toy, None)
            },
            &mut flat,
            1e-3,
        );
        report(name, rel_error(&num, g.as_slice()));
    }
    worst
}

fn parse_seed() -> Result<u64, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(0),
        [flag, n] if flag == "--seed" => {
            n.parse().map_err(|_| format!("--seed wants a non-negative integer, got {n:?}"))
        }
        _ => Err(format!("usage: gradient_check [--seed N]; got {args:?}")),
    }
}

fn main() {
    let seed = match parse_seed() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut rng = Rng::seed_from(seed);
    let toy = Toy {
        x: Init::Normal { mean: 0.0, std: 1.0 }.matrix(INPUT, STEPS * BATCH, &mut rng),
        y: (0..STEPS * BATCH).map(|_| rng.below(10)).collect(),
    };
    println!(
        "gradient check (seed {seed}): batch {BATCH}, {STEPS} timesteps, hidden {HIDDEN}, input {INPUT}, output {OUTPUT}, f64"
    );
    let head = AffineConfig::new(HIDDEN, OUTPUT).with_prefix("head.").build(&mut rng).expect("valid sizes");
    let build = "valid sizes";
    let mut worst = 0.0f64;
    worst = worst.max(check(
        "RNN (tanh)",
        RnnConfig::new(INPUT, HIDDEN).build::<f64>(&mut rng).expect(build),
        &head,
        &toy,
    ));
    worst = worst.max(check(
        "LSTM",
        LstmConfig::new(INPUT, HIDDEN).build::<f64>(&mut rng).expect(build),
        &head,
        &toy,
    ));
    worst = worst.max(check(
        "LSTM, 3 layers",
        LstmConfig::new(INPUT, HIDDEN).build_stack::<f64>(3, &mut rng).expect(build),
        &head,
        &toy,
    ));
    worst = worst.max(check(
        "GRU",
        GruConfig::new(INPUT, HIDDEN).build::<f64>(&mut rng).expect(build),
        &head,
        &toy,
    ));
    println!("largest relative error: {worst:.6e} (threshold {THRESHOLD:e})");
    if worst > THRESHOLD {
        eprintln!("gradient check FAILED");
        std::process::exit(1);
    }
}
