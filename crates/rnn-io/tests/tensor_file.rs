//! Round trips bit for bit, the metadata, every error as one line naming what is wrong, and
//! damaged bytes that give errors, never panics.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rnn_io::{write_atomic, IoError, Tensor, TensorData, TensorFile, DATA_CRC32};
use rnn_tensor::Mat;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rnn-io-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Awkward values of every dtype: signed zeros, subnormals, extremes, NaN payloads.
fn sample() -> TensorFile {
    let f32s = vec![0.0f32, -0.0, f32::MIN_POSITIVE / 3.0, f32::MAX, -1.5, f32::from_bits(0x7fc0_1234)];
    let f64s = vec![1e-310, -0.0, f64::MAX, std::f64::consts::PI, f64::from_bits(0x7ff8_0000_dead_beef), 2.0];
    TensorFile::new()
        .with_tensor("a.f32", Tensor::new(vec![2, 3], TensorData::F32(f32s)))
        .with_tensor("b.f64", Tensor::new(vec![3, 1, 2], TensorData::F64(f64s)))
        .with_tensor("c.i64", Tensor::new(vec![4], TensorData::I64(vec![i64::MIN, -1, 0, i64::MAX])))
        .with_tensor("d.scalar", Tensor::new(vec![], TensorData::F64(vec![7.0])))
        .with_tensor("e.empty", Tensor::new(vec![0, 5], TensorData::F32(vec![])))
        .with_metadata("format", "test")
        .with_metadata("vocab", "[\"a\",\"\\n\"]")
}

/// The bits of every value, so that NaNs and signed zeros compare exactly.
fn bits(f: &TensorFile) -> Vec<(String, Vec<usize>, Vec<u64>)> {
    f.tensors
        .iter()
        .map(|(n, t)| {
            let b = match &t.data {
                TensorData::F32(v) => v.iter().map(|x| x.to_bits() as u64).collect(),
                TensorData::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
                TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
            };
            (n.clone(), t.shape.clone(), b)
        })
        .collect()
}

fn one_line(e: &IoError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "not one line: {s}");
    s
}

