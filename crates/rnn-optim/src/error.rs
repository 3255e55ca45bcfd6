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
