//! Any PyTorch recurrent module from its `state_dict`: `nn.LSTM`, `nn.GRU` or `nn.RNN`, any
//! number of layers, one or two directions, with or without biases, built from the tensors as
//! they are (PyTorch's names, shapes and row-major values).
//!
//! The module's kind, layers, directions, projection and biases are read off the names and
//! shapes: `weight_hh_l0` is `[G·H, H]`, so `G` gives the cell (4 LSTM, 3 GRU, 1 RNN) and `H` the
//! hidden size; with a `weight_hr_l0` (`[P, H]`, an LSTM's `proj_size = P`) it is `[4H, P]`;
//! `weight_ih_l0` is `[G·H, I]`; the highest `_l{k}` gives the layers; a `_reverse` tensor makes
//! the module bidirectional. The vanilla RNN's nonlinearity is not in a `state_dict` and is
//! given. A cell's `state_dict` (`nn.LSTMCell`, `nn.GRUCell`, `nn.RNNCell`: `weight_ih`,
//! `weight_hh`, `bias_ih`, `bias_hh`) loads as the one-layer module it equals when applied at every
//! step. Anything that does not fit (an unknown name, a missing tensor, a shape that disagrees
//! with the others) is an error naming the tensor and both shapes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use rnn_tensor::activation::Activation;
use rnn_tensor::{Mat, Scalar};

use crate::{
    Bidirectional, Cell, CellError, GruCell, Layer, LstmCell, Recurrence, RecurrentParams, RnnCell, Stack,
};

/// One tensor of a `state_dict`: its shape and its values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchTensor<T> {
    /// The shape, as PyTorch gives it.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<T>,
}

/// A recurrent module loaded from PyTorch: a stack of one of the three cells, one direction or
/// two. Use [`with_torch_module!`](crate::with_torch_module) to run the same code on whichever it
/// is.
#[derive(Clone, Debug, PartialEq)]
pub enum TorchRecurrent<T: Scalar> {
    /// `nn.LSTM`.
    Lstm(Stack<Layer<T, LstmCell>>),
    /// `nn.GRU`.
    Gru(Stack<Layer<T, GruCell>>),
    /// `nn.RNN`.
    Rnn(Stack<Layer<T, RnnCell>>),
    /// `nn.LSTM(bidirectional=True)`.
    BiLstm(Stack<Bidirectional<Layer<T, LstmCell>>>),
    /// `nn.GRU(bidirectional=True)`.
    BiGru(Stack<Bidirectional<Layer<T, GruCell>>>),
    /// `nn.RNN(bidirectional=True)`.
    BiRnn(Stack<Bidirectional<Layer<T, RnnCell>>>),
}

/// Runs `$body` with `$m` bound to the stack inside a [`TorchRecurrent`], whichever it is.
#[macro_export]
macro_rules! with_torch_module {
    ($module:expr, |$m:ident| $body:expr) => {
        match $module {
            $crate::torch::TorchRecurrent::Lstm($m) => $body,
            $crate::torch::TorchRecurrent::Gru($m) => $body,
            $crate::torch::TorchRecurrent::Rnn($m) => $body,
            $crate::torch::TorchRecurrent::BiLstm($m) => $body,
            $crate::torch::TorchRecurrent::BiGru($m) => $body,
            $crate::torch::TorchRecurrent::BiRnn($m) => $body,
        }
    };
}

/// What a `state_dict` says about its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TorchModuleShape {
    /// `"LSTM"`, `"GRU"` or `"RNN"`.
    pub kind: &'static str,
    /// `input_size`.
    pub input: usize,
    /// `hidden_size`.
    pub hidden: usize,
    /// `proj_size` (0: none).
    pub proj: usize,
    /// `num_layers`.
    pub layers: usize,
    /// Whether `bidirectional=True`.
    pub bidirectional: bool,
    /// Whether `bias=True`.
    pub bias: bool,
    /// Whether the `state_dict` is a cell's (`nn.LSTMCell`, ...: names without `_l0`), which
    /// loads as a one-layer module.
    pub cell: bool,
}

/// The names in a cell's `state_dict` (`nn.LSTMCell`, `nn.GRUCell`, `nn.RNNCell`).
const CELL_NAMES: [&str; 4] = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"];

/// Whether `names` are a cell's `state_dict`'s: a `weight_hh`, and no name but a cell's.
fn cell_names<'a>(names: impl IntoIterator<Item = &'a str> + Clone) -> bool {
    names.clone().into_iter().any(|n| n == "weight_hh") && names.into_iter().all(|n| CELL_NAMES.contains(&n))
}

/// Whether `tensors` are a cell's `state_dict` ([`cell_names`]).
fn is_cell<T>(tensors: &BTreeMap<String, TorchTensor<T>>) -> bool {
    cell_names(tensors.keys().map(String::as_str))
}

