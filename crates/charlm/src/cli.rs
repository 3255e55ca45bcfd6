//! The `charlm` command line: options, their checks, and the three commands, generic over the
//! model type (the binary picks the cell and precision).

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use rnn_cells::{Gru, Lstm, Rnn};
use rnn_data::text::{read_text_limited, DEFAULT_VAL_FRAC};
use rnn_data::{Corpus, Vocab};
use rnn_tensor::{Parameters, Precision, Rng, Scalar};

use crate::charrnn::CharRnn;
use crate::checkpoint::{assign_tensors, check_tensors, decode_model, read_tensors, ModelFile, TensorFile};
use crate::model::{evaluate, generate_with, LanguageModel};
use crate::resume::{load_checkpoint, read_checkpoint, BEST_FILE, MODEL_FILE};
use crate::rundir::{self, RunLock};
use crate::sample::{encode_prime, SamplingConfig};
use crate::train::{train, Batching, EarlyStop, LrScheduleKind, OptimKind, Stop, TrainConfig, TrainReport};
use crate::{CellKind, CharLmError, DType, ModelConfig};

/// The most threads `charlm train --threads` accepts.
pub const MAX_THREADS: usize = rnn_tensor::parallel::MAX_THREADS;

/// Train, sample from and evaluate character-level language models.
#[derive(Debug, Parser)]
#[command(name = "charlm", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
// Parsed once per process: the size of the training options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model on a UTF-8 text file.
    Train(TrainArgs),
    /// Generate text from a checkpoint.
    Sample(SampleArgs),
    /// Print the loss of a checkpoint on a text, in nats per character.
    Eval(EvalArgs),
}

/// The cell type on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CellArg {
    /// LSTM.
    Lstm,
    /// GRU.
    Gru,
    /// Vanilla tanh RNN.
    Rnn,
}

/// The batching on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BatchingArg {
    /// char-rnn's contiguous streams.
    Streams,
    /// Random windows.
    Windows,
}

/// The optimizer on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimArg {
    /// Adam.
    Adam,
    /// SGD.
    Sgd,
    /// RMSprop.
    Rmsprop,
    /// Adagrad.
    Adagrad,
    /// Rprop.
    Rprop,
}

/// The learning-rate schedule on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LrScheduleArg {
    /// The learning rate, decayed per epoch by --lr-decay.
    Constant,
    /// Cosine decay to --lr-min over the run.
    Cosine,
}

/// The precision on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// Single precision.
    F32,
    /// Double precision.
    F64,
    /// Mixed precision on a CPU with AVX512_BF16: the recurrent products in bf16 (weights and
    /// their operands rounded, sums in f32), the weights, gradients, optimizer and checkpoints
    /// in f32.
    Bf16,
}

/// The precision of `sample` and `eval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InferDType {
    /// Single precision (the checkpoint's weights must be f32).
    F32,
    /// Double precision (the checkpoint's weights must be f64).
    F64,
    /// The recurrent products in bf16 (weights and their operands rounded, sums in f32) on a
    /// CPU with AVX512_BF16; the checkpoint's weights must be f32.
    Bf16,
}

impl InferDType {
    /// The flag's value.
    fn name(self) -> &'static str {
        match self {
            InferDType::F32 => "f32",
            InferDType::F64 => "f64",
            InferDType::Bf16 => "bf16",
        }
    }

    /// The precision that evaluates `weights` as asked, or `None` if they cannot be: f32 and f64
    /// weights in their own type, f32 weights in bf16 too (whether this CPU runs bf16 is checked
    /// by the caller).
    fn precision_for(self, weights: DType) -> Option<Precision> {
        match (self, weights) {
            (InferDType::F32, DType::F32) | (InferDType::F64, DType::F64) => Some(Precision::Full),
            (InferDType::Bf16, DType::F32) => Some(Precision::Bf16),
            _ => None,
        }
    }
}

/// The precision `--dtype` asks of a checkpoint whose weights are `file` (default: the
/// checkpoint's own), or a one-line error.
pub fn inference_precision(flag: Option<InferDType>, file: DType) -> Result<Precision, CharLmError> {
    let Some(want) = flag else { return Ok(Precision::Full) };
    match want.precision_for(file) {
        Some(Precision::Bf16) => {
            Precision::Bf16.check("f32").map_err(|e| CharLmError::arg("--dtype", e))?;
            Ok(Precision::Bf16)
        }
        Some(p) => Ok(p),
        None if want == InferDType::Bf16 => Err(CharLmError::arg(
            "--dtype",
            format!(
                "bf16 computes f32 models only, the checkpoint holds {file} weights; pass --dtype {file}"
            ),
        )),
        None => Err(CharLmError::arg(
            "--dtype",
            format!(
                "the checkpoint holds {file} weights, not {}; pass --dtype {file}{}",
                want.name(),
                if file == DType::F32 { " or bf16" } else { "" }
            ),
        )),
    }
}

