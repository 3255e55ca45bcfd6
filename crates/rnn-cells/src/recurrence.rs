//! The one recurrence trait.

use rnn_tensor::{Mat, Parameters, Precision, Scalar};

use crate::engine::ops::{check_seq, check_state_part};
use crate::{CellError, RecurrentState};

/// The input of one step or one sequence.
#[derive(Clone, Copy, Debug)]
pub enum SeqInput<'a, T> {
    /// Dense features, `input_size × (T·B)` (or `input_size × B` for one step).
    Dense(&'a Mat<T>),
    /// One index per column, each below `input_size`: the one-hot input, without the one-hot
    /// matrix. The input product becomes a gather of `weight_ih` columns and its gradient a
    /// scatter-add; there is no input gradient.
    Index(&'a [usize]),
}

impl<T> SeqInput<'_, T> {
    /// The number of columns (`T·B` for a sequence, `B` for a step).
    pub fn columns(&self) -> usize {
        match self {
            SeqInput::Dense(m) => m.ncols(),
            SeqInput::Index(ix) => ix.len(),
        }
    }
}

/// A recurrent cell: `state_t = cell(x_t, state_{t-1})`, with output `h_t` read off the state.
///
/// Shapes (`I` input size, `H` hidden size, `B` batch, `T` steps):
/// - inputs are [`SeqInput`] with `T·B` columns, step-major;
/// - [`Recurrence::outputs`] is `H × (T·B)`, the `h_t` of every step;
/// - states hold `H × B` matrices.
///
/// Gradients are a value of the parameter type ([`Recurrence::Params`]), so they pair with the
/// parameters by name for the optimizers.
pub trait Recurrence<T: Scalar> {
    /// The recurrent state, for example `LstmState { h, c }`.
    type State: RecurrentState<T>;
    /// The parameters (and, as the same type, their gradients).
    type Params: Parameters<T> + Clone + std::fmt::Debug;
    /// What the forward pass keeps for backward; reused between calls so the time loop
    /// allocates nothing once it has grown to size.
    type Cache: Default;

    /// `I`.
    fn input_size(&self) -> usize;
    /// `H`.
    fn hidden_size(&self) -> usize;
    /// The parameters.
    fn params(&self) -> &Self::Params;
    /// The parameters, mutably.
    fn params_mut(&mut self) -> &mut Self::Params;

    /// The all-zero state for a batch of `batch`.
    fn zero_state(&self, batch: usize) -> Self::State;
    /// The output `h` of a state (`H × B`).
    fn state_output(state: &Self::State) -> &Mat<T>;

    /// Checks that `x`, `batch` and `h0` fit the cell (what [`Recurrence::forward`] assumes):
    /// `batch > 0`, `T·B` columns with `B = batch`, `I` rows (or indices below `I`), and a state of
    /// `H × batch` matrices. The default checks the output part of the state; cells with more
    /// state (the LSTM's `c`) extend it. Call it on data a user handed in; the stack does.
    fn check_input(&self, x: SeqInput<'_, T>, batch: usize, h0: &Self::State) -> Result<(), CellError> {
        check_seq(&x, batch, self.input_size())?;
        check_state_part("h", Self::state_output(h0), self.hidden_size(), batch)
    }

    /// One step for inference: `x` has `B` columns; `state` is advanced in place.
    /// With `B = 1` this takes the GEMV route.
    fn step(&self, x: SeqInput<'_, T>, state: &mut Self::State);

    /// The forward pass over a whole sequence of `x.columns() / batch` steps from `h0`.
    /// Keeps what backward needs in `cache` and returns the final state. A sequence of zero
    /// steps returns `h0` unchanged.
    ///
    /// # Panics
    /// If [`Recurrence::check_input`] rejects the arguments (the message is its error).
    fn forward(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &Self::State,
        cache: &mut Self::Cache,
    ) -> Self::State;

    /// [`Recurrence::forward`], writing the final state into `fin` (its parts are reshaped if
    /// needed). The layers and stacks of this crate allocate nothing in it once the cache and
    /// `fin` have their shapes (a streaming loop relies on it); the default calls `forward`.
    ///
    /// # Panics
    /// As [`Recurrence::forward`].
    fn forward_into(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        h0: &Self::State,
        cache: &mut Self::Cache,
        fin: &mut Self::State,
    ) {
        *fin = self.forward(x, batch, h0, cache);
    }

    /// [`Recurrence::forward`] over a batch whose sequences have their own lengths (`lengths[b]`
    /// in `1..=T` for sample `b`), as PyTorch's `pack_padded_sequence` then `pad_packed_sequence`
    /// give: sample `b` runs steps `0..L_b` (a reverse layer from its own last step), its outputs
    /// past `L_b` are zero, and its final state is the one after its last real step. The next
    /// [`Recurrence::backward`] follows the same lengths (gradients at padded positions are
    /// zero). The layers, stacks and bidirectional layers of this crate implement it; the
    /// default accepts only lengths that are all `T`.
    ///
    /// # Panics
    /// As [`Recurrence::forward`], and if the lengths do not fit
    /// ([`check_lengths`](crate::engine::check_lengths) says why).
    fn forward_lengths(
        &self,
        x: SeqInput<'_, T>,
        batch: usize,
        lengths: &[usize],
        h0: &Self::State,
        cache: &mut Self::Cache,
    ) -> Self::State {
        let steps = x.columns() / batch.max(1);
        assert!(
            lengths.len() == batch && lengths.iter().all(|&l| l == steps),
            "this model runs whole sequences only: every length must be {steps}"
        );
        self.forward(x, batch, h0, cache)
    }

    /// The outputs `h_1..h_T` of the last forward, `H × (T·B)`.
    fn outputs<'c>(&self, cache: &'c Self::Cache) -> &'c Mat<T>;

