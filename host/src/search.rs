//! The DNAL search, end to end: weight stage, gate stage, pruning, finetuning, export.
//!
//! The search is a small state machine whose state (`OUT/checkpoint/state.json`) is written
//! after every epoch next to a checkpoint of the model and its optimizer, so a killed run
//! continues where it stopped (`dnal search --resume OUT`) and reproduces the uninterrupted run:
//! the data order and augmentation of every epoch depend only on the seed and the epoch.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};
use burn::tensor::Device;
use dnal_datasets::{Batcher, Dataset};
use dnal_models::{
    ChannelMasks, GateMode, GatedNet, GatedNetConfig, NetPlan, ValueShape, model_spec,
    prune_channels,
};
use serde::{Deserialize, Serialize};

use crate::arch_cost::expected_flops;
use crate::budget::{
    Budget, BudgetControl, CostEstimate, FlopsEstimate, check_reachable, expected_counts,
    fit_to_budget,
};
use crate::checkpoint::{CheckpointDir, Checksums, read_json, write_json};
use crate::config::SearchConfig;
use crate::distill::Distillation;
use crate::error::SearchError;
use crate::export::{ExportNet, SearchInfo, build_export};
use crate::latency::{LatencyEstimate, measure_on_board, profile_model};
use crate::lock::OutputLock;
use crate::plot::{SearchCurves, write_figure};
use crate::progress::SearchObserver;
use crate::report::{
    BudgetReport, EpochRecord, GateRecord, GroupChannels, NetReport, Report, StageReport,
};
use crate::schedule::{CosineSchedule, DeltaSchedule};
use crate::train::{
    Accuracy, EpochStats, GatePenalty, NonFiniteLogit, StepPlan, evaluate, evaluate_net,
    train_epoch,
};

/// The stage a search is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Training the weights with the gates off.
    Weights,
    /// Training the gates with the weights frozen.
    Gates,
    /// Finetuning the pruned network.
    Finetune,
    /// Exported and reported.
    Done,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Weights => "weights",
            Stage::Gates => "gates",
            Stage::Finetune => "finetune",
            Stage::Done => "done",
        }
    }
}

/// What `OUT/checkpoint/state.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchState {
    /// The layout version of this file.
    pub format: u32,
    /// The search's settings.
    pub config: SearchConfig,
    /// The current stage.
    pub stage: Stage,
    /// Epochs of the current stage already done.
    pub epochs_done: usize,
    /// The checkpoint folder (under `OUT/checkpoint`) holding the current model.
    pub checkpoint: Option<String>,
    /// The kept channels, once pruned.
    pub masks: Option<ChannelMasks>,
    /// The parent network's evaluation after the weight stage.
    pub parent: Option<NetReport>,
    /// Time and epochs per stage so far.
    pub stages: Vec<StageReport>,
    /// Every finished epoch.
    pub history: Vec<EpochRecord>,
    /// The gates after every gate epoch.
    pub gates: Vec<GateRecord>,
    /// lambda_a at the last gate-stage checkpoint (it moves in budget mode).
    #[serde(default)]
    pub gate_lambda: Option<f64>,
    /// How the kept channels met the budget, in budget mode.
    #[serde(default)]
    pub budget: Option<BudgetReport>,
    /// The SHA-256 of every file of every checkpoint still kept, by checkpoint folder: each is
    /// verified before it is loaded.
    pub checksums: BTreeMap<String, Checksums>,
}

/// Version 2 added the checkpoints' checksums.
const STATE_FORMAT: u32 = 2;

impl SearchState {
    fn new(config: SearchConfig) -> Self {
        Self {
            format: STATE_FORMAT,
            config,
            stage: Stage::Weights,
            epochs_done: 0,
            checkpoint: None,
            masks: None,
            parent: None,
            stages: Vec::new(),
            history: Vec::new(),
            gates: Vec::new(),
            gate_lambda: None,
            budget: None,
            checksums: BTreeMap::new(),
        }
    }

    /// The time and epochs of a stage (`weights`, `gates`, `prune`, `finetune`, `export`).
    fn stage_report(&mut self, name: &str) -> &mut StageReport {
        if let Some(i) = self.stages.iter().position(|s| s.name == name) {
            return &mut self.stages[i];
        }
        self.stages.push(StageReport {
            name: name.into(),
            epochs: 0,
            seconds: 0.0,
        });
        self.stages.last_mut().expect("just pushed")
    }
}

/// Starts a new search in `out`, which must be empty or absent. `out` is locked for the whole
/// run: a second process writing into it fails at once.
pub fn search(
    config: SearchConfig,
    out: &Path,
    observer: &mut dyn SearchObserver,
) -> Result<Report, SearchError> {
    config.validate()?;
    let lock = OutputLock::acquire(out)?;
    prepare_out(out)?;
    Search::start(SearchState::new(config), lock)?
        .run(observer, Stage::Done)
        .map(|r| r.expect("a run to the end reports"))
}

