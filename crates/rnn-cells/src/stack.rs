//! Multi-layer recurrent stacks, as `torch.nn.LSTM(num_layers = L, dropout = p)`, for any cell.
//!
//! Layer `k` reads the outputs of layer `k-1` (layer 0 reads the input, dense or by index):
//!
//! ```text
//! y⁰ = x,   yᵏ⁺¹, sᵏ_T = cellᵏ(dropout(yᵏ), sᵏ_0)   for k = 0..L-1,   output = yᴸ
//! ```
//!
//! `dropout` is inverted dropout, applied between layers only and only in training
//! ([`Stack::forward_train`] with an `Rng`): `dropout(y) = y ⊙ m`, `m_j = 1/(1-p)` with probability
//! `1-p` and `0` otherwise, so evaluation needs no rescaling and is the identity.
//!
//! Backward runs the layers top-down: each layer's input gradient `d yᵏ` is masked by the same
//! `m` (`d yᵏ ⊙ m`) and becomes the output gradient of layer `k-1`; the final-state gradients and
//! the returned initial-state gradients are per layer. The stack is itself a [`Recurrence`] (its
//! state is the `Vec` of layer states), so it carries state across truncated-BPTT windows like a
//! single cell, and its `forward` and `step` are evaluation-mode passes (no dropout).

use rnn_tensor::{Mat, Parameters, Rng, Scalar};

use crate::engine::ops::ensure_shape;
use crate::recurrence::BackwardKind;
use crate::{CellError, Recurrence, SeqInput};

/// The parameters of a [`Stack`] (and, as the same type, its gradients): the layers themselves,
/// bottom first, whose tensors are named `..._l{k}`. A gradient value holds cells whose tensors
/// are gradients; [`Parameters`] lists them all in order.
#[derive(Clone, Debug, PartialEq)]
pub struct StackParams<C> {
    /// Layer `k`.
    pub layers: Vec<C>,
}

impl<T: Scalar, C: Recurrence<T>> Parameters<T> for StackParams<C> {
    fn named_params(&self) -> Vec<(String, &Mat<T>)> {
        self.layers.iter().flat_map(|c| c.params().named_params()).collect()
    }
    fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<T>)> {
        self.layers.iter_mut().flat_map(|c| c.params_mut().named_params_mut()).collect()
    }
}

/// `L` recurrent layers of the same cell type, with optional dropout between them.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack<C> {
    params: StackParams<C>,
    dropout: f64,
}

/// What a stack's forward keeps for backward: each layer's cache, and in training with dropout
/// the masked inputs of layers `1..L` and their masks. Buffers are reused between calls.
pub struct StackCache<T: Scalar, C: Recurrence<T>> {
    batch: usize,
    layers: Vec<C::Cache>,
    /// Whether the last forward applied dropout (then `inputs`, `masks` are valid).
    dropped: bool,
    /// `inputs[k]` = dropout(outputs of layer k-1), for `k ≥ 1` (`inputs[0]` unused).
    inputs: Vec<Mat<T>>,
    /// `masks[k]`: the scaled mask `m` applied to layer k's input.
    masks: Vec<Mat<T>>,
    /// Backward's two gradient buffers: the output gradient of the layer being run and the
    /// input gradient it writes.
    d_cur: Mat<T>,
    d_in: Mat<T>,
}

impl<T: Scalar, C: Recurrence<T>> Default for StackCache<T, C> {
    fn default() -> Self {
        Self {
            batch: 0,
            layers: Vec::new(),
            dropped: false,
            inputs: Vec::new(),
            masks: Vec::new(),
            d_cur: Mat::zeros(0, 0),
            d_in: Mat::zeros(0, 0),
        }
    }
}

impl<C> Stack<C> {
    /// A stack of the given layers, bottom first. Layer `k` must read `H` of layer `k-1` and its
    /// parameter names must end in `_l{k}` (build it with the config's `.with_layer(k)`, or
    /// use [`Stack::from_fn`]).
    pub fn new<T: Scalar>(layers: Vec<C>) -> Result<Self, CellError>
    where
        C: Recurrence<T>,
    {
        if layers.is_empty() {
            return Err(CellError::InvalidConfig("a stack needs at least one layer".into()));
        }
        for (k, layer) in layers.iter().enumerate() {
            if k > 0 && layer.input_size() != layers[k - 1].hidden_size() {
                return Err(CellError::InvalidConfig(format!(
                    "layer {k} reads {} features but layer {} outputs {}; give layer {k} input size {}",
                    layer.input_size(),
                    k - 1,
                    layers[k - 1].hidden_size(),
                    layers[k - 1].hidden_size()
                )));
            }
            let suffix = format!("_l{k}");
            let reverse = format!("_l{k}_reverse");
            if let Some((name, _)) = layer
                .params()
                .named_params()
                .into_iter()
                .find(|(n, _)| !n.ends_with(&suffix) && !n.ends_with(&reverse))
            {
                return Err(CellError::InvalidConfig(format!(
                    "layer {k}'s parameter {name} does not end in {suffix}; build layer {k} with .with_layer({k})"
                )));
            }
        }
        Ok(Self { params: StackParams { layers }, dropout: 0.0 })
    }

