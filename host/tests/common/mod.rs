//! What the command-line tests share: running the `dnal` binary and reading what it said.

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
