//! Train a character-level LSTM language model for about two minutes, then sample from the best
//! checkpoint.
//!
//! ```text
//! cargo run --release --example char_lm                      # the project's own docs and sources
//! cargo run --release --example char_lm -- --corpus FILE     # any UTF-8 text
//! cargo run --release --example char_lm -- --steps 100       # a shorter run
//! ```
//!
//! The default corpus is this project's own text, gathered by `build.rs` at compile time and
//! embedded: the README, the chapters and the crates' READMEs, then the Rust sources of the
//! crates (about 850 KB; no test fixtures, nothing written elsewhere). The last tenth, the end
//! of the sources, is held out. The model is a 2×128 LSTM trained with Adam at 3e-3 (100 steps
//! of warmup, then a cosine to 1e-4), clip-norm 5, char-rnn's streams of 32 × 64, for 6,000
//! steps, 16 epochs of a text large enough not to be learnt by heart in that time, validating
//! every 600; a time limit of 2.5 minutes ends a run on a slow or busy machine early (on a
//! validation and a checkpoint). A 2×256 LSTM gets fewer steps in the same time and ends
//! higher. The run directory (`target/char_lm` by default) receives `model.safetensors` (the
//! last model), `best.safetensors` (the lowest validation loss; PyTorch loads both with
//! `tools/load_checkpoint.py`), `train_state.json` (with `train_state.safetensors`) and
//! `loss.png`. The samples come from the best model, and the last line names it and the loss
//! curve.

use std::path::PathBuf;

use charlm::charrnn::CharRnn;
use charlm::checkpoint::load_model;
use charlm::cli::model_from_file;
use charlm::model::{generate, LanguageModel};
use charlm::resume::BEST_FILE;
use charlm::sample::{encode_prime, SamplingConfig};
use charlm::train::{train, Batching, LrScheduleKind, OptimKind, Stop, TrainConfig};
use charlm::ModelConfig;
use rnn_cells::Lstm;
use rnn_data::Corpus;
use rnn_tensor::Rng;

/// 64-byte aligned matrices, as PyTorch's: the kernels' loads and stores stay within a cache line.
#[global_allocator]
static ALLOC: rnn::tensor::alloc::LineAligned = rnn::tensor::alloc::LineAligned;

/// The project's README, chapters, crate READMEs and crate sources (see `build.rs`).
const PROJECT_TEXT: &str = include_str!(concat!(env!("OUT_DIR"), "/char_lm_corpus.txt"));

type Model = CharRnn<f32, Lstm<f32>>;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // One line that names the problem (a bad option, an unreadable corpus, a full disk).
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut corpus_path = None;
    let mut steps = 6000u64;
    let mut hidden = 128usize;
    let mut dropout = 0.0f64;
    let mut out = PathBuf::from("target/char_lm");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--corpus" => corpus_path = Some(PathBuf::from(value()?)),
            "--steps" => steps = value()?.parse().map_err(|_| "--steps needs a positive integer")?,
            "--hidden" => hidden = value()?.parse().map_err(|_| "--hidden needs a positive integer")?,
            "--dropout" => dropout = value()?.parse().map_err(|_| "--dropout needs a number in [0, 1)")?,
            "--out" => out = PathBuf::from(value()?),
            other => {
                return Err(format!(
                    "unknown option {other}; use --corpus FILE, --steps N, --hidden H, --dropout P, --out DIR"
                )
                .into())
            }
        }
    }
    let corpus = match &corpus_path {
        Some(p) => Corpus::from_file(p, 0.1)?,
        None => Corpus::from_text(PROJECT_TEXT, 0.1)?,
    };
    let config =
        ModelConfig::new(corpus.vocab().len()).with_hidden(hidden).with_layers(2).with_dropout(dropout);
    let cfg = TrainConfig {
        seq_len: 64,
        batch: 32,
        batching: Batching::Streams,
        optimizer: OptimKind::Adam,
        lr: 3e-3,
        warmup_steps: 100.min(steps.saturating_sub(1)),
        lr_schedule: LrScheduleKind::Cosine,
        lr_min: 1e-4,
        clip_norm: Some(5.0),
        stop: Stop::Steps(steps),
        val_every: (steps / 10).max(1),
        time_limit: Some(2.5),
        out: out.clone(),
        seed: 0,
        ..TrainConfig::default()
    };
    let origin =
        if corpus_path.is_some() { corpus.origin().to_string() } else { "the project's own text".into() };
    println!(
        "corpus {origin}: {} characters ({} for training), {} distinct; model 2x{hidden} LSTM, dropout {dropout}, \
         {} parameters; {steps} steps (at most {} min)",
        corpus.len(),
        corpus.train().len(),
        corpus.vocab().len(),
        config.num_params(),
        cfg.time_limit.unwrap_or(0.0)
    );
    let mut model = Model::build(&config, &mut Rng::seed_from(0))?;
    let report = train(&mut model, &corpus, &cfg, None, &mut |s| println!("{s}"))?;
    println!(
        "{} steps in {:.1} s ({:.1} steps/s, validation {:.1} s); last validation loss {} nats per character",
        report.steps,
        report.seconds,
        report.steps_run as f64 / report.step_seconds,
        report.val_seconds,
        report.last_val_loss.map_or("n/a".into(), |v| format!("{v:.3}"))
    );
    // Sample from the best model (the last one when there is no validation text).
    let best = out.join(BEST_FILE);
    let mut model = match report.best {
        Some(_) => model_from_file::<f32, Model>(&best, &load_model(&best)?)?,
        None => model,
    };
    let prime_text = if corpus.vocab().unknown_chars("The ").is_empty() { "The " } else { "" };
    let prime = encode_prime(corpus.vocab(), prime_text)?;
    for temperature in [0.5, 0.8, 1.0] {
        let cfg = SamplingConfig::new().with_temperature(temperature);
        let text = generate(&mut model, corpus.vocab(), &prime, 300, &cfg, &mut Rng::seed_from(1))?;
        println!("\n--- temperature {temperature} ---\n{prime_text}{text}");
    }
    let plot = out.join(charlm::rundir::PLOT_FILE);
    match report.best {
        Some((step, loss)) => println!(
            "\nbest checkpoint {} (step {step}, validation loss {loss:.3}), loss curve {}",
            best.display(),
            plot.display()
        ),
        None => println!(
            "\ncheckpoint {} (no validation text), loss curve {}",
            out.join(charlm::resume::MODEL_FILE).display(),
            plot.display()
        ),
    }
    Ok(())
}