/// Reads and checks the state of the search in `out`.
fn read_state(out: &Path) -> Result<SearchState, SearchError> {
    let state_path = CheckpointDir::new(out).state_path();
    if !state_path.exists() {
        return Err(SearchError::Checkpoint {
            path: state_path,
            reason: "missing: this folder holds no search to resume; start one with `dnal search --out DIR`".into(),
        });
    }
    // The format first, so that an older file gets this message rather than a missing field.
    let raw: serde_json::Value = read_json(&state_path)?;
    let format = raw.get("format").and_then(serde_json::Value::as_u64);
    if format != Some(u64::from(STATE_FORMAT)) {
        return Err(SearchError::Checkpoint {
            path: state_path,
            reason: format!(
                "format {} is not this dnal's format {STATE_FORMAT}; start a new search",
                format.map_or_else(|| "(none)".to_string(), |f| f.to_string())
            ),
        });
    }
    serde_json::from_value(raw).map_err(|e| SearchError::Checkpoint {
        path: state_path,
        reason: format!("not a valid state of this dnal version ({e}); start a new search"),
    })
}

/// Continues the search whose folder is `out`.
pub fn resume(out: &Path, observer: &mut dyn SearchObserver) -> Result<Report, SearchError> {
    let lock = OutputLock::acquire(out)?;
    let state = read_state(out)?;
    if state.stage == Stage::Done {
        observer.message(&format!(
            "{} is already complete; its report is {}",
            out.display(),
            out.join("report.json").display()
        ));
        return read_json(&out.join("report.json"));
    }
    state.config.validate()?;
    Search::open(state, lock)?
        .run(observer, Stage::Done)
        .map(|r| r.expect("a run to the end reports"))
}

/// Runs (or continues) the search in `out` only up to the end of its weight stage: the
/// trained parent in `OUT/checkpoint/weights-final` and `OUT/parent`, which sweeps share.
/// Starts a new search when `out` holds none.
pub fn train_weights(
    config: SearchConfig,
    out: &Path,
    observer: &mut dyn SearchObserver,
) -> Result<SearchState, SearchError> {
    let lock = OutputLock::acquire(out)?;
    let mut search = if CheckpointDir::new(out).state_path().exists() {
        let state = read_state(out)?;
        if state.stage != Stage::Weights {
            return Ok(state);
        }
        Search::open(state, lock)?
    } else {
        config.validate()?;
        prepare_out(out)?;
        Search::start(SearchState::new(config), lock)?
    };
    search.run_stages(observer, Stage::Gates)?;
    Ok(search.state)
}

/// Starts a search in `to` from the end of the weight stage of the search in `from` (which
/// [`train_weights`] ran): the parent's weights are reused, `config` (the same data, model,
/// weight stage and seed, with its own gate-stage settings) decides the rest.
pub fn fork_after_weights(from: &Path, to: &Path, config: SearchConfig) -> Result<(), SearchError> {
    config.validate()?;
    let source = CheckpointDir::new(from);
    let state = read_state(from)?;
    if state.stage == Stage::Weights {
        return Err(SearchError::Checkpoint {
            path: source.state_path(),
            reason: "its weight stage has not finished; run it first".into(),
        });
    }
    let same = |a: &SearchConfig, b: &SearchConfig| {
        a.dataset == b.dataset
            && a.model == b.model
            && a.train_limit == b.train_limit
            && a.epochs_weights == b.epochs_weights
            && a.seed == b.seed
            && a.gate_position == b.gate_position
    };
    if !same(&state.config, &config) {
        return Err(SearchError::Checkpoint {
            path: source.state_path(),
            reason: "its weight stage used another dataset, model, limit, seed or epoch count than this search".into(),
        });
    }
    let _lock = OutputLock::acquire(to)?;
    prepare_out(to)?;
    let target = CheckpointDir::new(to);
    target.create()?;
    let tag = format!("{}-final", Stage::Weights.name());
    let sums = state.checksums.get(&tag).cloned();
    target.copy_from(&source, &tag, sums.as_ref())?;
    let forked = SearchState {
        format: STATE_FORMAT,
        config,
        stage: Stage::Gates,
        epochs_done: 0,
        checkpoint: Some(tag.clone()),
        masks: None,
        parent: state.parent,
        stages: state
            .stages
            .into_iter()
            .filter(|s| s.name == Stage::Weights.name())
            .collect(),
        history: state
            .history
            .into_iter()
            .filter(|e| e.stage == Stage::Weights.name())
            .collect(),
        gates: Vec::new(),
        gate_lambda: None,
        budget: None,
        checksums: sums.map(|s| (tag, s)).into_iter().collect(),
    };
    write_json(&target.state_path(), &forked)
}

