//! Every optimizer, clipping mode and schedule against PyTorch 2.15 (float64, the single-tensor
//! `foreach=False` code paths), over 20 steps of a fixed, seeded gradient sequence.
//!
//! Fixtures: `tests/fixtures/*.json`, written by `python3 tools/gen_optim_fixtures.py` (the
//! chained schedules' `schedules_chained.json` by `python3 tools/gen_schedule_fixtures.py`).
//! `BasicRprop` and per-parameter clipping have no torch counterpart; their references are the
//! independent plain-Python/numpy implementations in the same script.
//!
//! Tolerance: every parameter after every step within `TOL = 1e-12` (absolute; the values are
//! of order 1). Our code follows torch's operation order, but torch's vectorised CPU kernels use
//! fused multiply-adds where we do not, so agreement is to a few ulps, not bit for bit. Each test
//! prints the largest error it saw (`cargo test -p rnn-optim --test torch_parity -- --nocapture`).

use std::path::PathBuf;

use rnn_optim::*;
use serde_json::Value;

/// Absolute tolerance on every parameter value after every step.
const TOL: f64 = 1e-12;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run python3 tools/gen_optim_fixtures.py", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn f(cfg: &Value, key: &str) -> Option<f64> {
    cfg.get(key).map(|v| v.as_f64().unwrap())
}

fn b(cfg: &Value, key: &str) -> bool {
    cfg.get(key).is_some_and(|v| v.as_bool().unwrap())
}

fn pair(cfg: &Value, key: &str) -> Option<(f64, f64)> {
    cfg.get(key).map(|v| {
        let p = floats(v);
        (p[0], p[1])
    })
}

/// Named flat tensors of one gradient set or parameter snapshot.
fn tensors(v: &Value) -> Vec<(String, Vec<f64>)> {
    v.as_object().unwrap().iter().map(|(k, x)| (k.clone(), floats(x))).collect()
}

/// Replays a fixture's gradients through the optimizer `build` makes from each case's config;
/// returns the largest difference from the reference trajectory.
fn replay(file: &str, build: impl Fn(&Value) -> Box<dyn Optimizer<f64>>) -> f64 {
    let fx = fixture(file);
    let grads: Vec<_> = fx["grads"].as_array().unwrap().iter().map(tensors).collect();
    let mut worst = 0.0f64;
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut opt = build(&case["config"]);
        let mut params = tensors(&fx["params0"]);
        let expected = case["params"].as_array().unwrap();
        assert_eq!(expected.len(), 20, "{file}/{name}: 20 steps");
        let mut case_worst = 0.0f64;
        for (step, (g, want)) in grads.iter().zip(expected).enumerate() {
            let mut views: Vec<ParamMut<'_, f64>> = params
                .iter_mut()
                .zip(g)
                .map(|((n, v), (gn, gv))| {
                    assert_eq!(n, gn);
                    ParamMut { name: n.clone(), value: v.as_mut_slice(), grad: gv.as_slice() }
                })
                .collect();
            opt.step(&mut views).unwrap();
            for ((n, got), (wn, want)) in params.iter().zip(tensors(want)) {
                assert_eq!(*n, wn);
                for (i, (a, e)) in got.iter().zip(&want).enumerate() {
                    let err = (a - e).abs();
                    case_worst = case_worst.max(err);
                    assert!(err <= TOL, "{file}/{name} step {} {n}[{i}]: got {a}, torch {e}", step + 1);
                }
            }
        }
        println!("{file}/{name}: max |error| over 20 steps = {case_worst:.3e}");
        worst = worst.max(case_worst);
    }
    worst
}

/// The config value `key`, or `default` when the case leaves it at torch's default.
fn num(cfg: &Value, key: &str, default: f64) -> f64 {
    f(cfg, key).unwrap_or(default)
}

#[test]
fn sgd_matches_torch() {
    replay("sgd.json", |c| {
        let d = SgdConfig::default();
        let cfg = SgdConfig {
            lr: num(c, "lr", d.lr),
            momentum: num(c, "momentum", d.momentum),
            dampening: num(c, "dampening", d.dampening),
            nesterov: b(c, "nesterov"),
            weight_decay: num(c, "weight_decay", d.weight_decay),
        };
        Box::new(cfg.build::<f64>().unwrap())
    });
}

