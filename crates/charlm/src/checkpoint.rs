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
//! | `dtype` | `f32` or `f64` |
//! | `vocab` | a JSON array of one-character strings, in index order |
//! | `data_crc32` | 8 hex digits: CRC-32 (zlib's) of the data section, every byte after the header |
//!
//! Loading checks everything: that the file parses (truncation and header damage), the
//! metadata, the vocabulary, the CRC (damage to the tensor bytes), every tensor's name, dtype
//! and shape against the configuration, and that every value is finite. Each failure is one
//! [`CharLmError::Checkpoint`] line.
//!
//! Weights-only files (from PyTorch's `safetensors.torch.save_file`) have no metadata; they
//! are read by [`read_tensors`] for `--init`, checked against the model being trained.
//!
//! ## Atomic writes
//! [`write_atomic`] writes a temporary file in the target's directory, flushes it to disk,
//! renames it over the target and flushes the directory: a reader (or a run killed at any
//! instant) sees the old file or the new one, never a mix.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use rnn_data::Vocab;
use rnn_tensor::{Mat, Scalar};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

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

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CharLmError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name =
        path.file_name().ok_or_else(|| CharLmError::write(path, std::io::Error::other("not a file name")))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(CharLmError::write(path, e));
    }
    Ok(())
}

/// Flushes a directory's entries (a rename) to disk.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The bytes of one tensor in the file's layout (row-major, little-endian).
fn tensor_bytes<T: Scalar>(m: &Mat<T>) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() * std::mem::size_of::<T>());
    // Row-major: row i holds m[(i, 0)], m[(i, 1)], ...
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            match DType::of::<T>() {
                DType::F32 => out.extend_from_slice(&(m[(i, j)].to_f64() as f32).to_le_bytes()),
                DType::F64 => out.extend_from_slice(&m[(i, j)].to_f64().to_le_bytes()),
            }
        }
    }
    out
}

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
/// `data_crc32`. Returns the file's bytes.
///
/// The file is written here rather than by `safetensors::serialize`, whose metadata map is
/// emitted in hash order: ours is sorted (`serde_json`'s map), so the same model always gives
/// the same bytes. The layout is the format's: an 8-byte little-endian header length, the JSON
/// header padded with spaces to a multiple of 8, then the tensors' data in name order.
pub fn encode_tensors<T: Scalar>(
    tensors: &[(String, &Mat<T>)],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, CharLmError> {
    let dtype = match DType::of::<T>() {
        DType::F32 => "F32",
        DType::F64 => "F64",
    };
    let mut sorted: BTreeMap<&str, &Mat<T>> = BTreeMap::new();
    for (name, m) in tensors {
        if sorted.insert(name.as_str(), m).is_some() {
            return Err(CharLmError::arg("tensor list", format!("the name {name} appears twice")));
        }
    }
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, m) in &sorted {
        let start = data.len();
        data.extend_from_slice(&tensor_bytes(m));
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": dtype, "shape": torch_shape(name, m), "data_offsets": [start, data.len()] }),
        );
    }
    let mut meta: serde_json::Map<String, serde_json::Value> =
        metadata.into_iter().map(|(k, v)| (k, serde_json::Value::from(v))).collect();
    meta.insert("data_crc32".into(), format!("{:08x}", crc32fast::hash(&data)).into());
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    head.resize(head.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + head.len() + data.len());
    out.extend_from_slice(&(head.len() as u64).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&data);
    Ok(out)
}

