//! The layers as the language model uses them, end to end: a 2-layer LSTM stack with index input
//! and dropout, an affine head, softmax cross-entropy, truncated BPTT with the state carried
//! across windows, and Adam stepping the stack's and the head's parameters through
//! `step_model` (which pairs parameters and gradients by name). f32, seeded.

use rnn::cells::{softmax_cross_entropy, AffineConfig, LstmConfig, Recurrence, Reduction, SeqInput};
use rnn::optim::{step_model, AdamConfig};
use rnn::tensor::{Mat, Rng};

#[test]
fn lstm_stack_learns_a_periodic_text_with_carried_state() {
    let text = "the cat sat on the mat. ";
    let mut vocab: Vec<char> = text.chars().collect();
    vocab.sort();
    vocab.dedup();
    let v = vocab.len();
    let (batch, steps, hidden) = (4, 8, 24);
    // Stream b reads the repeated text from offset 5·b; window w covers positions w·steps..
    let stream: Vec<usize> =
        text.chars().cycle().take(400).map(|c| vocab.binary_search(&c).unwrap()).collect();
    let window = |w: usize| {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for t in 0..steps {
            for b in 0..batch {
                let p = 5 * b + w * steps + t;
                x.push(stream[p]);
                y.push(stream[p + 1]);
            }
        }
        (x, y)
    };

    let mut rng = Rng::seed_from(3);
    let mut stack =
        LstmConfig::new(v, hidden).build_stack::<f32>(2, &mut rng).unwrap().with_dropout(0.1).unwrap();
    let mut head = AffineConfig::new(hidden, v).with_prefix("head.").build::<f32>(&mut rng).unwrap();
    let mut opt_stack = AdamConfig::new(0.01).build::<f32>().unwrap();
    let mut opt_head = AdamConfig::new(0.01).build::<f32>().unwrap();
    let mut cache = Default::default();
    let mut d_logits = Mat::zeros(0, 0);
    let mut state = stack.zero_state(batch);
    let zero_final = stack.zero_state(batch);
    let mut losses = Vec::new();
    for it in 0..300 {
        let w = it % 40;
        if w == 0 {
            state = stack.zero_state(batch);
        }
        let (x, y) = window(w);
        let next = stack.forward_train(SeqInput::Index(&x), batch, &state, &mut cache, Some(&mut rng));
        let h = stack.outputs(&cache);
        let logits = head.forward(h);
        let loss = softmax_cross_entropy(&logits, &y, batch, Reduction::Mean, Some(&mut d_logits)).unwrap();
        let mut g_head = head.zero_grads();
        let dh = head.backward(h, &d_logits, &mut g_head);
        let mut g = stack.zero_grads();
        // Truncated BPTT: the carried state is treated as a constant (no gradient into the
        // previous window), so the final-state gradient is zero.
        stack.backward(SeqInput::Index(&x), &mut cache, &dh, &zero_final, &mut g, None);
        step_model(&mut opt_stack, stack.params_mut(), &g).unwrap();
        step_model(&mut opt_head, &mut head.params, &g_head).unwrap();
        state = next;
        losses.push(loss);
    }
    let first: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let last: f32 = losses[losses.len() - 20..].iter().sum::<f32>() / 20.0;
    eprintln!("mean loss: first 20 iterations {first}, last 20 {last}");
    // Uniform guessing costs ln(V) ≈ 2.5; the text is periodic, so the model should learn it well.
    assert!(first > 2.0, "first losses {first}");
    assert!(last < 0.1, "mean loss fell only from {first} to {last}");
}
