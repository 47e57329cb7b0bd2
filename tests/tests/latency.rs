//! Latency on the board steering the search: a profiled table, searches that refuse a table
//! that does not cover their model, a latency budget met on the board, and a sweep that
//! resumes without redoing finished points. Small synthetic data, cortex-m7-qemu.

use std::path::PathBuf;
use std::sync::LazyLock;

use dnal::arch_cost::CostWeighting;
use dnal::budget::Budget;
use dnal::config::SearchConfig;
use dnal::deploy::DeployOptions;
use dnal::progress::Silent;
use dnal::report::FitMeasurement;
use dnal::sweep::SweepPlan;
use dnal_export::Precision;
use dnal_firmware::latency::{LatencyTable, MeasurementLog};
use dnal_models::{GatePosition, NetPlan, Shape3, model_spec};

mod common;

const BOARD: &str = "cortex-m7-qemu";

/// A quick search with this file's lambda_a and seed (they override `config`'s).
fn small(config: SearchConfig) -> SearchConfig {
    common::quick_synthetic(SearchConfig {
        lambda: 1e-4,
        seed: 3,
        ..config
    })
}

/// The fit a latency budget keeps: the one measured closest under it.
fn closest_under(fits: &[FitMeasurement], budget_ms: f64) -> &FitMeasurement {
    fits.iter()
        .filter(|f| f.measured_ms <= budget_ms)
        .max_by(|a, b| a.measured_ms.total_cmp(&b.measured_ms))
        .unwrap_or_else(|| panic!("no fit measured under {budget_ms} ms: {fits:?}"))
}

/// A small latency-aware search held to `budget_ms` by the table at `table`.
fn within_ms(budget_ms: f64, table: PathBuf) -> SearchConfig {
    small(SearchConfig {
        cost: CostWeighting::Latency,
        budget: Some(Budget::LatencyMs(budget_ms)),
        latency_table: Some(table),
        ..SearchConfig::default()
    })
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
    dnal::latency::profile_model(
        &plan,
        BOARD,
        &path,
        &Default::default(),
        (Precision::F32, false),
    )
    .unwrap();
    Profiled { _dir: dir, path }
});

/// The same for int8 firmware.
static TABLE_INT8: LazyLock<Profiled> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latency-int8.json");
    let spec = model_spec("vgg-small", Shape3::new(1, 28, 28), 10).unwrap();
    let plan = NetPlan::new(spec, GatePosition::AfterBn).unwrap();
    dnal::latency::profile_model(
        &plan,
        BOARD,
        &path,
        &Default::default(),
        (Precision::Int8, false),
    )
    .unwrap();
    Profiled { _dir: dir, path }
});

