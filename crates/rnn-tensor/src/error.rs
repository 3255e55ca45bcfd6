use thiserror::Error;

/// Errors from the math layer: everything here is caused by data a user handed in.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum TensorError {
    /// Two named parameter lists do not line up.
    #[error("parameter mismatch: {0}; pass gradients produced by the same model as the parameters")]
    ParamMismatch(String),
    /// An initialiser or distribution was given an invalid argument.
    #[error("invalid initialiser argument: {0}")]
    InvalidInit(String),
}
