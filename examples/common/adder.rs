//! The binary-addition network of the first RNN tutorial, shared by
//! `examples/binary_addition.rs`, `benches/binary_addition.rs` and `tests/binary_addition.rs`
//! (each includes this file with `#[path]`, so all three train exactly the same model).
//!
//! Model: a vanilla RNN cell with sigmoid units reads the two operand bits of each step; an
//! affine head maps every hidden state to one logit; `σ(logit)` is the probability that the
//! sum's bit is 1. Trained one problem at a time by SGD, as the tutorial does.

#![allow(dead_code)] // each includer uses a different part

use std::error::Error;

use rnn::cells::loss::{bce_with_logits, sigmoid_squared_error, Reduction};
use rnn::cells::{
    Affine, AffineConfig, AffineParams, Recurrence, Rnn, RnnCache, RnnConfig, RnnParams, RnnState, SeqInput,
};
use rnn::data::{from_bits_lsb_first, AdditionBatch, AdditionProblem, BinaryAddition};
use rnn::optim::{Optimizer, ParamMut, Sgd, SgdConfig};
use rnn::tensor::activation::{sigmoid, Activation};
use rnn::tensor::init::Init;
use rnn::tensor::{Mat, Parameters, Rng, Scalar};

/// Which loss the net descends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdderLoss {
    /// `½ Σ_t (σ(z_t) - y_t)²`, the tutorial's.
    SigmoidSquaredError,
    /// `Σ_t BCE(σ(z_t), y_t)`.
    BinaryCrossEntropy,
}

/// The setup; [`AdderConfig::tutorial`] is the tutorial's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdderConfig {
    /// Width of the training problems (and steps per sequence).
    pub bits: u32,
    /// Hidden units.
    pub hidden: usize,
    /// Every weight starts from `U(-init, init)`.
    pub init: f64,
    /// SGD learning rate.
    pub lr: f64,
    /// The loss.
    pub loss: AdderLoss,
    /// Whether the recurrent cell has biases (`bias_ih`, `bias_hh`).
    pub cell_bias: bool,
    /// Whether the head has a trained bias (otherwise it stays 0, as in the tutorial).
    pub head_bias: bool,
}

impl AdderConfig {
    /// 8 bits, 16 sigmoid units, weights `U(-1, 1)`, SGD lr 0.1 on `½Σ(p - y)²`, no biases.
    pub fn tutorial() -> Self {
        Self {
            bits: 8,
            hidden: 16,
            init: 1.0,
            lr: 0.1,
            loss: AdderLoss::SigmoidSquaredError,
            cell_bias: false,
            head_bias: false,
        }
    }
}

/// What one training step saw and predicted.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// The loss of the step.
    pub loss: f64,
    /// The tutorial's printed error, `Σ_t |y_t - σ(z_t)|`.
    pub abs_error: f64,
    /// The problem.
    pub problem: AdditionProblem,
    /// The predicted sum (bits `σ(z_t) > 0.5`).
    pub predicted: u64,
}

/// The network, its optimizer and every buffer of a training step (allocated once).
pub struct Adder<T: Scalar> {
    /// The recurrent cell.
    pub rnn: Rnn<T>,
    /// The output layer.
    pub head: Affine<T>,
    cfg: AdderConfig,
    gen: BinaryAddition,
    opt_cell: Sgd<T>,
    opt_head: Sgd<T>,
    data: AdditionBatch<T>,
    cache: RnnCache<T>,
    zeros: RnnState<T>,
    h_final: RnnState<T>,
    logits: Mat<T>,
    d_logits: Mat<T>,
    d_h: Mat<T>,
    d_h0: RnnState<T>,
    rnn_grads: RnnParams<T>,
    head_grads: AffineParams<T>,
    /// The tensors' names in update order (cell, then head), built once.
    names: Vec<String>,
}

