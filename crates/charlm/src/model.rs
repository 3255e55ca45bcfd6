//! What the trainer, the evaluator and the sampler need from a model, as one trait.
//!
//! [`LanguageModel`] is written against batches of character indices in the project's
//! step-major layout (`inputs[t·B + b]`); the recurrent state is opaque except that it can be
//! flattened to matrices for the training state file.

use rnn_data::Vocab;
use rnn_tensor::{Mat, Parameters, Precision, Rng, Scalar};

use crate::{CharLmError, ModelConfig};

/// A character-level language model: next-character logits from the characters so far.
pub trait LanguageModel<T: Scalar> {
    /// The parameters, named as PyTorch's `state_dict` (`rnn.weight_ih_l0`, ..., `head.bias`);
    /// gradients are a value of the same type.
    type Params: Parameters<T> + Clone;
    /// The recurrent state of a batch.
    type State: Clone;

    /// A model of `config` with freshly initialised weights drawn from `rng`.
    fn build(config: &ModelConfig, rng: &mut Rng) -> Result<Self, CharLmError>
    where
        Self: Sized;
    /// The configuration.
    fn config(&self) -> &ModelConfig;
    /// The parameters.
    fn params(&self) -> &Self::Params;
    /// The parameters, mutably.
    fn params_mut(&mut self) -> &mut Self::Params;
    /// All-zero gradients.
    fn zero_grads(&self) -> Self::Params;
    /// The zero state of a batch of `batch`.
    fn zero_state(&self, batch: usize) -> Self::State;

    /// One training batch: forward (with dropout drawn from `rng`), the mean cross-entropy over
    /// its `T·B` predictions, and backward through time, **writing** the parameter gradients
    /// into `grads` (their old values are never read, as PyTorch's after `zero_grad()`; the
    /// trainer does not zero them first). `state` starts the batch and is replaced by its final
    /// state (truncated BPTT: no gradient flows into the previous batch). Returns the loss.
    fn train_batch(
        &mut self,
        inputs: &[usize],
        targets: &[usize],
        batch: usize,
        state: &mut Self::State,
        grads: &mut Self::Params,
        rng: &mut Rng,
    ) -> Result<f64, CharLmError>;

    /// Forward only, without dropout: the **sum** of the cross-entropies of the `T·B`
    /// predictions. `state` is advanced.
    fn eval_chunk(
        &mut self,
        inputs: &[usize],
        targets: &[usize],
        batch: usize,
        state: &mut Self::State,
    ) -> Result<f64, CharLmError>;

    /// One step of batch 1 for sampling: feeds `input`, advances `state`, writes the `V`
    /// logits of the next character into `logits`.
    fn step_logits(&mut self, input: usize, state: &mut Self::State, logits: &mut Mat<T>);

    /// Sets the precision of [`LanguageModel::eval_chunk`] and of the generation steps
    /// ([`Precision::Bf16`]: the recurrent products in bf16, see rnn-cells'
    /// `Recurrence::set_precision`); training always runs in the model's own type. An error if
    /// the precision cannot run here. The default accepts [`Precision::Full`] only.
    fn set_inference_precision(&mut self, precision: Precision) -> Result<(), CharLmError> {
        match precision {
            Precision::Full => Ok(()),
            _ => Err(CharLmError::arg("--dtype", format!("this model computes in {} only", T::NAME))),
        }
    }

    /// Sets the precision of [`LanguageModel::train_batch`]'s recurrent products
    /// ([`Precision::Bf16`]: mixed precision, the forward's products in bf16 and the backward
    /// that of the rounded operands; the parameters, their gradients and the optimizer stay in
    /// `T`). An error if the precision cannot run here. The default accepts
    /// [`Precision::Full`] only.
    fn set_training_precision(&mut self, precision: Precision) -> Result<(), CharLmError> {
        match precision {
            Precision::Full => Ok(()),
            _ => Err(CharLmError::arg("--dtype", format!("this model trains in {} only", T::NAME))),
        }
    }

    /// Called before an evaluation's chunks ([`evaluate_warm`] calls it): the weights will not
    /// change until [`LanguageModel::end_evaluation`], so that
    /// [`LanguageModel::eval_chunk`] may keep them packed from chunk to chunk. The default does
    /// nothing.
    fn start_evaluation(&mut self) -> Result<(), CharLmError> {
        Ok(())
    }

    /// Called after an evaluation's chunks, whether they succeeded or not: back to packing the
    /// weights per call. The default does nothing.
    fn end_evaluation(&mut self) {}

    /// Called before a generation's steps: the weights will not change until the next call, so
    /// that [`LanguageModel::step_logits`] may keep them packed. The default does nothing.
    fn start_generation(&mut self) -> Result<(), CharLmError> {
        Ok(())
    }

    /// The state as matrices (for the training state file).
    fn state_to_mats(state: &Self::State) -> Vec<Mat<f64>>;
    /// Rebuilds a state of batch `batch` from [`LanguageModel::state_to_mats`], checking shapes.
    fn state_from_mats(&self, mats: &[Mat<f64>], batch: usize) -> Result<Self::State, String>;
}

