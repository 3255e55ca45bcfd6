//! The work of `examples/torch_module.rs`, shared with its test (`tests/torch_module.rs`): runs a PyTorch recurrent module (`nn.LSTM`, `nn.GRU`, `nn.RNN`; any layers, one or two
//! directions, with or without bias) from its `state_dict`, forward and, when asked, backward, on
//! tensors as PyTorch stores them:
//!
//! ```text
//! cargo run --release --example torch_module -- --module M.safetensors [--prefix P] \
//!     --input IN.safetensors --output OUT.safetensors [--batch-first] [--nonlinearity tanh|relu]
//! ```
//!
//! - `M` holds the module's `state_dict` under PyTorch's names (`weight_ih_l0`,
//!   `weight_hh_l1_reverse`, `bias_ih_l0`, ...), float32 or float64 (or float16 and bfloat16,
//!   read as float32), or a cell's (`nn.LSTMCell`, ...: `weight_ih`, ...), run as the one-layer
//!   module it equals, its gradients written under its own names; or a whole model's, whose
//!   recurrent module `--prefix P` selects (`rnn` for `rnn.weight_ih_l0`, ...: the tensors under
//!   `P.`, the others not read).
//! - `IN` holds `x` (`[T, B, I]`, or `[B, T, I]` with `--batch-first`), and optionally `h0` (and
//!   `c0` for an LSTM), `[L·D, B, H]` as PyTorch's (a cell's `[B, H]`, as `nn.LSTMCell` takes
//!   `hx`, or `[1, B, H]`); for the backward pass `d_output` (shaped like
//!   `output`), and optionally `d_h_n` (and `d_c_n`): the gradients of a loss with respect to each
//!   output; and `lengths` (int64 `[B]`, each in `1..=T`): each sequence's own length, as
//!   `pack_padded_sequence(..., enforce_sorted=False)` takes them.
//! - `OUT` gets `output` (zero past each length, as `pad_packed_sequence(..., total_length=T)`
//!   gives), `h_n` (and `c_n`; a cell's `[B, H]`, as it returns them after the last step), and
//!   with `d_output` also `grad.` + every parameter's name, `grad.x`, and `grad.h0`, `grad.c0`
//!   when those were given, shaped as they were. Everything is computed in
//!   `x`'s dtype.
//!
//! Bad input of any kind is one line on standard error and exit code 1, and writes nothing.
//! `OUT` replaces a file of that name, unless it is `M` or `IN` (by any spelling of the path).

use std::collections::BTreeMap;
use std::path::PathBuf;

use rnn::cells::{
    from_torch, to_torch, torch, with_torch_module, Recurrence, RecurrentState, SeqInput, SeqOrder,
    TorchRecurrent, TorchTensor,
};
use rnn::io::{Dtype, Tensor, TensorData, TensorFile};
use rnn::tensor::activation::Activation;
use rnn::tensor::{Mat, Parameters, Scalar};

/// A tensor read from a file: shape and values (as `f64`, or the integers of `lengths`).
struct Loaded {
    dtype: Dtype,
    shape: Vec<usize>,
    values: Vec<f64>,
}

/// A result whose error is the one-line message the program prints.
pub type Result<T> = std::result::Result<T, String>;