#[test]
fn rprop_matches_torch() {
    replay("rprop.json", |c| {
        let d = RpropConfig::default();
        let (eta_minus, eta_plus) = pair(c, "etas").unwrap_or((d.eta_minus, d.eta_plus));
        let (step_min, step_max) = pair(c, "step_sizes").unwrap_or((d.step_min, d.step_max));
        let cfg = RpropConfig { lr: num(c, "lr", d.lr), eta_minus, eta_plus, step_min, step_max };
        Box::new(cfg.build::<f64>().unwrap())
    });
}

#[test]
fn basic_rprop_matches_python_reference() {
    replay("basic_rprop.json", |c| {
        let cfg = BasicRpropConfig {
            initial_step: f(c, "initial_step").unwrap(),
            eta_plus: f(c, "eta_plus").unwrap(),
            eta_minus: f(c, "eta_minus").unwrap(),
        };
        Box::new(cfg.build::<f64>().unwrap())
    });
}

fn adam_family<const W: bool>(c: &Value) -> AdamFamilyConfig<W> {
    let d = AdamFamilyConfig::<W>::default();
    let (beta1, beta2) = pair(c, "betas").unwrap_or((d.beta1, d.beta2));
    AdamFamilyConfig {
        lr: num(c, "lr", d.lr),
        beta1,
        beta2,
        eps: num(c, "eps", d.eps),
        weight_decay: num(c, "weight_decay", d.weight_decay),
        amsgrad: b(c, "amsgrad"),
    }
}

#[test]
fn adam_matches_torch() {
    replay("adam.json", |c| Box::new(adam_family::<false>(c).build::<f64>().unwrap()));
}

#[test]
fn adamw_matches_torch() {
    replay("adamw.json", |c| Box::new(adam_family::<true>(c).build::<f64>().unwrap()));
}

#[test]
fn rmsprop_matches_torch() {
    replay("rmsprop.json", |c| {
        let d = RmsPropConfig::default();
        let cfg = RmsPropConfig {
            lr: num(c, "lr", d.lr),
            alpha: num(c, "alpha", d.alpha),
            eps: num(c, "eps", d.eps),
            weight_decay: num(c, "weight_decay", d.weight_decay),
            momentum: num(c, "momentum", d.momentum),
            centered: b(c, "centered"),
        };
        Box::new(cfg.build::<f64>().unwrap())
    });
}

#[test]
fn adagrad_matches_torch() {
    replay("adagrad.json", |c| {
        let d = AdagradConfig::default();
        let cfg = AdagradConfig {
            lr: num(c, "lr", d.lr),
            lr_decay: num(c, "lr_decay", d.lr_decay),
            weight_decay: num(c, "weight_decay", d.weight_decay),
            initial_accumulator_value: num(c, "initial_accumulator_value", d.initial_accumulator_value),
            eps: num(c, "eps", d.eps),
        };
        Box::new(cfg.build::<f64>().unwrap())
    });
}

/// Clipping: each case clips every one of the 20 gradient sets independently; values and the
/// returned global norm within `TOL` of `clip_grad_norm_` / `clip_grad_value_` (per-parameter
/// norm: the numpy reference).
#[test]
fn clipping_matches_torch() {
    let fx = fixture("clip.json");
    let grads: Vec<_> = fx["grads"].as_array().unwrap().iter().map(tensors).collect();
    let mut worst = 0.0f64;
    for case in fx["cases"].as_array().unwrap() {
        let mode = case["mode"].as_str().unwrap();
        let max = case["max"].as_f64().unwrap();
        let mut scaled = 0;
        for (k, (g, want)) in grads.iter().zip(case["clipped"].as_array().unwrap()).enumerate() {
            let mut g = g.clone();
            let mut slices: Vec<&mut [f64]> = g.iter_mut().map(|(_, v)| v.as_mut_slice()).collect();
            match mode {
                "global_norm" => {
                    let total = clip_norm_slices(&mut slices, max).unwrap();
                    let torch = case["norms"][k].as_f64().unwrap();
                    assert!((total - torch).abs() <= TOL, "norm {total} vs torch {torch}");
                    scaled += usize::from(total > max);
                }
                "per_param_norm" => {
                    clip_norm_per_param_slices(&mut slices, max).unwrap();
                }
                "value" => clip_value_slices(&mut slices, max).unwrap(),
                other => panic!("unknown clip mode {other}"),
            }
            for ((n, got), (wn, want)) in g.iter().zip(tensors(want)) {
                assert_eq!(*n, wn);
                for (a, e) in got.iter().zip(&want) {
                    worst = worst.max((a - e).abs());
                    assert!((a - e).abs() <= TOL, "{mode} max {max} set {k} {n}: got {a}, reference {e}");
                }
            }
        }
        if mode == "global_norm" {
            println!("clip global_norm {max}: {scaled}/20 gradient sets scaled down");
        }
    }
    println!("clip.json: max |error| = {worst:.3e}");
}

