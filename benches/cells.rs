//! Criterion benches of every case of `tools/torch_ref.py` (PyTorch), under the same names, so
//! the numbers sit beside PyTorch's (f32, seeded inputs, buffers reused across iterations as in
//! training). The cases are defined once in `examples/common/torch_cases.rs`, which
//! `examples/bench_table.rs` also runs; groups by topic:
//!
//! - `lm`: full training steps of a character model (stack → head → softmax CE → backward);
//! - `seq`: a 24-step LSTM forward + backward, the batch-1 inference forward, and bidirectional
//!   LSTM and GRU layers forward + backward;
//! - `cell`: one LSTM / GRU / RNN step forward + backward;
//! - `stream`: streaming inference, 100 one-step calls at batch 1 with the state carried.
//!
//! `cargo bench --bench cells`, or `cargo bench --bench cells -- NAME` for one case (the harness keeps the name it had when it held only
//! the cell and sequence cases).

#[path = "../examples/common/torch_cases.rs"]
mod torch_cases;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// 64-byte aligned matrices, as PyTorch's: the kernels' loads and stores stay within a cache line.
#[global_allocator]
static ALLOC: rnn::tensor::alloc::LineAligned = rnn::tensor::alloc::LineAligned;

fn topic(c: &mut Criterion, topic: &str) {
    let mut g = c.benchmark_group(topic);
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for name in torch_cases::names_here().into_iter().filter(|n| n.starts_with(topic)) {
        let mut case = torch_cases::build(name).expect("every listed case builds");
        g.sample_size(if case.flops > 1e9 { 10 } else { 30 });
        // Throughput in "elements" = floating-point operations, so criterion reports FLOP/s.
        g.throughput(Throughput::Elements(case.flops as u64));
        g.bench_function(case.name, |b| b.iter(&mut case.run));
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    for t in ["lm", "seq", "cell", "stream"] {
        topic(c, t);
    }
}

criterion_group!(cells, benches);
criterion_main!(cells);
