//! "Trust nothing" (README, Trust and failure): shared exports, damaged checkpoints, concurrent
//! and interrupted runs, and inputs that would waste work, each refused with a clear error.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{dnal, refused, stderr, write_idx};
use dnal::lock::OutputLock;
use dnal_export::{Activation, Arch, Export, Layer, LinearSpec, Op, Shape3, Tensor};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The options of a tiny, fast search on generated data.
fn quick(out: &Path, epochs_weights: &str) -> Vec<String> {
    [
        "search",
        "--dataset",
        "synthetic",
        "--out",
        path(out),
        "--train-limit",
        "256",
        "--test-limit",
        "64",
        "--epochs-weights",
        epochs_weights,
        "--epochs-gates",
        "1",
        "--epochs-finetune",
        "1",
        "--batch-size",
        "64",
    ]
    .map(String::from)
    .to_vec()
}

fn run(args: &[String]) -> Output {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    dnal(&args)
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dnal"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `state.json` of `out` satisfies `ready`, then kills the search (SIGKILL).
fn kill_when(mut child: Child, out: &Path, ready: impl Fn(&serde_json::Value) -> bool) {
    let state_path = out.join("checkpoint/state.json");
    let started = Instant::now();
    loop {
        if let Ok(bytes) = std::fs::read(&state_path)
            && let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes)
            && ready(&state)
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "never ready");
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A valid export of one linear layer over the synthetic dataset's 1x28x28 images, with every
/// weight `weight`.
fn linear_export(dir: &Path, weight: f32) {
    let input = Shape3::new(1, 28, 28);
    let layer = Layer::new(
        "fc",
        vec![0],
        Op::Linear(LinearSpec {
            in_features: 784,
            out_features: 10,
            activation: Activation::None,
        }),
    );
    let mut arch = Arch::new("overflow", input, 10, vec![layer]);
    arch.dataset = "synthetic".into();
    arch.complete().unwrap();
    let tensors = BTreeMap::from([
        (
            "fc.weight".to_string(),
            Tensor::new(vec![10, 784], vec![weight; 7840]),
        ),
        ("fc.bias".to_string(), Tensor::new(vec![10], vec![0.0; 10])),
    ]);
    Export::new(arch, tensors).unwrap().write(dir).unwrap();
}

#[test]
fn logits_that_overflow_are_an_error_in_eval_and_deploy_not_a_score() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    // Finite weights (the reader accepts them) whose sums overflow f32.
    linear_export(&export, 3e38);
    let out = dnal(&["eval", "--export", path(&export), "--test-limit", "16"]);
    assert!(
        !out.status.success(),
        "scored: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = stderr(&out);
    assert!(
        err.contains("outputs") && err.contains("test image"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("top-1"));

    let fw = dir.path().join("fw");
    let out = dnal(&[
        "deploy",
        "--export",
        path(&export),
        "--board",
        "host",
        "--out",
        path(&fw),
        "--images",
        "2",
    ]);
    assert!(!out.status.success(), "deployed a network that outputs inf");
    let err = stderr(&out);
    assert!(err.contains("outputs") && err.contains("overflow"), "{err}");

    // The same network with sane weights evaluates.
    let sane = dir.path().join("sane");
    linear_export(&sane, 1e-3);
    let out = dnal(&["eval", "--export", path(&sane), "--test-limit", "16"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_diverging_weight_stage_is_an_error_that_names_the_learning_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = quick(&dir.path().join("run"), "1");
    args.extend(["--lr".to_string(), "1e30".to_string()]);
    let out = run(&args);
    assert!(
        !out.status.success(),
        "a learning rate of 1e30 trained fine?"
    );
    let err = stderr(&out);
    assert!(err.contains("--lr"), "{err}");
    assert!(!err.contains("100.00%"), "a NaN network scored: {err}");
}

#[test]
fn a_locked_folder_refuses_a_second_search_sweep_deploy_and_profile() {
    let dir = tempfile::tempdir().unwrap();
    let busy = dir.path().join("busy");
    let _held = OutputLock::acquire(&busy).unwrap();

    let out = run(&quick(&busy, "1"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("in use by another dnal process"),
        "{}",
        stderr(&out)
    );

    refused(&["search", "--resume", path(&busy)], "in use");
    let export = dir.path().join("export");
    linear_export(&export, 1e-3);
    let (export, busy_out) = (path(&export), path(&busy));
    refused(
        &[
            "deploy", "--export", export, "--board", "host", "--out", busy_out,
        ],
        "in use",
    );
    let table = busy.join("latency.json");
    refused(
        &[
            "profile",
            "--board",
            "cortex-m4-qemu",
            "--out",
            path(&table),
        ],
        "in use",
    );
    refused(
        &[
            "sweep",
            "--budgets-ms",
            "10",
            "--board",
            "cortex-m4-qemu",
            "--out",
            busy_out,
        ],
        "in use",
    );
    // Nothing was written into the locked folder.
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 0);
}

#[test]
fn a_search_killed_in_its_first_epoch_resumes_and_its_stale_temporaries_go() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let args = quick(&out_dir, "1");
    // Killed as soon as the search has started: before any epoch ended.
    kill_when(spawn(&args), &out_dir, |s| s["epochs_done"] == 0);
    // What a writer killed mid-write leaves behind.
    let parent = out_dir.join("parent");
    std::fs::create_dir_all(&parent).unwrap();
    let stale = parent.join(".weights.safetensors.tmp-4242-0");
    std::fs::write(&stale, b"half a file").unwrap();

    let out = dnal(&["search", "--resume", path(&out_dir)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out_dir.join("report.json").exists());
    assert!(!stale.exists(), "the stale temporary is still there");
}

#[test]
fn damaged_or_missing_checkpoint_files_are_refused_on_resume_and_from_weights() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    // Killed after one weight epoch: its checkpoint holds the model and the optimizer.
    kill_when(spawn(&quick(&first, "3")), &first, |s| {
        s["stage"] == "weights" && s["epochs_done"] == 1
    });
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("checkpoint/state.json")).unwrap())
            .unwrap();
    let tag = state["checkpoint"].as_str().unwrap().to_string();
    let ckpt = first.join("checkpoint").join(&tag);
    let model = ckpt.join("model.bpk");
    let optimizer = ckpt.join("optimizer.bpk");
    let good_model = std::fs::read(&model).unwrap();
    let good_optimizer = std::fs::read(&optimizer).unwrap();
    let resume = || dnal(&["search", "--resume", path(&first)]);

    // 64 flipped bytes in the middle of the model.
    let mut flipped = good_model.clone();
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&model, &flipped).unwrap();
    let out = resume();
    assert!(!out.status.success(), "resumed from a damaged model");
    assert!(
        stderr(&out).contains("damaged") && stderr(&out).contains("model.bpk"),
        "{}",
        stderr(&out)
    );

    // A zeroed tail (the last quarter: the very end may be zero padding already).
    let mut zeroed = good_model.clone();
    let n = zeroed.len();
    zeroed[n - n / 4..].fill(0);
    assert_ne!(zeroed, good_model);
    std::fs::write(&model, &zeroed).unwrap();
    let out = resume();
    assert!(!out.status.success(), "resumed from a zeroed tail");
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
    std::fs::write(&model, &good_model).unwrap();

    // A missing optimizer state is not silently replaced by a fresh one.
    std::fs::remove_file(&optimizer).unwrap();
    let out = resume();
    assert!(!out.status.success(), "resumed without the optimizer state");
    assert!(
        stderr(&out).contains("missing") && stderr(&out).contains("optimizer.bpk"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&optimizer, &good_optimizer).unwrap();

    // Restored, it finishes; then its weight stage's final checkpoint is checked by
    // --from-weights too.
    let out = resume();
    assert!(out.status.success(), "{}", stderr(&out));
    let final_model = first.join("checkpoint/weights-final/model.bpk");
    let mut bytes = std::fs::read(&final_model).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&final_model, &bytes).unwrap();
    let second = dir.path().join("second");
    let mut args = quick(&second, "3");
    args.extend(["--from-weights".to_string(), path(&first).to_string()]);
    let out = run(&args);
    assert!(!out.status.success(), "forked from a damaged parent");
    assert!(stderr(&out).contains("damaged"), "{}", stderr(&out));
}