impl<T: Scalar> Adder<T> {
    /// Draws the weights from `rng` (cell first, then head).
    pub fn new(cfg: AdderConfig, rng: &mut Rng) -> Result<Self, Box<dyn Error>> {
        let init = Init::Uniform { lo: -cfg.init, hi: cfg.init };
        let rnn = RnnConfig::new(2, cfg.hidden)
            .with_activation(Activation::Sigmoid)
            .with_bias(cfg.cell_bias)
            .with_init(init)
            .build::<T>(rng)?;
        // The recorded runs of this stage (docs/02, tests/binary_addition.rs) drew a default head
        // first and then replaced it (the head's old constructor did): the same draws keep them
        // reproducible.
        AffineConfig::new(cfg.hidden, 1).build::<T>(rng)?;
        let mut head = AffineConfig::new(cfg.hidden, 1).with_init(init).with_prefix("head.").build(rng)?;
        if !cfg.head_bias {
            head.params.bias.fill(T::ZERO);
        }
        let sgd = SgdConfig::new(cfg.lr);
        let rnn_grads = rnn.zero_grads();
        let head_grads = head.zero_grads();
        let names = rnn
            .params()
            .named_params()
            .into_iter()
            .chain(head.params.named_params())
            .map(|(n, _)| n)
            .collect();
        Ok(Self {
            rnn,
            head,
            cfg,
            gen: BinaryAddition::new(cfg.bits)?,
            opt_cell: sgd.build()?,
            opt_head: sgd.build()?,
            data: AdditionBatch::default(),
            cache: RnnCache::default(),
            zeros: RnnState { h: Mat::zeros(cfg.hidden, 1) },
            h_final: RnnState { h: Mat::zeros(cfg.hidden, 1) },
            logits: Mat::zeros(1, 0),
            d_logits: Mat::zeros(1, 0),
            d_h: Mat::zeros(cfg.hidden, 0),
            d_h0: RnnState { h: Mat::zeros(cfg.hidden, 1) },
            rnn_grads,
            head_grads,
            names,
        })
    }

    /// One SGD step on one random problem drawn from `rng`. After the first call this
    /// allocates nothing.
    pub fn train_step(&mut self, rng: &mut Rng) -> Result<StepOutcome, Box<dyn Error>> {
        self.gen.batch_into(1, rng, &mut self.data)?;
        let x = SeqInput::Dense(&self.data.inputs);
        // Forward: h_1..h_T, then z_t = w·h_t + b.
        self.rnn.forward_into(x, 1, &self.zeros, &mut self.cache, &mut self.h_final);
        let hs = self.rnn.outputs(&self.cache);
        self.head.forward_into(hs, &mut self.logits);
        let loss = match self.cfg.loss {
            AdderLoss::SigmoidSquaredError => {
                sigmoid_squared_error(&self.logits, &self.data.targets, Reduction::Sum, &mut self.d_logits)
            }
            AdderLoss::BinaryCrossEntropy => {
                bce_with_logits(&self.logits, &self.data.targets, Reduction::Sum, &mut self.d_logits)
            }
        };
        // Backward: head, then through time.
        // (Parameters::zero on the head would build its names; clear the two tensors directly.)
        self.head_grads.weight.as_mut_slice().fill(T::ZERO);
        self.head_grads.bias.as_mut_slice().fill(T::ZERO);
        self.rnn_grads.zero();
        if self.d_h.shape() != hs.shape() {
            self.d_h = Mat::zeros(hs.nrows(), hs.ncols());
        }
        self.head.backward_into(hs, &self.d_logits, &mut self.head_grads, &mut self.d_h);
        if !self.cfg.head_bias {
            self.head_grads.bias.fill(T::ZERO);
        }
        self.rnn.backward_into(
            x,
            &mut self.cache,
            &self.d_h,
            &self.zeros,
            &mut self.rnn_grads,
            None,
            &mut self.d_h0,
        );
        self.sgd_step()?;

        let mut abs_error = 0.0;
        for (&z, &y) in self.logits.iter().zip(self.data.targets.iter()) {
            abs_error += (y.to_f64() - sigmoid(z.to_f64())).abs();
        }
        let predicted = from_bits_lsb_first(self.logits.iter().map(|&z| z > T::ZERO));
        Ok(StepOutcome { loss: loss.to_f64(), abs_error, problem: self.data.problems[0], predicted })
    }

