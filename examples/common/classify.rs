//! The work of `examples/classify.rs`, shared with its test (`tests/classify.rs`).
//!
//! **The task.** A sequence of 5 to 24 tokens drawn from an alphabet of 6 is labelled 1 when its
//! first token equals its last token, else 0 (the two classes are drawn equally often). Nothing
//! in the middle matters, and the last token sits at a different step in every sequence: a model
//! must find each sequence's own end, so the task shows variable-length batches at work (with
//! padding read as input, the "last token" would be padding).
//!
//! **The model.** A bidirectional GRU (hidden 24 per direction) reads a batch of sequences with
//! their lengths. The features of sequence `b` are the forward direction's state after its last
//! real step, which has seen the whole sequence, and the reverse direction's state after step 0,
//! which has also seen it all, from the other end: `[h→_{L_b}; h←_1]`, `48` numbers. An affine
//! head maps them to two logits; the loss is the softmax cross-entropy, averaged over the batch.
//!
//! **Backward.** The loss reaches the GRU only through the final states, so the output gradient
//! is zero and the final-state gradient carries the head's input gradient:
//! `d_final = [W_headᵀ·dz]` split between the two directions. Adam steps both the GRU and the head.

use rnn::cells::{softmax_cross_entropy, AffineConfig, GruConfig, Recurrence, Reduction, SeqInput};
use rnn::optim::{step_model, AdamConfig};
use rnn::tensor::{Mat, Rng};

/// Tokens in the alphabet.
pub const VOCAB: usize = 6;
/// Sequence lengths, inclusive.
pub const MIN_LEN: usize = 5;
/// See [`MIN_LEN`].
pub const MAX_LEN: usize = 24;

/// A batch: the tokens laid out step-major (`x[t·B + b]`, padding past each length), the
/// lengths and the labels.
pub struct Batch {
    pub x: Vec<usize>,
    pub lengths: Vec<usize>,
    pub labels: Vec<usize>,
}

/// `batch` random sequences of the task, half of each class on average.
pub fn draw(batch: usize, rng: &mut Rng) -> Batch {
    let mut x = vec![0; MAX_LEN * batch];
    let (mut lengths, mut labels) = (Vec::new(), Vec::new());
    for b in 0..batch {
        let len = MIN_LEN + rng.below(MAX_LEN - MIN_LEN + 1);
        let label = rng.below(2);
        let mut seq: Vec<usize> = (0..len).map(|_| rng.below(VOCAB)).collect();
        if label == 1 {
            seq[len - 1] = seq[0];
        } else if seq[len - 1] == seq[0] {
            seq[len - 1] = (seq[0] + 1 + rng.below(VOCAB - 1)) % VOCAB;
        }
        for (t, &tok) in seq.iter().enumerate() {
            x[t * batch + b] = tok;
        }
        // Padding: random tokens, which a model that honours the lengths never reads.
        for t in len..MAX_LEN {
            x[t * batch + b] = rng.below(VOCAB);
        }
        lengths.push(len);
        labels.push(label);
    }
    Batch { x, lengths, labels }
}

/// The features `[h→; h←]` (`2H × B`) of a bidirectional layer's final states.
fn features(fin: &[rnn::cells::GruState<f32>]) -> Mat<f32> {
    let (h, b) = fin[0].h.shape();
    Mat::from_fn(2 * h, b, |r, c| if r < h { fin[0].h[(r, c)] } else { fin[1].h[(r - h, c)] })
}

/// Trains for `steps` steps of 32 sequences (seed `seed`) and returns the accuracy on `test`
/// fresh sequences, printing progress every `report` steps (never when 0).
pub fn train_and_test(steps: usize, test: usize, seed: u64, report: usize) -> f64 {
    let mut rng = Rng::seed_from(seed);
    let hidden = 24;
    let mut gru = GruConfig::new(VOCAB, hidden).build_bidirectional::<f32>(&mut rng).expect("valid sizes");
    let mut head =
        AffineConfig::new(2 * hidden, 2).with_prefix("head.").build::<f32>(&mut rng).expect("valid sizes");
    let mut opt_gru = AdamConfig::new(0.01).build::<f32>().expect("valid settings");
    let mut opt_head = AdamConfig::new(0.01).build::<f32>().expect("valid settings");
    let (mut cache, mut d_logits) = (Default::default(), Mat::zeros(0, 0));
    let batch = 32;
    let d_out = Mat::zeros(2 * hidden, MAX_LEN * batch);
    let zero = gru.zero_state(batch);
    let mut recent = 0.0;
    for step in 1..=steps {
        let data = draw(batch, &mut rng);
        let fin = gru.forward_lengths(SeqInput::Index(&data.x), batch, &data.lengths, &zero, &mut cache);
        let feats = features(&fin);
        let logits = head.forward(&feats);
        let loss = softmax_cross_entropy(&logits, &data.labels, batch, Reduction::Mean, Some(&mut d_logits))
            .expect("labels are classes");
        let mut g_head = head.zero_grads();
        let d_feats = head.backward(&feats, &d_logits, &mut g_head);
        // The final states' gradients: the head's input gradient, split by direction.
        let mut d_fin = gru.zero_state(batch);
        d_fin[0].h.copy_from(&d_feats.rows(0, hidden));
        d_fin[1].h.copy_from(&d_feats.rows(hidden, hidden));
        let mut g = gru.zero_grads();
        gru.backward_detached(SeqInput::Index(&data.x), &mut cache, &d_out, &d_fin, &mut g, None);
        step_model(&mut opt_gru, gru.params_mut(), &g).expect("matching gradients");
        step_model(&mut opt_head, &mut head.params, &g_head).expect("matching gradients");
        recent = if step == 1 { loss as f64 } else { 0.95 * recent + 0.05 * loss as f64 };
        if report > 0 && step % report == 0 {
            println!("step {step:5}  loss {recent:.4}");
        }
    }
    // Held-out sequences, drawn after training from the same stream of the seeded generator.
    let data = draw(test, &mut rng);
    let fin =
        gru.forward_lengths(SeqInput::Index(&data.x), test, &data.lengths, &gru.zero_state(test), &mut cache);
    let logits = head.forward(&features(&fin));
    let correct = (0..test).filter(|&b| (logits[(1, b)] > logits[(0, b)]) as usize == data.labels[b]).count();
    correct as f64 / test as f64
}
