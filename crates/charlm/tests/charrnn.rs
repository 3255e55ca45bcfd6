//! The model on the cells: its gradient against numeric differences, and the `charlm` program
//! end to end (kill-and-resume bit-identity, one-line errors).

use std::path::{Path, PathBuf};
use std::process::Command;

use charlm::charrnn::CharRnn;
use charlm::model::LanguageModel;
use charlm::{CellKind, ModelConfig};
use rnn_cells::{Gru, Lstm, Rnn};
use rnn_tensor::gradcheck::{numeric_gradient, rel_error};
use rnn_tensor::{Parameters, Rng};

/// The loss of `train_batch` against central differences of the same loss, for every tensor,
/// over a carried (non-zero) initial state. f64, tolerance 1e-7 on the relative error.
fn gradient_matches<M: LanguageModel<f64> + Clone>(model: &M, batch: usize, steps: usize) {
    let v = model.config().vocab_size;
    let mut rng = Rng::seed_from(21);
    let inputs: Vec<usize> = (0..batch * steps).map(|_| rng.below(v)).collect();
    let targets: Vec<usize> = (0..batch * steps).map(|_| rng.below(v)).collect();
    // A non-zero starting state: run one batch first.
    let mut m = model.clone();
    let mut state = m.zero_state(batch);
    let mut g = m.zero_grads();
    m.train_batch(&inputs, &targets, batch, &mut state, &mut g, &mut Rng::seed_from(0)).unwrap();
    let mut grads = m.zero_grads();
    let s0 = state.clone();
    m.train_batch(&inputs, &targets, batch, &mut state.clone(), &mut grads, &mut Rng::seed_from(0)).unwrap();
    let names: Vec<String> = m.params().named_params().into_iter().map(|(n, _)| n).collect();
    for (k, name) in names.iter().enumerate() {
        let mut x = m.params().named_params()[k].1.as_slice().to_vec();
        let num = numeric_gradient(
            |vals| {
                let mut p = m.clone();
                p.params_mut().named_params_mut()[k].1.copy_from_slice(vals);
                let mut st = s0.clone();
                let mut scratch = p.zero_grads();
                p.train_batch(&inputs, &targets, batch, &mut st, &mut scratch, &mut Rng::seed_from(0))
                    .unwrap()
            },
            &mut x,
            1e-4,
        );
        let err = rel_error(&num, grads.named_params()[k].1.as_slice());
        assert!(err < 1e-7, "{name}: relative error {err:e}");
    }
}

#[test]
fn gradients_match_numeric_differences() {
    let config = ModelConfig::new(5).with_hidden(3).with_layers(2);
    let lstm = CharRnn::<f64, Lstm<f64>>::build(&config, &mut Rng::seed_from(1)).unwrap();
    gradient_matches(&lstm, 2, 3);
    let gru =
        CharRnn::<f64, Gru<f64>>::build(&config.clone().with_cell(CellKind::Gru), &mut Rng::seed_from(2))
            .unwrap();
    gradient_matches(&gru, 2, 3);
    let rnn_config = config.clone().with_cell(CellKind::Rnn);
    let rnn = CharRnn::<f64, Rnn<f64>>::build(&rnn_config, &mut Rng::seed_from(3)).unwrap();
    gradient_matches(&rnn, 2, 3);
}

#[test]
fn build_rejects_another_cell_and_bad_states() {
    let config = ModelConfig::new(5).with_hidden(3).with_layers(2);
    assert!(CharRnn::<f64, Gru<f64>>::build(&config, &mut Rng::seed_from(1)).is_err());
    let m = CharRnn::<f32, Lstm<f32>>::build(&config, &mut Rng::seed_from(1)).unwrap();
    let mats = CharRnn::<f32, Lstm<f32>>::state_to_mats(&m.zero_state(4));
    assert_eq!(mats.len(), 4); // h and c of two layers
    assert!(m.state_from_mats(&mats, 4).is_ok());
    assert!(m.state_from_mats(&mats, 3).unwrap_err().contains("needs (3, 3)"));
    assert!(m.state_from_mats(&mats[..3], 4).unwrap_err().contains("3 matrices"));
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_charlm")
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus.txt")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("charlm-bin-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn train_args<'a>(out: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--corpus",
        corpus().to_str().unwrap().to_owned().leak(),
        "--hidden",
        "8",
        "--layers",
        "2",
        "--dropout",
        "0.25",
        "--seq-len",
        "10",
        "--batch",
        "3",
        "--steps",
        steps,
        "--val-every",
        "7",
        "--out",
        out,
        "--no-progress",
    ];
    v.extend_from_slice(extra);
    v
}

