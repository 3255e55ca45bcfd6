//! The library's own threads: a fixed number of workers that split one piece of work into
//! contiguous parts (batch columns, weight rows), each part computed exactly as it would be on
//! one thread, so results are bit-identical for any thread count.
//!
//! The count is [`num_threads`]: `RNN_NUM_THREADS` if set, else the machine's available
//! parallelism; [`set_num_threads`] changes it at run time.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// The number of threads [`for_each_part`] uses (at least 1).
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = std::env::var("RNN_NUM_THREADS")
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&n| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            THREADS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Sets the number of threads [`for_each_part`] uses (0 is taken as 1).
pub fn set_num_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// One part of a [`for_each_part`] call: which part, of how many, and a barrier shared by all
/// parts of the call.
pub struct Part<'a> {
    /// This part's index, `0..count`.
    pub index: usize,
    /// The number of parts running together.
    pub count: usize,
    barrier: &'a std::sync::Barrier,
}

impl Part<'_> {
    /// Waits until every part of the call has reached this point.
    pub fn barrier(&self) {
        if self.count > 1 {
            self.barrier.wait();
        }
    }

    /// This part's share of `0..n`, in contiguous ranges whose starts are multiples of `align`.
    pub fn range(&self, n: usize, align: usize) -> Range<usize> {
        split_range(n, self.index, self.count, align)
    }
}

/// Part `index` of `count` contiguous ranges covering `0..n`, each start a multiple of `align`
/// (`align` ≥ 1); sizes differ by at most `align`.
pub fn split_range(n: usize, index: usize, count: usize, align: usize) -> Range<usize> {
    let align = align.max(1);
    let units = n.div_ceil(align);
    let start = (units * index / count * align).min(n);
    let end = (units * (index + 1) / count * align).min(n);
    start..end
}

/// Runs `f` on `min(num_threads(), max_parts)` parts in parallel (part 0 on the calling
/// thread) and returns when all have finished. With one part, `f` runs on the caller alone.
pub fn for_each_part<F: Fn(&Part<'_>) + Sync>(max_parts: usize, f: F) {
    let count = num_threads().min(max_parts).max(1);
    let barrier = std::sync::Barrier::new(count);
    if count == 1 {
        f(&Part { index: 0, count, barrier: &barrier });
        return;
    }
    std::thread::scope(|s| {
        for index in 1..count {
            let (f, barrier) = (&f, &barrier);
            s.spawn(move || f(&Part { index, count, barrier }));
        }
        f(&Part { index: 0, count, barrier: &barrier });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_and_align() {
        for n in [0usize, 1, 7, 64, 65, 1000] {
            for count in 1..4 {
                for align in [1usize, 8, 32] {
                    let mut next = 0;
                    for i in 0..count {
                        let r = split_range(n, i, count, align);
                        assert_eq!(r.start, next, "n {n} count {count} align {align}");
                        assert!(r.start.is_multiple_of(align) || r.start == n);
                        next = r.end;
                    }
                    assert_eq!(next, n);
                }
            }
        }
    }
}
