//! Exact resume: the training state saved beside the model, and the commit that keeps the model
//! and its state consistent when a run is killed at any instant.
//!
//! ## Layout of a run directory (`--out DIR`)
//! - `model.safetensors`: the model ([`crate::checkpoint`]), loadable by PyTorch;
//! - `best.safetensors`: the model of the lowest validation loss so far, in the same format
//!   (written only when the validation loss improves; none without validation text);
//! - `train_state.json`: everything else an exact resume needs ([`TrainState`]), but its large
//!   arrays;
//! - `train_state.safetensors`: those arrays (the optimizer's moments, the carried states),
//!   binary, exact;
//! - `loss.png`: the loss curves.
//!
//! ## `train_state.json`, format version 3
//! A JSON object:
//!
//! ```text
//! { "format": "charlm-train-state", "version": 3,
//!   "model_crc32": "1a2b3c4d",              CRC-32 of the whole model.safetensors it belongs to
//!   "arrays": { "file": "train_state.safetensors", "crc32": "5e6f7a8b" },
//!                                           the arrays file and the CRC-32 of all its bytes
//!   "step": 500,                            optimizer steps taken
//!   "batcher": { "kind": "streams", "epoch": 1, "batch": 99, "rng": null | RNG },
//!   "rng": RNG,                             the trainer's generator (dropout)
//!   "optimizer": { "kind": "adam", "step": 500, "scalars": { "lr": F64 } },
//!   "settings": { "seq_len": "50", ... },   the run's options, compared on resume
//!   "train_loss": [[1, 4.17], ...], "val_loss": [[100, 2.9], ...],
//!   "best": null | { "step": 400, "val_loss": F64 },   the lowest validation loss so far
//!   "since_best": 2 }                       validations since it (for --patience)
//! ```
//!
//! `train_state.safetensors` holds a tensor ([`rnn_io`]) `optimizer/NAME` (`[n]`) for each of
//! the optimizer's buffers (`optimizer/rnn.weight_ih_l0/exp_avg`) and `carry/K` (`[rows, cols]`)
//! for each recurrent state carried to the next batch, and in its metadata `format`
//! (`charlm-train-state-arrays`), `step` and `model_crc32`. A tensor is `F32` when every value in
//! it is an `f32` (the state of an `f32` model), else `F64`: exact either way. For char-rnn's
//! default model (a 2×256 LSTM in f32, Adam) version 2 kept them in the JSON as hex text, 29 MB;
//! here they are 7.2 MB, and the JSON 832 bytes after three steps (the loss histories grow it).
//!
//! Versions 1 and 2 (one JSON file, the arrays in it as `"buffers": { NAME: F64S }` and
//! `"carry": [ { "rows", "cols", "data": F64S } ]`) are still read; version 1 has no `best` and
//! `since_best`, so its run resumes with no best known and the first validation after the
//! resume writes `best.safetensors`.
//!
//! `RNG` is `{ "seed": 64 hex digits, "stream": decimal string, "word_pos": decimal string }`
//! (ChaCha8's whole state). Exact floats are written as the hex of their IEEE-754 bits, 16 digits
//! per value, big-endian digits: `F64` is one value, `F64S` a concatenation. Decimal floats do
//! not always parse back to the same bits, and a resumed run must be bit-identical. The loss
//! histories are plain decimals: they are only plotted.
//!
//! ## The commit
//! When a validation improves on the best, the trainer first writes `best.safetensors`
//! (atomically), then commits the checkpoint whose state records that best. A kill in between
//! leaves the older state, and the resumed run, bit-identical, reaches the same validation
//! and writes the same best file again.
//!
//! [`save_checkpoint`] writes the new arrays to `train_state.safetensors.next` and the new state
//! to `train_state.json.next` (each atomically), then the model (atomically: this rename is the
//! commit point), then renames the arrays and the state over `train_state.safetensors` and
//! `train_state.json`, in that order. [`load_checkpoint`] takes `train_state.json.next` if its
//! `model_crc32` matches the model on disk (the run died after the commit point) and otherwise
//! `train_state.json`, whose CRC must match; either way its arrays are whichever of
//! `train_state.safetensors` and `train_state.safetensors.next` has the CRC-32 the JSON
//! records. A kill at any point therefore leaves the previous checkpoint or the new one, and a
//! state and arrays file that do not belong together (a torn copy of the directory) are
//! refused with one line that says so.