/// Refuses an `--out` folder that already holds something, or that cannot be written. The
/// caller holds the folder's lock, so nothing appears in it between this check and the run.
fn prepare_out(out: &Path) -> Result<(), SearchError> {
    if out.join("checkpoint").join("state.json").exists() {
        return Err(SearchError::InvalidOption {
            option: "--out",
            value: out.display().to_string(),
            reason: "already holds a search; continue it with `dnal search --resume DIR` or choose a new --out".into(),
        });
    }
    // What a start that stopped before its state was written leaves (the board's latency
    // table, profiled first) does not make the folder someone else's.
    let leftover_of_a_start = |entry: &fs::DirEntry| {
        let name = entry.file_name();
        name == dnal_firmware::latency::TABLE_FILE
            || (name == "checkpoint"
                && fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none()))
    };
    if let Ok(entries) = fs::read_dir(out)
        && entries.flatten().any(|e| !leftover_of_a_start(&e))
    {
        return Err(SearchError::InvalidOption {
            option: "--out",
            value: out.display().to_string(),
            reason: "is not empty; choose a new or empty folder so that nothing is overwritten"
                .into(),
        });
    }
    fs::create_dir_all(out).map_err(SearchError::io(
        out,
        "creating the output folder",
        "choose an --out folder you can write to",
    ))?;
    // Creating a folder can succeed where writing files does not (read-only bind mounts).
    let probe = out.join(".dnal-write-test");
    fs::write(&probe, b"").map_err(SearchError::io(
        out,
        "writing into the output folder",
        "choose an --out folder you can write to",
    ))?;
    let _ = fs::remove_file(probe);
    Ok(())
}

/// Loads the dataset of a search, with its limits.
pub fn load_dataset(config: &SearchConfig) -> Result<Dataset, SearchError> {
    let mut dataset = dnal_datasets::load(&config.dataset, config.data_dir.as_deref())?;
    if let Some(n) = config.train_limit {
        dataset.train = dataset.train.truncate(n);
    }
    if let Some(n) = config.test_limit {
        dataset.test = dataset.test.truncate(n);
    }
    Ok(dataset)
}

/// The input shape of a dataset, as the models see it.
pub fn input_shape(dataset: &Dataset) -> ValueShape {
    let s = dataset.train.shape();
    ValueShape::new(s.channels, s.height, s.width)
}

/// The board's latency table for the search's model, when the search uses a board: read from
/// `--latency-table`, or `OUT/latency.json`, or profiled on the board into `OUT/latency.json`.
fn board_latency(
    config: &SearchConfig,
    plan: &NetPlan,
    out: &Path,
) -> Result<Option<LatencyEstimate>, SearchError> {
    let default_path = out.join(dnal_firmware::latency::TABLE_FILE);
    let table = match (&config.latency_table, &config.board) {
        (Some(path), _) => dnal_firmware::latency::LatencyTable::load(path)?,
        (None, Some(_)) if default_path.exists() => {
            dnal_firmware::latency::LatencyTable::load(&default_path)?
        }
        (None, Some(board)) => profile_model(plan, board, &default_path, &Default::default())?,
        (None, None) => return Ok(None),
    };
    if let Some(board) = &config.board
        && &table.board != board
    {
        return Err(SearchError::InvalidOption {
            option: "--latency-table",
            value: config
                .latency_table
                .as_ref()
                .unwrap_or(&default_path)
                .display()
                .to_string(),
            reason: format!(
                "was measured on {}, not on --board {board}; profile that board with `dnal profile --board {board}`",
                table.board
            ),
        });
    }
    Ok(Some(LatencyEstimate::new(table, plan)?))
}

/// Where a search exports the unpruned network, under its output folder.
pub const PARENT_EXPORT: &str = "parent";

/// Test batches are large: evaluation keeps no autodiff graph.
pub const EVAL_BATCH: usize = 256;

struct Search {
    state: SearchState,
    /// Held for the whole run: no other process writes into `out` meanwhile.
    _lock: OutputLock,
    out: PathBuf,
    checkpoints: CheckpointDir,
    dataset: Dataset,
    train: Batcher,
    test: Batcher,
    device: Device,
    train_device: Device,
    parent: GatedNet,
    /// The board's latency over the parent's channel groups, when the search uses a board.
    latency: Option<Arc<LatencyEstimate>>,
}

impl Search {
    /// Opens a new search and writes its state before the first epoch, so that a search killed
    /// inside its first epoch can be resumed like any other.
    fn start(state: SearchState, lock: OutputLock) -> Result<Self, SearchError> {
        let search = Self::open(state, lock)?;
        search.checkpoints.create()?;
        write_json(&search.checkpoints.state_path(), &search.state)?;
        Ok(search)
    }

