//! A safetensors file: named tensors and string metadata, read with every check and written the
//! same way every time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rnn_tensor::{Bf16, Mat, Scalar};
use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use crate::fs::{read_file_bytes, write_atomic};
use crate::{Dtype, IoError, Tensor, TensorData};

/// The metadata key holding the CRC-32 of the data section (8 hex digits), which
/// [`TensorFile::to_bytes`] adds and [`TensorFile::from_bytes`] checks.
pub const DATA_CRC32: &str = "data_crc32";

/// The largest data section [`TensorFile::read`] accepts from an input whose size is not known
/// in advance (a pipe, a device): 16 GiB. A regular file is read whole.
pub const DEFAULT_MAX_DATA: u64 = 16 << 30;

/// The tensors of one safetensors file, by name, with its metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    /// The file the tensors were read from, which errors name (empty for tensors built in
    /// memory).
    pub path: PathBuf,
    /// The metadata, string to string (empty if the file has none). A file read back holds
    /// [`DATA_CRC32`] too.
    pub metadata: BTreeMap<String, String>,
    /// The tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The file's tensors of a dtype this crate does not read (`U8`, `BOOL`, `I32`, ...), by
    /// name, with the dtype as the header spells it: filled only by [`TensorFile::read_any`] and
    /// [`TensorFile::from_bytes_any`] (the strict readers refuse such a file). [`TensorFile::get`]
    /// of one of them is an error naming its dtype; [`TensorFile::to_bytes`] writes `tensors`
    /// only.
    pub unread: BTreeMap<String, String>,
}

impl TensorFile {
    /// An empty file (no tensors, no metadata).
    pub fn new() -> Self {
        Self::default()
    }

    /// The file with `tensor` added as `name` (replacing one of that name).
    pub fn with_tensor(mut self, name: impl Into<String>, tensor: Tensor) -> Self {
        self.tensors.insert(name.into(), tensor);
        self
    }

