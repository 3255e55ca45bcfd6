//! Binary addition, one bit per step (the first RNN tutorial's task).
//!
//! A problem `a + b = c` with `bits`-bit numbers is a sequence of `T = bits` steps, least
//! significant bit first: at step `t` the input is the pair of bits `(a_t, b_t)` and the
//! target is `c_t`. Both operands are drawn uniformly below `2^(bits-1)`, so the sum is below
//! `2^bits` and fits in `bits` bits; the net has to carry from step to step, which is why a
//! recurrent state is needed.
//!
//! Layout: inputs are `2 × (T·B)` (row 0 holds `a`'s bits, row 1 `b`'s), targets `1 × (T·B)`,
//! column `t·B + s` holding sample `s` at bit `t`. A single problem is the batch `B = 1`.

use rnn_tensor::{Mat, Rng, Scalar};

use crate::DataError;

/// One problem `a + b = sum`, on `bits` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdditionProblem {
    /// The first operand, below `2^(bits-1)`.
    pub a: u64,
    /// The second operand, below `2^(bits-1)`.
    pub b: u64,
    /// The width of the numbers (and the number of steps).
    pub bits: u32,
}

/// `2^(bits-1)`, the bound on either operand (`bits` in 1..=64).
fn operand_bound(bits: u32) -> u64 {
    1u64 << (bits - 1)
}

impl AdditionProblem {
    /// A problem with given operands; both must be below `2^(bits-1)` and `bits` in 1..=64.
    pub fn new(a: u64, b: u64, bits: u32) -> Result<Self, DataError> {
        check_bits(bits)?;
        let bound = operand_bound(bits);
        if a >= bound || b >= bound {
            return Err(DataError::InvalidConfig(format!(
                "{bits}-bit addition needs both operands below 2^{} = {bound}, got {a} and {b}",
                bits - 1
            )));
        }
        Ok(Self { a, b, bits })
    }

    /// `a + b` (never overflows `bits` bits).
    pub fn sum(&self) -> u64 {
        self.a + self.b
    }

    /// Writes the problem as sample `sample` of a batch of `batch`: input columns
    /// `t·batch + sample` get `(a_t, b_t)` and target columns `c_t`, for `t` in `0..bits`.
    ///
    /// # Panics
    /// If `inputs` is not `2 × (bits·batch)`, `targets` not `1 × (bits·batch)`, or
    /// `sample >= batch`.
    pub fn write_sample<T: Scalar>(
        &self,
        inputs: &mut Mat<T>,
        targets: &mut Mat<T>,
        batch: usize,
        sample: usize,
    ) {
        let n = self.bits as usize * batch;
        assert!(
            inputs.shape() == (2, n) && targets.shape() == (1, n) && sample < batch,
            "addition write_sample: inputs {:?}, targets {:?}, expected (2, {n}) and (1, {n}); sample {sample} of {batch}",
            inputs.shape(),
            targets.shape()
        );
        let bit = |x: u64, t: usize| if (x >> t) & 1 == 1 { T::ONE } else { T::ZERO };
        let c = self.sum();
        let (x, y) = (inputs.as_mut_slice(), targets.as_mut_slice());
        for t in 0..self.bits as usize {
            let col = t * batch + sample;
            // Column-major: input column `col` is x[2·col..2·col+2].
            x[2 * col] = bit(self.a, t);
            x[2 * col + 1] = bit(self.b, t);
            y[col] = bit(c, t);
        }
    }
}

/// Reads a number back from its bits, least significant first (at most 64 are used).
pub fn from_bits_lsb_first(bits: impl IntoIterator<Item = bool>) -> u64 {
    bits.into_iter().take(64).enumerate().fold(0, |acc, (t, b)| acc | (u64::from(b) << t))
}

fn check_bits(bits: u32) -> Result<(), DataError> {
    if (1..=64).contains(&bits) {
        Ok(())
    } else {
        Err(DataError::InvalidConfig(format!("binary addition supports 1 to 64 bits, got {bits}")))
    }
}