/// A run stopped after its step-14 checkpoint (the process exits there) and resumed with
/// `--resume` ends with the same model file, byte for byte, as a run that never stopped; with
/// dropout, the carried LSTM state and both batchers.
#[test]
fn stopped_and_resumed_runs_end_bit_identical() {
    for batching in ["streams", "windows"] {
        let (full, cut) = (tmp(&format!("full-{batching}")), tmp(&format!("cut-{batching}")));
        let (f, c) = (full.to_str().unwrap(), cut.to_str().unwrap());
        let extra = ["--batching", batching, "--optimizer", "adam"];
        let (ok, _, err) = run(&train_args(f, "30", &extra));
        assert!(ok, "{err}");
        let (ok, _, err) = run(&train_args(c, "14", &extra));
        assert!(ok, "{err}");
        let mut resume = train_args(c, "30", &extra);
        resume.extend_from_slice(&["--resume", c]);
        let (ok, out, err) = run(&resume);
        assert!(ok, "{err}");
        assert!(out.contains("trained 30 steps") && out.contains("16 this run"), "{out}");
        let a = std::fs::read(full.join("model.safetensors")).unwrap();
        let b = std::fs::read(cut.join("model.safetensors")).unwrap();
        assert!(a == b, "{batching}: the resumed model differs");
        std::fs::remove_dir_all(&full).unwrap();
        std::fs::remove_dir_all(&cut).unwrap();
    }
}

