//! Runs a PyTorch recurrent module (`nn.LSTM`, `nn.GRU`, `nn.RNN`; any layers, one or two
//! directions, with or without bias) from its `state_dict`, forward and, when asked, backward, on
//! tensors as PyTorch stores them; see `common/torch_module.rs` for the files it reads and writes.
//!
//! ```text
//! cargo run --release --example torch_module -- --module M.safetensors [--prefix P] \
//!     --input IN.safetensors --output OUT.safetensors [--batch-first] [--nonlinearity tanh|relu]
//! ```

#[path = "common/torch_module.rs"]
mod torch_module;

/// 64-byte aligned matrices, as PyTorch's: the kernels' loads and stores stay within a cache line.
#[global_allocator]
static ALLOC: rnn::tensor::alloc::LineAligned = rnn::tensor::alloc::LineAligned;

fn main() {
    if let Err(e) = torch_module::cli(std::env::args().skip(1)) {
        eprintln!("torch_module: {e}");
        std::process::exit(1);
    }
}
