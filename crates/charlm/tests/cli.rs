//! Every bad flag of the `charlm` command line is a one-line error naming the flag.

use charlm::cli::{Cli, Command};
use clap::Parser;

fn train_error(extra: &[&str]) -> String {
    let mut args = vec!["charlm", "train", "--corpus", "x.txt"];
    args.extend_from_slice(extra);
    match Cli::try_parse_from(&args) {
        Err(e) => e.to_string().lines().next().unwrap().to_string(),
        Ok(Cli { command: Command::Train(t) }) => t.check().unwrap_err().to_string(),
        Ok(_) => unreachable!(),
    }
}

fn sample_error(extra: &[&str]) -> String {
    let mut args = vec!["charlm", "sample", "--checkpoint", "m.safetensors"];
    args.extend_from_slice(extra);
    match Cli::try_parse_from(&args) {
        Err(e) => e.to_string().lines().next().unwrap().to_string(),
        Ok(Cli { command: Command::Sample(s) }) => s.sampling().unwrap_err().to_string(),
        Ok(_) => unreachable!(),
    }
}

#[test]
fn defaults_are_char_rnn_s() {
    let Cli { command: Command::Train(t) } =
        Cli::try_parse_from(["charlm", "train", "--corpus", "x"]).unwrap()
    else {
        unreachable!()
    };
    t.check().unwrap();
    let c = t.model_config(65);
    assert_eq!((c.hidden, c.layers, c.cell.name()), (256, 2, "lstm"));
    let cfg = t.train_config().unwrap();
    assert_eq!((cfg.seq_len, cfg.batch, cfg.lr, cfg.clip_norm), (50, 50, 2e-3, Some(5.0)));
    assert_eq!((cfg.batching.name(), cfg.optimizer.name()), ("streams", "adam"));
}

#[test]
fn bad_training_flags_name_the_flag() {
    for (args, want) in [
        (&["--hidden", "0"][..], "invalid --hidden: must be in 1..=16384, got 0"),
        (&["--hidden", "100000000"], "invalid --hidden"),
        (&["--layers", "0"], "invalid --layers"),
        (&["--seq-len", "0"], "invalid --seq-len: must be in 1..="),
        (&["--batch", "0"], "invalid --batch"),
        (&["--lr", "NaN"], "invalid --lr: must be a positive finite number, got NaN"),
        (&["--lr", "0"], "invalid --lr"),
        (&["--lr", "inf"], "invalid --lr"),
        (&["--lr-decay", "1.5"], "invalid --lr-decay"),
        (&["--clip-norm", "0"], "invalid --clip-norm"),
        (&["--clip-value", "-1"], "invalid --clip-value"),
        (&["--dropout", "1"], "invalid --dropout"),
        (&["--steps", "0"], "invalid --steps"),
        (&["--epochs", "0"], "invalid --epochs"),
        (&["--val-every", "0"], "invalid --val-every"),
        (&["--val-frac", "1"], "invalid --val-frac"),
        (&["--threads", "0"], "invalid --threads: must be in 1..=256, got 0"),
        (&["--patience", "0"], "invalid --patience: must be at least 1"),
        (&["--lr-decay-after", "0"], "invalid --lr-decay-after: must be at least 1 epoch"),
        (
            &["--lr-schedule", "cosine", "--lr-min", "0.01"],
            "invalid --lr-min: must be in [0, --lr = 0.002], got 0.01",
        ),
        (&["--lr-schedule", "cosine", "--lr-min", "-1"], "invalid --lr-min"),
        (&["--lr-schedule", "cosine", "--lr-min", "NaN"], "invalid --lr-min"),
        (&["--lr-min", "1e-4"], "invalid --lr-min: is the floor of --lr-schedule cosine"),
        (
            &["--lr-schedule", "cosine", "--lr-decay", "0.9"],
            "invalid --lr-decay: decays the constant schedule",
        ),
        (&["--lr-schedule", "linear"], "error: invalid value 'linear' for '--lr-schedule <LR_SCHEDULE>'"),
        (&["--warmup-steps", "-3"], "error: invalid value '-3' for '--warmup-steps <WARMUP_STEPS>'"),
        (&["--patience", "-1"], "error: invalid value '-1' for '--patience <PATIENCE>'"),
        (&["--time-limit", "0"], "invalid --time-limit: must be a positive finite number of minutes, got 0"),
        (&["--time-limit", "-0.5"], "invalid --time-limit"),
        (&["--time-limit", "NaN"], "invalid --time-limit"),
        (&["--time-limit", "inf"], "invalid --time-limit"),
        (&["--threads", "100000"], "invalid --threads"),
        (&["--hidden", "-1"], "error: invalid value '-1' for '--hidden <HIDDEN>'"),
        (&["--lr", "-0.1"], "invalid --lr: must be a positive finite number, got -0.1"),
        (&["--seq-len", "abc"], "error: invalid value 'abc' for '--seq-len <SEQ_LEN>'"),
        (&["--cell", "transformer"], "error: invalid value 'transformer' for '--cell <CELL>'"),
        (
            &["--epochs", "2", "--steps", "3"],
            "error: the argument '--epochs <EPOCHS>' cannot be used with '--steps <STEPS>'",
        ),
    ] {
        let e = train_error(args);
        assert!(e.starts_with(want), "{args:?}: {e}");
    }
}

#[test]
fn bad_sampling_flags_name_the_flag() {
    for (args, want) in [
        (&["--temperature", "0"][..], "invalid --temperature"),
        (&["--temperature", "-1"], "invalid --temperature"),
        (&["--temperature", "NaN"], "invalid --temperature"),
        (&["--top-k", "0"], "invalid --top-k: must be at least 1, got 0"),
        (&["--length", "0"], "invalid --length"),
    ] {
        let e = sample_error(args);
        assert!(e.starts_with(want), "{args:?}: {e}");
    }
}
