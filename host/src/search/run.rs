//! The search in its locked folder: its data, its parent network, its checkpoints, and the
//! loop that runs the stages in order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor};
use dnal_datasets::{Batcher, Dataset};
use dnal_models::{ChannelMasks, GateMode, GatedNet, GatedNetConfig, NetPlan, prune_channels};

use super::state::{SearchState, Stage};
use super::{INT8_EXPORT, PARENT_EXPORT};
use crate::budget::{Budget, CostEstimate, PlanCost, check_reachable};
use crate::checkpoint::{CheckpointDir, write_json};
use crate::config::SearchConfig;
use crate::data::{input_shape, load_dataset};
use crate::error::SearchError;
use crate::latency::{LatencyEstimate, check_table_precision, check_table_winograd, profile_model};
use crate::lock::OutputLock;
use crate::progress::SearchObserver;
use crate::report::{NetReport, Report};
use crate::train::{Accuracy, EVAL_BATCH, NonFiniteLogit, evaluate_net};

/// Held while a search seeds the device and draws its initial weights.
static SEEDED_INIT: Mutex<()> = Mutex::new(());

/// Reads every parameter once, so that burn's lazily initialised parameters draw their
/// initial values now.
struct DrawInitialValues;

impl ModuleVisitor for DrawInitialValues {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        param.val();
    }
}

/// A search opened in its locked output folder, with everything its stages share.
pub(super) struct Search {
    pub(super) state: SearchState,
    /// Held for the whole run: no other process writes into `out` meanwhile.
    pub(super) _lock: OutputLock,
    pub(super) out: PathBuf,
    pub(super) checkpoints: CheckpointDir,
    pub(super) dataset: Dataset,
    pub(super) train: Batcher,
    pub(super) test: Batcher,
    pub(super) device: Device,
    pub(super) train_device: Device,
    pub(super) parent: GatedNet,
    /// The board's latency over the parent's channel groups, when the search uses a board.
    pub(super) latency: Option<Arc<LatencyEstimate>>,
}

impl Search {
    /// Opens a new search and writes its state before the first epoch, so that a search killed
    /// inside its first epoch can be resumed like any other.
    pub(super) fn start(state: SearchState, lock: OutputLock) -> Result<Self, SearchError> {
        let search = Self::open(state, lock)?;
        search.checkpoints.create()?;
        write_json(&search.checkpoints.state_path(), &search.state)?;
        Ok(search)
    }

    /// Opens the search in the locked folder: loads the data, builds the parent, reads or
    /// profiles the board's latency, and checks that a budget can be met at all.
    pub(super) fn open(state: SearchState, lock: OutputLock) -> Result<Self, SearchError> {
        let out = lock.dir().to_path_buf();
        // A killed run's half-written files: nobody else can be writing them now.
        for dir in [
            out.clone(),
            out.join(PARENT_EXPORT),
            out.join(INT8_EXPORT),
            out.join("checkpoint"),
        ] {
            lock.remove_stale_temporaries(&dir);
        }
        let out = out.as_path();
        let config = &state.config;
        let dataset = load_dataset(config)?;
        let device = config.backend.device()?;
        let train_device = device.clone().autodiff();
        let spec = config.model_spec(input_shape(&dataset), dataset.train.num_classes())?;
        let parent = {
            // The device's random numbers are the process's: two searches seeding and drawing
            // at once (threads of one program, tests) would interleave their draws and start
            // from weights that no seed reproduces.
            let _rng = SEEDED_INIT
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            device.seed(config.seed);
            let parent = GatedNetConfig::new(spec)
                .with_gate_position(config.gate_position)
                .init(&train_device)?;
            // burn draws a parameter's initial values when it is first read, not in `init`:
            // drawn later, outside this lock, they interleaved with another search's draws.
            parent.visit(&mut DrawInitialValues);
            parent
        };
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
        if let Some(budget) = search.budget() {
            check_reachable(
                &search.parent.plan,
                search.estimate(budget).as_ref(),
                budget,
            )?;
        }
        Ok(search)
    }

    /// Loads checkpoint `tag` into `net` after checking it against its recorded checksums.
    pub(super) fn load_checkpoint(
        &self,
        tag: &str,
        net: GatedNet,
    ) -> Result<GatedNet, SearchError> {
        self.checkpoints
            .verify(tag, self.state.checksums.get(tag))?;
        self.checkpoints.load_model(tag, net)
    }

