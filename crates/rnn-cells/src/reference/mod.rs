//! A plain reference implementation of each recurrent cell: the readable spec of its math, and
//! the oracle the fast layers are tested against (`tests/reference.rs`: outputs, final states
//! and every gradient, over random shapes, in f64 and f32, at one and two threads).
//!
//! Each cell is one short file, written from the equations in its module docs, forward and
//! backward through time, with the derivative each backward line implements beside it:
//!
//! | module | cell |
//! |---|---|
//! | [`rnn`] | vanilla RNN, `h_t = f(W_ih·x_t + b_ih + W_hh·h_{t-1} + b_hh)` |
//! | [`lstm`] | LSTM, gates i, f, g, o |
//! | [`gru`] | GRU, gates r, z, n (PyTorch's form) |
//!
//! Read these first; the fast layers compute the same numbers with packing, strips and threads.
//! Here there are none of those: plain loops over the steps, nalgebra products of whole
//! matrices, no `unsafe`. It is slow, and meant to be.
//!
//! Conventions, the same in the three files:
//! - parameters are a [`RecurrentParams`](crate::RecurrentParams) (`weight_ih` `[G·H, I]`, `weight_hh` `[G·H, H]`,
//!   biases `G·H × 1` or `None`, gate blocks in PyTorch's order); a missing bias is a zero bias;
//! - a sequence of `T` steps over a batch of `B` is an `I × (T·B)` matrix, column `t·B + b`
//!   holding sample `b` at step `t` (steps are numbered `1..=T` in the equations, and `x_t` is the
//!   block of columns `(t-1)·B .. t·B`); outputs are `H × (T·B)`, states `H × B`; input is dense
//!   (index input is its one-hot matrix);
//! - `forward(p, .., x, batch, h0, ..)` returns a trace: the outputs, and every state `h_0..h_T`
//!   (and `c_0..c_T`) that backward reads; gates are recomputed in backward from those states;
//! - `backward(p, .., x, &trace, d_out, d_h_final, ..)` returns the gradients of a loss whose
//!   gradient with respect to the outputs is `d_out` and to the final state `d_h_final`: the
//!   parameters' (as a `RecurrentParams`, with the parameters' layer), the input's `d_x` and the
//!   initial state's.

pub mod gru;
pub mod lstm;
pub mod rnn;

use rnn_tensor::{Mat, Scalar};

/// `x_t`: the `B` columns of step `t` (`1..=T`) of a `rows × (T·B)` sequence.
fn step<T: Scalar>(seq: &Mat<T>, t: usize, batch: usize) -> Mat<T> {
    seq.columns((t - 1) * batch, batch).into_owned()
}

/// Writes `v` (`rows × B`) into the columns of step `t` of a sequence.
fn set_step<T: Scalar>(seq: &mut Mat<T>, t: usize, batch: usize, v: &Mat<T>) {
    seq.columns_mut((t - 1) * batch, batch).copy_from(v);
}

/// The states `h_1..h_T` side by side: `H × (T·B)`.
fn concat_steps<T: Scalar>(states: &[Mat<T>]) -> Mat<T> {
    let (rows, batch) = states[0].shape();
    let mut out = Mat::zeros(rows, states.len() * batch);
    for (k, s) in states.iter().enumerate() {
        set_step(&mut out, k + 1, batch, s);
    }
    out
}

/// `W·v + b`, the bias added to every column (no bias: `W·v`).
fn affine<T: Scalar>(w: &Mat<T>, b: &Option<Mat<T>>, v: &Mat<T>) -> Mat<T> {
    let mut out = w * v;
    if let Some(b) = b {
        for mut col in out.column_iter_mut() {
            col += b;
        }
    }
    out
}

/// Gate block `k` (rows `k·H .. (k+1)·H`) of a `G·H × B` matrix.
fn block<T: Scalar>(m: &Mat<T>, k: usize, hidden: usize) -> Mat<T> {
    m.rows(k * hidden, hidden).into_owned()
}

/// The blocks stacked on top of each other: `[a; b; ...]`.
fn stack_blocks<T: Scalar>(blocks: &[&Mat<T>]) -> Mat<T> {
    let (hidden, batch) = blocks[0].shape();
    let mut out = Mat::zeros(blocks.len() * hidden, batch);
    for (k, b) in blocks.iter().enumerate() {
        out.rows_mut(k * hidden, hidden).copy_from(*b);
    }
    out
}

/// `db += Σ_b d`: the sum of `d`'s columns added to the bias gradient (if the layer has a bias).
fn add_column_sums<T: Scalar>(db: &mut Option<Mat<T>>, d: &Mat<T>) {
    if let Some(db) = db {
        *db += d.column_sum();
    }
}
