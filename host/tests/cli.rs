//! The `dnal` command line on bad input: every mistake gets a clear message naming the option,
//! file or value, a failure exit code, and nothing half-written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{dnal, refused, stderr, write_idx};

/// A tiny, fast search on generated data, plus `extra` options.
fn quick_search(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "search",
        "--dataset",
        "synthetic",
        "--out",
        out,
        "--train-limit",
        "256",
        "--test-limit",
        "64",
        "--epochs-weights",
        "1",
        "--epochs-gates",
        "1",
        "--epochs-finetune",
        "1",
        "--batch-size",
        "64",
    ];
    args.extend_from_slice(extra);
    dnal(&args)
}

#[test]
fn help_teaches_the_stages_and_options() {
    let out = dnal(&["search", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--epochs-gates",
        "--lambda",
        "--cost",
        "--resume",
        "--backend",
        "delta",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
    let out = dnal(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vgg-small") && text.contains("resnet56") && text.contains("fashion-mnist")
    );
}

#[test]
fn nonsense_options_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    for (extra, needle) in [
        (&["--epochs-gates", "0"][..], "--epochs-gates"),
        (&["--lambda", "-1"][..], "--lambda"),
        (&["--backend", "tpu"][..], "unknown backend"),
        (&["--cost", "joules"][..], "unknown cost"),
        (&["--model", "alexnet"][..], "unknown model"),
        (&["--epochs-weights", "many"][..], "--epochs-weights"),
    ] {
        let out = quick_search(&out_dir, extra);
        assert!(!out.status.success(), "{extra:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(
            !out_dir.join("report.json").exists() && !out_dir.join("arch.json").exists(),
            "{extra:?} left files behind"
        );
    }
}

#[test]
fn a_missing_dataset_names_the_path_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dnal(&[
        "search",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        "/nonexistent/fmnist",
        "--out",
        dir.path().join("run").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("/nonexistent/fmnist"), "{err}");
    assert!(
        err.contains("--data-dir") || err.contains("dataset-fashion-mnist"),
        "{err}"
    );
    // The dataset library says "the data folder"; the command line names its option.
    assert!(
        err.contains("hint: --data-dir DIR gives the data folder"),
        "{err}"
    );
}

#[test]
fn an_unwritable_output_folder_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    // A folder cannot be made under a regular file, whoever runs the test (root included).
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = quick_search(&file.join("run"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("a-file/run") && err.contains("--out"), "{err}");
}

#[test]
fn an_existing_search_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::write(out_dir.join("notes.txt"), b"mine").unwrap();
    let out = quick_search(&out_dir, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(std::fs::read(out_dir.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn a_diverging_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("run");
    let out = quick_search(&out_dir, &["--lr-finetune", "1e30"]);
    assert!(
        !out.status.success(),
        "a learning rate of 1e30 trained fine?"
    );
    let err = stderr(&out);
    assert!(
        err.contains("finetune") && err.contains("loss became"),
        "{err}"
    );
    assert!(err.contains("--resume"), "{err}");
    // The checkpoint of the last good epoch (the pruned network) is there and named.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("checkpoint/state.json")).unwrap())
            .unwrap();
    let tag = state["checkpoint"].as_str().unwrap();
    assert_eq!(tag, "gates-final");
    assert!(
        out_dir
            .join("checkpoint")
            .join(tag)
            .join("model.bpk")
            .exists()
    );
    assert!(err.contains(tag), "{err}");
    // Nothing of the export was written.
    assert!(!out_dir.join("arch.json").exists());
    assert!(!out_dir.join("report.json").exists());
}

#[test]
fn from_weights_reuses_the_trained_parent_and_refuses_another_setup() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let out = quick_search(&first, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p.join("report.json")).unwrap()).unwrap()
    };

    // Same data, model and weight stage, another lambda: no weight epoch runs again, and the
    // parent is the same network (same accuracy and cost).
    let second = dir.path().join("second");
    let from = first.to_str().unwrap();
    // It also finetunes with the copied parent as teacher.
    let out = quick_search(
        &second,
        &[
            "--from-weights",
            from,
            "--lambda",
            "0.05",
            "--distill",
            "0.9",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (read(&first), read(&second));
    assert_eq!(a["parent"], b["parent"]);
    let weights = |r: &serde_json::Value| r["stages"][0].clone();
    assert_eq!(weights(&a)["name"], "weights");
    for key in ["name", "epochs", "seconds"] {
        assert_eq!(
            weights(&a)[key],
            weights(&b)[key],
            "the weight stage was not reused"
        );
    }
    assert_eq!(weights(&b)["inherited_from"].as_str(), Some(from));
    assert!(!stderr(&out).contains("weights epoch"), "{}", stderr(&out));

    // Distillation: said, recorded, and in the loss (which then is no longer the cross
    // entropy alone, as it is without a teacher).
    assert!(
        stderr(&out).contains("distilling from the trained parent"),
        "{}",
        stderr(&out)
    );
    assert_eq!(b["config"]["distill"], 0.9);
    let finetune_epoch = |r: &serde_json::Value| {
        r["history"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["stage"] == "finetune")
            .cloned()
            .unwrap()
    };
    let (plain, distilled) = (finetune_epoch(&a), finetune_epoch(&b));
    assert_eq!(plain["loss"], plain["cross_entropy"]);
    assert_ne!(distilled["loss"], distilled["cross_entropy"]);
    assert!(distilled["loss"].as_f64().unwrap().is_finite());

    // Another seed would need another parent: refused, naming the folder, nothing written.
    let third = dir.path().join("third");
    let out = quick_search(&third, &["--from-weights", from, "--seed", "7"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("first") && err.contains("seed"), "{err}");
    assert!(!third.join("report.json").exists());
}

#[test]
fn a_relative_data_dir_is_recorded_absolute_and_results_go_to_stdout() {
    // Eval, deploy and resume may run from another folder than the search did.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("digits");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, "train", 64, 28, 28);
    write_idx(&data, "t10k", 16, 28, 28);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dnal"))
        .current_dir(dir.path())
        .args([
            "search",
            "--dataset",
            "mnist",
            "--data-dir",
            "digits",
            "--out",
            "run",
            "--epochs-weights",
            "1",
            "--epochs-gates",
            "1",
            "--epochs-finetune",
            "1",
            "--batch-size",
            "32",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // The result goes to standard output, the progress to standard error.
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("pruned: top-1") && summary.contains("exported to"),
        "{summary}"
    );
    let arch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/arch.json")).unwrap()).unwrap();
    assert_eq!(
        arch["search"]["config"]["data_dir"].as_str(),
        Some(data.to_str().unwrap())
    );
    // So the export evaluates from anywhere; `--json` is for scripts, and the report's hit
    // count is reproduced exactly.
    let run = dir.path().join("run");
    let eval = dnal(&["eval", "--export", run.to_str().unwrap(), "--json"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let result: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(result["accuracy"]["images"], 16);
    assert_eq!(result["reproduction"]["outcome"], "exact", "{result}");
    assert_eq!(
        result["reproduction"]["hits"],
        result["accuracy"]["top1_hits"]
    );
}

#[test]
fn from_weights_inherits_the_weight_stage_and_names_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let out = quick_search(&first, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = first.to_str().unwrap();

    // Nothing of the weight stage repeated: the data, limits, epochs and seed are the source's.
    let second = dir.path().join("second");
    let out = dnal(&[
        "search",
        "--from-weights",
        first,
        "--out",
        second.to_str().unwrap(),
        "--epochs-gates",
        "1",
        "--epochs-finetune",
        "1",
        "--batch-size",
        "64",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["config"]["dataset"], "synthetic");
    // Neither --lambda nor a budget: the default budget, 40% of the parent's MACs, met.
    assert_eq!(
        report["config"]["budget"]["kind"], "flops_share",
        "{report}"
    );
    assert_eq!(report["config"]["budget"]["value"], 0.4);
    // Without --lambda, lambda_a starts where the data balance it, and the search says where;
    // the gate stage normalises with each batch's statistics.
    assert_eq!(report["config"]["lambda_from_data"], true, "{report}");
    assert_eq!(report["config"]["gate_norm"], "batch", "{report}");
    let start = stderr(&out);
    let start = start
        .split("lambda_a starts at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|x| x.trim_end_matches(',').parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no lambda_a start in {}", stderr(&out)));
    assert!(start > 0.0 && start.is_finite(), "{start}");
    let parent_macs = report["parent"]["flops"].as_f64().unwrap();
    let budget = report["budget"]["budget"]["value"].as_f64().unwrap();
    assert!((budget - 0.4 * parent_macs).abs() < 1.0, "{report}");
    assert!(report["pruned"]["flops"].as_f64().unwrap() <= budget);
    // The gate stage's course: its 4 steps (256 images, batch 64), ending where the fit found
    // the gates, and drawn.
    let trace = &report["budget"]["trace"];
    assert_eq!(trace["steps"], 4, "{report}");
    let samples = trace["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 4);
    let last = samples[3]["cost_ratio"].as_f64().unwrap() * budget;
    let at_zero = report["budget"]["fit"]["cost_at_zero"].as_f64().unwrap();
    assert!(
        (last - at_zero).abs() <= 1e-6 * at_zero,
        "{last} against {at_zero}"
    );
    assert!(second.join("landing.svg").exists() && second.join("landing.png").exists());
    assert_eq!(report["config"]["train_limit"], 256);
    assert_eq!(report["config"]["test_limit"], 64);
    assert_eq!(report["parent"]["images"], 64);
    // Its weight-stage time was spent in the source, and the report says so.
    let weights = &report["stages"][0];
    assert_eq!(weights["name"], "weights");
    assert_eq!(weights["inherited_from"].as_str(), Some(first));
    assert!(report["stages"][1]["inherited_from"].is_null(), "{report}");

    // A weight-stage option given with another value names the option and both values.
    let third = dir.path().join("third");
    refused(
        &[
            "search",
            "--from-weights",
            first,
            "--out",
            third.to_str().unwrap(),
            "--seed",
            "5",
        ],
        "--seed 5 differs from the 0 of the weight stage",
    );
}

/// 16x16 gray noise in three classes, each with its own brightness, in `dir/noise`: small
/// enough for the Cortex-M4's RAM with a mobile network (the expanded activations of the
/// stride-1 stages dominate it).
fn noise_folder(dir: &Path) -> PathBuf {
    let data = dir.join("noise");
    let mut state = 12345u32;
    for (split, count) in [("train", 24), ("val", 6)] {
        for (class, base) in [("a", 40u8), ("b", 120), ("c", 200)] {
            let folder = data.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..count {
                let image = image::GrayImage::from_fn(16, 16, |_, _| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    image::Luma([base.saturating_add((state >> 26) as u8)])
                });
                image.save(folder.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    data
}

/// A one-epoch-per-stage search of `model` at width 0.35 on [`noise_folder`]; its report.
fn quick_mobile_search(data: &Path, run: &Path, model: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--width", "0.35"];
    args.extend_from_slice(extra);
    let report = quick_folder_search(data, run, model, &args);
    assert_eq!(report["config"]["width"], 0.35);
    report
}

/// A one-epoch-per-stage search of `model` on [`noise_folder`]; its report.
fn quick_folder_search(data: &Path, run: &Path, model: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "search",
        "--dataset",
        "folder",
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        model,
        "--out",
        run.to_str().unwrap(),
        "--epochs-weights",
        "1",
        "--epochs-gates",
        "1",
        "--epochs-finetune",
        "1",
        "--batch-size",
        "16",
    ];
    args.extend_from_slice(extra);
    let out = dnal(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["config"]["model"], model);
    assert!(report["pruned"]["flops"].as_u64() < report["parent"]["flops"].as_u64());
    report
}

/// The export in `run` evaluates exactly as the search reported, and on every board the
/// firmware's logits agree with burn's on the test images.
fn assert_exact_and_deployed_with_parity(dir: &Path, run: &Path) {
    assert_exact_and_deployed_with_parity_on(
        dir,
        run,
        &["cortex-m4-qemu", "cortex-m7-qemu", "aarch64-qemu"],
    );
}

/// [`assert_exact_and_deployed_with_parity`] on `boards`.
fn assert_exact_and_deployed_with_parity_on(dir: &Path, run: &Path, boards: &[&str]) {
    let eval = dnal(&["eval", "--export", run.to_str().unwrap(), "--json"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let result: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(result["reproduction"]["outcome"], "exact", "{result}");
    for &board in boards {
        let firmware = dir.join(board);
        let out = dnal(&[
            "deploy",
            "--export",
            run.to_str().unwrap(),
            "--board",
            board,
            "--out",
            firmware.to_str().unwrap(),
            "--run",
            "--json",
        ]);
        assert!(out.status.success(), "{board}: {}", stderr(&out));
        let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let parity = &deployed["parity"];
        // Relative to the logits' scale (at least 1): a quick search can leave logits in the
        // hundred thousands, where f32 itself rounds by more than 1e-4.
        let diff = parity["max_rel_diff"].as_f64().unwrap();
        assert!(diff <= 1e-4, "{board}: {parity}");
        assert_eq!(parity["top1_agreement"], 1.0, "{board}: {parity}");
    }
}

#[test]
fn a_narrow_mobilenetv2_searches_and_runs_on_every_board_with_parity() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise_folder(dir.path());
    let run = dir.path().join("run");
    quick_mobile_search(&data, &run, "mobilenetv2", &[]);
    // The export holds the inverted residuals: depthwise convs and residual adds.
    let arch = std::fs::read_to_string(run.join("arch.json")).unwrap();
    let depthwise = arch
        .split("\"groups\":")
        .skip(1)
        .filter(|rest| rest.trim_start().split([',', '\n', '}']).next() != Some("1"))
        .count();
    assert!(depthwise > 0, "no depthwise conv in {arch}");
    assert!(arch.contains("\"add\""), "no residual add in {arch}");
    assert_exact_and_deployed_with_parity(dir.path(), &run);

    // A width is for the models that take one.
    refused(
        &[
            "search",
            "--out",
            dir.path().join("vgg").to_str().unwrap(),
            "--width",
            "0.5",
        ],
        "pick a model that takes one (mobilenetv2, proxyless)",
    );
}

#[test]
fn resnet50_searches_on_small_images_and_runs_where_it_fits() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise_folder(dir.path());
    let run = dir.path().join("run");
    let report = quick_folder_search(&data, &run, "resnet50", &["--flops-budget", "2%"]);
    // The 3x3 stem of small inputs: no pool before the bottlenecks.
    let arch = std::fs::read_to_string(run.join("arch.json")).unwrap();
    assert!(arch.contains("s4b3.conv3") && !arch.contains("stem.pool"));
    assert!(report["pruned"]["params"].as_u64() < report["parent"]["params"].as_u64());
    assert_exact_and_deployed_with_parity_on(dir.path(), &run, &["aarch64-qemu"]);
    // Still millions of weights at 2% of the MACs: a microcontroller's flash says so.
    let out = dnal(&[
        "deploy",
        "--export",
        run.to_str().unwrap(),
        "--board",
        "cortex-m7-qemu",
        "--out",
        dir.path().join("m7").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("does not fit cortex-m7-qemu: flash needs"),
        "{err}"
    );
}

#[test]
fn a_paper_preset_sets_the_papers_settings_and_given_options_win() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise_folder(dir.path());
    let run = dir.path().join("run");
    // The paper's VGG16 on a subset: 32x32 (VGG16 needs it), one epoch per stage.
    let report = quick_folder_search(
        &data,
        &run,
        "vgg16",
        &["--preset", "paper-vgg16", "--input-size", "32x32"],
    );
    let config = &report["config"];
    assert_eq!(config["preset"], "paper-vgg16");
    assert_eq!(config["dataset"], "folder");
    assert_eq!(config["lr_schedule"], "constant");
    assert_eq!(config["lr_gates"], 0.1);
    assert_eq!(config["batch_size"], 16);
    assert_eq!(config["epochs_weights"], 1);
    // The paper's result's cost is the budget, met.
    assert_eq!(config["budget"]["kind"], "flops");
    assert_eq!(config["budget"]["value"], 61.23e6);
    assert!(report["pruned"]["flops"].as_f64().unwrap() <= 61.23e6);
    // The weight stage ran at the fixed 0.1.
    let weights: Vec<&serde_json::Value> = report["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["stage"] == "weights")
        .collect();
    assert!(!weights.is_empty() && weights.iter().all(|e| e["lr"] == 0.1));
}

#[test]
fn a_narrow_supernet_keeps_some_candidates_per_layer_and_runs_on_every_board() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise_folder(dir.path());
    let run = dir.path().join("run");
    // A tight budget, so that whole candidates vanish and the weights fit the Cortex-M4's
    // flash.
    let report = quick_mobile_search(&data, &run, "proxyless", &["--flops-budget", "2%"]);
    let layers = report["supernet"]
        .as_array()
        .expect("supernet in report.json");
    assert_eq!(layers.len(), 21, "{layers:?}");
    let arch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("arch.json")).unwrap()).unwrap();
    let names: Vec<&str> = arch["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    let mut vanished = 0;
    for layer in layers {
        let prefix = layer["layer"].as_str().unwrap();
        let candidates = layer["candidates"].as_array().unwrap();
        assert_eq!(candidates.len(), 6, "{layer}");
        let mut alive = 0;
        for c in candidates {
            let project = format!("{prefix}.{}.project", c["name"].as_str().unwrap());
            let kept = c["pruned"].as_u64().unwrap();
            // A candidate with no channel left never reaches arch.json.
            assert_eq!(kept > 0, names.contains(&project.as_str()), "{project}");
            alive += usize::from(kept > 0);
            vanished += usize::from(kept == 0);
        }
        assert!(alive >= 1, "{layer}");
    }
    assert!(
        vanished > 0,
        "no candidate vanished at 2% of the MACs: {layers:?}"
    );
    assert!(run.join("supernet.svg").exists() && run.join("supernet.png").exists());
    assert_exact_and_deployed_with_parity(dir.path(), &run);
}

#[test]
fn a_collapsed_network_is_said_not_returned_silently() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // lambda_a a thousand times the default: the gates close all they can.
    let out = quick_search(&run, &["--lambda", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: the gate stage collapsed the network") && err.contains("--lambda"),
        "{err}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    let warnings = report["warnings"]
        .as_array()
        .expect("warnings in report.json");
    assert!(
        warnings[0].as_str().unwrap().contains("collapsed"),
        "{report}"
    );

    // Under a budget the fit chose the channels: the warning says to loosen the budget.
    let out = quick_search(&dir.path().join("tight"), &["--flops-budget", "0.3%"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: the gate stage collapsed the network")
            && err.contains("is too tight for this model: give a larger --flops-budget")
            && !err.contains("--lambda"),
        "{err}"
    );
}

#[test]
fn a_supernet_that_removed_candidates_is_not_called_collapsed_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise_folder(dir.path());
    // At 8% of the MACs, every channel weighed alike, about half the candidates close
    // entirely: the search's choice, which the collapse check must not count as layers at one
    // channel (it once said "78 of 133 gated layers keep a single channel" here, 63 of them
    // removed).
    let report = quick_mobile_search(
        &data,
        &dir.path().join("run"),
        "proxyless",
        &["--flops-budget", "8%", "--cost", "uniform"],
    );
    let removed = report["supernet"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|layer| layer["candidates"].as_array().unwrap())
        .filter(|c| c["pruned"] == 0)
        .count();
    let channels = report["channels"].as_array().unwrap();
    let left = channels.len() - removed;
    let single = channels.iter().filter(|c| c["pruned"] == 1).count();
    assert!(removed > 0, "no candidate was removed: {channels:?}");
    let said_collapsed = report["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|w| w.as_str().unwrap().contains("collapsed"));
    // The rule on the layers that remain, recomputed from what the report shows.
    assert_eq!(
        said_collapsed,
        2 * single >= left,
        "{single} of {left} layers left at one channel, {removed} candidates removed: {}",
        report["warnings"]
    );
}

#[test]
fn a_stream_squeezed_to_one_channel_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise_folder(dir.path());
    let warnings = |report: &serde_json::Value| -> Vec<String> {
        report["warnings"].as_array().map_or_else(Vec::new, |w| {
            w.iter().map(|w| w.as_str().unwrap().to_owned()).collect()
        })
    };
    // Half the parameters: every group the images pass through keeps channels.
    let loose = quick_mobile_search(
        &data,
        &dir.path().join("loose"),
        "mobilenetv2",
        &["--params-budget", "50%", "--cost", "params"],
    );
    assert!(warnings(&loose).is_empty(), "{loose}");
    // A twentieth: the late coupled streams and `last`, which hold most of the parameters,
    // go down to one channel, and the warning names them with the way out.
    let tight = quick_mobile_search(
        &data,
        &dir.path().join("tight"),
        "mobilenetv2",
        &["--params-budget", "5%", "--cost", "params"],
    );
    let said = warnings(&tight);
    assert_eq!(said.len(), 1, "{tight}");
    let warning = &said[0];
    for needle in [
        "channel groups every image passes through kept a single channel",
        "s6b1.project+s6b2.project+s6b3.project at 1 of 56",
        "last at 1 of 1280",
        "give a larger --params-budget",
        "--cost uniform",
    ] {
        assert!(warning.contains(needle), "{needle}: {warning}");
    }
    let channels = tight["channels"].as_array().unwrap();
    let last = channels.iter().find(|c| c["layers"] == "last").unwrap();
    assert_eq!(last["pruned"], 1, "{channels:?}");
}

#[test]
fn a_folder_keeps_its_images_shape_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("marks");
    for (split, count) in [("train", 8), ("val", 2)] {
        for (class, shade) in [("dark", 20u8), ("light", 230u8)] {
            let folder = data.join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..count {
                image::GrayImage::from_pixel(8, 8, image::Luma([shade]))
                    .save(folder.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    let search = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "search",
            "--dataset",
            "folder",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs-weights",
            "1",
            "--epochs-gates",
            "1",
            "--epochs-finetune",
            "1",
            "--batch-size",
            "8",
        ];
        args.extend_from_slice(extra);
        let run = dnal(&args);
        assert!(run.status.success(), "{}", stderr(&run));
        let read = |file: &str| -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(out.join(file)).unwrap()).unwrap()
        };
        (read("arch.json"), read("report.json"))
    };
    // 8x8 grayscale stays 1x8x8 (not 3x32x32), shifted but not mirrored.
    let (arch, report) = search("own", &[]);
    assert_eq!(
        arch["input"],
        serde_json::json!({"channels": 1, "height": 8, "width": 8})
    );
    assert_eq!(report["augmentation"], "shift 1");
    // What the options say wins, and is recorded.
    let (arch, report) = search(
        "told",
        &[
            "--input-size",
            "12x12",
            "--channels",
            "3",
            "--augment",
            "none",
        ],
    );
    assert_eq!(
        arch["input"],
        serde_json::json!({"channels": 3, "height": 12, "width": 12})
    );
    assert_eq!(report["augmentation"], "none");
    assert_eq!(report["config"]["image_size"], serde_json::json!([12, 12]));
}

#[test]
fn search_with_precision_int8_ends_with_quantisation_aware_training() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = quick_search(
        &run,
        &[
            "--precision",
            "int8",
            "--epochs-qat",
            "1",
            "--calibration-images",
            "64",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("qat epoch"), "{}", stderr(&out));
    // OUT keeps the f32 export; OUT/int8 holds the trained int8 one.
    let f32_arch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("arch.json")).unwrap()).unwrap();
    assert_eq!(f32_arch["version"], 1, "{f32_arch}");
    let arch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("int8/arch.json")).unwrap()).unwrap();
    assert_eq!(arch["precision"], "int8");
    assert_eq!(arch["quantization"]["calibration"]["images"], 64);
    assert_eq!(arch["quantization"]["calibration"]["training"]["epochs"], 1);
    // By default the f32 network teaches the int8 one.
    assert_eq!(
        arch["quantization"]["calibration"]["training"]["distill"],
        1.0
    );
    assert!(
        stderr(&out).contains("the f32 network as teacher"),
        "{}",
        stderr(&out)
    );

    // report.json gives both networks: top-1 and weight bytes, and the training's epochs.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap();
    let int8 = &report["int8"];
    assert_eq!(int8["f32"]["top1"], report["pruned"]["top1"]);
    assert!(int8["int8"]["top1"].is_number() && int8["post_training"]["top1"].is_number());
    assert_eq!(int8["history"].as_array().unwrap().len(), 1);
    assert_eq!(int8["history"][0]["stage"], "qat");
    assert_eq!(int8["f32_agreement"]["images"], int8["int8"]["images"]);
    let (f32_bytes, int8_bytes) = (
        int8["f32_weight_bytes"].as_f64().unwrap(),
        int8["int8_weight_bytes"].as_f64().unwrap(),
    );
    assert!(int8_bytes < 0.3 * f32_bytes, "{int8_bytes} of {f32_bytes}");

    let e = dnal(&["eval", "--export", run.join("int8").to_str().unwrap()]);
    assert!(e.status.success(), "{}", stderr(&e));
    let text = String::from_utf8_lossy(&e.stdout);
    assert!(
        text.contains("(int8)") && text.contains("reproduced exactly"),
        "{text}"
    );

    // int8 scales need calibration images: refused before any training. (A table of the
    // wrong precision is refused too: tests/tests/latency.rs.)
    refused(
        &[
            "search",
            "--dataset",
            "synthetic",
            "--out",
            dir.path().join("none").to_str().unwrap(),
            "--precision",
            "int8",
            "--calibration-images",
            "0",
        ],
        "--calibration-images",
    );
}

#[test]
fn quantize_writes_an_int8_export_that_eval_reproduces_and_never_overwrites_f32() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = quick_search(&run, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let int8 = dir.path().join("run-int8");
    let (run_s, int8_s) = (run.to_str().unwrap(), int8.to_str().unwrap());

    let q = dnal(&[
        "quantize",
        "--export",
        run_s,
        "--out",
        int8_s,
        "--calibration-images",
        "64",
    ]);
    assert!(q.status.success(), "{}", stderr(&q));
    let text = String::from_utf8_lossy(&q.stdout);
    assert!(text.contains("calibrated on 64 training images"), "{text}");
    assert!(text.contains("f32") && text.contains("int8"), "{text}");
    assert!(text.contains("int8 answers as f32 on"), "{text}");
    let arch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(int8.join("arch.json")).unwrap()).unwrap();
    assert_eq!(arch["precision"], "int8");
    assert_eq!(arch["quantization"]["calibration"]["images"], 64);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(int8.join("report.json")).unwrap()).unwrap();
    let agreement = &report["quantization"]["f32_agreement"];
    let same = agreement["same_class"].as_u64().unwrap();
    assert!(same <= agreement["images"].as_u64().unwrap(), "{report}");

    let e = dnal(&["eval", "--export", int8_s]);
    assert!(e.status.success(), "{}", stderr(&e));
    let text = String::from_utf8_lossy(&e.stdout);
    assert!(text.contains("(int8)"), "{text}");
    assert!(text.contains("reproduced exactly"), "{text}");

    // Deployed, the int8 firmware gives the integer reference's codes bit for bit, and its
    // top-1 is compared with the f32 network it came from.
    let fw = dir.path().join("fw8");
    let d = dnal(&[
        "deploy",
        "--export",
        int8_s,
        "--board",
        "host",
        "--out",
        fw.to_str().unwrap(),
        "--run",
        "--images",
        "4",
    ]);
    assert!(d.status.success(), "{}", stderr(&d));
    let text = String::from_utf8_lossy(&d.stdout);
    assert!(
        text.contains("(host, int8)") || text.contains(", int8)"),
        "{text}"
    );
    assert!(
        text.contains("parity with int8 reference_forward on 4 images: max |diff| 0.000e0"),
        "{text}"
    );
    assert!(
        text.contains("top-1 agreement with the f32 network"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fw.join("deploy.json")).unwrap()).unwrap();
    assert_eq!(report["precision"], "int8");
    assert_eq!(report["f32_agreement"]["images"], 4);

    // Never over an f32 export (its own folder included), never without calibration images.
    let before = std::fs::read(run.join("weights.safetensors")).unwrap();
    let err = refused(&["quantize", "--export", run_s, "--out", run_s], "--out");
    assert!(err.contains("f32 export"), "{err}");
    assert_eq!(
        std::fs::read(run.join("weights.safetensors")).unwrap(),
        before
    );
    refused(
        &[
            "quantize",
            "--export",
            run_s,
            "--out",
            int8_s,
            "--calibration-images",
            "0",
        ],
        "--calibration-images",
    );
    refused(
        &[
            "quantize",
            "--export",
            run_s,
            "--out",
            int8_s,
            "--epochs",
            "1",
            "--distill",
            "2",
        ],
        "--distill",
    );
    // Quantisation-aware training from the export: the report says how it trained and what
    // post-training quantisation alone gave, and eval reproduces the trained int8 network.
    let qat = dir.path().join("run-qat");
    let q = dnal(&[
        "quantize",
        "--export",
        run_s,
        "--out",
        qat.to_str().unwrap(),
        "--calibration-images",
        "64",
        "--epochs",
        "1",
    ]);
    assert!(q.status.success(), "{}", stderr(&q));
    let text = String::from_utf8_lossy(&q.stdout);
    assert!(
        text.contains(
            "1 epochs of quantisation-aware training, the f32 network as teacher (weight 1, \
             temperature 1)"
        ),
        "{text}"
    );
    assert!(text.contains("post-training quantisation alone"), "{text}");
    assert!(stderr(&q).contains("qat epoch 1"), "{}", stderr(&q));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(qat.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["quantization"]["training"]["epochs"], 1);
    assert!(report["quantization"]["post_training"]["top1"].is_number());
    let trained = std::fs::read(qat.join("weights.safetensors")).unwrap();
    assert_ne!(
        trained,
        std::fs::read(int8.join("weights.safetensors")).unwrap(),
        "training changed the int8 weights"
    );
    let e = dnal(&["eval", "--export", qat.to_str().unwrap()]);
    assert!(e.status.success(), "{}", stderr(&e));
    assert!(
        String::from_utf8_lossy(&e.stdout).contains("reproduced exactly"),
        "{}",
        String::from_utf8_lossy(&e.stdout)
    );

    // An int8 export is not an f32 one to quantise again.
    let other = dir.path().join("x");
    refused(
        &[
            "quantize",
            "--export",
            int8_s,
            "--out",
            other.to_str().unwrap(),
        ],
        "is an int8 export",
    );
}
