//! Every public optimizer and schedule constructor refuses bad hyper-parameters with an
//! `OptimError` (never a panic): zero, negative, NaN and infinite values, out-of-range betas and
//! etas, inverted step-size bounds.

use rnn_optim::{
    build_optimizer, AdagradConfig, AdamConfig, AdamWConfig, BasicRpropConfig, ConstantLr, ExponentialLr,
    OptimizerKind, RmsPropConfig, RpropConfig, SgdConfig, StepLr,
};

const BAD: [f64; 4] = [f64::NAN, f64::INFINITY, -1.0, f64::NEG_INFINITY];

#[test]
fn optimizer_configs_reject_bad_values() {
    for lr in BAD {
        assert!(SgdConfig::new(lr).build::<f64>().is_err(), "sgd lr {lr}");
        assert!(AdamConfig::new(lr).build::<f64>().is_err(), "adam lr {lr}");
        assert!(AdamWConfig::new(lr).build::<f32>().is_err(), "adamw lr {lr}");
        assert!(RmsPropConfig::new(lr).build::<f64>().is_err(), "rmsprop lr {lr}");
        assert!(AdagradConfig::new(lr).build::<f64>().is_err(), "adagrad lr {lr}");
        assert!(RpropConfig::new(lr).build::<f64>().is_err(), "rprop lr {lr}");
        assert!(BasicRpropConfig::new().with_initial_step(lr).build::<f64>().is_err(), "basic {lr}");
        assert!(ConstantLr::new(lr).is_err(), "constant {lr}");
        assert!(ExponentialLr::new(lr, 0.9).is_err(), "exponential lr {lr}");
        assert!(StepLr::new(lr, 3, 0.5).is_err(), "step lr {lr}");
        assert!(SgdConfig::new(0.1).with_momentum(lr).build::<f64>().is_err(), "momentum {lr}");
        assert!(SgdConfig::new(0.1).with_weight_decay(lr).build::<f64>().is_err(), "decay {lr}");
        assert!(AdamConfig::new(0.1).with_eps(lr).build::<f64>().is_err(), "adam eps {lr}");
        assert!(RmsPropConfig::new(0.1).with_alpha(lr).build::<f64>().is_err(), "alpha {lr}");
        assert!(AdagradConfig::new(0.1).with_lr_decay(lr).build::<f64>().is_err(), "lr_decay {lr}");
        assert!(ExponentialLr::new(0.1, lr).is_err(), "gamma {lr}");
    }
    for (b1, b2) in [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.999), (0.9, f64::NAN)] {
        assert!(AdamConfig::new(1e-3).with_betas(b1, b2).build::<f64>().is_err(), "betas {b1} {b2}");
    }
    assert!(RpropConfig::new(0.01).with_etas(1.5, 1.2).build::<f64>().is_err(), "eta_minus > 1");
    assert!(RpropConfig::new(0.01).with_etas(0.5, 0.9).build::<f64>().is_err(), "eta_plus < 1");
    assert!(RpropConfig::new(0.01).with_step_sizes(1.0, 1e-6).build::<f64>().is_err(), "min > max");
    assert!(BasicRpropConfig::new().with_etas(0.5, 1.2).build::<f64>().is_err(), "swapped etas");
    assert!(StepLr::new(0.1, 0, 0.5).is_err(), "step_size 0");
    assert!(SgdConfig::new(0.1).with_nesterov(true).build::<f64>().is_err(), "nesterov without momentum");
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::Rprop] {
        assert!(build_optimizer::<f64>(kind, f64::NAN).is_err(), "{kind:?}");
        assert!(build_optimizer::<f64>(kind, 1e-3).is_ok(), "{kind:?}");
    }
    // The defaults build, so the refusals above are about the values.
    assert!(SgdConfig::new(0.1).build::<f64>().is_ok() && AdamConfig::new(1e-3).build::<f64>().is_ok());
    assert!(RpropConfig::new(0.01).build::<f64>().is_ok() && BasicRpropConfig::new().build::<f64>().is_ok());
}
