//! The engine's building blocks: the products that touch the input, done once per sequence
//! outside the time loop, the weight-gradient products, the split of a pass over the threads and
//! the matrix its parts share.
//!
//! - Forward input projection, all steps at once: `P = W_ih · X` (`G·H × T·B`, one GEMM), or, for
//!   [`SeqInput::Index`], `P[:, k] = W_ih[:, x_k]` (a gather of columns; no one-hot matrix).
//! - Backward, after the time loop, with `D` the `G·H × T·B` buffer of pre-activation gradients:
//!   `dW_ih += D · Xᵀ` (one GEMM) or `dW_ih[:, x_k] += D[:, k]` (a scatter-add),
//!   `d_x = W_ihᵀ · D` (one GEMM), `db += Σ_columns D`.

use std::ops::Range;

use rnn_tensor::nalgebra::{DMatrixViewMut, Dyn, Matrix, RawStorage, RawStorageMut};
use rnn_tensor::packed::bf16::PackedBf16;
use rnn_tensor::{
    gemm, gemm_packed, gemm_packed_cols, gemm_packed_pair, gemm_packed_sums, parallel, simd, Mat,
    PackedColumns, PackedLhs, Scalar, Trans,
};

use crate::{CellError, SeqInput};

/// Makes `m` a `rows × cols` matrix, reallocating only when the shape changes. The contents are
/// unspecified afterwards: callers overwrite them.
pub(crate) fn ensure_shape<T: Scalar>(m: &mut Mat<T>, rows: usize, cols: usize) {
    if m.shape() != (rows, cols) {
        *m = Mat::zeros(rows, cols);
    }
}

