//! Streaming inference, for deployment: a model fed one step (or a few) at a time, its state
//! carried from call to call, nothing allocated per call once the first call has sized the
//! buffers.
//!
//! ```text
//! out_t, s_t = model(x_t, s_{t-1})        s_0 = 0 (or a state set with set_state)
//! ```
//!
//! A server that keeps many streams (one per connection) keeps one [`Stream`] for each, or one
//! model and a state per stream, swapped in and out with [`Stream::state`] and
//! [`Stream::set_state`]. Any [`Recurrence`] streams: a layer, a stack, a trained language model's
//! recurrent part. (A bidirectional layer reads its sequences backwards as well, so a stream of
//! it sees each call's steps as a sequence of their own.)

use std::mem;

use rnn_tensor::{Mat, Precision, Scalar};

use crate::{CellError, Recurrence, RecurrentState, SeqInput};

/// A model, its state and its buffers, advanced a few steps per call (see the module docs).
pub struct Stream<T: Scalar, M: Recurrence<T>> {
    model: M,
    batch: usize,
    state: M::State,
    next: M::State,
    cache: M::Cache,
}

impl<T: Scalar, M: Recurrence<T>> Stream<T, M> {
    /// A stream of `batch` independent sequences through `model`, from the zero state.
    pub fn new(model: M, batch: usize) -> Result<Self, CellError> {
        if batch == 0 {
            return Err(CellError::InvalidConfig("a stream needs a batch of at least 1".into()));
        }
        let state = model.zero_state(batch);
        // The stream owns the model and lends it out immutably: its weights cannot change.
        let mut cache = M::Cache::default();
        model.freeze_weights(&mut cache);
        Ok(Self { next: state.clone(), state, batch, cache, model })
    }

    /// Feeds the next steps: `x` holds `k·B` columns (`k ≥ 1` steps of the `B` sequences, step
    /// after step, as everywhere in this crate) or `k·B` indices; returns the outputs of those
    /// steps, `H × (k·B)`. The state moves on by `k` steps. Input that does not fit (rows,
    /// columns, an index out of range) is an error and leaves the stream as it was.
    pub fn step(&mut self, x: SeqInput<'_, T>) -> Result<&Mat<T>, CellError> {
        if x.columns() == 0 {
            return Err(CellError::InvalidInput(format!(
                "a stream step needs at least one step of the batch of {}",
                self.batch
            )));
        }
        self.model.check_input(x, self.batch, &self.state)?;
        self.model.forward_into(x, self.batch, &self.state, &mut self.cache, &mut self.next);
        mem::swap(&mut self.state, &mut self.next);
        Ok(self.model.outputs(&self.cache))
    }

    /// Computes the next steps' products in `precision` ([`Recurrence::set_precision`]): bf16
    /// for deployment on CPUs that have it, with the weights rounded and packed once. An error
    /// (one line) if the precision cannot run here or for this model; the stream is then as it
    /// was.
    pub fn set_precision(&mut self, precision: Precision) -> Result<(), CellError> {
        self.model.set_precision(&mut self.cache, precision)
    }

    /// Back to the zero state.
    pub fn reset(&mut self) {
        for k in 0..self.state.num_parts() {
            self.state.part_mut(k).fill(T::ZERO);
        }
    }

    /// The state after the last step (every part `H × B`).
    pub fn state(&self) -> &M::State {
        &self.state
    }

    /// Continues from `state` (for example one kept for another client), which must be shaped
    /// like this stream's.
    pub fn set_state(&mut self, state: M::State) -> Result<(), CellError> {
        let (have, want) = (state.parts(), self.state.parts());
        if have.len() != want.len() || have.iter().zip(&want).any(|(a, b)| a.shape() != b.shape()) {
            return Err(CellError::InvalidInput(format!(
                "the state has parts {:?}, this stream's are {:?}",
                have.iter().map(|m| m.shape()).collect::<Vec<_>>(),
                want.iter().map(|m| m.shape()).collect::<Vec<_>>()
            )));
        }
        self.state = state;
        Ok(())
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The batch `B`.
    pub fn batch(&self) -> usize {
        self.batch
    }
}
