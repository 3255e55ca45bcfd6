//! The training loop: batches, truncated BPTT, clipping, the optimizer step, validation,
//! samples, checkpoints, the loss plot, and exact resume.
//!
//! One optimizer step per batch. With the streams batcher the recurrent state of batch `j` is
//! the final state of batch `j - 1` (no gradient flows back across the boundary) and zero at
//! the start of an epoch. The learning rate of a step in epoch `e` (from 0) is
//! `lr · lr_decay^max(0, e + 1 − lr_decay_after)` ([`rnn_optim::DecayAfterLr`]; with the default
//! `lr_decay_after = 1`, `lr · lr_decay^e`), after `warmup_steps` steps of linear warmup from
//! `lr / warmup_steps` ([`rnn_optim::LinearLr`], torch's `LinearLR`). With the cosine schedule
//! it is instead torch's `SequentialLR(LinearLR, CosineAnnealingLR)`: the warmup, then a cosine
//! from `lr` down to `lr_min` at the run's last step ([`rnn_optim::SequentialLr`],
//! [`rnn_optim::CosineAnnealingLr`]; the step counts from 0 for the first optimizer step). Gradients are clipped first by value
//! (`g ← clamp(g, -c, c)`, [`rnn_optim::clip_grad_value`]) and then by global norm
//! (`g ← g · min(1, c / (‖g‖₂ + 1e-6))`, the norm over every tensor together, as PyTorch's
//! `clip_grad_norm_`, [`rnn_optim::clip_grad_norm`]).
//!
//! Every `val_every` steps and at the end, the validation loss is computed (the held-out text
//! read as up to [`VAL_STREAMS`] streams of at least [`VAL_MIN_STREAM`] characters, whatever the
//! training batch, forward only, each stream first reading [`VAL_WARMUP`] characters unscored:
//! [`crate::model::evaluate_warm`]) and a checkpoint is written
//! ([`crate::resume::save_checkpoint`]) with the loss plot. When the validation loss is below
//! every earlier one (strictly), the same model is first written to `best.safetensors`; both
//! files carry `step` and `val_loss` in their metadata, and the best so far is in the training
//! state, so a resumed run keeps replacing it only on a real improvement.
//!
//! Two limits end a run before `--steps`/`--epochs`: `patience` (after that many validations in
//! a row without improvement) and `time_limit` (once this process has trained that long, wall
//! time since its first step, validations and checkpoints included; checked after every step).
//! Either way the run ends on a validation and a checkpoint, so both model files are written and
//! the run resumes bit-identically. A time-limit stop validates at the step where it stops (like
//! the last step of a run), which adds one entry to the validation history. Neither limit is
//! part of the options a resume must repeat: a resumed run may change or drop them. Randomness comes from four
//! generators derived from the seed: initial weights (`seed`), window starts (`seed + 1`),
//! dropout (`seed + 2`), and each printed sample (`seed + 3 + step`, so printing samples does not
//! change training). The batcher, dropout and optimizer states and the carried recurrent state
//! are all in the training state file, so a resumed run is bit-identical to one that never
//! stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rnn_data::{Batch, Batcher, Corpus, StreamBatcher, WindowBatcher};
use rnn_optim::{
    build_optimizer, clip_grad_norm, clip_grad_value, step_model, CosineAnnealingLr, DecayAfterLr, LinearLr,
    LrCursor, LrSchedule, OptimError, OptimizerKind, SequentialLr,
};
use rnn_tensor::{Parameters, Precision, Rng, Scalar};

use crate::checkpoint::{encode_checkpoint, write_atomic};
use crate::model::{evaluate_warm, generate, LanguageModel};
use crate::resume::{save_checkpoint, TrainState, BEST_FILE, MODEL_FILE};
use crate::sample::SamplingConfig;
use crate::{CharLmError, DType};

/// How training batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batching {
    /// char-rnn's contiguous streams, state carried between batches (the default).
    Streams,
    /// Random windows, state reset every batch.
    Windows,
}

impl Batching {
    /// `"streams"` or `"windows"`.
    pub fn name(self) -> &'static str {
        match self {
            Batching::Streams => "streams",
            Batching::Windows => "windows",
        }
    }
}

