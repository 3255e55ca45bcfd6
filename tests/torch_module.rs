//! `examples/torch_module.rs` against PyTorch: each case of `tests/fixtures/torch_module/` (from
//! `tools/gen_torch_module_fixtures.py`) holds a module's `state_dict`, its inputs and what
//! PyTorch computed; the program must write the same tensors, within a relative error of 1e-10
//! in float64 and 1e-4 in float32. Bad input is one line (the program prints it and exits with
//! code 1) and writes nothing: named cases, and every tensor of two cases' files broken in turn.
//! The program's code runs in-process, from the file the example includes.

#[path = "../examples/common/torch_module.rs"]
mod torch_module;

use std::path::{Path, PathBuf};

use rnn::io::{Dtype, TensorData, TensorFile};
use rnn::tensor::gradcheck::rel_error;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_module").join(case)
}

/// A file's tensors, by name: dtype, shape, values as f64.
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<f64>)>;

fn read(path: &Path) -> Tensors {
    let file = TensorFile::read(path).unwrap_or_else(|e| panic!("{e}"));
    let tensors = file.tensors.iter();
    tensors.map(|(n, t)| (n.clone(), t.dtype(), t.shape.clone(), file.floats(n).unwrap())).collect()
}

/// Runs the program on `args`.
fn cli(args: &[&str]) -> torch_module::Result<()> {
    torch_module::cli(args.iter().map(|s| s.to_string()))
}

/// Runs the program on module file `m` and input file `i`, writing `out`, with `flags`.
fn cli_on(m: &Path, i: &Path, out: &Path, flags: &[&str]) -> torch_module::Result<()> {
    let paths = [m, i, out].map(|p| p.to_str().unwrap());
    let mut args = vec!["--module", paths[0], "--input", paths[1], "--output", paths[2]];
    args.extend_from_slice(flags);
    cli(&args)
}

/// A scratch `.safetensors` path of this process for test `test`, named `what`.
fn scratch(test: &str, what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rnn_tm_{test}_{what}_{}.safetensors", std::process::id()))
}

/// A case's module and input files, and three scratch files (a rewritten module, the output
/// of the case's own module, the output of the rewritten one) named after `test`.
fn case_files(case: &str, test: &str) -> ([PathBuf; 2], [PathBuf; 3]) {
    let dir = fixture(case);
    let tmp = |what| scratch(test, what);
    ([dir.join("module.safetensors"), dir.join("input.safetensors")], [tmp("file"), tmp("want"), tmp("got")])
}

/// Runs one case and compares every tensor written with PyTorch's.
fn run(case: &str, flags: &[&str]) {
    let dir = fixture(case);
    let out = scratch(case, "out");
    let (m, i) = (dir.join("module.safetensors"), dir.join("input.safetensors"));
    cli_on(&m, &i, &out, flags).unwrap_or_else(|e| panic!("{case}: {e}"));
    let (got, want) = (read(&out), read(&dir.join("expected.safetensors")));
    std::fs::remove_file(&out).ok();
    let names = |v: &Tensors| v.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{case}: the tensors written");
    for ((n, dt, shape, g), (_, wdt, wshape, w)) in got.iter().zip(&want) {
        assert_eq!((dt, shape), (wdt, wshape), "{case}: {n}'s dtype and shape");
        let tol = if *dt == Dtype::F64 { 1e-10 } else { 1e-4 };
        let e = rel_error(w, g);
        assert!(e < tol, "{case}: {n} differs from PyTorch's by {e:e}");
    }
}

