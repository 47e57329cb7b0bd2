//! `dnal sweep`: one weight stage shared by a set of latency budgets, then, per budget and per
//! cost weighting, the gate stage, pruning, finetuning, deployment and measurement on the
//! board; `sweep.json` and an accuracy/latency Pareto plot.
//!
//! The folder:
//! ```text
//! DIR/sweep-plan.json            what to run (written first; later runs continue it)
//! DIR/latency.json               the board's latency table for the model (profiled once)
//! DIR/weights/                   the shared weight stage (a search folder stopped after it, or
//!                                forked from another's with `--from-weights`)
//! DIR/parent-firmware/           the unpruned network on the board
//! DIR/points/COST-BUDGETms/      one search folder per point (forked from weights/)
//! DIR/sweep.json, DIR/pareto.svg, DIR/pareto.png, DIR/sweep.md
//! ```
//! Every point is an independent job once `weights/` and `latency.json` exist, so points can
//! run on several machines at once (docs/sweeps.md shows a Slurm array and a Kubernetes
//! indexed Job).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use dnal_export::{Export, Precision};
use dnal_firmware::DeployError;
use dnal_firmware::latency::{LatencyTable, TABLE_FILE};
use dnal_models::NetPlan;
use serde::{Deserialize, Serialize};

use crate::arch_cost::CostWeighting;
use crate::budget::Budget;
use crate::checkpoint::{read_json, write_json};
use crate::config::SearchConfig;
use crate::data::{ExportTestSet, input_shape, load_dataset};
use crate::error::SearchError;
use crate::latency::{
    MEASURE_IMAGES, check_table_precision, check_table_winograd, measure_on_board, profile_model,
};
use crate::lock::OutputLock;
use crate::plot::{Front, Pareto, write_figure};
use crate::progress::SearchObserver;
use crate::quantize::{BOARD_CALIBRATION_IMAGES, quantize_for_board};
use crate::report::{LatencyReport, NetReport, Report, StageReport};
use crate::search::{
    PARENT_EXPORT, SearchState, finished_weight_stage, fork_after_weights, train_weights,
};

/// `DIR/sweep-plan.json`: what a sweep runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepPlan {
    /// The settings every point shares (data, model, epochs, seed, lambda_a's start).
    pub base: SearchConfig,
    /// The board measured and profiled.
    pub board: String,
    /// Latency budgets, in milliseconds at the table's clock.
    pub budgets_ms: Vec<f64>,
    /// The cost weightings compared (latency-aware first).
    pub costs: Vec<CostWeighting>,
    /// A finished weight stage to share instead of training one (a search folder, or another
    /// sweep's, whose `weights/` is used; see [`weight_stage_in`]): an int8 sweep, or one on
    /// another board, from the same trained parent as an f32 sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_weights: Option<PathBuf>,
}

/// One job of a sweep: a cost weighting at a budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepPoint {
    /// c_l of the gate stage.
    pub cost: CostWeighting,
    /// The latency budget.
    pub budget_ms: f64,
}

impl SweepPoint {
    /// The point's folder name under `DIR/points`.
    pub fn name(&self) -> String {
        format!("{}-{}ms", self.cost, self.budget_ms)
    }
}

const PLAN_FILE: &str = "sweep-plan.json";
const WEIGHTS_DIR: &str = "weights";
const POINTS_DIR: &str = "points";
const PARENT_FIRMWARE: &str = "parent-firmware";

/// The search folder holding the weight stage that `from` names: a sweep's shared `weights/`,
/// or `from` itself (a search).
pub fn weight_stage_in(from: &Path) -> PathBuf {
    if from.join(PLAN_FILE).exists() {
        from.join(WEIGHTS_DIR)
    } else {
        from.to_path_buf()
    }
}

