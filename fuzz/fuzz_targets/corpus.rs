//! The corpus loader and both batchers on arbitrary bytes: a value or an error, never a panic.
//! The first three bytes choose the validation fraction, the batch size and the sequence length;
//! a corpus that loads is cut into every batch of one epoch of streams and a few windows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnn_data::{Batch, Batcher, BatcherPosition, Corpus, StreamBatcher, WindowBatcher};
use rnn_tensor::Rng;

fuzz_target!(|bytes: &[u8]| {
    let [f, b, t, rest @ ..] = bytes else { return };
    let val_frac = *f as f64 / 255.0;
    let (batch, seq_len) = (*b as usize % 9, *t as usize % 17);
    let Ok(corpus) = Corpus::from_bytes(rest, "fuzz", val_frac) else { return };
    let vocab = corpus.vocab();
    let decoded = vocab.decode(corpus.train()).expect("training text decodes");
    assert_eq!(vocab.encode(&decoded).expect("and encodes back"), corpus.train());
    let mut out =
        Batch { inputs: Vec::new(), targets: Vec::new(), batch: 0, seq_len: 0, reset_state: true, epoch: 0 };
    if let Ok(mut streams) = StreamBatcher::new(corpus.train(), batch, seq_len) {
        let per_epoch = streams.batches_per_epoch();
        for _ in 0..per_epoch.min(64) + 1 {
            streams.next_batch(&mut out);
            assert_eq!(out.inputs.len(), batch * seq_len);
        }
        // A saved position from anywhere (here: the length byte) restores or is refused.
        let pos = BatcherPosition { epoch: 0, batch: *t as u64, rng: None };
        if streams.restore(&pos).is_ok() {
            streams.next_batch(&mut out);
        }
    }
    if let Ok(mut windows) = WindowBatcher::new(corpus.train(), batch, seq_len, Rng::seed_from(7)) {
        for _ in 0..4 {
            windows.next_batch(&mut out);
            assert!(out.inputs.iter().chain(&out.targets).all(|&i| i < vocab.len()));
        }
    }
});
