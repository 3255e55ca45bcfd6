//! Binary streams with their counts: the tutorial's fixed dataset and a fresh seeded one.
//!
//! ```text
//! cargo run -p rnn-data --example binary_streams
//! ```

use rnn_data::{count_ones_fixture, BinaryStreams, BinaryStreamsConfig, DataError};
use rnn_tensor::Rng;

fn show(title: &str, d: &BinaryStreams<f64>, rows: usize) {
    println!("{title}: {} streams × {} steps, inputs {:?}", d.batch(), d.steps(), d.inputs().shape());
    for b in 0..rows.min(d.batch()) {
        let bits: Vec<String> = d.stream(b).iter().map(u8::to_string).collect();
        println!("  stream {b:2}: {}  -> target {}", bits.join(" "), d.targets()[b]);
    }
}

fn main() -> Result<(), DataError> {
    show("the tutorial's dataset (fixtures/count_ones_20x10.txt)", &count_ones_fixture(), 5);

    let random = BinaryStreamsConfig::new(4, 12).build::<f64>(&mut Rng::seed_from(7))?;
    show("random streams, seed 7", &random, 4);

    // The layout: column k·B + b holds step k of stream b, so one step's B values are adjacent.
    let b = random.batch();
    let step0: Vec<f64> = random.inputs().columns(0, b).iter().copied().collect();
    println!("step 0 of every stream, columns 0..{b}: {step0:?}");

    // A mistake is an error that says what to do, not a panic.
    if let Err(e) = BinaryStreams::<f64>::parse("0 1 1\n0 2 1\n", "inline text") {
        println!("parse error: {e}");
    }
    Ok(())
}
