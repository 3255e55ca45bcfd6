//! [`LineAligned`]: the system allocator with every allocation of a page or more starting on a
//! cache line, for a program to install as its global allocator.
//!
//! A [`Mat`](crate::Mat) keeps its values in a `Vec`, whose memory the global allocator gives with
//! the alignment of the element type: 4 bytes for `f32`. glibc's `malloc` returns 16-byte aligned
//! blocks, and a large one (from `mmap`) starts 16 bytes into a page, so a matrix's columns of
//! 1024 `f32` begin 16 bytes past a cache line, and every 64-byte load or store of the kernels
//! (the products' blocks of `C`, the gate passes' columns) touches two lines instead of one.
//! PyTorch aligns its tensors to 64 bytes. Measured on the 2-core Intel Xeon of model 167
//! (AVX-512, docs/performance-log.md, the section "from 18:05 UTC"), `bench_table`'s cases ran 2.5
//! to 8 % faster with this allocator than with the system's (`cell_gru_fwdbwd` 0.829 → 0.760 ms,
//! `seq_lstm_fwdbwd` 30.3 → 28.9 ms, `lm_lstm_2x256` 60.0 → 57.7 ms; seven alternating rounds),
//! with the same bits.
//!
//! A library cannot choose a program's allocator, so the crates do not: a program opts in, as
//! the project's examples, benches and the `charlm` program do:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: rnn_tensor::alloc::LineAligned = rnn_tensor::alloc::LineAligned;
//!
//! let m = rnn_tensor::Mat::<f32>::zeros(1024, 64);
//! assert_eq!(m.as_ptr() as usize % rnn_tensor::alloc::LINE, 0);
//! ```
//!
//! Small allocations (under [`PAGE`] bytes) are left as the system makes them: their alignment
//! matters little, and raising it would cost memory on every small `Vec` and `String`.

use std::alloc::{GlobalAlloc, Layout, System};

/// The alignment given to large allocations: a cache line of the x86-64 CPUs the kernels target.
pub const LINE: usize = 64;

/// Allocations of at least this many bytes are aligned to [`LINE`].
pub const PAGE: usize = 4096;

/// The system allocator ([`System`]), with allocations of [`PAGE`] bytes or more aligned to
/// [`LINE`] bytes (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct LineAligned;

/// The layout the system allocator is asked for in place of `layout`: the same size, aligned to
/// [`LINE`] when the size is at least [`PAGE`]. A function of the layout alone, so that a block
/// is always freed (and grown) with the layout it was made with.
fn widened(layout: Layout) -> Layout {
    if layout.size() >= PAGE && layout.align() < LINE {
        // Invalid only for a size within a line of `isize::MAX`, which no allocator gives:
        // the layout as it is then (the system refuses it).
        Layout::from_size_align(layout.size(), LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every block comes from `System` with `widened(layout)`, whose size is the caller's and
// whose alignment is at least the caller's, and goes back to `System` with the same widened
// layout (`widened` depends on the layout alone); `realloc` keeps the contents up to the smaller
// size and returns a block valid for `new_size` bytes at `layout.align()` or more.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract (a non-zero size), which `widened` keeps.
        unsafe { System.alloc(widened(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(widened(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated here with `layout`, so by `System` with `widened(layout)`.
        unsafe { System.dealloc(ptr, widened(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (widened(layout), Layout::from_size_align(new_size, layout.align()));
        let Ok(new) = new.map(widened) else { return std::ptr::null_mut() };
        if old.align() == new.align() {
            // SAFETY: `ptr` came from `System` with `old`, and `new` has its alignment.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // Crossing PAGE changes the alignment, which `System.realloc` keeps: move the block.
        // SAFETY: `new` has a non-zero size (the caller's contract); the copy reads the old
        // block's first bytes and writes the new one's, which do not overlap; `ptr` came from
        // `System` with `old`.
        unsafe {
            let moved = System.alloc(new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates through `LineAligned` directly (the tests run under the default allocator).
    fn alloc(size: usize, align: usize, zeroed: bool) -> (*mut u8, Layout) {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero size.
        let p = unsafe {
            if zeroed {
                LineAligned.alloc_zeroed(layout)
            } else {
                LineAligned.alloc(layout)
            }
        };
        assert!(!p.is_null());
        (p, layout)
    }

    #[test]
    fn large_blocks_start_on_a_line_and_small_ones_keep_their_alignment() {
        for size in [PAGE, PAGE + 4, 1 << 20, 6 << 20] {
            for zeroed in [false, true] {
                let (p, layout) = alloc(size, 4, zeroed);
                assert_eq!(p as usize % LINE, 0, "{size} bytes");
                if zeroed {
                    // SAFETY: `size` bytes were allocated.
                    assert!(unsafe { std::slice::from_raw_parts(p, size) }.iter().all(|&b| b == 0));
                }
                // SAFETY: allocated above with `layout`.
                unsafe { LineAligned.dealloc(p, layout) };
            }
        }
        // A small block: whatever the system gives, at the alignment asked for.
        let (p, layout) = alloc(100, 8, false);
        assert_eq!(p as usize % 8, 0);
        // SAFETY: allocated above with `layout`.
        unsafe { LineAligned.dealloc(p, layout) };
        // An alignment above a line is kept.
        let (p, layout) = alloc(PAGE, 4096, false);
        assert_eq!(p as usize % 4096, 0);
        // SAFETY: allocated above with `layout`.
        unsafe { LineAligned.dealloc(p, layout) };
    }

    #[test]
    fn realloc_keeps_the_contents_across_the_page_threshold_both_ways() {
        for (from, to) in [(100, PAGE * 3), (PAGE * 3, 100), (PAGE, PAGE * 8), (PAGE * 8, PAGE), (40, 80)] {
            let (p, layout) = alloc(from, 4, false);
            // SAFETY: `from` bytes were allocated.
            let bytes = unsafe { std::slice::from_raw_parts_mut(p, from) };
            bytes.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
            // SAFETY: `p` was allocated with `layout`; `to` is non-zero.
            let q = unsafe { LineAligned.realloc(p, layout, to) };
            assert!(!q.is_null());
            if to >= PAGE {
                assert_eq!(q as usize % LINE, 0, "{from} -> {to}");
            }
            // SAFETY: the new block holds `to` bytes, the first `min` of them copied.
            let kept = unsafe { std::slice::from_raw_parts(q, from.min(to)) };
            assert!(kept.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "{from} -> {to}");
            // SAFETY: `q` holds `to` bytes at `layout.align()`.
            unsafe { LineAligned.dealloc(q, Layout::from_size_align(to, 4).unwrap()) };
        }
    }
}