#[test]
fn an_impossible_budget_is_refused_before_the_weight_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let mut args = quick(&out_dir, "1");
    args.extend(["--flops-budget".to_string(), "1".to_string()]);
    let out = run(&args);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--flops-budget") && err.contains("one channel per layer"),
        "{err}"
    );
    assert!(
        !err.contains("weights epoch"),
        "trained before refusing: {err}"
    );
    assert!(!out_dir.join("checkpoint/state.json").exists());
    // The refused run made the folder, and leaves none behind.
    assert!(!out_dir.exists(), "left an empty --out behind");
    // The folder can be used again with a budget that works.
    args.pop();
    args.push("2M".to_string());
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn empty_or_mismatched_datasets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (train, test, needle) in [
        ((0, 28, 28), (10, 28, 28), "train set holds no image"),
        ((10, 28, 28), (0, 28, 28), "test set holds no image"),
        ((10, 28, 28), (10, 8, 8), "1x8x8"),
    ] {
        let data = dir
            .path()
            .join(format!("data-{}-{}-{}", train.0, test.0, test.1));
        std::fs::create_dir_all(&data).unwrap();
        write_idx(&data, "train", train.0, train.1, train.2);
        write_idx(&data, "t10k", test.0, test.1, test.2);
        let out_dir = dir
            .path()
            .join(format!("run-{}-{}-{}", train.0, test.0, test.1));
        refused(
            &[
                "search",
                "--dataset",
                "mnist",
                "--data-dir",
                path(&data),
                "--out",
                path(&out_dir),
            ],
            needle,
        );
    }
}

#[test]
fn options_that_would_be_ignored_or_mean_nothing_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    for args in [
        &["search", "--resume", d, "--lr", "0.5"][..],
        &["search", "--resume", d, "--epochs-gates", "3"][..],
        &["search", "--resume", d, "--flops-budget", "1M"][..],
        &["sweep", "--resume", d, "--costs", "flops"][..],
        &["sweep", "--resume", d, "--lambda", "1e-3"][..],
    ] {
        refused(args, "cannot be used with");
    }
    refused(
        &["eval", "--export", d, "--test-limit", "0"],
        "--test-limit",
    );
    let table = dir.path().join("latency.json");
    std::fs::write(&table, b"mine").unwrap();
    refused(
        &[
            "profile",
            "--board",
            "cortex-m4-qemu",
            "--out",
            path(&table),
        ],
        "exists",
    );
    assert_eq!(std::fs::read(&table).unwrap(), b"mine");
}