impl SweepPlan {
    /// Every point, in order: budgets within each cost weighting.
    pub fn points(&self) -> Vec<SweepPoint> {
        self.costs
            .iter()
            .flat_map(|&cost| {
                self.budgets_ms
                    .iter()
                    .map(move |&budget_ms| SweepPoint { cost, budget_ms })
            })
            .collect()
    }

    fn check(&self) -> Result<(), SearchError> {
        let bad = |option: &'static str, value: String, reason: &str| {
            Err(SearchError::InvalidOption {
                option,
                value,
                reason: reason.into(),
            })
        };
        if self.budgets_ms.is_empty() {
            return bad("--budgets-ms", String::new(), "name at least one budget");
        }
        if let Some(b) = self
            .budgets_ms
            .iter()
            .find(|b| !(b.is_finite() && **b > 0.0))
        {
            return bad(
                "--budgets-ms",
                b.to_string(),
                "budgets are positive milliseconds",
            );
        }
        if self.costs.is_empty() {
            return bad("--costs", String::new(), "name at least one cost weighting");
        }
        // Every point runs on the sweep's board.
        SearchConfig {
            board: Some(self.board.clone()),
            ..self.base.clone()
        }
        .validate()?;
        // A given table must be of the firmware the points will run, before anything is
        // written (one gone since the sweep copied it is not needed again).
        if let Some(path) = &self.base.latency_table
            && path.exists()
        {
            self.check_table(&LatencyTable::load(path)?, path)?;
        }
        // A weight stage to share must be finished and must have trained this parent.
        if let Some(from) = &self.from_weights {
            finished_weight_stage(&weight_stage_in(from), &self.base)?;
        }
        Ok(())
    }

    /// Refuses a given table (from `path`) of other firmware than the points run.
    fn check_table(&self, table: &LatencyTable, path: &Path) -> Result<(), SearchError> {
        check_table_precision(table, path, "--latency-table", self.base.precision)?;
        check_table_winograd(table, path, "--latency-table", self.base.winograd)
    }

    /// The search config of one point.
    fn point_config(&self, point: SweepPoint, table: &Path) -> SearchConfig {
        SearchConfig {
            cost: point.cost,
            budget: Some(Budget::LatencyMs(point.budget_ms)),
            board: Some(self.board.clone()),
            latency_table: Some(table.to_path_buf()),
            ..self.base.clone()
        }
    }
}

