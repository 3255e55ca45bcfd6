//! Exact resume: the training state saved beside the model, and the two-file commit that keeps
//! the pair consistent when a run is killed at any instant.
//!
//! ## Layout of a run directory (`--out DIR`)
//! - `model.safetensors`: the model ([`crate::checkpoint`]), loadable by PyTorch;
//! - `best.safetensors`: the model of the lowest validation loss so far, in the same format
//!   (written only when the validation loss improves; none without validation text);
//! - `train_state.json`: everything else an exact resume needs ([`TrainState`]);
//! - `loss.png`: the loss curves.
//!
//! ## `train_state.json`, format version 2
//! A JSON object:
//!
//! ```text
//! { "format": "charlm-train-state", "version": 2,
//!   "model_crc32": "1a2b3c4d",              CRC-32 of the whole model.safetensors it belongs to
//!   "step": 500,                            optimizer steps taken
//!   "batcher": { "kind": "streams", "epoch": 1, "batch": 99, "rng": null | RNG },
//!   "rng": RNG,                             the trainer's generator (dropout)
//!   "optimizer": { "kind": "adam", "step": 500,
//!                  "scalars": { "lr": F64 }, "buffers": { "rnn.weight_ih_l0/exp_avg": F64S } },
//!   "carry": [ { "rows": 256, "cols": 50, "data": F64S } ],   recurrent state carried to the next batch
//!   "settings": { "seq_len": "50", ... },   the run's options, compared on resume
//!   "train_loss": [[1, 4.17], ...], "val_loss": [[100, 2.9], ...],
//!   "best": null | { "step": 400, "val_loss": F64 },   the lowest validation loss so far
//!   "since_best": 2 }                       validations since it (for --patience)
//! ```
//!
//! Version 1 (without `best` and `since_best`) is still read: its run resumes with no best
//! known, so the first validation after the resume writes `best.safetensors`.
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
//! [`save_checkpoint`] writes the new state to `train_state.json.next` (atomically), then the
//! model (atomically: this rename is the commit point), then renames `.next` over
//! `train_state.json`. [`load_checkpoint`] takes `.next` if its `model_crc32` matches the model
//! on disk (the run died between the last two renames) and otherwise `train_state.json`, whose
//! CRC must match. A kill at any point therefore leaves the previous checkpoint or the new one.

use std::collections::BTreeMap;
use std::path::Path;

use rnn_data::BatcherPosition;
use rnn_optim::OptimState;
use rnn_tensor::rng::RngState;
use rnn_tensor::Mat;
use serde_json::{json, Value};

use crate::CharLmError;
use rnn_io::{sync_dir, write_atomic};

/// The `format` value of a training state file.
pub const STATE_FORMAT: &str = "charlm-train-state";
/// The version this code writes (it reads this one and version 1).
pub const STATE_VERSION: u64 = 2;
/// The best model's name in a run directory.
pub const BEST_FILE: &str = "best.safetensors";
/// The model file's name in a run directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// The training state's name in a run directory.
pub const STATE_FILE: &str = "train_state.json";
/// The pending training state of a commit in progress (see the module docs).
pub const STATE_NEXT: &str = "train_state.json.next";

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

impl TrainState {
    /// The JSON text (see the module docs).
    pub fn to_json(&self) -> String {
        let opt = &self.optimizer;
        let scalars: serde_json::Map<String, Value> =
            opt.scalars.iter().map(|(k, v)| (k.clone(), Value::from(f64s_to_hex(&[*v])))).collect();
        let buffers: serde_json::Map<String, Value> =
            opt.buffers.iter().map(|(k, v)| (k.clone(), Value::from(f64s_to_hex(v)))).collect();
        let carry: Vec<Value> = self
            .carry
            .iter()
            .map(|m| json!({ "rows": m.nrows(), "cols": m.ncols(), "data": f64s_to_hex(m.as_slice()) }))
            .collect();
        let b = &self.batcher;
        json!({
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "model_crc32": format!("{:08x}", self.model_crc32),
            "step": self.step,
            "batcher": {
                "kind": self.batcher_kind, "epoch": b.epoch, "batch": b.batch,
                "rng": b.rng.as_ref().map(rng_to_json),
            },
            "rng": rng_to_json(&self.rng),
            "optimizer": { "kind": opt.kind, "step": opt.step, "scalars": scalars, "buffers": buffers },
            "carry": carry,
            "settings": self.settings,
            "train_loss": losses_to_json(&self.train_loss),
            "val_loss": losses_to_json(&self.val_loss),
            "best": self.best.map(|(s, l)| json!({ "step": s, "val_loss": f64s_to_hex(&[l]) })),
            "since_best": self.since_best,
        })
        .to_string()
    }

    /// Parses [`TrainState::to_json`]; the error says which field is wrong.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| format!("not JSON ({e}); the file is truncated or corrupted"))?;
        if v["format"] != STATE_FORMAT {
            return Err(format!("format is not {STATE_FORMAT:?}"));
        }
        let version = u64_field(&v, "version")?;
        if !(1..=STATE_VERSION).contains(&version) {
            return Err(format!(
                "version {version} is not supported (this charlm reads 1 to {STATE_VERSION})"
            ));
        }
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

/// Saves a checkpoint into `dir`: the model file's bytes and the training state (whose
/// `model_crc32` is set here), with the commit described in the module docs.
pub fn save_checkpoint(dir: &Path, model_bytes: &[u8], state: &mut TrainState) -> Result<(), CharLmError> {
    state.model_crc32 = crc32fast::hash(model_bytes);
    let next = dir.join(STATE_NEXT);
    write_atomic(&next, state.to_json().as_bytes())?;
    write_atomic(&dir.join(MODEL_FILE), model_bytes)?;
    let target = dir.join(STATE_FILE);
    std::fs::rename(&next, &target).map_err(|e| CharLmError::write(&target, e))?;
    sync_dir(dir).map_err(|e| CharLmError::write(dir, e))
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
        match TrainState::from_json(&text) {
            Ok(s) if s.model_crc32 == crc => {
                if settle {
                    std::fs::rename(&next, &state_path).map_err(|e| CharLmError::write(&state_path, e))?;
                }
                return Ok((model, s));
            }
            _ => {
                // A commit that never reached the model's rename: the old pair stands.
                if settle {
                    let _ = std::fs::remove_file(&next);
                }
            }
        }
    }
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| CharLmError::checkpoint(&state_path, format!("cannot read it ({e})")))?;
    let state = TrainState::from_json(&text).map_err(|e| CharLmError::checkpoint(&state_path, e))?;
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
    Ok((model, state))
}
