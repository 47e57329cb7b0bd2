//! A short search on a Fashion-MNIST subset, end to end: it must beat chance by a wide margin
//! and remove channels; the export must reproduce its reported accuracy exactly; and the
//! firmware generated from it must give burn's logits (within 1e-4) and burn's top-1 on every
//! test image, natively and in QEMU on Cortex-M4, Cortex-M7 and aarch64.
//!
//! The search runs once and the tests share it.

use std::path::PathBuf;
use std::sync::LazyLock;

use dnal::backend::Backend;
use dnal::config::SearchConfig;
use dnal::deploy::{DeployOptions, deploy_export};
use dnal::progress::Silent;
use dnal::report::Report;
use dnal_export::Export;

struct Searched {
    _dir: tempfile::TempDir,
    out: PathBuf,
    report: Report,
}

static SEARCH: LazyLock<Searched> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fmnist");
    let config = SearchConfig {
        dataset: "fashion-mnist".into(),
        train_limit: Some(3000),
        test_limit: Some(1000),
        epochs_weights: 3,
        epochs_gates: 2,
        epochs_finetune: 2,
        backend: Backend::Cpu,
        // A parent trained this briefly needs a gentler push than the default, which is tuned
        // for the full data set (BENCHMARKS.md).
        lambda: 2e-3,
        seed: 7,
        ..SearchConfig::default()
    };
    let report = dnal::search::search(config, &out, &mut Silent).expect("the search runs");
    Searched {
        _dir: dir,
        out,
        report,
    }
});

#[test]
fn a_short_search_learns_and_prunes() {
    let report = &SEARCH.report;
    // Learned: chance is 10%.
    assert!(
        report.parent.top1 > 0.6,
        "parent top-1 {}",
        report.parent.top1
    );
    assert!(
        report.pruned.top1 > 0.5,
        "pruned top-1 {}",
        report.pruned.top1
    );
    // Pruned for real: fewer MACs and parameters, and every layer kept something.
    assert!(report.pruned.flops < report.parent.flops, "{report:?}");
    assert!(report.pruned.params < report.parent.params);
    assert!(
        report
            .channels
            .iter()
            .all(|g| g.pruned >= 1 && g.pruned <= g.parent)
    );
    assert!(report.channels.iter().any(|g| g.pruned < g.parent));
    // The report has its stages and the gate history as delta grew to 1e4.
    let names: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["weights", "gates", "prune", "finetune", "export"]);
    // The parent is exported beside the pruned network, for comparisons on a board.
    let parent = Export::load(SEARCH.out.join("parent")).expect("the parent export");
    assert_eq!(parent.arch().flops, report.parent.flops);
    assert_eq!(report.gates.len(), 2);
    assert!((report.gates.last().unwrap().delta - 1e4).abs() < 1e-6);

    // report.json on disk has the fields the interface promises.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(SEARCH.out.join("report.json")).unwrap()).unwrap();
    for net in ["parent", "pruned"] {
        for field in ["top1", "flops", "params"] {
            assert!(json[net][field].is_number(), "{net}.{field} missing");
        }
    }
    for field in ["name", "epochs", "seconds"] {
        assert!(
            !json["stages"][0][field].is_null(),
            "stages[0].{field} missing"
        );
    }
}

#[test]
fn the_export_reproduces_the_reported_accuracy_exactly() {
    let report = &SEARCH.report;
    let export = Export::load(&SEARCH.out).expect("a valid export");
    assert_eq!(export.arch().flops, report.pruned.flops);
    assert_eq!(export.arch().params, report.pruned.params);
    let eval = dnal::eval::evaluate_export(&SEARCH.out, None, None, Backend::Cpu).unwrap();
    assert_eq!(eval.accuracy.images, 1000);
    assert_eq!(
        eval.accuracy.top1, report.pruned.top1,
        "eval does not reproduce the report"
    );
    assert_eq!(
        eval.reproduction,
        Some(dnal::eval::Reproduction::Exact {
            hits: report.pruned.top1_hits.expect("the report counts hits"),
            images: 1000
        })
    );
}

