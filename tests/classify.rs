//! `examples/classify.rs` learns its task: a bidirectional GRU over variable-length sequences
//! tells whether a sequence's first token is its last, on held-out sequences, far above chance
//! (0.5). Seeded: the same run every time.

#[path = "../examples/common/classify.rs"]
mod classify;

#[test]
fn bidirectional_gru_learns_first_equals_last_on_variable_lengths() {
    let acc = classify::train_and_test(25000, 1000, 1, 0);
    assert!(acc >= 0.95, "held-out accuracy {acc}");
}
