//! Model files and training states: round trips, the PyTorch layout, every way a file can be
//! bad, and the two-file commit.

use std::path::{Path, PathBuf};

use charlm::checkpoint::{
    assign_tensors, check_tensors, decode_model, encode_model, encode_tensors, load_model, model_metadata,
    read_tensors, save_model, write_atomic, TensorList,
};
use charlm::resume::{
    load_checkpoint, read_checkpoint, save_checkpoint, TrainState, ARRAYS_FILE, MODEL_FILE, STATE_FILE,
};
use charlm::{CellKind, DType, ModelConfig};
use rnn_data::{BatcherPosition, Vocab};
use rnn_optim::OptimState;
use rnn_tensor::{Mat, Parameters, Rng, Scalar};

fn tmp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("charlm-ckpt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small(cell: CellKind) -> (ModelConfig, Vocab) {
    let vocab = Vocab::from_text("hello, world\n");
    (ModelConfig::new(vocab.len()).with_cell(cell).with_hidden(5).with_layers(2), vocab)
}

fn round_trip<T: Scalar>(cell: CellKind) {
    let dir = tmp_dir(&format!("rt-{cell}-{}", T::NAME));
    let (config, vocab) = small(cell);
    let params = TensorList::<T>::init(&config, &mut Rng::seed_from(1));
    let path = dir.join("m.safetensors");
    save_model(&path, &config, &vocab, &params.named_params()).unwrap();
    let file = load_model(&path).unwrap();
    assert_eq!((&file.config, file.dtype, &file.vocab), (&config, DType::of::<T>(), &vocab));
    let mut back = TensorList::<T>::init(&config, &mut Rng::seed_from(2));
    assert_ne!(back, params);
    assign_tensors(&path, &file.tensors, back.named_params_mut()).unwrap();
    assert_eq!(back, params); // bit-identical
                              // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_files_round_trip_bit_identically() {
    for cell in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        round_trip::<f32>(cell);
        round_trip::<f64>(cell);
    }
}

