//! A tour of rnn-tensor on its own: matrices, `gemm` with free transposes, activations and the
//! numeric gradient check that every backward pass in the project is proven against.
//!
//! ```sh
//! cargo run -p rnn-tensor --example tensor_tour
//! ```

use rnn_tensor::activation::{log_softmax_columns, Activation};
use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
use rnn_tensor::init::Init;
use rnn_tensor::{gemm, gemm_flops, Mat, Rng, Trans};

fn main() {
    let mut rng = Rng::seed_from(0);

    // y = tanh(Wᵀ·x): W is stored 3×4, used transposed without a copy.
    let w: Mat<f64> = Init::TorchRecurrent { hidden: 4 }.matrix(3, 4, &mut rng);
    let x: Mat<f64> = Init::Normal { mean: 0.0, std: 1.0 }.matrix(3, 2, &mut rng);
    let mut y = Mat::zeros(4, 2);
    gemm(1.0, &w, Trans::Yes, &x, Trans::No, 0.0, &mut y);
    Activation::Tanh.forward_inplace(y.as_mut_slice());
    println!("y = tanh(Wᵀ·x), 4 features × 2 samples:{y}");
    println!("that product is {} flops", gemm_flops(4, 3, 2));

    // Gradient of L = Σ log_softmax(Wᵀ·x)[0, :] with respect to W, by hand and numerically.
    let loss = |wv: &[f64]| {
        let w = Mat::from_column_slice(3, 4, wv);
        let mut z = Mat::zeros(4, 2);
        gemm(1.0, &w, Trans::Yes, &x, Trans::No, 0.0, &mut z);
        log_softmax_columns(&mut z);
        z.row(0).sum()
    };
    // dL/dz = e_0 - softmax(z) per column; dL/dW = x · (dL/dz)ᵀ.
    let mut z = Mat::zeros(4, 2);
    gemm(1.0, &w, Trans::Yes, &x, Trans::No, 0.0, &mut z);
    log_softmax_columns(&mut z);
    let mut dz = z.map(|l| -l.exp());
    dz.row_mut(0).add_scalar_mut(1.0);
    let mut dw = Mat::zeros(3, 4);
    gemm(1.0, &x, Trans::No, &dz, Trans::Yes, 0.0, &mut dw);
    let mut flat = w.as_slice().to_vec();
    let numeric = numeric_gradient(loss, &mut flat, 1e-4);
    let err = rel_error(&numeric, dw.as_slice());
    println!("dL/dW by hand vs central differences: relative error {err:.3e}");
    assert!(err < 1e-9, "the hand-written gradient disagrees with the numeric one");

    // The seeded generator continues exactly from a saved state.
    let saved = rng.state();
    let a = rng.next_u64();
    let b = Rng::from_state(saved).next_u64();
    println!("draw after restoring the RNG state: {a} == {b}");
}
