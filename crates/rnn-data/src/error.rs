use std::path::PathBuf;

use thiserror::Error;

/// Errors a user can cause when generating or loading data: a file, a corpus, a size.
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
    /// The corpus file cannot be read (missing, a directory, no permission).
    #[error("cannot read corpus {path}: {message}; pass an existing, readable text file")]
    Io {
        /// The path given.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
    /// The corpus is not valid UTF-8.
    #[error("corpus {origin} is not valid UTF-8 at byte offset {offset}; convert it to UTF-8 (binary files are not text corpora)")]
    NotUtf8 {
        /// The file name, or `<string>`.
        origin: String,
        /// The offset of the first invalid byte.
        offset: usize,
    },
    /// The corpus is valid UTF-8 but holds a NUL byte, which no text file does: it is binary.
    #[error("corpus {origin} looks binary (a NUL byte at byte offset {offset}); pass a plain text file")]
    Binary {
        /// The file name, or `<string>`.
        origin: String,
        /// The offset of the first NUL byte.
        offset: usize,
    },
    /// The corpus has no characters.
    #[error("corpus {0} is empty; a language model needs text to learn from")]
    Empty(String),
    /// The corpus (or its training or validation part) is too short for the request.
    #[error("{what} has {have} characters, but {needed} are needed for {purpose}; use a longer corpus or a smaller --batch/--seq-len")]
    TooShort {
        /// Which text ("the training text", ...).
        what: String,
        /// Its length in characters.
        have: usize,
        /// The minimum length.
        needed: usize,
        /// What it was needed for ("one batch of 50 x 50").
        purpose: String,
    },
    /// Characters that are not in the vocabulary (all of them; the message lists the first
    /// ten and the count).
    #[error("{} character(s) not in the vocabulary: {}; use only characters of the training corpus", .0.len(), format_chars(.0))]
    UnknownChars(Vec<char>),
    /// A text file larger than the limit (or one that never ends: a FIFO, `/dev/zero`).
    #[error("{origin} is larger than the limit of {}; pass a smaller file, or raise the limit (charlm: --max-input-mib)", format_bytes(*.limit))]
    TooLarge {
        /// The file name.
        origin: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// An index that is not in the vocabulary.
    #[error("index {index} is outside the vocabulary of {size} characters")]
    BadIndex {
        /// The index.
        index: usize,
        /// The vocabulary size.
        size: usize,
    },
}

/// The most characters an error message lists.
pub(crate) const MAX_LISTED_CHARS: usize = 10;

/// Lists characters readably: printable ones quoted, others as escapes (`'\n'`, `'\u{7}'`); the
/// first [`MAX_LISTED_CHARS`], then how many more, so that the message stays one short line.
pub(crate) fn format_chars(chars: &[char]) -> String {
    let mut s =
        chars.iter().take(MAX_LISTED_CHARS).map(|c| format!("{:?}", c)).collect::<Vec<_>>().join(", ");
    if chars.len() > MAX_LISTED_CHARS {
        s.push_str(&format!(" and {} more", chars.len() - MAX_LISTED_CHARS));
    }
    s
}

/// `n` bytes in MiB (or bytes when smaller than one).
fn format_bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}