    /// `num_layers` layers built by `make(k)` (which should give layer `k` the input size of
    /// the layer below and the name suffix `_l{k}`).
    pub fn from_fn<T: Scalar>(
        num_layers: usize,
        make: impl FnMut(usize) -> Result<C, CellError>,
    ) -> Result<Self, CellError>
    where
        C: Recurrence<T>,
    {
        Self::new((0..num_layers).map(make).collect::<Result<Vec<_>, _>>()?)
    }

    /// Inverted dropout with probability `p` on the inputs of layers `1..L` during training, as
    /// PyTorch's `dropout` argument. Default: 0. `p` must be in `[0, 1)`.
    pub fn with_dropout(mut self, p: f64) -> Result<Self, CellError> {
        if !(0.0..1.0).contains(&p) {
            return Err(CellError::InvalidConfig(format!("dropout must be in [0, 1), got {p}")));
        }
        self.dropout = p;
        Ok(self)
    }

    /// The dropout probability.
    pub fn dropout(&self) -> f64 {
        self.dropout
    }

    /// The number of layers `L`.
    pub fn num_layers(&self) -> usize {
        self.params.layers.len()
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[C] {
        &self.params.layers
    }

    /// All-zero gradients shaped like the parameters.
    pub fn zero_grads<T: Scalar>(&self) -> StackParams<C>
    where
        C: Recurrence<T> + Clone,
    {
        let mut g = self.params.clone();
        g.zero();
        g
    }

    /// The forward pass with dropout between layers when `train_rng` is given (training) and
    /// none when it is `None` (evaluation, identical to [`Recurrence::forward`]). Returns each
    /// layer's final state.
    ///
    /// # Panics
    /// If [`Recurrence::check_input`] rejects the arguments.
    pub fn forward_train<T: Scalar>(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        states: &[C::State],
        cache: &mut StackCache<T, C>,
        train_rng: Option<&mut Rng>,
    ) -> Vec<C::State>
    where
        C: Recurrence<T>,
    {
        let mut finals = states.to_vec();
        self.forward_layers(x, batch, None, states, cache, train_rng, &mut finals);
        finals
    }

    /// [`Stack::forward_train`] over sequences of their own lengths (see
    /// [`Recurrence::forward_lengths`]): every layer follows the same lengths.
    pub fn forward_train_lengths<T: Scalar>(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        lengths: &[usize],
        states: &[C::State],
        cache: &mut StackCache<T, C>,
        train_rng: Option<&mut Rng>,
    ) -> Vec<C::State>
    where
        C: Recurrence<T>,
    {
        let mut finals = states.to_vec();
        self.forward_layers(x, batch, Some(lengths), states, cache, train_rng, &mut finals);
        finals
    }

    /// [`Stack::forward_train`], writing each layer's final state into `finals` (one entry per
    /// layer, each reshaped as needed): allocates nothing once the buffers have their shapes.
    #[allow(clippy::too_many_arguments)]
    fn forward_layers<T: Scalar>(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        lengths: Option<&[usize]>,
        states: &[C::State],
        cache: &mut StackCache<T, C>,
        mut train_rng: Option<&mut Rng>,
        finals: &mut [C::State],
    ) where
        C: Recurrence<T>,
    {
        if let Err(e) = self.check_states(x, batch, states) {
            panic!("stack forward: {e}");
        }
        let layers = &self.params.layers;
        let l = layers.len();
        cache.batch = batch;
        cache.layers.resize_with(l, C::Cache::default);
        cache.inputs.resize_with(l, || Mat::zeros(0, 0));
        cache.masks.resize_with(l, || Mat::zeros(0, 0));
        let drop = self.dropout > 0.0 && train_rng.is_some();
        cache.dropped = drop;
        let keep = T::cast(1.0 / (1.0 - self.dropout));
        // One layer's forward, with or without lengths.
        let run = |layer: &C, x: SeqInput<'_, T>, h0: &C::State, c: &mut C::Cache, fin: &mut C::State| {
            match lengths {
                Some(l) => *fin = layer.forward_lengths(x, batch, l, h0, c),
                None => layer.forward_into(x, batch, h0, c, fin),
            }
        };
        for (k, layer) in layers.iter().enumerate() {
            let (below, here) = cache.layers.split_at_mut(k);
            let fin = &mut finals[k];
            if k == 0 {
                run(layer, x, &states[0], &mut here[0], fin)
            } else if let (true, Some(rng)) = (drop, train_rng.as_deref_mut()) {
                let y = layers[k - 1].outputs(&below[k - 1]);
                let (inp, mask) = (&mut cache.inputs[k], &mut cache.masks[k]);
                ensure_shape(inp, y.nrows(), y.ncols());
                ensure_shape(mask, y.nrows(), y.ncols());
                for ((m, v), &yv) in mask.iter_mut().zip(inp.iter_mut()).zip(y.iter()) {
                    // m = 1/(1-p) with probability 1-p, else 0
                    *m = if rng.next_f64() < self.dropout { T::ZERO } else { keep };
                    *v = yv * *m;
                }
                run(layer, SeqInput::Dense(&cache.inputs[k]), &states[k], &mut here[0], fin)
            } else {
                let y = layers[k - 1].outputs(&below[k - 1]);
                run(layer, SeqInput::Dense(y), &states[k], &mut here[0], fin)
            }
        }
    }

