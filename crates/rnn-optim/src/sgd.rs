//! Stochastic gradient descent with PyTorch's semantics (`torch.optim.SGD`).
//!
//! For each parameter `p` with gradient `g`, step `t`:
//!
//! ```text
//! g ← g + weight_decay·p                                  (if weight_decay ≠ 0)
//! b ← g                           at the first step       (if momentum ≠ 0)
//! b ← momentum·b + (1 - dampening)·g   afterwards
//! g ← g + momentum·b  (nesterov)   or   g ← b
//! p ← p - lr·g
//! ```

use std::collections::BTreeMap;

use rnn_tensor::{ParamMut, Scalar};

use crate::error::check;
use crate::optimizer::{check_kind, check_len, from_f64, to_f64};
use crate::{OptimError, OptimState, Optimizer};

/// Configuration of [`Sgd`], with PyTorch's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate. Default 1e-3.
    pub lr: f64,
    /// Momentum factor. Default 0.
    pub momentum: f64,
    /// Dampening for momentum. Default 0.
    pub dampening: f64,
    /// Nesterov momentum. Default false.
    pub nesterov: bool,
    /// L2 penalty added to the gradient. Default 0.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 1e-3, momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 }
    }
}

impl SgdConfig {
    /// PyTorch's defaults with the given learning rate.
    pub fn new(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }
    /// Sets the momentum factor.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// Sets the dampening.
    pub fn with_dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }
    /// Turns Nesterov momentum on or off.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Checks the hyperparameters as PyTorch does.
    pub fn check(&self) -> Result<(), OptimError> {
        check(self.lr.is_finite() && self.lr >= 0.0, "sgd", || {
            format!("lr must be finite and >= 0, got {}", self.lr)
        })?;
        check(self.momentum.is_finite() && self.momentum >= 0.0, "sgd", || {
            format!("momentum must be finite and >= 0, got {}", self.momentum)
        })?;
        check(self.dampening.is_finite(), "sgd", || {
            format!("dampening must be finite, got {}", self.dampening)
        })?;
        check(self.weight_decay.is_finite() && self.weight_decay >= 0.0, "sgd", || {
            format!("weight_decay must be finite and >= 0, got {}", self.weight_decay)
        })?;
        check(!self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0), "sgd", || {
            "nesterov momentum requires momentum > 0 and dampening = 0".to_string()
        })
    }

    /// Checks the configuration and builds the optimizer.
    pub fn build<T: Scalar>(self) -> Result<Sgd<T>, OptimError> {
        self.check()?;
        Ok(Sgd { cfg: self, step: 0, momentum: BTreeMap::new(), scratch: Vec::new() })
    }
}

/// SGD with momentum, dampening, Nesterov and weight decay, as `torch.optim.SGD`.
#[derive(Clone, Debug)]
pub struct Sgd<T> {
    cfg: SgdConfig,
    step: u64,
    momentum: BTreeMap<String, Vec<T>>,
    scratch: Vec<T>,
}

impl<T: Scalar> Sgd<T> {
    /// The configuration.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }
}

