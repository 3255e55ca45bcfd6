//! The training-state (`--resume`) loader on arbitrary text: a value or an error, never a panic.
//! A state that loads must also write itself back and load again to the same value.
#![no_main]

use charlm::resume::TrainState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    if let Ok(state) = TrainState::from_json(text) {
        let again = TrainState::from_json(&state.to_json()).expect("a loaded state must reload");
        assert_eq!(again.to_json(), state.to_json(), "the state changed on a round trip");
    }
});
