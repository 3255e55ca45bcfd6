//! The character-level model on the cells: one-hot input by index → a [`Stack`] of `L` cells
//! → an [`Affine`] head → softmax cross-entropy averaged over all predictions.
//!
//! Forward over a batch of `T` steps and `B` streams (`N = T·B` columns, step-major):
//!
//! ```text
//! h^L_{1..T} = stack(x_{1..T}, s_0)          x_t given as indices: layer 0's W_ih·x is a gather
//! z = W_head · h^L + b_head                   V × N logits
//! loss = -(1/N) Σ_n log softmax(z_n)[y_n]
//! ```
//!
//! Backward: `dz = (softmax(z) - onehot(y)) / N`, then the head's backward gives
//! `dh^L = W_headᵀ · dz` (and `dW_head`, `db_head`), and the stack's BPTT takes `dh^L` with a zero
//! final-state gradient (truncated BPTT: the batch's final state is carried forward as a value).

use rnn_cells::{
    softmax_cross_entropy, Affine, AffineConfig, Cell, Layer, Recurrence, RecurrentConfig, RecurrentState,
    Reduction, SeqInput, Stack, StackCache,
};
use rnn_tensor::{Mat, Parameters, Precision, Rng, Scalar};

use crate::model::LanguageModel;
use crate::{CellKind, CharLmError, ModelConfig};

/// The parameters of a [`CharRnn`] (and, as the same type, its gradients): the stack, whose
/// tensors are named `rnn.weight_ih_l0`, …, and the head, `head.weight` and `head.bias`.
#[derive(Clone, Debug)]
pub struct CharRnnParams<T: Scalar, C> {
    /// The recurrent layers.
    pub rnn: Stack<C>,
    /// The output layer.
    pub head: Affine<T>,
}

impl<T: Scalar, C: Recurrence<T> + Clone + std::fmt::Debug> Parameters<T> for CharRnnParams<T, C> {
    fn named_params(&self) -> Vec<(String, &Mat<T>)> {
        let mut v: Vec<(String, &Mat<T>)> =
            self.rnn.params().named_params().into_iter().map(|(n, m)| (format!("rnn.{n}"), m)).collect();
        v.extend(self.head.params.named_params());
        v
    }
    fn named_params_mut(&mut self) -> Vec<(String, &mut Mat<T>)> {
        let mut v: Vec<(String, &mut Mat<T>)> = self
            .rnn
            .params_mut()
            .named_params_mut()
            .into_iter()
            .map(|(n, m)| (format!("rnn.{n}"), m))
            .collect();
        v.extend(self.head.params.named_params_mut());
        v
    }
}

/// The character-level language model over cells `C` (see the module docs).
pub struct CharRnn<T: Scalar, C: Recurrence<T>> {
    config: ModelConfig,
    params: CharRnnParams<T, C>,
    cache: StackCache<T, C>,
    logits: Mat<T>,
    d_logits: Mat<T>,
    d_h: Mat<T>,
    /// The final state of an evaluation chunk, before it replaces the caller's.
    next: Vec<C::State>,
    /// Training with head dropout: the last layer's outputs dropped out (the head's input) and
    /// the mask (`0` or `1/(1-p)` per element).
    head_in: Mat<T>,
    head_mask: Mat<T>,
    /// The precision of evaluation and generation.
    precision: Precision,
    /// The precision of training.
    train_precision: Precision,
    /// A generation's cache (its weights frozen, packed once by its first step) and next state.
    generation: Option<Generation<T, C>>,
    /// An evaluation's cache, between [`LanguageModel::start_evaluation`] and
    /// [`LanguageModel::end_evaluation`]: its weights frozen, so that its chunks pack them
    /// once instead of once a chunk.
    evaluation: Option<StackCache<T, C>>,
}

/// A generation's frozen cache and the buffer of its next state.
type Generation<T, C> = (StackCache<T, C>, Vec<<C as Recurrence<T>>::State>);

impl<T: Scalar, C: Recurrence<T> + Clone> Clone for CharRnn<T, C> {
    /// The same configuration and weights, with empty work buffers.
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            params: self.params.clone(),
            cache: StackCache::default(),
            logits: Mat::zeros(0, 0),
            d_logits: Mat::zeros(0, 0),
            d_h: Mat::zeros(0, 0),
            next: Vec::new(),
            head_in: Mat::zeros(0, 0),
            head_mask: Mat::zeros(0, 0),
            precision: self.precision,
            train_precision: self.train_precision,
            generation: None,
            evaluation: None,
        }
    }
}

