//! Train a character-level LSTM language model for about two minutes, then sample from it.
//!
//! ```text
//! cargo run --release --example char_lm                      # the project's own docs
//! cargo run --release --example char_lm -- --corpus FILE     # any UTF-8 text
//! cargo run --release --example char_lm -- --steps 100       # a shorter run
//! ```
//!
//! The default corpus is this project's tutorial chapters, embedded at compile time: natural
//! language the project wrote itself (with some math and code in it). The model is a 2×128 LSTM
//! trained with Adam (2e-3), clip-norm 5, char-rnn's streams of 32 × 64; the run directory
//! (`target/char_lm` by default) receives `model.safetensors` (PyTorch loads it with
//! `tools/load_checkpoint.py`), `train_state.json` (with `train_state.safetensors`) and `loss.png`.

use std::path::PathBuf;

use charlm::charrnn::CharRnn;
use charlm::model::{generate, LanguageModel};
use charlm::sample::{encode_prime, SamplingConfig};
use charlm::train::{train, Batching, OptimKind, Stop, TrainConfig};
use charlm::ModelConfig;
use rnn_cells::Lstm;
use rnn_data::Corpus;
use rnn_tensor::Rng;

/// The tutorial's chapters, in reading order.
const DOCS: [&str; 5] = [
    include_str!("../docs/01-counting-ones.md"),
    include_str!("../docs/02-binary-addition.md"),
    include_str!("../docs/03-lstm-and-gru.md"),
    include_str!("../docs/04-char-lm.md"),
    include_str!("../docs/05-optimizers.md"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut corpus_path = None;
    let mut steps = 2000u64;
    let mut out = PathBuf::from("target/char_lm");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--corpus" => corpus_path = Some(PathBuf::from(value()?)),
            "--steps" => steps = value()?.parse().map_err(|_| "--steps needs a positive integer")?,
            "--out" => out = PathBuf::from(value()?),
            other => {
                return Err(format!("unknown option {other}; use --corpus FILE, --steps N, --out DIR").into())
            }
        }
    }
    let corpus = match &corpus_path {
        Some(p) => Corpus::from_file(p, 0.1)?,
        None => Corpus::from_text(&DOCS.join("\n"), 0.1)?,
    };
    let config = ModelConfig::new(corpus.vocab().len()).with_hidden(128).with_layers(2);
    let cfg = TrainConfig {
        seq_len: 64,
        batch: 32,
        batching: Batching::Streams,
        optimizer: OptimKind::Adam,
        lr: 2e-3,
        clip_norm: Some(5.0),
        stop: Stop::Steps(steps),
        val_every: 200,
        out: out.clone(),
        seed: 0,
        ..TrainConfig::default()
    };
    println!(
        "corpus {}: {} characters ({} for training), {} distinct; model 2x128 LSTM, {} parameters; {steps} steps",
        corpus.origin(),
        corpus.len(),
        corpus.train().len(),
        corpus.vocab().len(),
        config.num_params()
    );
    let mut model = CharRnn::<f32, Lstm<f32>>::build(&config, &mut Rng::seed_from(0))?;
    let report = train(&mut model, &corpus, &cfg, None, &mut |s| println!("{s}"))?;
    println!(
        "{} steps in {:.1} s ({:.1} steps/s); validation loss {} nats per character",
        report.steps,
        report.seconds,
        report.steps_run as f64 / report.step_seconds,
        report.last_val_loss.map_or("n/a".into(), |v| format!("{v:.3}"))
    );
    let prime_text = if corpus.vocab().unknown_chars("The ").is_empty() { "The " } else { "" };
    let prime = encode_prime(corpus.vocab(), prime_text)?;
    for temperature in [0.5, 0.8, 1.0] {
        let cfg = SamplingConfig::new().with_temperature(temperature);
        let text = generate(&model, corpus.vocab(), &prime, 300, &cfg, &mut Rng::seed_from(1))?;
        println!("\n--- temperature {temperature} ---\n{prime_text}{text}");
    }
    println!(
        "\ncheckpoint {}, loss curve {}",
        out.join("model.safetensors").display(),
        out.join("loss.png").display()
    );
    Ok(())
}