#[test]
fn every_dtype_round_trips_bit_for_bit_with_its_metadata() {
    let dir = tmp("roundtrip");
    let path = dir.join("t.safetensors");
    let f = sample();
    f.write(&path).unwrap();
    let back = TensorFile::read(&path).unwrap();
    assert_eq!(bits(&back), bits(&f));
    assert_eq!(back.path, path);
    assert_eq!(back.metadata["format"], "test");
    assert_eq!(back.metadata["vocab"], "[\"a\",\"\\n\"]");
    assert_eq!(back.metadata.len(), 3, "format, vocab and {DATA_CRC32}");
    // The same tensors give the same bytes, read back or not.
    assert_eq!(back.to_bytes().unwrap(), f.to_bytes().unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), f.to_bytes().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn matrices_go_in_column_major_and_come_out_the_same() {
    let m = Mat::from_fn(3, 4, |i, j| (10 * i + j) as f64);
    let f = TensorFile::new()
        .with_tensor("m", Tensor::from_mat(&m))
        .with_tensor("bias", Tensor::from_mat(&Mat::from_fn(3, 1, |i, _| i as f32)).with_shape(vec![3]));
    let back = TensorFile::from_bytes("mem", &f.to_bytes().unwrap()).unwrap();
    assert_eq!(back.tensors["m"].shape, [3, 4]);
    // Row-major in the file, as PyTorch stores it.
    assert_eq!(back.floats::<f64>("m").unwrap()[..5], [0.0, 1.0, 2.0, 3.0, 10.0]);
    assert_eq!(back.matrix::<f64>("m").unwrap(), m);
    assert_eq!(back.matrix::<f32>("bias").unwrap(), Mat::from_fn(3, 1, |i, _| i as f32));
    // F32 into f64 and back is exact.
    assert_eq!(back.tensors["bias"].dtype(), rnn_io::Dtype::F32);
}

#[test]
fn reading_errors_are_one_line_naming_the_file_and_the_tensor() {
    let dir = tmp("errors");
    let f = sample();
    let bytes = f.to_bytes().unwrap();
    let mem = TensorFile::from_bytes("m.safetensors", &bytes).unwrap();
    let cases: Vec<(IoError, &[&str])> = vec![
        (
            TensorFile::read(dir.join("none.safetensors")).unwrap_err(),
            &["none.safetensors", "cannot read it"],
        ),
        (
            TensorFile::from_bytes("x.bin", b"hello, world").unwrap_err(),
            &["x.bin", "not a valid safetensors file"],
        ),
        (TensorFile::from_bytes("cut.st", &bytes[..bytes.len() - 1]).unwrap_err(), &["cut.st", "truncated"]),
        (mem.get("nope").unwrap_err(), &["m.safetensors", "no tensor nope", "a.f32"]),
        (mem.floats::<f32>("c.i64").unwrap_err(), &["m.safetensors", "tensor c.i64 is I64"]),
        (mem.ints("b.f64").unwrap_err(), &["tensor b.f64 is F64; expected I64"]),
        (mem.matrix::<f64>("b.f64").unwrap_err(), &["tensor b.f64 has shape [3, 1, 2]", "1 or 2 dimensions"]),
        (mem.check_finite().unwrap_err(), &["tensor a.f32 holds a non-finite value (NaN) at flat index 5"]),
    ];
    for (e, wants) in &cases {
        let s = one_line(e);
        for w in *wants {
            assert!(s.contains(w), "{s:?} lacks {w:?}");
        }
    }
    // Damage to the tensor bytes: the CRC says so.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 30] ^= 0x10;
    let s = one_line(&TensorFile::from_bytes("flip.st", &flipped).unwrap_err());
    assert!(s.starts_with("flip.st: the tensor data is corrupted (CRC-32"), "{s}");
    // A dtype this crate does not read, written by the safetensors crate itself.
    let bytes = safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![2], &[0, 0]).unwrap();
    let u8s = safetensors::serialize([("w_u8", bytes)], None).unwrap();
    let s = one_line(&TensorFile::from_bytes("u.st", &u8s).unwrap_err());
    assert!(
        s.contains(
            "tensor w_u8 has dtype U8, which is not read here (F32, F64, I64, and F16 or BF16 as F32)"
        ),
        "{s}"
    );
    // The lenient reader keeps that file's other tensors and names the unread one when asked.
    let w = 1.5f32.to_le_bytes();
    let (mask, weight) = (
        safetensors::tensor::TensorView::new(safetensors::Dtype::BOOL, vec![2], &[0, 1]).unwrap(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &w).unwrap(),
    );
    let both = safetensors::serialize([("mask", mask), ("weight", weight)], None).unwrap();
    assert!(TensorFile::from_bytes("m.st", &both).is_err());
    let any = TensorFile::from_bytes_any("m.st", &both).unwrap();
    assert_eq!(any.floats::<f32>("weight").unwrap(), [1.5]);
    assert_eq!(any.names(), ["mask", "weight"]);
    assert_eq!(any.unread.iter().collect::<Vec<_>>(), [(&"mask".to_string(), &"BOOL".to_string())]);
    let s = one_line(&any.floats::<f32>("mask").unwrap_err());
    assert_eq!(
        s,
        "m.st: tensor mask has dtype BOOL, which is not read here (F32, F64, I64, and F16 or BF16 as F32); convert it before saving"
    );
    // A tensor that is not there: the error lists every name, the unread ones too.
    let s = one_line(&any.get("bias").unwrap_err());
    assert_eq!(s, "m.st: has no tensor bias (its tensors: mask, weight)");
    // Writing it back keeps what was read.
    let back = TensorFile::from_bytes("b.st", &any.to_bytes().unwrap()).unwrap();
    assert_eq!(back.names(), ["weight"]);
    // The format is checked as strictly: a BOOL tensor one byte short is an error.
    let short = safetensors::tensor::TensorView::new(safetensors::Dtype::BOOL, vec![2], &[0, 1]).unwrap();
    let mut short = safetensors::serialize([("mask", short)], None).unwrap();
    short.pop();
    assert!(TensorFile::from_bytes_any("s.st", &short).is_err());
    // Half precision one byte short: the size check names it.
    let odd = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2], &[0, 0, 0, 0]).unwrap();
    let mut odd = safetensors::serialize([("w_half", odd)], None).unwrap();
    odd.pop();
    assert!(TensorFile::from_bytes("o.st", &odd).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `torch.float16` and `torch.bfloat16` tensors (a model saved in half precision), written by
/// the safetensors crate, read as the `f32`s of their values: `1, -2, 65504` and the smallest
/// subnormal of f16, `1, -3, 2⁻¹³³` (a subnormal) and `3.390625` of bf16.
#[test]
fn half_precision_reads_as_its_f32_values() {
    let f16: [u16; 4] = [0x3c00, 0xc000, 0x7bff, 0x0001];
    let bf16: [u16; 4] = [0x3f80, 0xc040, 0x0001, 0x4059];
    let le = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (a, b) = (le(&f16), le(&bf16));
    let view = |d, bytes| safetensors::tensor::TensorView::new(d, vec![2, 2], bytes).unwrap();
    let st = safetensors::serialize(
        [("h", view(safetensors::Dtype::F16, &a[..])), ("b", view(safetensors::Dtype::BF16, &b[..]))],
        None,
    )
    .unwrap();
    let f = TensorFile::from_bytes("half.st", &st).unwrap();
    assert_eq!(f.tensors["h"].shape, vec![2, 2]);
    assert_eq!(f.tensors["h"].data, TensorData::F32(vec![1.0, -2.0, 65504.0, 2f32.powi(-24)]));
    assert_eq!(f.tensors["b"].data, TensorData::F32(vec![1.0, -3.0, f32::from_bits(1 << 16), 3.390625]));
    // Taken out as either float type, exactly.
    assert_eq!(f.floats::<f64>("h").unwrap()[3], 2f64.powi(-24));
}

#[test]
fn writing_errors_name_the_tensor_or_the_file_and_keep_the_old_file() {
    let bad_shape =
        TensorFile::new().with_tensor("w", Tensor::new(vec![2, 2], TensorData::F32(vec![1.0; 3])));
    let s = one_line(&bad_shape.to_bytes().unwrap_err());
    assert_eq!(s, "cannot encode tensor w: shape [2, 2] does not hold its 3 values");
    let overflow =
        TensorFile::new().with_tensor("w", Tensor::new(vec![usize::MAX, 3], TensorData::F32(vec![])));
    assert!(one_line(&overflow.to_bytes().unwrap_err()).contains("does not hold"));
    let reserved = TensorFile::new().with_tensor("__metadata__", Tensor::vector(&[1.0f32]));
    assert!(one_line(&reserved.to_bytes().unwrap_err()).contains("reserved"));

    let s = one_line(&write_atomic(Path::new("/nonexistent/dir/m.safetensors"), b"x").unwrap_err());
    assert!(s.starts_with("cannot write /nonexistent/dir/m.safetensors: ") && s.ends_with("writable"), "{s}");
    // A failed encode leaves the file that was there.
    let dir = tmp("keep");
    let path = dir.join("keep.safetensors");
    sample().write(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    assert!(bad_shape.write(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A header that claims a huge tensor, or sizes that overflow, is an error without allocating.
#[test]
fn hostile_headers_are_errors() {
    let header = |h: &str| {
        let mut h = h.as_bytes().to_vec();
        h.resize(h.len().next_multiple_of(8), b' ');
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out
    };
    for (h, extra) in [
        (r#"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#, 16),
        (r#"{"w":{"dtype":"F64","shape":[1000000000000],"data_offsets":[0,8000000000000]}}"#, 8),
        (r#"{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#, 8),
    ] {
        let mut bytes = header(h);
        bytes.extend(std::iter::repeat_n(0u8, extra));
        one_line(&TensorFile::from_bytes("hostile", &bytes).unwrap_err());
    }
    let mut huge_len = u64::MAX.to_le_bytes().to_vec();
    huge_len.extend_from_slice(b"{}");
    one_line(&TensorFile::from_bytes("hostile", &huge_len).unwrap_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random byte changes and cuts give a file or a one-line error, never a panic.
    #[test]
    fn damaged_bytes_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        let mut bytes = sample().to_bytes().unwrap();
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        match TensorFile::from_bytes("fuzz", &bytes) {
            Ok(f) => {
                let _ = f.check_finite();
                for name in f.tensors.keys() {
                    let _ = f.matrix::<f32>(name);
                }
            }
            Err(e) => { one_line(&e); }
        }
    }
}
