use std::path::PathBuf;

use rnn_io::write_hint;
use thiserror::Error;

/// Everything that can go wrong in the language model and the `charlm` program. Every message
/// is one line that names the problem and says what to do.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CharLmError {
    /// A corpus, a prime text or a batcher setting.
    #[error(transparent)]
    Data(#[from] rnn_data::DataError),
    /// A checkpoint (or `--init` weights file) that cannot be used.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it and what to do.
        message: String,
    },
    /// A file that cannot be written.
    #[error("cannot write {path}: {message}; {}", write_hint(*.kind))]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
        /// Its kind, which chooses the advice.
        kind: std::io::ErrorKind,
    },
    /// Standard output cannot be written (other than its reader going away, which is
    /// [`CharLmError::OutputClosed`]).
    #[error("cannot write to standard output: {message}; {}", write_hint(*.kind))]
    Stdout {
        /// The operating system's reason.
        message: String,
        /// Its kind, which chooses the advice.
        kind: std::io::ErrorKind,
    },
    /// The reader of standard output went away (`charlm sample | head`): the program stops
    /// quietly.
    #[error("the reader of standard output went away")]
    OutputClosed,
    /// A setting from the environment (`RNN_NUM_THREADS`, `MATMUL_NUM_THREADS`, `RNN_MAX_SIMD`).
    #[error("{0}")]
    Environment(String),
    /// A command-line option or configuration value out of range.
    #[error("invalid {name}: {message}")]
    InvalidArgument {
        /// The option (`--hidden`, `--lr`, ...).
        name: String,
        /// What is wrong and the allowed range.
        message: String,
    },
    /// An optimizer setting or state.
    #[error(transparent)]
    Optim(#[from] rnn_optim::OptimError),
    /// A cell setting.
    #[error(transparent)]
    Cell(#[from] rnn_cells::CellError),
    /// A training or validation loss, the gradient norm or a weight became NaN or infinite.
    #[error(
        "training diverged at step {step}: the {what} is {value}; {}; lower --lr or set --clip-norm",
        kept_checkpoint(*.checkpoint)
    )]
    Diverged {
        /// The optimizer step (from 1) at which it was found.
        step: u64,
        /// What was not finite: "training loss", "validation loss", "gradient norm", or
        /// "weight NAME".
        what: String,
        /// Its value.
        value: f64,
        /// The step of the last checkpoint in the output directory (kept as it was): written
        /// by this run or by the run it resumed; `None` if there is none.
        checkpoint: Option<u64>,
    },
    /// Sampling failed (non-finite logits).
    #[error("cannot sample: {0}")]
    Sample(String),
    /// Tensors that cannot be encoded (a file that cannot be read is a
    /// [`CharLmError::Checkpoint`], one that cannot be written a [`CharLmError::Write`]).
    #[error(transparent)]
    Tensors(rnn_io::IoError),
}

impl From<rnn_io::IoError> for CharLmError {
    fn from(e: rnn_io::IoError) -> Self {
        match e {
            rnn_io::IoError::Read { path, message } => Self::Checkpoint { path, message },
            rnn_io::IoError::Write { path, message, kind } => Self::Write { path, message, kind },
            other => Self::Tensors(other),
        }
    }
}

fn kept_checkpoint(step: Option<u64>) -> String {
    match step {
        Some(s) => format!("the checkpoint of step {s} is kept"),
        None => "no checkpoint was written yet".to_string(),
    }
}

impl CharLmError {
    /// An [`CharLmError::InvalidArgument`].
    pub fn arg(name: &str, message: impl Into<String>) -> Self {
        Self::InvalidArgument { name: name.to_owned(), message: message.into() }
    }

    /// A [`CharLmError::Checkpoint`].
    pub fn checkpoint(path: &std::path::Path, message: impl Into<String>) -> Self {
        Self::Checkpoint { path: path.to_owned(), message: message.into() }
    }

    /// A [`CharLmError::Write`] from an I/O error.
    pub fn write(path: &std::path::Path, e: std::io::Error) -> Self {
        Self::Write { path: path.to_owned(), message: e.to_string(), kind: e.kind() }
    }

    /// The error of a write to standard output: [`CharLmError::OutputClosed`] for a broken
    /// pipe, else [`CharLmError::Stdout`].
    pub fn stdout(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => Self::OutputClosed,
            kind => Self::Stdout { message: e.to_string(), kind },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    /// The advice follows the cause: a full disk or a closed pipe is not a directory problem.
    #[test]
    fn write_errors_advise_by_cause() {
        let p = std::path::Path::new("run/model.safetensors");
        let full = CharLmError::write(p, Error::from(ErrorKind::StorageFull)).to_string();
        assert!(full.contains("the disk (or quota) is full") && !full.contains("directory"), "{full}");
        let missing = CharLmError::write(p, Error::from(ErrorKind::NotFound)).to_string();
        assert!(missing.ends_with("check that the directory exists and is writable"), "{missing}");
        assert!(matches!(CharLmError::stdout(Error::from(ErrorKind::BrokenPipe)), CharLmError::OutputClosed));
        let out = CharLmError::stdout(Error::from(ErrorKind::StorageFull)).to_string();
        assert!(out.starts_with("cannot write to standard output") && !out.contains("directory"), "{out}");
    }
}
