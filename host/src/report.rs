//! `report.json`: what a search did and what it found.

use std::path::PathBuf;

use dnal_firmware::latency::PredictionErrors;
use dnal_models::{ChannelMasks, NetPlan};
use serde::{Deserialize, Serialize};

use crate::budget::{Budget, BudgetFit, LandingTrace};
use crate::config::SearchConfig;
use crate::quantize::QuantizeReport;
use crate::train::{Accuracy, EpochStats};

/// Accuracy and cost of one network.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetReport {
    /// Top-1 accuracy on the test set, a fraction in 0..1.
    pub top1: f64,
    /// Top-5 accuracy on the test set.
    pub top5: f64,
    /// Multiply-accumulates of one forward pass of one image.
    pub flops: u64,
    /// Weights and biases with batch norm folded into the convs.
    pub params: u64,
    /// Test images evaluated.
    pub images: usize,
    /// Test images classified right: the top-1 as a count, which `dnal eval` compares exactly
    /// (absent in reports of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_hits: Option<usize>,
}

/// One stage's epochs and wall time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// `weights`, `gates`, `prune` or `finetune`.
    pub name: String,
    /// Epochs run.
    pub epochs: usize,
    /// Wall time in seconds (summed over resumed runs).
    pub seconds: f64,
    /// The search whose stage this is, when this search started after it (`--from-weights`):
    /// its epochs and seconds were spent there, not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<PathBuf>,
}

/// One epoch of one stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The stage.
    pub stage: String,
    /// 1-based epoch within the stage.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Mean training cross entropy.
    pub cross_entropy: f64,
    /// Training top-1 (augmented batches).
    pub train_top1: f64,
    /// Test top-1 after the epoch (gate stage: with hard gates, i.e. the binarised network
    /// before finetuning).
    pub test_top1: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Wall time of the epoch's training, in seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

impl EpochRecord {
    /// The record of `stage`'s 1-based `epoch`: its training `stats`, the test `accuracy`
    /// after it and the learning rate at its last step.
    pub fn new(
        stage: &str,
        epoch: usize,
        stats: &EpochStats,
        accuracy: &Accuracy,
        lr: f64,
    ) -> Self {
        EpochRecord {
            stage: stage.into(),
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
}

/// The gates after one epoch of the gate stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// delta at the epoch's last step.
    pub delta: f64,
    /// Live channels (s > 0) per gate, in the order of `Report::gate_names`.
    pub alive: Vec<usize>,
    /// Expected multiply-accumulates under the soft gates at this delta.
    pub expected_flops: f64,
    /// Multiply-accumulates of the network the hard gates describe.
    pub hard_flops: u64,
    /// Parameters of the network the hard gates describe.
    #[serde(default)]
    pub hard_params: u64,
    /// lambda_a at the epoch's end (it moves in budget mode).
    pub lambda: f64,
    /// Expected latency (ms) under the soft gates, from the board's table, when the search
    /// uses a board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_ms: Option<f64>,
    /// Latency (ms) of the network the hard gates describe, from the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_ms: Option<f64>,
}

/// Channels of one gated group before and after pruning.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupChannels {
    /// The layers that write the group.
    pub layers: String,
    /// Channels in the parent.
    pub parent: usize,
    /// Channels kept.
    pub pruned: usize,
}

/// One searched layer of a supernet: its parallel candidates and what each kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SupernetLayer {
    /// The layer (its add's name without `.add`).
    pub layer: String,
    /// Its candidates, in order.
    pub candidates: Vec<CandidateChannels>,
}

/// One candidate of a supernet layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateChannels {
    /// The candidate's name within the layer (`k5e3`: kernel 5, expansion 3).
    pub name: String,
    /// Its hidden channels in the parent.
    pub parent: usize,
    /// Its hidden channels kept; 0 when it vanished from the pruned network.
    pub pruned: usize,
}

impl SupernetLayer {
    /// Every searched layer of `plan`'s supernet with the channels `masks` keep (empty for a
    /// network without parallel candidates).
    pub fn all(plan: &NetPlan, masks: &ChannelMasks) -> Vec<Self> {
        let nodes = &plan.spec.nodes;
        plan.groups
            .branch_sets
            .iter()
            .map(|set| {
                let layer = nodes[set.add].name.trim_end_matches(".add").to_string();
                let candidates = set
                    .branches
                    .iter()
                    .map(|branch| {
                        let projection = &nodes[branch.projection].name;
                        let name = projection
                            .strip_prefix(&format!("{layer}."))
                            .unwrap_or(projection)
                            .trim_end_matches(".project")
                            .to_string();
                        CandidateChannels {
                            name,
                            parent: plan.groups.groups[branch.group].channels,
                            pruned: masks.kept(branch.group).len(),
                        }
                    })
                    .collect();
                SupernetLayer { layer, candidates }
            })
            .collect()
    }
}