/// Checks a sequence input and batch against a cell's input size; the message says what to fix.
pub(crate) fn check_seq(x: &SeqInput<'_, impl Scalar>, batch: usize, input: usize) -> Result<(), CellError> {
    if batch == 0 {
        return Err(CellError::InvalidInput("batch must be at least 1".into()));
    }
    let n = x.columns();
    if !n.is_multiple_of(batch) {
        return Err(CellError::InvalidInput(format!(
            "the input has {n} columns, not a multiple of the batch {batch}; lay sequences out as features × (T·B)"
        )));
    }
    match x {
        SeqInput::Dense(m) if m.nrows() != input => Err(CellError::InvalidInput(format!(
            "the input has {} rows but the cell's input size is {input}",
            m.nrows()
        ))),
        SeqInput::Index(ix) => match ix.iter().find(|&&i| i >= input) {
            Some(bad) => Err(CellError::InvalidInput(format!(
                "input index {bad} is out of range for input size {input}"
            ))),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Checks that a state matrix is `hidden × batch`.
pub(crate) fn check_state_part(
    name: &str,
    m: &Mat<impl Scalar>,
    hidden: usize,
    batch: usize,
) -> Result<(), CellError> {
    if m.shape() != (hidden, batch) {
        return Err(CellError::InvalidInput(format!(
            "the initial state's {name} is {}×{}, expected hidden × batch = {hidden}×{batch}",
            m.nrows(),
            m.ncols()
        )));
    }
    Ok(())
}

/// `out = W_ih · X` for all columns at once, or the gather `out[:, k] = W_ih[:, x_k]`.
/// `out` must already be `G·H × N`.
pub(crate) fn project_input<T: Scalar>(w_ih: &Mat<T>, x: SeqInput<'_, T>, out: &mut Mat<T>) {
    match x {
        SeqInput::Dense(xm) => gemm(T::ONE, w_ih, Trans::No, xm, Trans::No, T::ZERO, out),
        SeqInput::Index(ix) => {
            let rows = w_ih.nrows();
            assert_eq!(
                out.shape(),
                (rows, ix.len()),
                "input gather: out is {:?}, expected ({rows}, {})",
                out.shape(),
                ix.len()
            );
            let w = w_ih.as_slice();
            let out = SharedCols::new(out);
            // Split by columns: each part copies its own.
            for_each_row_part(ix.len(), rows, |cols| {
                for (k, &i) in cols.clone().zip(&ix[cols]) {
                    // SAFETY: this part alone writes columns `cols` of out, which outlives the call.
                    unsafe { out.slice_mut(k, 1) }.copy_from_slice(&w[i * rows..(i + 1) * rows]);
                }
            });
        }
    }
}

/// The input side of backward, after the time loop, for the pre-activation gradients `d`
/// (`G·H × N`): `dW_ih += d · Xᵀ` or the scatter-add `dW_ih[:, x_k] += d[:, k]`, and, if asked
/// and the input is dense, `d_x = W_ihᵀ · d`, through an explicit copy of `W_ihᵀ` in `wt_buf`
/// (read through its transpose, matrixmultiply packs `W_ih` with a strided gather: 113 against
/// 170 GFLOP/s for the 2-layer LSTM's `d_x`). `dp`, if given, holds `d` packed (see
/// [`weight_grad_product`]); if it is in strips, `d` itself is not read (it may hold anything,
/// and have any number of columns), and `d_x` is a product of both operands packed (`W_ihᵀ` into
/// `wt_packed`). `sums`, if given, are bias gradients that also receive `Σ_columns d` (the
/// second one too, if given; see [`add_sums`]): with a dense input and `d` in strips, inside the
/// `dW_ih` product, which reads `d` anyway ([`gemm_packed_sums`]; the same bits), and with a
/// one-hot input and `d` in strips a single sum (a GRU's `db_ih`) inside the scatter-add
/// ([`PackedLhs::add_columns_into`]; the same bits too). `beta` is
/// `dW_ih`'s: 1 adds into it, 0 overwrites it (its old values are not read).
#[allow(clippy::too_many_arguments)]
pub(crate) fn input_backward<T: Scalar>(
    w_ih: &Mat<T>,
    x: SeqInput<'_, T>,
    d: &Mat<T>,
    dp: Option<&PackedLhs<T>>,
    (beta, dw_ih): (T, &mut Mat<T>),
    d_x: Option<&mut Mat<T>>,
    wt_buf: &mut Mat<T>,
    wt_packed: &mut PackedLhs<T>,
    sums: Sums<'_, T>,
) {
    // A one-hot input's scatter-add adds: an overwrite starts from zeros.
    if matches!(x, SeqInput::Index(_)) && beta == T::ZERO {
        dw_ih.as_mut_slice().fill(T::ZERO);
    }
    match x {
        SeqInput::Dense(xm) => {
            // dW_ih (+)= D · Xᵀ, and the sums of D's rows on the way
            weight_grad_sums(d, dp, xm, (beta, dw_ih), sums);
            if let Some(dx) = d_x {
                // d_x = W_ihᵀ · D
                ensure_shape(dx, w_ih.ncols(), xm.ncols());
                match dp {
                    Some(p) if p.is_strips() => {
                        wt_packed.pack(w_ih, Trans::Yes);
                        gemm_packed_pair(T::ONE, wt_packed, p, 0, T::ZERO, dx);
                    }
                    _ => {
                        transpose_into(w_ih, wt_buf);
                        gemm(T::ONE, &*wt_buf, Trans::No, d, Trans::No, T::ZERO, dx);
                    }
                }
            }
        }
        // dW_ih[:, x_k] += D[:, k] from D in strips (split by strips, in column order), and one
        // bias gradient's sums (a GRU's db_ih) in the same pass over D.
        SeqInput::Index(ix) if dp.is_some_and(PackedLhs::is_strips) => {
            let dp = dp.expect("checked above");
            let one = match sums {
                Some((sa, None)) => Some(sa.as_mut_slice()),
                Some((sa, sb)) => {
                    add_sums(d, Some(dp), sa, sb);
                    None
                }
                None => None,
            };
            dp.add_columns_into(ix, dw_ih.as_mut_slice(), one);
        }
        SeqInput::Index(ix) => {
            if let Some((sa, sb)) = sums {
                add_sums(d, dp, sa, sb);
            }
            // dW_ih[:, x_k] += D[:, k]: the one-hot product Xᵀ, without the one-hot matrix.
            // Split by rows: each part adds its rows of every column, in column order.
            let rows = d.nrows();
            let dw = SharedCols::new(dw_ih);
            for_each_row_part(rows, d.ncols(), |r| {
                for (col, &i) in d.as_slice().chunks_exact(rows).zip(ix) {
                    // SAFETY: this part alone touches rows `r` of dW_ih, which outlives the call.
                    let w = unsafe { dw.elems_mut(i * rows + r.start, r.len()) };
                    for (w, &g) in w.iter_mut().zip(&col[r.clone()]) {
                        *w += g;
                    }
                }
            });
        }
    }
}

/// `db_a += Σ_columns d` and, if given, `db_b += Σ_columns d`, in one pass over `d`, split by
/// rows over the threads (each part sums its rows over every column, in column order, so the
/// bits do not depend on the split).
pub(crate) fn add_column_sums<T: Scalar>(d: &Mat<T>, db_a: &mut Mat<T>, db_b: Option<&mut Mat<T>>) {
    let rows = d.nrows();
    let a = SharedCols::new(db_a);
    let b = db_b.map(SharedCols::new);
    for_each_row_part(rows, d.ncols(), |r| {
        // SAFETY: this part alone touches rows `r` of the sums, which outlive the call.
        let acc_a = unsafe { a.elems_mut(r.start, r.len()) };
        let mut acc_b = b.as_ref().map(|b| unsafe { b.elems_mut(r.start, r.len()) });
        for col in d.as_slice().chunks_exact(rows) {
            let col = &col[r.clone()];
            for (x, &v) in acc_a.iter_mut().zip(col) {
                *x += v;
            }
            if let Some(acc_b) = acc_b.as_deref_mut() {
                for (x, &v) in acc_b.iter_mut().zip(col) {
                    *x += v;
                }
            }
        }
    });
}

/// The two pieces of `dW_hh += Σ_t D_t · h_prev(t)ᵀ` over `n` columns of batch `b` (see
/// [`hidden_weight_grad`]): `(first, rest, rest_prev)`, the first column of `D` of the step
/// against `h0` (`b` columns), that of the other steps (`n - b` columns), and the first column
/// of the outputs those read.
pub(crate) fn hidden_pieces(b: usize, n: usize, reverse: bool) -> (usize, usize, usize) {
    if reverse {
        (n - b, 0, b)
    } else {
        (0, b, 0)
    }
}

/// `dW_hh += Σ_t D_t · h_prev(t)ᵀ` as (at most) two GEMMs over the whole buffer. Forward in
/// time `h_prev(t) = h_{t-1}`: the first step against `h0`, the rest against the outputs
/// `h_1..h_{T-1}` stored contiguously; in reverse (`reverse`) `h_prev(t) = h_{t+1}`: the last
/// step against `h0`, the others against the outputs of steps `2..T`. Each GEMM is
/// `product(k0, src, c0, nc)`: `dW_hh += D[:, k0..k0 + nc] · src[:, c0..c0 + nc]ᵀ` (the `f32`
/// one is [`weight_grad_product`], the bf16 one `bf16::BackwardPacks::pack_d`
/// then `weight_grad`).
pub(crate) fn hidden_weight_grad<T: Scalar>(
    h0: &Mat<T>,
    outputs: &Mat<T>,
    reverse: bool,
    mut product: impl FnMut(usize, &Mat<T>, usize, usize),
) {
    let (b, n) = (h0.ncols(), outputs.ncols());
    if n == 0 {
        return;
    }
    let (first, rest, rest_prev) = hidden_pieces(b, n, reverse);
    // A zero initial state (the usual one) adds nothing: skip its product.
    if !all_zero(h0) {
        product(first, h0, 0, b);
    }
    if n > b {
        product(rest, outputs, rest_prev, n - b);
    }
}

/// [`hidden_weight_grad`] through [`weight_grad_product`] (`dW_hh (+)= Σ_t D_t · h_prev(t)ᵀ`,
/// `D` read from `dp` when given), and, if given, `sums` `+= Σ_columns D` in column order (the
/// bits of [`add_sums`]): with `D` in strips, inside the product over the outputs, which reads
/// those columns anyway ([`gemm_packed_sums`]; one pass over a `D` of several MB that has left
/// the caches less), and the `h0` step's columns in a pass of their own before it (forward in
/// time) or after it (in reverse); otherwise all in one pass after the products. `beta` is
/// `dW_hh`'s, as in [`weight_grad_product`]: the first product takes it, the others add.
pub(crate) fn hidden_weight_grad_sums<T: Scalar>(
    (h0, outputs, reverse): (&Mat<T>, &Mat<T>, bool),
    d: &Mat<T>,
    dp: Option<&PackedLhs<T>>,
    (beta, dw): (T, &mut Mat<T>),
    sums: Sums<'_, T>,
) {
    let (b, n) = (h0.ncols(), outputs.ncols());
    // The beta of the next product: `beta` for the first, then 1.
    let mut next = beta;
    match (dp.filter(|p| p.is_strips()), sums) {
        (Some(p), Some((sa, mut sb))) if n > 0 => {
            let (first, rest, rest_prev) = hidden_pieces(b, n, reverse);
            let first_sums = |sa: &mut Mat<T>, sb: Option<&mut Mat<T>>| {
                p.add_row_sums_of(first..first + b, sa.as_mut_slice(), sb.map(|m| m.as_mut_slice()))
            };
            if !all_zero(h0) {
                weight_grad_product(d, dp, first, h0, (next, dw));
                next = T::ONE;
            }
            if !reverse {
                first_sums(sa, sb.as_deref_mut());
            }
            if n > b {
                let src = outputs.columns(rest_prev, n - b);
                let sbs = sb.as_deref_mut().map(|m| m.as_mut_slice());
                gemm_packed_sums(T::ONE, p, rest, &src, Trans::Yes, next, dw, sa.as_mut_slice(), sbs);
                next = T::ONE;
            }
            if reverse {
                first_sums(sa, sb);
            }
        }
        (_, sums) => {
            hidden_weight_grad(h0, outputs, reverse, |k0, src, c0, nc| {
                weight_grad_product(d, dp, k0, &src.columns(c0, nc), (next, dw));
                next = T::ONE;
            });
            if let Some((sa, sb)) = sums {
                add_sums(d, dp, sa, sb);
            }
        }
    }
    // An overwrite with no product (one step from a zero state) leaves zeros.
    if next == T::ZERO {
        dw.as_mut_slice().fill(T::ZERO);
    }
}

/// Whether every value of `m` is zero (a product with it adds only zeros, which the callers
/// skip: `x + 0 = x` for every `x` but `-0`, which becomes `+0`, and with a zero state the
/// skipped product's other operand reaches the results through the other steps anyway).
pub(crate) fn all_zero<T: Scalar>(m: &Mat<T>) -> bool {
    m.as_slice().iter().all(|&v| v == T::ZERO)
}

/// `dw = D[:, k0..k0 + kn] · xᵀ + beta·dw` (`x` has `kn` columns; `beta` 1 adds, 0 overwrites
/// without reading `dw`), reading `D` from `dp` when given: a copy of `d` packed while the time
/// loop wrote it, which spares the product packing `D` (the bits are the same either way).
pub(crate) fn weight_grad_product<T: Scalar, S: RawStorage<T, Dyn, Dyn>>(
    d: &Mat<T>,
    dp: Option<&PackedLhs<T>>,
    k0: usize,
    x: &Matrix<T, Dyn, Dyn, S>,
    (beta, dw): (T, &mut Mat<T>),
) {
    match dp {
        Some(p) => gemm_packed_cols(T::ONE, p, k0, x, Trans::Yes, beta, dw),
        None => gemm(T::ONE, &d.columns(k0, x.ncols()), Trans::No, x, Trans::Yes, beta, dw),
    }
}

/// [`weight_grad_product`] over all of `D` (`dw = D · xᵀ + beta·dw`), and, if given, `sums`
/// `+= Σ_columns D` (the bits of [`add_sums`]): inside the product when `D` is in strips
/// ([`gemm_packed_sums`]), else in a pass of their own.
pub(crate) fn weight_grad_sums<T: Scalar>(
    d: &Mat<T>,
    dp: Option<&PackedLhs<T>>,
    x: &Mat<T>,
    (beta, dw): (T, &mut Mat<T>),
    sums: Sums<'_, T>,
) {
    match (dp.filter(|p| p.is_strips()), sums) {
        (Some(p), Some((sa, sb))) => {
            let sb = sb.map(|m| m.as_mut_slice());
            gemm_packed_sums(T::ONE, p, 0, x, Trans::Yes, beta, dw, sa.as_mut_slice(), sb);
        }
        (_, sums) => {
            weight_grad_product(d, dp, 0, x, (beta, dw));
            if let Some((sa, sb)) = sums {
                add_sums(d, dp, sa, sb);
            }
        }
    }
}

/// The left operand of a time loop's per-step product (`W_hh·h_{t-1}` forward, `W_hhᵀ·da_t`
/// backward): packed once per sequence into a reused [`PackedLhs`] when the sequence has more
/// than one step, else (one step, one product) read as stored.
pub(crate) enum StepWeight<'a, T: Scalar> {
    /// `op(W)`, packed once for the `T` products.
    Packed(&'a PackedLhs<T>),
    /// `W` and whether to transpose it.
    Plain(&'a Mat<T>, Trans),
    /// `W` rounded to bf16 and packed (`T = f32`, [`Precision::Bf16`](rnn_tensor::Precision)):
    /// the right operand is rounded per product (`bf16.rs`).
    Bf16(&'a PackedBf16),
}

impl<'a, T: Scalar> StepWeight<'a, T> {
    /// `op(w)` for `steps` products: packed into `buf` if `steps > 1`.
    pub(crate) fn new(w: &'a Mat<T>, trans: Trans, steps: usize, buf: &'a mut PackedLhs<T>) -> Self {
        if steps > 1 {
            buf.pack(w, trans);
            StepWeight::Packed(buf)
        } else {
            StepWeight::Plain(w, trans)
        }
    }

    /// `w` for the products of a frozen cache ([`Recurrence::freeze_weights`](crate::Recurrence::freeze_weights)):
    /// the packing in `buf` as it is when it already holds a matrix of `w`'s shape (packed by
    /// an earlier call on this cache: the weights have not changed since), else `w` packed into
    /// it. `buf` must hold nothing but `w` (never `wᵀ`, which a square `w` could not tell apart).
    pub(crate) fn kept(w: &'a Mat<T>, buf: &'a mut PackedLhs<T>) -> Self {
        if buf.shape() != w.shape() || w.is_empty() {
            buf.pack(w, Trans::No);
        }
        StepWeight::Packed(buf)
    }

    /// `c = op(W)·b + beta·c`.
    pub(crate) fn gemm<SB, SC>(&self, b: &Matrix<T, Dyn, Dyn, SB>, beta: T, c: &mut Matrix<T, Dyn, Dyn, SC>)
    where
        SB: RawStorage<T, Dyn, Dyn>,
        SC: RawStorageMut<T, Dyn, Dyn>,
    {
        match *self {
            StepWeight::Packed(p) => gemm_packed(T::ONE, p, b, Trans::No, beta, c),
            StepWeight::Plain(w, t) => gemm(T::ONE, w, t, b, Trans::No, beta, c),
            StepWeight::Bf16(w) => {
                let (bn, cn) = (b.len(), c.len());
                assert!(
                    b.strides() == (1, b.nrows()) && c.strides() == (1, c.nrows()),
                    "a bf16 step product needs contiguous columns"
                );
                // SAFETY: both matrices are contiguous (checked above): their `len()` values
                // from their first element are theirs, borrowed for this call (`c` mutably).
                let (bs, cs) = unsafe {
                    (
                        std::slice::from_raw_parts(b.data.ptr(), bn),
                        std::slice::from_raw_parts_mut(c.data.ptr_mut(), cn),
                    )
                };
                super::bf16::gemm(w, bs, beta, cs, false);
            }
        }
    }

    /// `c = op(W)·b + beta·c` where `b` is also columns `j0..` of `bp`, a packing being written
    /// by the time loop: with `op(W)` packed and two columns or more, the product reads `b` from
    /// `bp`'s strips in place instead of packing it (the same bits), on the AVX-512 kernel. The
    /// AVX2 kernel packs `b` instead: its register blocks of 6 columns read a strip-packed `b`
    /// more slowly than a packed panel. Measured on the model-207 Xeon, one thread, `W_hhᵀ·dA_t`
    /// for a step of 64 columns out of 1,536 (31 alternating runs in one process): in place
    /// 1.01-1.04× as fast as packing with AVX-512, 0.88-0.90× under the AVX2 cap.
    ///
    /// # Safety
    /// As [`PackedColumns::gemm_pair`]: those columns of `bp` hold `b`, and nothing writes them
    /// during the call.
    pub(crate) unsafe fn gemm_from<SB, SC>(
        &self,
        bp: &PackedColumns<'_, T>,
        j0: usize,
        b: &Matrix<T, Dyn, Dyn, SB>,
        beta: T,
        c: &mut Matrix<T, Dyn, Dyn, SC>,
    ) where
        SB: RawStorage<T, Dyn, Dyn>,
        SC: RawStorageMut<T, Dyn, Dyn>,
    {
        match *self {
            // SAFETY: the caller's contract.
            StepWeight::Packed(p) if b.ncols() >= 2 && simd::gemm_level() != simd::Level::Avx2 => unsafe {
                bp.gemm_pair(T::ONE, p, j0, beta, c)
            },
            _ => self.gemm(b, beta, c),
        }
    }
}

/// Columns of one batch part that a time loop split by [`batch_parts`] needs at least.
const MIN_PART_COLUMNS: usize = 8;
/// Multiply-adds of one part's step product below which a split does not pay (and above the
/// small-product route of `gemm`, so every part takes the same route as the whole product).
const MIN_PART_MACS: usize = 1 << 16;

/// How many parts a time loop over `batch` columns is split into at most (for
/// [`for_each_part`](rnn_tensor::parallel::for_each_part)): each part needs [`MIN_PART_COLUMNS`] columns and a step product
/// of [`MIN_PART_MACS`] multiply-adds (`macs_per_column` per column).
fn batch_parts(batch: usize, macs_per_column: usize) -> usize {
    let by_work = (batch * macs_per_column) / MIN_PART_MACS;
    (batch / MIN_PART_COLUMNS).min(by_work).max(1)
}

/// Runs `f(cols)` on the parts of a time loop over `batch` columns split by [`batch_parts`]
/// (through [`for_each_part`](rnn_tensor::parallel::for_each_part)), each part with its own
/// non-empty, contiguous range of batch columns; unsplit, `f(0..batch)` runs on the caller
/// outside the pool (so the products inside may use the threads).
pub(crate) fn for_each_batch_part(batch: usize, macs_per_column: usize, f: impl Fn(Range<usize>) + Sync) {
    match batch_parts(batch, macs_per_column) {
        // Not through the pool: a call from inside a part runs inline, and the products of an
        // unsplit loop may split themselves.
        1 => f(0..batch),
        parts => parallel::for_each_part(parts, |part| {
            let cols = part.range(batch, 1);
            if !cols.is_empty() {
                f(cols);
            }
        }),
    }
}

/// Runs `f(lane, s)` for every lane `lane` in `0..lanes` and every visit `s` in `0..steps` of a
/// time loop whose lanes are independent (a lane's visits read only what that lane wrote). Split
/// (when the busiest visit, `max_active` columns, would be split by [`batch_parts`]), each part
/// takes its own lanes (`lane ≡ part index` modulo the parts) through every visit, without
/// meeting the others; unsplit, visit by visit on the caller (outside the pool, so that the
/// products inside may use the threads). A lane's work is the same either way, so the results
/// do not depend on the split.
pub(crate) fn for_each_lane(
    lanes: usize,
    steps: usize,
    max_active: usize,
    macs_per_column: usize,
    f: impl Fn(usize, usize) + Sync,
) {
    match batch_parts(max_active, macs_per_column).min(lanes) {
        1 => (0..steps).for_each(|s| (0..lanes).for_each(|lane| f(lane, s))),
        parts => parallel::for_each_part(parts, |part| {
            for lane in (part.index..lanes).step_by(part.count) {
                (0..steps).for_each(|s| f(lane, s));
            }
        }),
    }
}

/// Rows (or columns) of one part of a pass split by [`for_each_row_part`], at least.
const MIN_PART_ROWS: usize = 64;
/// Values of one part of a pass split by [`for_each_row_part`], at least.
const MIN_PART_VALUES: usize = 1 << 16;

/// Runs `f(rows)` on the parts of a pass over `rows × cols` values split by rows (non-empty,
/// contiguous ranges whose starts are multiples of 16), over the threads when each part gets
/// [`MIN_PART_ROWS`] rows and [`MIN_PART_VALUES`] values; unsplit, `f(0..rows)` runs on the
/// caller. (A split by columns is the same call with the roles swapped.)
pub(crate) fn for_each_row_part(rows: usize, cols: usize, f: impl Fn(Range<usize>) + Sync) {
    match (rows / MIN_PART_ROWS).min(rows * cols / MIN_PART_VALUES) {
        0 | 1 => f(0..rows),
        parts => parallel::for_each_part(parts, |part| {
            let r = part.range(rows, 16);
            if !r.is_empty() {
                f(r);
            }
        }),
    }
}

/// A column-major matrix that the parts of a [`for_each_part`](rnn_tensor::parallel::for_each_part) call share, each part
/// reading and writing only its own columns (a batch range inside each step block). Holds a raw
/// pointer: the matrix must outlive the call and not be touched otherwise meanwhile.
#[derive(Clone, Copy)]
pub(crate) struct SharedCols<T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
}

// SAFETY: the parts access disjoint columns (the contract of `cols_mut`/`slice_mut`); `T` values
// move between threads as in any `Mat<T>` (Scalar: Send + Sync).
unsafe impl<T: Send> Send for SharedCols<T> {}
unsafe impl<T: Sync> Sync for SharedCols<T> {}

impl<T: Scalar> SharedCols<T> {
    /// Shares `m` between the parts of one call.
    pub(crate) fn new(m: &mut Mat<T>) -> Self {
        SharedCols { ptr: m.as_mut_ptr(), rows: m.nrows(), cols: m.ncols() }
    }

    /// Columns `start..start + n`, contiguous in memory, as a slice.
    ///
    /// # Safety
    /// No other reference to these columns may be alive while the slice is (in particular no
    /// other part may touch them), and the matrix must still be alive.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice_mut(&self, start: usize, n: usize) -> &mut [T] {
        assert!(start + n <= self.cols, "SharedCols: columns {start}+{n} of {}", self.cols);
        // SAFETY: in bounds (checked); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start * self.rows), n * self.rows) }
    }

    /// The matrix's rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// The first value's address.
    pub(crate) fn base(&self) -> *mut T {
        self.ptr
    }

    /// `n` values from value `start` (column-major order).
    ///
    /// # Safety
    /// As [`SharedCols::slice_mut`].
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn elems_mut(&self, start: usize, n: usize) -> &mut [T] {
        assert!(
            start + n <= self.rows * self.cols,
            "SharedCols: values {start}+{n} of {}",
            self.rows * self.cols
        );
        // SAFETY: in bounds (checked); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), n) }
    }

    /// `n` values from value `start`, to read.
    ///
    /// # Safety
    /// Nothing may write these values while the slice is alive (other parts may read them too),
    /// and the matrix must still be alive.
    pub(crate) unsafe fn elems(&self, start: usize, n: usize) -> &[T] {
        assert!(
            start + n <= self.rows * self.cols,
            "SharedCols: values {start}+{n} of {}",
            self.rows * self.cols
        );
        // SAFETY: in bounds (checked); no writer is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), n) }
    }

    /// Columns `start..start + n` as a matrix view.
    ///
    /// # Safety
    /// As [`SharedCols::slice_mut`].
    pub(crate) unsafe fn cols_mut(&self, start: usize, n: usize) -> DMatrixViewMut<'_, T> {
        // SAFETY: the caller's contract.
        DMatrixViewMut::from_slice(unsafe { self.slice_mut(start, n) }, self.rows, n)
    }
}

/// `dst = srcᵀ` (resized if needed), in 32×32 tiles so that both sides stay in cache.
pub(crate) fn transpose_into<T: Scalar>(src: &Mat<T>, dst: &mut Mat<T>) {
    const TILE: usize = 32;
    let (r, c) = src.shape();
    ensure_shape(dst, c, r);
    let s = src.as_slice();
    let d = SharedCols::new(dst);
    // Split by rows of dst (columns of src): each part writes its rows of every dst column.
    for_each_row_part(c, r, |rows| {
        for j0 in rows.clone().step_by(TILE) {
            for i0 in (0..r).step_by(TILE) {
                for j in j0..(j0 + TILE).min(rows.end) {
                    for i in i0..(i0 + TILE).min(r) {
                        // dst[j, i] = src[i, j]
                        // SAFETY: i < r and j < c, in bounds of the c × r dst; this part alone
                        // writes rows `rows` of dst, which outlives the call.
                        unsafe { *d.base().add(i * c + j) = s[j * r + i] };
                    }
                }
            }
        }
    });
}

/// Readies the packings that a backward's time loop writes `dA` and (kept apart) `dV` into,
/// step by step while their columns are in cache, and says which of the two it uses: `dA`
/// always (every reader takes strips: the products, the bias sums and a one-hot input's
/// scatter-add), `dV` where the cell keeps it apart; neither in a backward in bf16 (its products
/// round their operands themselves), nor where the packing is not in strips. `cols`: the
/// columns of the whole backward.
pub(crate) fn gradient_strips<T: Scalar>(
    (da, dv): (&mut PackedLhs<T>, &mut PackedLhs<T>),
    rows: usize,
    cols: usize,
    apart: bool,
    bwd16: bool,
) -> (bool, bool) {
    let da_strips = !bwd16 && {
        da.reset(rows, cols);
        da.is_strips()
    };
    let dv_strips = !bwd16 && apart && {
        dv.reset(rows, cols);
        dv.is_strips()
    };
    (da_strips, dv_strips)
}

/// `a += Σ_columns d` and, if given, `b += Σ_columns d`, reading `d` from `dp` when given (its
/// copy packed while the time loop wrote it; `d` itself is then not read): the bias gradients.
pub(crate) fn add_sums<T: Scalar>(
    d: &Mat<T>,
    dp: Option<&PackedLhs<T>>,
    a: &mut Mat<T>,
    b: Option<&mut Mat<T>>,
) {
    match dp {
        Some(p) => p.add_row_sums(a.as_mut_slice(), b.map(|b| b.as_mut_slice())),
        None => add_column_sums(d, a, b),
    }
}

/// Bias gradients that receive the same row sums of a gradient matrix: the first, and the
/// second too if given (see [`add_sums`]).
pub(crate) type Sums<'g, T> = Option<(&'g mut Mat<T>, Option<&'g mut Mat<T>>)>;

/// Where the bias gradients' sums go after a backward's time loop: `(hidden, input)`. `hidden`
/// receive `Σ_columns` of the hidden product's gradient (`dV`, or `dA` when `dV` is `dA`) with
/// the `dW_hh` product ([`hidden_weight_grad_sums`]), `input` receive `Σ_columns dA` with the
/// `dW_ih` product ([`input_backward`]): `db_hh` and `db_ih` for a cell whose hidden product
/// stays apart; otherwise both sum `dA`, on the `dW_ih` product of a dense input, or on the
/// `dW_hh` product when the input is one-hot (its `dW_ih` is a scatter-add, which has no row
/// sums). `(None, None)` without biases.
pub(crate) fn bias_sums<'g, T: Scalar>(
    apart: bool,
    dense_input: bool,
    (bias_ih, bias_hh): (&'g mut Option<Mat<T>>, &'g mut Option<Mat<T>>),
) -> (Sums<'g, T>, Sums<'g, T>) {
    let (Some(bi), Some(bh)) = (bias_ih, bias_hh) else { return (None, None) };
    match (apart, dense_input) {
        (true, _) => (Some((bh, None)), Some((bi, None))),
        (false, true) => (None, Some((bi, Some(bh)))),
        (false, false) => (Some((bi, Some(bh))), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rnn_tensor::Rng;

    fn random(rows: usize, cols: usize, rng: &mut Rng) -> Mat<f32> {
        Mat::from_fn(rows, cols, |_, _| rng.uniform(-1.0, 1.0) as f32)
    }

    /// The row-split passes (bias sums, the one-hot scatter-add, the transpose) and the
    /// column-split one-hot gather against plain serial loops, bit for bit (tolerance: none; the
    /// split keeps every sum's order), with one and two threads, on 520 × 300 values (parts of
    /// 256 and 264 rows, a tail of 8; 144 and 156 columns).
    #[test]
    fn row_split_passes_match_serial_loops() {
        let mut rng = Rng::seed_from(9);
        let (rows, cols, input) = (520, 300, 40);
        let d = random(rows, cols, &mut rng);
        let ix: Vec<usize> = (0..cols).map(|_| rng.below(input)).collect();
        let (a0, b0, w0) =
            (random(rows, 1, &mut rng), random(rows, 1, &mut rng), random(rows, input, &mut rng));
        let (mut a_ref, mut b_ref, mut w_ref) = (a0.clone(), b0.clone(), w0.clone());
        for k in 0..cols {
            for i in 0..rows {
                a_ref[i] += d[(i, k)];
                b_ref[i] += d[(i, k)];
                w_ref[(i, ix[k])] += d[(i, k)];
            }
        }
        for threads in [1, 2] {
            rnn_tensor::parallel::set_num_threads(threads);
            let (mut a, mut b, mut w) = (a0.clone(), b0.clone(), w0.clone());
            add_column_sums(&d, &mut a, Some(&mut b));
            assert!(a == a_ref && b == b_ref, "{threads} threads: bias sums");
            let mut unused = Mat::zeros(0, 0);
            input_backward(
                &w0,
                SeqInput::Index(&ix),
                &d,
                None,
                (1.0, &mut w),
                None,
                &mut unused,
                &mut PackedLhs::new(),
                None,
            );
            assert!(w == w_ref, "{threads} threads: scatter-add");
            let mut t = Mat::zeros(0, 0);
            transpose_into(&d, &mut t);
            assert!(t == d.transpose(), "{threads} threads: transpose");
            let mut g = Mat::zeros(rows, cols);
            project_input(&w0, SeqInput::Index(&ix), &mut g);
            assert!((0..cols).all(|k| g.column(k) == w0.column(ix[k])), "{threads} threads: gather");
        }
    }
}