/// A batch of problems in the project's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct AdditionBatch<T: Scalar> {
    /// `2 × (T·B)`: the bits of `a` (row 0) and `b` (row 1).
    pub inputs: Mat<T>,
    /// `1 × (T·B)`: the bits of the sum.
    pub targets: Mat<T>,
    /// The problems, sample by sample.
    pub problems: Vec<AdditionProblem>,
}

impl<T: Scalar> Default for AdditionBatch<T> {
    fn default() -> Self {
        Self { inputs: Mat::zeros(2, 0), targets: Mat::zeros(1, 0), problems: Vec::new() }
    }
}

impl<T: Scalar> AdditionBatch<T> {
    /// The number of samples `B`.
    pub fn batch(&self) -> usize {
        self.problems.len()
    }

    /// Fills the batch with `problems` (all of one width), reusing its buffers: nothing is
    /// allocated when the shapes are unchanged.
    pub fn fill(&mut self, problems: &[AdditionProblem]) -> Result<(), DataError> {
        let Some(first) = problems.first() else {
            return Err(DataError::InvalidConfig("an addition batch needs at least one problem".into()));
        };
        if let Some(p) = problems.iter().find(|p| p.bits != first.bits) {
            return Err(DataError::InvalidConfig(format!(
                "every problem of a batch must have the same width, got {} and {} bits",
                first.bits, p.bits
            )));
        }
        self.problems.clear();
        self.problems.extend_from_slice(problems);
        self.write();
        Ok(())
    }

    fn write(&mut self) {
        let batch = self.problems.len();
        let n = self.problems.first().map_or(0, |p| p.bits as usize) * batch;
        if self.inputs.shape() != (2, n) {
            self.inputs = Mat::zeros(2, n);
            self.targets = Mat::zeros(1, n);
        }
        for (s, p) in self.problems.iter().enumerate() {
            p.write_sample(&mut self.inputs, &mut self.targets, batch, s);
        }
    }
}

/// A seeded generator of `bits`-bit addition problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryAddition {
    bits: u32,
}

impl BinaryAddition {
    /// Problems of `bits` bits, `bits` in 1..=64.
    pub fn new(bits: u32) -> Result<Self, DataError> {
        check_bits(bits)?;
        Ok(Self { bits })
    }

    /// The width (and the number of steps of every sequence).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// One random problem, both operands uniform below `2^(bits-1)`.
    pub fn sample(&self, rng: &mut Rng) -> AdditionProblem {
        // The top (bits-1) bits of a 64-bit draw are uniform below 2^(bits-1).
        let draw = |rng: &mut Rng| if self.bits == 1 { 0 } else { rng.next_u64() >> (65 - self.bits) };
        let a = draw(rng);
        let b = draw(rng);
        AdditionProblem { a, b, bits: self.bits }
    }

    /// A new batch of `batch` random problems.
    pub fn batch<T: Scalar>(&self, batch: usize, rng: &mut Rng) -> Result<AdditionBatch<T>, DataError> {
        let mut out = AdditionBatch::default();
        self.batch_into(batch, rng, &mut out)?;
        Ok(out)
    }

    /// Refills `out` with `batch` random problems, reusing its buffers (no allocation when
    /// the shapes are unchanged; a single problem is `batch = 1`).
    pub fn batch_into<T: Scalar>(
        &self,
        batch: usize,
        rng: &mut Rng,
        out: &mut AdditionBatch<T>,
    ) -> Result<(), DataError> {
        if batch == 0 {
            return Err(DataError::InvalidConfig("an addition batch needs batch >= 1".into()));
        }
        out.problems.clear();
        for _ in 0..batch {
            out.problems.push(self.sample(rng));
        }
        out.write();
        Ok(())
    }

