//! The model's configuration: cell type, sizes, precision, and the PyTorch tensor layout they
//! imply.

use std::fmt;

use crate::CharLmError;

/// Upper bound on `--hidden`: far above any model this CPU library trains, low enough that a
/// typo (`--hidden 2560000`) is an error instead of an allocation failure.
pub const MAX_HIDDEN: usize = 16_384;
/// Upper bound on `--layers`.
pub const MAX_LAYERS: usize = 64;
/// Upper bound on the number of scalars of a model (2^31, 8 GiB in f32).
pub const MAX_PARAMS: usize = 1 << 31;

/// The recurrent cell of every layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellKind {
    /// `torch.nn.LSTM`: 4 gates (i, f, g, o).
    Lstm,
    /// `torch.nn.GRU`: 3 gates (r, z, n).
    Gru,
    /// `torch.nn.RNN` with tanh: 1 gate.
    Rnn,
}

impl CellKind {
    /// `G`, the number of gate blocks in `weight_ih` (`[G·H, I]`).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
            CellKind::Rnn => 1,
        }
    }

    /// `"lstm"`, `"gru"` or `"rnn"`, as on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
            CellKind::Rnn => "rnn",
        }
    }

    /// Parses [`CellKind::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "lstm" => Some(CellKind::Lstm),
            "gru" => Some(CellKind::Gru),
            "rnn" => Some(CellKind::Rnn),
            _ => None,
        }
    }
}

impl fmt::Display for CellKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The floating-point precision of a model and its checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// `f32` (safetensors `F32`), the default.
    F32,
    /// `f64` (safetensors `F64`).
    F64,
}