#[test]
fn an_int8_search_meets_its_latency_budget_with_the_int8_firmware() {
    let dir = tempfile::tempdir().unwrap();
    let budget_ms = 30.0;
    let int8 = |config: SearchConfig| {
        small(SearchConfig {
            precision: Precision::Int8,
            epochs_qat: 1,
            calibration_images: 64,
            cost: CostWeighting::Latency,
            board: Some(BOARD.into()),
            ..config
        })
    };
    // A table of f32 firmware would steer an int8 search wrong: refused with the fix.
    let err = dnal::search::search(
        int8(SearchConfig {
            latency_table: Some(TABLE.path.clone()),
            ..SearchConfig::default()
        }),
        &dir.path().join("f32-table"),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--precision int8") && err.contains("f32 firmware"),
        "{err}"
    );

    let table = LatencyTable::load(&TABLE_INT8.path).unwrap();
    assert_eq!(table.precision, Precision::Int8);
    let config = int8(SearchConfig {
        budget: Some(Budget::LatencyMs(budget_ms)),
        latency_table: Some(TABLE_INT8.path.clone()),
        ..SearchConfig::default()
    });
    let run = dir.path().join("run");
    let report = dnal::search::search(config, &run, &mut Silent).unwrap();
    let fits = &report.budget.as_ref().unwrap().measured_fits;
    let latency = report.latency.clone().expect("measured on the board");
    eprintln!("{fits:?}\n{latency:?}");
    // Every fit was measured as int8 firmware, and the delivered int8 network meets the
    // budget on the board, with the table's prediction within 10%.
    let kept = closest_under(fits, budget_ms);
    assert!(
        (latency.measured_ms - kept.measured_ms).abs() <= 1e-3 * budget_ms,
        "{latency:?} {fits:?}"
    );
    assert!(latency.measured_ms <= budget_ms, "{latency:?}");
    assert!(latency.measured_ms >= 0.85 * budget_ms, "{latency:?}");
    assert!(latency.error_pct.abs() < 10.0, "{latency:?}");
    let deployed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.join(format!("firmware-{BOARD}/deploy.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(deployed["precision"], "int8");
    assert_eq!(
        deployed["parity"]["max_abs_diff"], 0.0,
        "{}",
        deployed["parity"]
    );
    assert!(report.int8.is_some());

    // And an f32 search refuses the int8 table.
    let err = dnal::search::search(
        small(SearchConfig {
            cost: CostWeighting::Latency,
            board: Some(BOARD.into()),
            latency_table: Some(TABLE_INT8.path.clone()),
            ..SearchConfig::default()
        }),
        &dir.path().join("f32-search"),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--precision f32") && err.contains("int8 firmware"),
        "{err}"
    );
}

/// `--winograd`: the search profiles its table with the 3x3 convolutions by Winograd and
/// measures its networks so; a table measured directly is refused with the fix.
#[test]
fn an_int8_search_by_winograd_profiles_and_measures_by_winograd() {
    let dir = tempfile::tempdir().unwrap();
    let budget_ms = 25.0;
    let config = |latency_table: Option<PathBuf>| {
        small(SearchConfig {
            precision: Precision::Int8,
            winograd: true,
            epochs_qat: 0,
            calibration_images: 64,
            cost: CostWeighting::Latency,
            budget: Some(Budget::LatencyMs(budget_ms)),
            board: Some(BOARD.into()),
            latency_table,
            ..SearchConfig::default()
        })
    };
    let err = dnal::search::search(
        config(Some(TABLE_INT8.path.clone())),
        &dir.path().join("direct-table"),
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("run directly") && err.contains("drop --winograd"),
        "{err}"
    );

    let run = dir.path().join("run");
    let report = dnal::search::search(config(None), &run, &mut Silent).unwrap();
    let table = LatencyTable::load(run.join("latency.json")).unwrap();
    assert!(table.winograd && table.precision == Precision::Int8);
    let latency = report.latency.clone().expect("measured on the board");
    assert!(latency.measured_ms <= budget_ms, "{latency:?}");
    assert!(latency.error_pct.abs() < 10.0, "{latency:?}");
    let deployed: serde_json::Value = serde_json::from_slice(
        &std::fs::read(run.join(format!("firmware-{BOARD}/deploy.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(deployed["winograd"], true);
    assert_eq!(deployed["parity"]["max_abs_diff"], 0.0);
}

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
    let latency = report.latency.clone().expect("measured on the board");
    // The fitted network was measured on the board before finetuning, and fitted again
    // while it measured over the budget or well under it: the budget holds on the
    // measurement, and the fit kept is the one measured closest under it.
    let fits = &report.budget.as_ref().unwrap().measured_fits;
    eprintln!("{fits:?}\n{latency:?}");
    let kept = closest_under(fits, budget_ms);
    assert_eq!(fits[0].target_ms, budget_ms);
    // The finetuned network has the fitted one's architecture, so the same cost on the board.
    assert!(latency.measured_ms <= budget_ms, "{latency:?}");
    assert!(
        (latency.measured_ms - kept.measured_ms).abs() <= 1e-3 * budget_ms,
        "{latency:?} {kept:?}"
    );
    assert!(latency.measured_ms >= 0.85 * budget_ms, "{latency:?}");
    assert!(latency.error_pct.abs() < 10.0, "{latency:?}");
    // The expected latency was reported every gate epoch.
    assert!(report.gates.iter().all(|g| g.expected_ms.is_some()));
}

/// vgg-small's table with every cost scaled by `factor`: a table that no longer matches its
/// board, as one made on a quieter board (or before a kernel change) would.
fn scaled_table(dir: &std::path::Path, factor: f64) -> PathBuf {
    fn scale(value: &mut serde_json::Value, factor: f64, in_cost: bool) {
        match value {
            serde_json::Value::Number(n) if in_cost => {
                *value = serde_json::json!(n.as_f64().unwrap() * factor);
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| scale(v, factor, in_cost))
            }
            serde_json::Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    scale(v, factor, in_cost || key == "cost" || key == "overhead");
                }
            }
            _ => {}
        }
    }
    let mut table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&TABLE.path).unwrap()).unwrap();
    scale(&mut table, factor, false);
    let path = dir.join("scaled-latency.json");
    std::fs::write(&path, serde_json::to_string(&table).unwrap()).unwrap();
    path
}

