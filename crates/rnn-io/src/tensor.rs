//! One named tensor's shape and values, in one of the dtypes this crate reads and writes.

use rnn_tensor::{Mat, Scalar};

/// The element types of a tensor: PyTorch's `float32`, `float64` and `int64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// `float32`, 4 bytes.
    F32,
    /// `float64`, 8 bytes.
    F64,
    /// `int64`, 8 bytes.
    I64,
}

impl Dtype {
    /// The name in a safetensors header: `F32`, `F64` or `I64`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }

    /// The float dtype of scalar `T` (`F32` or `F64`).
    pub fn of<T: Scalar>() -> Self {
        if T::NAME == "f64" {
            Dtype::F64
        } else {
            Dtype::F32
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tensor's values, flat and row-major (the last index fastest, as PyTorch stores them), in
/// their own type.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `float32` values.
    F32(Vec<f32>),
    /// `float64` values.
    F64(Vec<f64>),
    /// `int64` values.
    I64(Vec<i64>),
}

impl TensorData {
    /// The dtype of the values.
    pub fn dtype(&self) -> Dtype {
        match self {
            TensorData::F32(_) => Dtype::F32,
            TensorData::F64(_) => Dtype::F64,
            TensorData::I64(_) => Dtype::I64,
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as little-endian bytes (the file's layout).
    pub(crate) fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Values of `dtype` from little-endian bytes (a whole number of values; a partial one at the
    /// end is ignored, the caller checks the length).
    pub(crate) fn from_le_bytes(dtype: Dtype, b: &[u8]) -> Self {
        let eight = |c: &[u8]| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
        match dtype {
            Dtype::F32 => TensorData::F32(
                b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            ),
            Dtype::F64 => TensorData::F64(b.chunks_exact(8).map(|c| f64::from_le_bytes(eight(c))).collect()),
            Dtype::I64 => TensorData::I64(b.chunks_exact(8).map(|c| i64::from_le_bytes(eight(c))).collect()),
        }
    }
}

/// One tensor: its shape and its row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The shape, PyTorch's (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// The values, row-major; their count must be the product of the shape (checked when the
    /// tensor is written).
    pub data: TensorData,
}

impl Tensor {
    /// A tensor of `shape` holding `data` (row-major).
    pub fn new(shape: Vec<usize>, data: TensorData) -> Self {
        Self { shape, data }
    }

    /// A 1-D tensor `[n]` of floats of `T`'s dtype.
    pub fn vector<T: Scalar>(values: &[T]) -> Self {
        Self { shape: vec![values.len()], data: floats_of::<T>(values.iter().copied()) }
    }

    /// A 2-D tensor `[rows, cols]` of `T`'s dtype from a (column-major) matrix, converted to the
    /// file's row-major order. [`Tensor::with_shape`] gives it another shape of the same size
    /// (`[rows]` for a bias held as a column).
    pub fn from_mat<T: Scalar>(m: &Mat<T>) -> Self {
        let row_major = (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)]));
        Self { shape: vec![m.nrows(), m.ncols()], data: floats_of::<T>(row_major) }
    }

    /// The same values under another shape (its product is checked when the tensor is written).
    pub fn with_shape(mut self, shape: Vec<usize>) -> Self {
        self.shape = shape;
        self
    }

    /// The dtype of the values.
    pub fn dtype(&self) -> Dtype {
        self.data.dtype()
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no values.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The number of values the shape holds, `None` if it overflows.
    pub fn shape_len(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }
}

/// Floats of `T`'s dtype.
fn floats_of<T: Scalar>(values: impl Iterator<Item = T>) -> TensorData {
    match Dtype::of::<T>() {
        Dtype::F64 => TensorData::F64(values.map(|v| v.to_f64()).collect()),
        _ => TensorData::F32(values.map(|v| v.to_f64() as f32).collect()),
    }
}
