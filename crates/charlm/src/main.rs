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

use charlm::cli::{run, Cli};
use clap::error::ErrorKind;
use clap::Parser;

fn main() -> ExitCode {
    // A panic would be a bug; still, report it on one line without a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string().replace('\n', " ");
        eprintln!("charlm: internal error (please report): {msg}");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
    };
    match run(&cli.command, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