use std::collections::BTreeMap;
use std::path::Path;

use rnn_data::BatcherPosition;
use rnn_io::{sync_dir, write_atomic, Tensor, TensorData, TensorFile};
use rnn_optim::OptimState;
use rnn_tensor::rng::RngState;
use rnn_tensor::Mat;
use serde_json::{json, Value};

use crate::CharLmError;

/// The `format` value of a training state file.
pub const STATE_FORMAT: &str = "charlm-train-state";
/// The version this code writes (it reads this one and versions 1 and 2).
pub const STATE_VERSION: u64 = 3;
/// The `format` metadata of a training state's arrays file.
pub const ARRAYS_FORMAT: &str = "charlm-train-state-arrays";
/// The best model's name in a run directory.
pub const BEST_FILE: &str = "best.safetensors";
/// The model file's name in a run directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// The training state's name in a run directory.
pub const STATE_FILE: &str = "train_state.json";
/// The pending training state of a commit in progress (see the module docs).
pub const STATE_NEXT: &str = "train_state.json.next";
/// The training state's arrays (version 3) in a run directory.
pub const ARRAYS_FILE: &str = "train_state.safetensors";
/// The pending arrays of a commit in progress.
pub const ARRAYS_NEXT: &str = "train_state.safetensors.next";

/// Everything besides the weights that an exact resume needs.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// CRC-32 of the model file this state belongs to (set by [`save_checkpoint`]).
    pub model_crc32: u32,
    /// Optimizer steps taken.
    pub step: u64,
    /// The batcher's kind (`streams` or `windows`).
    pub batcher_kind: String,
    /// The batcher's position.
    pub batcher: BatcherPosition,
    /// The trainer's generator.
    pub rng: RngState,
    /// The optimizer's state.
    pub optimizer: OptimState,
    /// The recurrent state carried into the next batch (empty when it starts from zero).
    pub carry: Vec<Mat<f64>>,
    /// The run's options as strings, compared on resume.
    pub settings: BTreeMap<String, String>,
    /// `(step, training loss)`.
    pub train_loss: Vec<(u64, f64)>,
    /// `(step, validation loss)`.
    pub val_loss: Vec<(u64, f64)>,
    /// `(step, validation loss)` of the lowest validation loss so far (the model in
    /// `best.safetensors`), exact.
    pub best: Option<(u64, f64)>,
    /// Validations since the best one (0 right after an improvement).
    pub since_best: u64,
}

/// Hex of the bits of each value, 16 digits each.
pub fn f64s_to_hex(v: &[f64]) -> String {
    let mut s = String::with_capacity(16 * v.len());
    for x in v {
        s.push_str(&format!("{:016x}", x.to_bits()));
    }
    s
}

/// The inverse of [`f64s_to_hex`].
pub fn hex_to_f64s(s: &str) -> Result<Vec<f64>, String> {
    if !s.len().is_multiple_of(16) || !s.is_ascii() {
        return Err(format!("a float list of {} characters is not a multiple of 16 hex digits", s.len()));
    }
    (0..s.len() / 16)
        .map(|i| {
            u64::from_str_radix(&s[16 * i..16 * i + 16], 16)
                .map(f64::from_bits)
                .map_err(|_| format!("bad hex float {:?}", &s[16 * i..16 * i + 16]))
        })
        .collect()
}

fn rng_to_json(r: &RngState) -> Value {
    let seed: String = r.seed.iter().map(|b| format!("{b:02x}")).collect();
    json!({ "seed": seed, "stream": r.stream.to_string(), "word_pos": r.word_pos.to_string() })
}

fn rng_from_json(v: &Value) -> Result<RngState, String> {
    let seed_hex = v["seed"].as_str().ok_or("rng.seed missing")?;
    if seed_hex.len() != 64 || !seed_hex.is_ascii() {
        return Err("rng.seed is not 64 hex digits".into());
    }
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).map_err(|_| "rng.seed is not hex")?;
    }
    let stream = v["stream"].as_str().and_then(|s| s.parse().ok()).ok_or("rng.stream missing or bad")?;
    let word_pos =
        v["word_pos"].as_str().and_then(|s| s.parse().ok()).ok_or("rng.word_pos missing or bad")?;
    Ok(RngState { seed, stream, word_pos })
}

