//! The tensors of a recurrent layer and how a layer is configured: one convention for every cell.
//!
//! A cell with `G` gates keeps PyTorch's tensors: `weight_ih` `[G·H, I]`, `weight_hh` `[G·H, H]`,
//! `bias_ih` and `bias_hh` `[G·H]` (stored as `G·H × 1`), gate blocks stacked in PyTorch's order.
//! An LSTM with a projection (`proj_size = P`) also has `weight_hr` `[P, H]`: its output, and the
//! `h` it carries to the next step, is `h_t = W_hr·(o_t ⊙ tanh(c_t))`, `P` values, so that
//! `weight_hh` is `[4H, P]` (the cell state `c` keeps `H`).
//! Every layer is built the same way:
//!
//! - `XConfig::new(input, hidden).with_bias(..).with_init(..).with_layer(..).build(rng)` draws
//!   the tensors in PyTorch's order (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`);
//! - `X::from_params(params)` (and, for the vanilla RNN, its activation) takes existing tensors,
//!   for example loaded from PyTorch, and checks every shape: a mismatch is a
//!   [`CellError::InvalidConfig`] naming the tensor and both shapes.

use rnn_tensor::init::Init;
use rnn_tensor::{Mat, Parameters, Rng, Scalar};

use crate::engine::{Cell, Layer};
use crate::{Bidirectional, CellError, Stack};

/// The tensors of one recurrent layer with `G` gates (1 for the vanilla RNN, 4 for the LSTM, 3 for
/// the GRU) and, as the same type, their gradients,
/// under PyTorch's names `weight_ih_l{layer}`, `weight_hh_l{layer}`, `bias_ih_l{layer}`,
/// `bias_hh_l{layer}`, `weight_hr_l{layer}` (with `_reverse` after them for the reverse direction
/// of a bidirectional layer, which runs from the last step to the first).
#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentParams<T: Scalar> {
    /// `[G·H, I]`.
    pub weight_ih: Mat<T>,
    /// `[G·H, H]`, or `[G·H, P]` with a projection.
    pub weight_hh: Mat<T>,
    /// `[G·H]` as a `G·H × 1` matrix; `None` for a layer built `with_bias(false)`.
    pub bias_ih: Option<Mat<T>>,
    /// `[G·H]` as a `G·H × 1` matrix; `None` for a layer built `with_bias(false)`.
    pub bias_hh: Option<Mat<T>>,
    /// The projection `[P, H]` of an LSTM built `with_proj_size(P)` (PyTorch's `proj_size`);
    /// `None` otherwise.
    pub weight_hr: Option<Mat<T>>,
    /// The layer index `k` in the names' `_l{k}` suffix (0 for a lone cell).
    pub layer: usize,
    /// Whether the layer runs backwards in time (the reverse direction of a bidirectional
    /// layer; its names end in `_reverse`).
    pub reverse: bool,
}

impl<T: Scalar> RecurrentParams<T> {
    /// The suffix of this layer's names: `_l{k}`, or `_l{k}_reverse`.
    pub fn suffix(&self) -> String {
        format!("_l{}{}", self.layer, if self.reverse { "_reverse" } else { "" })
    }
}

impl<T: Scalar> Parameters<T> for RecurrentParams<T> {
    fn named_params(&self) -> Vec<(String, &Mat<T>)> {
        let k = self.suffix();
        let mut v =
            vec![(format!("weight_ih{k}"), &self.weight_ih), (format!("weight_hh{k}"), &self.weight_hh)];
        if let Some(b) = &self.bias_ih {
            v.push((format!("bias_ih{k}"), b));
        }
        if let Some(b) = &self.bias_hh {
            v.push((format!("bias_hh{k}"), b));
        }
        if let Some(w) = &self.weight_hr {
            v.push((format!("weight_hr{k}"), w));
        }
        v
    }
    fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<T>)> {
        let k = self.suffix();
        let mut v = vec![
            (format!("weight_ih{k}"), &mut self.weight_ih),
            (format!("weight_hh{k}"), &mut self.weight_hh),
        ];
        if let Some(b) = &mut self.bias_ih {
            v.push((format!("bias_ih{k}"), b));
        }
        if let Some(b) = &mut self.bias_hh {
            v.push((format!("bias_hh{k}"), b));
        }
        if let Some(w) = &mut self.weight_hr {
            v.push((format!("weight_hr{k}"), w));
        }
        v
    }
    /// Clears every tensor without building the names (called once per training step).
    fn zero(&mut self) {
        // Through the flat slices: a memset (nalgebra's fill walks element by element).
        self.weight_ih.as_mut_slice().fill(T::ZERO);
        self.weight_hh.as_mut_slice().fill(T::ZERO);
        for b in [&mut self.bias_ih, &mut self.bias_hh, &mut self.weight_hr].into_iter().flatten() {
            b.as_mut_slice().fill(T::ZERO);
        }
    }
}

impl<T: Scalar> RecurrentParams<T> {
    /// The size of the output `h` (`weight_hh` has as many columns): the hidden size `H`, or the
    /// projection's `P`.
    pub fn hidden_size(&self) -> usize {
        self.weight_hh.ncols()
    }

