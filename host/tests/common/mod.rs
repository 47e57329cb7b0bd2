//! What the command-line tests share: running the `dnal` binary and reading what it said.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `dnal` with `args` and waits for it.
pub fn dnal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dnal"))
        .args(args)
        .output()
        .expect("the dnal binary runs")
}

/// What a run wrote to standard error.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `dnal` with `args` and checks that it failed with `needle` in its message.
#[allow(dead_code)] // Not every test file refuses something.
pub fn refused(args: &[&str], needle: &str) -> String {
    let out = dnal(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} was accepted: {err}");
    assert!(err.contains(needle), "{args:?}: {needle:?} not in: {err}");
    err
}

/// IDX files: `count` images of `rows`x`cols` and their labels (all class 0).
#[allow(dead_code)] // Not every test file writes a dataset.
pub fn write_idx(dir: &Path, prefix: &str, count: u32, rows: u32, cols: u32) {
    let mut images = Vec::new();
    for word in [0x0803u32, count, rows, cols] {
        images.extend_from_slice(&word.to_be_bytes());
    }
    images.resize(images.len() + (count * rows * cols) as usize, 7);
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    let mut labels = Vec::new();
    for word in [0x0801u32, count] {
        labels.extend_from_slice(&word.to_be_bytes());
    }
    labels.resize(labels.len() + count as usize, 0);
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}
