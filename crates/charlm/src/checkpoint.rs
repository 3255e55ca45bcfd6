//! Checkpoints: the model as one safetensors file PyTorch loads, written atomically.
//!
//! ## The model file
//! Tensors are named and shaped as the `state_dict` of a PyTorch module with
//! `rnn = nn.LSTM|GRU|RNN(V, H, L, batch_first=True)` and `head = nn.Linear(H, V)`
//! ([`ModelConfig::tensor_shapes`]), stored row-major as PyTorch does. Our matrices are
//! column-major: the conversion happens here and nowhere else. Biases, `G·H × 1` matrices in
//! memory, are 1-D tensors `[G·H]` in the file. All tensors have the model's dtype, `F32` or
//! `F64`.
//!
//! The safetensors metadata (string to string) holds:
//!
//! | key | value |
//! |---|---|
//! | `format` | `charlm` |
//! | `format_version` | `1` |
//! | `cell` | `lstm`, `gru` or `rnn` |
//! | `vocab_size`, `hidden_size`, `num_layers` | decimal integers |
//! | `dropout` | decimal |
//! | `head_dropout` | decimal, only when not 0 (dropout before the head in training) |
//! | `dtype` | `f32` or `f64` |
//! | `vocab` | a JSON array of one-character strings, in index order |
//! | `data_crc32` | 8 hex digits: CRC-32 (zlib's) of the data section, every byte after the header |
//!
//! Loading checks everything: that the file parses (truncation and header damage), the
//! metadata, the vocabulary, the CRC (damage to the tensor bytes), every tensor's name, dtype
//! and shape against the configuration, and that every value is finite. Each failure is one
//! [`CharLmError::Checkpoint`] line. The file format itself (parsing, the CRC, the byte layout)
//! is [`rnn_io`]'s; what is checked here is what makes the tensors a model.
//!
//! Weights-only files (from PyTorch's `safetensors.torch.save_file`) have no metadata; they
//! are read by [`read_tensors`] for `--init`, checked against the model being trained.
//!
//! ## Atomic writes
//! [`write_atomic`] (from [`rnn_io`]) writes a temporary file in the target's directory, flushes
//! it to disk, renames it over the target and flushes the directory: a reader (or a run killed at
//! any instant) sees the old file or the new one, never a mix.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rnn_data::Vocab;
use rnn_io::Tensor;
use rnn_tensor::{Mat, Scalar};

use crate::config::{CellKind, DType, ModelConfig};
use crate::CharLmError;

/// The `format` metadata value of a charlm model file.
pub const FORMAT: &str = "charlm";
/// The `format_version` this code writes and reads.
pub const FORMAT_VERSION: &str = "1";

/// A tensor read from a file, converted to a column-major `f64` matrix (exact for `F32`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedTensor {
    /// The shape in the file (PyTorch's).
    pub shape: Vec<usize>,
    /// The values: `[r, c]` becomes `r × c`, `[n]` becomes `n × 1`.
    pub values: Mat<f64>,
}

/// The tensors of a safetensors file, by name, with the file's dtype and metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorFile {
    /// The dtype every tensor has.
    pub dtype: DType,
    /// The metadata (empty if the file has none).
    pub metadata: HashMap<String, String>,
    /// The tensors by name.
    pub tensors: BTreeMap<String, LoadedTensor>,
}

/// A model checkpoint: configuration, vocabulary and weights.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// The model's configuration.
    pub config: ModelConfig,
    /// The precision the model was saved in.
    pub dtype: DType,
    /// The vocabulary, in index order.
    pub vocab: Vocab,
    /// The tensors, checked against `config`.
    pub tensors: TensorFile,
}

pub use rnn_io::write_atomic;

/// The PyTorch shape of a tensor named `name` held as `m`: biases are 1-D.
fn torch_shape<T>(name: &str, m: &Mat<T>) -> Vec<usize> {
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.starts_with("bias") && m.ncols() == 1 {
        vec![m.nrows()]
    } else {
        vec![m.nrows(), m.ncols()]
    }
}

