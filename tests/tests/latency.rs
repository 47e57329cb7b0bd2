//! Latency on the board steering the search: a profiled table, searches that refuse a table
//! that does not cover their model, a latency budget met on the board, and a sweep that
//! resumes without redoing finished points. Small synthetic data, cortex-m7-qemu.

use std::path::PathBuf;
use std::sync::LazyLock;

use dnal::arch_cost::CostWeighting;
use dnal::budget::Budget;
use dnal::config::SearchConfig;
use dnal::progress::Silent;
use dnal::sweep::SweepPlan;
use dnal_firmware::latency::LatencyTable;
use dnal_models::{GatePosition, NetPlan, Shape3, model_spec};

const BOARD: &str = "cortex-m7-qemu";

fn small(config: SearchConfig) -> SearchConfig {
    SearchConfig {
        dataset: "synthetic".into(),
        train_limit: Some(512),
        test_limit: Some(128),
        epochs_weights: 2,
        epochs_gates: 2,
        epochs_finetune: 1,
        batch_size: 64,
        lambda: 1e-4,
        seed: 3,
        ..config
    }
}

struct Profiled {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// vgg-small's table on the board, profiled once for the tests of this file.
static TABLE: LazyLock<Profiled> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latency.json");
    let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
    let plan = NetPlan::new(spec, GatePosition::AfterBn).unwrap();
    dnal::latency::profile_model(&plan, BOARD, &path, &Default::default()).unwrap();
    Profiled { _dir: dir, path }
});

#[test]
fn the_profiled_table_round_trips_and_covers_the_model() {
    let table = LatencyTable::load(&TABLE.path).unwrap();
    assert_eq!(table.board, BOARD);
    assert_eq!(table.model, "vgg-small");
    assert_eq!(table.unit, "instructions");
    assert!(table.clock.hz > 0.0);
    // Every layer of the model is in it, and a bigger layer costs more.
    for name in [
        "conv1", "conv2", "pool1", "conv3", "conv4", "pool2", "conv5", "gap", "fc",
    ] {
        assert!(table.layer(name).is_some(), "{name} missing");
    }
    let small = table.lookup("conv2", 8, 8).unwrap();
    let big = table.lookup("conv2", 32, 32).unwrap();
    assert!(big.cost > 4.0 * small.cost && !big.extrapolated);
}

#[test]
fn a_table_for_another_model_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = small(SearchConfig {
        model: "resnet20".into(),
        cost: CostWeighting::Latency,
        board: Some(BOARD.into()),
        latency_table: Some(TABLE.path.clone()),
        ..SearchConfig::default()
    });
    let err = dnal::search::search(config, dir.path(), &mut Silent).unwrap_err();
    // The mend is a table of this model on this board (`dnal` names the command for it).
    match &err {
        dnal::SearchError::Latency(e) => {
            assert_eq!(e.table_to_profile(), Some(("resnet20", BOARD)), "{err}")
        }
        other => panic!("not a latency table error: {other}"),
    }
    let err = err.to_string();
    assert!(
        err.contains("vgg-small") && err.contains("resnet20"),
        "{err}"
    );
    assert!(err.contains("a table of model resnet20"), "{err}");

    // A table made on another board is refused too.
    let config = small(SearchConfig {
        cost: CostWeighting::Latency,
        board: Some("cortex-m4-qemu".into()),
        latency_table: Some(TABLE.path.clone()),
        ..SearchConfig::default()
    });
    let err = dnal::search::search(config, &dir.path().join("b"), &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(BOARD) && err.contains("cortex-m4-qemu"),
        "{err}"
    );
}

#[test]
fn a_latency_budget_is_met_on_the_board() {
    let dir = tempfile::tempdir().unwrap();
    let budget_ms = 40.0;
    let config = small(SearchConfig {
        cost: CostWeighting::Latency,
        budget: Some(Budget::LatencyMs(budget_ms)),
        board: Some(BOARD.into()),
        latency_table: Some(TABLE.path.clone()),
        ..SearchConfig::default()
    });
    let report = dnal::search::search(config, dir.path(), &mut Silent).unwrap();
    let latency = report.latency.expect("measured on the board");
    // The fit keeps the table's prediction at or under the budget; the board's measurement
    // can differ from it by the table's error (under 1% on QEMU, BENCHMARKS.md).
    assert!(latency.predicted_ms <= budget_ms, "{latency:?}");
    assert!(latency.measured_ms <= 1.01 * budget_ms, "{latency:?}");
    assert!(latency.measured_ms >= 0.85 * budget_ms, "{latency:?}");
    assert!(latency.error_pct.abs() < 10.0, "{latency:?}");
    // The expected latency was reported every gate epoch.
    assert!(report.gates.iter().all(|g| g.expected_ms.is_some()));
}

#[test]
fn an_interrupted_sweep_resumes_without_redoing_finished_points() {
    let dir = tempfile::tempdir().unwrap();
    let plan = SweepPlan {
        base: small(SearchConfig {
            latency_table: Some(TABLE.path.clone()),
            ..SearchConfig::default()
        }),
        board: BOARD.into(),
        budgets_ms: vec![30.0, 60.0],
        costs: vec![CostWeighting::Latency],
    };
    dnal::sweep::start(&plan, dir.path()).unwrap();
    dnal::sweep::prepare(dir.path(), &mut Silent).unwrap();
    // The sweep "stops" after its first point.
    dnal::sweep::run_point(dir.path(), 0, &mut Silent).unwrap();
    let first = dir
        .path()
        .join("points")
        .join("latency-30ms")
        .join("report.json");
    let before = std::fs::metadata(&first).unwrap().modified().unwrap();
    let weights_state = dir.path().join("weights/checkpoint/state.json");
    let weights_before = std::fs::metadata(&weights_state)
        .unwrap()
        .modified()
        .unwrap();

    // Running it again finishes the rest and redoes nothing.
    let report = dnal::sweep::resume(dir.path(), &mut Silent).unwrap();
    assert_eq!(
        std::fs::metadata(&first).unwrap().modified().unwrap(),
        before
    );
    assert_eq!(
        std::fs::metadata(&weights_state)
            .unwrap()
            .modified()
            .unwrap(),
        weights_before
    );
    assert_eq!(report.points.len(), 2, "{report:?}");
    assert!(report.missing.is_empty());
    for point in &report.points {
        let budget = point.budget_ms.unwrap();
        assert!(point.predicted_ms <= budget, "{point:?}");
        assert!(point.measured_ms <= 1.01 * budget, "{point:?}");
        assert!(point.flash_bytes > 0 && point.ram_bytes > 0);
    }
    // One weight stage for two points.
    assert_eq!(report.cost.sweep_epochs, 2 + report.cost.point_epochs);
    assert_eq!(
        report.cost.separate_epochs,
        2 * 2 + report.cost.point_epochs
    );
    for file in ["sweep.json", "sweep.md", "pareto.svg", "pareto.png"] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
    // Another plan in the same folder is refused.
    let other = SweepPlan {
        budgets_ms: vec![10.0],
        ..plan
    };
    let err = dnal::sweep::start(&other, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another sweep") && err.contains("--resume"),
        "{err}"
    );
}