    /// Opens the search in the locked folder: loads the data, builds the parent, reads or
    /// profiles the board's latency, and checks that a budget can be met at all.
    fn open(state: SearchState, lock: OutputLock) -> Result<Self, SearchError> {
        let out = lock.dir().to_path_buf();
        // A killed run's half-written files: nobody else can be writing them now.
        for dir in [out.clone(), out.join(PARENT_EXPORT), out.join("checkpoint")] {
            lock.remove_stale_temporaries(&dir);
        }
        let out = out.as_path();
        let config = &state.config;
        let dataset = load_dataset(config)?;
        let device = config.backend.device()?;
        device.seed(config.seed);
        let train_device = device.clone().autodiff();
        let spec = model_spec(
            &config.model,
            input_shape(&dataset),
            dataset.train.num_classes(),
        )?;
        let parent = GatedNetConfig::new(spec)
            .with_gate_position(config.gate_position)
            .init(&train_device)?;
        let train = Batcher::new(
            dataset.train.clone(),
            dataset.normalization.clone(),
            config.batch_size,
        )
        .with_augmentation(dataset.augmentation)
        .with_shuffle(config.seed);
        let test = Batcher::new(
            dataset.test.clone(),
            dataset.normalization.clone(),
            EVAL_BATCH,
        );
        let checkpoints = CheckpointDir::new(out);
        let latency = board_latency(config, &parent.plan, out)?.map(Arc::new);
        let search = Self {
            state,
            _lock: lock,
            out: out.to_path_buf(),
            checkpoints,
            dataset,
            train,
            test,
            device,
            train_device,
            parent,
            latency,
        };
        if let Some(budget) = search.config().budget {
            check_reachable(
                &search.parent.plan,
                search.estimate(budget).as_ref(),
                budget,
            )?;
        }
        Ok(search)
    }

    /// Loads checkpoint `tag` into `net` after checking it against its recorded checksums.
    fn load_checkpoint(&self, tag: &str, net: GatedNet) -> Result<GatedNet, SearchError> {
        self.checkpoints
            .verify(tag, self.state.checksums.get(tag))?;
        self.checkpoints.load_model(tag, net)
    }

    /// Saves checkpoint `tag` and records its checksums; the state keeps those of `tag` and
    /// of the stage-final checkpoints, as the folder does.
    fn save_checkpoint(
        &mut self,
        tag: &str,
        net: &GatedNet,
        optim: Option<&ModuleOptimizer>,
    ) -> Result<(), SearchError> {
        let sums = self.checkpoints.save(tag, net, optim)?;
        self.state.checksums.insert(tag.to_string(), sums);
        self.state
            .checksums
            .retain(|t, _| t == tag || t.ends_with("-final"));
        Ok(())
    }

    /// The error for an evaluation whose logits stopped being numbers.
    fn non_finite(&self, what: String, bad: NonFiniteLogit) -> SearchError {
        SearchError::NonFiniteOutput {
            what,
            image: bad.image,
            value: bad.value,
            fix: format!(
                "the training diverged: lower the learning rate (--lr, --lr-gates, --lr-finetune) or --lambda and start again; the last good checkpoint is in {}",
                self.checkpoints.path().display()
            ),
        }
    }

    fn config(&self) -> &SearchConfig {
        &self.state.config
    }

    /// The network the current stage trains, restored from the latest checkpoint.
    fn current_net(&self) -> Result<GatedNet, SearchError> {
        // Pruning works on inference copies; `train()` puts the result back on the autodiff
        // device with the gradients its parameters were created with.
        let net = match &self.state.masks {
            Some(masks) => prune_channels(&self.parent.valid(), masks)?.train(),
            None => self.parent.clone(),
        };
        match &self.state.checkpoint {
            Some(tag) => Ok(self.load_checkpoint(tag, net)?.train()),
            None => Ok(net),
        }
    }

    /// Runs the stages until the search reaches `stop`; the report when it got to the end.
    fn run(
        mut self,
        observer: &mut dyn SearchObserver,
        stop: Stage,
    ) -> Result<Option<Report>, SearchError> {
        self.run_stages(observer, stop)
    }