    /// The cell's units `H` (the size of the LSTM's `c`, a gate block's rows): `weight_hr` has
    /// `H` columns; without a projection, the hidden size.
    pub fn cell_size(&self) -> usize {
        self.weight_hr.as_ref().map_or(self.weight_hh.ncols(), |w| w.ncols())
    }

    /// The input size `I`.
    pub fn input_size(&self) -> usize {
        self.weight_ih.ncols()
    }

    /// A copy with every tensor zero: the starting point for gradients.
    pub fn zeros_like(&self) -> Self {
        let mut g = self.clone();
        g.zero();
        g
    }
}

/// How to build a recurrent layer of cell `C` ([`LstmConfig`](crate::LstmConfig),
/// [`GruConfig`](crate::GruConfig), [`RnnConfig`](crate::RnnConfig)): the sizes, then options
/// through `with_*` setters, checked once by [`RecurrentConfig::check`] (which `build` calls).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecurrentConfig<C> {
    input: usize,
    hidden: usize,
    bias: bool,
    init: Option<Init>,
    layer: usize,
    reverse: bool,
    proj: usize,
    cell: C,
}

impl<C: Default> RecurrentConfig<C> {
    /// A layer from `input` features to `hidden` units, with PyTorch's defaults.
    pub fn new(input: usize, hidden: usize) -> Self {
        Self { input, hidden, bias: true, init: None, layer: 0, reverse: false, proj: 0, cell: C::default() }
    }
}

impl<C: Copy> RecurrentConfig<C> {
    /// Whether the layer has `bias_ih` and `bias_hh`. Default: `true`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// The initialiser of every tensor. Default: PyTorch's `U(-1/sqrt(H), 1/sqrt(H))`.
    pub fn with_init(mut self, init: Init) -> Self {
        self.init = Some(init);
        self
    }

    /// The layer index in the parameter names (`weight_ih_l{layer}`). Default: 0.
    pub fn with_layer(mut self, layer: usize) -> Self {
        self.layer = layer;
        self
    }

    /// Whether the layer runs backwards in time, from the last step to the first (the reverse
    /// direction of a bidirectional layer; its names end in `_reverse`). Default: `false`.
    pub fn with_reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// An LSTM's projection size `P` (PyTorch's `proj_size`): the output and the carried `h` are
    /// `W_hr·(o ⊙ tanh c)`, `P` values, with `0 < P < hidden`. Default: 0, no projection. Only
    /// cells that take one ([`Cell::PROJECTION`]: the LSTM) accept `P > 0`.
    pub fn with_proj_size(mut self, proj: usize) -> Self {
        self.proj = proj;
        self
    }

    /// The cell's own settings (the vanilla RNN's activation; the LSTM and GRU have none).
    pub fn with_cell(mut self, cell: C) -> Self {
        self.cell = cell;
        self
    }

    /// The input size `I`.
    pub fn input(&self) -> usize {
        self.input
    }

    /// The hidden size `H`.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// The projection size `P` (0: none).
    pub fn proj_size(&self) -> usize {
        self.proj
    }

    /// The size of each output: `P` with a projection, else `H`.
    pub fn output(&self) -> usize {
        if self.proj > 0 {
            self.proj
        } else {
            self.hidden
        }
    }

    /// The cell's settings.
    pub fn cell(&self) -> C {
        self.cell
    }

    /// The configuration of layer `k` of a stack: input `hidden` (or `P`) above layer 0, suffix
    /// `_l{k}`.
    pub(crate) fn for_layer(&self, k: usize) -> Self {
        Self { input: if k == 0 { self.input } else { self.output() }, layer: k, ..*self }
    }

    /// Checks the sizes and the initialiser.
    pub fn check<T: Scalar>(&self) -> Result<(), CellError>
    where
        C: Cell<T>,
    {
        if self.input == 0 || self.hidden == 0 {
            return Err(CellError::InvalidConfig(format!(
                "an {} needs input size > 0 and hidden size > 0, got input {} and hidden {}",
                C::NAME,
                self.input,
                self.hidden
            )));
        }
        if self.proj > 0 && !C::PROJECTION {
            return Err(CellError::InvalidConfig(format!(
                "an {} has no projection (proj_size {}): only the LSTM takes one; use proj_size 0",
                C::NAME,
                self.proj
            )));
        }
        if self.proj >= self.hidden {
            return Err(CellError::InvalidConfig(format!(
                "proj_size {} must be smaller than the hidden size {} (as in PyTorch)",
                self.proj, self.hidden
            )));
        }
        if let Some(init) = self.init {
            init.check().map_err(|e| CellError::InvalidConfig(format!("{} initialiser: {e}", C::NAME)))?;
        }
        Ok(())
    }

