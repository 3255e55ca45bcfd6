//! rnn-io on its own: writes a safetensors file holding a tensor of each dtype and some
//! metadata, reads it back bit for bit, then reads damaged copies and prints the one-line error
//! each gives.
//!
//! ```text
//! cargo run -p rnn-io --example write_and_read
//! ```

use rnn_io::{Tensor, TensorData, TensorFile};
use rnn_tensor::Mat;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("rnn-io-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tensors.safetensors");

    let weight = Mat::from_fn(3, 2, |i, j| (i as f64 - j as f64) / 3.0);
    let file = TensorFile::new()
        .with_tensor("weight", Tensor::from_mat(&weight))
        .with_tensor("scale", Tensor::vector(&[0.1f32, 0.2, 0.3]))
        .with_tensor("lengths", Tensor::new(vec![2], TensorData::I64(vec![5, 2])))
        .with_metadata("written_by", "rnn-io/examples/write_and_read.rs");
    file.write(&path)?;
    let bytes = std::fs::read(&path)?;
    println!("wrote {} ({} bytes)", path.display(), bytes.len());

    let back = TensorFile::read(&path)?;
    for (name, t) in &back.tensors {
        println!("  {name}: {} {:?}", t.dtype(), t.shape);
    }
    assert_eq!(back.tensors, file.tensors, "the tensors come back bit for bit");
    assert_eq!(back.matrix::<f64>("weight")?, weight);
    println!("  metadata: {:?}", back.metadata);

    // Damaged copies: each is one line naming the file and what is wrong.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    for (what, damaged) in [("cut short", &bytes[..bytes.len() - 5]), ("one bit flipped", &flipped[..])] {
        let e = TensorFile::from_bytes("copy.safetensors", damaged).unwrap_err();
        println!("{what}: {e}");
    }
    println!("missing: {}", TensorFile::read(dir.join("nothing.safetensors")).unwrap_err());
    println!("wrong dtype: {}", back.floats::<f32>("lengths").unwrap_err());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