    /// Saves checkpoint `tag` and records its checksums; the state keeps those of `tag` and
    /// of the stage-final checkpoints, as the folder does.
    pub(super) fn save_checkpoint(
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
    pub(super) fn non_finite(&self, what: String, bad: NonFiniteLogit) -> SearchError {
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

    /// The search's settings.
    pub(super) fn config(&self) -> &SearchConfig {
        &self.state.config
    }

    /// The network the current stage trains, restored from the latest checkpoint.
    pub(super) fn current_net(&self) -> Result<GatedNet, SearchError> {
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
    pub(super) fn run(
        mut self,
        observer: &mut dyn SearchObserver,
        stop: Stage,
    ) -> Result<Option<Report>, SearchError> {
        self.run_stages(observer, stop)
    }

    /// Runs the stages from the current one until the search reaches `stop`; the report when
    /// it got to the end.
    pub(super) fn run_stages(
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
                    let (masks, budget) = self.final_masks(&net, observer)?;
                    if let Some(b) = &budget {
                        let unit = self.estimate(b.budget).unit();
                        let cost = |value: f64| cost_text(value, unit);
                        // Under a latency budget the kept fit was measured: the board's figure
                        // is the one the budget holds on.
                        let kept = match b
                            .measured_fits
                            .iter()
                            .find(|m| m.predicted_ms == b.fit.cost)
                        {
                            Some(m) => format!(
                                "predicted {}, measured {} on the board",
                                cost(m.predicted_ms),
                                cost(m.measured_ms)
                            ),
                            None => cost(b.fit.cost),
                        };
                        observer.message(&format!(
                            "budget {}: the gates' s > 0 network costs {} ({:+.1}% off the budget); kept s > {:.3e}: {kept} ({} channels reopened, {} closed{})",
                            cost(b.budget.target()),
                            cost(b.fit.cost_at_zero),
                            b.fit.landing_pct,
                            b.fit.threshold,
                            b.fit.reopened,
                            b.fit.closed,
                            match b.fit.free {
                                0 => String::new(),
                                n => format!(
                                    "; {n} under the threshold kept for free: they fill a kernel's register block"
                                ),
                            }
                        ));
                    }
                    self.state.budget = budget;
                    if let Some(warning) = self.collapse(&masks).or_else(|| self.squeezed(&masks)) {
                        observer.message(&format!("warning: {warning}"));
                        self.state.warnings.push(warning);
                    }
                    let pruned = prune_channels(&net.valid(), &masks)?;
                    observer.message(&format!(
                        "pruned: {} -> {} MACs ({:.2}x fewer), {} -> {} params; channels {}",
                        net.flops(),
                        pruned.flops(),
                        net.flops() as f64 / pruned.flops().max(1) as f64,
                        net.params(),
                        pruned.params(),
                        channel_summary(&net, &masks),
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
    pub(super) fn finish_stage(&mut self, net: &GatedNet, next: Stage) -> Result<(), SearchError> {
        let tag = format!("{}-final", self.state.stage.name());
        self.save_checkpoint(&tag, net, None)?;
        self.state.stage = next;
        self.state.epochs_done = 0;
        self.state.checkpoint = Some(tag.clone());
        write_json(&self.checkpoints.state_path(), &self.state)?;
        self.checkpoints.prune_old(&tag);
        Ok(())
    }

    /// SGD with the search's momentum, and its weight decay when `weight_decay`.
    pub(super) fn sgd(&self, weight_decay: bool) -> ModuleOptimizer {
        let config = self.config();
        let decay = if weight_decay {
            config.weight_decay
        } else {
            0.0
        };
        crate::train::sgd(config.momentum, decay)
    }

    /// The search's budget in its cost's unit (a share of the parent resolved to MACs or
    /// parameters).
    pub(super) fn budget(&self) -> Option<Budget> {
        self.config().budget.map(|b| b.resolve(&self.parent.plan))
    }

    /// The cost a budget is on.
    pub(super) fn estimate(&self, budget: Budget) -> Arc<dyn CostEstimate> {
        match (budget, &self.latency) {
            (Budget::LatencyMs(_), Some(latency)) => latency.clone(),
            (Budget::LatencyMs(_), None) => {
                unreachable!("config validation requires a board or table for latency budgets")
            }
            (Budget::Flops(_) | Budget::FlopsShare(_), _) => {
                Arc::new(PlanCost::macs(&self.parent.plan))
            }
            (Budget::Params(_) | Budget::ParamsShare(_), _) => {
                Arc::new(PlanCost::params(&self.parent.plan))
            }
        }
    }
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
        (None, Some(board)) => profile_model(
            plan,
            board,
            &default_path,
            &Default::default(),
            (config.precision, config.winograd),
        )?,
        (None, None) => return Ok(None),
    };
    let path = config.latency_table.as_ref().unwrap_or(&default_path);
    check_table_precision(&table, path, "--latency-table", config.precision)?;
    check_table_winograd(&table, path, "--latency-table", config.winograd)?;
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

/// A network's accuracy and cost, as the report states them.
pub(super) fn net_report(net: &GatedNet, accuracy: Accuracy) -> NetReport {
    NetReport {
        top1: accuracy.top1,
        top5: accuracy.top5,
        flops: net.flops(),
        params: net.params(),
        images: accuracy.images,
        top1_hits: Some(accuracy.top1_hits),
    }
}

/// Kept / parent channels of every gated group, by the names of the layers writing it.
fn channel_summary(parent: &GatedNet, masks: &ChannelMasks) -> String {
    let groups = &parent.plan.groups;
    parent
        .gate_names()
        .iter()
        .zip(&groups.group_of_gate)
        .map(|(name, &g)| {
            format!(
                "{name} {}/{}",
                masks.kept(g).len(),
                groups.groups[g].channels
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A cost with its unit, as precise as the unit is: whole multiply-accumulates, milliseconds
/// to the microsecond.
pub(super) fn cost_text(value: f64, unit: &str) -> String {
    match unit {
        "MACs" | "params" => format!("{value:.0} {unit}"),
        _ => format!("{value:.3} {unit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::cost_text;

    #[test]
    fn costs_print_as_precise_as_their_unit() {
        assert_eq!(cost_text(10_951_552.0, "MACs"), "10951552 MACs");
        assert_eq!(cost_text(20.04031, "ms"), "20.040 ms");
        assert_eq!(cost_text(24_991.0, "params"), "24991 params");
    }
}