fn u64_field(v: &Value, key: &str) -> Result<u64, String> {
    v[key].as_u64().ok_or_else(|| format!("{key} missing or not a count"))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v[key].as_str().ok_or_else(|| format!("{key} missing or not a string"))
}

fn one_f64(s: &str) -> Result<f64, String> {
    match hex_to_f64s(s)?.as_slice() {
        [x] => Ok(*x),
        _ => Err(format!("{s:?} is not one hex float")),
    }
}

fn losses_to_json(v: &[(u64, f64)]) -> Value {
    Value::Array(v.iter().map(|&(s, l)| json!([s, l])).collect())
}

fn losses_from_json(v: &Value, key: &str) -> Result<Vec<(u64, f64)>, String> {
    let arr = v[key].as_array().ok_or_else(|| format!("{key} missing"))?;
    arr.iter()
        .map(|p| match (p[0].as_u64(), p[1].as_f64()) {
            (Some(s), Some(l)) => Ok((s, l)),
            _ => Err(format!("{key} has a bad entry {p}")),
        })
        .collect()
}

/// The arrays file's tensor name of optimizer buffer `name`.
fn buffer_tensor(name: &str) -> String {
    format!("optimizer/{name}")
}

/// The arrays file's tensor name of carried state `k`.
fn carry_tensor(k: usize) -> String {
    format!("carry/{k}")
}

/// `values` as an `F32` tensor when every one of them survives the trip through `f32` bit for
/// bit (the state of an `f32` model: half the bytes), else as `F64`. Exact either way.
fn exact_tensor(shape: Vec<usize>, values: Vec<f64>) -> Tensor {
    let narrow: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    if narrow.iter().zip(&values).all(|(&n, v)| (n as f64).to_bits() == v.to_bits()) {
        Tensor::new(shape, TensorData::F32(narrow))
    } else {
        Tensor::new(shape, TensorData::F64(values))
    }
}

/// The large arrays of a training state: the optimizer's buffers by name, and the carried
/// states in order.
pub type StateArrays = (BTreeMap<String, Vec<f64>>, Vec<Mat<f64>>);

/// Decodes a training state's arrays file (`train_state.safetensors`): the optimizer's buffers
/// by name and the carried states in order. Every tensor must be floats (`F32` for the state of
/// an `f32` model, else `F64`); the error says which is wrong.
pub fn decode_arrays(bytes: &[u8]) -> Result<StateArrays, String> {
    let file = TensorFile::from_bytes(ARRAYS_FILE, bytes).map_err(|e| e.to_string())?;
    if file.metadata.get("format").map(String::as_str) != Some(ARRAYS_FORMAT) {
        return Err(format!("{ARRAYS_FILE}: its format is not {ARRAYS_FORMAT:?}"));
    }
    let mut buffers = BTreeMap::new();
    let mut carry = BTreeMap::new();
    for (name, t) in &file.tensors {
        if t.dtype() == rnn_io::Dtype::I64 {
            return Err(format!("{ARRAYS_FILE}: tensor {name} is I64, not F32 or F64"));
        }
        if let Some(buffer) = name.strip_prefix("optimizer/") {
            buffers.insert(buffer.to_owned(), file.floats::<f64>(name).map_err(|e| e.to_string())?);
        } else if let Some(k) = name.strip_prefix("carry/").and_then(|k| k.parse::<usize>().ok()) {
            let m = file.matrix::<f64>(name).map_err(|e| e.to_string())?;
            if t.shape.len() != 2 || carry.insert(k, m).is_some() {
                return Err(format!("{ARRAYS_FILE}: tensor {name} is not a [rows, cols] carried state"));
            }
        } else {
            return Err(format!("{ARRAYS_FILE}: unknown tensor {name}"));
        }
    }
    if carry.keys().enumerate().any(|(i, &k)| i != k) {
        return Err(format!("{ARRAYS_FILE}: the carried states are not numbered 0 to {}", carry.len() - 1));
    }
    Ok((buffers, carry.into_values().collect()))
}