    /// Checks the configuration and draws the tensors in PyTorch's order (`weight_ih`,
    /// `weight_hh`, `bias_ih`, `bias_hh`, `weight_hr`).
    pub fn build<T: Scalar>(&self, rng: &mut Rng) -> Result<Layer<T, C>, CellError>
    where
        C: Cell<T>,
    {
        self.check::<T>()?;
        let init = self.init.unwrap_or(Init::TorchRecurrent { hidden: self.hidden });
        let gh = C::GATES * self.hidden;
        let weight_ih = init.matrix(gh, self.input, rng);
        let weight_hh = init.matrix(gh, self.output(), rng);
        let (bias_ih, bias_hh) = if self.bias {
            (Some(init.matrix(gh, 1, rng)), Some(init.matrix(gh, 1, rng)))
        } else {
            (None, None)
        };
        let weight_hr = (self.proj > 0).then(|| init.matrix(self.proj, self.hidden, rng));
        Layer::new(
            RecurrentParams {
                weight_ih,
                weight_hh,
                bias_ih,
                bias_hh,
                weight_hr,
                layer: self.layer,
                reverse: self.reverse,
            },
            self.cell,
        )
    }

    /// A stack of `num_layers` layers, as `torch.nn.LSTM(input, hidden, num_layers)` (or `GRU`,
    /// `RNN`): layer 0 reads `input` features, the others `hidden`; layer `k`'s tensors are named
    /// `_l{k}` and drawn in PyTorch's order, layer by layer.
    pub fn build_stack<T: Scalar>(
        &self,
        num_layers: usize,
        rng: &mut Rng,
    ) -> Result<Stack<Layer<T, C>>, CellError>
    where
        C: Cell<T>,
    {
        Stack::from_fn(num_layers, |k| self.for_layer(k).build(rng))
    }
}

impl<C: Copy> RecurrentConfig<C> {
    /// A bidirectional layer, as `bidirectional=True`: the forward direction, then the reverse
    /// one (tensors `..._reverse`), each drawn in PyTorch's order.
    pub fn build_bidirectional<T: Scalar>(
        &self,
        rng: &mut Rng,
    ) -> Result<Bidirectional<Layer<T, C>>, CellError>
    where
        C: Cell<T>,
    {
        let forward = self.with_reverse(false).build(rng)?;
        let reverse = self.with_reverse(true).build(rng)?;
        Bidirectional::new(forward, reverse)
    }

    /// A stack of `num_layers` bidirectional layers, as
    /// `torch.nn.LSTM(input, hidden, num_layers, bidirectional=True)`: layer 0 reads `input`
    /// features, the others the `2·hidden` (`2·P`) outputs of the layer below (forward direction
    /// first).
    pub fn build_bidirectional_stack<T: Scalar>(
        &self,
        num_layers: usize,
        rng: &mut Rng,
    ) -> Result<Stack<Bidirectional<Layer<T, C>>>, CellError>
    where
        C: Cell<T>,
    {
        Stack::from_fn(num_layers, |k| {
            let input = if k == 0 { self.input } else { 2 * self.output() };
            Self { input, layer: k, ..*self }.build_bidirectional(rng)
        })
    }
}

/// Checks that `p` are the tensors of a layer of cell `C` (the message names the tensor and both
/// shapes).
pub(crate) fn check_params<T: Scalar, C: Cell<T>>(p: &RecurrentParams<T>) -> Result<(), CellError> {
    let (gates, cell) = (C::GATES, C::NAME);
    let bad = |what: String| Err(CellError::InvalidConfig(format!("{cell} parameters: {what}")));
    let (gh, i) = p.weight_ih.shape();
    let h = gh / gates;
    if gh == 0 || i == 0 || gh != gates * h {
        return bad(format!(
            "weight_ih{} is [{gh}, {i}], expected [{gates}·hidden, input] with both > 0",
            p.suffix()
        ));
    }
    // The output size: the projection's rows, or H.
    let out = match &p.weight_hr {
        None => h,
        Some(_) if !C::PROJECTION => {
            return bad(format!(
                "weight_hr{}: an {cell} has no projection; only the LSTM takes one",
                p.suffix()
            ))
        }
        Some(w) if w.ncols() != h || w.nrows() == 0 || w.nrows() >= h => {
            return bad(format!(
                "weight_hr{} is [{}, {}], expected [proj_size, {h}] with 0 < proj_size < {h}",
                p.suffix(),
                w.nrows(),
                w.ncols()
            ))
        }
        Some(w) => w.nrows(),
    };
    if p.weight_hh.shape() != (gh, out) {
        let (r, c) = p.weight_hh.shape();
        return bad(format!(
            "weight_hh{} is [{r}, {c}], expected [{gh}, {out}] to match weight_ih{}",
            p.suffix(),
            if p.weight_hr.is_some() { " and weight_hr" } else { "" }
        ));
    }
    match (&p.bias_ih, &p.bias_hh) {
        (None, None) => Ok(()),
        (Some(a), Some(b)) => {
            for (name, m) in [("bias_ih", a), ("bias_hh", b)] {
                if m.shape() != (gh, 1) {
                    return bad(format!(
                        "{name}{} has {} values ({}x{}), expected [{gh}]",
                        p.suffix(),
                        m.len(),
                        m.nrows(),
                        m.ncols()
                    ));
                }
            }
            Ok(())
        }
        _ => bad("give both bias_ih and bias_hh, or neither (bias=False)".into()),
    }
}