    fn run_stages(
        &mut self,
        observer: &mut dyn SearchObserver,
        stop: Stage,
    ) -> Result<Option<Report>, SearchError> {
        let mut net = self.current_net()?;
        observer.message(&format!(
            "dnal search: {} on {} ({} train / {} test images, {}x{}x{}), backend {}, {} MACs, {} params",
            self.config().model,
            self.config().dataset,
            self.dataset.train.len(),
            self.dataset.test.len(),
            self.dataset.train.shape().channels,
            self.dataset.train.shape().height,
            self.dataset.train.shape().width,
            self.config().backend,
            self.parent.flops(),
            self.parent.params(),
        ));
        loop {
            if self.state.stage == stop {
                return Ok(None);
            }
            match self.state.stage {
                Stage::Weights => {
                    net = self.weight_stage(net, observer)?;
                    let started = Instant::now();
                    let accuracy = evaluate_net(&net, GateMode::Off, &self.test, &self.device)
                        .map_err(|bad| self.non_finite("the trained parent".into(), bad))?;
                    self.state.parent = Some(net_report(&net, accuracy));
                    self.state.stage_report(Stage::Weights.name()).seconds +=
                        started.elapsed().as_secs_f64();
                    self.export_parent(&net, observer)?;
                    self.finish_stage(&net, Stage::Gates)?;
                }
                Stage::Gates => {
                    self.export_parent(&net, observer)?;
                    net = self.gate_stage(net, observer)?;
                    let started = Instant::now();
                    let (masks, budget) = self.final_masks(&net)?;
                    if let Some(b) = &budget {
                        observer.message(&format!(
                            "budget {:.4} {}: the gates' s > 0 network costs {:.4}; kept s > {:.3e}: {:.4} ({} channels reopened, {} closed)",
                            b.fit.target,
                            self.estimate(b.budget).unit(),
                            b.fit.cost_at_zero,
                            b.fit.threshold,
                            b.fit.cost,
                            b.fit.reopened,
                            b.fit.closed
                        ));
                    }
                    self.state.budget = budget;
                    let pruned = prune_channels(&net.valid(), &masks)?;
                    observer.message(&format!(
                        "pruned: {} -> {} MACs ({:.2}x fewer), {} -> {} params; channels {}",
                        net.flops(),
                        pruned.flops(),
                        net.flops() as f64 / pruned.flops().max(1) as f64,
                        net.params(),
                        pruned.params(),
                        channel_summary(&net, &pruned),
                    ));
                    self.state.masks = Some(masks);
                    self.state.stage_report("prune").seconds += started.elapsed().as_secs_f64();
                    net = pruned.train();
                    self.finish_stage(&net, Stage::Finetune)?;
                }
                Stage::Finetune => {
                    net = self.finetune_stage(net, observer)?;
                    return self.finish(&net, observer).map(Some);
                }
                Stage::Done => unreachable!("a finished search is not run"),
            }
        }
    }

    /// Saves the model at the end of a stage (kept for later reuse, e.g. by sweeps) and moves
    /// the state on.
    fn finish_stage(&mut self, net: &GatedNet, next: Stage) -> Result<(), SearchError> {
        let tag = format!("{}-final", self.state.stage.name());
        self.save_checkpoint(&tag, net, None)?;
        self.state.stage = next;
        self.state.epochs_done = 0;
        self.state.checkpoint = Some(tag.clone());
        write_json(&self.checkpoints.state_path(), &self.state)?;
        self.checkpoints.prune_old(&tag);
        Ok(())
    }