    /// Every problem of this width, `a` major (`2^(2·(bits-1))` of them), for exhaustive
    /// evaluation; only for `bits <= 16`.
    pub fn all_problems(&self) -> Result<impl Iterator<Item = AdditionProblem>, DataError> {
        if self.bits > 16 {
            return Err(DataError::InvalidConfig(format!(
                "enumerating every {}-bit problem would give 2^{} of them; use at most 16 bits",
                self.bits,
                2 * (self.bits - 1)
            )));
        }
        let bound = operand_bound(self.bits);
        let bits = self.bits;
        Ok((0..bound).flat_map(move |a| (0..bound).map(move |b| AdditionProblem { a, b, bits })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, prop_assert_eq, proptest, ProptestConfig};

    #[test]
    fn widths_and_operands_are_checked() {
        assert!(BinaryAddition::new(0).is_err());
        assert!(BinaryAddition::new(65).is_err());
        assert!(AdditionProblem::new(128, 0, 8).is_err());
        assert!(AdditionProblem::new(u64::MAX >> 1, u64::MAX >> 1, 64).is_ok());
        let e = AdditionProblem::new(1, 0, 1).unwrap_err();
        assert!(e.to_string().contains("below 2^0"), "{e}");
        assert!(BinaryAddition::new(17).unwrap().all_problems().is_err());
        assert_eq!(BinaryAddition::new(8).unwrap().all_problems().unwrap().count(), 16384);
    }

    #[test]
    fn layout_by_hand() {
        // 3 + 1 = 4 in 3 bits and 2 + 2 = 4, as a batch of 2: column t·2 + s.
        let mut batch = AdditionBatch::<f32>::default();
        batch
            .fill(&[AdditionProblem::new(3, 1, 3).unwrap(), AdditionProblem::new(2, 2, 3).unwrap()])
            .unwrap();
        assert_eq!(batch.inputs.row(0).iter().copied().collect::<Vec<_>>(), [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(batch.inputs.row(1).iter().copied().collect::<Vec<_>>(), [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(batch.targets.as_slice(), [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
        let mixed = [AdditionProblem::new(1, 1, 3).unwrap(), AdditionProblem::new(1, 1, 4).unwrap()];
        assert!(batch.fill(&mixed).is_err());
    }

    #[test]
    fn seeded_and_uniform_below_the_bound() {
        let gen = BinaryAddition::new(8).unwrap();
        let a: Vec<_> = (0..50)
            .map({
                let mut r = Rng::seed_from(5);
                move |_| gen.sample(&mut r)
            })
            .collect();
        let mut r = Rng::seed_from(5);
        let b: Vec<_> = (0..50).map(|_| gen.sample(&mut r)).collect();
        assert_eq!(a, b);
        // Mean of a uniform on 0..128 is 63.5, sd 37; 20,000 draws give a standard error of 0.26.
        let mut r = Rng::seed_from(6);
        let mean = (0..20_000).map(|_| gen.sample(&mut r).a as f64).sum::<f64>() / 20_000.0;
        assert!((mean - 63.5).abs() < 1.5, "{mean}");
        assert!((0..2000).any(|_| gen.sample(&mut r).a == 127));
        assert_eq!(BinaryAddition::new(1).unwrap().sample(&mut r), AdditionProblem { a: 0, b: 0, bits: 1 });
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn batches_decode_to_their_sums(seed in 0u64..u64::MAX, bits in 1u32..=64, batch in 1usize..5) {
            let gen = BinaryAddition::new(bits).unwrap();
            let mut rng = Rng::seed_from(seed);
            let data = gen.batch::<f64>(batch, &mut rng).unwrap();
            prop_assert_eq!(data.inputs.shape(), (2, bits as usize * batch));
            for (s, p) in data.problems.iter().enumerate() {
                prop_assert!(p.a < 1u64 << (bits - 1) && p.b < 1u64 << (bits - 1));
                let read = |row: usize, m: &Mat<f64>| {
                    from_bits_lsb_first((0..bits as usize).map(|t| m[(row, t * batch + s)] == 1.0))
                };
                prop_assert_eq!(read(0, &data.inputs), p.a);
                prop_assert_eq!(read(1, &data.inputs), p.b);
                prop_assert_eq!(read(0, &data.targets), p.sum());
            }
        }
    }
}
