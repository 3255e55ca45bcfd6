//! A PyTorch recurrent module straight from a safetensors file (feature `safetensors`), read by
//! `rnn-io`: `torch.save`'s pickle is not read, `safetensors.torch.save_file(m.state_dict(), p)`
//! writes what this reads.

use std::collections::BTreeMap;
use std::path::Path;

use rnn_io::TensorFile;
use rnn_tensor::activation::Activation;
use rnn_tensor::Scalar;

use crate::torch::{TorchRecurrent, TorchTensor};
use crate::CellError;

impl<T: Scalar> TorchRecurrent<T> {
    /// The module whose `state_dict` is the file at `path` ([`TorchRecurrent::from_state_dict`]
    /// on its tensors, `F32` or `F64`, converted to `T`); `nonlinearity` is the vanilla RNN's.
    /// Every failure (a missing or damaged file, an integer or non-finite tensor, tensors that
    /// are not one module) is a [`CellError::File`] naming the file.
    pub fn from_safetensors(path: impl AsRef<Path>, nonlinearity: Activation) -> Result<Self, CellError> {
        Self::from_safetensors_prefix(path, "", nonlinearity)
    }

    /// [`TorchRecurrent::from_safetensors`] on the tensors whose names start with `prefix`, the
    /// prefix removed: the recurrent submodule of a whole model's `state_dict` (`"rnn."` for
    /// `self.rnn = nn.LSTM(...)`); the file's other tensors are left alone.
    pub fn from_safetensors_prefix(
        path: impl AsRef<Path>,
        prefix: &str,
        nonlinearity: Activation,
    ) -> Result<Self, CellError> {
        let file = TensorFile::read(path)?;
        file.check_finite()?;
        let mut tensors = BTreeMap::new();
        for (name, t) in &file.tensors {
            if let Some(short) = name.strip_prefix(prefix) {
                let data = file.floats::<T>(name)?;
                tensors.insert(short.to_owned(), TorchTensor { shape: t.shape.clone(), data });
            }
        }
        if tensors.is_empty() {
            return Err(file.error(format!("has no tensor whose name starts with {prefix:?}")).into());
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
        let gru = GruConfig::new(2, 3).build_stack::<f32>(1, &mut rng).unwrap();
        let model = state_dict(gru.params(), "rnn.")
            .with_tensor("head.weight", Tensor::from_mat(&rnn_tensor::Mat::<f32>::zeros(2, 3)));
        let path = dir.join("model.safetensors");
        model.write(&path).unwrap();
        match TorchRecurrent::<f32>::from_safetensors_prefix(&path, "rnn.", Activation::Tanh).unwrap() {
            TorchRecurrent::Gru(back) => assert_eq!(back.params(), gru.params()),
            other => panic!("not a GRU: {other:?}"),
        }
        // Without the prefix, the head is not a recurrent module's tensor.
        let e = TorchRecurrent::<f32>::from_safetensors(&path, Activation::Tanh).unwrap_err().to_string();
        assert!(e.contains("model.safetensors: ") && e.contains("unknown tensor head.weight"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
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
            (ints.clone(), "rnn.", "has no tensor whose name starts with \"rnn.\""),
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
