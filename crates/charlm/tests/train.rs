//! The training loop, checkpoints, resume and divergence, run with a bigram model (logits of the
//! next character from the current one alone: `z = W[:, x] + b`), whose backward is two lines.
//! It exercises everything the trainer does without depending on the recurrent cells.

use std::path::PathBuf;

use charlm::checkpoint::{assign_tensors, TensorList};
use charlm::model::{evaluate, LanguageModel};
use charlm::resume::{load_checkpoint, MODEL_FILE, STATE_FILE};
use charlm::train::{train, Batching, OptimKind, Stop, TrainConfig};
use charlm::{CharLmError, ModelConfig};
use rnn_data::Corpus;
use rnn_tensor::init::Init;
use rnn_tensor::{Mat, Parameters, Rng, Scalar};

#[derive(Clone, Debug)]
struct Bigram<T: Scalar> {
    config: ModelConfig,
    params: TensorList<T>,
}

impl<T: Scalar> Bigram<T> {
    /// Loss and, if `grads` is given, `dz = (softmax(z) - onehot(y)) / N` scattered into them.
    /// Inverted dropout on the `W[:, x]` term with the model's dropout, drawn from `rng`.
    fn run(
        &self,
        inputs: &[usize],
        targets: &[usize],
        mut grads: Option<&mut TensorList<T>>,
        mut rng: Option<&mut Rng>,
    ) -> f64 {
        let (w, b) = (&self.params.tensors[0].1, &self.params.tensors[1].1);
        let v = b.nrows();
        let n = inputs.len() as f64;
        let p = self.config.dropout;
        let mut total = 0.0;
        let mut z = vec![0.0; v];
        for (&x, &y) in inputs.iter().zip(targets) {
            let keep = match rng.as_deref_mut() {
                Some(r) if p > 0.0 => {
                    if r.next_f64() < p {
                        0.0
                    } else {
                        1.0 / (1.0 - p)
                    }
                }
                _ => 1.0,
            };
            for i in 0..v {
                z[i] = keep * w[(i, x)].to_f64() + b[(i, 0)].to_f64();
            }
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = z.iter().map(|&zi| (zi - m).exp()).sum();
            total += m + s.ln() - z[y];
            if let Some(g) = grads.as_deref_mut() {
                for i in 0..v {
                    let dz = ((z[i] - m).exp() / s - if i == y { 1.0 } else { 0.0 }) / n;
                    // dW[:, x] += keep · dz,  db += dz
                    g.tensors[0].1[(i, x)] += T::cast(keep * dz);
                    g.tensors[1].1[(i, 0)] += T::cast(dz);
                }
            }
        }
        total
    }
}

impl<T: Scalar> LanguageModel<T> for Bigram<T> {
    type Params = TensorList<T>;
    type State = ();

    fn build(config: &ModelConfig, rng: &mut Rng) -> Result<Self, CharLmError> {
        let v = config.vocab_size;
        let init = Init::Uniform { lo: -0.1, hi: 0.1 };
        let tensors = vec![
            ("head.weight".to_string(), init.matrix(v, v, rng)),
            ("head.bias".to_string(), init.matrix(v, 1, rng)),
        ];
        Ok(Self { config: config.clone(), params: TensorList { tensors } })
    }
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn params(&self) -> &TensorList<T> {
        &self.params
    }
    fn params_mut(&mut self) -> &mut TensorList<T> {
        &mut self.params
    }
    fn zero_grads(&self) -> TensorList<T> {
        let mut g = self.params.clone();
        g.zero();
        g
    }
    fn zero_state(&self, _batch: usize) {}
    fn train_batch(
        &mut self,
        inputs: &[usize],
        targets: &[usize],
        _b: usize,
        _s: &mut (),
        grads: &mut TensorList<T>,
        rng: &mut Rng,
    ) -> Result<f64, CharLmError> {
        // `train_batch` writes the gradients: `run` adds into them.
        grads.zero();
        Ok(self.run(inputs, targets, Some(grads), Some(rng)) / inputs.len() as f64)
    }
    fn eval_chunk(
        &mut self,
        inputs: &[usize],
        targets: &[usize],
        _b: usize,
        _s: &mut (),
    ) -> Result<f64, CharLmError> {
        Ok(self.run(inputs, targets, None, None))
    }
    fn step_logits(&mut self, input: usize, _s: &mut (), logits: &mut Mat<T>) {
        let (w, b) = (&self.params.tensors[0].1, &self.params.tensors[1].1);
        for i in 0..b.nrows() {
            logits[(i, 0)] = w[(i, input)] + b[(i, 0)];
        }
    }
    fn state_to_mats(_s: &()) -> Vec<Mat<f64>> {
        Vec::new()
    }
    fn state_from_mats(&self, mats: &[Mat<f64>], _b: usize) -> Result<(), String> {
        if mats.is_empty() {
            Ok(())
        } else {
            Err("a bigram model has no state".into())
        }
    }
}

