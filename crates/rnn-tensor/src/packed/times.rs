//! Wall-clock time of the f32 GEMM's products where they run, by shape and route (off until
//! [`set_product_timing`] turns it on).
//!
//! `perf` names the micro-kernel, not the product that called it, and a product timed alone
//! (`bench_table --gemm`) runs with its operands in cache; inside a training step they may come
//! from memory. While timing is on, every call of the AVX-512/AVX2 GEMM ([`gemm`](crate::gemm),
//! [`gemm_packed`](super::gemm_packed) and the others on strips; not the batch-1 GEMVs, the bf16
//! products, or f64) adds its time to a table kept per `m × k × n` and route, which
//! [`product_times`] reads and [`reset_product_times`] empties. A call split across threads
//! counts once (its wall time); products that the threads of a split time loop run each on
//! their own columns count once per thread, so two threads add up more than the wall time.
//! `bench_table --products CASE` prints the table of a case.
//!
//! Off, a product pays one relaxed atomic load; on, it reads the clock twice and takes a lock
//! (about 0.1 µs, against 10 µs and more for the products it times; two threads may wait for
//! each other at the lock).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// One row of [`product_times`]: the products of one shape and route since the last reset.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductTime {
    /// Rows of `C` (and of `op(A)`).
    pub m: usize,
    /// The inner dimension.
    pub k: usize,
    /// Columns of `C` (and of `B`).
    pub n: usize,
    /// How the kernel read its operands: `A` "in strips" (a [`PackedLhs`](super::PackedLhs)),
    /// "in place" (column-major, read where it lies) or "packed per call"; "B in strips" when the
    /// right operand is itself a strip packing ([`gemm_packed_pair`](super::gemm_packed_pair));
    /// "row sums" when the call also summed `A`'s rows (a bias gradient).
    pub route: &'static str,
    /// How many calls.
    pub calls: u64,
    /// Their time, in seconds.
    pub seconds: f64,
}

impl ProductTime {
    /// The calls' throughput: `2·m·k·n·calls` flops over their time, in GFLOP/s.
    pub fn gflops(&self) -> f64 {
        2.0 * (self.m * self.k * self.n) as f64 * self.calls as f64 / self.seconds / 1e9
    }
}

static TABLE: Mutex<Vec<ProductTime>> = Mutex::new(Vec::new());
static ON: AtomicBool = AtomicBool::new(false);

/// Turns the timing of every product on or off (for the whole process; the table is kept).
pub fn set_product_timing(on: bool) {
    ON.store(on, Relaxed);
}

/// Every shape and route timed since the last [`reset_product_times`], in order of first call.
pub fn product_times() -> Vec<ProductTime> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Empties the table.
pub fn reset_product_times() {
    TABLE.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Times one call from its creation to its drop.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct Timer {
    shape: (usize, usize, usize),
    route: &'static str,
    start: Instant,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Timer {
    /// A timer for a product of this shape and route, or `None` while timing is off (the
    /// route is named only then).
    pub(crate) fn start(m: usize, k: usize, n: usize, route: impl FnOnce() -> &'static str) -> Option<Self> {
        ON.load(Relaxed).then(|| Timer { shape: (m, k, n), route: route(), start: Instant::now() })
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let seconds = self.start.elapsed().as_secs_f64();
        let (m, k, n) = self.shape;
        let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        match table.iter_mut().find(|r| (r.m, r.k, r.n, r.route) == (m, k, n, self.route)) {
            Some(row) => {
                row.calls += 1;
                row.seconds += seconds;
            }
            None => table.push(ProductTime { m, k, n, route: self.route, calls: 1, seconds }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{gemm, Mat, Trans};

    #[test]
    fn products_are_counted_by_shape() {
        // Tests run in parallel threads of one process: count only this test's shapes (odd
        // sizes no other test uses; the others' products meanwhile are timed too, which
        // changes no value).
        let a = Mat::<f32>::from_fn(37, 23, |i, j| (i + j) as f32);
        let b = Mat::<f32>::from_fn(23, 19, |i, j| (i * j) as f32);
        let mut c = Mat::<f32>::zeros(37, 19);
        set_product_timing(true);
        for _ in 0..3 {
            gemm(1.0, &a, Trans::No, &b, Trans::No, 0.0, &mut c);
        }
        set_product_timing(false);
        let rows: Vec<_> = product_times().into_iter().filter(|r| (r.k, r.n.min(r.m)) == (23, 19)).collect();
        if crate::simd::gemm_level() == crate::simd::Level::Baseline {
            // No f32 kernel here: nothing is timed.
            assert!(rows.is_empty());
            return;
        }
        let calls: u64 = rows.iter().map(|r| r.calls).sum();
        assert_eq!(calls, 3, "{rows:?}");
        assert!(rows.iter().all(|r| r.seconds > 0.0 && r.gflops() > 0.0), "{rows:?}");
    }
}