/// Writes the plan into `dir`, or checks that the plan already there is the same one.
pub fn start(plan: &SweepPlan, dir: &Path) -> Result<(), SearchError> {
    plan.check()?;
    let _lock = OutputLock::acquire(dir)?;
    let path = dir.join(PLAN_FILE);
    if path.exists() {
        let existing: SweepPlan = read_json(&path)?;
        if &existing != plan {
            return Err(SearchError::InvalidOption {
                option: "--out",
                value: dir.display().to_string(),
                reason: format!(
                    "holds another sweep ({}); continue it with `dnal sweep --resume {}` or choose a new --out",
                    path.display(),
                    dir.display()
                ),
            });
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(SearchError::io(
        dir,
        "creating the sweep folder",
        "choose an --out folder you can write to",
    ))?;
    write_json(&path, plan)
}

/// The plan of the sweep in `dir`.
pub fn load_plan(dir: &Path) -> Result<SweepPlan, SearchError> {
    let path = dir.join(PLAN_FILE);
    if !path.exists() {
        return Err(SearchError::Checkpoint {
            path,
            reason: "missing: this folder holds no sweep; start one with `dnal sweep --budgets-ms ... --board ... --out DIR`".into(),
        });
    }
    read_json(&path)
}

/// The shared part: the latency table (profiled unless present) and the weight stage.
pub fn prepare(dir: &Path, observer: &mut dyn SearchObserver) -> Result<(), SearchError> {
    // The sweep folder's own files (the table); the weight stage locks its folder itself.
    let lock = OutputLock::acquire(dir)?;
    lock.remove_stale_temporaries(dir);
    let plan = load_plan(dir)?;
    let table_path = dir.join(TABLE_FILE);
    if !table_path.exists() {
        match &plan.base.latency_table {
            Some(given) => {
                let table = LatencyTable::load(given)?;
                plan.check_table(&table, given)?;
                table.write(&table_path)?;
            }
            None => {
                observer.message(&format!(
                    "profiling {} on {} into {}",
                    plan.base.model,
                    plan.board,
                    table_path.display()
                ));
                let dataset = load_dataset(&SearchConfig {
                    train_limit: Some(1),
                    test_limit: Some(1),
                    ..plan.base.clone()
                })?;
                let spec = plan
                    .base
                    .model_spec(input_shape(&dataset), dataset.train.num_classes())?;
                let net_plan = NetPlan::new(spec, plan.base.gate_position)?;
                profile_model(
                    &net_plan,
                    &plan.board,
                    &table_path,
                    &Default::default(),
                    (plan.base.precision, plan.base.winograd),
                )?;
            }
        }
    }
    let weights = dir.join(WEIGHTS_DIR);
    if let Some(from) = &plan.from_weights {
        share_weight_stage(&weight_stage_in(from), &weights, &plan.base, observer)?;
    }
    observer.message(&format!("shared weight stage in {}", weights.display()));
    train_weights(plan.base.clone(), &weights, observer)?;
    Ok(())
}

/// Makes `to` (once) a search folder stopped after the weight stage of the search in `from`:
/// its final checkpoint, checked against its checksums, and its parent export, written last
/// (a fork killed before it is finished here next time).
fn share_weight_stage(
    from: &Path,
    to: &Path,
    base: &SearchConfig,
    observer: &mut dyn SearchObserver,
) -> Result<(), SearchError> {
    let source_parent = from.join(PARENT_EXPORT);
    let parent = to.join(PARENT_EXPORT);
    if parent.join(dnal_export::ARCH_FILE).exists() {
        return Ok(());
    }
    if !source_parent.join(dnal_export::ARCH_FILE).exists() {
        return Err(SearchError::Checkpoint {
            path: source_parent,
            reason: "the weight stage to share has no parent export; continue that search (`dnal search --resume`) to write it".into(),
        });
    }
    if !crate::checkpoint::CheckpointDir::new(to)
        .state_path()
        .exists()
    {
        observer.message(&format!(
            "shared weight stage: the trained parent of {}, forked into {}",
            from.display(),
            to.display()
        ));
        fork_after_weights(from, to, base.clone())?;
    }
    Export::load(&source_parent)?
        .write(&parent)
        .map_err(SearchError::from)
}

/// Runs point `index` of the plan (after [`prepare`]), continuing it if it was interrupted
/// and doing nothing if it is finished.
pub fn run_point(
    dir: &Path,
    index: usize,
    observer: &mut dyn SearchObserver,
) -> Result<(), SearchError> {
    let plan = load_plan(dir)?;
    let points = plan.points();
    let point = *points
        .get(index)
        .ok_or_else(|| SearchError::InvalidOption {
            option: "--point",
            value: index.to_string(),
            reason: format!("the sweep has points 0 to {}", points.len() - 1),
        })?;
    let out = dir.join(POINTS_DIR).join(point.name());
    if out.join("report.json").exists() {
        observer.message(&format!("point {index} ({}) is done", point.name()));
        return Ok(());
    }
    let weights = dir.join(WEIGHTS_DIR);
    let weights_state: Option<SearchState> =
        read_json(&crate::checkpoint::CheckpointDir::new(&weights).state_path()).ok();
    if weights_state.is_none_or(|s| s.stage == crate::search::Stage::Weights) {
        return Err(SearchError::Checkpoint {
            path: weights,
            reason: "the shared weight stage has not finished; run `dnal sweep --out DIR --only prepare` first".into(),
        });
    }
    observer.message(&format!("point {index}: {}", point.name()));
    if !crate::checkpoint::CheckpointDir::new(&out)
        .state_path()
        .exists()
    {
        let config = plan.point_config(point, &dir.join(TABLE_FILE));
        fork_after_weights(&weights, &out, config)?;
    }
    crate::search::resume(&out, observer)?;
    Ok(())
}

/// One point of `sweep.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// `latency`, `flops` or `uniform` (c_l of the gate stage); `parent` for the unpruned net.
    pub cost: String,
    /// The budget (ms); `None` for the parent.
    pub budget_ms: Option<f64>,
    /// The latency table's prediction.
    pub predicted_ms: f64,
    /// Measured on the board; `None` for a network that does not fit it (the parent can be
    /// too big for a board its pruned networks fit), with the reason in `not_measured`.
    pub measured_ms: Option<f64>,
    /// `(predicted - measured) / measured`, percent; `None` where not measured.
    pub error_pct: Option<f64>,
    /// Why the network was not measured on the board, where it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_measured: Option<String>,
    /// Test top-1, a fraction: the int8 network's in an int8 sweep (the parent's is f32).
    pub top1: f64,
    /// MACs per image.
    pub flops: u64,
    /// Parameters.
    pub params: u64,
    /// Flash of the firmware, bytes (0 where not measured).
    pub flash_bytes: u64,
    /// Static RAM of the firmware, bytes (0 where not measured).
    pub ram_bytes: u64,
    /// Seconds of the point's own stages (gate stage, prune, finetune, export, measure).
    pub seconds: f64,
    /// Epochs of the point's own stages.
    pub epochs: usize,
    /// The point's folder.
    pub folder: PathBuf,
    /// How far the gate stage's own network (`s > 0`) was from the budget before the fit,
    /// percent (the point's `budget.fit.landing_pct`): near 0, the network is DNAL's choice at
    /// this budget; far under it, mostly the fit's. `None` for the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landing_pct: Option<f64>,
    /// Channels the fit reopened and closed to land on the budget. `None` for the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_channels: Option<FitChannels>,
}

/// What the fit changed in the gate stage's network: channels reopened (closed by `s > 0`)
/// and closed (kept by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FitChannels {
    /// Reopened.
    pub reopened: usize,
    /// Closed.
    pub closed: usize,
}