    fn sgd(&self, weight_decay: bool) -> ModuleOptimizer {
        let config = self.config();
        let mut sgd = SgdConfig::new().with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(config.momentum)
                .with_dampening(0.0),
        ));
        if weight_decay && config.weight_decay > 0.0 {
            sgd = sgd.with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay as f32)));
        }
        sgd.init()
    }

    fn weight_stage(
        &mut self,
        net: GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let epochs = self.config().epochs_weights;
        let steps = self.train.num_batches();
        let schedule = CosineSchedule {
            base: self.config().lr,
            steps: epochs * steps,
            warmup: steps.min(epochs * steps / 10),
        };
        let lr = move |step: usize| schedule.at(step);
        let mode = |_: usize| GateMode::Off;
        let optim = self.sgd(true);
        self.run_epochs(
            Stage::Weights,
            net.unfreeze().train(),
            optim,
            epochs,
            0,
            &lr,
            &mode,
            None,
            None,
            observer,
        )
    }

    fn gate_stage(
        &mut self,
        net: GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let config = self.config().clone();
        let steps = self.train.num_batches();
        // In budget mode delta is held at its start for the first 40% of the stage: the gates'
        // decisions stay reversible while the controller settles lambda_a.
        let total = config.epochs_gates * steps;
        let delta = DeltaSchedule {
            start: config.delta_start,
            end: config.delta_end,
            steps: total,
            hold: if config.budget.is_some() {
                total * 2 / 5
            } else {
                0
            },
        };
        let budget = config.budget.map(|budget| BudgetControl {
            target: budget.target(),
            gain: config.budget_gain / steps as f64,
            estimate: self.estimate(budget),
        });
        // A resumed stage continues with the lambda_a the controller had reached.
        let mut penalty = GatePenalty {
            lambda: self.state.gate_lambda.unwrap_or(config.lambda),
            weights: config.cost.weights(
                &net.plan,
                self.latency.as_deref().map(|l| l as &dyn CostEstimate),
            )?,
            budget,
        };
        // Weights and BN statistics frozen; only the gates learn.
        let mut net = net.freeze();
        net.gates = net.gates.into_iter().map(|g| g.unfreeze()).collect();
        let lr = move |_: usize| config.lr_gates;
        let mode = move |step: usize| GateMode::Soft {
            delta: delta.at(step),
        };
        let optim = self.sgd(false);
        let epoch_offset = config.epochs_weights;
        self.run_epochs(
            Stage::Gates,
            net,
            optim,
            config.epochs_gates,
            epoch_offset,
            &lr,
            &mode,
            Some(&mut penalty),
            None,
            observer,
        )
    }

    /// The cost a budget is on.
    fn estimate(&self, budget: Budget) -> Arc<dyn CostEstimate> {
        match (budget, &self.latency) {
            (Budget::LatencyMs(_), Some(latency)) => latency.clone(),
            (Budget::LatencyMs(_), None) => {
                unreachable!("config validation requires a board or table for latency budgets")
            }
            (Budget::Flops(_), _) => Arc::new(FlopsEstimate::new(&self.parent.plan)),
        }
    }

    /// The channels to keep after the gate stage: DNAL's `s > 0`, or in budget mode the
    /// threshold on `s` that lands at or under the budget.
    fn final_masks(
        &self,
        net: &GatedNet,
    ) -> Result<(ChannelMasks, Option<BudgetReport>), SearchError> {
        match self.config().budget {
            None => Ok((ChannelMasks::from_gates(net), None)),
            Some(budget) => {
                let estimate = self.estimate(budget);
                let (masks, fit) = fit_to_budget(net, estimate.as_ref(), budget.target())?;
                let report = BudgetReport {
                    budget,
                    lambda: self.state.gate_lambda.unwrap_or(self.config().lambda),
                    fit,
                };
                Ok((masks, Some(report)))
            }
        }
    }

    fn finetune_stage(
        &mut self,
        net: GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let config = self.config().clone();
        let steps = self.train.num_batches();
        let schedule = CosineSchedule {
            base: config.lr_finetune,
            steps: config.epochs_finetune * steps,
            warmup: 0,
        };
        let lr = move |step: usize| schedule.at(step);
        let mode = |_: usize| GateMode::Off;
        let optim = self.sgd(true);
        let offset = config.epochs_weights + config.epochs_gates;
        let distill = if config.distill > 0.0 {
            let tag = format!("{}-final", Stage::Weights.name());
            let teacher = self.load_checkpoint(&tag, self.parent.clone())?;
            observer.message(&format!(
                "distilling from the trained parent: loss = {:.2} * CE + {:.2} * T^2 * KL at T = {}",
                1.0 - config.distill,
                config.distill,
                config.distill_temperature
            ));
            Some(Distillation::new(
                &teacher,
                &self.device,
                config.distill,
                config.distill_temperature,
            ))
        } else {
            None
        };
        self.run_epochs(
            Stage::Finetune,
            net.unfreeze().train(),
            optim,
            config.epochs_finetune,
            offset,
            &lr,
            &mode,
            None,
            distill.as_ref(),
            observer,
        )
    }

    /// Runs the remaining epochs of a stage, evaluating and checkpointing after each.
    #[allow(clippy::too_many_arguments)]
    fn run_epochs(
        &mut self,
        stage: Stage,
        mut net: GatedNet,
        mut optim: ModuleOptimizer,
        epochs: usize,
        epoch_offset: usize,
        lr: &dyn Fn(usize) -> f64,
        mode: &dyn Fn(usize) -> GateMode,
        mut penalty: Option<&mut GatePenalty>,
        distill: Option<&Distillation>,
        observer: &mut dyn SearchObserver,
    ) -> Result<GatedNet, SearchError> {
        let steps = self.train.num_batches();
        let first = self.state.epochs_done;
        if first > 0
            && let Some(tag) = &self.state.checkpoint
        {
            optim = self.checkpoints.load_optimizer(tag, optim)?;
        }
        observer.stage(stage.name(), epochs, first, steps);
        self.state.stage_report(stage.name()).epochs = first;
        for epoch in first..epochs {
            let started = Instant::now();
            let plan = StepPlan {
                lr,
                mode,
                first_step: epoch * steps,
                data_epoch: (epoch_offset + epoch) as u64,
                distill,
            };
            let gates_note = |net: &GatedNet| -> String {
                if stage == Stage::Gates {
                    let alive: usize = net.alive_per_gate().iter().sum();
                    let total: usize = net.channels_per_gate().iter().sum();
                    format!("live {alive}/{total}")
                } else {
                    String::new()
                }
            };
            let note = gates_note(&net);
            let (trained, stats) = train_epoch(
                net,
                &mut optim,
                &self.train,
                &self.train_device,
                &plan,
                penalty.as_deref_mut(),
                |step, stats| observer.step(epoch + 1, step, stats, &note),
            )
            .map_err(|bad| SearchError::NonFiniteLoss {
                stage: stage.name().into(),
                epoch: epoch + 1,
                step: bad.step,
                value: bad.value,
                checkpoint: self
                    .state
                    .checkpoint
                    .as_ref()
                    .map(|t| self.checkpoints.path().join(t))
                    .unwrap_or_else(|| self.checkpoints.path().to_path_buf()),
                out: self.out.clone(),
            })?;
            net = trained;
            let last_step = (epoch + 1) * steps - 1;
            let (accuracy, note) = if stage == Stage::Gates {
                let lambda = penalty.as_ref().map_or(0.0, |p| p.lambda);
                self.state.gate_lambda = Some(lambda);
                let record = self.gate_record(&net, epoch + 1, mode(last_step), lambda);
                let accuracy = evaluate_net(&net, GateMode::Hard, &self.test, &self.device)
                    .map_err(|bad| {
                        self.non_finite(
                            format!("the gate stage's network after epoch {}", epoch + 1),
                            bad,
                        )
                    })?;
                let per_layer: Vec<String> = net
                    .gate_names()
                    .iter()
                    .zip(record.alive.iter().zip(net.channels_per_gate()))
                    .map(|(name, (alive, total))| format!("{name} {alive}/{total}"))
                    .collect();
                let latency = match (record.expected_ms, record.hard_ms) {
                    (Some(e), Some(h)) => format!(", E[ms] {e:.2}, binarised {h:.2} ms"),
                    _ => String::new(),
                };
                let note = format!(
                    "delta {:.3e}, lambda {:.3e}, E[MACs] {:.3e}, binarised {} MACs{latency}, live {}/{} ({})",
                    record.delta,
                    record.lambda,
                    record.expected_flops,
                    record.hard_flops,
                    record.alive.iter().sum::<usize>(),
                    net.channels_per_gate().iter().sum::<usize>(),
                    per_layer.join(", ")
                );
                self.state.gates.push(record);
                (accuracy, note)
            } else {
                let accuracy = evaluate_net(&net, GateMode::Off, &self.test, &self.device)
                    .map_err(|bad| {
                        self.non_finite(
                            format!(
                                "the {} stage's network after epoch {}",
                                stage.name(),
                                epoch + 1
                            ),
                            bad,
                        )
                    })?;
                (accuracy, String::new())
            };
            let record = epoch_record(stage, epoch + 1, &stats, &accuracy, lr(last_step));
            observer.epoch(&record, &note);
            self.state.history.push(record);
            self.state.epochs_done = epoch + 1;
            let tag = format!("{}-{:03}", stage.name(), epoch + 1);
            self.save_checkpoint(&tag, &net, Some(&optim))?;
            self.state.checkpoint = Some(tag.clone());
            let report = self.state.stage_report(stage.name());
            report.epochs = epoch + 1;
            report.seconds += started.elapsed().as_secs_f64();
            write_json(&self.checkpoints.state_path(), &self.state)?;
            self.checkpoints.prune_old(&tag);
        }
        Ok(net)
    }

    fn gate_record(&self, net: &GatedNet, epoch: usize, mode: GateMode, lambda: f64) -> GateRecord {
        let delta = match mode {
            GateMode::Soft { delta } => delta,
            _ => self.config().delta_end,
        };
        let scores: Vec<Vec<f32>> = net.gates.iter().map(|g| g.scores()).collect();
        let masks = ChannelMasks::from_gates(net);
        let latency = self.latency.as_ref();
        GateRecord {
            epoch,
            delta,
            alive: net.alive_per_gate(),
            expected_flops: expected_flops(&net.plan, &scores, delta),
            hard_flops: net.plan.flops.total(&masks.counts()).round() as u64,
            lambda,
            expected_ms: latency.map(|l| l.total(&expected_counts(net, delta))),
            hard_ms: latency.map(|l| l.total(&masks.counts())),
        }
    }

    /// Exports the trained, unpruned network to `OUT/parent` (once), so that it can be
    /// deployed and measured next to the pruned one.
    fn export_parent(
        &self,
        net: &GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<(), SearchError> {
        let dir = self.out.join(PARENT_EXPORT);
        if dir.join(dnal_export::ARCH_FILE).exists() {
            return Ok(());
        }
        let export = build_export(
            &net.valid(),
            &self.parent.plan,
            &ChannelMasks::full(&self.parent.plan),
            &self.dataset,
            &self.search_info(),
        )?;
        export.write(&dir)?;
        observer.message(&format!("parent exported to {}", dir.display()));
        Ok(())
    }

    fn search_info(&self) -> SearchInfo {
        SearchInfo {
            config: self.config().clone(),
            parent_flops: self.parent.flops(),
            parent_params: self.parent.params(),
        }
    }

    /// Exports the pruned network, evaluates the export as written and writes the report.
    fn finish(
        &mut self,
        net: &GatedNet,
        observer: &mut dyn SearchObserver,
    ) -> Result<Report, SearchError> {
        let started = Instant::now();
        let masks = self
            .state
            .masks
            .clone()
            .expect("the finetune stage runs on a pruned network");
        let export = build_export(
            &net.valid(),
            &self.parent.plan,
            &masks,
            &self.dataset,
            &self.search_info(),
        )?;
        export.write(&self.out)?;
        // The reported accuracy is the accuracy of the files on disk, as `dnal eval` reads them.
        let reloaded = dnal_export::Export::load(&self.out)?;
        let eval_device = self.device.clone().without_autodiff();
        let export_net = ExportNet::new(&reloaded, &eval_device);
        let accuracy = evaluate(&self.test, reloaded.arch().num_classes, &eval_device, |x| {
            export_net.forward(x)
        })
        .map_err(|bad| self.non_finite("the exported network".into(), bad))?;
        let parent = self.state.parent.clone().unwrap_or_default();
        let pruned = NetReport {
            top1: accuracy.top1,
            top5: accuracy.top5,
            flops: net.flops(),
            params: net.params(),
            images: accuracy.images,
        };
        self.state.stage_report("export").seconds += started.elapsed().as_secs_f64();
        let latency = match &self.latency {
            Some(estimate) => {
                let started = Instant::now();
                let board = estimate.table().board.clone();
                observer.message(&format!("measuring the pruned network on {board}"));
                let measured =
                    measure_on_board(&reloaded, &self.out, estimate.table(), &self.dataset)?;
                self.state.stage_report("measure").seconds += started.elapsed().as_secs_f64();
                Some(measured)
            }
            None => None,
        };
        let channels = channel_groups(&self.parent.plan, &masks);
        let report = Report {
            dnal_version: env!("CARGO_PKG_VERSION").into(),
            config: self.config().clone(),
            flops_reduction: parent.flops as f64 / pruned.flops.max(1) as f64,
            params_reduction: parent.params as f64 / pruned.params.max(1) as f64,
            top1_change_pp: 100.0 * (pruned.top1 - parent.top1),
            parent,
            pruned,
            stages: self.state.stages.clone(),
            channels,
            gate_names: self.parent.gate_names(),
            gates: self.state.gates.clone(),
            history: self.state.history.clone(),
            budget: self.state.budget.clone(),
            latency,
        };
        write_json(&self.out.join("report.json"), &report)?;
        // The plots are a convenience: a missing font is worth a warning, not the search.
        if let Err(e) = write_figure(
            &self.out.join("curves"),
            (1200, 480),
            &SearchCurves { report: &report },
        ) {
            observer.message(&format!("warning: no curves plot: {e}"));
        }
        self.state.stage = Stage::Done;
        write_json(&self.checkpoints.state_path(), &self.state)?;
        observer.message(&format!(
            "parent: top-1 {:.2}%, {} MACs, {} params | pruned: top-1 {:.2}%, {} MACs ({:.2}x fewer), {} params ({:.2}x fewer) | exported to {}",
            100.0 * report.parent.top1,
            report.parent.flops,
            report.parent.params,
            100.0 * report.pruned.top1,
            report.pruned.flops,
            report.flops_reduction,
            report.pruned.params,
            report.params_reduction,
            self.out.display()
        ));
        Ok(report)
    }
}