/// The model's cell kind for a layer's cell (by the cell's name: `"LSTM"` is `lstm`, ...).
fn kind_of<T: Scalar, K: Cell<T>>() -> Option<CellKind> {
    CellKind::from_name(&K::NAME.to_lowercase())
}

impl<T: Scalar, K> LanguageModel<T> for CharRnn<T, Layer<T, K>>
where
    K: Cell<T>,
{
    type Params = CharRnnParams<T, Layer<T, K>>;
    type State = Vec<K::State>;

    fn build(config: &ModelConfig, rng: &mut Rng) -> Result<Self, CharLmError> {
        config.check()?;
        if kind_of::<T, K>() != Some(config.cell) {
            return Err(CharLmError::arg(
                "--cell",
                format!("this model is a {}, the configuration asks for {}", K::NAME, config.cell),
            ));
        }
        // The vanilla RNN's default cell is tanh, PyTorch's default nonlinearity for nn.RNN.
        let rnn = RecurrentConfig::<K>::new(config.vocab_size, config.hidden)
            .build_stack(config.layers, rng)?
            .with_dropout(config.dropout)?;
        let head = AffineConfig::new(config.hidden, config.vocab_size).with_prefix("head.").build(rng)?;
        Ok(Self {
            config: config.clone(),
            params: CharRnnParams { rnn, head },
            cache: StackCache::default(),
            logits: Mat::zeros(0, 0),
            d_logits: Mat::zeros(0, 0),
            d_h: Mat::zeros(0, 0),
            next: Vec::new(),
            head_in: Mat::zeros(0, 0),
            head_mask: Mat::zeros(0, 0),
            precision: Precision::Full,
            train_precision: Precision::Full,
            generation: None,
            evaluation: None,
        })
    }
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn params(&self) -> &Self::Params {
        &self.params
    }
    fn params_mut(&mut self) -> &mut Self::Params {
        // The caller may change the weights: a generation's or an evaluation's packing would
        // be stale.
        self.generation = None;
        self.evaluation = None;
        &mut self.params
    }
    fn zero_grads(&self) -> Self::Params {
        let mut g = self.params.clone();
        g.zero();
        g
    }
    fn zero_state(&self, batch: usize) -> Self::State {
        self.params.rnn.zero_state(batch)
    }

    fn train_batch(
        &mut self,
        inputs: &[usize],
        targets: &[usize],
        batch: usize,
        state: &mut Self::State,
        grads: &mut Self::Params,
        rng: &mut Rng,
    ) -> Result<f64, CharLmError> {
        // The weights are about to change: a generation's packing is stale.
        self.generation = None;
        self.evaluation = None;
        let p = self.config.head_dropout;
        let Self { params, cache, logits, d_logits, d_h, head_in, head_mask, train_precision, .. } = self;
        let x = SeqInput::Index(inputs);
        params.rnn.check_input(x, batch, state)?;
        params.rnn.set_precision(cache, *train_precision)?;
        let fin = params.rnn.forward_train(x, batch, state, cache, Some(rng));
        let mut h = params.rnn.outputs(cache);
        if p > 0.0 {
            // Inverted dropout on the head's input, drawn after the stack's masks:
            // u = h ⊙ m, m_j = 1/(1-p) with probability 1-p, else 0.
            let keep = T::cast(1.0 / (1.0 - p));
            if head_mask.shape() != h.shape() {
                *head_mask = Mat::zeros(h.nrows(), h.ncols());
            }
            for m in head_mask.iter_mut() {
                *m = if rng.next_f64() < p { T::ZERO } else { keep };
            }
            if head_in.shape() != h.shape() {
                *head_in = Mat::zeros(h.nrows(), h.ncols());
            }
            head_in.copy_from(h);
            head_in.component_mul_assign(head_mask);
            h = head_in;
        }
        params.head.forward_into(h, logits);
        // dz = (softmax(z) - onehot(y)) / N
        let loss = softmax_cross_entropy(logits, targets, batch, Reduction::Mean, Some(d_logits))?;
        if d_h.shape() != h.shape() {
            *d_h = Mat::zeros(h.nrows(), h.ncols());
        }
        // dW_head = dz · uᵀ, db_head = Σ dz, du = W_headᵀ · dz (u = h, or h ⊙ m); the head's
        // gradients are small (V × (H + 1)): zeroed, then added into.
        grads.head.params.zero();
        params.head.backward_into(h, d_logits, &mut grads.head.params, d_h);
        if p > 0.0 {
            // dh = du ⊙ m
            d_h.component_mul_assign(head_mask);
        }
        // The stack's gradients written, not added (each weight gradient's first product
        // overwrites it), and no gradient for the starting state (truncated BPTT).
        let zero_final = params.rnn.zero_state(batch);
        params.rnn.backward_detached_overwrite(x, cache, d_h, &zero_final, grads.rnn.params_mut(), None);
        *state = fin;
        Ok(loss.to_f64())
    }

    fn eval_chunk(
        &mut self,
        inputs: &[usize],
        targets: &[usize],
        batch: usize,
        state: &mut Self::State,
    ) -> Result<f64, CharLmError> {
        let Self { params, cache, logits, next, precision, evaluation, .. } = self;
        let x = SeqInput::Index(inputs);
        params.rnn.check_input(x, batch, state)?;
        let cache = match evaluation {
            // Frozen, set to this precision by `start_evaluation`.
            Some(frozen) => frozen,
            None => {
                // (Training shares the cache and sets it back to its own precision.)
                params.rnn.set_precision(cache, *precision)?;
                cache
            }
        };
        // The allocation-free forward (no dropout, no gradients): once the buffers have their
        // shapes, a validation allocates nothing per chunk.
        params.rnn.forward_into(x, batch, state, cache, next);
        params.head.forward_into(params.rnn.outputs(cache), logits);
        let mean = softmax_cross_entropy(logits, targets, batch, Reduction::Mean, None)?;
        std::mem::swap(state, next);
        Ok(mean.to_f64() * inputs.len() as f64)
    }

    fn step_logits(&mut self, input: usize, state: &mut Self::State, logits: &mut Mat<T>) {
        let x = SeqInput::Index(std::slice::from_ref(&input));
        match &mut self.generation {
            Some((cache, next)) => {
                self.params.rnn.forward_into(x, 1, state, cache, next);
                std::mem::swap(state, next);
            }
            None => self.params.rnn.step(x, state),
        }
        self.params.head.forward_into(Stack::<Layer<T, K>>::state_output(state), logits);
    }

    fn set_inference_precision(&mut self, precision: Precision) -> Result<(), CharLmError> {
        self.params.rnn.set_precision(&mut StackCache::default(), precision)?;
        self.precision = precision;
        Ok(())
    }

    fn set_training_precision(&mut self, precision: Precision) -> Result<(), CharLmError> {
        self.params.rnn.set_precision(&mut StackCache::default(), precision)?;
        self.train_precision = precision;
        Ok(())
    }

    fn start_evaluation(&mut self) -> Result<(), CharLmError> {
        let mut cache = StackCache::default();
        self.params.rnn.freeze_weights(&mut cache);
        self.params.rnn.set_precision(&mut cache, self.precision)?;
        self.evaluation = Some(cache);
        Ok(())
    }

    fn end_evaluation(&mut self) {
        self.evaluation = None;
    }

    fn start_generation(&mut self) -> Result<(), CharLmError> {
        let mut cache = StackCache::default();
        self.params.rnn.freeze_weights(&mut cache);
        self.params.rnn.set_precision(&mut cache, self.precision)?;
        self.generation = Some((cache, Vec::new()));
        Ok(())
    }

    fn state_to_mats(state: &Self::State) -> Vec<Mat<f64>> {
        state.parts().into_iter().map(|m| m.map(|v| v.to_f64())).collect()
    }

    fn state_from_mats(&self, mats: &[Mat<f64>], batch: usize) -> Result<Self::State, String> {
        let mut state = self.zero_state(batch);
        let mut slots = state.parts_mut();
        if slots.len() != mats.len() {
            return Err(format!(
                "the saved state has {} matrices, the model needs {}",
                mats.len(),
                slots.len()
            ));
        }
        for (dst, src) in slots.iter_mut().zip(mats) {
            if dst.shape() != src.shape() {
                return Err(format!(
                    "a saved state matrix is {:?}, the model needs {:?}",
                    src.shape(),
                    dst.shape()
                ));
            }
            for (d, &s) in dst.iter_mut().zip(src.iter()) {
                *d = T::cast(s);
            }
        }
        Ok(state)
    }
}