    /// Backward through the layers top-down, each layer the backward `kind` names (see
    /// [`Recurrence::backward`]); the initial-state gradients only for [`BackwardKind::WithInit`],
    /// `None` otherwise.
    fn backward_layers<T: Scalar>(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut StackCache<T, C>,
        d_out: &Mat<T>,
        d_final: &[C::State],
        grads: &mut StackParams<C>,
        mut d_x: Option<&mut Mat<T>>,
        kind: BackwardKind,
    ) -> Option<Vec<C::State>>
    where
        C: Recurrence<T>,
    {
        let l = self.params.layers.len();
        assert!(
            d_final.len() == l && grads.layers.len() == l && cache.layers.len() == l,
            "stack backward: {l} layers, {} final-state gradients, {} gradient sets, {} caches",
            d_final.len(),
            grads.layers.len(),
            cache.layers.len()
        );
        let StackCache { layers: caches, dropped, inputs, masks, d_cur, d_in, .. } = cache;
        let mut d_init: Vec<Option<C::State>> = vec![None; l];
        for k in (0..l).rev() {
            let layer = &self.params.layers[k];
            // The output gradient of layer k: the caller's for the top, else the masked input
            // gradient of layer k+1 (now in d_cur).
            let dy = if k == l - 1 { d_out } else { &*d_cur };
            let g = grads.layers[k].params_mut();
            let (below, here) = caches.split_at_mut(k);
            let d0 = if k == 0 {
                kind.run(layer, x, &mut here[0], dy, &d_final[0], g, d_x.take())
            } else {
                let input =
                    if *dropped { &inputs[k] } else { self.params.layers[k - 1].outputs(&below[k - 1]) };
                // Sized here: a cell may expect d_x already shaped like its input.
                ensure_shape(d_in, input.nrows(), input.ncols());
                let d0 =
                    kind.run(layer, SeqInput::Dense(input), &mut here[0], dy, &d_final[k], g, Some(d_in));
                if *dropped {
                    // d yᵏ = d(input of layer k) ⊙ m
                    d_in.component_mul_assign(&masks[k]);
                }
                std::mem::swap(d_cur, d_in);
                d0
            };
            d_init[k] = d0;
        }
        (kind == BackwardKind::WithInit)
            .then(|| d_init.into_iter().map(|s| s.expect("every layer ran backward")).collect())
    }

    /// The states of every layer for a batch of `batch`, all zero.
    pub fn zero_states<T: Scalar>(&self, batch: usize) -> Vec<C::State>
    where
        C: Recurrence<T>,
    {
        self.params.layers.iter().map(|l| l.zero_state(batch)).collect()
    }