/// The JSON's `"arrays"` entry: the file's name (always [`ARRAYS_FILE`]) and CRC-32.
fn arrays_entry(v: &Value) -> Result<Option<u32>, String> {
    if u64_field(v, "version")? < 3 {
        return Ok(None);
    }
    let a = &v["arrays"];
    let file = str_field(a, "file").map_err(|e| format!("arrays.{e}"))?;
    if file != ARRAYS_FILE {
        return Err(format!("arrays.file is {file:?}; a run's arrays file is {ARRAYS_FILE:?}"));
    }
    let crc = str_field(a, "crc32").map_err(|e| format!("arrays.{e}"))?;
    u32::from_str_radix(crc, 16).map(Some).map_err(|_| format!("arrays.crc32 {crc:?} is not hex"))
}

impl TrainState {
    /// The state's two files (see the module docs): the JSON text and the arrays file's bytes,
    /// whose CRC-32 the JSON records.
    pub fn to_files(&self) -> Result<(String, Vec<u8>), CharLmError> {
        let opt = &self.optimizer;
        let mut arrays = TensorFile::new()
            .with_metadata("format", ARRAYS_FORMAT)
            .with_metadata("step", self.step.to_string())
            .with_metadata("model_crc32", format!("{:08x}", self.model_crc32));
        for (name, v) in &opt.buffers {
            arrays = arrays.with_tensor(buffer_tensor(name), exact_tensor(vec![v.len()], v.clone()));
        }
        for (k, m) in self.carry.iter().enumerate() {
            let row_major = (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)])).collect();
            arrays = arrays.with_tensor(carry_tensor(k), exact_tensor(vec![m.nrows(), m.ncols()], row_major));
        }
        let arrays = arrays.to_bytes()?;
        let scalars: serde_json::Map<String, Value> =
            opt.scalars.iter().map(|(k, v)| (k.clone(), Value::from(f64s_to_hex(&[*v])))).collect();
        let b = &self.batcher;
        let json = json!({
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "model_crc32": format!("{:08x}", self.model_crc32),
            "arrays": { "file": ARRAYS_FILE, "crc32": format!("{:08x}", crc32fast::hash(&arrays)) },
            "step": self.step,
            "batcher": {
                "kind": self.batcher_kind, "epoch": b.epoch, "batch": b.batch,
                "rng": b.rng.as_ref().map(rng_to_json),
            },
            "rng": rng_to_json(&self.rng),
            "optimizer": { "kind": opt.kind, "step": opt.step, "scalars": scalars },
            "settings": self.settings,
            "train_loss": losses_to_json(&self.train_loss),
            "val_loss": losses_to_json(&self.val_loss),
            "best": self.best.map(|(s, l)| json!({ "step": s, "val_loss": f64s_to_hex(&[l]) })),
            "since_best": self.since_best,
        })
        .to_string();
        Ok((json, arrays))
    }

    /// A state of version 1 or 2, one JSON file: [`TrainState::from_files`] without arrays.
    pub fn from_json(text: &str) -> Result<Self, String> {
        Self::from_files(text, None)
    }

    /// The CRC-32 of the arrays file the JSON `text` needs (version 3), `None` for versions 1
    /// and 2, which have none.
    pub fn arrays_crc32(text: &str) -> Result<Option<u32>, String> {
        arrays_entry(&parse(text)?)
    }

    /// Parses a state's files: its JSON `text` and, for version 3, the bytes of its arrays file,
    /// whose CRC-32 must be the one the JSON records. The error says which field or file is
    /// wrong.
    pub fn from_files(text: &str, arrays: Option<&[u8]>) -> Result<Self, String> {
        let v = parse(text)?;
        let version = u64_field(&v, "version")?;
        let crc_s = str_field(&v, "model_crc32")?;
        let model_crc32 =
            u32::from_str_radix(crc_s, 16).map_err(|_| format!("model_crc32 {crc_s:?} is not hex"))?;
        let b = &v["batcher"];
        let batcher = BatcherPosition {
            epoch: u64_field(b, "epoch")?,
            batch: u64_field(b, "batch")?,
            rng: if b["rng"].is_null() { None } else { Some(rng_from_json(&b["rng"])?) },
        };
        let o = &v["optimizer"];
        let mut optimizer = OptimState {
            kind: str_field(o, "kind")?.to_owned(),
            step: u64_field(o, "step")?,
            ..Default::default()
        };
        for (k, x) in o["scalars"].as_object().ok_or("optimizer.scalars missing")? {
            optimizer.scalars.insert(k.clone(), one_f64(x.as_str().ok_or("optimizer scalar not a string")?)?);
        }
        let carry = match (arrays_entry(&v)?, arrays) {
            (Some(want), Some(bytes)) => {
                let got = crc32fast::hash(bytes);
                if got != want {
                    return Err(format!(
                        "{ARRAYS_FILE} has CRC-32 {got:08x} but the state records {want:08x}: the two files are from different checkpoints; restore the run directory whole"
                    ));
                }
                let (buffers, carry) = decode_arrays(bytes)?;
                optimizer.buffers = buffers;
                carry
            }
            (Some(_), None) => return Err(format!("version 3 needs its arrays file {ARRAYS_FILE}")),
            (None, _) => {
                for (k, x) in o["buffers"].as_object().ok_or("optimizer.buffers missing")? {
                    optimizer
                        .buffers
                        .insert(k.clone(), hex_to_f64s(x.as_str().ok_or("optimizer buffer not a string")?)?);
                }
                let mut carry = Vec::new();
                for m in v["carry"].as_array().ok_or("carry missing")? {
                    let (r, c) = (u64_field(m, "rows")? as usize, u64_field(m, "cols")? as usize);
                    let data = hex_to_f64s(str_field(m, "data")?)?;
                    if data.len() != r.saturating_mul(c) {
                        return Err(format!("a carried state of {r}x{c} has {} values", data.len()));
                    }
                    carry.push(Mat::from_vec(r, c, data));
                }
                carry
            }
        };
        let mut settings = BTreeMap::new();
        for (k, x) in v["settings"].as_object().ok_or("settings missing")? {
            settings.insert(k.clone(), x.as_str().ok_or("a setting is not a string")?.to_owned());
        }
        let (best, since_best) = if version == 1 {
            (None, 0)
        } else {
            let b = &v["best"];
            let best = if b.is_null() {
                None
            } else {
                let l = one_f64(str_field(b, "val_loss").map_err(|e| format!("best.{e}"))?)?;
                Some((u64_field(b, "step").map_err(|e| format!("best.{e}"))?, l))
            };
            (best, u64_field(&v, "since_best")?)
        };
        Ok(Self {
            best,
            since_best,
            model_crc32,
            step: u64_field(&v, "step")?,
            batcher_kind: str_field(b, "kind")?.to_owned(),
            batcher,
            rng: rng_from_json(&v["rng"])?,
            optimizer,
            carry,
            settings,
            train_loss: losses_from_json(&v, "train_loss")?,
            val_loss: losses_from_json(&v, "val_loss")?,
        })
    }
}

