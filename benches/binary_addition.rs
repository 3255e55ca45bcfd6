//! The tutorial's whole binary-addition training run: 10,000 SGD steps on single 8-bit
//! problems, 16 sigmoid units, from a fresh network (seed 0), in `f32` and `f64`.
//!
//! Reference on this project's machine: 1.7 s for the tutorial's numpy code, 5.2 s for the
//! same model in PyTorch. Run with `cargo bench --bench binary_addition`.

#[path = "../examples/common/adder.rs"]
mod adder;

use std::hint::black_box;
use std::time::Duration;

use adder::{Adder, AdderConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use rnn::tensor::{Rng, Scalar};

const STEPS: usize = 10_000;

fn train<T: Scalar>() -> f64 {
    let mut rng = Rng::seed_from(0);
    let mut net = Adder::<T>::new(AdderConfig::tutorial(), &mut rng).expect("tutorial setup is valid");
    let mut last = 0.0;
    for _ in 0..STEPS {
        last = net.train_step(&mut rng).expect("training step").loss;
    }
    last
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("binary_addition");
    g.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    g.bench_function("train_10000_steps_f32", |b| b.iter(|| black_box(train::<f32>())));
    g.bench_function("train_10000_steps_f64", |b| b.iter(|| black_box(train::<f64>())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
