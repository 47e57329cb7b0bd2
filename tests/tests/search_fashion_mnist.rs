//! A short search on a Fashion-MNIST subset, end to end: it must beat chance by a wide margin
//! and remove channels, and the export must reproduce its reported accuracy exactly.

use dnal::backend::Backend;
use dnal::config::SearchConfig;
use dnal::progress::Silent;
use dnal_device::export::Export;

#[test]
fn a_short_search_learns_prunes_exports_and_reproduces_its_accuracy() {
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
        seed: 7,
        ..SearchConfig::default()
    };
    let report = dnal::search::search(config, &out, &mut Silent).expect("the search runs");

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
    assert_eq!(report.gates.len(), 2);
    assert!((report.gates.last().unwrap().delta - 1e4).abs() < 1e-6);

    // report.json on disk has the fields the interface promises.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    for net in ["parent", "pruned"] {
        for field in ["top1", "flops", "params"] {
            assert!(json[net][field].is_number(), "{net}.{field} missing");
        }
    }
    assert!(json["stages"][0]["seconds"].is_number());

    // The export loads, its cost matches the report, and `dnal eval` reproduces top-1.
    let export = Export::load(&out).expect("a valid export");
    assert_eq!(export.arch().flops, report.pruned.flops);
    assert_eq!(export.arch().params, report.pruned.params);
    let eval = dnal::eval::evaluate_export(&out, None, None, Backend::Cpu).unwrap();
    assert_eq!(eval.accuracy.images, 1000);
    assert_eq!(
        eval.accuracy.top1, report.pruned.top1,
        "eval does not reproduce the report"
    );
    assert_eq!(eval.reported_top1, Some(report.pruned.top1));
}
