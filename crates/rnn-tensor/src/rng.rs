//! The project's one random number generator: seeded, portable and serialisable.
//!
//! All randomness flows from explicit [`Rng`] values (never a thread-local generator), so the same
//! seed gives the same result on every run. The generator is ChaCha8, whose whole state is the
//! seed, the stream and the position in it; [`Rng::state`] and [`Rng::from_state`] save and restore
//! it exactly, which is what a resumed training run needs.

use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A seeded ChaCha8 generator with the draws this project needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    inner: ChaCha8Rng,
}

/// The complete state of an [`Rng`]: restore it with [`Rng::from_state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RngState {
    /// The 32-byte ChaCha key.
    pub seed: [u8; 32],
    /// The stream number.
    pub stream: u64,
    /// The position in the stream, in 32-bit words.
    pub word_pos: u128,
}

impl Rng {
    /// A generator seeded from a `u64` (the same expansion as `SeedableRng::seed_from_u64`).
    pub fn seed_from(seed: u64) -> Self {
        Self { inner: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// The generator's complete state.
    pub fn state(&self) -> RngState {
        RngState {
            seed: self.inner.get_seed(),
            stream: self.inner.get_stream(),
            word_pos: self.inner.get_word_pos(),
        }
    }

    /// Rebuilds a generator from [`Rng::state`]; it continues exactly where that one stood.
    pub fn from_state(state: RngState) -> Self {
        let mut inner = ChaCha8Rng::from_seed(state.seed);
        inner.set_stream(state.stream);
        inner.set_word_pos(state.word_pos);
        Self { inner }
    }

    /// A uniform draw from `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    /// A uniform draw from `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// A draw from the normal distribution `N(mean, std²)`.
    pub fn normal(&mut self, mean: f64, std: f64) -> f64 {
        let z: f64 = StandardNormal.sample(&mut self.inner);
        mean + std * z
    }

    /// A uniform integer in `0..n`. `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below: the range 0..0 is empty");
        self.inner.random_range(0..n)
    }

    /// A fair coin.
    pub fn bit(&mut self) -> bool {
        self.inner.next_u32() & 1 == 1
    }

    /// A raw 64-bit draw (for deriving independent seeds).
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// An index drawn from the (unnormalised, non-negative) weights `w`.
    /// Returns `None` if the weights do not sum to a positive finite number.
    pub fn categorical(&mut self, w: &[f64]) -> Option<usize> {
        let total: f64 = w.iter().sum();
        if !(total > 0.0 && total.is_finite()) {
            return None;
        }
        let mut u = self.next_f64() * total;
        let mut last = None;
        for (i, &p) in w.iter().enumerate() {
            if p > 0.0 {
                last = Some(i);
                if u < p {
                    return Some(i);
                }
                u -= p;
            }
        }
        last
    }

    /// The underlying `rand` generator, for use with `rand` and `rand_distr` APIs.
    pub fn as_rand(&mut self) -> &mut ChaCha8Rng {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws_and_state_round_trips() {
        let mut a = Rng::seed_from(42);
        let mut b = Rng::seed_from(42);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let _ = a.normal(0.0, 1.0);
        let saved = a.state();
        let mut c = Rng::from_state(saved);
        for _ in 0..100 {
            assert_eq!(a.next_f64().to_bits(), c.next_f64().to_bits());
        }
        assert_ne!(Rng::seed_from(1).next_u64(), Rng::seed_from(2).next_u64());
    }

    #[test]
    fn categorical_follows_weights() {
        let mut r = Rng::seed_from(0);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[r.categorical(&[1.0, 0.0, 3.0]).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        let frac = counts[2] as f64 / 30_000.0;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
        assert_eq!(r.categorical(&[0.0, 0.0]), None);
        assert_eq!(r.categorical(&[f64::NAN]), None);
    }
}
