//! The state of a search, `OUT/checkpoint/state.json`: its stage, its epochs, its
//! checkpoints and their checksums, and what the stages found so far.

use std::collections::BTreeMap;
use std::path::Path;

use dnal_models::ChannelMasks;
use serde::{Deserialize, Serialize};

use crate::budget::{CostTrend, LandingTrace};
use crate::checkpoint::{CheckpointDir, Checksums, read_json};
use crate::config::SearchConfig;
use crate::error::SearchError;
use crate::report::{BudgetReport, EpochRecord, GateRecord, NetReport, StageReport};
use crate::schedule::LandingDelta;

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
    /// The stage's name in checkpoints, records and reports.
    pub fn name(self) -> &'static str {
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
    /// Budget mode's delta at the last gate-stage checkpoint.
    #[serde(default)]
    pub gate_landing: Option<LandingDelta>,
    /// Budget mode: where the cost was heading at the last gate-stage checkpoint.
    #[serde(default)]
    pub gate_trend: Option<CostTrend>,
    /// Budget mode: the gate stage's course up to the last gate-stage checkpoint.
    #[serde(default)]
    pub gate_trace: Option<LandingTrace>,
    /// How the kept channels met the budget, in budget mode.
    #[serde(default)]
    pub budget: Option<BudgetReport>,
    /// The SHA-256 of every file of every checkpoint still kept, by checkpoint folder: each is
    /// verified before it is loaded.
    pub checksums: BTreeMap<String, Checksums>,
    /// What the search found wrong but went on with (a collapsed or squeezed network), for
    /// the report.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The layout version of `state.json`; version 2 added the checkpoints' checksums.
pub const STATE_FORMAT: u32 = 2;

impl SearchState {
    /// The state of a search about to start.
    pub fn new(config: SearchConfig) -> Self {
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
            gate_landing: None,
            gate_trend: None,
            gate_trace: None,
            budget: None,
            checksums: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// The time and epochs of a stage (`weights`, `gates`, `prune`, `finetune`, `export`).
    pub(super) fn stage_report(&mut self, name: &str) -> &mut StageReport {
        if let Some(i) = self.stages.iter().position(|s| s.name == name) {
            return &mut self.stages[i];
        }
        self.stages.push(StageReport {
            name: name.into(),
            epochs: 0,
            seconds: 0.0,
            inherited_from: None,
        });
        self.stages.last_mut().expect("just pushed")
    }
}

/// Reads and checks the state of the search in `out`.
pub(super) fn read_state(out: &Path) -> Result<SearchState, SearchError> {
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
