//! The corpus loader on tinyshakespeare, read from `$RNN_TINYSHAKESPEARE` (never copied into the
//! project). Skips with a note when the variable is unset; fails when it is set and the file is
//! missing.

use rnn_data::text::StreamBatcher;
use rnn_data::{Batcher, Corpus};

#[test]
fn tinyshakespeare_loads_with_char_rnn_sizes() {
    let Some(path) = std::env::var_os("RNN_TINYSHAKESPEARE") else {
        eprintln!("note: RNN_TINYSHAKESPEARE is unset; skipping the tinyshakespeare corpus test");
        return;
    };
    let corpus =
        Corpus::from_file(&path, 0.1).expect("RNN_TINYSHAKESPEARE is set but the corpus does not load");
    // 1,115,394 characters over 65 distinct ones, as char-rnn reports.
    assert_eq!(corpus.len(), 1_115_394);
    assert_eq!(corpus.vocab().len(), 65);
    assert_eq!(corpus.train().len(), 1_003_855);
    assert_eq!(corpus.vocab().decode(&corpus.train()[..9]).unwrap(), "First Cit");
    // The defaults, 50 streams of 50 steps: n = ⌊1003854 / 2500⌋·50 = 20050, 401 batches.
    let s = StreamBatcher::new(corpus.train(), 50, 50).unwrap();
    assert_eq!(s.batches_per_epoch(), 401);
}
