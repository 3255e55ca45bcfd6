use std::path::{Path, PathBuf};

use thiserror::Error;

/// Everything that can go wrong reading or writing tensors. Every message is one line that names
/// the file (and the tensor, when one is at fault), says what is wrong and what to do.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum IoError {
    /// A file (or bytes) that cannot be read, or does not hold the tensor asked for.
    #[error("{}: {message}", shown(path))]
    Read {
        /// The file (the name given to bytes read from elsewhere).
        path: PathBuf,
        /// What is wrong, naming the tensor when one is at fault.
        message: String,
    },
    /// A file that cannot be written.
    #[error("cannot write {}: {message}; {}", shown(path), write_hint(*.kind))]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
        /// Its kind, which chooses the advice.
        kind: std::io::ErrorKind,
    },
    /// Tensors that cannot be written as they are (a shape that its values do not fill, a
    /// reserved name).
    #[error("cannot encode tensor {name}: {message}")]
    Encode {
        /// The tensor.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A path for a message; tensors built in memory have none.
fn shown(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        "(tensors in memory)".into()
    } else {
        path.display().to_string()
    }
}

/// The advice for a failed write, by its cause: a full disk and a closed pipe are not problems
/// of the directory.
pub fn write_hint(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind::*;
    match kind {
        StorageFull | QuotaExceeded | FileTooLarge => "the disk (or quota) is full: free some space",
        BrokenPipe => "the reader went away",
        NotFound | PermissionDenied | ReadOnlyFilesystem | NotADirectory | IsADirectory | AlreadyExists => {
            "check that the directory exists and is writable"
        }
        _ => "check the disk and the directory",
    }
}

impl IoError {
    /// An [`IoError::Read`].
    pub fn read(path: &Path, message: impl Into<String>) -> Self {
        Self::Read { path: path.to_owned(), message: message.into() }
    }

    /// An [`IoError::Write`] from an I/O error.
    pub fn write(path: &Path, e: std::io::Error) -> Self {
        Self::Write { path: path.to_owned(), message: e.to_string(), kind: e.kind() }
    }
}