/// `charlm train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The training text (UTF-8); its last --val-frac is held out for validation.
    #[arg(long)]
    pub corpus: PathBuf,
    /// The recurrent cell.
    #[arg(long, value_enum, default_value = "lstm")]
    pub cell: CellArg,
    /// Hidden units per layer.
    #[arg(long, allow_negative_numbers = true, default_value_t = 256)]
    pub hidden: usize,
    /// Recurrent layers.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2)]
    pub layers: usize,
    /// Dropout between layers, in [0, 1).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub dropout: f64,
    /// Dropout on the last layer's outputs before the head, in [0, 1) (char-rnn drops out
    /// there too; PyTorch's nn.LSTM dropout does not).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub head_dropout: f64,
    /// Steps per batch (truncated BPTT length).
    #[arg(long, allow_negative_numbers = true, default_value_t = 50)]
    pub seq_len: usize,
    /// Sequences per batch.
    #[arg(long, allow_negative_numbers = true, default_value_t = 50)]
    pub batch: usize,
    /// How batches are drawn.
    #[arg(long, value_enum, default_value = "streams")]
    pub batching: BatchingArg,
    /// The optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimArg,
    /// Learning rate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 2e-3)]
    pub lr: f64,
    /// Learning-rate factor applied at each new epoch, in (0, 1] (the constant schedule).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub lr_decay: f64,
    /// Epochs at the full learning rate before --lr-decay applies (char-rnn's
    /// learning_rate_decay_after; 1 decays from the second epoch on).
    #[arg(long, allow_negative_numbers = true, default_value_t = 1)]
    pub lr_decay_after: u64,
    /// Optimizer steps of linear warmup, from lr/N up to lr (PyTorch's LinearLR).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub warmup_steps: u64,
    /// The learning rate after the warmup: constant (decayed per epoch by --lr-decay), or a
    /// cosine from --lr down to --lr-min at the run's last step (PyTorch's CosineAnnealingLR).
    #[arg(long, value_enum, default_value = "constant")]
    pub lr_schedule: LrScheduleArg,
    /// The floor of --lr-schedule cosine, in [0, --lr].
    #[arg(long, allow_negative_numbers = true)]
    pub lr_min: Option<f64>,
    /// Clip the global gradient norm to this.
    #[arg(long, allow_negative_numbers = true, default_value_t = 5.0)]
    pub clip_norm: f64,
    /// Do not clip the gradient norm.
    #[arg(long)]
    pub no_clip_norm: bool,
    /// Clip every gradient value to [-C, C].
    #[arg(long, allow_negative_numbers = true)]
    pub clip_value: Option<f64>,
    /// Epochs to train (default 1 unless --steps is given).
    #[arg(long, allow_negative_numbers = true, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Total optimizer steps of the run (a resumed run continues up to it).
    #[arg(long, allow_negative_numbers = true)]
    pub steps: Option<u64>,
    /// Validate and checkpoint every N steps (and at the end).
    #[arg(long, allow_negative_numbers = true, default_value_t = 500)]
    pub val_every: u64,
    /// Print a sample every N steps (0: never).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub sample_every: u64,
    /// Stop after N validations in a row without improvement of the validation loss (both
    /// checkpoints are written; a resume may raise or drop it).
    #[arg(long, allow_negative_numbers = true)]
    pub patience: Option<u64>,
    /// Stop after this many minutes of training (fractions allowed, > 0), at a checkpoint: the
    /// run resumes exactly. Counted for this process alone.
    #[arg(long, allow_negative_numbers = true, value_name = "MINUTES")]
    pub time_limit: Option<f64>,
    /// The fraction of the text held out for validation, in [0, 1).
    #[arg(long, allow_negative_numbers = true, default_value_t = DEFAULT_VAL_FRAC)]
    pub val_frac: f64,
    /// The seed of every random choice.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub seed: u64,
    /// Start from the weights in this safetensors file (PyTorch state_dict names).
    #[arg(long, conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Continue the run saved in this directory (give the original options again). It is
    /// continued in place, or into --out if that names another directory (this one is then only
    /// read).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// The run directory: model.safetensors (the last model), best.safetensors (the lowest
    /// validation loss), train_state.json and train_state.safetensors, loss.png [default: the --resume
    /// directory, else charlm-out]. A directory that already holds a run is refused unless
    /// --resume continues it there or --overwrite is given.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Discard the run already in the --out directory and start over.
    #[arg(long)]
    pub overwrite: bool,
    /// The largest corpus to read, in MiB (the file is checked while it is read, so a FIFO or
    /// a device that never ends stops there).
    #[arg(long, allow_negative_numbers = true, default_value_t = DEFAULT_MAX_INPUT_MIB)]
    pub max_input_mib: u64,
    /// The precision.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DTypeArg,
    /// The precision of validation and of the printed samples [default: bf16 for an f32 run on a
    /// CPU with fast bf16 products (AMX-BF16, or AVX512_BF16 on AMD), where it takes one half to
    /// two thirds of the f32 time, else the training's]: bf16
    /// validates an f32 run with the recurrent products in bf16 (a CPU with AVX512_BF16; the
    /// losses within about 1e-4 of f32's; the training is unchanged), f32 validates an f32 run
    /// exactly, or a bf16 run's f32 weights.
    #[arg(long, value_enum)]
    pub val_dtype: Option<InferDType>,
    /// Do not show the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Threads for the recurrent layers' time loops (split by batch columns; the results are
    /// the same for any count). Default: `RNN_NUM_THREADS`, else the number of cores. The matrix
    /// products' threads are set by `MATMUL_NUM_THREADS`.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `charlm sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The model file, or a run directory (the --out of `charlm train`): then its
    /// best.safetensors, the model of the lowest validation loss.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Text to condition on (every character must be in the vocabulary).
    #[arg(long, default_value = "")]
    pub prime: String,
    /// Characters to generate.
    #[arg(long, allow_negative_numbers = true, default_value_t = 500)]
    pub length: usize,
    /// Softmax temperature, > 0.
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub temperature: f64,
    /// Draw only among the K most likely characters.
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<usize>,
    /// Always take the most likely character.
    #[arg(long)]
    pub argmax: bool,
    /// The seed.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
    pub seed: u64,
    /// The precision: the checkpoint's own (the default), or bf16 (f32 checkpoints, CPUs with
    /// AVX512_BF16).
    #[arg(long, value_enum)]
    pub dtype: Option<InferDType>,
}