fn net_report(net: &GatedNet, accuracy: Accuracy) -> NetReport {
    NetReport {
        top1: accuracy.top1,
        top5: accuracy.top5,
        flops: net.flops(),
        params: net.params(),
        images: accuracy.images,
    }
}

fn epoch_record(
    stage: Stage,
    epoch: usize,
    stats: &EpochStats,
    accuracy: &Accuracy,
    lr: f64,
) -> EpochRecord {
    EpochRecord {
        stage: stage.name().into(),
        epoch,
        loss: stats.loss,
        cross_entropy: stats.cross_entropy,
        train_top1: stats.train_top1,
        test_top1: accuracy.top1,
        lr,
        seconds: stats.seconds,
        images_per_second: stats.images as f64 / stats.seconds.max(1e-9),
    }
}

fn channel_groups(plan: &NetPlan, masks: &ChannelMasks) -> Vec<GroupChannels> {
    plan.groups
        .group_of_gate
        .iter()
        .map(|&g| GroupChannels {
            layers: plan.groups.describe(&plan.spec, g),
            parent: plan.groups.groups[g].channels,
            pruned: masks.kept(g).len(),
        })
        .collect()
}

fn channel_summary(parent: &GatedNet, pruned: &GatedNet) -> String {
    parent
        .gate_names()
        .iter()
        .zip(
            parent
                .channels_per_gate()
                .iter()
                .zip(pruned.channels_per_gate()),
        )
        .map(|(name, (p, k))| format!("{name} {k}/{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}
