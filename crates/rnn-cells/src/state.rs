//! The one state convention: a recurrent state is a list of `H × B` matrices, the output `h`
//! first ([`RecurrentState`]). Stacks, the language model, checkpoints of carried state and the
//! tests handle every cell's state through it.

use std::fmt::Debug;

use rnn_tensor::{Mat, Scalar};

/// A recurrent state: named parts, each an `H × B` matrix, the output `h` first (the LSTM's
/// `[h, c]`, the GRU's and the vanilla RNN's `[h]`); a stack's state is its layers' parts in
/// order, bottom layer first.
pub trait RecurrentState<T: Scalar>: Clone + Debug + PartialEq + Send + Sync {
    /// How many parts the state has.
    fn num_parts(&self) -> usize;
    /// Part `k` (the output `h` is part 0 of a cell's state).
    ///
    /// # Panics
    /// If `k ≥ num_parts()`.
    fn part(&self, k: usize) -> &Mat<T>;
    /// Part `k`, mutably.
    ///
    /// # Panics
    /// If `k ≥ num_parts()`.
    fn part_mut(&mut self, k: usize) -> &mut Mat<T>;
    /// The parts, in order.
    fn parts(&self) -> Vec<&Mat<T>> {
        (0..self.num_parts()).map(|k| self.part(k)).collect()
    }
    /// The parts, mutably, in order.
    fn parts_mut(&mut self) -> Vec<&mut Mat<T>>;

    /// Every number of the state, part after part (each column-major), as `f64`.
    fn to_flat(&self) -> Vec<f64> {
        self.parts().iter().flat_map(|m| m.iter().map(|v| v.to_f64())).collect()
    }

    /// A state shaped like `self` holding `values` (in [`RecurrentState::to_flat`]'s order).
    ///
    /// # Panics
    /// If `values` does not hold as many numbers as the state.
    fn with_flat(&self, values: &[f64]) -> Self {
        let mut s = self.clone();
        let mut at = 0;
        for m in s.parts_mut() {
            for v in m.iter_mut() {
                *v = T::cast(values[at]);
                at += 1;
            }
        }
        assert_eq!(at, values.len(), "with_flat: {} values for a state of {at}", values.len());
        s
    }
}

impl<T: Scalar, S: RecurrentState<T>> RecurrentState<T> for Vec<S> {
    fn num_parts(&self) -> usize {
        self.iter().map(|s| s.num_parts()).sum()
    }
    fn part(&self, mut k: usize) -> &Mat<T> {
        for s in self {
            if k < s.num_parts() {
                return s.part(k);
            }
            k -= s.num_parts();
        }
        panic!("state part {k} past the last layer's");
    }
    fn part_mut(&mut self, mut k: usize) -> &mut Mat<T> {
        for s in self {
            if k < s.num_parts() {
                return s.part_mut(k);
            }
            k -= s.num_parts();
        }
        panic!("state part {k} past the last layer's");
    }
    fn parts_mut(&mut self) -> Vec<&mut Mat<T>> {
        self.iter_mut().flat_map(|s| s.parts_mut()).collect()
    }
}

/// Implements [`RecurrentState`] for a struct of named `Mat<T>` fields, in the order given.
macro_rules! impl_state {
    ($ty:ident { $($field:ident),+ }) => {
        impl<T: Scalar> $crate::RecurrentState<T> for $ty<T> {
            fn num_parts(&self) -> usize {
                [$(stringify!($field)),+].len()
            }
            fn part(&self, k: usize) -> &Mat<T> {
                [$(&self.$field),+][k]
            }
            fn part_mut(&mut self, k: usize) -> &mut Mat<T> {
                let mut parts = [$(Some(&mut self.$field)),+];
                parts[k].take().expect("a state part is taken once")
            }
            fn parts_mut(&mut self) -> Vec<&mut Mat<T>> {
                vec![$(&mut self.$field),+]
            }
        }
    };
}
pub(crate) use impl_state;