/// `charlm eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model file, or a run directory (the --out of `charlm train`): then its
    /// best.safetensors, the model of the lowest validation loss.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The text (UTF-8), read as one stream from a zero state.
    #[arg(long)]
    pub text: PathBuf,
    /// The largest text to read, in MiB.
    #[arg(long, allow_negative_numbers = true, default_value_t = DEFAULT_MAX_INPUT_MIB)]
    pub max_input_mib: u64,
    /// The precision: the checkpoint's own (the default), or bf16 (f32 checkpoints, CPUs with
    /// AVX512_BF16).
    #[arg(long, value_enum)]
    pub dtype: Option<InferDType>,
}

/// The default of `--max-input-mib` (256 MiB, [`rnn_data::text::DEFAULT_MAX_TEXT_BYTES`]).
pub const DEFAULT_MAX_INPUT_MIB: u64 = rnn_data::text::DEFAULT_MAX_TEXT_BYTES >> 20;
/// The largest `--max-input-mib`: 1 TiB.
pub const MAX_INPUT_MIB: u64 = 1 << 20;

/// `--max-input-mib` checked, in bytes.
pub fn max_input_bytes(mib: u64) -> Result<u64, CharLmError> {
    if !(1..=MAX_INPUT_MIB).contains(&mib) {
        return Err(CharLmError::arg(
            "--max-input-mib",
            format!("must be in 1..={MAX_INPUT_MIB}, got {mib}"),
        ));
    }
    Ok(mib << 20)
}

/// The largest `--length` of `sample`.
pub const MAX_SAMPLE_LENGTH: usize = 100_000_000;

impl TrainArgs {
    /// The model configuration for a vocabulary of `vocab_size`.
    pub fn model_config(&self, vocab_size: usize) -> ModelConfig {
        let cell = match self.cell {
            CellArg::Lstm => CellKind::Lstm,
            CellArg::Gru => CellKind::Gru,
            CellArg::Rnn => CellKind::Rnn,
        };
        ModelConfig {
            cell,
            vocab_size,
            hidden: self.hidden,
            layers: self.layers,
            dropout: self.dropout,
            head_dropout: self.head_dropout,
        }
    }

    /// The type of the weights (f32 for bf16 training: its master weights).
    pub fn dtype(&self) -> DType {
        match self.dtype {
            DTypeArg::F32 | DTypeArg::Bf16 => DType::F32,
            DTypeArg::F64 => DType::F64,
        }
    }