    /// [`Recurrence::check_input`] for a slice of layer states.
    pub fn check_states<T: Scalar>(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &[C::State],
    ) -> Result<(), CellError>
    where
        C: Recurrence<T>,
    {
        let layers = &self.params.layers;
        if h0.len() != layers.len() {
            return Err(CellError::InvalidInput(format!(
                "the stack has {} layers but the state has {} entries; start from zero_state(batch)",
                layers.len(),
                h0.len()
            )));
        }
        layers[0].check_input(x, batch, &h0[0])?;
        for (k, (layer, s)) in layers.iter().zip(h0).enumerate().skip(1) {
            // An empty index sequence checks the state alone.
            layer.check_input(SeqInput::Index(&[]), batch, s).map_err(|e| match e {
                CellError::InvalidInput(m) => CellError::InvalidInput(format!("layer {k}: {m}")),
                e => e,
            })?;
        }
        Ok(())
    }
}

impl<T: Scalar, C: Recurrence<T> + Clone + std::fmt::Debug> Recurrence<T> for Stack<C> {
    type State = Vec<C::State>;
    type Params = StackParams<C>;
    type Cache = StackCache<T, C>;

    fn input_size(&self) -> usize {
        self.params.layers[0].input_size()
    }
    fn hidden_size(&self) -> usize {
        self.params.layers[self.params.layers.len() - 1].hidden_size()
    }
    fn params(&self) -> &Self::Params {
        &self.params
    }
    fn params_mut(&mut self) -> &mut Self::Params {
        &mut self.params
    }
    fn zero_state(&self, batch: usize) -> Vec<C::State> {
        self.zero_states(batch)
    }
    fn state_output(state: &Vec<C::State>) -> &Mat<T> {
        C::state_output(state.last().expect("a stack state has one entry per layer"))
    }

    fn check_input(&self, x: SeqInput<'_, T>, batch: usize, h0: &Vec<C::State>) -> Result<(), CellError> {
        self.check_states(x, batch, h0)
    }

    fn step(&self, x: SeqInput<'_, T>, state: &mut Vec<C::State>) {
        assert_eq!(
            state.len(),
            self.params.layers.len(),
            "stack step: {} states for {} layers",
            state.len(),
            self.params.layers.len()
        );
        self.params.layers[0].step(x, &mut state[0]);
        for k in 1..self.params.layers.len() {
            let (below, here) = state.split_at_mut(k);
            self.params.layers[k].step(SeqInput::Dense(C::state_output(&below[k - 1])), &mut here[0]);
        }
    }

    fn forward(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &Vec<C::State>,
        cache: &mut Self::Cache,
    ) -> Vec<C::State> {
        self.forward_train(x, batch, h0, cache, None)
    }

    fn forward_into(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &Vec<C::State>,
        cache: &mut Self::Cache,
        fin: &mut Vec<C::State>,
    ) {
        if fin.len() != h0.len() {
            fin.clone_from(h0);
        }
        self.forward_layers(x, batch, None, h0, cache, None, fin);
    }

    fn forward_lengths(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        lengths: &[usize],
        h0: &Vec<C::State>,
        cache: &mut Self::Cache,
    ) -> Vec<C::State> {
        self.forward_train_lengths(x, batch, lengths, h0, cache, None)
    }

    fn outputs<'c>(&self, cache: &'c Self::Cache) -> &'c Mat<T> {
        let l = self.params.layers.len();
        self.params.layers[l - 1].outputs(&cache.layers[l - 1])
    }

    fn backward(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Vec<C::State>,
        grads: &mut Self::Params,
        d_x: Option<&mut Mat<T>>,
    ) -> Vec<C::State> {
        self.backward_layers(x, cache, d_out, d_final, grads, d_x, BackwardKind::WithInit)
            .expect("the initial-state gradients were asked for")
    }

    fn backward_detached(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Vec<C::State>,
        grads: &mut Self::Params,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_layers(x, cache, d_out, d_final, grads, d_x, BackwardKind::Detached);
    }

    fn backward_detached_overwrite(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Vec<C::State>,
        grads: &mut Self::Params,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward_layers(x, cache, d_out, d_final, grads, d_x, BackwardKind::Overwrite);
    }

    fn freeze_weights(&self, cache: &mut Self::Cache) {
        let layers = &self.params.layers;
        cache.layers.resize_with(layers.len(), C::Cache::default);
        layers.iter().zip(&mut cache.layers).for_each(|(l, c)| l.freeze_weights(c));
    }

    fn set_precision(
        &self,
        cache: &mut Self::Cache,
        precision: rnn_tensor::Precision,
    ) -> Result<(), CellError> {
        let layers = &self.params.layers;
        cache.layers.resize_with(layers.len(), C::Cache::default);
        // Check every layer before changing any.
        for l in layers {
            l.set_precision(&mut C::Cache::default(), precision)?;
        }
        layers.iter().zip(&mut cache.layers).try_for_each(|(l, c)| l.set_precision(c, precision))
    }
}
