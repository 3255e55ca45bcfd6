//! The charlm library on its own: build a small character model, save it as a safetensors
//! checkpoint with PyTorch's state_dict names, read it back into a fresh model, and check that
//! both generate the same text from the same seed.
//!
//! ```sh
//! cargo run -p charlm --example checkpoint_roundtrip
//! ```
//! The file it writes loads into `nn.LSTM` + `nn.Linear` with `tools/load_checkpoint.py`.

use charlm::charrnn::CharRnn;
use charlm::checkpoint::{assign_tensors, load_model, save_model};
use charlm::model::{generate, LanguageModel};
use charlm::sample::{encode_prime, SamplingConfig};
use charlm::ModelConfig;
use rnn_cells::Lstm;
use rnn_data::Corpus;
use rnn_tensor::{Parameters, Rng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let corpus = Corpus::from_text("the cat sat on the mat; the dog sat on the log.\n", 0.1)?;
    let config = ModelConfig::new(corpus.vocab().len()).with_hidden(32).with_layers(2);
    let mut model = CharRnn::<f32, Lstm<f32>>::build(&config, &mut Rng::seed_from(7))?;

    let dir = std::env::temp_dir().join(format!("charlm-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("model.safetensors");
    let crc = save_model(&path, &config, corpus.vocab(), &model.params().named_params())?;
    println!("wrote {} (CRC-32 {crc:08x}); the tensors it stores, as PyTorch sees them:", path.display());
    // The shapes from the file's own header: PyTorch's, row-major (biases are 1-D), not the
    // column-major matrices the model holds in memory (a bias is a `G·H × 1` column there).
    let bytes = std::fs::read(&path)?;
    let stored = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut names = stored.names();
    names.sort();
    for name in names {
        let view = stored.tensor(name)?;
        println!("  {name:<20} {:?} {:?}", view.dtype(), view.shape());
    }

    let file = load_model(&path)?;
    let mut copy = CharRnn::<f32, Lstm<f32>>::build(&file.config, &mut Rng::seed_from(99))?;
    assign_tensors(&path, &file.tensors, copy.params_mut().named_params_mut())?;

    let prime = encode_prime(&file.vocab, "the ")?;
    let cfg = SamplingConfig::new().with_temperature(0.8);
    let a = generate(&mut model, corpus.vocab(), &prime, 60, &cfg, &mut Rng::seed_from(1))?;
    let b = generate(&mut copy, &file.vocab, &prime, 60, &cfg, &mut Rng::seed_from(1))?;
    println!("original: {a:?}\nreloaded: {b:?}");
    std::fs::remove_dir_all(&dir)?;
    if a != b {
        return Err("the reloaded model generates different text".into());
    }
    println!("identical (an untrained model, so the text is noise)");
    Ok(())
}