/// The mean loss (nats per character) of predicting every character of `data` from all the
/// characters before it, as `stream_count` parallel streams read `chunk` steps at a time
/// from a zero state. Stream `b` covers `[b·n, (b+1)·n + 1)` with `n = ⌊(len - 1) / B⌋`, so
/// with `B = 1` every character after the first is predicted once; with more streams the last
/// `(len - 1) mod B` predictions are skipped and each stream's first character starts from a
/// zero state. [`evaluate_warm`] with no warm-up.
pub fn evaluate<T: Scalar, M: LanguageModel<T>>(
    model: &mut M,
    data: &[usize],
    streams: usize,
    chunk: usize,
) -> Result<f64, CharLmError> {
    evaluate_warm(model, data, streams, chunk, 0)
}

/// [`evaluate`] with each stream's state warmed up first: the predictions scored are those of
/// the characters after the first `w + 1` (`w = warmup`, or 0 when `data` holds no more than
/// `2·warmup + 1` characters), `P = len - 1 - w` of them, as `B` streams of
/// `n = ⌊P / B⌋`: stream `b` scores inputs `[w + b·n, w + (b+1)·n)` after reading, from a zero
/// state and unscored, the `w` characters before them. So every scored character has at least
/// `w` characters of context, as it would read as one stream (a zero state at each of many
/// stream starts raises the loss: by 0.016 nats/char for a 2×512 LSTM read as 217 streams, see
/// docs/04), at the cost of `w` more steps per stream.
pub fn evaluate_warm<T: Scalar, M: LanguageModel<T>>(
    model: &mut M,
    data: &[usize],
    streams: usize,
    chunk: usize,
    warmup: usize,
) -> Result<f64, CharLmError> {
    if data.len() < 2 {
        return Err(CharLmError::arg("text", "needs at least 2 characters to predict one from the other"));
    }
    if streams == 0 || chunk == 0 {
        return Err(CharLmError::arg("evaluation", "streams and chunk length must be positive"));
    }
    model.start_evaluation()?;
    let result = evaluate_chunks(model, data, streams, chunk, warmup);
    model.end_evaluation();
    result
}

/// The loop of [`evaluate_warm`], its arguments checked.
fn evaluate_chunks<T: Scalar, M: LanguageModel<T>>(
    model: &mut M,
    data: &[usize],
    streams: usize,
    chunk: usize,
    warmup: usize,
) -> Result<f64, CharLmError> {
    let w = if data.len() > 2 * warmup + 1 { warmup } else { 0 };
    let predictions = data.len() - 1 - w;
    let b = streams.min(predictions);
    let n = predictions / b;
    let mut state = model.zero_state(b);
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    let mut total = 0.0;
    // Steps 0..w warm the states up (their losses are not counted), steps w..w + n are scored;
    // step `t` of stream `s` reads position `s·n + t`.
    let mut start = 0;
    while start < w + n {
        // A chunk ends where the warm-up does, so that no chunk mixes the two.
        let end = (start + chunk).min(if start < w { w } else { w + n });
        inputs.clear();
        targets.clear();
        for t in start..end {
            for s in 0..b {
                let pos = s * n + t;
                inputs.push(data[pos]);
                targets.push(data[pos + 1]);
            }
        }
        let loss = model.eval_chunk(&inputs, &targets, b, &mut state)?;
        if start >= w {
            total += loss;
        }
        start = end;
    }
    Ok(total / (n * b) as f64)
}

/// Generates `length` characters after `prime` (which must already be encoded) and returns
/// them (without the prime). With an empty prime the first character is drawn uniformly and is
/// the first of the `length`.
pub fn generate<T: Scalar, M: LanguageModel<T>>(
    model: &mut M,
    vocab: &Vocab,
    prime: &[usize],
    length: usize,
    cfg: &crate::sample::SamplingConfig,
    rng: &mut Rng,
) -> Result<String, CharLmError> {
    let mut out = String::with_capacity(length);
    generate_with(model, vocab, prime, length, cfg, rng, &mut |c| {
        out.push(c);
        Ok(())
    })?;
    Ok(out)
}

/// [`generate`], handing each character to `emit` as soon as it is drawn; an error from `emit`
/// (standard output closed, say) stops generation at once and is returned.
pub fn generate_with<T: Scalar, M: LanguageModel<T>>(
    model: &mut M,
    vocab: &Vocab,
    prime: &[usize],
    length: usize,
    cfg: &crate::sample::SamplingConfig,
    rng: &mut Rng,
    emit: &mut dyn FnMut(char) -> Result<(), CharLmError>,
) -> Result<(), CharLmError> {
    cfg.check()?;
    if let Some(&bad) = prime.iter().find(|&&i| i >= vocab.len()) {
        return Err(rnn_data::DataError::BadIndex { index: bad, size: vocab.len() }.into());
    }
    let decode = |i: usize| {
        vocab
            .char_at(i)
            .ok_or(CharLmError::from(rnn_data::DataError::BadIndex { index: i, size: vocab.len() }))
    };
    if length == 0 {
        return Ok(());
    }
    model.start_generation()?;
    let mut state = model.zero_state(1);
    let mut logits = Mat::zeros(vocab.len(), 1);
    let mut weights = Vec::new();
    let mut produced = 0;
    let mut next = match prime.split_last() {
        None => {
            let first = rng.below(vocab.len());
            emit(decode(first)?)?;
            produced += 1;
            first
        }
        Some((&last, head)) => {
            for &c in head {
                model.step_logits(c, &mut state, &mut logits);
            }
            last
        }
    };
    while produced < length {
        model.step_logits(next, &mut state, &mut logits);
        next = crate::sample::pick(logits.as_slice(), cfg, rng, &mut weights)?;
        emit(decode(next)?)?;
        produced += 1;
    }
    Ok(())
}
