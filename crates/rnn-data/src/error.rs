use thiserror::Error;

/// Errors a user can cause when configuring or reading a dataset.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum DataError {
    /// A size or option is out of range.
    #[error("invalid data configuration: {0}")]
    InvalidConfig(String),
}