const TEXT: &str =
    "the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat and a log.\n";

fn corpus() -> Corpus {
    Corpus::from_text(&TEXT.repeat(8), 0.1).unwrap()
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("charlm-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(out: PathBuf, steps: u64, batching: Batching) -> TrainConfig {
    TrainConfig {
        seq_len: 8,
        batch: 4,
        batching,
        optimizer: OptimKind::Sgd,
        lr: 2.0,
        lr_decay: 0.9,
        clip_norm: Some(5.0),
        clip_value: Some(0.5),
        stop: Stop::Steps(steps),
        val_every: 7,
        sample_every: 10,
        sample_length: 30,
        seed: 3,
        out,
        progress: false,
        patience: None,
        time_limit: None,
        ..TrainConfig::default()
    }
}

fn model(c: &Corpus) -> Bigram<f64> {
    let mc = ModelConfig::new(c.vocab().len()).with_dropout(0.2);
    Bigram::build(&mc, &mut Rng::seed_from(3)).unwrap()
}

#[test]
fn training_lowers_the_loss_and_writes_the_run_directory() {
    let c = corpus();
    let out = out_dir("lower");
    let mut m = model(&c);
    let before = evaluate(&mut m, c.val(), 1, 16).unwrap();
    let mut lines = Vec::new();
    let report = train(&mut m, &c, &config(out.clone(), 40, Batching::Streams), None, &mut |s| {
        lines.push(s.to_string())
    })
    .unwrap();
    let after = evaluate(&mut m, c.val(), 1, 16).unwrap();
    assert_eq!(report.steps, 40);
    assert!(after < before - 0.5, "validation loss {before} -> {after}");
    assert!(lines.iter().any(|l| l.starts_with("--- sample at step 10 ---")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("validation loss")), "{lines:?}");
    for f in [MODEL_FILE, STATE_FILE, "loss.png"] {
        assert!(out.join(f).exists(), "{f}");
    }
    // The checkpoint holds the final weights.
    let (bytes, state) = load_checkpoint(&out).unwrap();
    assert_eq!(state.step, 40);
    assert_eq!(state.train_loss.len(), 40);
    assert_eq!(state.val_loss.iter().map(|p| p.0).collect::<Vec<_>>(), [7, 14, 21, 28, 35, 40]);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("head.weight").unwrap().shape(), &[c.vocab().len(), c.vocab().len()]);
    std::fs::remove_dir_all(&out).unwrap();
}