#[test]
fn firmware_from_the_real_export_matches_burn_on_every_board() {
    let fw = tempfile::tempdir().unwrap();
    for board in ["host", "cortex-m4-qemu", "cortex-m7-qemu", "aarch64-qemu"] {
        let options = DeployOptions {
            export_dir: SEARCH.out.clone(),
            board: board.into(),
            out_dir: fw.path().join(board),
            run: true,
            images: 8,
            runs: 1,
            data_dir: None,
            latency_table: None,
            winograd: false,
        };
        let report = deploy_export(&options).unwrap_or_else(|e| panic!("{board}: {e}"));
        let parity = report.parity.as_ref().expect("a run measures parity");
        assert_eq!(
            parity.reference, "burn",
            "{board}: parity must be against burn"
        );
        assert_eq!(parity.images, 8, "{board}");
        assert!(
            parity.max_abs_diff <= 1e-4,
            "{board}: logits differ by {}",
            parity.max_abs_diff
        );
        assert_eq!(parity.top1_agreement, 1.0, "{board}: top-1 disagrees");
        let cost = report.cost.as_ref().expect("a run measures cost");
        assert!(cost.per_inference > 0.0, "{board}");
        if board != "host" {
            assert_eq!(cost.unit, "instructions", "{board}");
            assert!(report.flash_bytes <= report.flash_budget_bytes, "{board}");
        }
        assert!(
            fw.path().join(board).join("deploy.json").exists(),
            "{board}"
        );
    }
}

#[test]
fn the_real_export_quantises_and_trains_to_int8_and_keeps_its_accuracy() {
    use dnal::quantize::{QuantizeOptions, quantize_export};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fmnist-int8");
    let options = QuantizeOptions {
        export_dir: SEARCH.out.clone(),
        out_dir: out.clone(),
        calibration_images: 500,
        // One epoch of quantisation-aware training on the search's 3,000 training images,
        // with the f32 export as teacher (the default).
        training: Some(dnal::quantize::aware::AwareTraining {
            epochs: 1,
            lr: 0.001,
            momentum: 0.9,
            weight_decay: 5e-4,
            distill: dnal::quantize::aware::DEFAULT_DISTILL,
            distill_temperature: dnal::quantize::aware::DEFAULT_DISTILL_TEMPERATURE,
        }),
        data_dir: None,
        test_limit: None,
        backend: Backend::Cpu,
    };
    let report = quantize_export(&options, &mut |_, _, _| {}).expect("quantises");
    assert_eq!(report.calibration_images, 500);
    assert_eq!(report.history.len(), 1);
    let ptq = report
        .post_training
        .expect("post-training quantisation measured too");
    assert!(
        (ptq.top1 - report.f32.top1).abs() <= 0.01,
        "f32 {} ptq {}",
        report.f32.top1,
        ptq.top1
    );
    // The f32 figure is the search's, and int8 loses at most a point (10 of 1000 images)
    // on the real test images. It may gain more: the epoch of quantisation-aware training is
    // one more epoch for a short search's undertrained network (seen: +1.3 pp), but not
    // more than such an epoch gives.
    assert_eq!(report.f32.top1, SEARCH.report.pruned.top1);
    assert_eq!(report.int8.images, 1000);
    assert!(
        (-1.0..=3.0).contains(&report.top1_change_pp),
        "f32 {} int8 {}",
        report.f32.top1,
        report.int8.top1
    );
    // Image by image, the hits that int8 gained and lost are the difference of the top-1
    // counts, and the networks answer alike on most images.
    let agreement = report
        .f32_agreement
        .expect("a new report compares the networks");
    assert_eq!(agreement.images, 1000);
    assert_eq!(
        report.int8.top1_hits as i64 - report.f32.top1_hits as i64,
        agreement.gained as i64 - agreement.lost as i64
    );
    assert!(agreement.fraction_same() > 0.9, "{agreement:?}");
    assert!(agreement.same_class + agreement.lost + agreement.gained <= 1000);
    // int8 weights, int32 biases and per-channel requantisation: under 0.3x the f32 bytes.
    assert!(
        (report.int8_weight_bytes as f64) < 0.3 * report.f32_weight_bytes as f64,
        "{} of {} bytes",
        report.int8_weight_bytes,
        report.f32_weight_bytes
    );
    // `dnal eval` reads the int8 export and reproduces its top-1 exactly.
    let eval = dnal::eval::evaluate_export(&out, None, None, Backend::Cpu).unwrap();
    assert_eq!(eval.precision, dnal_export::Precision::Int8);
    assert_eq!(
        eval.reproduction,
        Some(dnal::eval::Reproduction::Exact {
            hits: report.int8.top1_hits,
            images: 1000
        })
    );
}