/// `OUT/report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The dnal version that wrote it.
    pub dnal_version: String,
    /// The search's settings.
    pub config: SearchConfig,
    /// The unpruned network after the weight stage.
    pub parent: NetReport,
    /// The pruned, finetuned network, as exported (batch norm folded).
    pub pruned: NetReport,
    /// parent FLOPs / pruned FLOPs.
    pub flops_reduction: f64,
    /// parent params / pruned params.
    pub params_reduction: f64,
    /// Pruned minus parent top-1, in percentage points.
    pub top1_change_pp: f64,
    /// The stages in order.
    pub stages: Vec<StageReport>,
    /// Channels per gated group.
    pub channels: Vec<GroupChannels>,
    /// A name for each gate (the layers that write its group).
    pub gate_names: Vec<String>,
    /// The gates after each epoch of the gate stage.
    pub gates: Vec<GateRecord>,
    /// Every epoch of every stage.
    pub history: Vec<EpochRecord>,
    /// In budget mode: the budget, and how the kept channels were fitted to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetReport>,
    /// With a board: the pruned network's latency, predicted by the table and measured on
    /// the board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyReport>,
    /// The training augmentation used (`none`, `flip`, `shift N`, `flip, shift N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<String>,
    /// For a supernet: per searched layer, which candidates survived with how many channels
    /// (drawn in `supernet.svg`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supernet: Vec<SupernetLayer>,
    /// What the search found wrong but went on with (a network collapsed by the gate stage,
    /// or squeezed to one channel where every image passes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// With `--precision int8`: the int8 network in `OUT/int8` against the f32 one (`pruned`),
    /// with its calibration and quantisation-aware training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<QuantizeReport>,
}

impl Report {
    /// One line: the parent's and the pruned network's top-1, MACs and parameters.
    pub fn summary(&self) -> String {
        format!(
            "parent: top-1 {:.2}%, {} MACs, {} params | pruned: top-1 {:.2}%, {} MACs ({:.2}x fewer), {} params ({:.2}x fewer)",
            100.0 * self.parent.top1,
            self.parent.flops,
            self.parent.params,
            100.0 * self.pruned.top1,
            self.pruned.flops,
            self.flops_reduction,
            self.pruned.params,
            self.params_reduction,
        )
    }
}

/// How a budgeted search met its budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetReport {
    /// The budget.
    pub budget: Budget,
    /// lambda_a at the end of the gate stage.
    pub lambda: f64,
    /// The fit of the kept channels to the budget.
    pub fit: BudgetFit,
    /// For a latency budget: the fitted network measured on the board before finetuning, one
    /// entry per fit tried; the last is the network kept, measured at or under the budget.
    #[serde(default)]
    pub measured_fits: Vec<FitMeasurement>,
    /// With a board (a latency budget, or any budget with `--board`): the fits whose firmware
    /// did not fit the board's memory (never measured; the next fit aimed lower by the share
    /// that did not fit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oversized_fits: Vec<OversizedFit>,
    /// The gate stage's course towards the budget, step by step (every `stride`-th).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<LandingTrace>,
}

/// A fitted network whose firmware did not fit the board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OversizedFit {
    /// The cost the fit aimed at or under, in the budget's unit.
    #[serde(alias = "target_ms")]
    pub target: f64,
    /// The fit's own cost (for a latency budget, its prediction).
    #[serde(alias = "predicted_ms")]
    pub cost: f64,
    /// The budget's unit (`ms`, `MACs`, `params`).
    #[serde(default = "milliseconds")]
    pub unit: String,
    /// The memory it outgrew (`flash` or `RAM`).
    pub memory: String,
    /// Bytes the firmware needed.
    pub needed: u64,
    /// Bytes the board has.
    pub available: u64,
}

/// The unit of reports written before fits on other budgets were built for the board.
fn milliseconds() -> String {
    "ms".into()
}

/// One fitted network measured on the board (a latency budget is held on the measurement,
/// not on the table's prediction).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitMeasurement {
    /// The prediction the fit aimed at or under, in ms (the budget, then lower while the
    /// board measured over it).
    pub target_ms: f64,
    /// The prediction the fit made for the fitted network: the table's, corrected by the
    /// measurements kept beside it when there were any at the search's start.
    pub predicted_ms: f64,
    /// What the board measured.
    pub measured_ms: f64,
}

/// A pruned network's latency on the board: predicted from the table and measured by running
/// it there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// The board.
    pub board: String,
    /// What the figures count ("instructions" under QEMU, "cycles" on a real board).
    pub unit: String,
    /// The clock assumed to turn units into milliseconds, and why.
    pub clock_hz: f64,
    /// How units become cycles (1 for cycles; an assumption for instruction counts).
    pub cycles_per_unit: f64,
    /// The table's prediction, in units and milliseconds.
    pub predicted_units: f64,
    /// The prediction in milliseconds.
    pub predicted_ms: f64,
    /// What the board measured, mean per inference.
    pub measured_units: f64,
    /// The measurement in milliseconds.
    pub measured_ms: f64,
    /// `(predicted - measured) / measured`, in percent.
    pub error_pct: f64,
    /// True when the prediction extrapolated beyond the table's grid.
    pub extrapolated: bool,
    /// The prediction corrected by the measurements kept beside the table before this one
    /// (none before the first).
    #[serde(default)]
    pub corrected_ms: Option<f64>,
    /// How far the table's predictions, as is and corrected, were from the board over every
    /// measurement kept beside it, this one included.
    #[serde(default)]
    pub errors: Option<PredictionErrors>,
    /// The file those measurements are kept in.
    #[serde(default)]
    pub measurements: Option<PathBuf>,
    /// The firmware folder (deploy.json).
    pub firmware: PathBuf,
    /// Why the table may predict this firmware less well than its errors say: it was
    /// profiled with other firmware code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl LatencyReport {
    /// One line for the terminal: measured against predicted, and how well the table has
    /// predicted this board so far.
    pub fn describe(&self) -> String {
        let corrected = match self.corrected_ms {
            Some(ms) => format!(", corrected {ms:.3} ms"),
            None => String::new(),
        };
        let errors = self
            .errors
            .map(|e| format!("; {}", e.describe()))
            .unwrap_or_default();
        format!(
            "{:.3} ms on {} (table {:.3} ms{corrected}){errors}",
            self.measured_ms, self.board, self.predicted_ms
        )
    }
}