#[test]
fn matches_pytorch_on_every_case() {
    run("bigru_l2_batch_first", &["--batch-first"]);
    run("lstm_l2", &[]);
    run("rnn_relu_nobias_f32", &["--nonlinearity", "relu"]);
    run("bilstm_f32_forward", &["--batch-first"]);
    run("bilstm_l2_lengths", &[]);
    run("gru_lengths_batch_first", &["--batch-first"]);
    run("lstm_proj_l3_lengths", &[]);
    run("bilstm_proj_l2_nobias_batch_first", &["--batch-first"]);
    run("bilstm_proj_lengths", &[]);
    run("lstm_proj_f32", &[]);
    run("gru_l3_nobias", &[]);
    run("birnn_l3_lengths_batch_first", &["--batch-first"]);
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let dir = fixture("lstm_l2");
    let (m, i) = (dir.join("module.safetensors"), dir.join("input.safetensors"));
    let (m, i) = (m.to_str().unwrap(), i.to_str().unwrap());
    let out = scratch("bad", "out");
    let o = out.to_str().unwrap();
    let fail = |args: &[&str], says: &str| {
        let e = cli(args).expect_err("bad input must fail");
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(says), "{args:?}: {e}");
    };
    fail(&["--module", m, "--output", o], "--input");
    // The module file as the input: its tensors are not inputs.
    fail(&["--module", m, "--input", m, "--output", o], "unknown tensor");
    // The input file as the module: x is not a recurrent module's tensor.
    fail(&["--module", i, "--input", i, "--output", o], "unknown tensor");
    // Batch-first reading of a sequence-first x: the shapes no longer fit the state.
    fail(&["--module", m, "--input", i, "--output", o, "--batch-first"], "expected");
    fail(&["--nonlinearity", "sigmoid"], "tanh or relu");
    fail(&["--module", "/nonexistent/m.safetensors", "--input", i, "--output", o], "cannot read");
    // The output over one of the files read (by another spelling of its path): refused, the
    // file left as it was (copies, so that a failure cannot damage the fixtures).
    let copies = std::env::temp_dir().join(format!("rnn_torch_module_same_{}", std::process::id()));
    std::fs::create_dir_all(&copies).unwrap();
    let (mc, ic) = (copies.join("m.safetensors"), copies.join("i.safetensors"));
    std::fs::copy(m, &mc).unwrap();
    std::fs::copy(i, &ic).unwrap();
    let (mc, ic) = (mc.to_str().unwrap(), ic.to_str().unwrap());
    let i_again =
        format!("{}/../{}/i.safetensors", copies.display(), copies.file_name().unwrap().to_str().unwrap());
    fail(
        &["--module", mc, "--input", ic, "--output", &i_again],
        "is the --input file, which it would replace",
    );
    fail(&["--module", mc, "--input", ic, "--output", mc], "is the --module file");
    assert_eq!(std::fs::read(ic).unwrap(), std::fs::read(i).unwrap(), "the input file is unchanged");
    assert_eq!(std::fs::read(mc).unwrap(), std::fs::read(m).unwrap(), "the module file is unchanged");
    std::fs::remove_dir_all(&copies).unwrap();
    // A float tensor saved as int64 (a weight, an output gradient): named, not converted.
    let ints = |path: &str, name: &str, to: &Path| {
        let mut f = TensorFile::read(path).unwrap();
        let v = f.floats::<f64>(name).unwrap().iter().map(|&x| x.round() as i64).collect();
        f.tensors.get_mut(name).unwrap().data = TensorData::I64(v);
        f.write(to).unwrap();
    };
    let bad = scratch("bad", "int");
    let b = bad.to_str().unwrap();
    ints(m, "weight_ih_l1", &bad);
    fail(&["--module", b, "--input", i, "--output", o], "tensor weight_ih_l1 is int64");
    ints(i, "d_output", &bad);
    fail(&["--module", m, "--input", b, "--output", o], "tensor d_output is int64");
    std::fs::remove_file(&bad).unwrap();
    assert!(!out.exists(), "nothing written on bad input");
}

/// Every tensor of a module file and of an input file, broken one at a time (dropped, saved as
/// the wrong dtype, one value short, renamed): the program either runs (dropping an optional
/// input: `h0`, `lengths`, a gradient) or fails with one line, and never panics or writes.
#[test]
fn every_broken_tensor_is_one_line() {
    for (case, flags) in
        [("lstm_proj_l3_lengths", &[][..]), ("birnn_l3_lengths_batch_first", &["--batch-first"][..])]
    {
        let dir = fixture(case);
        let files = [dir.join("module.safetensors"), dir.join("input.safetensors")];
        let (broken, out) = (scratch("broken", "file"), scratch("broken", "out"));
        for (which, path) in files.iter().enumerate() {
            let file = TensorFile::read(path).unwrap();
            for name in file.tensors.keys() {
                let t = &file.tensors[name];
                let short = t.len().saturating_sub(1);
                let wrong_dtype = match &t.data {
                    TensorData::I64(v) => TensorData::F64(v.iter().map(|&x| x as f64).collect()),
                    _ => TensorData::I64(
                        file.floats::<f64>(name).unwrap().iter().map(|&x| x.round() as i64).collect(),
                    ),
                };
                let mut short_data = t.data.clone();
                match &mut short_data {
                    TensorData::F32(v) => v.truncate(short),
                    TensorData::F64(v) => v.truncate(short),
                    TensorData::I64(v) => v.truncate(short),
                }
                let breaks: [(&str, Option<(String, rnn::io::Tensor)>); 4] = [
                    ("dropped", None),
                    ("dtype", Some((name.clone(), rnn::io::Tensor::new(t.shape.clone(), wrong_dtype)))),
                    ("short", Some((name.clone(), rnn::io::Tensor::new(vec![short], short_data)))),
                    ("renamed", Some((format!("{name}_x"), t.clone()))),
                ];
                for (how, replacement) in breaks {
                    let mut f = file.clone();
                    f.tensors.remove(name);
                    if let Some((n, t)) = replacement {
                        f.tensors.insert(n, t);
                    }
                    f.write(&broken).unwrap();
                    let [m, i] = if which == 0 {
                        [broken.clone(), files[1].clone()]
                    } else {
                        [files[0].clone(), broken.clone()]
                    };
                    let optional = which == 1 && name != "x" && how == "dropped";
                    match cli_on(&m, &i, &out, flags) {
                        Ok(()) if optional => {
                            std::fs::remove_file(&out).unwrap();
                        }
                        Ok(()) => panic!("{case}: {name} {how}: the program ran"),
                        Err(e) => {
                            assert_eq!(e.lines().count(), 1, "{case}: {name} {how}: {e}");
                            assert!(!out.exists(), "{case}: {name} {how}: wrote {}", out.display());
                            if how == "dtype" || how == "renamed" {
                                assert!(e.contains(name.as_str()), "{case}: {name} {how}: {e}");
                            }
                        }
                    }
                }
            }
        }
        std::fs::remove_file(&broken).ok();
    }
}