/// What the shared weight stage saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepCost {
    /// Epochs of the shared weight stage.
    pub weight_epochs: usize,
    /// Its seconds.
    pub weight_seconds: f64,
    /// The search whose weight stage this sweep shares (`--from-weights`): its epochs and
    /// seconds were spent there, so the sweep's own below leave them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_from: Option<PathBuf>,
    /// Epochs of all points' own stages.
    pub point_epochs: usize,
    /// Their seconds.
    pub point_seconds: f64,
    /// Epochs of the sweep: the weight stage once, plus every point.
    pub sweep_epochs: usize,
    /// Seconds of the sweep (measured parts summed).
    pub sweep_seconds: f64,
    /// Epochs of as many separate searches (each with its own weight stage).
    pub separate_epochs: usize,
    /// Seconds of as many separate searches, estimated as the measured weight stage once per
    /// point plus the points' measured seconds.
    pub separate_seconds_estimate: f64,
}

/// `DIR/sweep.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// The board.
    pub board: String,
    /// What its latency counts, and how it became milliseconds.
    pub unit: String,
    /// The clock assumed.
    pub clock_hz: f64,
    /// The model.
    pub model: String,
    /// The dataset.
    pub dataset: String,
    /// The unpruned network.
    pub parent: SweepRow,
    /// Every finished point.
    pub points: Vec<SweepRow>,
    /// Points not finished yet (by folder name).
    pub missing: Vec<String>,
    /// What sharing the weight stage saved.
    pub cost: SweepCost,
}

