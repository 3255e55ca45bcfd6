//! A PyTorch recurrent module straight from a safetensors file (feature `safetensors`), read by
//! `rnn-io`: `torch.save`'s pickle is not read, `safetensors.torch.save_file(m.state_dict(), p)`
//! writes what this reads.

use std::collections::BTreeMap;
use std::path::Path;

use rnn_io::TensorFile;
use rnn_tensor::activation::Activation;
use rnn_tensor::Scalar;

use crate::torch::{select_module, TorchRecurrent, TorchTensor};
use crate::CellError;

impl<T: Scalar> TorchRecurrent<T> {
    /// The module whose `state_dict` is the file at `path` ([`TorchRecurrent::from_state_dict`]
    /// on its tensors, `F32` or `F64` (or `F16` and `BF16`, which `rnn-io` reads as `F32`),
    /// converted to `T`); `nonlinearity` is the vanilla RNN's.
    /// Every failure (a missing or damaged file, an integer or non-finite tensor, tensors that
    /// are not one module) is a [`CellError::File`] naming the file.
    pub fn from_safetensors(path: impl AsRef<Path>, nonlinearity: Activation) -> Result<Self, CellError> {
        Self::from_safetensors_prefix(path, "", nonlinearity)
    }

    /// [`TorchRecurrent::from_safetensors`] on the tensors whose names start with `prefix`, the
    /// prefix removed: the recurrent submodule of a whole model's `state_dict` (`"rnn"` or
    /// `"rnn."` for `self.rnn = nn.LSTM(...)`); the file's other tensors are left alone (neither
    /// converted nor checked; see [`select_module`]).
    pub fn from_safetensors_prefix(
        path: impl AsRef<Path>,
        prefix: &str,
        nonlinearity: Activation,
    ) -> Result<Self, CellError> {
        // The model's other tensors may be of any dtype (an `I8` layer, a `BOOL` mask): only
        // the module's are read.
        let file = TensorFile::read_any(path)?;
        let selected = select_module(file.names(), prefix).map_err(|e| file.error(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, short) in selected {
            file.check_finite_tensor(name)?;
            let data = file.floats::<T>(name)?;
            tensors.insert(short.to_owned(), TorchTensor { shape: file.tensors[name].shape.clone(), data });
        }
        Self::from_state_dict(&tensors, nonlinearity).map_err(|e| file.error(e.to_string()).into())
    }
}

#[cfg(test)]
mod tests {
    use rnn_io::{Tensor, TensorData};
    use rnn_tensor::{Parameters, Rng};

    use super::*;
    use crate::{GruConfig, LstmConfig, Recurrence};

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rnn-cells-torch-file-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A module's parameters as PyTorch stores them (biases 1-D), under `prefix`.
    fn state_dict<T: Scalar>(params: &impl Parameters<T>, prefix: &str) -> TensorFile {
        let mut f = TensorFile::new();
        for (name, m) in params.named_params() {
            let t = Tensor::from_mat(m);
            let t = if name.starts_with("bias") { t.with_shape(vec![m.nrows()]) } else { t };
            f = f.with_tensor(format!("{prefix}{name}"), t);
        }
        f
    }

