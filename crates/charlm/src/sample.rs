//! Choosing the next character from a column of logits.
//!
//! With temperature `τ > 0` the distribution is `p_i ∝ exp((z_i - max z) / τ)`: `τ < 1` sharpens
//! it, `τ > 1` flattens it. With top-`k` only the `k` largest logits keep their weight (ties
//! broken by index; `k ≥ V` keeps all). With argmax the largest logit wins (the first of equal
//! ones) and nothing is drawn. All draws come from the caller's seeded [`Rng`].

use rnn_data::Vocab;
use rnn_tensor::{Rng, Scalar};

use crate::CharLmError;

/// The largest temperature accepted: beyond it the distribution is uniform to within `f64`.
pub const MAX_TEMPERATURE: f64 = 1e6;

/// How to choose the next character.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingConfig {
    /// `τ`, in `(0, MAX_TEMPERATURE]`. Default 1.
    pub temperature: f64,
    /// Keep only the `k` most likely characters (`k ≥ 1`). Default: all.
    pub top_k: Option<usize>,
    /// Take the most likely character instead of drawing. Default false.
    pub argmax: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: None, argmax: false }
    }
}

impl SamplingConfig {
    /// Temperature 1, all characters, drawn.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the temperature.
    pub fn with_temperature(mut self, t: f64) -> Self {
        self.temperature = t;
        self
    }
    /// Keeps only the `k` most likely characters.
    pub fn with_top_k(mut self, k: Option<usize>) -> Self {
        self.top_k = k;
        self
    }
    /// Takes the most likely character.
    pub fn with_argmax(mut self, argmax: bool) -> Self {
        self.argmax = argmax;
        self
    }

    /// Checks the temperature and `k`.
    pub fn check(&self) -> Result<(), CharLmError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0 && self.temperature <= MAX_TEMPERATURE) {
            return Err(CharLmError::arg(
                "--temperature",
                format!(
                    "must be in (0, {MAX_TEMPERATURE}], got {}; use --argmax for the most likely character",
                    self.temperature
                ),
            ));
        }
        if self.top_k == Some(0) {
            return Err(CharLmError::arg("--top-k", "must be at least 1, got 0"));
        }
        Ok(())
    }
}

/// The index of the largest value (the first of equal ones).
pub fn argmax<T: Scalar>(logits: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// Chooses the next character from one column of logits. `weights` is scratch space.
pub fn pick<T: Scalar>(
    logits: &[T],
    cfg: &SamplingConfig,
    rng: &mut Rng,
    weights: &mut Vec<f64>,
) -> Result<usize, CharLmError> {
    if logits.is_empty() {
        return Err(CharLmError::Sample("the model produced no logits".into()));
    }
    if let Some(i) = logits.iter().position(|v| !v.to_f64().is_finite()) {
        return Err(CharLmError::Sample(format!(
            "logit {i} is {}; the model's weights are broken",
            logits[i]
        )));
    }
    if cfg.argmax {
        return Ok(argmax(logits));
    }
    let max = logits[argmax(logits)].to_f64();
    weights.clear();
    weights.extend(logits.iter().map(|&z| ((z.to_f64() - max) / cfg.temperature).exp()));
    if let Some(k) = cfg.top_k.filter(|&k| k < logits.len()) {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        // Largest first; equal logits keep index order.
        order.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap_or(std::cmp::Ordering::Equal));
        for &i in &order[k..] {
            weights[i] = 0.0;
        }
    }
    // The largest logit has weight exp(0) = 1, so the total is positive and finite.
    rng.categorical(weights)
        .ok_or_else(|| CharLmError::Sample("the weights do not sum to a positive number".into()))
}

/// The indices of a prime text; the error lists every character outside the vocabulary.
pub fn encode_prime(vocab: &Vocab, prime: &str) -> Result<Vec<usize>, CharLmError> {
    Ok(vocab.encode(prime)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn freq(logits: &[f64], cfg: SamplingConfig, n: usize) -> Vec<f64> {
        let mut rng = Rng::seed_from(5);
        let mut w = Vec::new();
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..n {
            counts[pick(logits, &cfg, &mut rng, &mut w).unwrap()] += 1;
        }
        counts.iter().map(|&c| c as f64 / n as f64).collect()
    }

    #[test]
    fn temperature_scales_the_softmax() {
        let logits = [0.0, (2.0f64).ln(), (5.0f64).ln()]; // probabilities 1:2:5 at τ = 1
        let f = freq(&logits, SamplingConfig::new(), 40_000);
        for (got, want) in f.iter().zip([0.125, 0.25, 0.625]) {
            assert!((got - want).abs() < 0.01, "{f:?}"); // 4σ of a binomial at n = 40000 is < 0.01
        }
        // τ = 0.5 squares the ratios: 1:4:25.
        let f = freq(&logits, SamplingConfig::new().with_temperature(0.5), 40_000);
        for (got, want) in f.iter().zip([1.0 / 30.0, 4.0 / 30.0, 25.0 / 30.0]) {
            assert!((got - want).abs() < 0.01, "{f:?}");
        }
    }

    #[test]
    fn top_k_and_argmax() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let f = freq(&logits.map(f64::from), SamplingConfig::new().with_top_k(Some(2)), 10_000);
        assert_eq!((f[0], f[2]), (0.0, 0.0));
        assert!((f[1] - 0.5).abs() < 0.03, "{f:?}");
        let mut w = Vec::new();
        let cfg = SamplingConfig::new().with_argmax(true);
        assert_eq!(pick(&logits, &cfg, &mut Rng::seed_from(0), &mut w).unwrap(), 1);
        let top1 = SamplingConfig::new().with_top_k(Some(1));
        assert_eq!(pick(&logits, &top1, &mut Rng::seed_from(0), &mut w).unwrap(), 1);
        // k larger than the vocabulary keeps everything.
        let f = freq(&[0.0, 0.0], SamplingConfig::new().with_top_k(Some(10)), 10_000);
        assert!((f[0] - 0.5).abs() < 0.03, "{f:?}");
    }

    #[test]
    fn bad_settings_and_logits_are_errors() {
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e7] {
            let e = SamplingConfig::new().with_temperature(t).check().unwrap_err().to_string();
            assert!(e.starts_with("invalid --temperature"), "{e}");
        }
        assert!(SamplingConfig::new().with_top_k(Some(0)).check().is_err());
        let e = pick(&[0.0, f64::NAN], &SamplingConfig::new(), &mut Rng::seed_from(0), &mut Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("logit 1 is NaN"), "{e}");
    }

    #[test]
    fn prime_lists_unknown_characters() {
        let v = Vocab::from_text("hello world");
        assert_eq!(encode_prime(&v, "hold").unwrap(), v.encode("hold").unwrap());
        let e = encode_prime(&v, "Hello, World").unwrap_err().to_string();
        assert!(e.contains("3 character(s) not in the vocabulary: ',', 'H', 'W'"), "{e}");
    }
}
