//! A weight packed once and multiplied at every step, and the same product split over threads.
//!
//! ```sh
//! cargo run --release -p rnn-tensor --example packed_products
//! ```
//!
//! An LSTM layer multiplies the same `W_hh` (`4H × H`) by a new `h_{t-1}` (`H × B`) at each of
//! its `T` steps. `PackedLhs` packs `W_hh` once; `gemm_packed` then reads it as is. The
//! products are split over `parallel::for_each_part` by batch columns, and each part's columns
//! come out with the same bits as the whole product.

use std::sync::Mutex;
use std::time::Instant;

use rnn_tensor::{gemm, gemm_flops, gemm_packed, parallel, Mat, PackedLhs, Rng, Trans};

fn main() {
    let (hid, batch, steps) = (256usize, 64usize, 24usize);
    let mut rng = Rng::seed_from(7);
    let mut random = |r: usize, c: usize| Mat::<f32>::from_fn(r, c, |_, _| rng.uniform(-0.1, 0.1) as f32);
    let w_hh = random(4 * hid, hid);
    let hs: Vec<Mat<f32>> = (0..steps).map(|_| random(hid, batch)).collect();

    // Pack once, multiply T times.
    let mut packed = PackedLhs::new();
    packed.pack(&w_hh, Trans::No);
    let mut a_packed = Mat::<f32>::zeros(4 * hid, batch);
    let mut a_plain = Mat::<f32>::zeros(4 * hid, batch);
    let reps = 50;
    let t0 = Instant::now();
    for _ in 0..reps {
        for h in &hs {
            gemm_packed(1.0, &packed, h, Trans::No, 0.0, &mut a_packed);
        }
    }
    let packed_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    for _ in 0..reps {
        for h in &hs {
            gemm(1.0, &w_hh, Trans::No, h, Trans::No, 0.0, &mut a_plain);
        }
    }
    let plain_s = t0.elapsed().as_secs_f64();
    let flops = gemm_flops(4 * hid, hid, batch) * (steps * reps) as f64;
    println!(
        "W_hh·h, {}x{}x{batch}, {steps} steps x {reps}: packed once {:.1} GFLOP/s, gemm per call {:.1} GFLOP/s",
        4 * hid,
        hid,
        flops / packed_s / 1e9,
        flops / plain_s / 1e9
    );
    // Both routes give the same product up to rounding: |a - b| ≤ 1e-5 · Σ|terms|.
    let mut bound = Mat::<f32>::zeros(4 * hid, batch);
    gemm(1.0, &w_hh.abs(), Trans::No, &hs[steps - 1].abs(), Trans::No, 0.0, &mut bound);
    let worst = a_packed
        .iter()
        .zip(a_plain.iter())
        .zip(bound.iter())
        .map(|((a, b), s)| (a - b).abs() / s.max(f32::MIN_POSITIVE))
        .fold(0.0f32, f32::max);
    println!("largest difference packed vs gemm, relative to Σ|terms|: {worst:.2e}");
    assert!(worst <= 1e-5, "the packed product disagrees with gemm");

    // The same product split by batch columns over the library's threads: each part computes
    // its own columns; put together they equal the whole product bit for bit.
    let h = &hs[steps - 1];
    let pieces = Mutex::new(Vec::new());
    parallel::for_each_part(batch / 8, |part| {
        let cols = part.range(batch, 8);
        let mut c = Mat::<f32>::zeros(4 * hid, cols.len());
        gemm_packed(1.0, &packed, &h.columns(cols.start, cols.len()), Trans::No, 0.0, &mut c);
        pieces.lock().expect("no part panicked").push((cols, c));
    });
    let mut joined = Mat::<f32>::zeros(4 * hid, batch);
    let pieces = pieces.into_inner().expect("no part panicked");
    for (cols, c) in &pieces {
        joined.columns_mut(cols.start, cols.len()).copy_from(c);
    }
    println!(
        "{} parts on {} threads (RNN_NUM_THREADS or the cores): bit-identical to the whole product: {}",
        pieces.len(),
        parallel::num_threads(),
        joined == a_packed
    );
    assert!(joined == a_packed, "a split product must keep the bits");
}