/// The JSON of a state file, with its format and version checked.
fn parse(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON ({e}); the file is truncated or corrupted"))?;
    if v["format"] != STATE_FORMAT {
        return Err(format!("format is not {STATE_FORMAT:?}"));
    }
    let version = u64_field(&v, "version")?;
    if !(1..=STATE_VERSION).contains(&version) {
        return Err(format!("version {version} is not supported (this charlm reads 1 to {STATE_VERSION})"));
    }
    Ok(v)
}

/// Saves a checkpoint into `dir`: the model file's bytes and the training state (whose
/// `model_crc32` is set here), with the commit described in the module docs.
pub fn save_checkpoint(dir: &Path, model_bytes: &[u8], state: &mut TrainState) -> Result<(), CharLmError> {
    state.model_crc32 = crc32fast::hash(model_bytes);
    let (json, arrays) = state.to_files()?;
    write_atomic(&dir.join(ARRAYS_NEXT), &arrays)?;
    write_atomic(&dir.join(STATE_NEXT), json.as_bytes())?;
    write_atomic(&dir.join(MODEL_FILE), model_bytes)?;
    rename(dir, ARRAYS_NEXT, ARRAYS_FILE)?;
    rename(dir, STATE_NEXT, STATE_FILE)?;
    sync_dir(dir).map_err(|e| CharLmError::write(dir, e))
}

/// Renames `dir/from` over `dir/to`.
fn rename(dir: &Path, from: &str, to: &str) -> Result<(), CharLmError> {
    let target = dir.join(to);
    std::fs::rename(dir.join(from), &target).map_err(|e| CharLmError::write(&target, e))
}

