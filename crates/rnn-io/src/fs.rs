//! Reading a file whole (within limits) and writing one atomically.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::IoError;

/// The largest header a safetensors file may have (the format's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Writes `bytes` to `path` atomically: a temporary file in the target's directory
/// (`.NAME.tmp-PID`), flushed to disk, renamed over the target, then the directory flushed. A
/// reader, or a run killed at any instant, sees the old file or the new one, never a mix; on an
/// error the temporary file is removed and the target is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name =
        path.file_name().ok_or_else(|| IoError::write(path, std::io::Error::other("not a file name")))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(IoError::write(path, e));
    }
    Ok(())
}

/// Flushes a directory's entries (a rename) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a safetensors file's bytes. A regular file is read whole (its size is known); anything
/// else (a pipe, a device such as `/dev/zero`) is read as far as its header says the file goes,
/// within the format's header limit and `max_data` bytes of tensors, so an endless input is an
/// error instead of exhausting memory.
pub fn read_file_bytes(path: &Path, max_data: u64) -> Result<Vec<u8>, IoError> {
    let bad = |m: String| IoError::read(path, m);
    let cannot = |e: std::io::Error| bad(format!("cannot read it: {e}"));
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if meta.is_file() || meta.is_dir() {
        return std::fs::read(path).map_err(cannot);
    }
    let invalid =
        |what: String| bad(format!("not a valid safetensors file (truncated or corrupted?): {what}"));
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8).map_err(|_| invalid("it ends within the first 8 bytes".into()))?;
    let n = u64::from_le_bytes(len8);
    if n > MAX_HEADER_BYTES {
        return Err(invalid(format!("its header would be {n} bytes, more than {MAX_HEADER_BYTES}")));
    }
    let mut bytes = len8.to_vec();
    (&mut f).take(n).read_to_end(&mut bytes).map_err(cannot)?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..])
        .map_err(|_| invalid("its header is not JSON (or it ends within it)".into()))?;
    let data_len = header
        .as_object()
        .map(|m| m.values().filter_map(|t| t["data_offsets"][1].as_u64()).max().unwrap_or(0))
        .ok_or_else(|| invalid("its header is not a JSON object".into()))?;
    if data_len > max_data {
        return Err(invalid(format!(
            "its header describes {data_len} bytes of tensors, more than {max_data}"
        )));
    }
    (&mut f).take(data_len).read_to_end(&mut bytes).map_err(cannot)?;
    let mut extra = [0u8; 1];
    if f.read(&mut extra).map_err(cannot)? > 0 {
        return Err(invalid("it goes on past the tensors its header describes".into()));
    }
    Ok(bytes)
}
