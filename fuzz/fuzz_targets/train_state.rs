//! The training-state (`--resume`) loader on arbitrary input: a value or an error, never a panic.
//! The input is the state's JSON text, then (for version 3) a zero byte and the bytes of its
//! arrays file (`train_state.safetensors`); without a zero byte it is the JSON alone (versions 1
//! and 2). The arrays are also decoded on their own, since their CRC-32 in the JSON refuses
//! nearly every mutation before they are read. A state that loads must write itself back and
//! load again to the same files.
#![no_main]

use charlm::resume::{decode_arrays, TrainState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let (json, arrays) = match bytes.iter().position(|&b| b == 0) {
        Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
        None => (bytes, None),
    };
    if let Some(arrays) = arrays {
        let _ = decode_arrays(arrays);
    }
    let Ok(text) = std::str::from_utf8(json) else { return };
    let _ = TrainState::arrays_crc32(text);
    if let Ok(state) = TrainState::from_files(text, arrays) {
        let (json, arrays) = state.to_files().expect("a loaded state must encode");
        let again = TrainState::from_files(&json, Some(&arrays)).expect("a loaded state must reload");
        assert_eq!(again.to_files().expect("and encode"), (json, arrays), "the state changed on a round trip");
    }
});