/// Schedules: the learning rate of epochs 0..=20 after torch's `scheduler.step()` calls,
/// compared exactly (tolerance 0: both multiply by gamma once per decay).
#[test]
fn schedules_match_torch() {
    let fx = fixture("schedules.json");
    for case in fx["cases"].as_array().unwrap() {
        let base = case["base_lr"].as_f64().unwrap();
        let cfg = &case["config"];
        let gamma = cfg["gamma"].as_f64().unwrap();
        let schedule: Box<dyn LrSchedule> = match case["schedule"].as_str().unwrap() {
            "exponential" => Box::new(ExponentialLr::new(base, gamma).unwrap()),
            "step" => Box::new(StepLr::new(base, cfg["step_size"].as_u64().unwrap(), gamma).unwrap()),
            other => panic!("unknown schedule {other}"),
        };
        let want = floats(&case["lrs"]);
        assert_eq!(want.len(), 21);
        for (epoch, w) in want.iter().enumerate() {
            assert_eq!(schedule.lr_at(epoch as u64), *w, "{case} epoch {epoch}");
        }
    }
}

/// `LinearLR`, `CosineAnnealingLR` (past `T_max` too) and `SequentialLR` (linear warmup, then
/// cosine) over 30 scheduler steps, from `tools/gen_schedule_fixtures.py`: compared exactly
/// (tolerance 0, the bits), by `lr_at` and by an [`LrCursor`] walking forward.
#[test]
fn chained_schedules_match_torch() {
    let fx = fixture("schedules_chained.json");
    let mut cases = 0;
    for case in fx["cases"].as_array().unwrap() {
        let base = case["base_lr"].as_f64().unwrap();
        let cfg = &case["config"];
        let u = |k: &str| cfg[k].as_u64().unwrap();
        let x = |k: &str| cfg[k].as_f64().unwrap();
        let lrs: Vec<f64> = match case["schedule"].as_str().unwrap() {
            "linear" => {
                let s = LinearLr::new(base, x("start_factor"), x("end_factor"), u("total_iters")).unwrap();
                let mut cur = LrCursor::new(s);
                (0..=30)
                    .map(|t| (s.lr_at(t), cur.lr_at(t)))
                    .map(|(a, b)| if a == b { a } else { f64::NAN })
                    .collect()
            }
            "cosine" => {
                let s = CosineAnnealingLr::new(base, u("t_max"), x("eta_min")).unwrap();
                let mut cur = LrCursor::new(s);
                (0..=30)
                    .map(|t| (s.lr_at(t), cur.lr_at(t)))
                    .map(|(a, b)| if a == b { a } else { f64::NAN })
                    .collect()
            }
            "warmup_cosine" => {
                let w = LinearLr::new(base, x("start_factor"), 1.0, u("warmup")).unwrap();
                let c = CosineAnnealingLr::new(base, u("t_max"), x("eta_min")).unwrap();
                let s = SequentialLr::new(w, c, u("warmup")).unwrap();
                let mut cur = LrCursor::new(s);
                (0..=30)
                    .map(|t| (s.lr_at(t), cur.lr_at(t)))
                    .map(|(a, b)| if a == b { a } else { f64::NAN })
                    .collect()
            }
            other => panic!("unknown schedule {other}"),
        };
        let want: Vec<f64> = case["lrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| f64::from_bits(u64::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
            .collect();
        assert_eq!(want.len(), 31);
        for (t, (got, w)) in lrs.iter().zip(&want).enumerate() {
            assert_eq!(
                got.to_bits(),
                w.to_bits(),
                "{} {cfg} t={t}: {got:e} vs torch {w:e}",
                case["schedule"]
            );
        }
        cases += 1;
    }
    assert_eq!(cases, 11);
}
