//! `charlm`: train, sample from and evaluate character-level language models.
//!
//! ```text
//! charlm train  --corpus input.txt [--cell lstm --hidden 256 --layers 2 ...] --out run/
//! charlm sample --checkpoint run/model.safetensors --prime "ROMEO:" --temperature 0.8
//! charlm eval   --checkpoint run/model.safetensors --text held_out.txt
//! ```
//!
//! Every error is one line on standard error and a non-zero exit status.

use std::process::ExitCode;

use std::io::Write;

use charlm::cli::{run, Cli};
use charlm::CharLmError;
use clap::error::ErrorKind;
use clap::Parser;

/// 64-byte aligned matrices, as PyTorch's: the kernels' loads and stores stay within a cache line.
#[global_allocator]
static ALLOC: rnn_tensor::alloc::LineAligned = rnn_tensor::alloc::LineAligned;

fn main() -> ExitCode {
    // A panic would be a bug; still, report it on one line without a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string().replace('\n', " ");
        let _ = writeln!(std::io::stderr(), "charlm: internal error (please report): {msg}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = write!(std::io::stdout(), "{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let _ = writeln!(std::io::stderr(), "{}", text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
    };
    match run(&cli.command, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        // `charlm sample | head`: the reader has what it wanted; stop quietly, as `cat` would.
        Err(CharLmError::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}