    /// The precision of the recurrent products.
    pub fn precision(&self) -> Precision {
        match self.dtype {
            DTypeArg::Bf16 => Precision::Bf16,
            DTypeArg::F32 | DTypeArg::F64 => Precision::Full,
        }
    }

    /// The precision of validation and of the printed samples: `--val-dtype`, else `None`, the
    /// trainer's choice ([`TrainConfig::validation_precision`]). An error for a precision the
    /// weights cannot be evaluated in.
    pub fn val_precision(&self) -> Result<Option<Precision>, CharLmError> {
        let Some(want) = self.val_dtype else { return Ok(None) };
        let weights = self.dtype();
        want.precision_for(weights).map(Some).ok_or_else(|| {
            CharLmError::arg(
                "--val-dtype",
                format!(
                    "{weights} weights validate in {weights}{}, not {}",
                    if weights == DType::F32 { " or bf16" } else { "" },
                    want.name()
                ),
            )
        })
    }

    /// The training options, checked.
    pub fn train_config(&self) -> Result<TrainConfig, CharLmError> {
        let cfg = TrainConfig {
            seq_len: self.seq_len,
            batch: self.batch,
            batching: match self.batching {
                BatchingArg::Streams => Batching::Streams,
                BatchingArg::Windows => Batching::Windows,
            },
            optimizer: match self.optimizer {
                OptimArg::Adam => OptimKind::Adam,
                OptimArg::Sgd => OptimKind::Sgd,
                OptimArg::Rmsprop => OptimKind::Rmsprop,
                OptimArg::Adagrad => OptimKind::Adagrad,
                OptimArg::Rprop => OptimKind::Rprop,
            },
            lr: self.lr,
            lr_decay: self.lr_decay,
            lr_decay_after: self.lr_decay_after,
            warmup_steps: self.warmup_steps,
            lr_schedule: match self.lr_schedule {
                LrScheduleArg::Constant => LrScheduleKind::Constant,
                LrScheduleArg::Cosine => LrScheduleKind::Cosine,
            },
            lr_min: self.lr_min.unwrap_or(0.0),
            clip_norm: if self.no_clip_norm { None } else { Some(self.clip_norm) },
            clip_value: self.clip_value,
            stop: match (self.epochs, self.steps) {
                (_, Some(s)) => Stop::Steps(s),
                (Some(e), None) => Stop::Epochs(e),
                (None, None) => Stop::Epochs(1),
            },
            val_every: self.val_every,
            sample_every: self.sample_every,
            sample_length: 200,
            seed: self.seed,
            out: self.out_dir(),
            progress: !self.no_progress,
            patience: self.patience,
            time_limit: self.time_limit,
            precision: self.precision(),
            val_precision: self.val_precision()?,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// The run directory: `--out`, else the `--resume` directory, else `charlm-out`.
    pub fn out_dir(&self) -> PathBuf {
        match (&self.out, &self.resume) {
            (Some(out), _) => out.clone(),
            (None, Some(dir)) => dir.clone(),
            (None, None) => PathBuf::from("charlm-out"),
        }
    }

    /// Checks every option that does not need the corpus (so mistakes surface before it is
    /// read).
    pub fn check(&self) -> Result<(), CharLmError> {
        max_input_bytes(self.max_input_mib)?;
        if self.overwrite && self.resume.is_some() && self.out.is_none() {
            return Err(CharLmError::arg(
                "--overwrite",
                "would discard the run --resume continues; give --out a new directory to continue into",
            ));
        }
        self.model_config(1).check()?;
        self.train_config()?;
        rnn_data::text::train_len(0, self.val_frac).map_err(|_| {
            CharLmError::arg("--val-frac", format!("must be in [0, 1), got {}", self.val_frac))
        })?;
        if let Some(n) = self.threads {
            if !(1..=MAX_THREADS).contains(&n) {
                return Err(CharLmError::arg("--threads", format!("must be in 1..={MAX_THREADS}, got {n}")));
            }
        }
        Ok(())
    }
}

impl SampleArgs {
    /// The sampling options, checked.
    pub fn sampling(&self) -> Result<SamplingConfig, CharLmError> {
        let cfg = SamplingConfig::new()
            .with_temperature(self.temperature)
            .with_top_k(self.top_k)
            .with_argmax(self.argmax);
        cfg.check()?;
        if !(1..=MAX_SAMPLE_LENGTH).contains(&self.length) {
            return Err(CharLmError::arg(
                "--length",
                format!("must be in 1..={MAX_SAMPLE_LENGTH}, got {}", self.length),
            ));
        }
        Ok(cfg)
    }
}

fn check_dtype<T: Scalar>(path: &Path, file_dtype: DType) -> Result<(), CharLmError> {
    if file_dtype != DType::of::<T>() {
        return Err(CharLmError::checkpoint(
            path,
            format!("holds {file_dtype} weights but the model is {}; pass --dtype {file_dtype}", T::NAME),
        ));
    }
    Ok(())
}

/// The model saved in `file`, rebuilt and filled.
pub fn model_from_file<T: Scalar, M: LanguageModel<T>>(
    path: &Path,
    file: &ModelFile,
) -> Result<M, CharLmError> {
    check_dtype::<T>(path, file.dtype)?;
    let mut model = M::build(&file.config, &mut Rng::seed_from(0))?;
    assign_tensors(path, &file.tensors, model.params_mut().named_params_mut())?;
    Ok(model)
}

/// The model file `--checkpoint` names: the path itself, or `best.safetensors` in it when it is
/// a directory (a run directory), which must then hold one.
pub fn checkpoint_file(path: &Path) -> Result<PathBuf, CharLmError> {
    if !path.is_dir() {
        return Ok(path.to_owned());
    }
    let best = path.join(BEST_FILE);
    if best.exists() {
        return Ok(best);
    }
    Err(CharLmError::arg(
        "--checkpoint",
        format!(
            "{} is a directory without {BEST_FILE} (written when a run validates: it needs validation text); pass a model file, e.g. {}",
            path.display(),
            path.join(MODEL_FILE).display()
        ),
    ))
}

/// Checks a `--resume` path: an existing directory (not a file).
fn check_resume_dir(dir: &Path) -> Result<(), CharLmError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            Err(CharLmError::arg(
                "--resume",
                format!(
                    "{} is a file; --resume takes the run directory (the --out of the run to continue), \
                     here perhaps {}",
                    dir.display(),
                    parent.display()
                ),
            ))
        }
        Err(e) => Err(CharLmError::arg(
            "--resume",
            format!(
                "cannot open {} ({e}); --resume takes the run directory (the --out of the run to continue)",
                dir.display()
            ),
        )),
    }
}

