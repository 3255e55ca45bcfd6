//! The tutorial's binary-addition network (examples/binary_addition.rs) learns to add, and its
//! training step allocates nothing.

#[path = "../examples/common/adder.rs"]
mod adder;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use adder::{Adder, AdderConfig};
use rnn::tensor::Rng;

/// Counts the allocations of the current thread (tests run on parallel threads).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local,
// which does not allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn default_seed_adds_every_7bit_pair_and_generalises() {
    // The example's default run: seed 0, 10,000 single-problem steps in f32.
    let mut rng = Rng::seed_from(0);
    let mut net = Adder::<f32>::new(AdderConfig::tutorial(), &mut rng).unwrap();
    for _ in 0..10_000 {
        net.train_step(&mut rng).unwrap();
    }
    assert_eq!(net.count_exact_all().unwrap(), (16384, 16384));
    // Never-seen widths (the example checks 10,000 of each; 1,000 keep the test fast).
    let mut eval = Rng::seed_from(1);
    assert_eq!(net.count_exact_random(32, 1000, &mut eval).unwrap(), 1000);
    assert_eq!(net.count_exact_random(64, 1000, &mut eval).unwrap(), 1000);
}

#[test]
fn training_step_allocates_nothing() {
    for t in [false, true] {
        let mut rng = Rng::seed_from(3);
        let cfg = AdderConfig { cell_bias: t, head_bias: t, ..AdderConfig::tutorial() };
        let mut net = Adder::<f64>::new(cfg, &mut rng).unwrap();
        // The first step sizes every buffer (which also shows the counter works).
        let start = allocations();
        net.train_step(&mut rng).unwrap();
        assert!(allocations() > start, "the first step should allocate the buffers");
        let before = allocations();
        for _ in 0..100 {
            net.train_step(&mut rng).unwrap();
        }
        assert_eq!(allocations() - before, 0, "allocations in 100 training steps (biases: {t})");
    }
}
