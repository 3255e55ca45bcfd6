//! The run directory's guards: one trainer at a time, no run replaced unasked, no leftovers.
//!
//! - **Lock**: `charlm train` holds an advisory lock ([`std::fs::File::try_lock`], `flock` on
//!   Unix) on [`LOCK_FILE`] in its run directory for the whole run, with its process id written
//!   in the file. A second trainer on the same directory (fresh, `--resume`, or reading it as the
//!   `--resume` source of another directory) is refused with that process id; the running one
//!   is not touched. The operating system drops the lock when the process ends, however it ends,
//!   so a killed run never blocks the next one (the file itself stays; it is not the lock).
//! - **Existing runs**: a directory holds a run when it has a model or a training state file
//!   ([`holds_run`]); a fresh run into it is refused unless `--overwrite` is given.
//! - **Leftovers**: the temporary files of a checkpoint commit (see [`crate::resume`]) and of
//!   the loss plot that a killed run left behind are removed once the lock is held
//!   ([`remove_leftovers`]): no other process is writing them then.
//!
//! The `charlm` program applies these ([`crate::cli::run_train`]); a library caller of
//! [`crate::train::train`] owns its directory and may take the same [`RunLock`].

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::resume::{ARRAYS_FILE, ARRAYS_NEXT, BEST_FILE, MODEL_FILE, STATE_FILE, STATE_NEXT};

/// The loss plot's name in a run directory.
pub const PLOT_FILE: &str = "loss.png";
use crate::CharLmError;

/// The lock file's name in a run directory.
pub const LOCK_FILE: &str = ".charlm.lock";

/// The lock on a run directory, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    dir: PathBuf,
}

impl RunLock {
    /// Locks `dir` (which must exist) for this process, or says which process holds it. `flag`
    /// names the option that chose the directory (`--out`, `--resume`).
    pub fn acquire(dir: &Path, flag: &str) -> Result<Self, CharLmError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| CharLmError::write(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("process {pid}"),
                    Err(_) => "another process".to_string(),
                };
                return Err(CharLmError::arg(
                    flag,
                    format!(
                        "run directory {} is in use by another `charlm train` ({holder}); wait for it to end \
                         or choose another directory",
                        dir.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                // A file system without locks: run unguarded rather than not at all.
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: cannot lock {} (the file system does not support locks); do not start \
                     two trainers on it",
                    dir.display()
                );
            }
            Err(TryLockError::Error(e)) => return Err(CharLmError::write(&path, e)),
        }
        let pid = format!("{}\n", std::process::id());
        let written = file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0))).and_then(|_| {
            file.write_all(pid.as_bytes())?;
            file.flush()
        });
        written.map_err(|e| CharLmError::write(&path, e))?;
        Ok(Self { _file: file, dir: dir.to_owned() })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Whether `dir` holds a run: a model file or a training state file. (A best model alone is
/// what a run killed before its first commit leaves: [`remove_leftovers`] removes it.)
pub fn holds_run(dir: &Path) -> bool {
    dir.join(MODEL_FILE).exists() || dir.join(STATE_FILE).exists()
}

/// Whether `name` is a temporary file of a checkpoint commit or of the plot (any process's).
pub fn is_leftover(name: &str) -> bool {
    let temp_of = |target: &str| {
        name.strip_prefix('.')
            .and_then(|r| r.strip_prefix(target))
            .and_then(|r| r.strip_prefix(".tmp-"))
            .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    };
    let plot = name
        .strip_prefix(".loss-")
        .and_then(|r| r.strip_suffix(".tmp.png"))
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    let probe = name
        .strip_prefix(".charlm-probe-")
        .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    temp_of(MODEL_FILE)
        || temp_of(BEST_FILE)
        || temp_of(STATE_FILE)
        || temp_of(STATE_NEXT)
        || temp_of(ARRAYS_FILE)
        || temp_of(ARRAYS_NEXT)
        || temp_of(PLOT_FILE)
        || plot
        || probe
}

/// Removes the temporary files killed runs left in `dir` ([`is_leftover`]) and, when the
/// directory holds no model, a pending training state and its arrays (a commit that never
/// reached its model), and when it holds no run, a best model (written just before a first
/// commit that never happened) and a state's arrays.
/// Call it holding the directory's lock, after [`crate::resume::load_checkpoint`] has settled a
/// pending state for a resumed run. Returns the names removed.
pub fn remove_leftovers(dir: &Path) -> Result<Vec<String>, CharLmError> {
    let mut removed = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| CharLmError::write(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pending_without_model =
            (name == STATE_NEXT || name == ARRAYS_NEXT) && !dir.join(MODEL_FILE).exists();
        let best_without_run = (name == BEST_FILE || name == ARRAYS_FILE) && !holds_run(dir);
        if is_leftover(&name) || pending_without_model || best_without_run {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| CharLmError::write(&path, e))?;
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

/// Removes the run in `dir` (`--overwrite`): its training state first (the JSON, then its
/// arrays), then its models and plot, so that a kill in between never leaves a state without its
/// model.
pub fn discard_run(dir: &Path) -> Result<(), CharLmError> {
    for name in [STATE_NEXT, STATE_FILE, ARRAYS_NEXT, ARRAYS_FILE, MODEL_FILE, BEST_FILE, PLOT_FILE] {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CharLmError::write(&path, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_names() {
        for n in [
            ".model.safetensors.tmp-123",
            ".best.safetensors.tmp-8",
            ".train_state.json.next.tmp-9",
            ".train_state.json.tmp-77",
            ".train_state.safetensors.tmp-78",
            ".train_state.safetensors.next.tmp-79",
            ".loss-4242.tmp.png",
            ".loss.png.tmp-31",
            ".charlm-probe-5",
        ] {
            assert!(is_leftover(n), "{n}");
        }
        for n in ["model.safetensors", ".model.safetensors.tmp-", ".loss-x.tmp.png", "notes.tmp-1", LOCK_FILE]
        {
            assert!(!is_leftover(n), "{n}");
        }
    }
}