#[test]
fn sample_and_eval_run_on_a_trained_checkpoint() {
    let dir = tmp("sample");
    let d = dir.to_str().unwrap();
    assert!(run(&train_args(d, "7", &[])).0);
    let ck = dir.join("model.safetensors");
    let ck = ck.to_str().unwrap();
    let (ok, out, err) =
        run(&["sample", "--checkpoint", ck, "--prime", "The ", "--length", "40", "--seed", "3"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("The ") && out.trim_end_matches('\n').chars().count() == 44, "{out:?}");
    let again = run(&["sample", "--checkpoint", ck, "--prime", "The ", "--length", "40", "--seed", "3"]).1;
    assert_eq!(out, again, "same seed, same sample");
    let (ok, out, _) = run(&["sample", "--checkpoint", ck, "--argmax", "--length", "10"]);
    assert!(ok && out.trim_end().chars().count() == 10, "{out:?}");
    let (ok, out, err) = run(&["eval", "--checkpoint", ck, "--text", corpus().to_str().unwrap()]);
    assert!(ok, "{err}");
    let loss: f64 = out.trim().strip_prefix("loss_nats_per_char: ").unwrap().parse().unwrap();
    assert!(loss > 0.5 && loss < 4.0, "{loss}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each bad input exits non-zero with one line on standard error that names the problem, and
/// no panic or backtrace.
#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tmp("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let bad_utf8 = dir.join("bad.txt");
    std::fs::write(&bad_utf8, b"abc\xff\xfe").unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let short = dir.join("short.txt");
    std::fs::write(&short, "tiny text").unwrap();
    let good_run = dir.join("run");
    assert!(run(&train_args(good_run.to_str().unwrap(), "7", &[])).0);
    let ck = good_run.join("model.safetensors");
    let truncated = dir.join("trunc.safetensors");
    std::fs::write(&truncated, &std::fs::read(&ck).unwrap()[..200]).unwrap();
    let blocker = dir.join("file");
    std::fs::write(&blocker, "x").unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["train".into(), "--corpus".into(), format!("{d}/missing.txt")], "cannot read corpus"),
        (vec!["train".into(), "--corpus".into(), s(&bad_utf8)], "not valid UTF-8 at byte offset 3"),
        (vec!["train".into(), "--corpus".into(), s(&empty)], "is empty"),
        (
            vec!["train".into(), "--corpus".into(), s(&short), "--out".into(), format!("{d}/o")],
            "characters, but 2501 are needed",
        ),
        (
            vec!["train".into(), "--corpus".into(), s(&corpus()), "--hidden".into(), "0".into()],
            "invalid --hidden",
        ),
        (vec!["train".into(), "--corpus".into(), s(&corpus()), "--lr".into(), "NaN".into()], "invalid --lr"),
        (
            vec!["train".into(), "--corpus".into(), s(&corpus()), "--seq-len".into(), "0".into()],
            "invalid --seq-len",
        ),
        (
            vec![
                "train".into(),
                "--corpus".into(),
                s(&corpus()),
                "--batch".into(),
                "2".into(),
                "--seq-len".into(),
                "5".into(),
                "--out".into(),
                format!("{}/sub", s(&blocker)),
            ],
            "cannot write",
        ),
        (
            vec!["sample".into(), "--checkpoint".into(), s(&ck), "--temperature".into(), "0".into()],
            "invalid --temperature",
        ),
        (
            vec!["sample".into(), "--checkpoint".into(), s(&ck), "--top-k".into(), "0".into()],
            "invalid --top-k",
        ),
        (
            vec!["sample".into(), "--checkpoint".into(), s(&ck), "--prime".into(), "Zz#".into()],
            "not in the vocabulary: '#', 'Z', 'z'",
        ),
        (vec!["sample".into(), "--checkpoint".into(), s(&truncated)], "not a valid safetensors file"),
        (
            vec!["eval".into(), "--checkpoint".into(), s(&ck), "--text".into(), s(&bad_utf8)],
            "not valid UTF-8",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGKILL at pseudo-random instants (some during checkpoint writes: one is written every 2
/// steps), then `--resume` from whatever is on disk, in a loop; the run that finally completes
/// ends byte-identical to one that was never interrupted, and every kill left a loadable pair.
#[test]
fn killed_runs_resume_bit_identical() {
    let (full, cut) = (tmp("kill-full"), tmp("kill-cut"));
    let (f, c) = (full.to_str().unwrap(), cut.to_str().unwrap());
    let args = |out: &str, resume: bool| {
        let corpus = corpus().to_str().unwrap().to_owned();
        let mut a: Vec<String> = [
            "train",
            "--corpus",
            &corpus,
            "--hidden",
            "24",
            "--layers",
            "2",
            "--dropout",
            "0.1",
            "--seq-len",
            "10",
            "--batch",
            "3",
            "--steps",
            "120",
            "--val-every",
            "2",
            "--out",
            out,
            "--no-progress",
        ]
        .map(String::from)
        .to_vec();
        if resume {
            a.extend(["--resume".to_string(), out.to_string()]);
        }
        a
    };
    let done = Command::new(bin()).args(args(f, false)).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let started = std::time::Instant::now();
    Command::new(bin()).args(args(c, false)).output().unwrap();
    let run_ms = started.elapsed().as_millis() as u64;
    std::fs::remove_dir_all(&cut).unwrap();

    let mut lcg = 12345u64;
    let mut kills = 0;
    for _ in 0..8 {
        let resume = cut.join("model.safetensors").exists();
        let mut child = Command::new(bin())
            .args(args(c, resume))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        lcg = lcg.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let wait = 5 + (lcg >> 33) % run_ms.max(10);
        std::thread::sleep(std::time::Duration::from_millis(wait));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        if cut.join("model.safetensors").exists() {
            // Whatever instant the kill hit, the pair on disk loads.
            charlm::resume::load_checkpoint(&cut).expect("a kill left an unusable checkpoint");
        }
    }
    let state = charlm::resume::load_checkpoint(&cut).map(|(_, s)| s.step).unwrap_or(0);
    if state < 120 {
        let resume = cut.join("model.safetensors").exists();
        let out = Command::new(bin()).args(args(c, resume)).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(kills > 0, "no run was killed (each took {run_ms} ms)");
    let a = std::fs::read(full.join("model.safetensors")).unwrap();
    let b = std::fs::read(cut.join("model.safetensors")).unwrap();
    assert!(a == b, "after {kills} kills the resumed model differs");
    std::fs::remove_dir_all(&full).unwrap();
    std::fs::remove_dir_all(&cut).unwrap();
}

/// The same seed gives the same model file, byte for byte, in two processes; another seed gives
/// another one. (No library here uses threads, so the thread count cannot change a result.)
#[test]
fn same_seed_same_bytes() {
    let dirs: Vec<PathBuf> = ["seed-a", "seed-b", "seed-c"].iter().map(|t| tmp(t)).collect();
    for (dir, seed) in dirs.iter().zip(["5", "5", "6"]) {
        let (ok, _, err) =
            run(&train_args(dir.to_str().unwrap(), "12", &["--seed", seed, "--batching", "windows"]));
        assert!(ok, "{err}");
    }
    let bytes: Vec<Vec<u8>> =
        dirs.iter().map(|d| std::fs::read(d.join("model.safetensors")).unwrap()).collect();
    assert!(bytes[0] == bytes[1], "same seed, different models");
    assert!(bytes[0] != bytes[2], "different seeds, same model");
    for d in dirs {
        std::fs::remove_dir_all(d).unwrap();
    }
}
