//! Binary streams whose target is the number of ones: the counting-ones stage's data.
//!
//! A dataset of `B` streams of `n` steps is stored in the project's sequence layout: the inputs
//! are one `1 × (n·B)` matrix whose column `k·B + b` holds step `k` of stream `b`, so the `B`
//! values of one step are contiguous. The target of stream `b` is `t_b = Σ_k x_{k,b}`.
//!
//! [`BinaryStreamsConfig`] draws fresh streams from a seeded [`Rng`]; [`count_ones_fixture`]
//! returns the tutorial's own 20 × 10 dataset, kept as a data file under `fixtures/`.

use rnn_tensor::{Mat, Rng, Scalar};

use crate::DataError;

/// The tutorial's 20 streams of 10 steps, one stream per line (`#` starts a comment).
const COUNT_ONES_20X10: &str = include_str!("../fixtures/count_ones_20x10.txt");

/// Binary streams with their counts as targets.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryStreams<T: Scalar> {
    inputs: Mat<T>,
    targets: Vec<T>,
    steps: usize,
}

impl<T: Scalar> BinaryStreams<T> {
    /// Streams from rows of bits, one row per stream; every row needs the same, non-zero
    /// length and only the values 0 and 1.
    pub fn from_rows<R: AsRef<[u8]>>(rows: &[R]) -> Result<Self, DataError> {
        let batch = rows.len();
        let steps = rows.first().map_or(0, |r| r.as_ref().len());
        if batch == 0 || steps == 0 {
            return Err(DataError::InvalidConfig(format!(
                "binary streams need at least one stream of at least one step, got {batch} streams of {steps}"
            )));
        }
        let mut inputs = Mat::zeros(1, steps * batch);
        let mut targets = vec![T::ZERO; batch];
        for (b, row) in rows.iter().enumerate() {
            let row = row.as_ref();
            if row.len() != steps {
                return Err(DataError::InvalidConfig(format!(
                    "stream {b} has {} steps, stream 0 has {steps}: all streams need the same length",
                    row.len()
                )));
            }
            for (k, &bit) in row.iter().enumerate() {
                if bit > 1 {
                    return Err(DataError::InvalidConfig(format!(
                        "stream {b}, step {k} is {bit}: binary streams hold only 0 and 1"
                    )));
                }
                let v = if bit == 1 { T::ONE } else { T::ZERO };
                inputs[(0, k * batch + b)] = v;
                targets[b] += v;
            }
        }
        Ok(Self { inputs, targets, steps })
    }

    /// Streams from text: one stream per line, bits separated by white space, blank lines and
    /// lines starting with `#` ignored. `what` names the source in error messages.
    pub fn parse(text: &str, what: &str) -> Result<Self, DataError> {
        let mut rows: Vec<Vec<u8>> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let row = line
                .split_whitespace()
                .map(|tok| match tok {
                    "0" => Ok(0),
                    "1" => Ok(1),
                    _ => Err(DataError::Parse {
                        what: what.to_string(),
                        line: i + 1,
                        message: format!("expected 0 or 1, found {tok:?}"),
                    }),
                })
                .collect::<Result<Vec<u8>, _>>()?;
            if let Some(first) = rows.first() {
                if first.len() != row.len() {
                    return Err(DataError::Parse {
                        what: what.to_string(),
                        line: i + 1,
                        message: format!("{} bits, the first stream has {}", row.len(), first.len()),
                    });
                }
            }
            rows.push(row);
        }
        Self::from_rows(&rows)
    }

    /// The inputs, `1 × (n·B)`, column `k·B + b` = step `k` of stream `b`.
    pub fn inputs(&self) -> &Mat<T> {
        &self.inputs
    }

    /// The targets: the number of ones in each stream, length `B`.
    pub fn targets(&self) -> &[T] {
        &self.targets
    }

    /// The number of streams `B`.
    pub fn batch(&self) -> usize {
        self.targets.len()
    }

    /// The number of steps `n` of every stream.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Stream `b` as bits, step by step. Panics if `b >= batch()`.
    pub fn stream(&self, b: usize) -> Vec<u8> {
        assert!(b < self.batch(), "BinaryStreams::stream: stream {b} of {}", self.batch());
        (0..self.steps).map(|k| u8::from(self.inputs[(0, k * self.batch() + b)] != T::ZERO)).collect()
    }
}

/// How to draw random binary streams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinaryStreamsConfig {
    /// The number of streams `B`.
    pub streams: usize,
    /// The number of steps `n` of each stream.
    pub steps: usize,
    /// The probability of a 1 at each step. Default 0.5 (the tutorial rounds `U(0, 1)`).
    pub p_one: f64,
}

