//! The time loop of the LSTM forward at batch 1 in `f32`, split over the library's threads.
//!
//! At batch 1 a step is a GEMV with `W_hh` (`4H × H`; 4 MB for `H = 512`) and a pointwise pass
//! over `H` units; the GEMV streams `W_hh` from memory on every step. Here the hidden units are
//! split between the parts of [`for_each_part`]: part `j` owns units `u0..u1` and packs, in the
//! strip layout of [`gemv_strips_f32_ordered`], its four row blocks of `W_hh` (gates i, f, g, o of its
//! units, in that order), so each core reads only its share of the weights. Per step `t`, each
//! part:
//!
//! ```text
//! a   = [A_i; A_f; A_g; A_o][u0..u1, t]        (the input projection W_ih·x_t, done before the loop)
//! a  += W_hh[rows of u0..u1] · h_{t-1}          (gemv_strips_f32_ordered, beta = 1, strips in alternating order)
//! c_t, tanh c_t, h_t [u0..u1], gates [u0..u1]  (the pointwise pass of `lstm.rs` on its 4·(u1-u0) values)
//! barrier                                      (h_t complete before any part starts step t+1)
//! ```
//!
//! Every value is computed by the same operations as in the one-thread loop of `lstm.rs`: the
//! GEMV sums each row in an order that depends on the row alone (and equals that of the
//! column-major GEMV `gemm` uses for one column), and the pointwise pass is elementwise. The
//! results are therefore bit-identical for any number of parts and to the general forward.
//!
//! Each part keeps its packed rows, and a plain copy of the values it packed them from, across
//! calls: a call compares the part's rows of `W_hh` with that copy bit for bit and re-packs only
//! if they differ (a training step changed them), so a stale packing is never used. For
//! `H = 512` the comparison reads 8 MB in two sequential streams (0.1 to 0.3 ms on one core),
//! packing writes 4 MB and took 0.2 to 0.45 ms; the copy costs 4 MB of memory.

use std::any::Any;
use std::sync::Mutex;

use rnn_tensor::packed::{gemv_strips_f32_ordered, MR};
use rnn_tensor::parallel::for_each_part;
use rnn_tensor::Scalar;

use super::{pointwise_forward, Lstm, LstmCache};
use crate::gated::SharedCols;

/// `W_hh` is split between threads only from this many weights on (`H ≥ 256`, 1 MB of `f32`):
/// below, it fits in one core's L2 and a step takes a few µs, about what a meeting of two
/// threads costs (0.2 µs spinning, 20 µs through `std::sync::Barrier`, measured). The tests
/// split every size.
const MIN_SPLIT_WEIGHTS: usize = if cfg!(test) { 1 } else { 4 * 256 * 256 };

/// One part's buffers, kept in the cache and reused across calls.
#[derive(Debug, Default)]
struct PartBuffers {
    /// Its `4·(u1-u0)` rows of `W_hh`, in strips of [`MR`] rows.
    w: Vec<f32>,
    /// The values `w` was packed from, column by column (`4·(u1-u0)` per column), and the
    /// `(H, u0, u1)` they were taken for: when both match, `w` is up to date.
    src: Vec<f32>,
    src_key: (usize, usize, usize),
    /// Its rows of `b_ih + b_hh` (empty without biases).
    bias: Vec<f32>,
    /// Its rows of `a_t`.
    a: Vec<f32>,
}

/// The buffers of every part, one lock per part (taken once per call).
#[derive(Debug, Default)]
pub(super) struct B1Scratch {
    parts: Vec<Mutex<PartBuffers>>,
}