/// Whether two existing paths are the same directory.
fn same_dir(a: &Path, b: &Path) -> Result<bool, CharLmError> {
    let canon = |p: &Path| std::fs::canonicalize(p).map_err(|e| CharLmError::write(p, e));
    Ok(canon(a)? == canon(b)?)
}

/// The vocabulary in the metadata of an `--init` file (`None` for a weights-only file).
fn init_vocab(path: &Path, file: &TensorFile) -> Result<Option<Vocab>, CharLmError> {
    match file.metadata.get("vocab") {
        None => Ok(None),
        Some(json) => crate::checkpoint::parse_vocab(json)
            .map(Some)
            .map_err(|e| CharLmError::checkpoint(path, format!("bad vocabulary in the metadata: {e}"))),
    }
}

/// Rewrites the tensors of an `--init` file trained on vocabulary `from` for the corpus's
/// vocabulary `to`: the input columns of `rnn.weight_ih_l0` and the rows of `head.weight` and
/// `head.bias` are taken by character; a character the file does not know keeps the fresh
/// weights of `fresh` (the model built from the seed). Returns the line that says so.
fn map_init_vocab<T: Scalar>(
    file: &mut TensorFile,
    from: &Vocab,
    to: &Vocab,
    fresh: &[(String, &rnn_tensor::Mat<T>)],
) -> String {
    let source: Vec<Option<usize>> = to.chars().iter().map(|&c| from.index_of(c)).collect();
    let fresh_of = |name: &str| {
        fresh.iter().find(|(n, _)| n == name).map(|(_, m)| m.map(|v| v.to_f64())).expect("the model has it")
    };
    for name in ["rnn.weight_ih_l0", "head.weight", "head.bias"] {
        let Some(t) = file.tensors.get_mut(name) else { continue };
        let mut m = fresh_of(name);
        let by_column = name == "rnn.weight_ih_l0";
        for (dst, src) in source.iter().enumerate() {
            let Some(src) = *src else { continue };
            if by_column {
                for r in 0..m.nrows() {
                    m[(r, dst)] = t.values[(r, src)];
                }
            } else {
                for c in 0..m.ncols() {
                    m[(dst, c)] = t.values[(src, c)];
                }
            }
        }
        t.shape = if t.shape.len() == 1 { vec![m.nrows()] } else { vec![m.nrows(), m.ncols()] };
        t.values = m;
    }
    let kept = source.iter().filter(|s| s.is_some()).count();
    let new = to.len() - kept;
    let dropped = from.len() - kept;
    format!(
        "--init: the checkpoint's vocabulary ({} characters) differs from the corpus's ({}): weights mapped by \
         character, {kept} kept, {new} new to the checkpoint start fresh, {dropped} not in the corpus dropped",
        from.len(),
        to.len()
    )
}