    /// The file with the metadata `key` set to `value`.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Reads and checks a file (see [`TensorFile::from_bytes`]); a missing or unreadable file is
    /// an error naming it.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, IoError> {
        Self::read_limited(path, DEFAULT_MAX_DATA)
    }

    /// [`TensorFile::read`], refusing an input of unknown size (a pipe, a device) whose header
    /// describes more than `max_data` bytes of tensors.
    pub fn read_limited(path: impl AsRef<Path>, max_data: u64) -> Result<Self, IoError> {
        let path = path.as_ref();
        Self::from_bytes(path, &read_file_bytes(path, max_data)?)
    }

    /// [`TensorFile::read`], keeping the tensors of a dtype it does not read out of `tensors`
    /// instead of refusing the file (see [`TensorFile::from_bytes_any`]).
    pub fn read_any(path: impl AsRef<Path>) -> Result<Self, IoError> {
        let path = path.as_ref();
        Self::from_bytes_any(path, &read_file_bytes(path, DEFAULT_MAX_DATA)?)
    }

    /// Decodes the bytes of a safetensors file; `path` names them in errors. Checked: the format
    /// (a truncated or damaged file is an error, never a panic, and its header sizes allocate
    /// nothing beyond the bytes given), the CRC-32 in the metadata when there is one, and every
    /// tensor's dtype (`F32`, `F64` or `I64`, and `F16` or `BF16` read as `F32`) and size against
    /// its shape.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Self, IoError> {
        Self::decode(path.as_ref(), bytes, true)
    }

    /// [`TensorFile::from_bytes`], except that a tensor of another dtype (a quantized layer's
    /// `I8`, a mask's `BOOL` beside the tensors wanted, in a whole model's `state_dict`) is not
    /// an error: its name and dtype go into [`TensorFile::unread`], and only asking for it
    /// ([`TensorFile::get`] and the readers built on it) is. The format and the CRC-32 are
    /// checked as there.
    pub fn from_bytes_any(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Self, IoError> {
        Self::decode(path.as_ref(), bytes, false)
    }

    /// [`TensorFile::from_bytes`] (`strict`) or [`TensorFile::from_bytes_any`].
    fn decode(path: &Path, bytes: &[u8], strict: bool) -> Result<Self, IoError> {
        let bad = |m: String| IoError::read(path, m);
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file (truncated or corrupted?): {e}")))?;
        let (header_len, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file (truncated or corrupted?): {e}")))?;
        let metadata: BTreeMap<String, String> =
            meta.metadata().clone().unwrap_or_default().into_iter().collect();
        if let Some(want) = metadata.get(DATA_CRC32) {
            let data = bytes.get(8 + header_len..).unwrap_or_default();
            let got = format!("{:08x}", crc32fast::hash(data));
            if *want != got {
                return Err(bad(format!(
                    "the tensor data is corrupted (CRC-32 {got}, the header says {want}); use another copy of the file"
                )));
            }
        }
        let (mut tensors, mut unread) = (BTreeMap::new(), BTreeMap::new());
        for (name, view) in st.tensors() {
            let (data, size) = match view.dtype() {
                StDtype::F32 => (TensorData::from_le_bytes(Dtype::F32, view.data()), 4),
                StDtype::F64 => (TensorData::from_le_bytes(Dtype::F64, view.data()), 8),
                StDtype::I64 => (TensorData::from_le_bytes(Dtype::I64, view.data()), 8),
                // Half precision widened to f32: exact, every value of either is an f32.
                StDtype::F16 => (TensorData::F32(halves(view.data()).map(f16_to_f32).collect()), 2),
                StDtype::BF16 => {
                    (TensorData::F32(halves(view.data()).map(|b| Bf16(b).to_f32()).collect()), 2)
                }
                other if strict => return Err(bad(unread_dtype(&name, &format!("{other:?}")))),
                // Its size against its shape is checked by the format's own validation.
                other => {
                    unread.insert(name, format!("{other:?}"));
                    continue;
                }
            };
            let tensor = Tensor::new(view.shape().to_vec(), data);
            if tensor.shape_len() != Some(tensor.len()) || view.data().len() != tensor.len() * size {
                return Err(bad(format!(
                    "tensor {name} has shape {:?} but {} bytes of {:?}; the file is corrupted",
                    tensor.shape,
                    view.data().len(),
                    view.dtype()
                )));
            }
            tensors.insert(name, tensor);
        }
        Ok(Self { path: path.to_owned(), metadata, tensors, unread })
    }

    /// The bytes of the file: the tensors in name order (the [`unread`](TensorFile::unread) ones
    /// left out: their values were not kept), the metadata sorted and with
    /// [`DATA_CRC32`] set, so the same tensors always give the same bytes. The layout is the
    /// format's: an 8-byte little-endian header length, the JSON header padded with spaces to a
    /// multiple of 8, then the data. Errors: a tensor whose values do not fill its shape, or one
    /// named `__metadata__`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IoError> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, t) in &self.tensors {
            let encode = |message: String| IoError::Encode { name: name.clone(), message };
            if name == "__metadata__" {
                return Err(encode("the name is reserved for the metadata; rename the tensor".into()));
            }
            if t.shape_len() != Some(t.len()) {
                return Err(encode(format!("shape {:?} does not hold its {} values", t.shape, t.len())));
            }
            let start = data.len();
            data.extend_from_slice(&t.data.to_le_bytes());
            header.insert(
                name.clone(),
                serde_json::json!({ "dtype": t.dtype().name(), "shape": t.shape, "data_offsets": [start, data.len()] }),
            );
        }
        let mut meta: serde_json::Map<String, serde_json::Value> =
            self.metadata.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect();
        meta.insert(DATA_CRC32.into(), format!("{:08x}", crc32fast::hash(&data)).into());
        header.insert("__metadata__".into(), serde_json::Value::Object(meta));
        let mut head = serde_json::Value::Object(header).to_string().into_bytes();
        head.resize(head.len().next_multiple_of(8), b' ');
        let mut out = Vec::with_capacity(8 + head.len() + data.len());
        out.extend_from_slice(&(head.len() as u64).to_le_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Writes the file to `path` atomically ([`write_atomic`]).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), IoError> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }

    /// An [`IoError::Read`] naming this file, for checks of the caller's own.
    pub fn error(&self, message: impl Into<String>) -> IoError {
        IoError::read(&self.path, message)
    }

    /// The names of every tensor of the file, read or [`unread`](TensorFile::unread), in order.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> =
            self.tensors.keys().chain(self.unread.keys()).map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The tensor `name`; its absence is an error listing the names there are, and so is a
    /// tensor of a dtype not read (naming the dtype).
    pub fn get(&self, name: &str) -> Result<&Tensor, IoError> {
        if let Some(dtype) = self.unread.get(name) {
            return Err(self.error(unread_dtype(name, dtype)));
        }
        self.tensors.get(name).ok_or_else(|| {
            let names = self.names();
            let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
            self.error(format!("has no tensor {name} (its tensors: {names})"))
        })
    }

    /// The values of float tensor `name` (`F32` or `F64`), converted to `T` (exact from `F32`
    /// to either type); an `I64` tensor is an error.
    pub fn floats<T: Scalar>(&self, name: &str) -> Result<Vec<T>, IoError> {
        match &self.get(name)?.data {
            TensorData::F32(v) => Ok(v.iter().map(|&x| T::cast(x as f64)).collect()),
            TensorData::F64(v) => Ok(v.iter().map(|&x| T::cast(x)).collect()),
            TensorData::I64(_) => {
                Err(self.error(format!("tensor {name} is I64; expected floats (F32 or F64)")))
            }
        }
    }

    /// The values of integer tensor `name` (`I64`); a float tensor is an error.
    pub fn ints(&self, name: &str) -> Result<&[i64], IoError> {
        match &self.get(name)?.data {
            TensorData::I64(v) => Ok(v),
            other => Err(self.error(format!("tensor {name} is {}; expected I64", other.dtype()))),
        }
    }

    /// Float tensor `name` as a column-major matrix: `[r, c]` is `r × c`, `[n]` is `n × 1`;
    /// other ranks are an error.
    pub fn matrix<T: Scalar>(&self, name: &str) -> Result<Mat<T>, IoError> {
        let shape = &self.get(name)?.shape;
        let (r, c) = match shape[..] {
            [n] => (n, 1),
            [r, c] => (r, c),
            _ => {
                return Err(
                    self.error(format!("tensor {name} has shape {shape:?}; expected 1 or 2 dimensions"))
                )
            }
        };
        Ok(Mat::from_row_slice(r, c, &self.floats::<T>(name)?))
    }

    /// Checks that every float value is finite; the first that is not is an error naming its
    /// tensor and flat index.
    pub fn check_finite(&self) -> Result<(), IoError> {
        self.tensors.keys().try_for_each(|name| self.check_finite_tensor(name))
    }

    /// [`TensorFile::check_finite`] for tensor `name` alone (an absent tensor is an error, as in
    /// [`TensorFile::get`]).
    pub fn check_finite_tensor(&self, name: &str) -> Result<(), IoError> {
        let first = match &self.get(name)?.data {
            TensorData::F32(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i] as f64)),
            TensorData::F64(v) => v.iter().position(|x| !x.is_finite()).map(|i| (i, v[i])),
            TensorData::I64(_) => None,
        };
        match first {
            Some((i, v)) => {
                Err(self.error(format!("tensor {name} holds a non-finite value ({v}) at flat index {i}")))
            }
            None => Ok(()),
        }
    }
}