/// Serializes named tensors (any [`rnn_tensor::Parameters`] list) with `metadata`, adding
/// `data_crc32`. Returns the file's bytes: [`rnn_io::TensorFile::to_bytes`], whose names and
/// metadata are sorted, so the same model always gives the same bytes.
pub fn encode_tensors<T: Scalar>(
    tensors: &[(String, &Mat<T>)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, CharLmError> {
    let mut file = rnn_io::TensorFile { metadata: metadata.into_iter().collect(), ..Default::default() };
    for (name, m) in tensors {
        let tensor = Tensor::from_mat(m).with_shape(torch_shape(name, m));
        if file.tensors.insert(name.clone(), tensor).is_some() {
            return Err(CharLmError::arg("tensor list", format!("the name {name} appears twice")));
        }
    }
    Ok(file.to_bytes()?)
}

/// The metadata of a model file (without `data_crc32`, which [`encode_tensors`] adds).
pub fn model_metadata(config: &ModelConfig, dtype: DType, vocab: &Vocab) -> HashMap<String, String> {
    let chars: Vec<String> = vocab.chars().iter().map(|c| c.to_string()).collect();
    let mut meta = HashMap::from([
        ("format".into(), FORMAT.into()),
        ("format_version".into(), FORMAT_VERSION.into()),
        ("cell".into(), config.cell.name().into()),
        ("vocab_size".into(), config.vocab_size.to_string()),
        ("hidden_size".into(), config.hidden.to_string()),
        ("num_layers".into(), config.layers.to_string()),
        ("dropout".into(), config.dropout.to_string()),
        ("dtype".into(), dtype.name().into()),
        ("vocab".into(), serde_json::Value::from(chars).to_string()),
    ]);
    // Only when set, so that the files of models without it are as before.
    if config.head_dropout != 0.0 {
        meta.insert("head_dropout".into(), config.head_dropout.to_string());
    }
    meta
}

/// The bytes of a model file for `tensors` (which must be the model's, with PyTorch names).
pub fn encode_model<T: Scalar>(
    config: &ModelConfig,
    vocab: &Vocab,
    tensors: &[(String, &Mat<T>)],
) -> Result<Vec<u8>, CharLmError> {
    encode_tensors(tensors, model_metadata(config, DType::of::<T>(), vocab))
}

/// The bytes of a training checkpoint: [`encode_model`] with the metadata `step` and, when the
/// run has validation text, `val_loss` (decimal strings).
pub fn encode_checkpoint<T: Scalar>(
    config: &ModelConfig,
    vocab: &Vocab,
    tensors: &[(String, &Mat<T>)],
    step: u64,
    val_loss: Option<f64>,
) -> Result<Vec<u8>, CharLmError> {
    let mut metadata = model_metadata(config, DType::of::<T>(), vocab);
    metadata.insert("step".into(), step.to_string());
    if let Some(v) = val_loss {
        metadata.insert("val_loss".into(), v.to_string());
    }
    encode_tensors(tensors, metadata)
}

/// Writes a model file atomically and returns the CRC-32 of the whole file.
pub fn save_model<T: Scalar>(
    path: &Path,
    config: &ModelConfig,
    vocab: &Vocab,
    tensors: &[(String, &Mat<T>)],
) -> Result<u32, CharLmError> {
    let bytes = encode_model(config, vocab, tensors)?;
    write_atomic(path, &bytes)?;
    Ok(crc32fast::hash(&bytes))
}

/// Reads a safetensors file's bytes ([`rnn_io::read_file_bytes`]): an input of unknown size (a
/// pipe, a device) may describe at most the largest model ([`crate::config::MAX_PARAMS`] f64
/// values), so an endless input is an error instead of exhausting memory.
pub fn read_file_bytes(path: &Path) -> Result<Vec<u8>, CharLmError> {
    Ok(rnn_io::read_file_bytes(path, crate::config::MAX_PARAMS as u64 * 8)?)
}

/// Reads any safetensors file of `F32` or `F64` tensors (all of one dtype), checking its CRC
/// when it has one and that every value is finite.
pub fn read_tensors(path: &Path) -> Result<TensorFile, CharLmError> {
    decode_tensors(path, &read_file_bytes(path)?)
}

/// [`read_tensors`] on bytes already read; `path` names them in errors.
pub fn decode_tensors(path: &Path, bytes: &[u8]) -> Result<TensorFile, CharLmError> {
    let bad = |m: String| CharLmError::checkpoint(path, m);
    let file = rnn_io::TensorFile::from_bytes(path, bytes)?;
    file.check_finite()?;
    let mut dtype = None;
    let mut tensors = BTreeMap::new();
    for (name, t) in &file.tensors {
        let dt = match t.dtype() {
            rnn_io::Dtype::F32 => DType::F32,
            rnn_io::Dtype::F64 => DType::F64,
            other => {
                return Err(bad(format!("tensor {name} has dtype {other}; a model's tensors are F32 or F64")))
            }
        };
        match dtype {
            None => dtype = Some(dt),
            Some(d) if d != dt => {
                return Err(bad(format!(
                    "tensor {name} is {dt} but others are {d}; save every tensor in one dtype"
                )))
            }
            _ => {}
        }
        if !matches!(t.shape.len(), 1 | 2) {
            return Err(bad(format!("tensor {name} has shape {:?}; expected 1 or 2 dimensions", t.shape)));
        }
        tensors.insert(name.clone(), LoadedTensor { shape: t.shape.clone(), values: file.matrix(name)? });
    }
    let dtype = dtype.ok_or_else(|| bad("the file holds no tensors".into()))?;
    Ok(TensorFile { dtype, metadata: file.metadata.into_iter().collect(), tensors })
}

/// Checks that `file` holds exactly the tensors of `config`, with their shapes.
pub fn check_tensors(path: &Path, file: &TensorFile, config: &ModelConfig) -> Result<(), CharLmError> {
    let bad = |m: String| CharLmError::checkpoint(path, m);
    let expected = config.tensor_shapes();
    let missing: Vec<&str> =
        expected.iter().filter(|(n, _)| !file.tensors.contains_key(n)).map(|(n, _)| n.as_str()).collect();
    if !missing.is_empty() {
        return Err(bad(format!(
            "missing tensor(s) {} for a {}-layer {} of hidden size {}; the file is from another model configuration",
            missing.join(", "),
            config.layers,
            config.cell,
            config.hidden
        )));
    }
    let extra: Vec<&str> =
        file.tensors.keys().filter(|n| !expected.iter().any(|(e, _)| e == *n)).map(|n| n.as_str()).collect();
    if !extra.is_empty() {
        return Err(bad(format!(
            "unexpected tensor(s) {} for a {}-layer {}; the file is from another model configuration",
            extra.join(", "),
            config.layers,
            config.cell
        )));
    }
    for (name, shape) in &expected {
        let got = &file.tensors[name].shape;
        if got != shape {
            return Err(bad(format!(
                "tensor {name} has shape {got:?}, the model ({} V={} H={} L={}) needs {shape:?}",
                config.cell, config.vocab_size, config.hidden, config.layers
            )));
        }
    }
    Ok(())
}

fn meta<'a>(path: &Path, m: &'a HashMap<String, String>, key: &str) -> Result<&'a str, CharLmError> {
    m.get(key)
        .map(String::as_str)
        .ok_or_else(|| CharLmError::checkpoint(path, format!("the metadata has no {key:?}")))
}