/// `charlm train`: returns the report; `log` receives progress lines.
///
/// The run directory is locked for the whole run ([`crate::rundir`]); a directory that holds a
/// run is continued (`--resume` of itself), replaced (`--overwrite`) or refused; the temporary
/// files of killed runs are removed. `--resume A --out B` reads A without changing it.
pub fn run_train<T: Scalar, M: LanguageModel<T>>(
    args: &TrainArgs,
    log: &mut dyn FnMut(&str),
) -> Result<TrainReport, CharLmError> {
    args.check()?;
    let cfg = args.train_config()?;
    if let Some(dir) = &args.resume {
        check_resume_dir(dir)?;
    }
    let corpus =
        Corpus::from_file_limited(&args.corpus, args.val_frac, max_input_bytes(args.max_input_mib)?)?;
    cfg.check_corpus(&corpus)?;
    crate::train::prepare_out(&cfg.out)?;
    let out_flag = if args.out.is_none() && args.resume.is_some() { "--resume" } else { "--out" };
    let _lock = RunLock::acquire(&cfg.out, out_flag)?;
    // The source of a resume into another directory is locked too: it must not change while
    // it is read.
    let resume_in_place = match &args.resume {
        Some(dir) => same_dir(dir, &cfg.out)?,
        None => false,
    };
    let _source_lock = match &args.resume {
        Some(dir) if !resume_in_place => Some(RunLock::acquire(dir, "--resume")?),
        _ => None,
    };
    if !resume_in_place && !args.overwrite && rundir::holds_run(&cfg.out) {
        return Err(CharLmError::arg(
            "--out",
            format!(
                "{} already holds a run; continue it with --resume {}, or pass --overwrite to discard it and \
                 start over",
                cfg.out.display(),
                cfg.out.display()
            ),
        ));
    }
    let config = args.model_config(corpus.vocab().len());
    config.check()?;
    let (model, resume) = if let Some(dir) = &args.resume {
        let (bytes, state) = if resume_in_place { load_checkpoint(dir)? } else { read_checkpoint(dir)? };
        let path = dir.join(MODEL_FILE);
        let file = decode_model(&path, &bytes)?;
        if file.config != config {
            return Err(CharLmError::checkpoint(
                &path,
                format!(
                    "is a {}x{} {} (dropout {}, head dropout {}), the options ask for {}x{} {} (dropout {}, head dropout {}); resume with the original options",
                    file.config.layers, file.config.hidden, file.config.cell, file.config.dropout, file.config.head_dropout,
                    config.layers, config.hidden, config.cell, config.dropout, config.head_dropout
                ),
            ));
        }
        if file.vocab != *corpus.vocab() {
            return Err(CharLmError::checkpoint(
                &path,
                "was trained on a text with another vocabulary; resume with the same --corpus",
            ));
        }
        (model_from_file::<T, M>(&path, &file)?, Some(state))
    } else if let Some(init) = &args.init {
        let mut file = read_tensors(init)?;
        check_dtype::<T>(init, file.dtype)?;
        let mut model = M::build(&config, &mut Rng::seed_from(args.seed))?;
        match init_vocab(init, &file)? {
            Some(from) if from != *corpus.vocab() => {
                check_tensors(init, &file, &ModelConfig { vocab_size: from.len(), ..config.clone() })?;
                let line = map_init_vocab(&mut file, &from, corpus.vocab(), &model.params().named_params());
                log(&line);
            }
            Some(_) => check_tensors(init, &file, &config)?,
            None => {
                check_tensors(init, &file, &config)?;
                log(&format!(
                    "--init: {} has no vocabulary; its rows and columns are taken to be the corpus's characters \
                     in code-point order",
                    init.display()
                ));
            }
        }
        assign_tensors(init, &file, model.params_mut().named_params_mut())?;
        (model, None)
    } else {
        (M::build(&config, &mut Rng::seed_from(args.seed))?, None)
    };
    // Everything is ready: only now is a run replaced.
    if !resume_in_place && args.overwrite && rundir::holds_run(&cfg.out) {
        rundir::discard_run(&cfg.out)?;
        log(&format!("--overwrite: discarded the run in {}", cfg.out.display()));
    }
    let removed = rundir::remove_leftovers(&cfg.out)?;
    if !removed.is_empty() {
        log(&format!(
            "removed {} temporary file(s) a killed run left in {}",
            removed.len(),
            cfg.out.display()
        ));
    }
    // Continuing into another directory: the best model so far comes along, so that the new
    // run's best.safetensors is the one its state records (after the leftovers are removed: a
    // best model without a run is one of them).
    if let (Some(dir), false) = (&args.resume, resume_in_place) {
        let best = dir.join(BEST_FILE);
        if best.exists() {
            let bytes = crate::checkpoint::read_file_bytes(&best)?;
            decode_model(&best, &bytes)?;
            crate::checkpoint::write_atomic(&cfg.out.join(BEST_FILE), &bytes)?;
        }
    }
    let mut model = model;
    log(&format!(
        "corpus {}: {} characters ({} training, {} validation), vocabulary {}; model {}x{} {} ({} parameters, {})",
        corpus.origin(),
        corpus.len(),
        corpus.train().len(),
        corpus.val().len(),
        corpus.vocab().len(),
        config.layers,
        config.hidden,
        config.cell,
        config.num_params(),
        match cfg.precision {
            Precision::Bf16 => "f32 weights, bf16 products",
            Precision::Full => T::NAME,
        }
    ));
    let val = cfg.validation_precision(DType::of::<T>());
    if val != cfg.precision {
        log(&format!(
            "validation and samples: {} products{}",
            if val == Precision::Bf16 { "bf16" } else { T::NAME },
            if cfg.val_precision.is_none() {
                " (this CPU's fast bf16 products; --val-dtype f32 for f32)"
            } else {
                ""
            }
        ));
    }
    let resumed_step = resume.as_ref().map(|s| s.step);
    match train(&mut model, &corpus, &cfg, resume, log) {
        // Continuing into another directory: the resumed checkpoint is in the source, not in
        // --out, until this run writes one.
        Err(CharLmError::Diverged { step, what, value, checkpoint })
            if !resume_in_place && checkpoint.is_some() && checkpoint == resumed_step =>
        {
            Err(CharLmError::Diverged { step, what, value, checkpoint: None })
        }
        other => other,
    }
}