/// The metadata of a model file (without `data_crc32`, which [`encode_tensors`] adds).
pub fn model_metadata(config: &ModelConfig, dtype: DType, vocab: &Vocab) -> HashMap<String, String> {
    let chars: Vec<String> = vocab.chars().iter().map(|c| c.to_string()).collect();
    HashMap::from([
        ("format".into(), FORMAT.into()),
        ("format_version".into(), FORMAT_VERSION.into()),
        ("cell".into(), config.cell.name().into()),
        ("vocab_size".into(), config.vocab_size.to_string()),
        ("hidden_size".into(), config.hidden.to_string()),
        ("num_layers".into(), config.layers.to_string()),
        ("dropout".into(), config.dropout.to_string()),
        ("dtype".into(), dtype.name().into()),
        ("vocab".into(), serde_json::Value::from(chars).to_string()),
    ])
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

/// The largest header a safetensors file may have (the format's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads a safetensors file's bytes. A regular file is read whole (its size is known); anything
/// else (a FIFO, a device such as `/dev/zero`) is read as far as its header says the file goes,
/// within the format's header limit and the largest model ([`crate::config::MAX_PARAMS`] f64
/// values), so an endless input is an error instead of exhausting memory.
pub fn read_file_bytes(path: &Path) -> Result<Vec<u8>, CharLmError> {
    use std::io::Read;
    let bad = |m: String| CharLmError::checkpoint(path, m);
    let cannot = |e: std::io::Error| bad(format!("cannot read it: {e}"));
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    let meta = f.metadata().map_err(cannot)?;
    if meta.is_file() || meta.is_dir() {
        return std::fs::read(path).map_err(cannot);
    }
    let invalid =
        |what: String| bad(format!("not a valid safetensors file (truncated or corrupted?): {what}"));
    let mut len8 = [0u8; 8];
    f.read_exact(&mut len8).map_err(|_| invalid("it ends within the first 8 bytes".into()))?;
    let n = u64::from_le_bytes(len8);
    if n > MAX_HEADER_BYTES {
        return Err(invalid(format!("its header would be {n} bytes, more than {MAX_HEADER_BYTES}")));
    }
    let mut bytes = len8.to_vec();
    (&mut f).take(n).read_to_end(&mut bytes).map_err(cannot)?;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..])
        .map_err(|_| invalid("its header is not JSON (or it ends within it)".into()))?;
    let data_len = header
        .as_object()
        .map(|m| m.values().filter_map(|t| t["data_offsets"][1].as_u64()).max().unwrap_or(0))
        .ok_or_else(|| invalid("its header is not a JSON object".into()))?;
    let max_data = crate::config::MAX_PARAMS as u64 * 8;
    if data_len > max_data {
        return Err(invalid(format!(
            "its header describes {data_len} bytes of tensors, more than {max_data}"
        )));
    }
    (&mut f).take(data_len).read_to_end(&mut bytes).map_err(cannot)?;
    let mut extra = [0u8; 1];
    if f.read(&mut extra).map_err(cannot)? > 0 {
        return Err(invalid("it goes on past the tensors its header describes".into()));
    }
    Ok(bytes)
}

/// Reads any safetensors file of `F32` or `F64` tensors (all of one dtype), checking its CRC
/// when it has one and that every value is finite.
pub fn read_tensors(path: &Path) -> Result<TensorFile, CharLmError> {
    decode_tensors(path, &read_file_bytes(path)?)
}

/// [`read_tensors`] on bytes already read; `path` names them in errors.
pub fn decode_tensors(path: &Path, bytes: &[u8]) -> Result<TensorFile, CharLmError> {
    let bad = |m: String| CharLmError::checkpoint(path, m);
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(format!("not a valid safetensors file (truncated or corrupted?): {e}")))?;
    let (header_len, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    if let Some(want) = metadata.get("data_crc32") {
        let got = format!("{:08x}", crc32fast::hash(&bytes[8 + header_len..]));
        if *want != got {
            return Err(bad(format!(
                "the tensor data is corrupted (CRC-32 {got}, the header says {want}); use another checkpoint"
            )));
        }
    }
    let mut dtype = None;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let dt = match view.dtype() {
            Dtype::F32 => DType::F32,
            Dtype::F64 => DType::F64,
            other => {
                return Err(bad(format!("tensor {name} has dtype {other:?}; only F32 and F64 are supported")))
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
        tensors.insert(name.clone(), convert(&name, &view).map_err(bad)?);
    }
    let dtype = dtype.ok_or_else(|| bad("the file holds no tensors".into()))?;
    Ok(TensorFile { dtype, metadata, tensors })
}

/// Row-major file data to a column-major `f64` matrix, rejecting non-finite values.
fn convert(name: &str, view: &TensorView<'_>) -> Result<LoadedTensor, String> {
    let shape = view.shape().to_vec();
    let (r, c) = match shape.as_slice() {
        [n] => (*n, 1),
        [r, c] => (*r, *c),
        _ => return Err(format!("tensor {name} has shape {shape:?}; expected 1 or 2 dimensions")),
    };
    let data = view.data();
    let values: Vec<f64> = match view.dtype() {
        Dtype::F32 => {
            data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect()
        }
        _ => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(format!("tensor {name} holds a non-finite value ({}) at flat index {i}", values[i]));
    }
    Ok(LoadedTensor { shape, values: Mat::from_row_slice(r, c, &values) })
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
    let config = ModelConfig {
        cell,
        vocab_size: meta_usize(path, m, "vocab_size")?,
        hidden: meta_usize(path, m, "hidden_size")?,
        layers: meta_usize(path, m, "num_layers")?,
        dropout,
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