/// The optimizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimKind {
    /// Adam (the default).
    Adam,
    /// Plain SGD.
    Sgd,
    /// RMSprop.
    Rmsprop,
    /// Adagrad.
    Adagrad,
    /// Rprop.
    Rprop,
}

impl OptimKind {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OptimKind::Adam => "adam",
            OptimKind::Sgd => "sgd",
            OptimKind::Rmsprop => "rmsprop",
            OptimKind::Adagrad => "adagrad",
            OptimKind::Rprop => "rprop",
        }
    }
}

impl OptimKind {
    /// The optimizer of `rnn-optim` this names (`rprop` is PyTorch's Rprop).
    pub fn kind(self) -> OptimizerKind {
        match self {
            OptimKind::Adam => OptimizerKind::Adam,
            OptimKind::Sgd => OptimizerKind::Sgd,
            OptimKind::Rmsprop => OptimizerKind::RmsProp,
            OptimKind::Adagrad => OptimizerKind::Adagrad,
            OptimKind::Rprop => OptimizerKind::Rprop,
        }
    }
}

/// When to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many epochs of the batcher.
    Epochs(u64),
    /// After this many optimizer steps in total (counting those of a resumed run).
    Steps(u64),
}

/// Why a run ended before its `--steps`/`--epochs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyStop {
    /// `patience` validations in a row without improvement.
    Patience,
    /// The time limit was reached.
    TimeLimit,
}

/// The learning-rate schedule over the optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrScheduleKind {
    /// `lr` (after the warmup), decayed per epoch by `lr_decay` (the default).
    Constant,
    /// After the warmup, a cosine from `lr` to `lr_min` over the rest of the run.
    Cosine,
}

impl LrScheduleKind {
    /// `"constant"` or `"cosine"`.
    pub fn name(self) -> &'static str {
        match self {
            LrScheduleKind::Constant => "constant",
            LrScheduleKind::Cosine => "cosine",
        }
    }
}

/// Upper bound on `--seq-len` and `--batch`.
pub const MAX_SEQ_OR_BATCH: usize = 1 << 20;

/// The training options (the model's own are in [`crate::ModelConfig`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// `T`, steps per batch. Default 50.
    pub seq_len: usize,
    /// `B`, sequences per batch. Default 50.
    pub batch: usize,
    /// Default streams.
    pub batching: Batching,
    /// Default Adam.
    pub optimizer: OptimKind,
    /// Learning rate. Default 2e-3.
    pub lr: f64,
    /// Learning-rate factor per epoch, in `(0, 1]`. Default 1 (none).
    pub lr_decay: f64,
    /// Epochs at the full rate before `lr_decay` applies (char-rnn's), at least 1. Default 1.
    pub lr_decay_after: u64,
    /// Steps of linear warmup. Default 0.
    pub warmup_steps: u64,
    /// Default constant.
    pub lr_schedule: LrScheduleKind,
    /// The floor of the cosine schedule, in `[0, lr]`. Default 0.
    pub lr_min: f64,
    /// Clip the global gradient norm to this. Default 5.
    pub clip_norm: Option<f64>,
    /// Clip every gradient value to `[-c, c]`. Default none.
    pub clip_value: Option<f64>,
    /// Default 1 epoch.
    pub stop: Stop,
    /// Validate and checkpoint every this many steps. Default 500.
    pub val_every: u64,
    /// Print a sample every this many steps (0: never). Default 0.
    pub sample_every: u64,
    /// Characters per printed sample. Default 200.
    pub sample_length: usize,
    /// The seed of every generator. Default 0.
    pub seed: u64,
    /// The run directory. Default `charlm-out`.
    pub out: PathBuf,
    /// Show a progress bar. Default true.
    pub progress: bool,
    /// Stop after this many validations in a row without improvement. Default none.
    pub patience: Option<u64>,
    /// Stop after this many minutes of training (this process's). Default none.
    pub time_limit: Option<f64>,
    /// The precision of the recurrent products, in training, validation and the printed
    /// samples ([`Precision::Bf16`]: mixed precision, the weights and the optimizer in `f32`).
    /// Default full.
    pub precision: Precision,
    /// The precision of validation and of the printed samples (bf16 in an f32 run: validation
    /// with the recurrent products in bf16; full in a bf16 run: the f32 weights exactly).
    /// Default `None`: chosen by [`TrainConfig::validation_precision`].
    pub val_precision: Option<Precision>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seq_len: 50,
            batch: 50,
            batching: Batching::Streams,
            optimizer: OptimKind::Adam,
            lr: 2e-3,
            lr_decay: 1.0,
            lr_decay_after: 1,
            warmup_steps: 0,
            lr_schedule: LrScheduleKind::Constant,
            lr_min: 0.0,
            clip_norm: Some(5.0),
            clip_value: None,
            stop: Stop::Epochs(1),
            val_every: 500,
            sample_every: 0,
            sample_length: 200,
            seed: 0,
            out: PathBuf::from("charlm-out"),
            progress: true,
            patience: None,
            time_limit: None,
            precision: Precision::Full,
            val_precision: None,
        }
    }
}

