//! The linear cell `s_k = s_{k-1}·w_rec + x_k·w_x` alone: forward through a batch of streams,
//! backward through time, and how the gradient reaching early states scales like `w_rec^(n-k)`.
//!
//! ```text
//! cargo run -p rnn-cells --example linear_cell
//! ```

use rnn_cells::{last_state_mse, CellError, LinearCache, LinearConfig, LinearState, Recurrence, SeqInput};
use rnn_tensor::{Mat, Rng};

fn main() -> Result<(), CellError> {
    // Two streams of six steps in the 1 × (T·B) layout: column k·2 + b is step k of stream b.
    let streams = [[1.0, 0.0, 1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]];
    let (steps, batch) = (6, 2);
    let x = Mat::from_fn(1, steps * batch, |_, j| streams[j % batch][j / batch]);
    let targets = [4.0, 3.0];

    for (wx, wrec) in [(1.0, 1.0), (1.0, 0.5), (1.0, 2.0)] {
        let cell = LinearConfig::new().with_weights(wx, wrec).build::<f64>(&mut Rng::seed_from(0))?;
        let mut cache = LinearCache::default();
        let last = cell.forward(SeqInput::Dense(&x), batch, &cell.zero_state(batch), &mut cache);
        let (loss, d_last) = last_state_mse(&last.s, &targets)?;
        println!("w_x = {wx}, w_rec = {wrec}: final states {:?}, MSE {loss}", last.s.as_slice());

        // Backward with the loss on the final state only (no per-step output loss).
        let mut grads = cell.zero_grads();
        let mut d_x = Mat::zeros(0, 0);
        let d_out = Mat::zeros(1, steps * batch);
        let d_s0 = cell.backward(
            SeqInput::Dense(&x),
            &mut cache,
            &d_out,
            &LinearState { s: d_last },
            &mut grads,
            Some(&mut d_x),
        );
        println!(
            "  dξ/dw_x = {:.4}, dξ/dw_rec = {:.4}, dξ/ds_0 = {:?}",
            grads.wx(),
            grads.wrec(),
            d_s0.s.as_slice()
        );
        // dξ/dx_k = δ_k·w_x with δ_k = δ_n·w_rec^(n-k): the stream-0 gradient at every step.
        let per_step: Vec<String> = (0..steps).map(|k| format!("{:.4}", d_x[(0, k * batch)])).collect();
        println!("  dξ/dx_k of stream 0, k = 1..{steps}: {}", per_step.join(", "));
    }
    Ok(())
}