/// A whole model's `state_dict` (the module under `model.rnn.`, beside a head, a non-finite
/// value and an int64 buffer of other modules): `--prefix model.rnn` (or `model.rnn.`) runs the
/// module and writes what its own `state_dict` gives, bit for bit; without `--prefix`, or with
/// one that selects nothing, it is one line saying where the module is.
#[test]
fn a_whole_models_state_dict_by_its_prefix() {
    let ([m, i], [model, want, got]) = case_files("bilstm_l2_lengths", "model");
    let module = TensorFile::read(&m).unwrap();
    let mut whole = TensorFile::new()
        .with_tensor("head.weight", rnn::io::Tensor::vector(&[0.5f64, 2.0]).with_shape(vec![1, 2]))
        .with_tensor("head.bias", rnn::io::Tensor::vector(&[f64::NAN]))
        .with_tensor("norm.num_batches_tracked", rnn::io::Tensor::new(vec![], TensorData::I64(vec![3])));
    for (name, t) in &module.tensors {
        whole = whole.with_tensor(format!("model.rnn.{name}"), t.clone());
    }
    whole.write(&model).unwrap();
    cli_on(&m, &i, &want, &[]).unwrap();
    for prefix in ["model.rnn", "model.rnn."] {
        cli_on(&model, &i, &got, &["--prefix", prefix]).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        assert_eq!(
            TensorFile::read(&got).unwrap().tensors,
            TensorFile::read(&want).unwrap().tensors,
            "{prefix}"
        );
        std::fs::remove_file(&got).unwrap();
    }
    // Beside the module, tensors of dtypes rnn-io does not read (a quantized layer's I8, a mask's
    // BOOL) are left alone; in it, one is an error naming it and its dtype.
    let with_other_dtypes = |extra: &str| {
        let bytes = std::fs::read(&model).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut views = st.tensors();
        for (name, dtype) in [("quant.weight", safetensors::Dtype::I8), (extra, safetensors::Dtype::BOOL)] {
            views.push((
                name.to_owned(),
                safetensors::tensor::TensorView::new(dtype, vec![2], &[1, 0]).unwrap(),
            ));
        }
        safetensors::serialize(views, None).unwrap()
    };
    let other = scratch("model", "other_dtypes");
    std::fs::write(&other, with_other_dtypes("attention.mask")).unwrap();
    cli_on(&other, &i, &got, &["--prefix", "model.rnn"]).unwrap();
    assert_eq!(TensorFile::read(&got).unwrap().tensors, TensorFile::read(&want).unwrap().tensors);
    std::fs::remove_file(&got).unwrap();
    std::fs::write(&other, with_other_dtypes("model.rnn.weight_hh_l9")).unwrap();
    let e = cli_on(&other, &i, &got, &["--prefix", "model.rnn"]).expect_err("must fail");
    assert!(
        e.lines().count() == 1
            && e.contains("tensor model.rnn.weight_hh_l9 has dtype BOOL, which is not read here"),
        "{e}"
    );
    assert!(!got.exists());
    std::fs::remove_file(&other).unwrap();
    for (flags, says) in [
        (&[][..], "a whole model's state_dict, with a recurrent module under \"model.rnn.\": select it by its prefix"),
        (&["--prefix", "model.rn"][..], "no tensor's name starts with \"model.rn.\" (recurrent modules under: \"model.rnn.\")"),
        (&["--prefix", "model"][..], "unknown tensor model.rnn.bias_hh_l0: a recurrent module's state_dict holds weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, weight_hr_l{k} (and _reverse), a cell's weight_ih, weight_hh, bias_ih, bias_hh; this state_dict holds one under \"model.rnn.\": select it by that prefix"),
    ] {
        let e = cli_on(&model, &i, &got, flags).expect_err("must fail");
        assert!(e.lines().count() == 1 && e.contains(says), "{flags:?}: {e}");
        assert!(!got.exists(), "{flags:?}: wrote {}", got.display());
    }
    for f in [model, want] {
        std::fs::remove_file(f).unwrap();
    }
}