    /// Backpropagation through time for the last forward (which filled `cache` from `x`).
    ///
    /// - `d_out`: the loss gradient with respect to every output, `H × (T·B)`;
    /// - `d_final`: the gradient with respect to the final state (zero for a lone sequence,
    ///   non-zero when the final state feeds something else);
    /// - `grads`: parameter gradients are **added** into it (clear it with `Parameters::zero`, or
    ///   overwrite it with [`Recurrence::backward_detached_overwrite`]);
    /// - `d_x`: if given (and the input is dense), overwritten with the input gradient,
    ///   `I × (T·B)`.
    ///
    /// Returns the gradient with respect to the initial state `h0`.
    fn backward(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Self::State,
        grads: &mut Self::Params,
        d_x: Option<&mut Mat<T>>,
    ) -> Self::State;

    /// Promises that this model's parameters will not change for as long as `cache` is used
    /// with it (a [`Stream`](crate::Stream), which owns both and lends the model out only
    /// immutably, calls it). A layer's batch-1 route keeps `W_hh` packed in the cache and
    /// otherwise compares it with the weights on every call, which reads them once (as much as
    /// one step's product); with the promise it skips the comparison and takes the route for
    /// single steps too. Changing the parameters afterwards and reusing the cache gives results
    /// from the old weights. The default does nothing.
    fn freeze_weights(&self, cache: &mut Self::Cache) {
        let _ = cache;
    }

    /// Sets the precision of the products of the forwards run with `cache`
    /// ([`Precision::Bf16`]: the weights and the products' right operands rounded to bf16, the
    /// products summed in `f32`, everything else in `f32`; see the engine's `bf16.rs`). A
    /// backward from a bf16 forward gives that forward's gradients: the `f32` backward of the
    /// rounded operands (mixed-precision training: the parameters and their gradients stay
    /// `f32`). An error (one line) if the
    /// precision cannot run here: bf16 on a CPU without AVX512_BF16, for an `f64` model or for a
    /// model it does not cover. The default accepts [`Precision::Full`] only.
    fn set_precision(&self, cache: &mut Self::Cache, precision: Precision) -> Result<(), CellError> {
        let _ = cache;
        match precision {
            Precision::Full => Ok(()),
            _ => Err(CellError::InvalidConfig(format!("this model computes in {} only", T::NAME))),
        }
    }

    /// [`Recurrence::backward`] for an initial state that needs no gradient (a detached state:
    /// the zero state, or the state carried into a truncated-BPTT window; PyTorch's
    /// `requires_grad=False`). Parameter and input gradients are the same; the cells skip the
    /// product that only the initial-state gradient needs (`W_hhᵀ·da_1`, one step's GEMM, a
    /// fifth of a one-step cell's backward). The default calls `backward` and drops its result.
    fn backward_detached(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Self::State,
        grads: &mut Self::Params,
        d_x: Option<&mut Mat<T>>,
    ) {
        self.backward(x, cache, d_out, d_final, grads, d_x);
    }

    /// [`Recurrence::backward_detached`] that **overwrites** the parameter gradients instead of
    /// adding into them: `grads`' values before the call are never read (they may hold anything,
    /// a previous step's gradients say, in the right shapes), as PyTorch's gradients after
    /// `zero_grad()` (which sets them to `None`). The result is that of `grads.zero()` followed
    /// by `backward_detached`, bit for bit, without the pass that writes the zeros and the
    /// weight-gradient products' reads of them: the engine's layers, and stacks and
    /// bidirectional layers of them, give each weight gradient's first product `beta = 0`
    /// (8-13 % of a one-step LSTM cell's forward and backward on the 2-core Xeon). The default
    /// does exactly `zero` then `backward_detached`.
    fn backward_detached_overwrite(
        &self,
        x: SeqInput<'_, T>,
        cache: &mut Self::Cache,
        d_out: &Mat<T>,
        d_final: &Self::State,
        grads: &mut Self::Params,
        d_x: Option<&mut Mat<T>>,
    ) {
        grads.zero();
        self.backward_detached(x, cache, d_out, d_final, grads, d_x);
    }
}

/// Which backward a container (a stack, a bidirectional layer) runs on its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BackwardKind {
    /// [`Recurrence::backward`], with the initial-state gradient.
    WithInit,
    /// [`Recurrence::backward_detached`].
    Detached,
    /// [`Recurrence::backward_detached_overwrite`].
    Overwrite,
}

impl BackwardKind {
    /// Runs this backward of `r`; the initial-state gradient for [`BackwardKind::WithInit`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run<T: Scalar, R: Recurrence<T>>(
        self,
        r: &R,
        x: SeqInput<'_, T>,
        cache: &mut R::Cache,
        d_out: &Mat<T>,
        d_final: &R::State,
        grads: &mut R::Params,
        d_x: Option<&mut Mat<T>>,
    ) -> Option<R::State> {
        match self {
            BackwardKind::WithInit => Some(r.backward(x, cache, d_out, d_final, grads, d_x)),
            BackwardKind::Detached => {
                r.backward_detached(x, cache, d_out, d_final, grads, d_x);
                None
            }
            BackwardKind::Overwrite => {
                r.backward_detached_overwrite(x, cache, d_out, d_final, grads, d_x);
                None
            }
        }
    }
}
