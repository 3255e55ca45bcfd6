//! Every public constructor of the datasets refuses bad values with a `DataError` (never a
//! panic): zero sizes, probabilities outside [0, 1], bit widths outside 1..=64, operands too
//! large, unsorted vocabularies, texts too short for one batch, bad validation fractions.

use rnn_data::{
    AdditionProblem, BinaryAddition, BinaryStreamsConfig, Corpus, StreamBatcher, Vocab, WindowBatcher,
};
use rnn_tensor::Rng;

#[test]
fn data_constructors_reject_bad_values() {
    let mut rng = Rng::seed_from(0);
    for (s, t) in [(0, 5), (5, 0)] {
        assert!(BinaryStreamsConfig::new(s, t).build::<f64>(&mut rng).is_err(), "streams {s}x{t}");
    }
    for p in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
        assert!(BinaryStreamsConfig::new(4, 5).with_p_one(p).build::<f64>(&mut rng).is_err(), "p {p}");
    }
    for bits in [0, 65, u32::MAX] {
        assert!(BinaryAddition::new(bits).is_err(), "bits {bits}");
        assert!(AdditionProblem::new(0, 0, bits).is_err(), "problem bits {bits}");
    }
    assert!(AdditionProblem::new(128, 1, 8).is_err(), "operand 128 needs 9 bits");
    assert!(Vocab::from_chars(vec![]).is_err(), "empty vocabulary");
    assert!(Vocab::from_chars(vec!['b', 'a']).is_err(), "unsorted vocabulary");
    assert!(Vocab::from_chars(vec!['a', 'a']).is_err(), "repeated character");
    for f in [-0.1, 1.0, f64::NAN] {
        assert!(Corpus::from_text("abcdef", f).is_err(), "val_frac {f}");
    }
    let data = [0usize, 1, 2, 0, 1, 2, 0, 1, 2, 0];
    for (b, t) in [(0, 3), (3, 0), (4, 3)] {
        assert!(StreamBatcher::new(&data, b, t).is_err(), "streams batch {b} seq {t}");
    }
    for (b, t) in [(0, 3), (3, 0), (1, 10)] {
        assert!(WindowBatcher::new(&data, b, t, Rng::seed_from(1)).is_err(), "windows batch {b} seq {t}");
    }
    // Good values build, so the refusals above are about the values.
    assert!(
        StreamBatcher::new(&data, 3, 3).is_ok() && WindowBatcher::new(&data, 2, 9, Rng::seed_from(1)).is_ok()
    );
    assert!(BinaryStreamsConfig::new(4, 5).with_p_one(0.5).build::<f64>(&mut rng).is_ok());
    assert!(AdditionProblem::new(127, 127, 8).is_ok() && BinaryAddition::new(64).is_ok());
}