/// A cell's `state_dict` under the names of the one-layer module it equals (`weight_ih` →
/// `weight_ih_l0`, ...); any other as it is.
fn as_layers<T: Clone>(
    tensors: &BTreeMap<String, TorchTensor<T>>,
) -> Cow<'_, BTreeMap<String, TorchTensor<T>>> {
    if is_cell(tensors) {
        Cow::Owned(tensors.iter().map(|(k, t)| (format!("{k}_l0"), t.clone())).collect())
    } else {
        Cow::Borrowed(tensors)
    }
}

/// One parsed tensor name: `weight_ih_l2_reverse` is `("weight", "ih", 2, true)`.
fn parse_name(name: &str) -> Option<(&str, &str, usize, bool)> {
    let (name, reverse) = match name.strip_suffix("_reverse") {
        Some(n) => (n, true),
        None => (name, false),
    };
    let (head, layer) = name.rsplit_once("_l")?;
    let layer: usize = layer.parse().ok().filter(|_| layer.chars().all(|c| c.is_ascii_digit()))?;
    let (what, side) = head.split_once('_')?;
    matches!(what, "weight" | "bias").then_some(())?;
    matches!(side, "ih" | "hh" | "hr").then_some((what, side, layer, reverse))
}

/// The prefix that selects a submodule's tensors from a whole model's `state_dict`: `prefix`
/// with a `.` appended if it has none (`"rnn"` and `"rnn."` both select `rnn.weight_ih_l0`, not
/// `rnn2.weight_ih_l0`); empty for the whole file.
fn submodule_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('.') {
        prefix.to_owned()
    } else {
        format!("{prefix}.")
    }
}

/// The prefixes under which `names` (a whole model's `state_dict`) hold a recurrent module: one
/// per `weight_hh_l0` or cell's `weight_hh` (`"rnn."` for `rnn.weight_hh_l0`; `""` for a
/// module's own `state_dict`).
fn module_prefixes<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    names
        .into_iter()
        .filter_map(|n| n.strip_suffix("weight_hh_l0").or_else(|| n.strip_suffix("weight_hh")))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .collect()
}

/// The tensors of the recurrent module under `prefix` among `names` (a `state_dict`'s):
/// `(name, name without the prefix)`. `"rnn"` and `"rnn."` both select `rnn.weight_ih_l0` (not
/// `rnn2.weight_ih_l0`); `""` selects a module's own `state_dict`. Every selected name must be
/// one a recurrent module holds; a whole model's `state_dict` read without a prefix, or a prefix
/// that selects nothing, is an error naming the prefixes of the recurrent modules there are.
pub fn select_module<'a>(
    names: impl IntoIterator<Item = &'a str> + Clone,
    prefix: &str,
) -> Result<Vec<(&'a str, &'a str)>, CellError> {
    let prefix = submodule_prefix(prefix);
    let found = module_prefixes(names.clone());
    let quoted: Vec<String> = found.iter().map(|p| format!("{p:?}")).collect();
    if prefix.is_empty() && !found.is_empty() && !found.contains(&"") {
        return Err(CellError::InvalidConfig(format!(
            "a whole model's state_dict, with a recurrent module under {}: select it by its prefix",
            quoted.join(" and ")
        )));
    }
    let selected: Vec<_> = names.into_iter().filter_map(|n| Some((n, n.strip_prefix(&prefix)?))).collect();
    if selected.is_empty() {
        let quoted = if quoted.is_empty() { "none".to_owned() } else { quoted.join(", ") };
        return Err(CellError::InvalidConfig(format!(
            "no tensor's name starts with {prefix:?} (recurrent modules under: {quoted})"
        )));
    }
    if !cell_names(selected.iter().map(|&(_, short)| short)) {
        check_names(selected.iter().map(|&(_, short)| short), &prefix)?;
    }
    Ok(selected)
}

/// Checks that every name is one a recurrent module's `state_dict` can hold; the first that is
/// not is an error naming it and, for a whole model's `state_dict`, the prefixes of the
/// recurrent modules in it ([`module_prefixes`]). `prefix` is the one the names were selected by
/// (and stripped of), which the error puts back.
fn check_names<'a>(names: impl IntoIterator<Item = &'a str> + Clone, prefix: &str) -> Result<(), CellError> {
    for name in names.clone() {
        let hint = match parse_name(name) {
            Some(("bias", "hr", ..)) => "a projection has no bias".to_owned(),
            Some(_) => continue,
            None => {
                let found = module_prefixes(names);
                let whole = if found.is_empty() || found.contains(&"") {
                    String::new()
                } else {
                    let found: Vec<String> = found.iter().map(|p| format!("\"{prefix}{p}\"")).collect();
                    format!(
                        "; this state_dict holds one under {}: select it by that prefix",
                        found.join(" and ")
                    )
                };
                format!("a recurrent module's state_dict holds weight_ih_l{{k}}, weight_hh_l{{k}}, bias_ih_l{{k}}, bias_hh_l{{k}}, weight_hr_l{{k}} (and _reverse), a cell's weight_ih, weight_hh, bias_ih, bias_hh{whole}")
            }
        };
        return Err(CellError::InvalidConfig(format!("unknown tensor {prefix}{name}: {hint}")));
    }
    Ok(())
}