fn positive_finite(name: &str, v: f64) -> Result<(), CharLmError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(CharLmError::arg(name, format!("must be a positive finite number, got {v}")))
    }
}

impl TrainConfig {
    /// The precision of validation and of the printed samples for weights of `dtype`:
    /// `val_precision` if set, else bf16 for an f32 run whose products are full precision on a
    /// CPU where bf16 products are much faster than f32 ones
    /// (`rnn_tensor::packed::bf16::products_pay`: AMX tiles, or AMD's AVX512_BF16) and no SIMD
    /// cap forbids them, else `precision`. There the validation of the default 2×256 LSTM takes
    /// less than half the f32 time on AMX and two thirds of it on a Zen 4, and its losses stay
    /// within 1e-4 of f32's (docs/04); the training itself is unchanged, bit for bit.
    pub fn validation_precision(&self, dtype: DType) -> Precision {
        match self.val_precision {
            Some(p) => p,
            None if dtype == DType::F32
                && self.precision == Precision::Full
                && rnn_tensor::packed::bf16::products_pay()
                && Precision::Bf16.check("f32").is_ok() =>
            {
                Precision::Bf16
            }
            None => self.precision,
        }
    }

    /// Checks every option.
    pub fn check(&self) -> Result<(), CharLmError> {
        for (name, v) in [("--seq-len", self.seq_len), ("--batch", self.batch)] {
            if !(1..=MAX_SEQ_OR_BATCH).contains(&v) {
                return Err(CharLmError::arg(name, format!("must be in 1..={MAX_SEQ_OR_BATCH}, got {v}")));
            }
        }
        positive_finite("--lr", self.lr)?;
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0 && self.lr_decay <= 1.0) {
            return Err(CharLmError::arg("--lr-decay", format!("must be in (0, 1], got {}", self.lr_decay)));
        }
        if self.lr_decay_after == 0 {
            return Err(CharLmError::arg("--lr-decay-after", "must be at least 1 epoch"));
        }
        if !(self.lr_min.is_finite() && self.lr_min >= 0.0 && self.lr_min <= self.lr) {
            return Err(CharLmError::arg(
                "--lr-min",
                format!("must be in [0, --lr = {}], got {}", self.lr, self.lr_min),
            ));
        }
        if self.lr_schedule == LrScheduleKind::Cosine && self.lr_decay != 1.0 {
            return Err(CharLmError::arg(
                "--lr-decay",
                "decays the constant schedule per epoch; with --lr-schedule cosine leave it out",
            ));
        }
        if self.lr_schedule == LrScheduleKind::Constant && self.lr_min != 0.0 {
            return Err(CharLmError::arg("--lr-min", "is the floor of --lr-schedule cosine; pass that too"));
        }
        if let Some(c) = self.clip_norm {
            positive_finite("--clip-norm", c)?;
        }
        if let Some(c) = self.clip_value {
            positive_finite("--clip-value", c)?;
        }
        match self.stop {
            Stop::Epochs(0) => return Err(CharLmError::arg("--epochs", "must be at least 1")),
            Stop::Steps(0) => return Err(CharLmError::arg("--steps", "must be at least 1")),
            _ => {}
        }
        if self.val_every == 0 {
            return Err(CharLmError::arg("--val-every", "must be at least 1"));
        }
        if self.patience == Some(0) {
            return Err(CharLmError::arg("--patience", "must be at least 1 validation"));
        }
        if let Some(t) = self.time_limit {
            if !(t.is_finite() && t > 0.0) {
                return Err(CharLmError::arg(
                    "--time-limit",
                    format!("must be a positive finite number of minutes, got {t}"),
                ));
            }
        }
        if self.sample_length == 0 {
            return Err(CharLmError::arg("--sample-length", "must be at least 1"));
        }
        if self.precision == Precision::Bf16 {
            Precision::Bf16.check("f32").map_err(|e| CharLmError::arg("--dtype", e))?;
        }
        if self.val_precision == Some(Precision::Bf16) {
            Precision::Bf16.check("f32").map_err(|e| CharLmError::arg("--val-dtype", e))?;
        }
        Ok(())
    }

    /// Checks that the training text of `corpus` holds at least one batch (the batchers'
    /// own checks, run before anything is built or printed), and that `patience` has
    /// validation text to count.
    pub fn check_corpus(&self, corpus: &Corpus) -> Result<(), CharLmError> {
        if self.patience.is_some() && corpus.val().len() < 2 {
            return Err(CharLmError::arg(
                "--patience",
                "counts validations, but the corpus has no validation text; raise --val-frac or leave --patience out",
            ));
        }
        match self.batching {
            Batching::Streams => drop(StreamBatcher::new(corpus.train(), self.batch, self.seq_len)?),
            Batching::Windows => {
                drop(WindowBatcher::new(corpus.train(), self.batch, self.seq_len, Rng::seed_from(0))?)
            }
        }
        Ok(())
    }

    /// The options a resumed run must share with the run it continues.
    pub fn settings(&self, dtype: DType, corpus: &Corpus) -> BTreeMap<String, String> {
        let opt = |v: Option<f64>| v.map_or("none".to_string(), |c| c.to_string());
        let name = |p: Precision| match p {
            Precision::Bf16 => "bf16".to_string(),
            Precision::Full => dtype.name().to_string(),
        };
        let text_crc = {
            let mut h = crc32fast::Hasher::new();
            for &i in corpus.train().iter().chain(corpus.val()) {
                h.update(&(i as u32).to_le_bytes());
            }
            format!("{:08x}", h.finalize())
        };
        [
            ("corpus_chars", corpus.len().to_string()),
            ("corpus_train_chars", corpus.train().len().to_string()),
            ("corpus_crc32", text_crc),
            ("seq_len", self.seq_len.to_string()),
            ("batch", self.batch.to_string()),
            ("batching", self.batching.name().to_string()),
            ("optimizer", self.optimizer.name().to_string()),
            ("lr", self.lr.to_string()),
            ("lr_decay", self.lr_decay.to_string()),
            ("clip_norm", opt(self.clip_norm)),
            ("clip_value", opt(self.clip_value)),
            ("val_every", self.val_every.to_string()),
            ("seed", self.seed.to_string()),
            ("dtype", name(self.precision)),
        ]
        .into_iter()
        .chain(self.schedule_settings())
        // Written only when asked for and not the training's, so that runs saved before it
        // existed still resume (and a run validated in the precision its machine chose resumes
        // on another machine).
        .chain(self.val_precision.filter(|&v| v != self.precision).map(|v| ("val_dtype", name(v))))
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The schedule's settings that differ from the defaults (so that runs saved before they
    /// existed still resume): the cosine schedule's length is the run's, so a resume must ask
    /// for the same `--steps`/`--epochs`.
    fn schedule_settings(&self) -> impl Iterator<Item = (&'static str, String)> {
        let mut v = Vec::new();
        if self.lr_decay_after != 1 {
            v.push(("lr_decay_after", self.lr_decay_after.to_string()));
        }
        if self.warmup_steps != 0 {
            v.push(("warmup_steps", self.warmup_steps.to_string()));
        }
        if self.lr_schedule == LrScheduleKind::Cosine {
            v.push(("lr_schedule", "cosine".to_string()));
            v.push(("lr_min", self.lr_min.to_string()));
            let total = match self.stop {
                Stop::Steps(s) => format!("{s} steps"),
                Stop::Epochs(e) => format!("{e} epochs"),
            };
            v.push(("lr_schedule_length", total));
        }
        v.into_iter()
    }
}