/// Stops a run after a checkpoint, resumes it from disk, and compares with a run that never
/// stopped: weights bit for bit, for both batchers.
#[test]
fn resume_is_bit_identical() {
    for batching in [Batching::Streams, Batching::Windows] {
        let c = corpus();
        let full_dir = out_dir(&format!("full-{}", batching.name()));
        let mut full = model(&c);
        train(&mut full, &c, &config(full_dir.clone(), 30, batching), None, &mut |_| {}).unwrap();

        let cut_dir = out_dir(&format!("cut-{}", batching.name()));
        let mut first = model(&c);
        // Stop after 14 steps (a checkpoint step): the process "dies" here.
        train(&mut first, &c, &config(cut_dir.clone(), 14, batching), None, &mut |_| {}).unwrap();
        drop(first);
        let (bytes, state) = load_checkpoint(&cut_dir).unwrap();
        assert_eq!(state.step, 14);
        let file = charlm::checkpoint::decode_tensors(&cut_dir.join(MODEL_FILE), &bytes).unwrap();
        let mut resumed = model(&c);
        assign_tensors(&cut_dir, &file, resumed.params_mut().named_params_mut()).unwrap();
        train(&mut resumed, &c, &config(cut_dir.clone(), 30, batching), Some(state), &mut |_| {}).unwrap();

        for ((n, a), (_, b)) in full.params().named_params().into_iter().zip(resumed.params().named_params())
        {
            let same = a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{} {n} differs after resume", batching.name());
        }
        // The same weights give the same file, byte for byte; the best model and the best so far
        // survive the resume.
        for f in [MODEL_FILE, charlm::resume::BEST_FILE] {
            assert!(
                std::fs::read(full_dir.join(f)).unwrap() == std::fs::read(cut_dir.join(f)).unwrap(),
                "{f}"
            );
        }
        let (a, b) = (load_checkpoint(&full_dir).unwrap().1, load_checkpoint(&cut_dir).unwrap().1);
        assert_eq!(
            (a.best.map(|p| (p.0, p.1.to_bits())), a.since_best),
            (b.best.map(|p| (p.0, p.1.to_bits())), b.since_best)
        );
        std::fs::remove_dir_all(&full_dir).unwrap();
        std::fs::remove_dir_all(&cut_dir).unwrap();
    }
}

