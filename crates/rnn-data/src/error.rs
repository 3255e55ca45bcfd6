use thiserror::Error;

/// Errors a user can cause when generating or loading data.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum DataError {
    /// A size or option is out of range.
    #[error("invalid dataset configuration: {0}")]
    InvalidConfig(String),
    /// A data file or text does not have the expected format.
    #[error("cannot parse {what}, line {line}: {message}")]
    Parse {
        /// What was being read (a file name or a description).
        what: String,
        /// The 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },
}
