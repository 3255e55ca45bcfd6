//! The binary-addition dataset on its own: a single problem, its bit columns, and a batch in
//! the project's `features × (T·B)` layout.
//!
//! Run with `cargo run -p rnn-data --example binary_addition_data`.

use rnn_data::{from_bits_lsb_first, AdditionProblem, BinaryAddition, DataError};
use rnn_tensor::{Mat, Rng};

fn show_bits(m: &Mat<f32>, row: usize, batch: usize, sample: usize, bits: usize) -> String {
    // Most significant bit first, as one writes numbers.
    (0..bits).rev().map(|t| if m[(row, t * batch + sample)] == 1.0 { '1' } else { '0' }).collect()
}

fn main() -> Result<(), DataError> {
    let mut rng = Rng::seed_from(0);
    let gen = BinaryAddition::new(8)?;

    println!("one 8-bit problem, fed least significant bit first:");
    let one = gen.batch::<f32>(1, &mut rng)?;
    let p = one.problems[0];
    println!("  a = {:>3} = {}", p.a, show_bits(&one.inputs, 0, 1, 0, 8));
    println!("  b = {:>3} = {}", p.b, show_bits(&one.inputs, 1, 1, 0, 8));
    println!("  c = {:>3} = {}", p.sum(), show_bits(&one.targets, 0, 1, 0, 8));
    println!("  step t sees column t: inputs {:?}, targets {:?}", one.inputs.shape(), one.targets.shape());

    println!("a batch of 3 problems of 16 bits (column t·B + b):");
    let gen16 = BinaryAddition::new(16)?;
    let batch = gen16.batch::<f32>(3, &mut rng)?;
    for (s, p) in batch.problems.iter().enumerate() {
        let c = from_bits_lsb_first((0..16).map(|t| batch.targets[(0, t * 3 + s)] == 1.0));
        println!("  sample {s}: {:>5} + {:>5} = {:>5}  (target bits read back: {c})", p.a, p.b, p.sum());
    }
    println!("  inputs {:?}, targets {:?}", batch.inputs.shape(), batch.targets.shape());

    let widest = AdditionProblem::new((1 << 63) - 1, (1 << 63) - 1, 64)?;
    println!("64 bits is the widest: {} + {} = {}", widest.a, widest.b, widest.sum());
    let every = gen.all_problems()?.count();
    println!("every 8-bit problem (both operands below 128): {every}");
    Ok(())
}