/// Creates the run directory if needed and checks that files can be written in it.
pub fn prepare_out(dir: &std::path::Path) -> Result<(), CharLmError> {
    std::fs::create_dir_all(dir).map_err(|e| CharLmError::write(dir, e))?;
    let probe = dir.join(format!(".charlm-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| CharLmError::write(dir, e))?;
    std::fs::remove_file(&probe).map_err(|e| CharLmError::write(dir, e))
}

/// What a training run did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    /// Optimizer steps taken in total.
    pub steps: u64,
    /// Batches per epoch.
    pub batches_per_epoch: usize,
    /// The last training loss.
    pub last_train_loss: f64,
    /// The last validation loss, if there is validation text.
    pub last_val_loss: Option<f64>,
    /// `(step, validation loss)` of the best model, in `best.safetensors`.
    pub best: Option<(u64, f64)>,
    /// Wall time of this process's part of the run.
    pub seconds: f64,
    /// The part of it spent on training steps (batch, forward, backward, clipping, update):
    /// without validation, samples and checkpoints.
    pub step_seconds: f64,
    /// The part of it spent computing validation losses.
    pub val_seconds: f64,
    /// Steps this process took.
    pub steps_run: u64,
    /// Why the run ended early, if it did.
    pub early_stop: Option<EarlyStop>,
}

/// The learning rate of every step (see the module docs).
enum StepSchedule {
    Constant { warmup: Option<LrCursor<LinearLr>>, steps: u64, epochs: DecayAfterLr },
    Cosine(LrCursor<SequentialLr<LinearLr, CosineAnnealingLr>>),
    CosineOnly(LrCursor<CosineAnnealingLr>),
}

impl StepSchedule {
    fn new(cfg: &TrainConfig, total: u64) -> Result<Self, CharLmError> {
        let w = cfg.warmup_steps;
        let warmup = if w > 0 { Some(LinearLr::new(cfg.lr, 1.0 / w as f64, 1.0, w)?) } else { None };
        Ok(match cfg.lr_schedule {
            LrScheduleKind::Constant => StepSchedule::Constant {
                warmup: warmup.map(LrCursor::new),
                steps: w,
                epochs: DecayAfterLr::new(cfg.lr, cfg.lr_decay, cfg.lr_decay_after)?,
            },
            LrScheduleKind::Cosine => {
                if w >= total {
                    return Err(CharLmError::arg(
                        "--warmup-steps",
                        format!(
                            "with --lr-schedule cosine it must be below the run's {total} steps, got {w}"
                        ),
                    ));
                }
                let cosine = CosineAnnealingLr::new(cfg.lr, total - w, cfg.lr_min)?;
                match warmup {
                    Some(l) => StepSchedule::Cosine(LrCursor::new(SequentialLr::new(l, cosine, w)?)),
                    None => StepSchedule::CosineOnly(LrCursor::new(cosine)),
                }
            }
        })
    }

    /// The learning rate of optimizer step `step` (0 for the first), in epoch `epoch`.
    fn lr(&mut self, step: u64, epoch: u64) -> f64 {
        match self {
            StepSchedule::Constant { warmup: Some(c), steps, .. } if step < *steps => c.lr_at(step),
            StepSchedule::Constant { epochs, .. } => epochs.lr_at(epoch),
            StepSchedule::Cosine(c) => c.lr_at(step),
            StepSchedule::CosineOnly(c) => c.lr_at(step),
        }
    }
}

/// The most streams the held-out text is read as: one wide batch per step, so that the
/// step products of validation have many columns (and each thread a whole block of them).
pub const VAL_STREAMS: usize = 256;
/// The fewest characters in each validation stream (1024: 108 streams for tinyshakespeare's
/// held-out tenth).
pub const VAL_MIN_STREAM: usize = 1024;
/// The characters each validation stream reads, unscored, before its first scored prediction
/// ([`evaluate_warm`]): a stream started from a zero state predicts its first characters
/// badly, which read as 217 streams of 512 raised the validation loss of a trained 2×512 LSTM
/// by 0.016 nats/char over reading the text as one stream. With 64 characters of warm-up (and
/// 108 streams) it is 0.0005 above (as 217 streams: 32 characters leave it 0.0017 above, 64
/// 0.0008, 128 and 256 0.0006), at 6 % more steps.
pub const VAL_WARMUP: usize = 64;
/// The steps of each forward call of validation (`VAL_CHUNK · B` columns, about a training
/// batch's); the state is carried from chunk to chunk.
pub const VAL_CHUNK: usize = 10;

/// The number of streams validation reads `len` held-out characters as:
/// `clamp(⌊(len - 1) / VAL_MIN_STREAM⌋, 1, VAL_STREAMS)`, a function of the text alone (not of
/// the batch or the thread count).
pub fn val_streams(len: usize) -> usize {
    (len.saturating_sub(1) / VAL_MIN_STREAM).clamp(1, VAL_STREAMS)
}

/// The validation loss of `model` on `data`: [`evaluate_warm`] over [`val_streams`] streams in
/// chunks of [`VAL_CHUNK`] steps, each warmed up over [`VAL_WARMUP`] characters, forward only.
fn validate<T: Scalar, M: LanguageModel<T>>(model: &mut M, data: &[usize]) -> Result<f64, CharLmError> {
    evaluate_warm(model, data, val_streams(data.len()), VAL_CHUNK, VAL_WARMUP)
}

fn check_finite_params<T: Scalar, P: Parameters<T>>(
    params: &P,
    step: u64,
    checkpoint: Option<u64>,
) -> Result<(), CharLmError> {
    for (name, m) in params.named_params() {
        if let Some(v) = m.iter().find(|v| !v.to_f64().is_finite()) {
            return Err(CharLmError::Diverged {
                step,
                what: format!("weight {name}"),
                value: v.to_f64(),
                checkpoint,
            });
        }
    }
    Ok(())
}

/// Trains `model` on `corpus`, writing checkpoints and the plot into `cfg.out`. With `resume`
/// (the state loaded beside the model, whose weights the caller has restored) it continues that
/// run. `log` receives the lines to print (validation, samples).
pub fn train<T: Scalar, M: LanguageModel<T>>(
    model: &mut M,
    corpus: &Corpus,
    cfg: &TrainConfig,
    resume: Option<TrainState>,
    log: &mut dyn FnMut(&str),
) -> Result<TrainReport, CharLmError> {
    cfg.check()?;
    cfg.check_corpus(corpus)?;
    let dtype = DType::of::<T>();
    model.set_training_precision(cfg.precision)?;
    model.set_inference_precision(cfg.validation_precision(dtype))?;
    let settings = cfg.settings(dtype, corpus);
    prepare_out(&cfg.out)?;
    let (bs, sl) = (cfg.batch, cfg.seq_len);
    let mut batcher: Box<dyn Batcher> = match cfg.batching {
        Batching::Streams => Box::new(StreamBatcher::new(corpus.train(), bs, sl)?),
        Batching::Windows => {
            Box::new(WindowBatcher::new(corpus.train(), bs, sl, Rng::seed_from(cfg.seed.wrapping_add(1)))?)
        }
    };
    let per_epoch = batcher.batches_per_epoch();
    let total = match cfg.stop {
        Stop::Steps(s) => s,
        Stop::Epochs(e) => e.saturating_mul(per_epoch as u64),
    };
    let mut opt = build_optimizer::<T>(cfg.optimizer.kind(), cfg.lr)?;
    let mut schedule = StepSchedule::new(cfg, total)?;
    let mut rng = Rng::seed_from(cfg.seed.wrapping_add(2));
    let mut state = model.zero_state(bs);
    let (mut step, mut train_loss, mut val_loss) = (0u64, Vec::new(), Vec::new());
    let (mut best, mut since_best) = (None::<(u64, f64)>, 0u64);
    if let Some(saved) = resume {
        // Both ways: a setting written only when it is not the default (the schedule's,
        // `val_dtype`) may be in the saved run and not here.
        let keys: BTreeSet<&String> = settings.keys().chain(saved.settings.keys()).collect();
        let differ: Vec<String> = keys
            .into_iter()
            .filter(|k| saved.settings.get(*k) != settings.get(*k))
            .map(|k| {
                format!(
                    "{k} is {} here but {} in the saved run",
                    settings.get(k).map_or("unset", |s| s),
                    saved.settings.get(k).map_or("unset", |s| s)
                )
            })
            .collect();
        if !differ.is_empty() {
            return Err(CharLmError::arg(
                "--resume",
                format!("{}; resume with the options and corpus of the original run", differ.join(", ")),
            ));
        }
        opt.load_state(&saved.optimizer)?;
        batcher.restore(&saved.batcher)?;
        rng = Rng::from_state(saved.rng);
        if !saved.carry.is_empty() {
            state = model.state_from_mats(&saved.carry, bs).map_err(|e| CharLmError::arg("--resume", e))?;
        }
        (step, train_loss, val_loss) = (saved.step, saved.train_loss, saved.val_loss);
        (best, since_best) = (saved.best, saved.since_best);
        if let Some(p) = cfg.patience.filter(|&p| since_best >= p) {
            return Err(CharLmError::arg(
                "--patience",
                format!(
                    "the saved run has had {since_best} validations without improvement, the patience is {p}; \
                     raise --patience or leave it out to continue"
                ),
            ));
        }
        if step >= total {
            return Err(CharLmError::arg(
                "--steps/--epochs",
                format!(
                    "the saved run has already taken {step} steps of the {total} asked; ask for more steps"
                ),
            ));
        }
    }

    let bar = if cfg.progress { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} loss {msg} {per_sec} ETA {eta}")
            .expect("the progress template is valid"),
    );
    bar.set_position(step);
    let mut say = |s: &str| {
        if bar.is_hidden() {
            log(s)
        } else {
            bar.suspend(|| log(s))
        }
    };
    let started = Instant::now();
    let first = step;
    let mut grads = model.zero_grads();
    let mut batch = Batch::default();
    let mut last_loss = f64::NAN;
    let mut last_val = val_loss.last().map(|&(_, l)| l);
    // The step of the last checkpoint in `cfg.out` (written by this run, or the one it resumed
    // from), named if training diverges.
    let mut last_checkpoint = (step > 0).then_some(step);
    let (mut step_seconds, mut val_seconds) = (0.0, 0.0);
    let mut plot_warned = false;
    let mut early_stop = None;
    while step < total {
        let t0 = Instant::now();
        batcher.next_batch(&mut batch);
        if batch.reset_state {
            state = model.zero_state(bs);
        }
        opt.set_lr(schedule.lr(step, batch.epoch));
        // (`train_batch` writes every gradient: no zeroing first.)
        let loss = model.train_batch(&batch.inputs, &batch.targets, bs, &mut state, &mut grads, &mut rng)?;
        step += 1;
        if !loss.is_finite() {
            bar.abandon();
            return Err(CharLmError::Diverged {
                step,
                what: "training loss".into(),
                value: loss,
                checkpoint: last_checkpoint,
            });
        }
        let clipped = (|| {
            if let Some(c) = cfg.clip_value {
                clip_grad_value(&mut grads, c)?;
            }
            if let Some(c) = cfg.clip_norm {
                clip_grad_norm(&mut grads, c)?;
            }
            Ok::<(), OptimError>(())
        })();
        if let Err(OptimError::NonFiniteNorm(norm)) = clipped {
            bar.abandon();
            return Err(CharLmError::Diverged {
                step,
                what: "gradient norm".into(),
                value: norm,
                checkpoint: last_checkpoint,
            });
        }
        clipped?;
        step_model(opt.as_mut(), model.params_mut(), &grads)?;
        step_seconds += t0.elapsed().as_secs_f64();
        last_loss = loss;
        train_loss.push((step, loss));
        bar.set_message(format!("{loss:.4}"));
        bar.set_position(step);

        if cfg.sample_every > 0 && step % cfg.sample_every == 0 {
            let mut srng = Rng::seed_from(cfg.seed.wrapping_add(3).wrapping_add(step));
            let text =
                generate(model, corpus.vocab(), &[], cfg.sample_length, &SamplingConfig::new(), &mut srng)?;
            say(&format!("--- sample at step {step} ---\n{text}\n---"));
        }
        let timed_out = cfg.time_limit.is_some_and(|m| started.elapsed().as_secs_f64() >= m * 60.0);
        if step % cfg.val_every == 0 || step == total || timed_out {
            check_finite_params(model.params(), step, last_checkpoint)?;
            let mut checked = None;
            if corpus.val().len() >= 2 {
                let t0 = Instant::now();
                let v = validate(model, corpus.val())?;
                val_seconds += t0.elapsed().as_secs_f64();
                if !v.is_finite() {
                    // Weights that give a non-finite validation loss are not a good checkpoint:
                    // stop before writing them, keeping the previous one.
                    bar.abandon();
                    return Err(CharLmError::Diverged {
                        step,
                        what: "validation loss".into(),
                        value: v,
                        checkpoint: last_checkpoint,
                    });
                }
                val_loss.push((step, v));
                last_val = Some(v);
                checked = Some(v);
                say(&format!(
                    "step {step}/{total} epoch {:.2}, {:.1} min: train loss {loss:.4}, validation loss {v:.4}",
                    step as f64 / per_epoch as f64,
                    started.elapsed().as_secs_f64() / 60.0
                ));
            }
            let bytes = encode_checkpoint(
                model.config(),
                corpus.vocab(),
                &model.params().named_params(),
                step,
                checked,
            )?;
            if let Some(v) = checked {
                if best.is_none_or(|(_, b)| v < b) {
                    // Before the commit that records it (see crate::resume).
                    write_atomic(&cfg.out.join(BEST_FILE), &bytes)?;
                    (best, since_best) = (Some((step, v)), 0);
                } else {
                    since_best += 1;
                }
            }
            let mut ts = TrainState {
                model_crc32: 0,
                step,
                batcher_kind: batcher.kind().to_string(),
                batcher: batcher.position(),
                rng: rng.state(),
                optimizer: opt.state(),
                carry: M::state_to_mats(&state),
                settings: settings.clone(),
                train_loss: train_loss.clone(),
                val_loss: val_loss.clone(),
                best,
                since_best,
            };
            save_checkpoint(&cfg.out, &bytes, &mut ts)?;
            last_checkpoint = Some(step);
            // The plot is a convenience: failing to draw it does not end training.
            let plot = cfg.out.join(crate::rundir::PLOT_FILE);
            match crate::plot::plot_losses(&plot, &train_loss, &val_loss) {
                Err(e) if !plot_warned => {
                    say(&format!("warning: the loss plot is not drawn (training goes on): {e}"));
                    plot_warned = true;
                }
                _ => {}
            }
            if timed_out && step < total {
                early_stop = Some(EarlyStop::TimeLimit);
                say(&format!(
                    "stopped at step {step}: the time limit of {} min is reached",
                    cfg.time_limit.unwrap_or(0.0)
                ));
                break;
            }
            if let Some(p) = cfg.patience.filter(|&p| checked.is_some() && since_best >= p && step < total) {
                early_stop = Some(EarlyStop::Patience);
                say(&format!("stopped at step {step}: {p} validations without improvement (--patience {p})"));
                break;
            }
        }
    }
    bar.finish();
    say(&format!("checkpoint: {}", cfg.out.join(MODEL_FILE).display()));
    if let Some((s, v)) = best {
        say(&format!("best: {} (step {s}, validation loss {v:.4})", cfg.out.join(BEST_FILE).display()));
    }
    Ok(TrainReport {
        steps: step,
        batches_per_epoch: per_epoch,
        last_train_loss: last_loss,
        last_val_loss: last_val,
        best,
        seconds: started.elapsed().as_secs_f64(),
        step_seconds,
        val_seconds,
        steps_run: step - first,
        early_stop,
    })
}