fn meta_usize(path: &Path, m: &HashMap<String, String>, key: &str) -> Result<usize, CharLmError> {
    let s = meta(path, m, key)?;
    s.parse().map_err(|_| CharLmError::checkpoint(path, format!("metadata {key:?} is {s:?}, not a count")))
}

/// Reads and checks a model file (see the module docs for what is checked).
pub fn load_model(path: &Path) -> Result<ModelFile, CharLmError> {
    decode_model(path, &read_file_bytes(path)?)
}

/// [`load_model`] on bytes already read.
pub fn decode_model(path: &Path, bytes: &[u8]) -> Result<ModelFile, CharLmError> {
    let bad = |m: String| CharLmError::checkpoint(path, m);
    let file = decode_tensors(path, bytes)?;
    let m = &file.metadata;
    if m.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(
            "has no charlm metadata (a weights-only file, e.g. saved from PyTorch, can start training with --init)"
                .into(),
        ));
    }
    let version = meta(path, m, "format_version")?;
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {version} is not supported (this charlm reads {FORMAT_VERSION})"
        )));
    }
    let cell_name = meta(path, m, "cell")?;
    let cell = CellKind::from_name(cell_name).ok_or_else(|| bad(format!("unknown cell {cell_name:?}")))?;
    let dtype_name = meta(path, m, "dtype")?;
    let dtype = DType::from_name(dtype_name).ok_or_else(|| bad(format!("unknown dtype {dtype_name:?}")))?;
    if dtype != file.dtype {
        return Err(bad(format!("the metadata says {dtype} but the tensors are {}", file.dtype)));
    }
    let dropout_s = meta(path, m, "dropout")?;
    let dropout: f64 =
        dropout_s.parse().map_err(|_| bad(format!("metadata dropout {dropout_s:?} is not a number")))?;
    // Written only when not zero (older files have none).
    let head_dropout: f64 = match m.get("head_dropout") {
        None => 0.0,
        Some(s) => s.parse().map_err(|_| bad(format!("metadata head_dropout {s:?} is not a number")))?,
    };
    let config = ModelConfig {
        cell,
        vocab_size: meta_usize(path, m, "vocab_size")?,
        hidden: meta_usize(path, m, "hidden_size")?,
        layers: meta_usize(path, m, "num_layers")?,
        dropout,
        head_dropout,
    };
    config.check().map_err(|e| bad(format!("bad configuration in the metadata: {e}")))?;
    let vocab_json = meta(path, m, "vocab")?;
    let vocab = parse_vocab(vocab_json).map_err(|e| bad(format!("bad vocabulary in the metadata: {e}")))?;
    if vocab.len() != config.vocab_size {
        return Err(bad(format!(
            "the vocabulary has {} characters but vocab_size is {}",
            vocab.len(),
            config.vocab_size
        )));
    }
    check_tensors(path, &file, &config)?;
    Ok(ModelFile { config, dtype, vocab, tensors: file })
}

