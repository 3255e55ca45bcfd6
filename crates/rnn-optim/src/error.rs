use thiserror::Error;

/// Errors from configuring or running an optimizer.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum OptimError {
    /// A hyperparameter is out of range.
    #[error("invalid hyperparameter for {optimizer}: {message}")]
    InvalidHyperparameter {
        /// The optimizer's name.
        optimizer: &'static str,
        /// What is wrong and the allowed range.
        message: String,
    },
    /// Parameters and gradients or saved state do not line up.
    #[error("parameter mismatch: {0}")]
    Mismatch(String),
    /// Saved state cannot be restored into this optimizer.
    #[error("cannot restore optimizer state: {0}")]
    BadState(String),
    /// No optimizer has this name.
    #[error("unknown optimizer {0}")]
    UnknownOptimizer(String),
    /// A gradient norm was NaN or infinite.
    #[error("non-finite gradient norm {0}: the loss diverged; lower the learning rate or clip harder")]
    NonFiniteNorm(f64),
}

impl From<rnn_tensor::TensorError> for OptimError {
    fn from(e: rnn_tensor::TensorError) -> Self {
        OptimError::Mismatch(e.to_string())
    }
}

/// Returns an [`OptimError::InvalidHyperparameter`] unless `ok`.
pub(crate) fn check(
    ok: bool,
    optimizer: &'static str,
    message: impl FnOnce() -> String,
) -> Result<(), OptimError> {
    if ok {
        Ok(())
    } else {
        Err(OptimError::InvalidHyperparameter { optimizer, message: message() })
    }
}

/// Requires `value` finite and `>= 0`; the error names the hyperparameter.
pub(crate) fn check_nonneg(optimizer: &'static str, name: &str, value: f64) -> Result<(), OptimError> {
    check(value.is_finite() && value >= 0.0, optimizer, || {
        format!("{name} must be finite and >= 0, got {value}")
    })
}

/// Requires `0 <= value < 1` (a decay rate such as Adam's betas or RMSprop's alpha).
pub(crate) fn check_unit(optimizer: &'static str, name: &str, value: f64) -> Result<(), OptimError> {
    check((0.0..1.0).contains(&value), optimizer, || format!("{name} must be in [0, 1), got {value}"))
}

/// Requires the Rprop factors `0 < eta_minus < 1 < eta_plus`, `eta_plus` finite.
pub(crate) fn check_etas(optimizer: &'static str, eta_minus: f64, eta_plus: f64) -> Result<(), OptimError> {
    check(eta_minus > 0.0 && eta_minus < 1.0, optimizer, || {
        format!("eta_minus must be in (0, 1), got {eta_minus}")
    })?;
    check(eta_plus > 1.0 && eta_plus.is_finite(), optimizer, || {
        format!("eta_plus must be finite and > 1, got {eta_plus}")
    })
}