/// The error for tensor `name` of a dtype this crate does not read.
fn unread_dtype(name: &str, dtype: &str) -> String {
    format!(
        "tensor {name} has dtype {dtype}, which is not read here (F32, F64, I64, and F16 or BF16 as F32); convert it before saving"
    )
}

/// The little-endian 16-bit values of `b` (a trailing odd byte is left out; the size check
/// that follows catches it).
fn halves(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// An IEEE 754 binary16 value (`torch.float16`) as the `f32` of the same value: normal numbers
/// move their exponent from bias 15 to bias 127, subnormals (`m·2⁻²⁴`) become normal `f32`s,
/// infinities stay infinite and NaNs keep their payload's top bits.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let (exp, man) = (u32::from(h >> 10) & 0x1f, u32::from(h) & 0x3ff);
    match exp {
        // ±0 and subnormals: ±m·2⁻²⁴, exact in f32 (m < 2¹⁰; -0 stays -0).
        0 => {
            let v = man as f32 * 2f32.powi(-24);
            if sign == 0 {
                v
            } else {
                -v
            }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | man << 13),
        _ => f32::from_bits(sign | (exp + 127 - 15) << 23 | man << 13),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every binary16 value against its definition, computed in f64: `(-1)^s·2^(e-15)·(1 + m/2¹⁰)`,
    /// `(-1)^s·2⁻¹⁴·m/2¹⁰` for `e = 0`, infinities and NaNs for `e = 31`; signed zeros by their bits.
    #[test]
    fn every_f16_widens_to_its_value() {
        for h in 0..=u16::MAX {
            let (s, e, m) = (h >> 15, i32::from((h >> 10) & 0x1f), f64::from(h & 0x3ff));
            let sign: f64 = if s == 1 { -1.0 } else { 1.0 };
            let got = f16_to_f32(h);
            match e {
                31 if m == 0.0 => assert_eq!(f64::from(got), sign * f64::INFINITY, "{h:#06x}"),
                31 => assert!(got.is_nan(), "{h:#06x}"),
                0 => {
                    assert_eq!(f64::from(got), sign * m * 2f64.powi(-24), "{h:#06x}");
                    assert_eq!(got.is_sign_negative(), s == 1, "{h:#06x}: the sign of zero");
                }
                _ => assert_eq!(f64::from(got), sign * (1.0 + m / 1024.0) * 2f64.powi(e - 15), "{h:#06x}"),
            }
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
    }

    #[test]
    fn bf16_is_the_top_half_of_an_f32() {
        for b in 0..=u16::MAX {
            let want = f32::from_bits(u32::from(b) << 16);
            assert_eq!(Bf16(b).to_f32().to_bits(), want.to_bits());
        }
        assert_eq!(Bf16(0x3f80).to_f32(), 1.0);
        assert_eq!(Bf16(0xc040).to_f32(), -3.0);
    }
}
