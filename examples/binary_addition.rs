//! Stage 2: a vanilla RNN learns binary addition (the first RNN tutorial's example).
//!
//! 8-bit problems, least significant bit first; 16 sigmoid hidden units; every weight from
//! `U(-1, 1)`; SGD with learning rate 0.1 on `½ Σ_t (σ(z_t) - y_t)²`; 10,000 single-problem
//! steps. Every 1,000 steps it prints what the tutorial prints; at the end it adds every pair of
//! 7-bit operands, then random 32- and 64-bit problems it never saw (trained on 8 bits only,
//! the net has to have learned the carry rule itself).
//!
//! Run with `cargo run --release --example binary_addition`, or with another seed:
//! `cargo run --release --example binary_addition -- --seed 3`.

#[path = "common/adder.rs"]
mod adder;

use std::error::Error;
use std::time::Instant;

use adder::{bits_msb_first, Adder, AdderConfig};
use rnn::tensor::Rng;

const STEPS: usize = 10_000;

fn parse_seed() -> Result<u64, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(0),
        [flag, n] if flag == "--seed" => {
            n.parse().map_err(|_| format!("--seed needs a non-negative integer, got {n:?}").into())
        }
        _ => Err(format!("usage: binary_addition [--seed N], got {args:?}").into()),
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let seed = parse_seed()?;
    let cfg = AdderConfig::tutorial();
    println!(
        "binary addition: {} bits, {} sigmoid units, U(-{}, {}) weights, SGD lr {}, {STEPS} steps, seed {seed}",
        cfg.bits, cfg.hidden, cfg.init, cfg.init, cfg.lr
    );
    let mut rng = Rng::seed_from(seed);
    let mut net = Adder::<f32>::new(cfg, &mut rng)?;

    let start = Instant::now();
    for step in 1..=STEPS {
        let out = net.train_step(&mut rng)?;
        if step % 1000 == 0 {
            let p = out.problem;
            println!("Error:{:.6}", out.abs_error);
            println!("Pred:{}", bits_msb_first(out.predicted, cfg.bits));
            println!("True:{}", bits_msb_first(p.sum(), cfg.bits));
            let verdict = if out.predicted == p.sum() { "TRUE" } else { "FALSE" };
            println!("{} + {} = {} {verdict}", p.a, p.b, out.predicted);
            println!("------------");
        }
    }
    let train_time = start.elapsed();

    let (exact, total) = net.count_exact_all()?;
    println!("exact: {exact}/{total}");
    let mut eval_rng = Rng::seed_from(seed.wrapping_add(0x5eed));
    for bits in [32, 64] {
        let n = net.count_exact_random(bits, 10_000, &mut eval_rng)?;
        println!("{bits}-bit: {n}/10000");
    }
    println!("training time: {:.1} ms ({STEPS} steps)", train_time.as_secs_f64() * 1e3);
    Ok(())
}