impl<T: Scalar> Optimizer<T> for Sgd<T> {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn step(&mut self, params: &mut [ParamMut<'_, T>]) -> Result<(), OptimError> {
        let lr = T::cast(self.cfg.lr);
        let wd = T::cast(self.cfg.weight_decay);
        let mom = T::cast(self.cfg.momentum);
        let damp = T::ONE - T::cast(self.cfg.dampening);
        for p in params.iter_mut() {
            check_len(&p.name, p.grad.len(), p.value.len())?;
            // d_p = g + wd·p
            self.scratch.clear();
            if self.cfg.weight_decay != 0.0 {
                self.scratch.extend(p.grad.iter().zip(p.value.iter()).map(|(&g, &w)| g + wd * w));
            } else {
                self.scratch.extend_from_slice(p.grad);
            }
            if self.cfg.momentum != 0.0 {
                match self.momentum.get_mut(&p.name) {
                    None => {
                        self.momentum.insert(p.name.clone(), self.scratch.clone());
                    }
                    Some(buf) => {
                        check_len(&p.name, buf.len(), p.value.len())?;
                        for (b, &d) in buf.iter_mut().zip(&self.scratch) {
                            *b = *b * mom + damp * d;
                        }
                    }
                }
                let buf = &self.momentum[&p.name];
                if self.cfg.nesterov {
                    for (d, &b) in self.scratch.iter_mut().zip(buf) {
                        *d += mom * b;
                    }
                } else {
                    self.scratch.copy_from_slice(buf);
                }
            }
            for (w, &d) in p.value.iter_mut().zip(&self.scratch) {
                *w += -lr * d;
            }
        }
        self.step += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn state(&self) -> OptimState {
        OptimState {
            kind: "sgd".into(),
            step: self.step,
            scalars: [("lr".to_string(), self.cfg.lr)].into_iter().collect(),
            buffers: self.momentum.iter().map(|(k, v)| (format!("{k}/momentum_buffer"), to_f64(v))).collect(),
        }
    }

    fn load_state(&mut self, state: &OptimState) -> Result<(), OptimError> {
        check_kind(state, "sgd")?;
        let mut momentum = BTreeMap::new();
        for (k, v) in &state.buffers {
            let name = k
                .strip_suffix("/momentum_buffer")
                .ok_or_else(|| OptimError::BadState(format!("unexpected SGD buffer {k:?}")))?;
            momentum.insert(name.to_string(), from_f64(v));
        }
        if let Some(&lr) = state.scalars.get("lr") {
            self.cfg.lr = lr;
        }
        self.momentum = momentum;
        self.step = state.step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: SgdConfig, grads: &[[f64; 2]]) -> Vec<f64> {
        let mut opt = cfg.build::<f64>().unwrap();
        let mut w = vec![1.0, -2.0];
        for g in grads {
            let mut p = [ParamMut { name: "w".into(), value: &mut w, grad: g }];
            opt.step(&mut p).unwrap();
        }
        w
    }

    #[test]
    fn plain_and_momentum_by_hand() {
        assert_eq!(run(SgdConfig::new(0.1), &[[1.0, -1.0]]), vec![0.9, -1.9]);
        // momentum 0.5: b1 = g1, b2 = 0.5 b1 + g2
        let w = run(SgdConfig::new(0.1).with_momentum(0.5), &[[1.0, 0.0], [1.0, 0.0]]);
        assert!((w[0] - (1.0 - 0.1 - 0.1 * 1.5)).abs() < 1e-15);
        // nesterov: d = g + m b
        let w = run(SgdConfig::new(0.1).with_momentum(0.5).with_nesterov(true), &[[1.0, 0.0]]);
        assert!((w[0] - (1.0 - 0.1 * 1.5)).abs() < 1e-15);
        // weight decay adds wd·p
        let w = run(SgdConfig::new(0.1).with_weight_decay(0.5), &[[0.0, 0.0]]);
        assert!((w[1] - (-2.0 + 0.1 * 0.5 * 2.0)).abs() < 1e-15);
    }

    #[test]
    fn bad_hyperparameters_are_named() {
        let e = SgdConfig::new(-1.0).build::<f32>().unwrap_err();
        assert!(e.to_string().contains("lr"), "{e}");
        let e = SgdConfig::new(0.1).with_nesterov(true).build::<f32>().unwrap_err();
        assert!(e.to_string().contains("nesterov"), "{e}");
        assert!(SgdConfig::new(f64::NAN).build::<f64>().is_err());
        let msg = |c: SgdConfig| c.build::<f64>().unwrap_err().to_string();
        assert!(msg(SgdConfig::new(0.1).with_momentum(-0.9)).contains("momentum"));
        assert!(msg(SgdConfig::new(0.1).with_dampening(f64::INFINITY)).contains("dampening"));
        assert!(msg(SgdConfig::new(0.1).with_weight_decay(-1e-4)).contains("weight_decay"));
        let e = msg(SgdConfig::new(0.1).with_momentum(0.9).with_dampening(0.1).with_nesterov(true));
        assert!(e.contains("dampening = 0"), "{e}");
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let cfg = SgdConfig::new(0.1).with_momentum(0.9);
        let mut a = cfg.build::<f64>().unwrap();
        let mut w = vec![1.0, 2.0];
        let g = [0.3, -0.2];
        a.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &g }]).unwrap();
        let mut b = cfg.build::<f64>().unwrap();
        b.load_state(&a.state()).unwrap();
        let mut w2 = w.clone();
        a.step(&mut [ParamMut { name: "w".into(), value: &mut w, grad: &g }]).unwrap();
        b.step(&mut [ParamMut { name: "w".into(), value: &mut w2, grad: &g }]).unwrap();
        assert_eq!(w, w2);
    }
}