    #[test]
    fn a_written_module_loads_back_exactly() {
        let dir = tmp("roundtrip");
        let mut rng = Rng::seed_from(3);
        let lstm = LstmConfig::new(3, 4).build_stack::<f64>(2, &mut rng).unwrap();
        let path = dir.join("lstm.safetensors");
        state_dict(lstm.params(), "").write(&path).unwrap();
        match TorchRecurrent::<f64>::from_safetensors(&path, Activation::Tanh).unwrap() {
            TorchRecurrent::Lstm(back) => assert_eq!(back.params(), lstm.params()),
            other => panic!("not an LSTM: {other:?}"),
        }
        // A whole model's file: the submodule by its prefix, in f32 from an f32 file.
        // The model's other tensors are neither converted nor checked: an int64 buffer (a
        // BatchNorm's count) and a non-finite value are theirs to have.
        let gru = GruConfig::new(2, 3).build_stack::<f32>(1, &mut rng).unwrap();
        let model = state_dict(gru.params(), "rnn.")
            .with_tensor("head.weight", Tensor::from_mat(&rnn_tensor::Mat::<f32>::zeros(2, 3)))
            .with_tensor("head.bias", Tensor::vector(&[f32::NAN, 0.0]))
            .with_tensor("norm.num_batches_tracked", Tensor::new(vec![], TensorData::I64(vec![7])));
        let path = dir.join("model.safetensors");
        model.write(&path).unwrap();
        // "rnn" and "rnn." select the same tensors.
        for prefix in ["rnn.", "rnn"] {
            match TorchRecurrent::<f32>::from_safetensors_prefix(&path, prefix, Activation::Tanh).unwrap() {
                TorchRecurrent::Gru(back) => assert_eq!(back.params(), gru.params()),
                other => panic!("not a GRU: {other:?}"),
            }
        }
        // Without the prefix, the head is not a recurrent module's tensor, and the error says
        // where the module is; with a prefix that selects nothing, too.
        let e = TorchRecurrent::<f32>::from_safetensors(&path, Activation::Tanh).unwrap_err().to_string();
        assert!(e.contains("model.safetensors: ") && e.lines().count() == 1, "{e}");
        assert!(
            e.contains(
                "a whole model's state_dict, with a recurrent module under \"rnn.\": select it by its prefix"
            ),
            "{e}"
        );
        let e = TorchRecurrent::<f32>::from_safetensors_prefix(&path, "rn", Activation::Tanh)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no tensor's name starts with \"rn.\" (recurrent modules under: \"rnn.\")"),
            "{e}"
        );
        // A tensor of a dtype rnn-io does not read (a mask's BOOL) beside the module is left
        // alone; in it, it is an error naming it and its dtype.
        for (mask, loads) in [("attention.mask", true), ("rnn.weight_hh_l1", false)] {
            std::fs::write(&path, with_bool_tensor(&model, mask)).unwrap();
            match TorchRecurrent::<f32>::from_safetensors_prefix(&path, "rnn", Activation::Tanh) {
                Ok(TorchRecurrent::Gru(back)) if loads => assert_eq!(back.params(), gru.params()),
                Err(e) if !loads => assert!(
                    e.to_string().contains("tensor rnn.weight_hh_l1 has dtype BOOL, which is not read here"),
                    "{e}"
                ),
                other => panic!("{mask}: {other:?}"),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The bytes of `file` with a `BOOL` tensor `name` of two values added (rnn-io writes no
    /// such dtype; the safetensors crate does).
    fn with_bool_tensor(file: &TensorFile, name: &str) -> Vec<u8> {
        let bytes = file.to_bytes().unwrap();
        let mut views = safetensors::SafeTensors::deserialize(&bytes).unwrap().tensors();
        let mask = safetensors::tensor::TensorView::new(safetensors::Dtype::BOOL, vec![2], &[1, 0]).unwrap();
        views.push((name.to_owned(), mask));
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn bad_files_are_one_line_errors_naming_the_file() {
        let dir = tmp("errors");
        let ints = dir.join("ints.safetensors");
        TensorFile::new()
            .with_tensor("weight_hh_l0", Tensor::new(vec![1, 1], TensorData::I64(vec![1])))
            .write(&ints)
            .unwrap();
        let nan = dir.join("nan.safetensors");
        TensorFile::new().with_tensor("weight_hh_l0", Tensor::vector(&[f64::NAN])).write(&nan).unwrap();
        for (path, prefix, says) in [
            (dir.join("none.safetensors"), "", "cannot read it"),
            (ints.clone(), "", "tensor weight_hh_l0 is I64; expected floats"),
            (nan, "", "non-finite value"),
            (ints.clone(), "rnn.", "no tensor's name starts with \"rnn.\" (recurrent modules under: \"\")"),
        ] {
            let e = TorchRecurrent::<f64>::from_safetensors_prefix(&path, prefix, Activation::Tanh)
                .unwrap_err()
                .to_string();
            assert!(e.lines().count() == 1 && e.contains(says), "{e}");
            assert!(e.starts_with(&path.display().to_string()), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
