//! A 2-layer LSTM stack with index input, an affine head and softmax cross-entropy, trained by
//! plain gradient descent to continue a short text, then sampled greedily step by step.
//!
//! Shows the whole API of the layers: `LstmConfig::build_stack`, `Stack::with_dropout`,
//! `forward_train` (dropout on) and `forward` (evaluation), `backward` into gradients that pair
//! with the parameters by name, and `step` for generation.
//!
//! ```text
//! cargo run -p rnn-cells --example lstm_stack
//! ```

use rnn_cells::{softmax_cross_entropy, AffineConfig, LstmConfig, Recurrence, Reduction, SeqInput};
use rnn_tensor::{Mat, Parameters, Rng};

fn main() -> Result<(), rnn_cells::CellError> {
    let text: Vec<char> = "hello world, hello rust. ".chars().collect();
    let mut vocab = text.clone();
    vocab.sort();
    vocab.dedup();
    let ids: Vec<usize> = text.iter().map(|c| vocab.binary_search(c).unwrap()).collect();
    let (v, hidden) = (vocab.len(), 32);
    // One sequence (batch 1): inputs are characters 0..n-1, targets 1..n.
    let (inputs, targets) = (&ids[..ids.len() - 1], &ids[1..]);

    let mut rng = Rng::seed_from(7);
    let mut stack = LstmConfig::new(v, hidden).build_stack::<f64>(2, &mut rng)?.with_dropout(0.1)?;
    let mut head = AffineConfig::new(hidden, v).with_prefix("head.").build(&mut rng)?;
    let names: Vec<String> = stack.params().named_params().into_iter().map(|(n, _)| n).collect();
    println!("vocabulary {v}, parameters: {}", names.join(", "));

    let mut cache = Default::default();
    let h0 = stack.zero_state(1);
    let mut d_logits = Mat::zeros(0, 0);
    let lr = 2.0;
    for it in 0..=400 {
        stack.forward_train(SeqInput::Index(inputs), 1, &h0, &mut cache, Some(&mut rng));
        let h = stack.outputs(&cache);
        let logits = head.forward(h);
        let loss = softmax_cross_entropy(&logits, targets, 1, Reduction::Mean, Some(&mut d_logits))?;
        let mut g_head = head.zero_grads();
        let dh = head.backward(h, &d_logits, &mut g_head);
        let mut g = stack.zero_grads();
        stack.backward(SeqInput::Index(inputs), &mut cache, &dh, &h0, &mut g, None);
        // Plain gradient descent, pairing parameters and gradients by their position (= name).
        for ((_, p), (_, dp)) in stack.params_mut().named_params_mut().into_iter().zip(g.named_params()) {
            *p -= dp * lr;
        }
        for ((_, p), (_, dp)) in head.params.named_params_mut().into_iter().zip(g_head.named_params()) {
            *p -= dp * lr;
        }
        if it % 50 == 0 {
            println!("iteration {it:3}: mean cross-entropy {loss:.4}");
        }
    }

    // Greedy generation with `step` (batch 1 takes the GEMV route), dropout off.
    let mut state = stack.zero_state(1);
    let mut c = ids[0];
    let mut out = String::from(vocab[c]);
    for _ in 0..text.len() - 1 {
        stack.step(SeqInput::Index(&[c]), &mut state);
        let logits = head.forward(&state.last().unwrap().h);
        c = logits.column(0).argmax().0;
        out.push(vocab[c]);
    }
    println!("greedy continuation of {:?}: {out:?}", vocab[ids[0]]);
    Ok(())
}
