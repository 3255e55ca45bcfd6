//! The repository stands alone: what a user reads or runs never sends them outside it, every
//! relative link in the Markdown resolves, and PyTorch's benchmark script times the same cases
//! as `examples/bench_table.rs`.

#[path = "../examples/common/torch_cases.rs"]
#[allow(dead_code)] // only the case names are used here
mod torch_cases;

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir` (recursively), skipping build output.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The text files a user of the repository reads or runs: the README, the chapters, the crates,
/// the examples, the benches, the tools and the umbrella crate's sources.
fn user_facing_texts() -> Vec<(PathBuf, String)> {
    let mut files = vec![root().join("README.md"), root().join("fuzz/README.md")];
    for dir in ["docs", "crates", "examples", "benches", "tools", "src"] {
        files_under(&root().join(dir), &mut files);
    }
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().and_then(|b| String::from_utf8(b).ok()).map(|t| (p, t)))
        .collect()
}

#[test]
fn nothing_points_outside_the_repository() {
    let texts = user_facing_texts();
    assert!(texts.len() > 50, "only {} files found under {}", texts.len(), root().display());
    let outside: Vec<String> = texts
        .iter()
        .flat_map(|(path, text)| {
            text.lines().enumerate().filter(|(_, l)| l.contains("../shared")).map(move |(n, l)| {
                format!("{}:{}: {}", path.strip_prefix(root()).unwrap_or(path).display(), n + 1, l.trim())
            })
        })
        .collect();
    assert!(outside.is_empty(), "references to a directory outside the repository:\n{}", outside.join("\n"));
}

/// The targets of the inline links `[text](target)` of a Markdown text.
fn link_targets(text: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    targets
}

#[test]
fn relative_links_in_the_markdown_resolve() {
    let mut markdown: Vec<PathBuf> = user_facing_texts()
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    markdown.sort();
    assert!(markdown.iter().any(|p| p.ends_with("crates/charlm/README.md")), "{markdown:?}");
    let mut broken = Vec::new();
    for file in &markdown {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            let target = target.split('#').next().unwrap_or_default();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = file.parent().unwrap().join(target);
            if !resolved.exists() {
                broken.push(format!("{}: {target}", file.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(broken.is_empty(), "links to files that do not exist:\n{}", broken.join("\n"));
}

#[test]
fn torch_ref_py_times_every_bench_table_case_in_order() {
    let script = std::fs::read_to_string(root().join("tools/torch_ref.py")).unwrap();
    // The keys of its CASES dictionary, in order: lines of the form `    "name": (builder, ...`.
    let keys: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('"')?.split_once("\": (").map(|(k, _)| k))
        .collect();
    // Every f32 case, then PyTorch's bf16 autocast runs of the bf16 cases.
    let want: Vec<&str> = torch_cases::NAMES.iter().chain(&torch_cases::BF16_NAMES).copied().collect();
    assert_eq!(keys, want, "tools/torch_ref.py's CASES and torch_cases::NAMES + BF16_NAMES differ");
}

#[test]
fn every_crate_has_a_readme_that_is_its_documentation() {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    crates.push(root().to_path_buf());
    assert!(crates.len() >= 6, "{crates:?}");
    let mut missing = Vec::new();
    for dir in &crates {
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let (readme, manifest, lib) = (read("README.md"), read("Cargo.toml"), read("src/lib.rs"));
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !manifest.lines().any(|l| l.trim() == r#"readme = "README.md""#) {
            missing.push(format!("{name}: Cargo.toml has no readme = \"README.md\""));
        }
        if !lib.contains(r#"#![doc = include_str!("../README.md")]"#) {
            missing.push(format!("{name}: src/lib.rs does not take its docs from README.md"));
        }
        // A Rust block, which `cargo test --doc` compiles and runs as part of the crate's docs.
        if !readme.contains("```rust\n") {
            missing.push(format!("{name}: README.md has no Rust example"));
        }
        if dir.as_path() != root() && !readme.contains("](../../README.md)") {
            missing.push(format!("{name}: README.md does not link to the project's README"));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The default corpus of `examples/char_lm.rs` (gathered by `build.rs`) is the project's own
/// text: several hundred KB of docs and crate sources, and neither a test fixture nor any text
/// written elsewhere (tinyshakespeare's first line, say).
#[test]
fn the_char_lm_corpus_is_the_project_s_own_text() {
    let corpus = include_str!(concat!(env!("OUT_DIR"), "/char_lm_corpus.txt"));
    assert!(corpus.len() > 300_000, "only {} bytes", corpus.len());
    for part in
        ["# rnn — recurrent neural networks from scratch", "# Stage 4: a character-level language model"]
    {
        assert!(corpus.contains(part), "{part:?} is missing");
    }
    assert!(corpus.contains("pub fn val_streams"), "the crates' sources are missing");
    let fixture = std::fs::read_to_string(root().join("crates/charlm/tests/fixtures/corpus.txt")).unwrap();
    assert!(!corpus.contains(fixture.lines().next().unwrap()), "a test fixture is in the corpus");
    let first_citizen = ["First Citizen:", "Before we proceed any further, hear me speak."].join("\n");
    assert!(!corpus.contains(&first_citizen), "third-party text is in the corpus");
}
