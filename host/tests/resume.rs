//! A search killed mid-way (SIGKILL, no chance to clean up) continues with `--resume` where it
//! stopped, and ends exactly where an uninterrupted run with the same seed ends.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEARCH: &[&str] = &[
    "search",
    "--dataset",
    "synthetic",
    "--train-limit",
    "512",
    "--test-limit",
    "128",
    "--epochs-weights",
    "3",
    "--epochs-gates",
    "2",
    "--epochs-finetune",
    "2",
    "--batch-size",
    "64",
    "--seed",
    "11",
];

fn dnal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dnal"))
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Fields of a report that depend on what was computed (not on wall time).
fn outcome(report: &serde_json::Value) -> serde_json::Value {
    let history: Vec<serde_json::Value> = report["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::json!([e["stage"], e["epoch"], e["loss"], e["test_top1"]]))
        .collect();
    serde_json::json!({
        "parent": report["parent"],
        "pruned": report["pruned"],
        "channels": report["channels"],
        "gates": report["gates"],
        "history": history,
        // The gate stage's course towards the default budget, over the kill.
        "trace": report["budget"]["trace"],
    })
}

#[test]
fn a_killed_search_resumes_and_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let status = dnal()
        .args(SEARCH)
        .arg("--out")
        .arg(&whole)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    // The same search, killed once it has checkpointed an epoch of the gate stage.
    let killed = dir.path().join("killed");
    let mut child = dnal()
        .args(SEARCH)
        .arg("--out")
        .arg(&killed)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state_path = killed.join("checkpoint/state.json");
    let started = Instant::now();
    loop {
        if let Ok(bytes) = std::fs::read(&state_path)
            && let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && state["stage"] == "gates"
            && state["epochs_done"] == 1
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the search never reached the gate stage"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the search ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.join("report.json").exists());

    let out = dnal()
        .arg("search")
        .arg("--resume")
        .arg(&killed)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed = read_json(&killed.join("report.json"));
    let reference = read_json(&whole.join("report.json"));
    assert_eq!(outcome(&resumed), outcome(&reference));
    // Every step of both gate epochs (8 a epoch) is in it, the killed one's included.
    assert_eq!(resumed["budget"]["trace"]["steps"], 16, "{resumed}");
    assert_eq!(
        resumed["budget"]["trace"]["samples"]
            .as_array()
            .unwrap()
            .len(),
        16
    );
    // The killed stage's time is counted once per run that worked on it, never reset.
    assert!(resumed["stages"][1]["seconds"].as_f64().unwrap() > 0.0);

    // A finished search says so instead of running again.
    let out = dnal()
        .arg("search")
        .arg("--resume")
        .arg(&killed)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already complete"));
}

#[test]
fn resuming_a_folder_without_a_search_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = dnal()
        .arg("search")
        .arg("--resume")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state.json") && err.contains("dnal search --out"),
        "{err}"
    );
}