/// The head dropout is in the metadata when set (and read back), and absent when 0, so that
/// the files of models without it are as they were; a value that is not a number is a one-line
/// error.
#[test]
fn head_dropout_is_kept_only_when_set() {
    let (config, vocab) = small(CellKind::Lstm);
    assert!(!model_metadata(&config, DType::F32, &vocab).contains_key("head_dropout"));
    let with = config.clone().with_head_dropout(0.25);
    let meta = model_metadata(&with, DType::F32, &vocab);
    assert_eq!(meta.get("head_dropout").map(String::as_str), Some("0.25"));
    let params = TensorList::<f32>::init(&with, &mut Rng::seed_from(1));
    let bytes = encode_tensors(&params.named_params(), meta.clone()).unwrap();
    let dir = tmp_dir("head-dropout");
    let path = dir.join("m.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(load_model(&path).unwrap().config, with);
    let mut bad = meta;
    bad.insert("head_dropout".into(), "lots".into());
    std::fs::write(&path, encode_tensors(&params.named_params(), bad).unwrap()).unwrap();
    let e = load_model(&path).unwrap_err().to_string();
    assert!(e.contains("head_dropout") && !e.contains('\n'), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tensors_are_stored_row_major_with_1d_biases() {
    let w = Mat::from_row_slice(2, 3, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = Mat::from_column_slice(2, 1, &[7.0f32, 8.0]);
    let bytes =
        encode_tensors(&[("x.weight".into(), &w), ("x.bias".into(), &b)], Default::default()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let wv = st.tensor("x.weight").unwrap();
    assert_eq!(wv.shape(), &[2, 3]);
    let vals: Vec<f32> = wv.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(vals, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(st.tensor("x.bias").unwrap().shape(), &[2]);
    // And back to column-major.
    let file = charlm::checkpoint::decode_tensors(Path::new("mem"), &bytes).unwrap();
    assert_eq!(file.tensors["x.weight"].values, w.map(f64::from));
    assert_eq!(file.dtype, DType::F32);
}

fn err_of(bytes: &[u8]) -> String {
    decode_model(Path::new("ck.safetensors"), bytes).unwrap_err().to_string()
}

fn assert_one_line(e: &str, needle: &str) {
    assert!(e.contains(needle), "{e:?} should mention {needle:?}");
    assert!(!e.contains('\n'), "{e:?} is more than one line");
    assert!(e.starts_with("checkpoint ck.safetensors: "), "{e}");
}

#[test]
fn bad_files_get_one_line_errors() {
    let (config, vocab) = small(CellKind::Lstm);
    let params = TensorList::<f32>::init(&config, &mut Rng::seed_from(3));
    let good = encode_model(&config, &vocab, &params.named_params()).unwrap();
    assert!(decode_model(Path::new("ck.safetensors"), &good).is_ok());

    // Truncated anywhere: in the length, the header or the data.
    for cut in [0, 5, 20, good.len() / 2, good.len() - 1] {
        assert_one_line(&err_of(&good[..cut]), "not a valid safetensors file");
    }
    // A flipped bit in the tensor data: caught by the CRC.
    let mut bad = good.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x10;
    assert_one_line(&err_of(&bad), "tensor data is corrupted");
    // Damage in the header JSON.
    let mut bad = good.clone();
    bad[9] = b'#';
    assert_one_line(&err_of(&bad), "not a valid safetensors file");

    // A missing tensor.
    let mut fewer = params.clone();
    fewer.tensors.retain(|(n, _)| n != "rnn.bias_hh_l1");
    let bytes = encode_model(&config, &vocab, &fewer.named_params()).unwrap();
    assert_one_line(&err_of(&bytes), "missing tensor(s) rnn.bias_hh_l1");
    // A wrong shape.
    let mut wrong = params.clone();
    wrong.tensors[1].1 = Mat::zeros(20, 4);
    let bytes = encode_model(&config, &vocab, &wrong.named_params()).unwrap();
    assert_one_line(
        &err_of(&bytes),
        "rnn.weight_hh_l0 has shape [20, 4], the model (lstm V=10 H=5 L=2) needs [20, 5]",
    );
    // Tensors of another configuration (the metadata says GRU).
    let gru = ModelConfig { cell: CellKind::Gru, ..config.clone() };
    let bytes = encode_tensors(&params.named_params(), model_metadata(&gru, DType::F32, &vocab)).unwrap();
    assert_one_line(&err_of(&bytes), "has shape [20, 10], the model (gru V=10 H=5 L=2) needs [15, 10]");
    // A dtype that disagrees with the metadata.
    let bytes = encode_tensors(&params.named_params(), model_metadata(&config, DType::F64, &vocab)).unwrap();
    assert_one_line(&err_of(&bytes), "the metadata says f64 but the tensors are f32");
    // A vocabulary that disagrees with vocab_size, and a damaged vocabulary.
    let mut meta = model_metadata(&config, DType::F32, &vocab);
    meta.insert("vocab".into(), r#"["a","b"]"#.into());
    assert_one_line(
        &err_of(&encode_tensors(&params.named_params(), meta.clone()).unwrap()),
        "vocabulary has 2",
    );
    meta.insert("vocab".into(), r#"["b","a"]"#.into());
    assert_one_line(
        &err_of(&encode_tensors(&params.named_params(), meta.clone()).unwrap()),
        "bad vocabulary",
    );
    // No metadata at all (a weights-only file).
    let bytes = encode_tensors(&params.named_params(), Default::default()).unwrap();
    assert_one_line(&err_of(&bytes), "--init");
    // A non-finite weight.
    let mut nan = params.clone();
    nan.tensors[0].1[(1, 2)] = f32::NAN;
    let bytes = encode_model(&config, &vocab, &nan.named_params()).unwrap();
    assert_one_line(&err_of(&bytes), "tensor rnn.weight_ih_l0 holds a non-finite value (NaN)");
    // An unsupported dtype (F16 and BF16 are read as F32).
    let bools = safetensors::tensor::TensorView::new(safetensors::Dtype::BOOL, vec![2], &[0, 1]).unwrap();
    let bytes = safetensors::serialize([("w", bools)], None).unwrap();
    assert_one_line(&err_of(&bytes), "dtype BOOL, which is not read here");
    // A missing file.
    let e = load_model(Path::new("/nonexistent/ck.safetensors")).unwrap_err().to_string();
    assert!(e.contains("cannot read it"), "{e}");
}

#[test]
fn weights_only_files_are_checked_against_the_model() {
    let (config, _) = small(CellKind::Gru);
    let params = TensorList::<f64>::init(&config, &mut Rng::seed_from(4));
    let dir = tmp_dir("init");
    let path = dir.join("w.safetensors");
    write_atomic(&path, &encode_tensors(&params.named_params(), Default::default()).unwrap()).unwrap();
    let file = read_tensors(&path).unwrap();
    check_tensors(&path, &file, &config).unwrap();
    let bigger = config.clone().with_hidden(6);
    let e = check_tensors(&path, &file, &bigger).unwrap_err().to_string();
    assert!(e.contains("needs [18, 10]"), "{e}");
    let three = config.clone().with_layers(3);
    let e = check_tensors(&path, &file, &three).unwrap_err().to_string();
    assert!(e.contains("missing tensor(s) rnn.weight_ih_l2"), "{e}");
    let mut target = TensorList::<f64>::init(&three, &mut Rng::seed_from(0));
    assert!(assign_tensors(&path, &file, target.named_params_mut()).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_targets_are_clean_errors() {
    let e = write_atomic(Path::new("/nonexistent/dir/m.safetensors"), b"x").unwrap_err().to_string();
    assert!(e.starts_with("cannot write /nonexistent/dir/m.safetensors"), "{e}");
}

fn state(step: u64) -> TrainState {
    let mut optimizer = OptimState { kind: "adam".into(), step, ..Default::default() };
    optimizer.scalars.insert("lr".into(), 2e-3);
    optimizer.buffers.insert("head.bias/exp_avg".into(), vec![0.1, -0.0, 5e-324, 1e300, -3.25]);
    TrainState {
        model_crc32: 0,
        step,
        batcher_kind: "windows".into(),
        batcher: BatcherPosition { epoch: 2, batch: 7, rng: Some(Rng::seed_from(8).state()) },
        rng: {
            let mut r = Rng::seed_from(9);
            r.next_u64();
            r.state()
        },
        optimizer,
        carry: vec![Mat::from_fn(3, 2, |i, j| 0.1 * i as f64 - j as f64 / 3.0)],
        settings: [("seq_len".to_string(), "50".to_string())].into(),
        train_loss: vec![(1, 4.1), (2, 3.9)],
        val_loss: vec![(2, 3.95)],
        best: Some((2, 3.950000000000001)),
        since_best: 3,
    }
}

/// The version 2 JSON of a state (one file, the arrays as hex), as charlm wrote it before
/// version 3 moved the arrays into `train_state.safetensors`.
fn v2_json(s: &TrainState) -> String {
    let hex = |v: &[f64]| v.iter().map(|x| format!("{:016x}", x.to_bits())).collect::<String>();
    let (json, _) = s.to_files().unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["version"] = 2.into();
    v.as_object_mut().unwrap().remove("arrays");
    v["optimizer"]["buffers"] = s
        .optimizer
        .buffers
        .iter()
        .map(|(k, b)| (k.clone(), serde_json::Value::from(hex(b))))
        .collect::<serde_json::Map<_, _>>()
        .into();
    v["carry"] = s
        .carry
        .iter()
        .map(|m| serde_json::json!({ "rows": m.nrows(), "cols": m.ncols(), "data": hex(m.as_slice()) }))
        .collect();
    v.to_string()
}

#[test]
fn train_state_round_trips_exactly() {
    let s = state(12);
    let (json, arrays) = s.to_files().unwrap();
    let back = TrainState::from_files(&json, Some(&arrays)).unwrap();
    assert_eq!(back, s);
    // Bits, not just values: -0.0 and the smallest subnormal survive.
    let b = &back.optimizer.buffers["head.bias/exp_avg"];
    assert_eq!(b[1].to_bits(), (-0.0f64).to_bits());
    assert_eq!(b[2].to_bits(), 1);
    assert_eq!(back.best.unwrap().1.to_bits(), 3.950000000000001f64.to_bits());
    // The same state gives the same files.
    assert_eq!(back.to_files().unwrap(), (json.clone(), arrays.clone()));
    // An f32 model's state (every value an f32) is stored as F32, half the bytes, still exact.
    let mut narrow = state(12);
    let b32 = vec![0.1f32 as f64, -0.0, f32::MIN_POSITIVE as f64 / 8.0, f32::MAX as f64];
    narrow.optimizer.buffers.insert("head.bias/exp_avg".into(), b32);
    narrow.carry = vec![Mat::from_fn(3, 2, |i, j| (i as f32 * 0.3 - j as f32) as f64)];
    let (nj, na) = narrow.to_files().unwrap();
    assert_eq!(TrainState::from_files(&nj, Some(&na)).unwrap(), narrow);
    let file = rnn_io::TensorFile::from_bytes("arrays", &na).unwrap();
    assert!(file.tensors.values().all(|t| t.dtype() == rnn_io::Dtype::F32), "{file:?}");
    let file = rnn_io::TensorFile::from_bytes("arrays", &arrays).unwrap();
    assert!(file.tensors.values().all(|t| t.dtype() == rnn_io::Dtype::F64), "{file:?}");
    for bad in [
        "",
        "{}",
        &json[..50],
        &json.replace("\"version\":3", "\"version\":4"),
        &json.replace("\"since_best\":3", "\"since_best\":-1"),
        &json.replace("\"file\":\"train_state.safetensors\"", "\"file\":\"../elsewhere\""),
    ] {
        assert!(TrainState::from_files(bad, Some(&arrays)).is_err(), "{bad}");
    }
    // Arrays that are not the JSON's: missing, another state's, damaged.
    let (_, other) = state(13).to_files().unwrap();
    let mut flipped = arrays.clone();
    let n = flipped.len();
    flipped[n - 3] ^= 4;
    for (arrays, says) in [
        (None, "needs its arrays file"),
        (Some(&other[..]), "from different checkpoints"),
        (Some(&flipped[..]), "from different checkpoints"),
    ] {
        let e = TrainState::from_files(&json, arrays).unwrap_err();
        assert!(e.contains(says) && !e.contains('\n'), "{e}");
    }
    // Versions 2 and 1 (one JSON file, hex arrays) are read; version 1 knows no best.
    let v2 = v2_json(&s);
    assert_eq!(TrainState::from_json(&v2).unwrap(), s);
    let v1 = v2.replace("\"version\":2", "\"version\":1");
    let old = TrainState::from_json(&v1).unwrap();
    assert_eq!((old.best, old.since_best), (None, 0));
    assert_eq!(TrainState { best: s.best, since_best: 3, ..old }, s);
    // The state is small; the arrays are binary, 8 bytes a value plus the header.
    assert!(json.len() < 1000 && !json.contains("exp_avg"), "{json}");
}

/// A state's files as a commit interrupted at some point leaves them: `json` written as
/// `train_state.json.next`, `arrays` as `train_state.safetensors.next`.
fn pending(dir: &Path, s: &TrainState) {
    let (json, arrays) = s.to_files().unwrap();
    std::fs::write(dir.join("train_state.safetensors.next"), arrays).unwrap();
    std::fs::write(dir.join("train_state.json.next"), json).unwrap();
}

#[test]
fn interrupted_commits_leave_a_consistent_pair() {
    let dir = tmp_dir("commit");
    let (mut s1, mut s2) = (state(1), state(2));
    save_checkpoint(&dir, b"model one", &mut s1).unwrap();
    let (m, s) = load_checkpoint(&dir).unwrap();
    assert_eq!((m.as_slice(), s.step), (&b"model one"[..], 1));
    let names = |d: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&dir), [MODEL_FILE, STATE_FILE, ARRAYS_FILE]);

    // Killed after writing the next state and arrays but before the model's rename: the old
    // pair stands, and the pending files go.
    s2.model_crc32 = crc32fast::hash(b"model two");
    pending(&dir, &s2);
    let (m, s) = load_checkpoint(&dir).unwrap();
    assert_eq!((m.as_slice(), s.step), (&b"model one"[..], 1));
    assert_eq!(names(&dir), [MODEL_FILE, STATE_FILE, ARRAYS_FILE]);
    // Killed after the next arrays only: the same.
    let (_, arrays2) = s2.to_files().unwrap();
    std::fs::write(dir.join("train_state.safetensors.next"), &arrays2).unwrap();
    assert_eq!(load_checkpoint(&dir).unwrap().1, s1);

    // Killed after the model's rename, before the arrays' and the state's: the new pair is
    // completed.
    pending(&dir, &s2);
    write_atomic(&dir.join(MODEL_FILE), b"model two").unwrap();
    let (m, s) = load_checkpoint(&dir).unwrap();
    assert_eq!((m.as_slice(), s.step), (&b"model two"[..], 2));
    assert_eq!(names(&dir), [MODEL_FILE, STATE_FILE, ARRAYS_FILE]);
    // Killed after the arrays' rename, before the state's: the same.
    let mut s3 = state(3);
    s3.model_crc32 = crc32fast::hash(b"model three");
    pending(&dir, &s3);
    write_atomic(&dir.join(MODEL_FILE), b"model three").unwrap();
    std::fs::rename(dir.join("train_state.safetensors.next"), dir.join(ARRAYS_FILE)).unwrap();
    // Reading without settling (the source of --resume A --out B) finds it and changes nothing.
    assert_eq!(read_checkpoint(&dir).unwrap().1.step, 3);
    assert!(dir.join("train_state.json.next").exists());
    let (m, s) = load_checkpoint(&dir).unwrap();
    assert_eq!((m.as_slice(), s.step), (&b"model three"[..], 3));
    assert_eq!(names(&dir), [MODEL_FILE, STATE_FILE, ARRAYS_FILE]);

    // A state with another state's arrays (a torn copy) is refused, in one line.
    std::fs::write(dir.join(ARRAYS_FILE), &arrays2).unwrap();
    let e = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(
        e.contains("from different checkpoints; restore the run directory whole") && !e.contains('\n'),
        "{e}"
    );
    std::fs::remove_file(dir.join(ARRAYS_FILE)).unwrap();
    let e = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(e.contains("train_state.safetensors, which cannot be read"), "{e}");

    // Files from different runs are refused.
    save_checkpoint(&dir, b"model three", &mut s3).unwrap();
    write_atomic(&dir.join(MODEL_FILE), b"model four").unwrap();
    let e = load_checkpoint(&dir).unwrap_err().to_string();
    assert!(e.contains("different runs"), "{e}");
    std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
    assert!(load_checkpoint(&dir).unwrap_err().to_string().contains("cannot read it"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run directory of version 2 (one `train_state.json`, no arrays file) resumes, and its next
/// commit writes version 3.
#[test]
fn version_2_run_directories_load() {
    let dir = tmp_dir("v2dir");
    let mut s = state(4);
    s.model_crc32 = crc32fast::hash(b"model");
    write_atomic(&dir.join(MODEL_FILE), b"model").unwrap();
    std::fs::write(dir.join(STATE_FILE), v2_json(&s)).unwrap();
    assert_eq!(load_checkpoint(&dir).unwrap().1, s);
    save_checkpoint(&dir, b"model", &mut s).unwrap();
    assert!(std::fs::read_to_string(dir.join(STATE_FILE)).unwrap().contains("\"version\":3"));
    assert_eq!(load_checkpoint(&dir).unwrap().1, s);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tools/load_checkpoint.py` rebuilds the PyTorch module and loads the file with
/// `load_state_dict(strict=True)`. Runs when python3 with torch and safetensors is available
/// (it is on the project's machines); prints a note and returns otherwise.
#[test]
fn pytorch_loads_the_checkpoint_strictly() {
    let probe = std::process::Command::new("python3").args(["-c", "import torch, safetensors"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!(
            "note: python3 with torch and safetensors is not available; skipping the PyTorch load test"
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/load_checkpoint.py");
    let dir = tmp_dir("torch");
    for (cell, f64_) in [(CellKind::Lstm, false), (CellKind::Gru, true), (CellKind::Rnn, false)] {
        let (config, vocab) = small(cell);
        let path = dir.join(format!("{cell}.safetensors"));
        if f64_ {
            save_model(
                &path,
                &config,
                &vocab,
                &TensorList::<f64>::init(&config, &mut Rng::seed_from(5)).named_params(),
            )
        } else {
            save_model(
                &path,
                &config,
                &vocab,
                &TensorList::<f32>::init(&config, &mut Rng::seed_from(5)).named_params(),
            )
        }
        .unwrap();
        let out = std::process::Command::new("python3").arg(&script).arg(&path).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cell}: {}{}", stdout, String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("strict load_state_dict OK"), "{stdout}");
    }
    // A corrupted file is refused by the script too.
    let path = dir.join("lstm.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let out = std::process::Command::new("python3").arg(&script).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CRC-32"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The fuzz seeds of the training-state loader (versions 1, 2 and 3) load and round-trip, so
/// the fuzzer starts from valid states of every version. A version 3 seed is the JSON, a zero
/// byte, then the arrays file (the input the fuzz target splits).
#[test]
fn fuzz_seeds_of_every_state_version_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/train_state");
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (text, arrays) = match bytes.iter().position(|&b| b == 0) {
            Some(at) => (std::str::from_utf8(&bytes[..at]).unwrap(), Some(&bytes[at + 1..])),
            None => (std::str::from_utf8(&bytes).unwrap(), None),
        };
        let s = TrainState::from_files(text, arrays).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (json, arrays) = s.to_files().unwrap();
        assert_eq!(TrainState::from_files(&json, Some(&arrays)).unwrap(), s);
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        versions.push((v["version"].as_u64().unwrap(), s.best.is_some()));
    }
    versions.sort();
    assert_eq!(versions, [(1, false), (1, false), (2, true), (2, true), (3, true), (3, true)]);
}
