//! Gathers the default corpus of `examples/char_lm.rs`: text this project wrote, and nothing
//! else. The prose first (README.md, docs/*.md, each crate's README.md), then the Rust sources
//! of the crates (`crates/*/src/**/*.rs`), each group in sorted path order, the files joined by
//! a newline. Generated and binary files (test fixtures, images) are not read. The example
//! holds out the last tenth, so its validation text is the end of the sources.

use std::path::{Path, PathBuf};

/// Every file under `dir` (recursively) whose name ends with `ext`.
fn files_under(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let mut prose = Vec::new();
    if root.join("README.md").is_file() {
        prose.push(root.join("README.md"));
    }
    let readmes = prose.len();
    files_under(&root.join("docs"), "md", &mut prose);
    let mut code = Vec::new();
    // Outside the repository (a packaged crate) there is nothing to gather: the corpus is then
    // what is found, and the example says so if it is too short.
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    crates.sort();
    println!("cargo:rerun-if-changed={}", root.join("crates").display());
    for krate in &crates {
        let readme = krate.join("README.md");
        if readme.is_file() {
            prose.push(readme);
        }
        files_under(&krate.join("src"), "rs", &mut code);
    }
    prose[readmes..].sort();
    code.sort();
    let mut corpus = String::new();
    for path in prose.iter().chain(&code) {
        println!("cargo:rerun-if-changed={}", path.display());
        match std::fs::read_to_string(path) {
            Ok(text) => corpus.push_str(&text),
            Err(e) => println!("cargo:warning=char_lm's corpus leaves out {}: {e}", path.display()),
        }
        if !corpus.ends_with('\n') {
            corpus.push('\n');
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("char_lm_corpus.txt");
    std::fs::write(&out, corpus).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
