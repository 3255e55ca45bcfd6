use std::path::PathBuf;

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
    #[error("cannot write {path}: {message}; check that the directory exists and is writable")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
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
    pub fn write(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Self::Write { path: path.to_owned(), message: e.to_string() }
    }
}