#[test]
fn resume_refuses_other_options_and_finished_runs() {
    let c = corpus();
    let dir = out_dir("refuse");
    let mut m = model(&c);
    train(&mut m, &c, &config(dir.clone(), 7, Batching::Streams), None, &mut |_| {}).unwrap();
    let (_, state) = load_checkpoint(&dir).unwrap();
    let mut other = config(dir.clone(), 20, Batching::Streams);
    other.lr = 1.0;
    let e = train(&mut m, &c, &other, Some(state.clone()), &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("lr is 1 here but 2 in the saved run"), "{e}");
    let e = train(&mut m, &c, &config(dir.clone(), 7, Batching::Streams), Some(state), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("already taken 7 steps of the 7 asked"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn divergence_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let c = corpus();
    let dir = out_dir("diverge");
    let mut m = model(&c);
    train(&mut m, &c, &config(dir.clone(), 7, Batching::Streams), None, &mut |_| {}).unwrap();
    let before = std::fs::read(dir.join(MODEL_FILE)).unwrap();
    // Poison the weights: the next loss is NaN.
    m.params.tensors[1].1[(0, 0)] = f64::NAN;
    let (_, state) = load_checkpoint(&dir).unwrap();
    let e =
        train(&mut m, &c, &config(dir.clone(), 20, Batching::Streams), Some(state), &mut |_| {}).unwrap_err();
    assert!(matches!(e, CharLmError::Diverged { step: 8, .. }), "{e}");
    assert!(
        e.to_string().starts_with(
            "training diverged at step 8: the training loss is NaN; the checkpoint of step 7 is kept"
        ),
        "{e}"
    );
    assert!(std::fs::read(dir.join(MODEL_FILE)).unwrap() == before);
    assert!(load_checkpoint(&dir).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn evaluation_predicts_every_character_once_with_one_stream() {
    // With V characters and all-zero weights every prediction costs ln V.
    let c = corpus();
    let mut m = model(&c);
    m.params.zero();
    let l = evaluate(&mut m, c.train(), 1, 7).unwrap();
    assert!((l - (c.vocab().len() as f64).ln()).abs() < 1e-12, "{l}");
    assert!(evaluate(&mut m, &c.train()[..1], 1, 7).is_err());
}

/// The metadata of a safetensors file's bytes.
fn metadata(bytes: &[u8]) -> std::collections::HashMap<String, String> {
    safetensors::SafeTensors::read_metadata(bytes).unwrap().1.metadata().clone().unwrap()
}

/// `best.safetensors` is the model of the lowest validation loss (the first, on ties), the
/// state records that loss exactly, and every checkpoint names its step and validation loss.
#[test]
fn the_best_model_is_kept() {
    let c = corpus();
    let out = out_dir("best");
    let mut m = model(&c);
    // A learning rate far too large: the validation loss goes down, then up and down again.
    let cfg = wild(out.clone(), 70);
    train(&mut m, &c, &cfg, None, &mut |_| {}).unwrap();
    let (bytes, state) = load_checkpoint(&out).unwrap();
    let (&(best_step, best_loss), last) =
        (state.val_loss.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap(), *state.val_loss.last().unwrap());
    assert!(
        best_step < 70,
        "the last model is the best; the test needs one that is not: {:?}",
        state.val_loss
    );
    let exact = state.best.unwrap();
    assert_eq!(exact.0, best_step);
    // The history is stored as decimals (for the plot), the best exactly: 1e-12 relative.
    assert!((exact.1 - best_loss).abs() <= 1e-12 * best_loss, "{exact:?} vs {best_loss}");
    let later = state.val_loss.iter().filter(|p| p.0 > best_step).count() as u64;
    assert_eq!(state.since_best, later);
    let best = std::fs::read(out.join(charlm::resume::BEST_FILE)).unwrap();
    let (bm, mm) = (metadata(&best), metadata(&bytes));
    assert_eq!(bm["step"], best_step.to_string());
    assert_eq!(bm["val_loss"].parse::<f64>().unwrap().to_bits(), exact.1.to_bits());
    assert_eq!((mm["step"].as_str(), mm["val_loss"].parse::<f64>().unwrap()), ("70", last.1));
    // The best file is a valid file (CRC checked) and is not the last one.
    charlm::checkpoint::decode_tensors(&out, &best).unwrap();
    assert!(best != bytes);

    // Stopped after the best (step 42 with these settings) and resumed: the later, worse
    // validations do not replace it.
    let cut = out_dir("best-cut");
    let mut first = model(&c);
    train(
        &mut first,
        &c,
        &TrainConfig { stop: Stop::Steps(49), out: cut.clone(), ..cfg.clone() },
        None,
        &mut |_| {},
    )
    .unwrap();
    let (bytes, saved) = load_checkpoint(&cut).unwrap();
    assert!(saved.best.unwrap().0 < 49 && saved.since_best > 0, "{saved:?}");
    let file = charlm::checkpoint::decode_tensors(&cut, &bytes).unwrap();
    let mut resumed = model(&c);
    assign_tensors(&cut, &file, resumed.params_mut().named_params_mut()).unwrap();
    train(&mut resumed, &c, &TrainConfig { out: cut.clone(), ..cfg }, Some(saved), &mut |_| {}).unwrap();
    let again = load_checkpoint(&cut).unwrap().1;
    assert_eq!(
        (again.best.map(|b| b.1.to_bits()), again.since_best),
        (Some(exact.1.to_bits()), state.since_best)
    );
    assert!(std::fs::read(cut.join(charlm::resume::BEST_FILE)).unwrap() == best);
    std::fs::remove_dir_all(&cut).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
}

/// The settings of `the_best_model_is_kept`: validation losses at steps 7, 14, ..., 70 of
/// 7.13, 5.17, 4.93, 5.22, 8.11, 4.56, 5.63, 7.47, 6.72, 5.45.
fn wild(out: PathBuf, steps: u64) -> TrainConfig {
    let mut cfg = config(out, steps, Batching::Streams);
    (cfg.lr, cfg.lr_decay, cfg.clip_value, cfg.clip_norm) = (60.0, 1.0, None, None);
    cfg
}

/// Resumes the run in `dir` with `cfg`.
fn resume(
    dir: &std::path::Path,
    cfg: &TrainConfig,
) -> Result<(Bigram<f64>, charlm::train::TrainReport), CharLmError> {
    let c = corpus();
    let (bytes, state) = load_checkpoint(dir).unwrap();
    let file = charlm::checkpoint::decode_tensors(&dir.join(MODEL_FILE), &bytes).unwrap();
    let mut m = model(&c);
    assign_tensors(dir, &file, m.params_mut().named_params_mut()).unwrap();
    let r = train(&mut m, &c, cfg, Some(state), &mut |_| {})?;
    Ok((m, r))
}

/// `patience`: the run ends at the validation that makes `patience` in a row without
/// improvement, with both models written; resuming with the same patience is refused, and
/// without it the run goes on bit-identically to one that never stopped.
#[test]
fn patience_stops_and_resumes() {
    let c = corpus();
    let (full, cut) = (out_dir("pat-full"), out_dir("pat-cut"));
    train(&mut model(&c), &c, &wild(full.clone(), 70), None, &mut |_| {}).unwrap();
    let mut lines = Vec::new();
    let cfg = TrainConfig { patience: Some(2), ..wild(cut.clone(), 70) };
    let r = train(&mut model(&c), &c, &cfg, None, &mut |s| lines.push(s.to_string())).unwrap();
    // Best at 21; 28 and 35 are worse.
    assert_eq!(
        (r.steps, r.early_stop, r.best.map(|b| b.0)),
        (35, Some(charlm::train::EarlyStop::Patience), Some(21))
    );
    assert!(lines.iter().any(|l| l.contains("2 validations without improvement")), "{lines:?}");
    assert!(cut.join(MODEL_FILE).exists() && cut.join(charlm::resume::BEST_FILE).exists());
    let e = resume(&cut, &cfg).unwrap_err().to_string();
    assert!(
        e.starts_with("invalid --patience: the saved run has had 2 validations without improvement"),
        "{e}"
    );
    let (_, r) = resume(&cut, &wild(cut.clone(), 70)).unwrap();
    assert_eq!((r.steps, r.early_stop), (70, None));
    for f in [MODEL_FILE, charlm::resume::BEST_FILE] {
        assert!(std::fs::read(full.join(f)).unwrap() == std::fs::read(cut.join(f)).unwrap(), "{f}");
    }
    std::fs::remove_dir_all(&full).unwrap();
    std::fs::remove_dir_all(&cut).unwrap();
}

/// `time_limit`: a limit of 0.001 minutes (60 ms) on a run of a million steps (minutes of work
/// even for this model) ends it early, cleanly, on a checkpoint with both models; the resumed
/// run ends bit-identical to one that never stopped. Nothing depends on how fast the steps are,
/// only on a million of them taking more than 60 ms.
#[test]
fn time_limit_stops_and_resumes() {
    let c = corpus();
    let cut = out_dir("time-cut");
    let cfg = TrainConfig { time_limit: Some(0.001), ..config(cut.clone(), 1_000_000, Batching::Streams) };
    let r = train(&mut model(&c), &c, &cfg, None, &mut |_| {}).unwrap();
    assert!(r.steps < 1_000_000 && r.early_stop == Some(charlm::train::EarlyStop::TimeLimit), "{r:?}");
    let (_, state) = load_checkpoint(&cut).unwrap();
    assert_eq!((state.step, state.val_loss.last().unwrap().0), (r.steps, r.steps));
    assert!(cut.join(charlm::resume::BEST_FILE).exists());
    let end = r.steps + 10;
    let (_, r2) = resume(&cut, &config(cut.clone(), end, Batching::Streams)).unwrap();
    assert_eq!((r2.steps, r2.early_stop), (end, None));
    let full = out_dir("time-full");
    train(&mut model(&c), &c, &config(full.clone(), end, Batching::Streams), None, &mut |_| {}).unwrap();
    assert!(std::fs::read(full.join(MODEL_FILE)).unwrap() == std::fs::read(cut.join(MODEL_FILE)).unwrap());
    std::fs::remove_dir_all(&full).unwrap();
    std::fs::remove_dir_all(&cut).unwrap();
}

/// The learning rate the optimizer used for the last step of a run (the state saves it).
fn last_lr(dir: &std::path::Path) -> f64 {
    load_checkpoint(dir).unwrap().1.optimizer.scalars["lr"]
}

/// Warmup, char-rnn's decay after N epochs, and warmup then cosine: the learning rate of a
/// run's last step is the rnn-optim schedule's (PyTorch's, bit for bit) at that step.
#[test]
fn schedules_set_every_steps_learning_rate() {
    use charlm::train::LrScheduleKind;
    use rnn_optim::{CosineAnnealingLr, DecayAfterLr, LinearLr, LrSchedule, SequentialLr};
    let c = corpus();
    let per_epoch = 19; // 633 training characters, 4 streams of 158, 8 steps per batch
    let dir = out_dir("sched");
    let base = TrainConfig {
        warmup_steps: 5,
        lr_decay: 0.9,
        lr_decay_after: 2,
        ..config(dir.clone(), 1, Batching::Streams)
    };
    let warm = LinearLr::new(2.0, 0.2, 1.0, 5).unwrap();
    let decay = DecayAfterLr::new(2.0, 0.9, 2).unwrap();
    for n in [1, 3, 5, 6, 2 * per_epoch + 1, 3 * per_epoch + 1] {
        let _ = std::fs::remove_dir_all(&dir);
        let r = train(
            &mut model(&c),
            &c,
            &TrainConfig { stop: Stop::Steps(n), ..base.clone() },
            None,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(r.batches_per_epoch as u64, per_epoch);
        let s = n - 1;
        let want = if s < 5 { warm.lr_at(s) } else { decay.lr_at(s / per_epoch) };
        assert_eq!(last_lr(&dir).to_bits(), want.to_bits(), "step {s}");
    }
    assert_eq!(decay.lr_at(3), 2.0 * 0.9 * 0.9);
    for warmup in [0, 5] {
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = TrainConfig {
            lr_schedule: LrScheduleKind::Cosine,
            lr_min: 0.1,
            lr_decay: 1.0,
            warmup_steps: warmup,
            ..config(dir.clone(), 30, Batching::Streams)
        };
        train(&mut model(&c), &c, &cfg, None, &mut |_| {}).unwrap();
        let cosine = CosineAnnealingLr::new(2.0, 30 - warmup, 0.1).unwrap();
        let want = match warmup {
            0 => cosine.lr_at(29),
            w => SequentialLr::new(LinearLr::new(2.0, 1.0 / w as f64, 1.0, w).unwrap(), cosine, w)
                .unwrap()
                .lr_at(29),
        };
        assert_eq!(last_lr(&dir).to_bits(), want.to_bits(), "warmup {warmup}");
        assert!(want < 0.11, "{want}");
    }
    // A run with the default schedule saves no new settings: runs saved before they existed resume.
    let keys = TrainConfig::default().settings(charlm::DType::F64, &c);
    assert!(
        !keys.keys().any(|k| k.contains("warmup") || k.contains("lr_schedule") || k.contains("after")),
        "{keys:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Warmup then cosine, stopped early by patience and resumed without it: bit-identical to the
/// run that never stopped. A resume asking for another length is refused (the cosine's length
/// is the run's).
#[test]
fn cosine_runs_resume_bit_identically() {
    use charlm::train::LrScheduleKind;
    let c = corpus();
    let (full, cut) = (out_dir("cos-full"), out_dir("cos-cut"));
    let cfg = |out: PathBuf| TrainConfig {
        lr_schedule: LrScheduleKind::Cosine,
        lr_min: 1.0,
        warmup_steps: 5,
        ..wild(out, 70)
    };
    train(&mut model(&c), &c, &cfg(full.clone()), None, &mut |_| {}).unwrap();
    let r =
        train(&mut model(&c), &c, &TrainConfig { patience: Some(1), ..cfg(cut.clone()) }, None, &mut |_| {})
            .unwrap();
    assert!(r.steps < 70, "patience did not stop the run: {r:?}");
    let e = resume(&cut, &TrainConfig { stop: Stop::Steps(80), ..cfg(cut.clone()) }).unwrap_err().to_string();
    assert!(e.contains("lr_schedule_length is 80 steps here but 70 steps in the saved run"), "{e}");
    resume(&cut, &cfg(cut.clone())).unwrap();
    for f in [MODEL_FILE, charlm::resume::BEST_FILE] {
        assert!(std::fs::read(full.join(f)).unwrap() == std::fs::read(cut.join(f)).unwrap(), "{f}");
    }
    std::fs::remove_dir_all(&full).unwrap();
    std::fs::remove_dir_all(&cut).unwrap();
}