#[test]
fn a_flops_budget_on_a_board_builds_its_fit_for_the_board_before_finetuning() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of the table, so that the measurements kept beside it are this search's alone.
    let table = scaled_table(dir.path(), 1.0);
    let config = small(SearchConfig {
        budget: Some(Budget::FlopsShare(0.5)),
        latency_table: Some(table.clone()),
        ..SearchConfig::default()
    });
    let report = dnal::search::search(config, &dir.path().join("run"), &mut Silent).unwrap();
    let budget = report.budget.expect("a budgeted search reports its budget");
    // vgg-small fits the board at any size, so the first fit is kept; only a latency budget
    // keeps its fits' measurements in the report.
    assert!(budget.oversized_fits.is_empty(), "{budget:?}");
    assert!(budget.measured_fits.is_empty(), "{budget:?}");
    assert!(report.pruned.flops as f64 <= budget.budget.target());
    // Built and measured twice: the fit before finetuning, then the finetuned network.
    let log = MeasurementLog::for_table(&LatencyTable::load(&table).unwrap()).unwrap();
    assert_eq!(log.measurements.len(), 2, "{log:?}");
    assert!(report.latency.is_some());
}

#[test]
fn a_table_that_predicts_high_leaves_no_budget_unspent() {
    let dir = tempfile::tempdir().unwrap();
    let budget_ms = 40.0;
    // The table predicts 5% over what the board measures, as a new int8 table did (4%).
    let table = scaled_table(dir.path(), 1.05);
    let config = within_ms(budget_ms, table);
    let report = dnal::search::search(config, &dir.path().join("run"), &mut Silent).unwrap();
    let fits = &report.budget.as_ref().unwrap().measured_fits;
    // The first fit's prediction met the budget and the board measured it well under; the
    // next aimed higher by the table's error.
    assert!(fits.len() >= 2, "{fits:?}");
    assert!(fits[0].measured_ms < 0.98 * budget_ms, "{fits:?}");
    assert!(fits[1].target_ms > fits[0].predicted_ms, "{fits:?}");
    // The network kept is the fit measured closest under the budget, and the finetuned
    // network (the same architecture) measures the same.
    let best = closest_under(fits, budget_ms).measured_ms;
    assert!(best > fits[0].measured_ms, "{fits:?}");
    let latency = report.latency.expect("measured on the board");
    assert!(latency.measured_ms <= budget_ms, "{latency:?}");
    assert!(
        (latency.measured_ms - best).abs() < 1e-3 * best,
        "{latency:?} {fits:?}"
    );
}

