//! A text corpus and its two batchers: `cargo run -p rnn-data --example corpus [PATH]`.
//!
//! Without a path it uses a few lines written here. It prints the vocabulary, the split, and the
//! first batches of both batchers, decoded, so the step-major layout can be read off.

use rnn_data::{Batch, Batcher, Corpus, StreamBatcher, WindowBatcher};
use rnn_tensor::Rng;

const TEXT: &str = "A recurrent network reads one character at a time and guesses the next.\n\
It carries what it has read in its state, from one step to the next, and from one batch to the next.\n";

fn show(corpus: &Corpus, batch: &Batch) -> Result<(), rnn_data::DataError> {
    for b in 0..batch.batch {
        let col =
            |v: &[usize]| -> Vec<usize> { (0..batch.seq_len).map(|t| v[t * batch.batch + b]).collect() };
        let input = corpus.vocab().decode(&col(&batch.inputs))?;
        let target = corpus.vocab().decode(&col(&batch.targets))?;
        println!("  sample {b}: {input:?} -> {target:?}");
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = match std::env::args().nth(1) {
        Some(path) => Corpus::from_file(path, 0.1)?,
        None => Corpus::from_text(TEXT, 0.1)?,
    };
    let chars: String = corpus.vocab().chars().iter().collect();
    println!(
        "corpus {}: {} characters, vocabulary of {}: {chars:?}",
        corpus.origin(),
        corpus.len(),
        corpus.vocab().len()
    );
    println!("training text {} characters, validation {}", corpus.train().len(), corpus.val().len());

    let (b, t) = (3, 12);
    let mut streams = StreamBatcher::new(corpus.train(), b, t)?;
    println!("\nstreams, B = {b}, T = {t}: {} batches per epoch", streams.batches_per_epoch());
    let mut batch = Batch::default();
    for _ in 0..2 {
        let pos = streams.position();
        streams.next_batch(&mut batch);
        println!(" batch {} of epoch {} (reset state: {})", pos.batch, pos.epoch, batch.reset_state);
        show(&corpus, &batch)?;
    }

    let mut windows = WindowBatcher::new(corpus.train(), b, t, Rng::seed_from(0))?;
    println!("\nwindows, B = {b}, T = {t}, seed 0:");
    windows.next_batch(&mut batch);
    show(&corpus, &batch)?;
    Ok(())
}