/// The tensors of the file at `path`, every one float32 or float64 (float16 and bfloat16 read as
/// float32) but `ints` (int64). With
/// `module`, the file is a `state_dict`: only the tensors under that prefix are read (`""`:
/// all), named without it, and their names are checked before their values.
fn read(path: &PathBuf, ints: &[&str], module: Option<&str>) -> Result<BTreeMap<String, Loaded>> {
    // A tensor of a dtype rnn-io does not read is an error only where it is read: a whole
    // model's I8 or BOOL tensors beside the module selected are left alone.
    let file = TensorFile::read_any(path).map_err(|e| e.to_string())?;
    let names = file.names();
    let selected = match module {
        Some(prefix) => {
            torch::select_module(names, prefix).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => names.into_iter().map(|n| (n, n)).collect(),
    };
    let mut out = BTreeMap::new();
    for (name, short) in selected {
        file.check_finite_tensor(name).map_err(|e| e.to_string())?;
        let (t, file_name, name) = (&file.tensors[name], name, short.to_owned());
        let values: Vec<f64> = match &t.data {
            TensorData::I64(v) if ints.contains(&name.as_str()) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I64(_) => {
                return Err(format!(
                    "{}: tensor {name} is int64; it must be float32 or float64",
                    path.display()
                ))
            }
            _ => file.floats(file_name).map_err(|e| e.to_string())?,
        };
        out.insert(name, Loaded { dtype: t.dtype(), shape: t.shape.clone(), values });
    }
    Ok(out)
}

/// What the run writes: name → (shape, values).
type Outputs = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// How the state tensors are laid out: a module's `[L·D, B, H]`, or a cell's `[B, H]` (as
/// `nn.LSTMCell` takes `hx` and returns `h`, `c`).
#[derive(Clone, Copy)]
struct States {
    layers_dirs: usize,
    cell: bool,
    lstm: bool,
}

impl States {
    /// The shape of PyTorch's tensor of state part `offset` (`h` 0, `c` 1) of a state like
    /// `zero`: `[L·D, B, rows]` or a cell's `[B, rows]`, where `h` has `P` rows with a
    /// projection and `c` always `H`.
    fn shape<T: Scalar, S: RecurrentState<T>>(self, zero: &S, offset: usize) -> Vec<usize> {
        let part = zero.part(offset);
        if self.cell {
            vec![part.ncols(), part.nrows()]
        } else {
            vec![self.layers_dirs, part.ncols(), part.nrows()]
        }
    }

    /// The state given as PyTorch's tensors `h` and, for an LSTM, `c` (a cell's as `[B, H]` or
    /// the one-layer module's `[1, B, H]`).
    fn read<T: Scalar, S: RecurrentState<T>>(
        self,
        zero: &S,
        h: Option<&Loaded>,
        c: Option<&Loaded>,
    ) -> Result<S> {
        let mut s = zero.clone();
        let per = if self.lstm { 2 } else { 1 };
        for (name, t, offset) in [("h", h, 0), ("c", c, 1)] {
            let Some(t) = t else { continue };
            let want = self.shape(zero, offset);
            let as_module = [&[1][..], &want].concat();
            if t.shape != want && !(self.cell && t.shape == as_module) {
                let or = if self.cell { format!(" (a cell's; or {as_module:?})") } else { String::new() };
                return Err(format!("{name}0 (or d_{name}_n) is {:?}, expected {want:?}{or}", t.shape));
            }
            let block = zero.part(offset).len();
            for j in 0..t.values.len() / block.max(1) {
                let part = s.part_mut(per * j + offset);
                for (d, &v) in part.as_mut_slice().iter_mut().zip(&t.values[j * block..(j + 1) * block]) {
                    *d = T::cast(v);
                }
            }
        }
        Ok(s)
    }

    /// Our state `s` as PyTorch's tensors `h` (and `c`).
    fn write<T: Scalar, S: RecurrentState<T>>(self, s: &S, out: &mut Outputs, h: &str, c: &str) {
        let per = if self.lstm { 2 } else { 1 };
        for (name, offset) in [(h, 0), (c, 1)].into_iter().take(per) {
            let values = (0..self.layers_dirs)
                .flat_map(|j| s.part(per * j + offset).iter().map(|v| v.to_f64()))
                .collect();
            out.insert(name.to_string(), (self.shape(s, offset), values));
        }
    }
}

fn run<T: Scalar, M: Recurrence<T>>(
    model: &M,
    inputs: &BTreeMap<String, Loaded>,
    order: SeqOrder,
    states: States,
) -> Result<Outputs> {
    let x = inputs.get("x").ok_or("the input file has no tensor x")?;
    let xs: Vec<T> = x.values.iter().map(|&v| T::cast(v)).collect();
    let (xm, b) = from_torch(&xs, &x.shape, order).map_err(|e| format!("x: {e}"))?;
    let (t, _, i) = order.steps_batch_features(&x.shape).map_err(|e| e.to_string())?;
    if i != model.input_size() {
        return Err(format!("x has {i} features per step, the module reads {}", model.input_size()));
    }
    if b == 0 || t == 0 {
        return Err(format!("x is {:?}: it needs at least one step of one sequence", x.shape));
    }
    let lengths: Option<Vec<usize>> = match inputs.get("lengths") {
        Some(l) if l.dtype != Dtype::I64 => {
            return Err(format!("lengths is {:?}; it must be int64 [{b}]", l.dtype))
        }
        Some(l) if l.shape != [b] => return Err(format!("lengths is {:?}, expected [{b}]", l.shape)),
        Some(l) => {
            let v: Vec<usize> = l.values.iter().map(|&v| v.max(0.0) as usize).collect();
            rnn::cells::engine::check_lengths(&v, b, t).map_err(|e| format!("lengths: {e}"))?;
            Some(v)
        }
        None => None,
    };
    let zero = model.zero_state(b);
    let h0 = states.read(&zero, inputs.get("h0"), inputs.get("c0"))?;
    let mut cache = M::Cache::default();
    let fin = match &lengths {
        Some(l) => model.forward_lengths(SeqInput::Dense(&xm), b, l, &h0, &mut cache),
        None => model.forward(SeqInput::Dense(&xm), b, &h0, &mut cache),
    };
    let mut out = Outputs::new();
    let (data, shape) = to_torch(model.outputs(&cache), b, order);
    out.insert("output".into(), (shape.to_vec(), data.iter().map(|v| v.to_f64()).collect()));
    states.write(&fin, &mut out, "h_n", "c_n");
    let Some(dy) = inputs.get("d_output") else { return Ok(out) };
    if dy.shape != shape {
        return Err(format!("d_output is {:?}, expected {shape:?} (the output's shape)", dy.shape));
    }
    let dys: Vec<T> = dy.values.iter().map(|&v| T::cast(v)).collect();
    let (d_out, _) = from_torch(&dys, &dy.shape, order).map_err(|e| e.to_string())?;
    let d_fin = states.read(&zero, inputs.get("d_h_n"), inputs.get("d_c_n"))?;
    let mut grads = model.params().clone();
    grads.zero();
    let mut d_x = Mat::zeros(0, 0);
    let d_h0 = model.backward(SeqInput::Dense(&xm), &mut cache, &d_out, &d_fin, &mut grads, Some(&mut d_x));
    for (name, g) in grads.named_params() {
        // Our column-major matrix as PyTorch's row-major tensor; a bias is a vector.
        let values: Vec<f64> =
            (0..g.nrows()).flat_map(|r| g.row(r).iter().map(|v| v.to_f64()).collect::<Vec<_>>()).collect();
        let shape = if name.starts_with("bias") { vec![g.nrows()] } else { vec![g.nrows(), g.ncols()] };
        out.insert(format!("grad.{name}"), (shape, values));
    }
    let (gx, gx_shape) = to_torch(&d_x, b, order);
    out.insert("grad.x".into(), (gx_shape.to_vec(), gx.iter().map(|v| v.to_f64()).collect()));
    let mut grad_states = Outputs::new();
    states.write(&d_h0, &mut grad_states, "grad.h0", "grad.c0");
    for (name, given) in [("grad.h0", "h0"), ("grad.c0", "c0")] {
        // Shaped as the state was given (a cell's may come as `[1, B, H]`).
        if let (Some(given), Some((_, v))) = (inputs.get(given), grad_states.remove(name)) {
            out.insert(name.into(), (given.shape.clone(), v));
        }
    }
    Ok(out)
}

fn write(path: &PathBuf, outputs: &Outputs, dtype: Dtype) -> Result<()> {
    let mut file = TensorFile::new();
    for (n, (shape, v)) in outputs {
        let data = match dtype {
            Dtype::F32 => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
            _ => TensorData::F64(v.clone()),
        };
        file = file.with_tensor(n.clone(), Tensor::new(shape.clone(), data));
    }
    file.write(path).map_err(|e| e.to_string())
}

/// The program with its arguments (without the program's name); an error is one line.
pub fn cli(mut args: impl Iterator<Item = String>) -> Result<()> {
    let (mut module, mut input, mut output, mut order, mut act) =
        (None, None, None, SeqOrder::SeqFirst, Activation::Tanh);
    let mut prefix = String::new();
    while let Some(a) = args.next() {
        let mut value = |flag: &str| args.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--module" => module = Some(PathBuf::from(value("--module")?)),
            "--input" => input = Some(PathBuf::from(value("--input")?)),
            "--output" => output = Some(PathBuf::from(value("--output")?)),
            "--prefix" => prefix = value("--prefix")?,
            "--batch-first" => order = SeqOrder::BatchFirst,
            "--nonlinearity" => {
                act = match value("--nonlinearity")?.as_str() {
                    "tanh" => Activation::Tanh,
                    "relu" => Activation::Relu,
                    other => return Err(format!("--nonlinearity takes tanh or relu, got {other}")),
                }
            }
            "--help" | "-h" => {
                println!("torch_module --module M.safetensors [--prefix P] --input IN.safetensors --output OUT.safetensors [--batch-first] [--nonlinearity tanh|relu]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}; see --help")),
        }
    }
    let (module, input, output) = (
        module.ok_or("--module M.safetensors is required")?,
        input.ok_or("--input IN.safetensors is required")?,
        output.ok_or("--output OUT.safetensors is required")?,
    );
    // The output replaces a file of that name, but never one of the two it reads.
    let canonical = |p: &PathBuf| std::fs::canonicalize(p).ok();
    let out = canonical(&output);
    for (flag, path) in [("--module", &module), ("--input", &input)] {
        if out.is_some() && canonical(path) == out {
            return Err(format!(
                "--output {} is the {flag} file, which it would replace; write the output to another file",
                output.display()
            ));
        }
    }
    let m = read(&module, &[], Some(&prefix))?;
    let inputs = read(&input, &["lengths"], None)?;
    if let Some((n, _)) = inputs
        .iter()
        .find(|(n, _)| !["x", "lengths", "h0", "c0", "d_output", "d_h_n", "d_c_n"].contains(&n.as_str()))
    {
        return Err(format!(
            "{}: unknown tensor {n}; the inputs are x, lengths, h0, c0, d_output, d_h_n, d_c_n",
            input.display()
        ));
    }
    let dtype = inputs.get("x").ok_or(format!("{}: no tensor x", input.display()))?.dtype;
    let as_f64: BTreeMap<String, TorchTensor<f64>> = m
        .iter()
        .map(|(n, t)| (n.clone(), TorchTensor { shape: t.shape.clone(), data: t.values.clone() }))
        .collect();
    let shape = torch::module_shape(&as_f64).map_err(|e| format!("{}: {e}", module.display()))?;
    let layers_dirs = shape.layers * if shape.bidirectional { 2 } else { 1 };
    let states = States { layers_dirs, cell: shape.cell, lstm: shape.kind == "LSTM" };
    let outputs = match dtype {
        Dtype::F32 => {
            let t: BTreeMap<String, TorchTensor<f32>> = as_f64
                .iter()
                .map(|(n, t)| {
                    (
                        n.clone(),
                        TorchTensor {
                            shape: t.shape.clone(),
                            data: t.data.iter().map(|&v| v as f32).collect(),
                        },
                    )
                })
                .collect();
            let module =
                TorchRecurrent::from_state_dict(&t, act).map_err(|e| format!("{}: {e}", module.display()))?;
            with_torch_module!(&module, |model| run(model, &inputs, order, states))?
        }
        Dtype::F64 => {
            let module = TorchRecurrent::from_state_dict(&as_f64, act)
                .map_err(|e| format!("{}: {e}", module.display()))?;
            with_torch_module!(&module, |model| run(model, &inputs, order, states))?
        }
        other => return Err(format!("x is {other:?}; use float32 or float64")),
    };
    // A cell's gradients under its own names (`grad.weight_ih`, not the module's `_l0`).
    let outputs = if shape.cell {
        outputs
            .into_iter()
            .map(|(n, v)| (n.strip_suffix("_l0").map_or(n.clone(), str::to_owned), v))
            .collect()
    } else {
        outputs
    };
    write(&output, &outputs, dtype)?;
    Ok(())
}