/// A cell's `state_dict` (`nn.GRUCell`: a one-layer GRU's tensors without `_l0`) runs as that
/// GRU: the same bits, its gradients under the cell's names (`grad.weight_ih`, ...), its states
/// `[B, H]` as the cell's (`h0` given so or as the module's `[1, B, H]`, `grad.h0` shaped as
/// given).
#[test]
fn a_cells_state_dict_runs_as_its_one_layer_module() {
    let ([m, i], [cell, want, got]) = case_files("gru_lengths_batch_first", "cell");
    let mut module = TensorFile::read(&m).unwrap();
    module.tensors = module.tensors.into_iter().map(|(n, t)| (n.replace("_l0", ""), t)).collect();
    module.write(&cell).unwrap();
    // The inputs with an initial state, as the module takes it and as the cell does.
    let h0 = [0.5f64, -0.25, 1.0, 0.0, 2.0, -1.0, 0.125, 0.75, -0.5];
    let with_h0 = |shape: Vec<usize>, d_h_n: bool| {
        let mut f = TensorFile::read(&i).unwrap();
        let state = rnn::io::Tensor::vector(&h0).with_shape(shape);
        if d_h_n {
            f.tensors.insert("d_h_n".into(), state.clone());
        }
        f.with_tensor("h0", state)
    };
    let [module_in, cell_in, cell_in3] = ["module_in", "cell_in", "cell_in3"].map(|w| scratch("cell", w));
    with_h0(vec![1, 3, 3], true).write(&module_in).unwrap();
    with_h0(vec![3, 3], true).write(&cell_in).unwrap();
    with_h0(vec![1, 3, 3], false).write(&cell_in3).unwrap();
    cli_on(&m, &module_in, &want, &["--batch-first"]).unwrap();
    // The module's outputs under the cell's names, its states `[B, H]`.
    let as_cell = |name: String, mut t: rnn::io::Tensor| {
        if ["h_n", "grad.h0"].contains(&name.as_str()) {
            assert_eq!(t.shape[0], 1, "{name}");
            t.shape.remove(0);
        }
        (name.replace("_l0", ""), t)
    };
    let renamed: std::collections::BTreeMap<String, rnn::io::Tensor> =
        TensorFile::read(&want).unwrap().tensors.into_iter().map(|(n, t)| as_cell(n, t)).collect();
    assert!(renamed.contains_key("grad.weight_hh") && renamed["grad.h0"].shape == [3, 3]);
    cli_on(&cell, &cell_in, &got, &["--batch-first"]).unwrap();
    assert_eq!(TensorFile::read(&got).unwrap().tensors, renamed);
    // h0 as `[1, B, H]` (and no d_h_n): the same forward, grad.h0 shaped as h0 was.
    cli_on(&cell, &cell_in3, &got, &["--batch-first"]).unwrap();
    let back = TensorFile::read(&got).unwrap().tensors;
    assert_eq!((&back["h_n"], &back["output"]), (&renamed["h_n"], &renamed["output"]));
    assert_eq!(back["grad.h0"].shape, [1, 3, 3]);
    // Any other shape is a one-line error naming both.
    with_h0(vec![3, 1, 3], false).write(&cell_in3).unwrap();
    let e = cli_on(&cell, &cell_in3, &got, &["--batch-first"]).expect_err("must fail");
    assert!(e.contains("h0 (or d_h_n) is [3, 1, 3], expected [3, 3] (a cell's; or [1, 3, 3])"), "{e}");
    for f in [module_in, cell_in, cell_in3] {
        std::fs::remove_file(f).unwrap();
    }
    for f in [cell, want, got] {
        std::fs::remove_file(f).unwrap();
    }
}