#[test]
fn a_table_that_predicts_low_is_corrected_by_measuring_the_fit() {
    let dir = tempfile::tempdir().unwrap();
    let budget_ms = 40.0;
    // The table predicts 4% under what the board measures.
    let table = scaled_table(dir.path(), 0.96);
    let config = within_ms(budget_ms, table.clone());
    let report = dnal::search::search(config, &dir.path().join("run"), &mut Silent).unwrap();
    let fits = &report.budget.as_ref().unwrap().measured_fits;
    // The first fit's prediction met the budget but the board measured it over; the next fit
    // aimed lower by the table's error, and one measured at or under it (it is kept; later
    // ones may aim higher again and go over).
    assert!(fits.len() >= 2, "{fits:?}");
    assert!(fits[0].predicted_ms <= budget_ms, "{fits:?}");
    assert!(fits[0].measured_ms > budget_ms, "{fits:?}");
    assert!(fits[1].target_ms < fits[0].predicted_ms, "{fits:?}");
    assert!(fits.iter().any(|f| f.measured_ms <= budget_ms), "{fits:?}");
    // The gate stage's landing is reported against the budget, not the lowered aim.
    let fit = &report.budget.as_ref().unwrap().fit;
    assert!(fit.target < budget_ms, "{fit:?}");
    let landing = 100.0 * (fit.cost_at_zero / budget_ms - 1.0);
    assert!((fit.landing_pct - landing).abs() < 1e-9, "{fit:?}");
    let latency = report.latency.expect("measured on the board");
    assert!(latency.measured_ms <= budget_ms, "{latency:?}");
    // Not tightened further than the table's error asks: within 10% of the budget.
    assert!(latency.measured_ms >= 0.9 * budget_ms, "{latency:?}");

    // The table learned: every measurement (each fit and the final network) is kept beside
    // it, and the correction they fit removes the table's 4%.
    let log_path = MeasurementLog::path_beside(&table);
    assert_eq!(latency.measurements.as_deref(), Some(log_path.as_path()));
    let log = MeasurementLog::for_table(&LatencyTable::load(&table).unwrap()).unwrap();
    assert_eq!(log.measurements.len(), fits.len() + 1, "{log:?}");
    let errors = latency.errors.expect("errors over the kept measurements");
    assert!((errors.table_pct - 4.0).abs() < 1.0, "{errors:?}");
    assert!(errors.corrected_pct.unwrap() < 0.5, "{errors:?}");
    let scale = log.correction().unwrap().scale;
    assert!((scale * 0.96 - 1.0).abs() < 0.01, "{scale}");

    // The table's 4% showed in the first fit: measured over its prediction by about that
    // much (not over the budget by that much: the fit lands up to a channel's cost under
    // its aim, 2.8% once the gates were scaled rather than clamped into their bound).
    assert!(
        fits[0].measured_ms > 1.02 * fits[0].predicted_ms,
        "{fits:?}"
    );
    // A second search with the table aims with the correction: its first fit measures within
    // the board's residual noise of the budget (not 4% over), and its final prediction is
    // within 1% of the board.
    let config = within_ms(budget_ms, table.clone());
    let again = dnal::search::search(config, &dir.path().join("again"), &mut Silent).unwrap();
    let fits = &again.budget.as_ref().unwrap().measured_fits;
    assert!(fits[0].measured_ms <= 1.005 * budget_ms, "{fits:?}");
    assert!(fits.iter().any(|f| f.measured_ms <= budget_ms), "{fits:?}");
    let latency = again.latency.expect("measured on the board");
    let corrected = latency.corrected_ms.expect("a correction was learned");
    assert!(
        (corrected - latency.measured_ms).abs() < 0.01 * latency.measured_ms,
        "{latency:?}"
    );
    assert!(latency.measured_ms >= 0.9 * budget_ms, "{latency:?}");

    // `dnal deploy --latency-table` checks and keeps its measurement the same way.
    let kept = MeasurementLog::for_table(&LatencyTable::load(&table).unwrap())
        .unwrap()
        .measurements
        .len();
    let deployed = dnal::deploy::deploy_export(&DeployOptions {
        export_dir: dir.path().join("run"),
        board: BOARD.into(),
        out_dir: dir.path().join("fw"),
        run: true,
        images: 2,
        runs: 1,
        data_dir: None,
        latency_table: Some(table.clone()),
        winograd: false,
    })
    .unwrap();
    let check = deployed.prediction.expect("checked against the table");
    assert!((check.error_pct + 4.0).abs() < 1.0, "{check:?}");
    assert!(check.corrected_error_pct.unwrap().abs() < 0.5, "{check:?}");
    // Layer by layer: every layer of the export, whose predictions add up to the table's,
    // and the layers most off named first.
    let arch = dnal_export::Export::load(dir.path().join("run"))
        .unwrap()
        .arch()
        .clone();
    let names: Vec<&str> = check.per_layer.iter().map(|l| l.name.as_str()).collect();
    let layers: Vec<&str> = arch.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, layers);
    let overhead = LatencyTable::load(&table).unwrap().overhead;
    let summed: f64 = check.per_layer.iter().map(|l| l.predicted).sum::<f64>() + overhead;
    assert!(
        (summed - check.predicted).abs() < 1e-6 * check.predicted,
        "{check:?}"
    );
    let off = |l: &dnal_firmware::latency::LayerCheck| (l.predicted - l.measured).abs();
    let most = check.most_off(3);
    assert!(check.per_layer.iter().all(|l| off(l) <= off(most[0])));
    let said = dnal::deploy::describe_prediction(&check);
    assert!(
        said.contains(&format!(
            "layers most off, in instructions: {}",
            most[0].name
        )),
        "{said}"
    );
    let on_disk: dnal_firmware::DeployReport =
        serde_json::from_slice(&std::fs::read(dir.path().join("fw/deploy.json")).unwrap()).unwrap();
    assert_eq!(on_disk.prediction, Some(check));
    let log = MeasurementLog::for_table(&LatencyTable::load(&table).unwrap()).unwrap();
    assert_eq!(log.measurements.len(), kept + 1);
    assert!(
        log.measurements
            .last()
            .unwrap()
            .what
            .starts_with("dnal deploy of")
    );
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
        from_weights: None,
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
    // The parent fits this board, so it is measured too.
    assert!(report.parent.measured_ms.is_some(), "{:?}", report.parent);
    assert_eq!(report.parent.not_measured, None);
    assert!(report.missing.is_empty());
    for point in &report.points {
        let budget = point.budget_ms.unwrap();
        assert!(point.predicted_ms <= budget, "{point:?}");
        assert!(point.measured_ms.unwrap() <= budget, "{point:?}");
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

    // A second sweep sharing this one's weight stage, as an int8 sweep or one on another board
    // would: it trains no parent of its own and starts from the same one.
    let sharing_dir = tempfile::tempdir().unwrap();
    let sharing = SweepPlan {
        budgets_ms: vec![60.0],
        costs: vec![CostWeighting::Flops],
        from_weights: Some(dir.path().to_path_buf()),
        ..plan.clone()
    };
    dnal::sweep::start(&sharing, sharing_dir.path()).unwrap();
    let shared = dnal::sweep::resume(sharing_dir.path(), &mut Silent).unwrap();
    assert_eq!(shared.points.len(), 1, "{shared:?}");
    assert_eq!(shared.parent.top1, report.parent.top1);
    assert_eq!(shared.parent.params, report.parent.params);
    assert_eq!(
        shared.cost.weights_from.as_deref(),
        Some(dir.path().join("weights").as_path())
    );
    assert_eq!(shared.cost.weight_epochs, 2);
    assert_eq!(shared.cost.sweep_epochs, shared.cost.point_epochs);
    let final_weights = |root: &std::path::Path| {
        let folder = root.join("weights/checkpoint/weights-final");
        let mut files: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                (
                    path.file_name().unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    assert!(!final_weights(dir.path()).is_empty());
    assert_eq!(final_weights(sharing_dir.path()), final_weights(dir.path()));
    assert!(
        std::fs::read_to_string(sharing_dir.path().join("sweep.md"))
            .unwrap()
            .contains("this sweep ran none of it")
    );
    // A weight stage of another seed is refused before anything is written.
    let mismatch_dir = tempfile::tempdir().unwrap();
    let mismatch = SweepPlan {
        base: SearchConfig {
            seed: sharing.base.seed + 1,
            ..sharing.base.clone()
        },
        ..sharing
    };
    let err = dnal::sweep::start(&mismatch, mismatch_dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("seed"), "{err}");
    assert!(!mismatch_dir.path().join("sweep-plan.json").exists());

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
