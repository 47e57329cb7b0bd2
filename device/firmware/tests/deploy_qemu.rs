//! Build for Cortex-M4/M7 (QEMU mps2 machines) and aarch64 (qemu-aarch64), run twice, and
//! check parity with reference_forward and that the instruction counts repeat exactly.
//!
//! Needs qemu-system-arm, qemu-user, gcc (for the plugin), gcc-aarch64-linux-gnu and the
//! thumbv7em-none-eabihf and aarch64-unknown-linux-gnu rustup targets (CI installs them).

use dnal_export::{Export, Tensor};
use dnal_firmware::DeployRequest;
use dnal_firmware::deploy::{DeployReport, deploy, synthetic_images};
use dnal_firmware::synth::{random_export, tiny_cnn_arch};

/// One target folder for every firmware the tests build: the dependencies build once.
fn shared_target_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dnal-firmware")
}

fn deploy_and_run(board: &str) -> DeployReport {
    let tmp = tempfile::tempdir().unwrap();
    let export = random_export(tiny_cnn_arch(&format!("tiny-{board}")), 11).unwrap();
    let export_dir = tmp.path().join("export");
    export.write(&export_dir).unwrap();
    let mut req = DeployRequest::new(&export_dir, board, tmp.path().join("fw"));
    req.run = true;
    req.runs = 2;
    req.firmware_target_dir = Some(shared_target_dir());
    req.images = synthetic_images(export.input_len(), 2);
    let report = deploy(&req).unwrap_or_else(|e| panic!("{board}: {e}"));
    if let Some(dir) = std::env::var_os("DNAL_KEEP_FW") {
        let dir = std::path::PathBuf::from(dir).join(board);
        let _ = std::fs::remove_dir_all(&dir);
        std::process::Command::new("cp")
            .arg("-r")
            .arg(tmp.path().join("fw"))
            .arg(&dir)
            .status()
            .unwrap();
    }

    let parity = report.parity.as_ref().unwrap();
    assert_eq!(parity.images, 2);
    assert!(
        parity.max_abs_diff < 1e-4,
        "{board}: max abs diff {}",
        parity.max_abs_diff
    );
    assert_eq!(parity.top1_agreement, 1.0);

    let cost = report.cost.as_ref().unwrap();
    assert_eq!(cost.unit, "instructions");
    assert_eq!(cost.per_image_runs.len(), 2);
    assert_eq!(
        cost.per_image_runs[0], cost.per_image_runs[1],
        "{board}: counts differ between runs"
    );
    assert_eq!(cost.repeat_runs_identical, Some(true));
    // An f32 MAC needs at least one instruction; far more would mean the counts are wrong.
    assert!(
        cost.per_inference > report.macs as f64,
        "{board}: {} instructions",
        cost.per_inference
    );
    assert!(cost.per_inference < 20.0 * report.macs as f64);
    // Per-layer counts add up to the inference.
    assert_eq!(cost.per_layer.len(), 9);
    let layer_sum: f64 = cost.per_layer.iter().map(|l| l.cost).sum();
    assert!((layer_sum - cost.per_inference).abs() < 1e-6);
    assert!(cost.per_layer.iter().all(|l| l.cost > 0.0));

    assert!(report.stack_bytes.unwrap() > 0);
    assert!(report.flash_bytes > report.weights_bytes + report.images_bytes);
    assert!(report.ram_bytes >= report.arena_bytes);
    assert!(report.flash_bytes <= report.flash_budget_bytes);
    report
}

#[test]
fn cortex_m4_in_qemu() {
    let report = deploy_and_run("cortex-m4-qemu");
    // On Cortex-M the firmware is small: arena + a little static data, and code + constants.
    assert!(
        report.ram_bytes < report.arena_bytes + 4096,
        "ram {}",
        report.ram_bytes
    );
    assert!(report.flash_bytes < report.weights_bytes + report.images_bytes + 32 * 1024);
    assert!(report.stack_bytes.unwrap() < 8 * 1024);
}

#[test]
fn cortex_m7_in_qemu() {
    let report = deploy_and_run("cortex-m7-qemu");
    assert!(
        report.ram_bytes < report.arena_bytes + 4096,
        "ram {}",
        report.ram_bytes
    );
}

#[test]
fn aarch64_in_qemu_user() {
    deploy_and_run("aarch64-qemu");
}

/// Per-layer instruction counts of `export` on `board`, one image, one run.
fn per_layer_costs(export: &Export, board: &str) -> Vec<f64> {
    let tmp = tempfile::tempdir().unwrap();
    let export_dir = tmp.path().join("export");
    export.write(&export_dir).unwrap();
    let mut req = DeployRequest::new(&export_dir, board, tmp.path().join("fw"));
    req.run = true;
    req.firmware_target_dir = Some(shared_target_dir());
    req.images = synthetic_images(export.input_len(), 1);
    let report = deploy(&req).unwrap_or_else(|e| panic!("{board}: {e}"));
    let cost = report.cost.unwrap();
    cost.per_layer.iter().map(|l| l.cost).collect()
}

/// A network's cost is its architecture's, whatever its weights: the search measures a fit
/// before finetuning and promises the budget after it. Weights the compiler could fold into
/// the code if it saw them (zeros, values one `fmov` encodes) cost exactly what random ones
/// cost, on every layer.
#[test]
fn the_cost_does_not_depend_on_the_weights() {
    let random = random_export(tiny_cnn_arch("tiny-weights"), 11).unwrap();
    // Eighths in -2..2: zero, or a value `fmov` takes as an immediate on both ISAs.
    let eighths = random
        .tensors()
        .iter()
        .map(|(name, t)| {
            let data = t.data.iter().map(|v| (v * 8.0).round() / 8.0).collect();
            (name.clone(), Tensor::new(t.shape.clone(), data))
        })
        .collect();
    let eighths = Export::new(random.arch().clone(), eighths).unwrap();
    let other = random_export(tiny_cnn_arch("tiny-weights"), 12).unwrap();
    for board in ["cortex-m7-qemu", "aarch64-qemu"] {
        let want = per_layer_costs(&random, board);
        assert_eq!(per_layer_costs(&eighths, board), want, "{board}: eighths");
        assert_eq!(
            per_layer_costs(&other, board),
            want,
            "{board}: another seed"
        );
    }
}
