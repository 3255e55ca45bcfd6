//! Issue 17, the second reliability round of the `charlm` program: one test per class (see
//! docs/RELIABILITY.md). Each runs the binary on the small fixture corpus and takes seconds.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use charlm::checkpoint::{encode_tensors, load_model, model_metadata, TensorList};
use charlm::{DType, ModelConfig};
use rnn_data::Vocab;
use rnn_tensor::Rng;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_charlm")
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus.txt")
}

/// A fresh directory for one test.
fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("charlm-rel-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn charlm(args: &[String]) -> Output {
    Command::new(bin()).args(args).env("RUST_BACKTRACE", "1").output().unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `charlm train` of a tiny LSTM on `corpus` into `out`.
fn train_args(corpus: &Path, out: &Path, steps: u64, extra: &[&str]) -> Vec<String> {
    let mut a = strings(&[
        "train",
        "--corpus",
        &s(corpus),
        "--hidden",
        "8",
        "--layers",
        "1",
        "--seq-len",
        "10",
        "--batch",
        "3",
        "--val-every",
        "2",
        "--steps",
        &steps.to_string(),
        "--out",
        &s(out),
        "--no-progress",
    ]);
    a.extend(strings(extra));
    a
}

/// `dir/run`, a run of 2 steps of [`train_args`]' tiny LSTM on the test corpus (its
/// `model.safetensors` is the checkpoint most tests read).
fn trained_run(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    assert_ok(&charlm(&train_args(&corpus(), &run, 2, &[])), "setup");
    run
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 8's contract for bad input: a non-zero exit (not a signal), one `error:` line (the last
/// on standard error) containing `want`, no panic, no backtrace, no Debug structure.
fn assert_clean_failure(out: &Output, want: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded, expected {want:?}: {err}");
    assert!(out.status.code().is_some(), "died of a signal: {:?}: {err}", out.status);
    let last = err.trim_end().lines().last().unwrap_or("").to_owned();
    assert!(last.starts_with("error: ") && last.contains(want), "expected {want:?} in {err}");
    assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");
    assert!(!err.contains("panicked") && !err.to_lowercase().contains("backtrace"), "{err}");
    assert!(!err.contains(" { ") && !err.contains("Os {"), "a Debug structure: {err}");
    last
}

/// Every file of a run directory with its bytes, sorted by name; not the lock file, which
/// records the process that holds the directory (a reader of it too).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file() && e.file_name() != ".charlm.lock")
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Thread settings: `RNN_NUM_THREADS` and `MATMUL_NUM_THREADS` are checked like `--threads`
/// (1..=256), and the kernels' cap `RNN_MAX_SIMD` against its three values, for every command. Before: `abc` and `0` were ignored, a huge value panicked.
#[test]
fn thread_variables_are_checked_like_the_flag() {
    let dir = tmp("threads");
    let run = trained_run(&dir);
    let ck = s(&run.join("model.safetensors"));
    let cases = [
        ("RNN_NUM_THREADS", "abc", "RNN_NUM_THREADS must be a whole number in 1..=256, got \"abc\""),
        ("RNN_NUM_THREADS", "0", "RNN_NUM_THREADS must be in 1..=256, got 0"),
        ("RNN_NUM_THREADS", "1000000", "RNN_NUM_THREADS must be in 1..=256, got 1000000"),
        ("MATMUL_NUM_THREADS", "two", "MATMUL_NUM_THREADS must be a whole number in 1..=256"),
        ("MATMUL_NUM_THREADS", "0", "MATMUL_NUM_THREADS must be in 1..=256, got 0"),
        ("MATMUL_NUM_THREADS", "99999999999999999999999", "MATMUL_NUM_THREADS must be in 1..=256"),
        ("RNN_MAX_SIMD", "avx3", "RNN_MAX_SIMD must be avx512, avx2 or portable, got \"avx3\""),
    ];
    for (var, value, want) in cases {
        let commands = [
            strings(&["sample", "--checkpoint", &ck, "--length", "5"]),
            strings(&["eval", "--checkpoint", &ck, "--text", &s(&corpus())]),
            train_args(&corpus(), &dir.join("t"), 2, &[]),
        ];
        for args in commands {
            let out =
                Command::new(bin()).args(&args).env(var, value).env("RUST_BACKTRACE", "1").output().unwrap();
            let line = assert_clean_failure(&out, want);
            assert!(line.contains("unset it"), "{line}");
        }
    }
    // Valid values (and an empty one, which is unset) still work; --threads wins over the
    // variable.
    for (var, value) in [
        ("RNN_NUM_THREADS", "2"),
        ("MATMUL_NUM_THREADS", "256"),
        ("RNN_NUM_THREADS", ""),
        ("RNN_MAX_SIMD", "avx2"),
        ("RNN_MAX_SIMD", "portable"),
    ] {
        let out = Command::new(bin())
            .args(["sample", "--checkpoint", &ck, "--length", "5"])
            .env(var, value)
            .output()
            .unwrap();
        assert_ok(&out, &format!("{var}={value}"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One trainer per run directory: while a run trains, a second `train` on its directory
/// (fresh, `--resume`, or reading it as the source of `--resume A --out B`) is refused with the
/// holder's process id, and the running trainer goes on; once it is killed, its lock no
/// longer blocks. Before: the second trainer ran, deleting the first one's pending state.
#[test]
fn one_trainer_per_run_directory() {
    let dir = tmp("lock");
    let run = dir.join("run");
    let mut first = Command::new(bin())
        .args(train_args(&corpus(), &run, 1_000_000, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !run.join("train_state.json").exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the first run wrote no checkpoint");
        assert!(first.try_wait().unwrap().is_none(), "the first run ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = first.id();
    let holder = format!("in use by another `charlm train` (process {pid})");
    // Short runs, so that a trainer that is not refused ends soon (and fails the test).
    let seconds = [
        train_args(&corpus(), &run, 10, &["--resume", &s(&run)]),
        train_args(&corpus(), &run, 10, &[]),
        train_args(&corpus(), &run, 10, &["--overwrite"]),
        train_args(&corpus(), &dir.join("other"), 10, &["--resume", &s(&run)]),
    ];
    for args in seconds {
        let out = charlm(&args);
        assert_clean_failure(&out, &holder);
        assert!(first.try_wait().unwrap().is_none(), "the running trainer was disturbed");
    }
    // The running trainer's checkpoints are still consistent.
    std::thread::sleep(Duration::from_millis(100));
    first.kill().unwrap(); // SIGKILL: the lock goes with the process
    first.wait().unwrap();
    let (_, state) = charlm::resume::load_checkpoint(&run).expect("the first run's checkpoint loads");
    let steps = (state.step + 2).to_string();
    let mut resume = train_args(&corpus(), &run, 0, &["--resume", &s(&run)]);
    let i = resume.iter().position(|a| a == "--steps").unwrap();
    resume[i + 1] = steps;
    assert_ok(&charlm(&resume), "resume after the holder was killed");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Nothing is written where the user did not ask: `--resume A --out B` continues into B and
/// leaves A byte for byte; a fresh run into a directory holding a run is refused (naming
/// `--resume` and `--overwrite`) and leaves it as it was; `--overwrite` replaces it;
/// `--resume FILE` says it takes the run directory. Before: B was ignored and A overwritten,
/// and a fresh run silently replaced the old one.
#[test]
fn runs_are_only_written_where_asked() {
    let dir = tmp("where");
    let (a, b) = (dir.join("a"), dir.join("b"));
    assert_ok(&charlm(&train_args(&corpus(), &a, 4, &[])), "run A");
    let before = snapshot(&a);
    assert_ok(&charlm(&train_args(&corpus(), &b, 8, &["--resume", &s(&a)])), "resume A into B");
    assert!(snapshot(&a) == before, "--resume A --out B changed A");
    let (_, state) = charlm::resume::load_checkpoint(&b).unwrap();
    assert_eq!(state.step, 8);
    // The same run uninterrupted ends where the continued one does.
    let whole = dir.join("whole");
    assert_ok(&charlm(&train_args(&corpus(), &whole, 8, &[])), "whole run");
    assert!(
        std::fs::read(whole.join("model.safetensors")).unwrap()
            == std::fs::read(b.join("model.safetensors")).unwrap()
    );

    // A fresh run into a directory that holds one.
    let line = assert_clean_failure(
        &charlm(&train_args(&corpus(), &a, 6, &["--seed", "3"])),
        &format!("{} already holds a run", a.display()),
    );
    assert!(line.contains("--resume") && line.contains("--overwrite"), "{line}");
    assert!(snapshot(&a) == before, "a refused run changed the directory");
    // Resuming into a directory holding another run is refused the same way.
    assert_clean_failure(
        &charlm(&train_args(&corpus(), &b, 12, &["--resume", &s(&a)])),
        "already holds a run",
    );
    // --overwrite starts over.
    assert_ok(&charlm(&train_args(&corpus(), &a, 2, &["--seed", "3", "--overwrite"])), "overwrite");
    assert_eq!(charlm::resume::load_checkpoint(&a).unwrap().1.step, 2);
    // --resume of a file.
    let model = a.join("model.safetensors");
    let line = assert_clean_failure(
        &charlm(&train_args(&corpus(), &a, 4, &["--resume", &s(&model)])),
        "is a file; --resume takes the run directory",
    );
    assert!(line.contains(&s(&a)), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A checkpoint whose head biases are all 1e10 (f32): every logit rounds to 1e10, so the model
/// predicts uniformly and `eval` must print ln V. Before: `m + ln Σ - z_y` in f32 gave 0.
#[test]
fn eval_is_exact_with_huge_logits() {
    let dir = tmp("logits");
    let text = std::fs::read_to_string(corpus()).unwrap();
    let vocab = Vocab::from_text(&text);
    let config = ModelConfig::new(vocab.len()).with_hidden(8).with_layers(1);
    let mut params = TensorList::<f32>::init(&config, &mut Rng::seed_from(4));
    let bias = &mut params.tensors.iter_mut().find(|(n, _)| n == "head.bias").unwrap().1;
    bias.iter_mut().for_each(|b| *b = 1e10);
    let named: Vec<(String, &rnn_tensor::Mat<f32>)> =
        params.tensors.iter().map(|(n, m)| (n.clone(), m)).collect();
    let ck = dir.join("huge.safetensors");
    std::fs::write(&ck, encode_tensors(&named, model_metadata(&config, DType::F32, &vocab)).unwrap())
        .unwrap();
    let out = charlm(&strings(&["eval", "--checkpoint", &s(&ck), "--text", &s(&corpus())]));
    assert_ok(&out, "eval");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let loss: f64 = stdout.trim().strip_prefix("loss_nats_per_char: ").unwrap().parse().unwrap();
    let want = (vocab.len() as f64).ln();
    assert!((loss - want).abs() < 1e-5, "loss {loss}, ln V = {want}");
    // Sampling from it draws (uniformly) without failing.
    assert_ok(&charlm(&strings(&["sample", "--checkpoint", &s(&ck), "--length", "50"])), "sample");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Text input: a byte-order mark at the start of a corpus, an eval text or a prime is not a
/// character; unknown characters are listed as the first ten and the count. Before: the BOM
/// joined the vocabulary (and eval and sample refused it), and 20,000 unknown characters made
/// an error line of about 100 KB.
#[test]
fn byte_order_marks_and_long_unknown_lists() {
    let dir = tmp("text");
    let text = std::fs::read_to_string(corpus()).unwrap();
    let bom_corpus = dir.join("bom.txt");
    std::fs::write(&bom_corpus, format!("\u{feff}{text}")).unwrap();
    let run = dir.join("run");
    assert_ok(&charlm(&train_args(&bom_corpus, &run, 2, &[])), "train on a BOM corpus");
    let ck = run.join("model.safetensors");
    let file = load_model(&ck).unwrap();
    assert_eq!(file.vocab, Vocab::from_text(&text), "the BOM entered the vocabulary");
    let ck = s(&ck);
    let plain = charlm(&strings(&["eval", "--checkpoint", &ck, "--text", &s(&corpus())]));
    let bom = charlm(&strings(&["eval", "--checkpoint", &ck, "--text", &s(&bom_corpus)]));
    assert_ok(&bom, "eval of a BOM text");
    assert_eq!(plain.stdout, bom.stdout);
    let prime = "\u{feff}The ";
    let out = charlm(&strings(&["sample", "--checkpoint", &ck, "--prime", prime, "--length", "5"]));
    assert_ok(&out, "a BOM prime");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("The "), "{:?}", out.stdout);

    let unknown: String = (0..20_000u32).filter_map(|i| char::from_u32(0x4e00 + i)).collect();
    let wide = dir.join("wide.txt");
    std::fs::write(&wide, format!("{text}{unknown}")).unwrap();
    let out = charlm(&strings(&["eval", "--checkpoint", &ck, "--text", &s(&wide)]));
    let line = assert_clean_failure(&out, "20000 character(s) not in the vocabulary: '一', '丁'");
    assert!(line.contains("and 19990 more") && line.len() < 300, "{} bytes: {line}", line.len());
    let out = charlm(&strings(&["sample", "--checkpoint", &ck, "--prime", &unknown[..3000]]));
    assert_clean_failure(&out, "1000 character(s) not in the vocabulary");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Pipes and write errors: `charlm sample | head` ends as soon as the reader goes away, quietly
/// and successfully; a full disk (`/dev/full`) says so without blaming a directory; a loss plot
/// that cannot be drawn is a warning, and training finishes. Before: sample generated all its
/// characters first, then failed with a hint about directories; the plot ended training.
#[test]
fn pipes_and_write_errors() {
    let dir = tmp("pipes");
    let run = trained_run(&dir);
    let ck = s(&run.join("model.safetensors"));
    // 100 million characters would take minutes; the reader leaves after 100 bytes.
    let mut child = Command::new(bin())
        .args(["sample", "--checkpoint", &ck, "--length", "100000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 100];
    stdout.read_exact(&mut head).unwrap();
    let left = Instant::now();
    drop(stdout);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if left.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("sample went on generating after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success() && err.is_empty(), "{status:?}: {err}");

    // A full disk.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(bin())
        .args(["sample", "--checkpoint", &ck, "--length", "20000"])
        .stdout(full)
        .output()
        .unwrap();
    let line = assert_clean_failure(&out, "cannot write to standard output: No space left on device");
    assert!(line.contains("full") && !line.contains("directory"), "{line}");

    // A loss plot that cannot be written (a directory stands in its place).
    let blocked = dir.join("blocked");
    std::fs::create_dir_all(blocked.join("loss.png/x")).unwrap();
    let out = charlm(&train_args(&corpus(), &blocked, 4, &[]));
    assert_ok(&out, "training with an unwritable plot");
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("loss.png") && !warnings[0].contains(" { "), "{err}");
    assert_eq!(charlm::resume::load_checkpoint(&blocked).unwrap().1.step, 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What `charlm sample` hands its output: the bytes of each write, and where it flushed.
#[derive(Default)]
struct Recorder {
    bytes: Vec<u8>,
    /// `bytes.len()` at each flush.
    flushes: Vec<usize>,
}

impl std::io::Write for Recorder {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.flushes.push(self.bytes.len());
        Ok(())
    }
}

/// Samples stream: `charlm sample` flushes the prime, then every character as soon as it is
/// drawn, so the first appear at once and a reader that leaves (`| head -c 100`) ends it at the
/// next character. Before: the characters went through standard output's line buffer, so a
/// sample without a newline showed nothing for a kilobyte, and a closed pipe was noticed only at
/// the next flush of that buffer. The binary's side: `pipes_and_write_errors`.
#[test]
fn samples_are_flushed_character_by_character() {
    use clap::Parser;
    let dir = tmp("flush");
    let run = trained_run(&dir);
    let ck = s(&run.join("model.safetensors"));
    let cli = charlm::cli::Cli::try_parse_from([
        "charlm",
        "sample",
        "--checkpoint",
        &ck,
        "--prime",
        "A ",
        "--length",
        "200",
    ])
    .unwrap();
    let mut rec = Recorder::default();
    charlm::cli::run(&cli.command, &mut rec).unwrap();
    let text = String::from_utf8(rec.bytes.clone()).unwrap();
    assert_eq!(text.chars().count(), 2 + 200 + 1, "{text:?}");
    // A flush after the prime and after each character: the boundaries of every character.
    // (The last boundary is that of the closing newline, flushed once more after it.)
    let mut boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).skip(2).collect();
    boundaries.push(text.len());
    assert_eq!(rec.flushes, boundaries, "{text:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No leftovers: the temporary files killed runs leave (a model or state being written, a
/// pending state without its model, a plot) are removed by the next run in the directory,
/// resumed or fresh. Before: they stayed forever.
#[test]
fn killed_runs_leave_no_leftovers() {
    let dir = tmp("leftovers");
    let run = trained_run(&dir);
    let planted = [
        ".model.safetensors.tmp-999999",
        ".train_state.json.next.tmp-999998",
        ".train_state.safetensors.next.tmp-999993",
        ".loss-999997.tmp.png",
    ];
    for p in planted {
        std::fs::write(run.join(p), b"partial").unwrap();
    }
    assert_ok(&charlm(&train_args(&corpus(), &run, 4, &["--resume", &s(&run)])), "resume");
    let left = names(&run);
    assert!(planted.iter().all(|p| !left.contains(&p.to_string())), "{left:?}");
    // A directory where a first run was killed before its first checkpoint: a pending state
    // with no model, a best model written just before, temporary files; a fresh run takes it
    // and cleans it.
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    for p in [
        "train_state.json.next",
        "train_state.safetensors.next",
        "best.safetensors",
        ".best.safetensors.tmp-999994",
        ".model.safetensors.tmp-999996",
        ".loss.png.tmp-999995",
    ] {
        std::fs::write(fresh.join(p), b"partial").unwrap();
    }
    assert_ok(&charlm(&train_args(&corpus(), &fresh, 2, &["--val-frac", "0"])), "fresh run");
    let left = names(&fresh);
    // Without validation text the run writes no best model: the planted one is gone.
    let allowed =
        [".charlm.lock", "loss.png", "model.safetensors", "train_state.json", "train_state.safetensors"];
    assert!(left.iter().all(|n| allowed.contains(&n.as_str())), "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--init` from a checkpoint trained on another vocabulary of the same size: the embedding
/// columns and head rows follow their characters (a character new to the checkpoint keeps fresh
/// weights), and one line says so. Before: rows were taken by index, silently giving every
/// character after the changed one its neighbour's weights.
#[test]
fn init_from_another_vocabulary_maps_by_character() {
    let dir = tmp("init");
    let run = trained_run(&dir);
    // The same size of vocabulary: 'e' is gone, '~' is new (sorted last).
    let text = std::fs::read_to_string(corpus()).unwrap().replace('e', "~");
    let other = dir.join("other.txt");
    std::fs::write(&other, &text).unwrap();
    let ck = run.join("model.safetensors");
    // SGD with a learning rate far below f32's resolution: the weights stay as initialised.
    let out2 = dir.join("out2");
    let out = charlm(&train_args(
        &other,
        &out2,
        1,
        &["--init", &s(&ck), "--optimizer", "sgd", "--lr", "1e-30", "--no-clip-norm"],
    ));
    assert_ok(&out, "--init with another vocabulary");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().filter(|l| l.contains("mapped by character")).count(), 1, "{err}");
    assert!(
        err.contains("30 kept, 1 new to the checkpoint start fresh, 1 not in the corpus dropped"),
        "{err}"
    );
    let (old, new) = (load_model(&ck).unwrap(), load_model(&out2.join("model.safetensors")).unwrap());
    assert_eq!(old.vocab.len(), new.vocab.len());
    for &c in new.vocab.chars() {
        let Some(i) = old.vocab.index_of(c) else { continue };
        let j = new.vocab.index_of(c).unwrap();
        let (a, b) = (&old.tensors.tensors["head.weight"].values, &new.tensors.tensors["head.weight"].values);
        for k in 0..a.ncols() {
            assert_eq!(a[(i, k)], b[(j, k)], "head row of {c:?}");
        }
        let (a, b) = (
            &old.tensors.tensors["rnn.weight_ih_l0"].values,
            &new.tensors.tensors["rnn.weight_ih_l0"].values,
        );
        for r in 0..a.nrows() {
            assert_eq!(a[(r, i)], b[(r, j)], "input column of {c:?}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Endless or enormous input: a corpus or text is read up to `--max-input-mib` (default 256),
/// checked while reading, so `/dev/zero` and a FIFO that never ends are a clear error. Before:
/// the program read until memory ran out.
#[test]
fn endless_input_stops_at_the_limit() {
    let dir = tmp("endless");
    let out = charlm(&train_args(Path::new("/dev/zero"), &dir.join("z"), 2, &["--max-input-mib", "1"]));
    assert_clean_failure(
        &out,
        "/dev/zero is larger than the limit of 1 MiB; pass a smaller file, or raise the limit",
    );
    // A FIFO whose writer never stops.
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!("exec yes 'to be or not to be' > {}", s(&fifo)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = charlm(&train_args(&fifo, &dir.join("f"), 2, &["--max-input-mib", "2"]));
    assert_clean_failure(&out, "is larger than the limit of 2 MiB");
    writer.kill().unwrap();
    writer.wait().unwrap();
    // Checkpoints are read as far as their header says: `/dev/zero` has a header of 0 bytes, the
    // endless FIFO one of 0x0a790a790a790a79 ("y\ny\n...") bytes.
    let out = charlm(&strings(&["sample", "--checkpoint", "/dev/zero"]));
    assert_clean_failure(&out, "not a valid safetensors file");
    let out = charlm(&train_args(&corpus(), &dir.join("i"), 2, &["--init", "/dev/zero"]));
    assert_clean_failure(&out, "not a valid safetensors file");
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!("exec yes > {}", s(&fifo)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = charlm(&strings(&["sample", "--checkpoint", &s(&fifo)]));
    assert_clean_failure(&out, "its header would be 754645927544294009 bytes");
    writer.kill().unwrap();
    writer.wait().unwrap();
    // A regular file over the limit, for eval; and the limit's own range.
    let big = dir.join("big.txt");
    std::fs::write(&big, "ab".repeat(600_000)).unwrap();
    let run = trained_run(&dir);
    let ck = s(&run.join("model.safetensors"));
    let out = charlm(&strings(&["eval", "--checkpoint", &ck, "--text", &s(&big), "--max-input-mib", "1"]));
    assert_clean_failure(&out, "big.txt is larger than the limit of 1 MiB");
    let out = charlm(&strings(&["eval", "--checkpoint", &ck, "--text", &s(&big), "--max-input-mib", "0"]));
    assert_clean_failure(&out, "invalid --max-input-mib: must be in 1..=1048576, got 0");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 16: `--checkpoint` of `sample` and `eval` takes a run directory and then uses its
/// `best.safetensors`; a directory without one is a one-line error naming the model file to
/// pass instead. `--resume A --out B` brings A's best model into B; `--overwrite` discards it.
#[test]
fn run_directories_serve_their_best_model() {
    let dir = tmp("best");
    let run = dir.join("run");
    assert_ok(&charlm(&train_args(&corpus(), &run, 6, &[])), "train");
    let best = run.join("best.safetensors");
    let meta = load_model(&best).unwrap().tensors.metadata;
    assert!(meta["step"].parse::<u64>().unwrap() <= 6 && meta["val_loss"].parse::<f64>().is_ok(), "{meta:?}");
    for cmd in [&["eval", "--text", &s(&corpus())][..], &["sample", "--length", "40", "--seed", "5"]] {
        let via_dir = charlm(&[strings(cmd), strings(&["--checkpoint", &s(&run)])].concat());
        let via_file = charlm(&[strings(cmd), strings(&["--checkpoint", &s(&best)])].concat());
        assert_ok(&via_dir, cmd[0]);
        assert!(!via_dir.stdout.is_empty() && via_dir.stdout == via_file.stdout, "{}", cmd[0]);
    }
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for cmd in [&["eval", "--text", &s(&corpus())][..], &["sample"]] {
        let out = charlm(&[strings(cmd), strings(&["--checkpoint", &s(&empty)])].concat());
        let line = assert_clean_failure(&out, "is a directory without best.safetensors");
        assert!(line.contains("model.safetensors") && !line.contains("  "), "{line}");
    }
    // Into another directory, the best model comes along. SGD with a learning rate far below
    // f32's resolution: the weights, hence the validation loss, never change, so no later
    // validation improves on the first and B's best model can only be A's, copied.
    let frozen = ["--optimizer", "sgd", "--lr", "1e-30", "--no-clip-norm"];
    let (a, b) = (dir.join("a"), dir.join("b"));
    assert_ok(&charlm(&train_args(&corpus(), &a, 4, &frozen)), "run A");
    let a_dir = s(&a);
    let b_args = [&frozen[..], &["--resume", &a_dir]].concat();
    assert_ok(&charlm(&train_args(&corpus(), &b, 8, &b_args)), "resume A into B");
    let (_, state) = charlm::resume::load_checkpoint(&b).unwrap();
    assert_eq!((state.best.unwrap().0, state.since_best), (2, 3));
    assert!(
        std::fs::read(a.join("best.safetensors")).unwrap()
            == std::fs::read(b.join("best.safetensors")).unwrap()
    );
    // --overwrite starts over without the old best model (this run has no validation text, so
    // it writes none).
    assert_ok(&charlm(&train_args(&corpus(), &run, 1, &["--overwrite", "--val-frac", "0"])), "overwrite");
    assert!(!best.exists() && run.join("model.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--time-limit` (0.001 minutes on a run of a million steps) ends `charlm train` early and
/// successfully, saying so, with both models written; `--resume` continues it to the same model
/// file, byte for byte, as a run that never stopped. `--patience` without validation text is a
/// one-line error.
#[test]
fn time_limit_stops_cleanly_and_resumes() {
    let dir = tmp("time");
    let run = dir.join("run");
    let out = charlm(&train_args(&corpus(), &run, 1_000_000, &["--time-limit", "0.001"]));
    assert_ok(&out, "a time-limited run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stopped early (--time-limit); continue with --resume"), "{stdout}");
    let (_, state) = charlm::resume::load_checkpoint(&run).unwrap();
    assert!(state.step < 1_000_000 && run.join("best.safetensors").exists(), "{}", state.step);
    let end = state.step + 3;
    let mut resume = train_args(&corpus(), &run, end, &["--resume", &s(&run)]);
    let i = resume.iter().position(|a| a == "--steps").unwrap();
    resume[i + 1] = end.to_string();
    assert_ok(&charlm(&resume), "resume");
    let whole = dir.join("whole");
    assert_ok(&charlm(&train_args(&corpus(), &whole, end, &[])), "whole run");
    assert!(
        std::fs::read(whole.join("model.safetensors")).unwrap()
            == std::fs::read(run.join("model.safetensors")).unwrap()
    );
    // Refused before anything is replaced, even with --overwrite.
    let before = snapshot(&run);
    let out = charlm(&train_args(&corpus(), &run, 4, &["--patience", "2", "--val-frac", "0", "--overwrite"]));
    assert_clean_failure(
        &out,
        "invalid --patience: counts validations, but the corpus has no validation text",
    );
    assert!(snapshot(&run) == before, "a refused run changed the directory");
    std::fs::remove_dir_all(&dir).unwrap();
}