fn firmware_sizes(firmware: &Path) -> (u64, u64) {
    let deploy: serde_json::Value = std::fs::read(firmware.join("deploy.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    (
        deploy["flash_bytes"].as_u64().unwrap_or(0),
        deploy["ram_bytes"].as_u64().unwrap_or(0),
    )
}

/// The sweep's parent (`export`, exported in `export_dir`) measured on the board; as an
/// int8 firmware in an int8 sweep, whose budgets are the int8 firmware's.
fn measure_parent(
    plan: &SweepPlan,
    table: &LatencyTable,
    export: &Export,
    export_dir: &Path,
) -> Result<LatencyReport, SearchError> {
    let (set, train) = ExportTestSet::load_with_train(
        export.arch(),
        export_dir,
        plan.base.data_dir.as_deref(),
        Some(MEASURE_IMAGES),
        Some(BOARD_CALIBRATION_IMAGES),
    )?;
    let images = set.normalised_images(MEASURE_IMAGES);
    let dirs = (export_dir, export_dir);
    match plan.base.precision {
        Precision::F32 => measure_on_board(export.into(), dirs, table, &images, "the parent"),
        Precision::Int8 => {
            let int8 = quantize_for_board(
                export,
                train.images,
                &set.normalization,
                &plan.base.backend.device()?,
            )?;
            measure_on_board((&int8).into(), dirs, table, &images, "the int8 parent")
        }
    }
}

/// `row` with its measurement on the board (`measured`) and its firmware's flash and RAM.
fn with_measurement(row: SweepRow, measured: &LatencyReport) -> SweepRow {
    let (flash_bytes, ram_bytes) = firmware_sizes(&measured.firmware);
    SweepRow {
        predicted_ms: measured.predicted_ms,
        measured_ms: Some(measured.measured_ms),
        error_pct: Some(measured.error_pct),
        not_measured: None,
        flash_bytes,
        ram_bytes,
        ..row
    }
}

/// The parent's row without its measurement on the board.
fn parent_row(parent: &NetReport, weight_stage: &StageReport, folder: &Path) -> SweepRow {
    SweepRow {
        cost: "parent".into(),
        budget_ms: None,
        predicted_ms: 0.0,
        measured_ms: None,
        error_pct: None,
        not_measured: None,
        top1: parent.top1,
        flops: parent.flops,
        params: parent.params,
        flash_bytes: 0,
        ram_bytes: 0,
        seconds: weight_stage.seconds,
        epochs: weight_stage.epochs,
        folder: folder.to_path_buf(),
        landing_pct: None,
        fit_channels: None,
    }
}

/// Gathers every finished point into `sweep.json`, `sweep.md` and the Pareto plot
/// (`pareto.svg`, `pareto.png`); measures the parent on the board once.
pub fn collect(dir: &Path, observer: &mut dyn SearchObserver) -> Result<SweepReport, SearchError> {
    let _lock = OutputLock::acquire(dir)?;
    let plan = load_plan(dir)?;
    let table = LatencyTable::load(dir.join(TABLE_FILE))?;
    let weights_dir = dir.join(WEIGHTS_DIR);
    let weights: SearchState =
        read_json(&crate::checkpoint::CheckpointDir::new(&weights_dir).state_path())?;
    let parent_report = weights
        .parent
        .clone()
        .ok_or_else(|| SearchError::Checkpoint {
            path: weights_dir.clone(),
            reason: "the shared weight stage has not finished".into(),
        })?;
    let weight_stage = weights
        .stages
        .iter()
        .find(|s| s.name == "weights")
        .cloned()
        .unwrap_or_default();

    // The parent on the board, measured once and kept. A parent too big for the board is
    // only predicted: it is the sweep's reference, and its pruned networks may well fit.
    let parent_export_dir = weights_dir.join(PARENT_EXPORT);
    let parent_firmware = dir.join(PARENT_FIRMWARE);
    let parent_latency_path = parent_firmware.join("latency.json");
    let unmeasured = parent_row(&parent_report, &weight_stage, &weights_dir);
    let parent = match read_json::<LatencyReport>(&parent_latency_path) {
        Ok(measured) => with_measurement(unmeasured, &measured),
        Err(_) => {
            observer.message(&format!("measuring the parent on {}", plan.board));
            let export = Export::load(&parent_export_dir)?;
            match measure_parent(&plan, &table, &export, &parent_export_dir) {
                Ok(measured) => {
                    std::fs::create_dir_all(&parent_firmware).map_err(SearchError::io(
                        &parent_firmware,
                        "creating",
                        "check the sweep folder's permissions",
                    ))?;
                    write_json(&parent_latency_path, &measured)?;
                    with_measurement(unmeasured, &measured)
                }
                Err(SearchError::Deploy(err @ DeployError::OverBudget { .. })) => {
                    let reason = err.to_string();
                    observer.message(&format!(
                        "the parent is not measured, only predicted by the table: {reason}"
                    ));
                    SweepRow {
                        predicted_ms: table.predict(export.arch())?.ms,
                        not_measured: Some(reason),
                        ..unmeasured
                    }
                }
                Err(err) => return Err(err),
            }
        }
    };

    let mut points = Vec::new();
    let mut missing = Vec::new();
    for point in plan.points() {
        let folder = dir.join(POINTS_DIR).join(point.name());
        let Ok(report) = read_json::<Report>(&folder.join("report.json")) else {
            missing.push(point.name());
            continue;
        };
        let Some(latency) = &report.latency else {
            missing.push(point.name());
            continue;
        };
        let own: Vec<_> = report
            .stages
            .iter()
            .filter(|s| s.name != "weights")
            .collect();
        let (flash, ram) = firmware_sizes(&latency.firmware);
        points.push(SweepRow {
            cost: point.cost.to_string(),
            budget_ms: Some(point.budget_ms),
            predicted_ms: latency.predicted_ms,
            measured_ms: Some(latency.measured_ms),
            error_pct: Some(latency.error_pct),
            not_measured: None,
            // What is deployed: the int8 network of an int8 sweep.
            top1: report
                .int8
                .as_ref()
                .map_or(report.pruned.top1, |q| q.int8.top1),
            flops: report.pruned.flops,
            params: report.pruned.params,
            flash_bytes: flash,
            ram_bytes: ram,
            seconds: own.iter().map(|s| s.seconds).sum(),
            epochs: own.iter().map(|s| s.epochs).sum(),
            folder,
            landing_pct: report.budget.as_ref().map(|b| b.fit.landing_pct),
            fit_channels: report.budget.as_ref().map(|b| FitChannels {
                reopened: b.fit.reopened,
                closed: b.fit.closed,
            }),
        });
    }
    let point_seconds: f64 = points.iter().map(|p| p.seconds).sum();
    let point_epochs: usize = points.iter().map(|p| p.epochs).sum();
    let n = points.len();
    let (own_weight_epochs, own_weight_seconds) = match weight_stage.inherited_from {
        Some(_) => (0, 0.0),
        None => (weight_stage.epochs, weight_stage.seconds),
    };
    let cost = SweepCost {
        weight_epochs: weight_stage.epochs,
        weight_seconds: weight_stage.seconds,
        weights_from: weight_stage.inherited_from.clone(),
        point_epochs,
        point_seconds,
        sweep_epochs: own_weight_epochs + point_epochs,
        sweep_seconds: own_weight_seconds + point_seconds,
        separate_epochs: n * weight_stage.epochs + point_epochs,
        separate_seconds_estimate: n as f64 * weight_stage.seconds + point_seconds,
    };
    let report = SweepReport {
        board: plan.board.clone(),
        unit: format!(
            "{} ({}), as ms at {:.0} MHz",
            table.unit,
            table.measured,
            table.clock.hz / 1e6
        ),
        clock_hz: table.clock.hz,
        model: plan.base.model.clone(),
        dataset: plan.base.dataset.clone(),
        parent,
        points,
        missing,
        cost,
    };
    write_json(&dir.join("sweep.json"), &report)?;
    crate::checkpoint::write_atomic(&dir.join("sweep.md"), markdown(&report).as_bytes())?;
    let fronts: Vec<Front> = plan
        .costs
        .iter()
        .map(|cost| Front {
            name: match cost {
                CostWeighting::Latency => "latency-aware (c_l = measured latency)".into(),
                CostWeighting::Flops => "FLOPs-aware (c_l = MACs)".into(),
                CostWeighting::Uniform => "uniform (c_l = 1, the paper)".into(),
                CostWeighting::Params => "params-aware (c_l = parameters)".into(),
            },
            points: report
                .points
                .iter()
                .filter(|p| p.cost == cost.to_string())
                .filter_map(|p| Some((p.measured_ms?, 100.0 * p.top1)))
                .collect(),
        })
        .collect();
    let figure = Pareto {
        fronts,
        parent: report
            .parent
            .measured_ms
            .map(|ms| (ms, 100.0 * report.parent.top1)),
        x_label: format!(
            "latency on {} (ms; {} at {:.0} MHz)",
            report.board,
            table.unit,
            table.clock.hz / 1e6
        ),
        title: format!(
            "{} on {}: accuracy vs measured latency",
            report.model, report.dataset
        ),
    };
    if let Err(e) = write_figure(&dir.join("pareto"), (900, 600), &figure) {
        observer.message(&format!("warning: no Pareto plot: {e}"));
    }
    Ok(report)
}

/// The sweep as a markdown table.
pub fn markdown(report: &SweepReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} on {}, board {} ({}).\n",
        report.model, report.dataset, report.board, report.unit
    );
    let _ = writeln!(
        out,
        "| c_l | budget ms | predicted ms | measured ms | error | top-1 | MACs | params | flash B | RAM B | s | epochs | gates landed | fit reopened/closed |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in std::iter::once(&report.parent).chain(&report.points) {
        let if_measured = |bytes: u64| match row.measured_ms {
            Some(_) => bytes.to_string(),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {} | {} | {:.2}% | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
            row.cost,
            row.budget_ms.map_or("-".into(), |b| format!("{b}")),
            row.predicted_ms,
            row.measured_ms.map_or("-".into(), |ms| format!("{ms:.3}")),
            row.error_pct.map_or("-".into(), |e| format!("{e:+.1}%")),
            100.0 * row.top1,
            row.flops,
            row.params,
            if_measured(row.flash_bytes),
            if_measured(row.ram_bytes),
            row.seconds,
            row.epochs,
            row.landing_pct.map_or("-".into(), |l| format!("{l:+.1}%")),
            row.fit_channels
                .map_or("-".into(), |f| format!("+{}/-{}", f.reopened, f.closed)),
        );
    }
    if let Some(reason) = &report.parent.not_measured {
        let _ = writeln!(
            out,
            "\nThe parent was not measured, only predicted by the table: {reason}."
        );
    }
    let c = &report.cost;
    let _ = writeln!(
        out,
        "\nShared weight stage: {} epochs, {:.0} s once{}. Sweep: {} epochs, {:.0} s; {} separate searches: {} epochs, about {:.0} s.",
        c.weight_epochs,
        c.weight_seconds,
        c.weights_from
            .as_ref()
            .map_or(String::new(), |from| format!(
                ", in {} (this sweep ran none of it)",
                from.display()
            )),
        c.sweep_epochs,
        c.sweep_seconds,
        report.points.len(),
        c.separate_epochs,
        c.separate_seconds_estimate
    );
    if !report.missing.is_empty() {
        let _ = writeln!(out, "\nNot finished: {}.", report.missing.join(", "));
    }
    out
}

