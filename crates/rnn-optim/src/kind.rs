//! Choosing an optimizer by name (for command lines and checkpoints).

use std::fmt;
use std::str::FromStr;

use rnn_tensor::Scalar;

use crate::{
    AdagradConfig, AdamConfig, AdamWConfig, BasicRpropConfig, OptimError, Optimizer, RmsPropConfig,
    RpropConfig, SgdConfig,
};

/// Every optimizer of this crate, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptimizerKind {
    /// [`crate::Sgd`], `"sgd"`.
    Sgd,
    /// [`crate::Rprop`] (`torch.optim.Rprop`), `"rprop"`.
    Rprop,
    /// [`crate::BasicRprop`] (the counting-ones tutorial's rule), `"basic_rprop"`.
    BasicRprop,
    /// [`crate::Adam`], `"adam"`.
    Adam,
    /// [`crate::AdamW`], `"adamw"`.
    AdamW,
    /// [`crate::RmsProp`], `"rmsprop"`.
    RmsProp,
    /// [`crate::Adagrad`], `"adagrad"`.
    Adagrad,
}

impl OptimizerKind {
    /// All kinds, in the order above.
    pub const ALL: [OptimizerKind; 7] = [
        OptimizerKind::Sgd,
        OptimizerKind::Rprop,
        OptimizerKind::BasicRprop,
        OptimizerKind::Adam,
        OptimizerKind::AdamW,
        OptimizerKind::RmsProp,
        OptimizerKind::Adagrad,
    ];

    /// The name used on the command line and in saved state ([`Optimizer::name`]).
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Rprop => "rprop",
            OptimizerKind::BasicRprop => "basic_rprop",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::RmsProp => "rmsprop",
            OptimizerKind::Adagrad => "adagrad",
        }
    }

    /// PyTorch's default learning rate (for BasicRprop, the tutorial's initial step 0.001).
    pub fn default_lr(self) -> f64 {
        match self {
            OptimizerKind::Sgd => SgdConfig::default().lr,
            OptimizerKind::Rprop => RpropConfig::default().lr,
            OptimizerKind::BasicRprop => BasicRpropConfig::default().initial_step,
            OptimizerKind::Adam => AdamConfig::default().lr,
            OptimizerKind::AdamW => AdamWConfig::default().lr,
            OptimizerKind::RmsProp => RmsPropConfig::default().lr,
            OptimizerKind::Adagrad => AdagradConfig::default().lr,
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OptimizerKind {
    type Err = OptimError;

    /// Parses a name as printed by [`OptimizerKind::name`], ignoring case.
    fn from_str(s: &str) -> Result<Self, OptimError> {
        let lower = s.to_ascii_lowercase();
        OptimizerKind::ALL.into_iter().find(|k| k.name() == lower).ok_or_else(|| {
            let names: Vec<_> = OptimizerKind::ALL.iter().map(|k| k.name()).collect();
            OptimError::UnknownOptimizer(format!("{s:?}; choose one of {}", names.join(", ")))
        })
    }
}

/// Builds an optimizer of the given kind with the given learning rate (for BasicRprop, the
/// initial step size) and every other hyperparameter at its default.
pub fn build_optimizer<T: Scalar>(kind: OptimizerKind, lr: f64) -> Result<Box<dyn Optimizer<T>>, OptimError> {
    Ok(match kind {
        OptimizerKind::Sgd => Box::new(SgdConfig::new(lr).build::<T>()?),
        OptimizerKind::Rprop => Box::new(RpropConfig::new(lr).build::<T>()?),
        OptimizerKind::BasicRprop => Box::new(BasicRpropConfig::new().with_initial_step(lr).build::<T>()?),
        OptimizerKind::Adam => Box::new(AdamConfig::new(lr).build::<T>()?),
        OptimizerKind::AdamW => Box::new(AdamWConfig::new(lr).build::<T>()?),
        OptimizerKind::RmsProp => Box::new(RmsPropConfig::new(lr).build::<T>()?),
        OptimizerKind::Adagrad => Box::new(AdagradConfig::new(lr).build::<T>()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_optimizers() {
        for kind in OptimizerKind::ALL {
            assert_eq!(kind.name().parse::<OptimizerKind>().unwrap(), kind);
            let opt = build_optimizer::<f32>(kind, kind.default_lr()).unwrap();
            assert_eq!(opt.name(), kind.name());
            assert_eq!(opt.lr(), kind.default_lr());
            assert_eq!(opt.state().kind, kind.name());
        }
        assert_eq!("AdamW".parse::<OptimizerKind>().unwrap(), OptimizerKind::AdamW);
        let e = "adan".parse::<OptimizerKind>().unwrap_err().to_string();
        assert!(e.contains("adan") && e.contains("rmsprop"), "{e}");
        let e = build_optimizer::<f64>(OptimizerKind::Adam, -1.0).err().unwrap().to_string();
        assert!(e.contains("lr"), "{e}");
    }
}