/// `charlm sample` on a model file already read: returns the prime followed by the generated
/// text.
pub fn run_sample<T: Scalar, M: LanguageModel<T>>(
    args: &SampleArgs,
    path: &Path,
    file: &ModelFile,
) -> Result<String, CharLmError> {
    let mut text = String::new();
    run_sample_to::<T, M>(args, path, file, &mut |s| {
        text.push_str(s);
        Ok(())
    })?;
    Ok(text)
}

/// `charlm sample`, handing the prime and then each generated character to `out` as it is
/// drawn: an error from `out` (its reader went away) stops at once. A byte-order mark at the
/// start of the prime is not a character (it is dropped, as from a text file).
pub fn run_sample_to<T: Scalar, M: LanguageModel<T>>(
    args: &SampleArgs,
    path: &Path,
    file: &ModelFile,
    out: &mut dyn FnMut(&str) -> Result<(), CharLmError>,
) -> Result<(), CharLmError> {
    let cfg = args.sampling()?;
    let prime_text = args.prime.strip_prefix(rnn_data::text::BOM).unwrap_or(&args.prime);
    let prime = encode_prime(&file.vocab, prime_text)?;
    let precision = inference_precision(args.dtype, file.dtype)?;
    let mut model: M = model_from_file(path, file)?;
    model.set_inference_precision(precision)?;
    out(prime_text)?;
    let mut buf = [0u8; 4];
    generate_with(
        &mut model,
        &file.vocab,
        &prime,
        args.length,
        &cfg,
        &mut Rng::seed_from(args.seed),
        &mut |c| out(c.encode_utf8(&mut buf)),
    )
}

/// `charlm eval` on a model file already read: the mean loss in nats per character of
/// predicting every character of the text from all before it.
pub fn run_eval<T: Scalar, M: LanguageModel<T>>(
    args: &EvalArgs,
    path: &Path,
    file: &ModelFile,
) -> Result<f64, CharLmError> {
    let text = read_text_limited(&args.text, max_input_bytes(args.max_input_mib)?)?;
    let data = file.vocab.encode(&text)?;
    if data.len() < 2 {
        return Err(CharLmError::arg("--text", "needs at least 2 characters"));
    }
    let precision = inference_precision(args.dtype, file.dtype)?;
    let mut model: M = model_from_file(path, file)?;
    model.set_inference_precision(precision)?;
    evaluate(&mut model, &data, 1, 1000)
}

