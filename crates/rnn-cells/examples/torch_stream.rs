//! Deployment of a recurrent network trained in PyTorch: a decoder's `nn.LSTMCell(8, 16)`, loaded
//! from its `state_dict` and run a step at a time by a `Stream`, with two users' states kept
//! apart as a server would keep them.
//!
//! The `state_dict` is made here, under PyTorch's names and shapes (row-major values), so that
//! the example needs no file; from a safetensors file (feature `safetensors`) the same module is
//! `TorchRecurrent::from_safetensors_prefix("model.safetensors", "decoder.cell", Activation::Tanh)`
//! for the tensors `decoder.cell.weight_ih`, ... of a whole model.
//!
//! ```text
//! cargo run -p rnn-cells --example torch_stream
//! ```

use std::collections::BTreeMap;

use rnn_cells::{
    with_torch_module, Recurrence, RecurrentState, SeqInput, Stream, TorchRecurrent, TorchTensor,
};
use rnn_tensor::activation::Activation;
use rnn_tensor::{Mat, Rng};

fn main() -> Result<(), rnn_cells::CellError> {
    let (input, hidden, steps) = (8, 16, 6);
    // The cell's state_dict as PyTorch holds it: weight_ih [4H, I], weight_hh [4H, H], biases [4H].
    let mut rng = Rng::seed_from(2026);
    let mut tensor = |shape: Vec<usize>| {
        let data = (0..shape.iter().product()).map(|_| rng.normal(0.0, 0.25) as f32).collect();
        TorchTensor { shape, data }
    };
    let state_dict: BTreeMap<String, TorchTensor<f32>> = [
        ("weight_ih", vec![4 * hidden, input]),
        ("weight_hh", vec![4 * hidden, hidden]),
        ("bias_ih", vec![4 * hidden]),
        ("bias_hh", vec![4 * hidden]),
    ]
    .into_iter()
    .map(|(name, shape)| (name.to_string(), tensor(shape)))
    .collect();
    let shape = rnn_cells::torch::module_shape(&state_dict)?;
    println!(
        "state_dict: {} cell (cell {}), input {}, hidden {}",
        shape.kind, shape.cell, shape.input, shape.hidden
    );
    let module = TorchRecurrent::from_state_dict(&state_dict, Activation::Tanh)?;

    // Two users' sequences, each x_t an 8-vector (a column).
    let xs: Vec<Mat<f32>> =
        (0..2).map(|_| Mat::from_fn(input, steps, |_, _| rng.normal(0.0, 1.0) as f32)).collect();
    with_torch_module!(&module, |model| {
        // One stream of batch 1 serves both users: their states are saved and restored around
        // each step, as a server keeps one per connection.
        let mut stream = Stream::new(model.clone(), 1)?;
        let mut saved = vec![stream.state().clone(); 2];
        let mut last = vec![Mat::zeros(hidden, 1); 2];
        for t in 0..steps {
            for (user, x) in xs.iter().enumerate() {
                stream.set_state(saved[user].clone())?;
                let x_t = x.columns(t, 1).into_owned();
                last[user] = stream.step(SeqInput::Dense(&x_t))?.clone();
                saved[user] = stream.state().clone();
            }
            println!("step {t}: |h| user 0 {:.4}, user 1 {:.4}", last[0].norm(), last[1].norm());
        }
        // One forward over each user's whole sequence gives the same, to f32 rounding (its input
        // projection is one product over all steps, the stream's one per step: other sums).
        for (user, x) in xs.iter().enumerate() {
            let mut cache = Default::default();
            let fin = model.forward(SeqInput::Dense(x), 1, &model.zero_state(1), &mut cache);
            let whole = model.outputs(&cache).columns(steps - 1, 1).into_owned();
            let out_err = rnn_tensor::gradcheck::rel_error(whole.as_slice(), last[user].as_slice());
            let state_err = rnn_tensor::gradcheck::rel_error(&fin.to_flat(), &saved[user].to_flat());
            println!("user {user}: streamed against one forward: output {out_err:.1e}, state {state_err:.1e} (relative)");
            assert!(out_err < 1e-5 && state_err < 1e-5, "user {user}: the stream went astray");
        }
        // A new conversation starts from zeros.
        stream.reset();
        assert!(stream.state().to_flat().iter().all(|&v| v == 0.0));
        Ok(())
    })
}
