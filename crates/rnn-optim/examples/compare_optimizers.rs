//! Minimises the Rosenbrock function with every optimizer in turn and prints the loss.
//!
//! f(x, y) = (1 - x)² + 100·(y - x²)², from (-1.5, 2); the minimum is f(1, 1) = 0.
//!
//! Why Rosenbrock: it is two numbers, so the example runs in milliseconds and needs no data, yet
//! it has what makes training hard: a curved valley whose walls are ~1000 times steeper than its
//! floor (the Hessian's eigenvalues at the minimum are about 1002 and 0.4). Plain SGD must keep
//! its step below 2/1002 to stay stable and then crawls along the floor; the adaptive methods
//! rescale each coordinate, and Rprop ignores the gradient's size altogether. Each optimizer
//! gets a learning rate that works for it (printed in the header); everything else is at
//! PyTorch's defaults.
//!
//! Run: `cargo run -p rnn-optim --example compare_optimizers`

use rnn_optim::{build_optimizer, OptimError, Optimizer, OptimizerKind, ParamMut, SgdConfig};

const STEPS: usize = 1000;
const REPORT: [usize; 11] = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

fn rosenbrock(p: &[f64]) -> (f64, [f64; 2]) {
    let (x, y) = (p[0], p[1]);
    let f = (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
    // ∂f/∂x = -2(1 - x) - 400·x·(y - x²),  ∂f/∂y = 200·(y - x²)
    let g = [-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)];
    (f, g)
}

/// The losses at the `REPORT` steps and the final point.
fn run(opt: &mut dyn Optimizer<f64>) -> Result<(Vec<f64>, [f64; 2]), OptimError> {
    let mut p = vec![-1.5, 2.0];
    let mut losses = Vec::new();
    for step in 0..=STEPS {
        let (f, g) = rosenbrock(&p);
        if REPORT.contains(&step) {
            losses.push(f);
        }
        if step < STEPS {
            opt.step(&mut [ParamMut { name: "xy".into(), value: &mut p, grad: &g }])?;
        }
    }
    Ok((losses, [p[0], p[1]]))
}

fn main() -> Result<(), OptimError> {
    let mut runs: Vec<(String, Box<dyn Optimizer<f64>>)> = Vec::new();
    for (kind, lr) in [
        (OptimizerKind::Sgd, 1e-3),
        (OptimizerKind::Rprop, 1e-2),
        (OptimizerKind::BasicRprop, 1e-3),
        (OptimizerKind::Adam, 5e-2),
        (OptimizerKind::AdamW, 5e-2),
        (OptimizerKind::RmsProp, 1e-2),
        (OptimizerKind::Adagrad, 0.5),
    ] {
        runs.push((format!("{kind} {lr}"), build_optimizer::<f64>(kind, lr)?));
    }
    runs.insert(1, ("sgd+mom 2e-4".to_string(), Box::new(SgdConfig::new(2e-4).with_momentum(0.9).build()?)));

    println!("Rosenbrock f(x, y) = (1-x)² + 100(y-x²)² from (-1.5, 2), minimum 0 at (1, 1); {STEPS} steps.");
    println!("Loss after each step count (column header: optimizer and learning rate):\n");
    let mut table = Vec::new();
    let mut finals = Vec::new();
    for (name, opt) in runs.iter_mut() {
        let (losses, at) = run(opt.as_mut())?;
        table.push(losses);
        finals.push((name.clone(), at));
    }
    print!("{:>6}", "step");
    for (name, _) in &runs {
        print!(" {name:>17}");
    }
    println!();
    for (row, step) in REPORT.iter().enumerate() {
        print!("{step:>6}");
        for col in &table {
            print!(" {:>17.4e}", col[row]);
        }
        println!();
    }
    println!("\nFinal point:");
    for (name, [x, y]) in finals {
        println!("  {name:<18} x = {x:>8.5}, y = {y:>8.5}");
    }
    Ok(())
}