/// The vocabulary of a model file's `vocab` metadata (a JSON array of one-character strings).
pub fn parse_vocab(json: &str) -> Result<Vocab, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let arr = v.as_array().ok_or("not a JSON array")?;
    let mut chars = Vec::with_capacity(arr.len());
    for item in arr {
        let s = item.as_str().ok_or("an entry is not a string")?;
        let mut it = s.chars();
        match (it.next(), it.next()) {
            (Some(c), None) => chars.push(c),
            _ => return Err(format!("entry {s:?} is not one character")),
        }
    }
    Vocab::from_chars(chars).map_err(|e| e.to_string())
}

/// Copies the tensors of `file` into a model's parameters (by name, converting to `T`),
/// checking that names and shapes agree one to one.
pub fn assign_tensors<T: Scalar>(
    path: &Path,
    file: &TensorFile,
    mut params: Vec<(String, &mut Mat<T>)>,
) -> Result<(), CharLmError> {
    let bad = |m: String| CharLmError::checkpoint(path, m);
    if params.len() != file.tensors.len() {
        let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        return Err(bad(format!(
            "the file has {} tensors but the model has {} ({}); the file is from another model configuration",
            file.tensors.len(),
            params.len(),
            names.join(", ")
        )));
    }
    for (name, dst) in params.iter_mut() {
        let src = file.tensors.get(name.as_str()).ok_or_else(|| {
            bad(format!("missing tensor {name}; the file is from another model configuration"))
        })?;
        if src.values.shape() != dst.shape() || src.shape != torch_shape(name, dst) {
            return Err(bad(format!(
                "tensor {name} has shape {:?}, the model needs {:?}",
                src.shape,
                torch_shape(name, dst)
            )));
        }
        for (d, &s) in dst.iter_mut().zip(src.values.iter()) {
            *d = T::cast(s);
        }
    }
    Ok(())
}

/// A plain list of named tensors: the parameters of a model described only by its
/// [`ModelConfig`] (for tools, tests and checking files without building the cells).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorList<T: Scalar> {
    /// `(name, matrix)` in PyTorch's `state_dict` order; biases are `n × 1`.
    pub tensors: Vec<(String, Mat<T>)>,
}

impl<T: Scalar> TensorList<T> {
    /// The tensors of `config`, initialised as PyTorch does, `U(-1/√H, 1/√H)` (the head too,
    /// for simplicity).
    pub fn init(config: &ModelConfig, rng: &mut rnn_tensor::Rng) -> Self {
        let init = rnn_tensor::init::Init::TorchRecurrent { hidden: config.hidden };
        let tensors = config
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let cols = if shape.len() == 2 { shape[1] } else { 1 };
                (name, init.matrix(shape[0], cols, rng))
            })
            .collect();
        Self { tensors }
    }
}

impl<T: Scalar> rnn_tensor::Parameters<T> for TensorList<T> {
    fn named_params(&self) -> Vec<(String, &Mat<T>)> {
        self.tensors.iter().map(|(n, m)| (n.clone(), m)).collect()
    }
    fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<T>)> {
        self.tensors.iter_mut().map(|(n, m)| (n.clone(), m)).collect()
    }
}
