//! The vanilla RNN cell on its own: build it, run a batch of sequences forward, backpropagate
//! through time, and read the gradients by their PyTorch names.
//!
//! Run with `cargo run -p rnn-cells --example rnn_cell`.

use rnn_cells::loss::{bce_with_logits, Reduction};
use rnn_cells::{AffineConfig, CellError, Recurrence, RnnCache, RnnConfig, SeqInput};
use rnn_tensor::activation::Activation;
use rnn_tensor::init::Init;
use rnn_tensor::{Mat, Parameters, Rng};

fn main() -> Result<(), CellError> {
    let mut rng = Rng::seed_from(0);
    let (input, hidden, steps, batch) = (3, 5, 4, 2);

    // nn.RNN(3, 5, nonlinearity='tanh') with PyTorch's default U(-1/sqrt(5), 1/sqrt(5)).
    let cell = RnnConfig::new(input, hidden).with_activation(Activation::Tanh).build::<f64>(&mut rng)?;
    let head = AffineConfig::new(hidden, 1).with_prefix("head.").build(&mut rng)?;
    println!("parameters:");
    for (name, m) in cell.params().named_params() {
        println!("  {name:<14} {:?}", m.shape());
    }

    // A batch of 2 sequences of 4 steps: column t·B + b is sample b at step t.
    let x: Mat<f64> = Init::Normal { mean: 0.0, std: 1.0 }.matrix(input, steps * batch, &mut rng);
    let targets = Mat::from_fn(1, steps * batch, |_, c| (c % 2) as f64);
    let h0 = cell.zero_state(batch);
    let mut cache = RnnCache::default();
    let h_final = cell.forward(SeqInput::Dense(&x), batch, &h0, &mut cache);
    let hs = cell.outputs(&cache);
    println!("outputs h_1..h_T: {:?}, final state: {:?}", hs.shape(), h_final.h.shape());

    // A per-step head and loss, then backward through the head and through time.
    let logits = head.forward(hs);
    let mut d_logits = Mat::zeros(0, 0);
    let loss = bce_with_logits(&logits, &targets, Reduction::Mean, &mut d_logits);
    let mut head_grads = head.zero_grads();
    let d_h = head.backward(hs, &d_logits, &mut head_grads);
    let mut grads = cell.zero_grads();
    let mut d_x = Mat::zeros(input, steps * batch);
    let d_final = cell.zero_state(batch);
    let d_h0 = cell.backward(SeqInput::Dense(&x), &mut cache, &d_h, &d_final, &mut grads, Some(&mut d_x));
    println!("BCE loss {loss:.6}");
    for (name, g) in grads.named_params() {
        println!("  |d {name}| = {:.6}", g.norm());
    }
    println!("  |d x| = {:.6}, |d h0| = {:.6}", d_x.norm(), d_h0.h.norm());

    // One-hot input by index: the same cell reading symbols 0..3 without a one-hot matrix.
    let symbols = [0usize, 2, 1, 1, 2, 0, 0, 1];
    let mut cache = RnnCache::default();
    cell.forward(SeqInput::Index(&symbols), batch, &h0, &mut cache);
    println!("index input: outputs {:?}", cell.outputs(&cache).shape());

    // Inference one step at a time (a GEMV when the batch is 1).
    let mut state = cell.zero_state(1);
    for &s in &symbols[..4] {
        cell.step(SeqInput::Index(&[s]), &mut state);
    }
    println!("after 4 single steps: h = {:.4?}", state.h.as_slice());
    Ok(())
}