#[cfg(test)]
thread_local! {
    /// Test hook: when set, [`run`] declines and the general loop runs.
    pub(super) static GENERAL_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs the time loop of a batch-1 `f32` forward on a cache whose `gates` hold the input
/// projection (and whose `h0`, `c0`, `bias` are set), filling `gates`, `c`, `tanh_c`, `h`.
/// Returns `false`, having done nothing, for any other element type.
pub(super) fn run<T: Scalar>(lstm: &Lstm<T>, cache: &mut LstmCache<T>) -> bool {
    #[cfg(test)]
    if GENERAL_ONLY.with(|g| g.get()) {
        return false;
    }
    match (
        (lstm as &dyn Any).downcast_ref::<Lstm<f32>>(),
        (cache as &mut dyn Any).downcast_mut::<LstmCache<f32>>(),
    ) {
        (Some(lstm), Some(cache)) => {
            run_f32(lstm, cache);
            true
        }
        _ => false,
    }
}

fn run_f32(lstm: &Lstm<f32>, cache: &mut LstmCache<f32>) {
    let hid = lstm.params.weight_hh.ncols();
    let steps = cache.h.ncols();
    let w_hh = lstm.params.weight_hh.as_slice();
    let parts = if 4 * hid * hid < MIN_SPLIT_WEIGHTS {
        1
    } else {
        rnn_tensor::parallel::num_threads().clamp(1, hid.div_ceil(MR))
    };
    cache.b1.parts.resize_with(parts, Default::default);
    let (h0, c0, bias) = (cache.h0.as_slice(), cache.c0.as_slice(), &cache.bias[..]);
    let (gates, c, tanh_c, h) = (
        SharedCols::new(&mut cache.gates),
        SharedCols::new(&mut cache.c),
        SharedCols::new(&mut cache.tanh_c),
        SharedCols::new(&mut cache.h),
    );
    let bufs = &cache.b1.parts;
    for_each_part(parts, |part| {
        let units = part.range(hid, MR);
        let (u0, nu) = (units.start, units.len());
        let mut guard = bufs[part.index].lock().unwrap_or_else(|e| e.into_inner());
        let PartBuffers { w, src, src_key, bias: b, a } = &mut *guard;
        // Packed row r is row (r / nu)·H + u0 + r mod nu of W_hh: gates i, f, g, o of the units.
        let row = |r: usize| (r / nu) * hid + u0 + r % nu;
        if !same_rows(w_hh, hid, u0, nu, *src_key, src) {
            copy_rows(w_hh, hid, u0, nu, src);
            *src_key = (hid, u0, u0 + nu);
            pack_rows(w_hh, 4 * hid, hid, 4 * nu, row, w);
        }
        b.clear();
        b.extend((0..4 * nu).filter(|_| !bias.is_empty()).map(|r| bias[row(r)]));
        a.resize(4 * nu, 0.0);
        for t in 0..steps {
            // SAFETY: column t-1 of h was completed by every part before the last barrier, and
            // nobody writes it any more; this part writes only its units of column t of gates,
            // c, tanh_c and h.
            unsafe {
                let h_prev = if t == 0 { h0 } else { &*h.elems_mut((t - 1) * hid, hid) };
                for g in 0..4 {
                    a[g * nu..(g + 1) * nu].copy_from_slice(gates.elems_mut(4 * hid * t + g * hid + u0, nu));
                }
                // a_t += W_hh · h_{t-1}  (this part's rows; every other step read backwards, so
                // that it starts with the strips the last step read last, still in L2)
                gemv_strips_f32_ordered(4 * nu, hid, w, 1.0, h_prev, 1.0, a, t % 2 == 1);
                let c_t = c.elems_mut(t * hid + u0, nu);
                if t == 0 {
                    c_t.copy_from_slice(&c0[u0..u0 + nu]);
                } else {
                    c_t.copy_from_slice(c.elems_mut((t - 1) * hid + u0, nu));
                }
                pointwise_forward(
                    nu,
                    a,
                    b,
                    c_t,
                    tanh_c.elems_mut(t * hid + u0, nu),
                    h.elems_mut(t * hid + u0, nu),
                );
                for g in 0..4 {
                    gates.elems_mut(4 * hid * t + g * hid + u0, nu).copy_from_slice(&a[g * nu..(g + 1) * nu]);
                }
            }
            if t + 1 < steps {
                part.barrier();
            }
        }
    });
}

/// Whether the part's rows of `w_hh` (`4H × H`, units `u0..u0+nu` of each gate) are bitwise
/// those in `src`, taken for `key`. Reads both once, front to back; stops at the first
/// difference (after a training step, in the first column).
fn same_rows(
    w_hh: &[f32],
    hid: usize,
    u0: usize,
    nu: usize,
    key: (usize, usize, usize),
    src: &[f32],
) -> bool {
    if key != (hid, u0, u0 + nu) || src.len() != 4 * nu * hid {
        return false;
    }
    src.chunks_exact(4 * nu).enumerate().all(|(p, col)| {
        let mut diff = 0u32;
        for g in 0..4 {
            let w = &w_hh[p * 4 * hid + g * hid + u0..][..nu];
            for (a, b) in w.iter().zip(&col[g * nu..(g + 1) * nu]) {
                diff |= a.to_bits() ^ b.to_bits();
            }
        }
        diff == 0
    })
}

/// Copies the part's rows of `w_hh` into `src`, column by column (the layout [`same_rows`] reads).
fn copy_rows(w_hh: &[f32], hid: usize, u0: usize, nu: usize, src: &mut Vec<f32>) {
    src.clear();
    for p in 0..hid {
        for g in 0..4 {
            src.extend_from_slice(&w_hh[p * 4 * hid + g * hid + u0..][..nu]);
        }
    }
}

/// Packs rows `row(0..m)` of the column-major `rows × k` matrix `w` into `out` in the strip
/// layout (`out[s·MR·k + p·MR + r] = w[row(s·MR + r), p]`, the last strip zero-padded).
///
/// Strips go in groups of 8 and, for each column, the group's strips in turn: the reads are
/// then 1 KB runs of a column (when the rows of the group are consecutive) and the writes 8
/// sequential streams. Reading one strip's 128 bytes from every column (a stride of `4·rows`
/// bytes, which the hardware prefetchers do not follow) or writing one column into all strips
/// (64 streams 64 KB apart, all in the same cache sets) took 1.5 to 3 times as long.
fn pack_rows(w: &[f32], rows: usize, k: usize, m: usize, row: impl Fn(usize) -> usize, out: &mut Vec<f32>) {
    const GROUP: usize = 8;
    let strips = m.div_ceil(MR);
    if out.len() != strips * MR * k {
        out.clear();
        out.resize(strips * MR * k, 0.0);
    }
    for g0 in (0..strips).step_by(GROUP) {
        // The first row of each strip of the group if its rows are consecutive, else None.
        let first: [Option<usize>; GROUP] = std::array::from_fn(|j| {
            let s = g0 + j;
            let r0 = row(s * MR);
            (s * MR + MR <= m && (1..MR).all(|r| row(s * MR + r) == r0 + r)).then_some(r0)
        });
        for p in 0..k {
            let col = &w[p * rows..(p + 1) * rows];
            for s in g0..(g0 + GROUP).min(strips) {
                let d = &mut out[s * MR * k + p * MR..s * MR * k + (p + 1) * MR];
                match first[s - g0] {
                    Some(r0) => d.copy_from_slice(&col[r0..r0 + MR]),
                    None => {
                        for (r, v) in d.iter_mut().enumerate() {
                            *v = if s * MR + r < m { col[row(s * MR + r)] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LstmConfig, Recurrence, SeqInput};
    use rnn_tensor::init::Init;
    use rnn_tensor::Rng;

    /// Thread counts are global: the tests that set them run one at a time.
    static THREADS: Mutex<()> = Mutex::new(());

    /// The forward's final state, outputs, gates, cell states and `tanh c`.
    fn forward(lstm: &Lstm<f32>, x: SeqInput<'_, f32>, h0: &super::super::LstmState<f32>) -> Vec<Vec<f32>> {
        let mut cache = LstmCache::default();
        let fin = lstm.forward(x, 1, h0, &mut cache);
        [&fin.h, &fin.c, &cache.h, &cache.gates, &cache.c, &cache.tanh_c]
            .iter()
            .map(|m| m.as_slice().to_vec())
            .collect()
    }

    /// Bit-identical to the general loop, with 1, 2 and 3 threads, for dense and index input,
    /// with and without biases, for hidden sizes that are and are not multiples of 32.
    #[test]
    fn bit_identical_to_general_forward() {
        let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        let mut rng = Rng::seed_from(11);
        for &(input, hid, steps, bias) in
            &[(5usize, 64usize, 7usize, true), (3, 37, 4, false), (65, 96, 12, true), (2, 1, 3, true)]
        {
            let lstm = LstmConfig::new(input, hid).with_bias(bias).build::<f32>(&mut rng).unwrap();
            let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps, &mut rng);
            let ix: Vec<usize> = (0..steps).map(|t| (t * 7) % input).collect();
            let mut h0 = lstm.zero_state(1);
            h0.h = Init::Normal { mean: 0.0, std: 0.5 }.matrix(hid, 1, &mut rng);
            h0.c = Init::Normal { mean: 0.0, std: 0.5 }.matrix(hid, 1, &mut rng);
            for input in [SeqInput::Dense(&x), SeqInput::Index(&ix)] {
                GENERAL_ONLY.with(|g| g.set(true));
                let want = forward(&lstm, input, &h0);
                GENERAL_ONLY.with(|g| g.set(false));
                for threads in [1, 2, 3] {
                    rnn_tensor::parallel::set_num_threads(threads);
                    let got = forward(&lstm, input, &h0);
                    for (w, g) in want.iter().zip(&got) {
                        let same = w.iter().zip(g).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "dense {} H {hid} T {steps} bias {bias} threads {threads}",
                            matches!(input, SeqInput::Dense(_))
                        );
                    }
                }
            }
        }
        rnn_tensor::parallel::set_num_threads(1);
    }

    /// The packing kept in the cache is never stale: after a change of one weight of `W_hh`
    /// (in the first and in the last part's rows), the next forward with the same cache equals a
    /// fresh general forward, with 1 and 2 threads.
    #[test]
    fn sees_changed_weights() {
        let _lock = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        let mut rng = Rng::seed_from(12);
        let mut lstm = LstmConfig::new(4, 40).build::<f32>(&mut rng).unwrap();
        let x = Init::Normal { mean: 0.0, std: 1.0 }.matrix(4, 5, &mut rng);
        let h0 = lstm.zero_state(1);
        for threads in [1, 2] {
            rnn_tensor::parallel::set_num_threads(threads);
            let mut cache = LstmCache::default();
            for (r, c) in [(3, 7), (159, 39), (90, 0)] {
                lstm.forward(SeqInput::Dense(&x), 1, &h0, &mut cache);
                lstm.params.weight_hh[(r, c)] += 0.5;
                let fin = lstm.forward(SeqInput::Dense(&x), 1, &h0, &mut cache);
                GENERAL_ONLY.with(|g| g.set(true));
                let want = lstm.forward(SeqInput::Dense(&x), 1, &h0, &mut LstmCache::default());
                GENERAL_ONLY.with(|g| g.set(false));
                assert_eq!(fin, want, "threads {threads}, W_hh[{r}, {c}] changed");
            }
        }
        rnn_tensor::parallel::set_num_threads(1);
    }
}