/// Runs `f::<T, M>(args…)` with the model type of a precision and cell.
macro_rules! with_model {
    ($dtype:expr, $cell:expr, $f:ident($($arg:expr),*)) => {
        match ($dtype, $cell) {
            (DType::F32, CellKind::Lstm) => $f::<f32, CharRnn<f32, Lstm<f32>>>($($arg),*),
            (DType::F64, CellKind::Lstm) => $f::<f64, CharRnn<f64, Lstm<f64>>>($($arg),*),
            (DType::F32, CellKind::Gru) => $f::<f32, CharRnn<f32, Gru<f32>>>($($arg),*),
            (DType::F64, CellKind::Gru) => $f::<f64, CharRnn<f64, Gru<f64>>>($($arg),*),
            (DType::F32, CellKind::Rnn) => $f::<f32, CharRnn<f32, Rnn<f32>>>($($arg),*),
            (DType::F64, CellKind::Rnn) => $f::<f64, CharRnn<f64, Rnn<f64>>>($($arg),*),
        }
    };
}

/// Sets the library's thread count from `--threads`, else `RNN_NUM_THREADS`, after checking
/// both thread variables (`MATMUL_NUM_THREADS` too) and the kernels' cap (`RNN_MAX_SIMD`, which
/// the library applies itself): a bad value is an error naming it.
pub fn apply_threads(flag: Option<usize>) -> Result<(), CharLmError> {
    rnn_tensor::simd::check_simd_env().map_err(CharLmError::Environment)?;
    let env = rnn_tensor::parallel::check_thread_env().map_err(CharLmError::Environment)?;
    if let Some(n) = flag.or(env) {
        rnn_tensor::parallel::set_num_threads(n);
    }
    Ok(())
}

/// Runs a command, printing its results to `out` and progress lines to standard error.
///
/// Standard error is written without failing: a closed log does not end training. A write to
/// `out` that fails is [`CharLmError::OutputClosed`] when its reader went away (the caller stops
/// quietly), else [`CharLmError::Stdout`].
pub fn run(command: &Command, out: &mut dyn std::io::Write) -> Result<(), CharLmError> {
    let mut log = |s: &str| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{s}");
    };
    match command {
        Command::Train(args) => {
            args.check()?;
            apply_threads(args.threads)?;
            let cell = args.model_config(1).cell;
            let r = with_model!(args.dtype(), cell, run_train(args, &mut log))?;
            let epochs = r.steps as f64 / r.batches_per_epoch as f64;
            let per_epoch = r.step_seconds * r.batches_per_epoch as f64 / r.steps_run.max(1) as f64;
            writeln!(
                out,
                "trained {} steps ({epochs:.2} epochs, {} this run) in {:.1} s; {per_epoch:.1} s per epoch of \
                 training steps; train loss {:.4}, validation loss {}",
                r.steps,
                r.steps_run,
                r.seconds,
                r.last_train_loss,
                r.last_val_loss.map_or("n/a".to_string(), |v| format!("{v:.4}"))
            )
            .map_err(CharLmError::stdout)?;
            writeln!(
                out,
                "validation took {:.1} s ({:.1} % of the run)",
                r.val_seconds,
                100.0 * r.val_seconds / r.seconds.max(1e-9)
            )
            .map_err(CharLmError::stdout)?;
            let why = match r.early_stop {
                Some(EarlyStop::Patience) => Some("--patience"),
                Some(EarlyStop::TimeLimit) => Some("--time-limit"),
                None => None,
            };
            if let Some(flag) = why {
                writeln!(out, "stopped early ({flag}); continue with --resume {}", args.out_dir().display())
                    .map_err(CharLmError::stdout)?;
            }
        }
        Command::Sample(args) => {
            args.sampling()?;
            apply_threads(None)?;
            let path = checkpoint_file(&args.checkpoint)?;
            let file = crate::checkpoint::load_model(&path)?;
            // Each piece (the prime, then every character) is flushed as it is drawn: the first
            // characters appear at once, and a reader that goes away (`| head -c 100`) ends the
            // program at the next character, not after the whole sample.
            let mut emit =
                |s: &str| out.write_all(s.as_bytes()).and_then(|()| out.flush()).map_err(CharLmError::stdout);
            with_model!(file.dtype, file.config.cell, run_sample_to(args, &path, &file, &mut emit))?;
            writeln!(out).and_then(|()| out.flush()).map_err(CharLmError::stdout)?;
        }
        Command::Eval(args) => {
            max_input_bytes(args.max_input_mib)?;
            apply_threads(None)?;
            let path = checkpoint_file(&args.checkpoint)?;
            let file = crate::checkpoint::load_model(&path)?;
            let loss = with_model!(file.dtype, file.config.cell, run_eval(args, &path, &file))?;
            writeln!(out, "loss_nats_per_char: {loss}")
                .and_then(|()| out.flush())
                .map_err(CharLmError::stdout)?;
        }
    }
    Ok(())
}