impl DType {
    /// `"f32"` or `"f64"`, as [`rnn_tensor::Scalar::NAME`].
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        }
    }

    /// Parses [`DType::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(DType::F32),
            "f64" => Some(DType::F64),
            _ => None,
        }
    }

    /// The type of scalar `T`.
    pub fn of<T: rnn_tensor::Scalar>() -> Self {
        if T::NAME == "f64" {
            DType::F64
        } else {
            DType::F32
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The model: `rnn = nn.{LSTM,GRU,RNN}(V, H, L, batch_first=True, dropout=p)` over one-hot
/// characters, then `head = nn.Linear(H, V)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// The cell of every layer. Default LSTM.
    pub cell: CellKind,
    /// `V`, the vocabulary size (the input and output size).
    pub vocab_size: usize,
    /// `H`, the hidden size of every layer. Default 256.
    pub hidden: usize,
    /// `L`, the number of layers. Default 2.
    pub layers: usize,
    /// Dropout between layers during training, in `[0, 1)`. Default 0.
    pub dropout: f64,
    /// Dropout on the last layer's outputs before the head during training, in `[0, 1)`, as
    /// char-rnn applies its dropout (PyTorch's `nn.LSTM(dropout=p)` does not; `nn.Dropout`
    /// before the `nn.Linear` head does). Default 0.
    pub head_dropout: f64,
}

impl ModelConfig {
    /// A 2×256 LSTM without dropout over a vocabulary of `vocab_size`.
    pub fn new(vocab_size: usize) -> Self {
        Self { cell: CellKind::Lstm, vocab_size, hidden: 256, layers: 2, dropout: 0.0, head_dropout: 0.0 }
    }

    /// Sets the cell.
    pub fn with_cell(mut self, cell: CellKind) -> Self {
        self.cell = cell;
        self
    }

    /// Sets the hidden size.
    pub fn with_hidden(mut self, hidden: usize) -> Self {
        self.hidden = hidden;
        self
    }

    /// Sets the number of layers.
    pub fn with_layers(mut self, layers: usize) -> Self {
        self.layers = layers;
        self
    }

    /// Sets the dropout between layers.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets the dropout before the head.
    pub fn with_head_dropout(mut self, p: f64) -> Self {
        self.head_dropout = p;
        self
    }

    /// Checks every size and the dropout.
    pub fn check(&self) -> Result<(), CharLmError> {
        if self.vocab_size == 0 {
            return Err(CharLmError::arg("vocabulary", "the vocabulary is empty"));
        }
        if !(1..=MAX_HIDDEN).contains(&self.hidden) {
            return Err(CharLmError::arg(
                "--hidden",
                format!("must be in 1..={MAX_HIDDEN}, got {}", self.hidden),
            ));
        }
        if !(1..=MAX_LAYERS).contains(&self.layers) {
            return Err(CharLmError::arg(
                "--layers",
                format!("must be in 1..={MAX_LAYERS}, got {}", self.layers),
            ));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(CharLmError::arg("--dropout", format!("must be in [0, 1), got {}", self.dropout)));
        }
        if !(self.head_dropout.is_finite() && (0.0..1.0).contains(&self.head_dropout)) {
            return Err(CharLmError::arg(
                "--head-dropout",
                format!("must be in [0, 1), got {}", self.head_dropout),
            ));
        }
        let n = self.num_params();
        if n > MAX_PARAMS {
            return Err(CharLmError::arg(
                "--hidden/--layers",
                format!(
                    "the model would have {n} parameters, more than {MAX_PARAMS}; choose a smaller model"
                ),
            ));
        }
        Ok(())
    }

    /// The tensors of the PyTorch `state_dict`, in its order, with PyTorch shapes:
    /// `rnn.weight_ih_l{k}` `[G·H, I_k]` (`I_0 = V`, else `H`), `rnn.weight_hh_l{k}` `[G·H, H]`,
    /// `rnn.bias_ih_l{k}` and `rnn.bias_hh_l{k}` `[G·H]`, then `head.weight` `[V, H]` and
    /// `head.bias` `[V]`.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (v, h, g) = (self.vocab_size, self.hidden, self.cell.gates());
        let mut out = Vec::with_capacity(4 * self.layers + 2);
        for k in 0..self.layers {
            let input = if k == 0 { v } else { h };
            out.push((format!("rnn.weight_ih_l{k}"), vec![g * h, input]));
            out.push((format!("rnn.weight_hh_l{k}"), vec![g * h, h]));
            out.push((format!("rnn.bias_ih_l{k}"), vec![g * h]));
            out.push((format!("rnn.bias_hh_l{k}"), vec![g * h]));
        }
        out.push(("head.weight".into(), vec![v, h]));
        out.push(("head.bias".into(), vec![v]));
        out
    }

    /// The number of scalars (saturating, so absurd sizes compare above [`MAX_PARAMS`]).
    pub fn num_params(&self) -> usize {
        let (v, h, g) = (self.vocab_size, self.hidden, self.cell.gates());
        let layer = |i: usize| g.saturating_mul(h).saturating_mul(i.saturating_add(h).saturating_add(2));
        let rnn = layer(v).saturating_add(layer(h).saturating_mul(self.layers.saturating_sub(1)));
        rnn.saturating_add(v.saturating_mul(h.saturating_add(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_follow_pytorch_and_count_parameters() {
        let c = ModelConfig::new(65);
        let shapes = c.tensor_shapes();
        assert_eq!(shapes.len(), 10);
        assert_eq!(shapes[0], ("rnn.weight_ih_l0".to_string(), vec![1024, 65]));
        assert_eq!(shapes[4], ("rnn.weight_ih_l1".to_string(), vec![1024, 256]));
        assert_eq!(shapes[7], ("rnn.bias_hh_l1".to_string(), vec![1024]));
        assert_eq!(shapes[9], ("head.bias".to_string(), vec![65]));
        let total: usize = shapes.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        assert_eq!(c.num_params(), total);
        // sum(p.numel() for p in nn.LSTM(65, 256, 2).parameters()) + 256*65 + 65
        assert_eq!(total, 330_752 + 526_336 + 16_705);
        let g = ModelConfig::new(10).with_cell(CellKind::Gru).with_hidden(8).with_layers(1);
        assert_eq!(g.tensor_shapes()[1].1, vec![24, 8]);
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(ModelConfig::new(65).check().is_ok());
        for (c, flag) in [
            (ModelConfig::new(65).with_hidden(0), "--hidden"),
            (ModelConfig::new(65).with_layers(0), "--layers"),
            (ModelConfig::new(65).with_dropout(f64::NAN), "--dropout"),
            (ModelConfig::new(65).with_dropout(1.0), "--dropout"),
            (ModelConfig::new(65).with_head_dropout(-0.1), "--head-dropout"),
            (ModelConfig::new(65).with_head_dropout(f64::INFINITY), "--head-dropout"),
            (ModelConfig::new(0), "vocabulary"),
            (ModelConfig::new(usize::MAX / 2).with_hidden(MAX_HIDDEN), "--hidden/--layers"),
        ] {
            let e = c.check().unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid {flag}:")), "{e}");
        }
    }
}
