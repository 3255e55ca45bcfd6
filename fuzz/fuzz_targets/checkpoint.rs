//! The safetensors checkpoint loader on arbitrary bytes: a value or an error, never a panic.
//! When the bytes decode as a model, its tensors are also checked against its own configuration
//! (what `charlm sample`/`eval`/`--init` do next).
#![no_main]

use std::path::Path;

use charlm::checkpoint::{check_tensors, decode_model, decode_tensors};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    if let Ok(file) = decode_tensors(path, bytes) {
        if let Ok(model) = decode_model(path, bytes) {
            let _ = check_tensors(path, &file, &model.config);
        }
    } else {
        let _ = decode_model(path, bytes);
    }
});