/// Loads the checkpoint in `dir`: the model file's bytes and the training state that belongs to
/// it (finishing an interrupted commit, see the module docs). It renames or removes a pending
/// state, so the caller must own the directory (hold its [`crate::rundir::RunLock`]).
pub fn load_checkpoint(dir: &Path) -> Result<(Vec<u8>, TrainState), CharLmError> {
    load(dir, true)
}

/// [`load_checkpoint`] without writing anything: the directory is left as it is (the source of
/// `--resume A --out B`).
pub fn read_checkpoint(dir: &Path) -> Result<(Vec<u8>, TrainState), CharLmError> {
    load(dir, false)
}

fn load(dir: &Path, settle: bool) -> Result<(Vec<u8>, TrainState), CharLmError> {
    let model_path = dir.join(MODEL_FILE);
    let model = std::fs::read(&model_path).map_err(|e| {
        CharLmError::checkpoint(
            &model_path,
            format!("cannot read it ({e}); --resume needs a directory written by `charlm train --out`"),
        )
    })?;
    let crc = crc32fast::hash(&model);
    let next = dir.join(STATE_NEXT);
    let state_path = dir.join(STATE_FILE);
    if let Ok(text) = std::fs::read_to_string(&next) {
        if model_crc_of(&text) == Some(crc) {
            // The run died after the model's rename: the pending state is the committed one.
            let (state, arrays_at) = read_state(dir, &next, &text)?;
            if settle {
                if arrays_at == Some(ARRAYS_NEXT) {
                    rename(dir, ARRAYS_NEXT, ARRAYS_FILE)?;
                }
                rename(dir, STATE_NEXT, STATE_FILE)?;
                // Pending arrays of no state (a commit that died before its state was written).
                let _ = std::fs::remove_file(dir.join(ARRAYS_NEXT));
            }
            return Ok((model, state));
        }
        // A commit that never reached the model's rename: the old pair stands.
        if settle {
            let _ = std::fs::remove_file(&next);
            let _ = std::fs::remove_file(dir.join(ARRAYS_NEXT));
        }
    }
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| CharLmError::checkpoint(&state_path, format!("cannot read it ({e})")))?;
    let (state, _) = read_state(dir, &state_path, &text)?;
    if state.model_crc32 != crc {
        return Err(CharLmError::checkpoint(
            &state_path,
            format!(
                "belongs to a model with CRC-32 {:08x}, but {} has {crc:08x}; the two files are from different runs",
                state.model_crc32,
                model_path.display()
            ),
        ));
    }
    if settle {
        let _ = std::fs::remove_file(dir.join(ARRAYS_NEXT));
    }
    Ok((model, state))
}

/// The `model_crc32` of a state's JSON, if it has a readable one.
fn model_crc_of(text: &str) -> Option<u32> {
    let v: Value = serde_json::from_str(text).ok()?;
    u32::from_str_radix(v["model_crc32"].as_str()?, 16).ok()
}

/// The state whose JSON `text` was read from `path`, with its arrays (version 3): the one of
/// `train_state.safetensors` and `train_state.safetensors.next` whose CRC-32 the JSON records,
/// whose name is returned.
fn read_state(
    dir: &Path,
    path: &Path,
    text: &str,
) -> Result<(TrainState, Option<&'static str>), CharLmError> {
    let bad = |m: String| CharLmError::checkpoint(path, m);
    let Some(want) = TrainState::arrays_crc32(text).map_err(bad)? else {
        return Ok((TrainState::from_json(text).map_err(bad)?, None));
    };
    let mut found = None;
    for name in [ARRAYS_FILE, ARRAYS_NEXT] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            if crc32fast::hash(&bytes) == want {
                found = Some((name, bytes));
                break;
            }
        }
    }
    let Some((name, bytes)) = found else {
        let arrays = dir.join(ARRAYS_FILE);
        return Err(bad(match std::fs::read(&arrays) {
            Ok(bytes) => format!(
                "needs {} with CRC-32 {want:08x}, but that file has {:08x}: the two are from different checkpoints; restore the run directory whole",
                arrays.display(),
                crc32fast::hash(&bytes)
            ),
            Err(e) => format!(
                "needs {}, which cannot be read ({e}); restore the run directory whole",
                arrays.display()
            ),
        }));
    };
    Ok((TrainState::from_files(text, Some(&bytes)).map_err(bad)?, Some(name)))
}
