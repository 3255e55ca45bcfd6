//! Saving and restoring optimizer state resumes training exactly: for every optimizer (and the
//! options that add buffers), 10 steps, `state()`, `load_state()` into a fresh optimizer, 10 more
//! steps gives parameters bit-identical to 20 uninterrupted steps, in f64 and in f32.

use rnn_optim::*;
use rnn_tensor::{Rng, Scalar};

type Build<T> = Box<dyn Fn() -> Box<dyn Optimizer<T>>>;

fn optimizers<T: Scalar>() -> Vec<(&'static str, Build<T>)> {
    let mut out: Vec<(&'static str, Build<T>)> = Vec::new();
    for kind in OptimizerKind::ALL {
        out.push((kind.name(), Box::new(move || build_optimizer::<T>(kind, 0.01).unwrap())));
    }
    out.push((
        "sgd+nesterov",
        Box::new(|| {
            Box::new(SgdConfig::new(0.01).with_momentum(0.9).with_nesterov(true).build::<T>().unwrap())
        }),
    ));
    out.push((
        "adam+amsgrad+wd",
        Box::new(|| {
            Box::new(AdamConfig::new(0.01).with_amsgrad(true).with_weight_decay(0.1).build::<T>().unwrap())
        }),
    ));
    out.push((
        "adamw+amsgrad",
        Box::new(|| Box::new(AdamWConfig::new(0.01).with_amsgrad(true).build::<T>().unwrap())),
    ));
    out.push((
        "rmsprop+centered+momentum",
        Box::new(|| {
            Box::new(RmsPropConfig::new(0.01).with_centered(true).with_momentum(0.9).build::<T>().unwrap())
        }),
    ));
    out.push((
        "adagrad+lr_decay",
        Box::new(|| {
            Box::new(
                AdagradConfig::new(0.1)
                    .with_lr_decay(0.05)
                    .with_initial_accumulator_value(0.1)
                    .build::<T>()
                    .unwrap(),
            )
        }),
    ));
    out
}

/// Parameters `a` (6 values) and `b` (3 values) and 20 steps of noise.
struct Problem<T> {
    a: Vec<T>,
    b: Vec<T>,
    noise: Vec<Vec<T>>,
}

impl<T: Scalar> Problem<T> {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::seed_from(seed);
        let mut draw = |n: usize| (0..n).map(|_| T::cast(rng.normal(0.0, 1.0))).collect::<Vec<T>>();
        let (a, b) = (draw(6), draw(3));
        let noise = (0..20).map(|_| draw(9)).collect();
        Self { a, b, noise }
    }

    /// Steps `from..to`: the gradient of `½|p - 1|²` plus the step's noise.
    fn run(&mut self, opt: &mut dyn Optimizer<T>, from: usize, to: usize) {
        for t in from..to {
            let n = &self.noise[t];
            let ga: Vec<T> = self.a.iter().zip(&n[..6]).map(|(&p, &e)| p - T::ONE + e).collect();
            let gb: Vec<T> = self.b.iter().zip(&n[6..]).map(|(&p, &e)| p - T::ONE + e).collect();
            let mut views = [
                ParamMut { name: "a".into(), value: &mut self.a, grad: &ga },
                ParamMut { name: "b".into(), value: &mut self.b, grad: &gb },
            ];
            opt.step(&mut views).unwrap();
        }
    }
}

fn check_resume<T: Scalar>() {
    for (name, build) in optimizers::<T>() {
        let mut straight = Problem::<T>::new(7);
        let mut opt = build();
        straight.run(opt.as_mut(), 0, 20);

        let mut resumed = Problem::<T>::new(7);
        let mut first = build();
        resumed.run(first.as_mut(), 0, 10);
        let saved = first.state();
        drop(first);
        let mut second = build();
        second.load_state(&saved).unwrap();
        assert_eq!(second.state(), saved, "{name}: state survives a round trip");
        resumed.run(second.as_mut(), 10, 20);

        assert_eq!(straight.a, resumed.a, "{name} ({}): resumed run differs", T::NAME);
        assert_eq!(straight.b, resumed.b, "{name} ({}): resumed run differs", T::NAME);
        assert_eq!(opt.state(), second.state(), "{name}: final states differ");
        // The check above would pass trivially if the optimizer did nothing.
        assert_ne!(straight.a, Problem::<T>::new(7).a, "{name}: parameters did not move");
    }
}

#[test]
fn resume_is_bit_identical_f64() {
    check_resume::<f64>();
}

#[test]
fn resume_is_bit_identical_f32() {
    check_resume::<f32>();
}

#[test]
fn restoring_mismatched_state_is_an_error() {
    let mut p = Problem::<f64>::new(1);
    let mut adam = AdamConfig::new(0.01).with_amsgrad(true).build::<f64>().unwrap();
    p.run(&mut adam, 0, 2);
    let saved = adam.state();
    // Another optimizer.
    let e = RmsPropConfig::default().build::<f64>().unwrap().load_state(&saved).unwrap_err();
    assert!(e.to_string().contains("adam"), "{e}");
    // The same optimizer with other options (no max_exp_avg_sq buffer).
    let e = AdamConfig::new(0.01).build::<f64>().unwrap().load_state(&saved).unwrap_err();
    assert!(e.to_string().contains("max_exp_avg_sq"), "{e}");
    // A missing buffer.
    let mut broken = saved.clone();
    broken.buffers.remove("a/exp_avg");
    let e = AdamConfig::new(0.01).with_amsgrad(true).build::<f64>().unwrap().load_state(&broken).unwrap_err();
    assert!(e.to_string().contains("exp_avg"), "{e}");
    // A buffer of the wrong length, found when stepping.
    let mut short = saved.clone();
    for b in ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"] {
        short.buffers.get_mut(&format!("a/{b}")).unwrap().pop();
    }
    let mut opt = AdamConfig::new(0.01).with_amsgrad(true).build::<f64>().unwrap();
    opt.load_state(&short).unwrap();
    let before = p.a.clone();
    let g = vec![0.5; 6];
    let e = opt.step(&mut [ParamMut { name: "a".into(), value: &mut p.a, grad: &g }]).unwrap_err();
    assert!(e.to_string().contains("5 values"), "{e}");
    assert_eq!(p.a, before, "a failed step leaves the parameters alone");
}
