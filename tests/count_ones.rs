//! Stage 1 reproduced through the library: the linear cell trained by the tutorial's Rprop on the
//! tutorial's data ends where the tutorial ends.
//!
//! The reference numbers come from the tutorial (seed 000): after 500 iterations from
//! W = [-1.5, 2] with Δ = 0.001, eta_plus 1.2, eta_minus 0.5 it prints
//! `wx = 1.0014, wRec = 0.9997`, and the test stream 0,1,1,0,0,0,0,1,0,0,1,1 gives `5.00`.
//! Running the tutorial's numpy code gives the unrounded weights 1.001355547207059 and
//! 0.9996744737846419 (numpy 2, float64), which we match to 1e-12: the Rprop steps are products of
//! the same factors taken in the same order, so only a sign decision could make them differ.

use rnn::cells::{LinearCache, LinearCell, LinearConfig, LinearParams};
use rnn::data::{count_ones_fixture, BinaryStreams};
use rnn::optim::{step_model, BasicRpropConfig};
use rnn::prelude::*;

/// Trains the tutorial's setup; returns the cell and the path of (w_x, w_rec).
fn train(data: &BinaryStreams<f64>, iterations: usize) -> (LinearCell<f64>, Vec<(f64, f64)>) {
    let mut cell = LinearConfig::new().with_weights(-1.5, 2.0).build::<f64>(&mut Rng::seed_from(0)).unwrap();
    let mut opt =
        BasicRpropConfig::new().with_initial_step(0.001).with_etas(1.2, 0.5).build::<f64>().unwrap();
    let mut cache = LinearCache::default();
    let mut grads = cell.zero_grads();
    let mut path = vec![(cell.params.wx(), cell.params.wrec())];
    for _ in 0..iterations {
        grads.zero();
        cell.mse_gradients(data.inputs(), data.batch(), data.targets(), &mut cache, &mut grads).unwrap();
        step_model(&mut opt, &mut cell.params, &grads).unwrap();
        path.push((cell.params.wx(), cell.params.wrec()));
    }
    (cell, path)
}

#[test]
fn reproduces_the_tutorial_to_four_decimals() {
    let data = count_ones_fixture::<f64>();
    let (cell, path) = train(&data, 500);
    let (wx, wrec) = (cell.params.wx(), cell.params.wrec());
    assert_eq!(format!("wx = {wx:.4}, wRec = {wrec:.4}"), "wx = 1.0014, wRec = 0.9997");
    // Tolerance 1e-12: see the module docs; the path is reproduced, not just its end.
    assert!((wx - 1.001355547207059).abs() < 1e-12, "{wx}");
    assert!((wrec - 0.9996744737846419).abs() < 1e-12, "{wrec}");
    // The tutorial's first steps: Δ halves on the first step (previous sign 0), then grows ×1.2.
    assert!((path[1].0 - -1.4995).abs() < 1e-15 && (path[1].1 - 1.9995).abs() < 1e-15, "{:?}", path[1]);
    assert!((path[2].0 - -1.4989).abs() < 1e-15 && (path[2].1 - 1.9989).abs() < 1e-15, "{:?}", path[2]);

    let test = BinaryStreams::<f64>::from_rows(&[[0u8, 1, 1, 0, 0, 0, 0, 1, 0, 0, 1, 1]]).unwrap();
    let out = cell.run(test.inputs(), 1).unwrap()[(0, 0)];
    assert_eq!(test.targets(), &[5.0]);
    assert_eq!(format!("{out:.2}"), "5.00");
    assert!((out - 5.0).abs() < 0.005, "{out}");
}

#[test]
fn gradient_explodes_with_w_rec_above_one() {
    // On the tutorial's data the gradient at (1, 2) is in the millions, zero at the solution
    // (1, 1), and of order ten at (1, 0.5): the reason the tutorial uses a sign-based optimizer.
    let data = count_ones_fixture::<f64>();
    let grad_at = |wx: f64, wrec: f64| {
        let cell = LinearCell { params: LinearParams::new(wx, wrec) };
        let mut g = cell.zero_grads();
        let mut cache = LinearCache::default();
        cell.mse_gradients(data.inputs(), data.batch(), data.targets(), &mut cache, &mut g).unwrap();
        (g.wx(), g.wrec())
    };
    // Values from the tutorial's numpy backward at (1, 2): (535908.3, 2174323.9); relative 1e-12.
    let (gx, grec) = grad_at(1.0, 2.0);
    assert!((gx - 535908.3).abs() < 1e-12 * 535908.3, "{gx}");
    assert!((grec - 2174323.9).abs() < 1e-12 * 2174323.9, "{grec}");
    assert_eq!(grad_at(1.0, 1.0), (0.0, 0.0));
    let (gx, grec) = grad_at(1.0, 0.5);
    assert!(gx.abs() < 100.0 && grec.abs() < 100.0, "{gx} {grec}");
}