/// Reads the module's shape off the tensors' names and shapes (see the module docs).
pub fn module_shape<T: Clone>(
    tensors: &BTreeMap<String, TorchTensor<T>>,
) -> Result<TorchModuleShape, CellError> {
    let cell = is_cell(tensors);
    in_cell_names(cell, layers_shape(&as_layers(tensors), cell))
}

/// A cell's errors under its own names: the one-layer module's `weight_hh_l0` is its `weight_hh`.
fn in_cell_names<R>(cell: bool, r: Result<R, CellError>) -> Result<R, CellError> {
    match r {
        Err(CellError::InvalidConfig(m)) if cell => Err(CellError::InvalidConfig(m.replace("_l0", ""))),
        r => r,
    }
}

/// [`module_shape`] of tensors under a module's names (`cell`: renamed from a cell's).
fn layers_shape<T>(
    tensors: &BTreeMap<String, TorchTensor<T>>,
    cell: bool,
) -> Result<TorchModuleShape, CellError> {
    let bad = |m: String| Err(CellError::InvalidConfig(m));
    check_names(tensors.keys().map(String::as_str), "")?;
    let mut layers = 0;
    let (mut bidirectional, mut bias) = (false, false);
    for name in tensors.keys() {
        // Every name parses: checked above.
        let Some((what, _, k, reverse)) = parse_name(name) else { continue };
        layers = layers.max(k + 1);
        bidirectional |= reverse;
        bias |= what == "bias";
    }
    let w_hh = tensors.get("weight_hh_l0").ok_or_else(|| {
        CellError::InvalidConfig("the state_dict has no weight_hh_l0: it is not a recurrent module's".into())
    })?;
    let (kind, hidden, proj) = match (&w_hh.shape[..], tensors.get("weight_hr_l0").map(|t| &t.shape[..])) {
        (&[gh, p], Some(&[p2, h])) if p > 0 && p == p2 && p < h && gh == 4 * h => ("LSTM", h, p),
        (_, Some(hr)) => {
            return bad(format!(
                "weight_hr_l0 is {hr:?} and weight_hh_l0 {:?}: an LSTM with proj_size P has weight_hr [P, H] and weight_hh [4H, P] with 0 < P < H",
                w_hh.shape
            ))
        }
        (&[gh, h], None) if h > 0 && gh == 4 * h => ("LSTM", h, 0),
        (&[gh, h], None) if h > 0 && gh == 3 * h => ("GRU", h, 0),
        (&[gh, h], None) if h > 0 && gh == h => ("RNN", h, 0),
        _ => {
            return bad(format!(
                "weight_hh_l0 is {:?}, expected [G·H, H] with G = 4 (LSTM), 3 (GRU) or 1 (RNN)",
                w_hh.shape
            ))
        }
    };
    let input = match tensors.get("weight_ih_l0").map(|t| &t.shape[..]) {
        Some(&[_, i]) => i,
        Some(s) => return bad(format!("weight_ih_l0 is {s:?}, expected [{}, input]", w_hh.shape[0])),
        None => return bad("the state_dict has no weight_ih_l0".into()),
    };
    Ok(TorchModuleShape { kind, input, hidden, proj, layers, bidirectional, bias, cell })
}

