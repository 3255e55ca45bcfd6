use thiserror::Error;

/// Errors a user can cause when building or running cells.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum CellError {
    /// A size or option is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Input data does not fit the model.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A file of tensors that cannot be read, or whose tensors are not a module (feature
    /// `safetensors`).
    #[cfg(feature = "safetensors")]
    #[error(transparent)]
    File(#[from] rnn_io::IoError),
}