    /// The SGD update of every tensor, one `Optimizer::step` per tensor. Equivalent to
    /// `step_model` on the cell and on the head (plain SGD treats every tensor alone), but lends
    /// the optimizer names built once instead of formatting them every step, so the training
    /// step allocates nothing.
    fn sgd_step(&mut self) -> Result<(), Box<dyn Error>> {
        let mut names = self.names.iter_mut();
        let p = self.rnn.params_mut();
        let g = &self.rnn_grads;
        update(&mut self.opt_cell, names.next(), &mut p.weight_ih, &g.weight_ih)?;
        update(&mut self.opt_cell, names.next(), &mut p.weight_hh, &g.weight_hh)?;
        if let (Some(pb), Some(gb)) = (&mut p.bias_ih, &g.bias_ih) {
            update(&mut self.opt_cell, names.next(), pb, gb)?;
        }
        if let (Some(pb), Some(gb)) = (&mut p.bias_hh, &g.bias_hh) {
            update(&mut self.opt_cell, names.next(), pb, gb)?;
        }
        let (p, g) = (&mut self.head.params, &self.head_grads);
        update(&mut self.opt_head, names.next(), &mut p.weight, &g.weight)?;
        update(&mut self.opt_head, names.next(), &mut p.bias, &g.bias)?;
        Ok(())
    }

    /// How many of `problems` (all of one width) the net adds exactly, evaluated in batches.
    pub fn count_exact(&self, problems: &[AdditionProblem]) -> Result<usize, Box<dyn Error>> {
        let mut data = AdditionBatch::<T>::default();
        let mut cache = RnnCache::default();
        let (mut h_final, mut logits) = (RnnState { h: Mat::zeros(0, 0) }, Mat::zeros(0, 0));
        let mut correct = 0;
        for chunk in problems.chunks(1024) {
            let b = chunk.len();
            data.fill(chunk)?;
            let h0 = RnnState { h: Mat::zeros(self.cfg.hidden, b) };
            self.rnn.forward_into(SeqInput::Dense(&data.inputs), b, &h0, &mut cache, &mut h_final);
            self.head.forward_into(self.rnn.outputs(&cache), &mut logits);
            let bits = chunk[0].bits as usize;
            for (s, p) in chunk.iter().enumerate() {
                let got = from_bits_lsb_first((0..bits).map(|t| logits[(0, t * b + s)] > T::ZERO));
                correct += usize::from(got == p.sum());
            }
        }
        Ok(correct)
    }

    /// `count_exact` over every pair of operands of the training width.
    pub fn count_exact_all(&self) -> Result<(usize, usize), Box<dyn Error>> {
        let all: Vec<_> = self.gen.all_problems()?.collect();
        Ok((self.count_exact(&all)?, all.len()))
    }

    /// `count_exact` over `n` random `bits`-bit problems drawn from `rng`.
    pub fn count_exact_random(&self, bits: u32, n: usize, rng: &mut Rng) -> Result<usize, Box<dyn Error>> {
        let gen = BinaryAddition::new(bits)?;
        let problems: Vec<_> = (0..n).map(|_| gen.sample(rng)).collect();
        self.count_exact(&problems)
    }
}

/// `opt.step` on one tensor, lending it `name` (taken from the model's list, put back after).
fn update<T: Scalar>(
    opt: &mut Sgd<T>,
    name: Option<&mut String>,
    value: &mut Mat<T>,
    grad: &Mat<T>,
) -> Result<(), Box<dyn Error>> {
    let name = name.ok_or("more tensors than names")?;
    let mut pair =
        [ParamMut { name: std::mem::take(name), value: value.as_mut_slice(), grad: grad.as_slice() }];
    let result = opt.step(&mut pair);
    let [ParamMut { name: lent, .. }] = pair;
    *name = lent;
    Ok(result?)
}

/// `value` as `bits` binary digits, most significant first (as the tutorial prints them).
pub fn bits_msb_first(value: u64, bits: u32) -> String {
    (0..bits).rev().map(|t| if (value >> t) & 1 == 1 { '1' } else { '0' }).collect()
}