/// The whole sweep: plan, shared part, every point, collection. Continues where an earlier
/// run stopped.
pub fn sweep(
    plan: &SweepPlan,
    dir: &Path,
    observer: &mut dyn SearchObserver,
) -> Result<SweepReport, SearchError> {
    start(plan, dir)?;
    resume(dir, observer)
}

/// Continues the sweep in `dir`.
pub fn resume(dir: &Path, observer: &mut dyn SearchObserver) -> Result<SweepReport, SearchError> {
    let plan = load_plan(dir)?;
    prepare(dir, observer)?;
    for index in 0..plan.points().len() {
        run_point(dir, index, observer)?;
    }
    collect(dir, observer)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOO_BIG: &str = "the model does not fit cortex-m7-qemu: flash needs 1651752 bytes, \
                           the board has 1048576";

    /// A sweep of one point whose parent was too big for the board.
    fn report_with_unmeasured_parent() -> SweepReport {
        let parent_net = NetReport {
            top1: 0.834,
            flops: 12_841_824,
            params: 401_610,
            ..NetReport::default()
        };
        let parent = SweepRow {
            predicted_ms: 151.2,
            not_measured: Some(TOO_BIG.into()),
            ..parent_row(&parent_net, &StageReport::default(), Path::new("weights"))
        };
        let point = SweepRow {
            cost: "latency".into(),
            budget_ms: Some(15.0),
            predicted_ms: 14.978,
            measured_ms: Some(14.951),
            error_pct: Some(0.18),
            not_measured: None,
            landing_pct: Some(-27.6),
            fit_channels: Some(FitChannels {
                reopened: 243,
                closed: 0,
            }),
            ..parent.clone()
        };
        SweepReport {
            board: "cortex-m7-qemu".into(),
            unit: "instructions".into(),
            clock_hz: 216e6,
            model: "mobilenetv2".into(),
            dataset: "fashion-mnist".into(),
            parent,
            points: vec![point],
            missing: vec![],
            cost: SweepCost {
                weight_epochs: 10,
                weight_seconds: 250.0,
                weights_from: None,
                point_epochs: 7,
                point_seconds: 270.0,
                sweep_epochs: 17,
                sweep_seconds: 520.0,
                separate_epochs: 17,
                separate_seconds_estimate: 520.0,
            },
        }
    }

    #[test]
    fn a_parent_too_big_for_the_board_is_shown_predicted_and_why() {
        let md = markdown(&report_with_unmeasured_parent());
        let parent_line = md.lines().find(|l| l.starts_with("| parent")).unwrap();
        assert!(
            parent_line.starts_with(
                "| parent | - | 151.200 | - | - | 83.40% | 12841824 | 401610 | - | - |"
            ),
            "{parent_line}"
        );
        let point_line = md.lines().find(|l| l.starts_with("| latency")).unwrap();
        assert!(
            point_line.starts_with("| latency | 15 | 14.978 | 14.951 | +0.2% |"),
            "{point_line}"
        );
        // How far the gate stage landed, and what the fit did about it.
        assert!(
            point_line.ends_with(" | -27.6% | +243/-0 |"),
            "{point_line}"
        );
        assert!(parent_line.ends_with(" | - | - |"), "{parent_line}");
        assert!(
            md.contains(&format!(
                "The parent was not measured, only predicted by the table: {TOO_BIG}."
            )),
            "{md}"
        );
    }

    #[test]
    fn sweep_json_keeps_why_the_parent_was_not_measured() {
        let report = report_with_unmeasured_parent();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["parent"]["measured_ms"], serde_json::Value::Null);
        assert_eq!(json["parent"]["not_measured"], TOO_BIG);
        // A measured row does not carry the field at all.
        assert!(json["points"][0].get("not_measured").is_none(), "{json}");
        let back: SweepReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
}