impl BinaryStreamsConfig {
    /// `streams` streams of `steps` steps each.
    pub fn new(streams: usize, steps: usize) -> Self {
        Self { streams, steps, p_one: 0.5 }
    }

    /// Sets the probability of a 1.
    pub fn with_p_one(mut self, p: f64) -> Self {
        self.p_one = p;
        self
    }

    /// Checks the configuration and draws the streams, step after step within each stream.
    pub fn build<T: Scalar>(self, rng: &mut Rng) -> Result<BinaryStreams<T>, DataError> {
        if !(0.0..=1.0).contains(&self.p_one) {
            return Err(DataError::InvalidConfig(format!("p_one must be in [0, 1], got {}", self.p_one)));
        }
        if self.streams == 0 || self.steps == 0 {
            return Err(DataError::InvalidConfig(format!(
                "binary streams need streams > 0 and steps > 0, got {} × {}",
                self.streams, self.steps
            )));
        }
        let rows: Vec<Vec<u8>> = (0..self.streams)
            .map(|_| (0..self.steps).map(|_| u8::from(rng.next_f64() < self.p_one)).collect())
            .collect();
        BinaryStreams::from_rows(&rows)
    }
}

/// The tutorial's dataset: 20 streams of 10 steps (targets 2, 4, 6, 6, 4, ...), read from
/// `fixtures/count_ones_20x10.txt`, which is compiled into the crate.
pub fn count_ones_fixture<T: Scalar>() -> BinaryStreams<T> {
    BinaryStreams::parse(COUNT_ONES_20X10, "fixtures/count_ones_20x10.txt")
        .expect("the embedded count_ones fixture is valid (checked by the crate's tests)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_is_the_tutorials_dataset() {
        let d = count_ones_fixture::<f64>();
        assert_eq!((d.batch(), d.steps()), (20, 10));
        let want = [2., 4., 6., 6., 4., 4., 6., 5., 7., 5., 7., 6., 4., 7., 3., 6., 4., 5., 6., 6.];
        assert_eq!(d.targets(), &want);
        assert_eq!(d.stream(0), [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(d.stream(19), [0, 0, 1, 1, 1, 1, 0, 0, 1, 1]);
        // Layout: column k·B + b is step k of stream b.
        assert_eq!(d.inputs().shape(), (1, 200));
        assert_eq!(d.inputs()[(0, 9 * 20)], 1.0);
        assert_eq!(d.inputs()[(0, 20 + 2)], 1.0);
        assert_eq!(d.inputs()[(0, 2)], 1.0);
    }

    #[test]
    fn random_streams_are_seeded_and_counted() {
        let a = BinaryStreamsConfig::new(7, 13).build::<f32>(&mut Rng::seed_from(3)).unwrap();
        let b = BinaryStreamsConfig::new(7, 13).build::<f32>(&mut Rng::seed_from(3)).unwrap();
        let c = BinaryStreamsConfig::new(7, 13).build::<f32>(&mut Rng::seed_from(4)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        for s in 0..7 {
            let ones = a.stream(s).iter().filter(|&&v| v == 1).count();
            assert_eq!(a.targets()[s], ones as f32);
        }
        // p_one = 0.5: about half ones over many draws (20 000 bits, 5 standard deviations).
        let big = BinaryStreamsConfig::new(200, 100).build::<f64>(&mut Rng::seed_from(9)).unwrap();
        let frac = big.inputs().sum() / 20_000.0;
        assert!((frac - 0.5).abs() < 5.0 * (0.25f64 / 20_000.0).sqrt(), "{frac}");
        let all =
            BinaryStreamsConfig::new(2, 5).with_p_one(1.0).build::<f64>(&mut Rng::seed_from(0)).unwrap();
        assert_eq!(all.targets(), &[5.0, 5.0]);
    }

    #[test]
    fn bad_input_is_reported() {
        let mut rng = Rng::seed_from(0);
        assert!(BinaryStreamsConfig::new(0, 5).build::<f64>(&mut rng).is_err());
        let e = BinaryStreamsConfig::new(2, 5).with_p_one(1.5).build::<f64>(&mut rng).unwrap_err();
        assert!(e.to_string().contains("p_one"), "{e}");
        let e = BinaryStreams::<f64>::parse("0 1\n1 2\n", "test").unwrap_err();
        assert_eq!(
            e,
            DataError::Parse { what: "test".into(), line: 2, message: "expected 0 or 1, found \"2\"".into() }
        );
        assert!(BinaryStreams::<f64>::parse("0 1\n1\n", "test").is_err());
        assert!(BinaryStreams::<f64>::from_rows(&[[0u8, 3]]).is_err());
        assert!(BinaryStreams::<f64>::parse("# nothing\n", "test").is_err());
    }
}