/// The tensors of layer `k`, direction `reverse`, checked against the shapes the module needs.
fn layer_params<T: Scalar>(
    tensors: &BTreeMap<String, TorchTensor<T>>,
    s: &TorchModuleShape,
    gates: usize,
    k: usize,
    reverse: bool,
) -> Result<RecurrentParams<T>, CellError> {
    let suffix = format!("_l{k}{}", if reverse { "_reverse" } else { "" });
    let gh = gates * s.hidden;
    let out = if s.proj > 0 { s.proj } else { s.hidden };
    let input = if k == 0 { s.input } else { out * if s.bidirectional { 2 } else { 1 } };
    let get = |base: &str, want: &[usize]| -> Result<Mat<T>, CellError> {
        let name = format!("{base}{suffix}");
        let t = tensors.get(&name).ok_or_else(|| {
            CellError::InvalidConfig(format!("the state_dict has no {name} (expected {want:?})"))
        })?;
        if t.shape != want || t.data.len() != want.iter().product::<usize>() {
            return Err(CellError::InvalidConfig(format!(
                "{name} is {:?} with {} values, expected {want:?}",
                t.shape,
                t.data.len()
            )));
        }
        Ok(Mat::from_row_slice(want[0], *want.get(1).unwrap_or(&1), &t.data))
    };
    let (bias_ih, bias_hh) =
        if s.bias { (Some(get("bias_ih", &[gh])?), Some(get("bias_hh", &[gh])?)) } else { (None, None) };
    let weight_hr = if s.proj > 0 { Some(get("weight_hr", &[s.proj, s.hidden])?) } else { None };
    Ok(RecurrentParams {
        weight_ih: get("weight_ih", &[gh, input])?,
        weight_hh: get("weight_hh", &[gh, out])?,
        bias_ih,
        bias_hh,
        weight_hr,
        layer: k,
        reverse,
    })
}

/// A stack of cell `C` (one direction) from the tensors.
fn uni<T: Scalar, C: Cell<T>>(
    tensors: &BTreeMap<String, TorchTensor<T>>,
    s: &TorchModuleShape,
    cell: C,
) -> Result<Stack<Layer<T, C>>, CellError> {
    Stack::from_fn(s.layers, |k| Layer::new(layer_params(tensors, s, C::GATES, k, false)?, cell))
}

/// A stack of bidirectional layers of cell `C` from the tensors.
fn bi<T: Scalar, C: Cell<T>>(
    tensors: &BTreeMap<String, TorchTensor<T>>,
    s: &TorchModuleShape,
    cell: C,
) -> Result<Stack<Bidirectional<Layer<T, C>>>, CellError> {
    Stack::from_fn(s.layers, |k| {
        let f = Layer::new(layer_params(tensors, s, C::GATES, k, false)?, cell)?;
        let r = Layer::new(layer_params(tensors, s, C::GATES, k, true)?, cell)?;
        Bidirectional::new(f, r)
    })
}

impl<T: Scalar> TorchRecurrent<T> {
    /// The module the tensors of a `state_dict` describe (see the module docs); `nonlinearity`
    /// is the vanilla RNN's (`nn.RNN`'s `nonlinearity`, tanh by default), unused by the others.
    /// Every tensor must be used: a name that belongs to no layer is an error.
    pub fn from_state_dict(
        tensors: &BTreeMap<String, TorchTensor<T>>,
        nonlinearity: Activation,
    ) -> Result<Self, CellError> {
        in_cell_names(is_cell(tensors), Self::from_layers(&as_layers(tensors), nonlinearity))
    }

    /// [`TorchRecurrent::from_state_dict`] of tensors under a module's names.
    fn from_layers(
        tensors: &BTreeMap<String, TorchTensor<T>>,
        nonlinearity: Activation,
    ) -> Result<Self, CellError> {
        let s = layers_shape(tensors, false)?;
        let module = match (s.kind, s.bidirectional) {
            ("LSTM", false) => Self::Lstm(uni(tensors, &s, LstmCell)?),
            ("GRU", false) => Self::Gru(uni(tensors, &s, GruCell)?),
            ("LSTM", true) => Self::BiLstm(bi(tensors, &s, LstmCell)?),
            ("GRU", true) => Self::BiGru(bi(tensors, &s, GruCell)?),
            (_, false) => Self::Rnn(uni(tensors, &s, RnnCell { activation: nonlinearity })?),
            (_, true) => Self::BiRnn(bi(tensors, &s, RnnCell { activation: nonlinearity })?),
        };
        // Every tensor went into a layer: the counts agree.
        let used =
            crate::with_torch_module!(&module, |m| rnn_tensor::Parameters::named_params(m.params()).len());
        if used != tensors.len() {
            let names: Vec<String> =
                crate::with_torch_module!(&module, |m| rnn_tensor::Parameters::named_params(m.params())
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect());
            let extra = tensors.keys().find(|k| !names.contains(k)).cloned().unwrap_or_default();
            return Err(CellError::InvalidConfig(format!(
                "{extra} belongs to no layer of a {}-layer {}{} module",
                s.layers,
                if s.bidirectional { "bidirectional " } else { "" },
                s.kind
            )));
        }
        Ok(module)
    }

    /// The input size `I`.
    pub fn input_size(&self) -> usize {
        crate::with_torch_module!(self, |m| m.input_size())
    }

    /// The size of each step's output: `H` (`P` with a projection), twice that for a
    /// bidirectional module.
    pub fn output_size(&self) -> usize {
        crate::with_torch_module!(self, |m| m.hidden_size())
    }
}
