//! The settings of a search.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use dnal_export::Precision;
use dnal_models::GatePosition;
use serde::{Deserialize, Serialize};

use crate::arch_cost::CostWeighting;
use crate::backend::Backend;
use crate::budget::Budget;
use crate::error::SearchError;

/// Everything that decides what a search computes. Stored in the checkpoint, so that
/// `--resume` continues with the same settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// The paper preset these settings started from (`--preset`), if any.
    #[serde(default)]
    pub preset: Option<String>,
    /// Dataset name (see `dnal_datasets::DATASET_NAMES`).
    pub dataset: String,
    /// Where the dataset's files are, if not in their default place.
    pub data_dir: Option<PathBuf>,
    /// Model name (see `dnal_models::MODELS`).
    pub model: String,
    /// The width multiplier of a model that takes one (`dnal_models::WIDTH_MODELS`; absent:
    /// 1.0).
    #[serde(default)]
    pub width: Option<f64>,
    /// An image folder's input height and width (absent: the images' own).
    #[serde(default)]
    pub image_size: Option<(usize, usize)>,
    /// An image folder's channels, 1 or 3 (absent: the images' own).
    #[serde(default)]
    pub channels: Option<usize>,
    /// The training augmentation instead of the dataset's own: `none`, `flip`, `shift` or
    /// `flip,shift`.
    #[serde(default)]
    pub augment: Option<String>,
    /// Use only the first N training images.
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,
    /// Epochs of the weight stage (gates off).
    pub epochs_weights: usize,
    /// Epochs of the gate stage (weights frozen, delta 1 -> 1e4).
    pub epochs_gates: usize,
    /// Epochs of finetuning the pruned network.
    pub epochs_finetune: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Learning rate of the weight stage: the peak of its cosine schedule, or the constant.
    pub lr: f64,
    /// How the weight stage's learning rate moves.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Learning rate of the gate parameters (constant, as in the paper).
    pub lr_gates: f64,
    /// Peak learning rate of finetuning (cosine schedule).
    pub lr_finetune: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay of the weight stage and finetuning.
    pub weight_decay: f64,
    /// lambda_a, the weight of the architecture loss: the push on one channel of average cost
    /// (see [`CostWeighting`]).
    pub lambda: f64,
    /// c_l of the architecture loss.
    pub cost: CostWeighting,
    /// delta at the gate stage's first step.
    pub delta_start: f64,
    /// delta at the gate stage's last step.
    pub delta_end: f64,
    /// Where the gates sit in a conv block.
    pub gate_position: GatePosition,
    /// Where the training runs.
    pub backend: Backend,
    /// Seeds weights, data order and augmentation.
    pub seed: u64,
    /// The board whose latency the search uses (`--cost latency`, latency budgets) and on which
    /// the pruned network is measured after the search.
    #[serde(default)]
    pub board: Option<String>,
    /// The board's latency table for this model; profiled into `OUT/latency.json` when absent.
    #[serde(default)]
    pub latency_table: Option<PathBuf>,
    /// A cost the pruned network must meet; lambda_a then starts at `lambda` (or where the
    /// data balance it, with `lambda_from_data`) and is steered.
    #[serde(default)]
    pub budget: Option<Budget>,
    /// In budget mode, lambda_a starts where the architecture loss outweighs the data on
    /// the share of the channels the budget closes (measured on 4 batches of the gate stage's
    /// data) instead of at `lambda`: the right scale differs between models (5e-3 for
    /// vgg-small, 1.2e-3 for MobileNetV2 on Fashion-MNIST, at a quarter of the parent's cost).
    #[serde(default)]
    pub lambda_from_data: bool,
    /// How batch norm normalises in the gate stage.
    #[serde(default = "GateStageNorm::before_the_option")]
    pub gate_norm: GateStageNorm,
    /// How far the budget controller may move log(lambda_a) in one gate-stage epoch.
    #[serde(default = "default_budget_gain")]
    pub budget_gain: f64,
    /// Weight of the trained parent's soft targets in the finetune loss (0: plain cross
    /// entropy; see [`crate::distill`]).
    #[serde(default)]
    pub distill: f64,
    /// Temperature that softens the parent's outputs for distillation.
    #[serde(default = "default_distill_temperature")]
    pub distill_temperature: f64,
    /// The precision the search delivers. With `int8`, the finetuned network is calibrated
    /// on `calibration_images` training images and trained `epochs_qat` more epochs with
    /// fake quantisation, and its int8 export goes to `OUT/int8`.
    #[serde(default)]
    pub precision: Precision,
    /// Epochs of quantisation-aware training (`precision` int8; 0: post-training
    /// quantisation alone).
    #[serde(default = "default_epochs_qat")]
    pub epochs_qat: usize,
    /// Peak learning rate of quantisation-aware training (cosine schedule).
    #[serde(default = "default_lr_qat")]
    pub lr_qat: f64,
    /// Weight of the f32 network's soft targets in quantisation-aware training (0: the
    /// labels alone; see [`crate::quantize::aware`]). A search configured before it existed
    /// trained on the labels alone, and goes on so.
    #[serde(default)]
    pub distill_qat: f64,
    /// Temperature that softens the f32 network's outputs for `distill_qat`.
    #[serde(default = "crate::quantize::aware::default_distill_temperature")]
    pub distill_temperature_qat: f64,
    /// Training images int8 calibration observes.
    #[serde(default = "default_calibration_images")]
    pub calibration_images: usize,
    /// int8 on a Cortex-M4/M7 board: the firmware the search measures (and the latency table
    /// it profiles) runs 3x3 convolutions by Winograd's F(2x2, 3x3), as `dnal deploy
    /// --winograd` does.
    #[serde(default)]
    pub winograd: bool,
}

/// How batch norm normalises in the gate stage, whose weights are frozen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateStageNorm {
    /// Each batch's own statistics, as in training (the running statistics follow them): a
    /// layer the soft gates scale down is renormalised by the next batch norm (the paper does
    /// not say which statistics its gate stage used). Deep networks need it: with fixed
    /// statistics the half-open gates of the stage's start (`sigmoid(0) = 0.5`) compound
    /// through the layers until the network guesses, and the gates then learn nothing but
    /// the architecture loss.
    #[default]
    Batch,
    /// The parent's running statistics, fixed.
    Running,
}

impl GateStageNorm {
    /// What searches recorded before the option existed used.
    fn before_the_option() -> Self {
        GateStageNorm::Running
    }
}

impl fmt::Display for GateStageNorm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GateStageNorm::Batch => "batch",
            GateStageNorm::Running => "running",
        })
    }
}

impl FromStr for GateStageNorm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "batch" => Ok(GateStageNorm::Batch),
            "running" => Ok(GateStageNorm::Running),
            _ => Err(format!("{s:?}: use batch or running")),
        }
    }
}

/// How the weight stage's learning rate moves over the stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// A linear warm-up over the first epoch (at most a tenth of the stage), then cosine
    /// annealing to 0.
    #[default]
    Cosine,
    /// `lr` throughout: the paper's VGG16 weight stage (0.1, fixed).
    Constant,
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LrSchedule::Cosine => "cosine",
            LrSchedule::Constant => "constant",
        })
    }
}

impl FromStr for LrSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cosine" => Ok(LrSchedule::Cosine),
            "constant" => Ok(LrSchedule::Constant),
            _ => Err(format!("{s:?}: use cosine or constant")),
        }
    }
}

/// Fast enough to bring the gates back from 1.7x the budget within an epoch of held delta
/// (2, the earlier default, left them up to +65% over when delta froze them).
fn default_budget_gain() -> f64 {
    10.0
}

fn default_distill_temperature() -> f64 {
    4.0
}

fn default_epochs_qat() -> usize {
    2
}

/// A fiftieth of finetuning's peak: the network is trained, and on Fashion-MNIST 0.005 lost
/// 0.2 pp in an epoch where 0.001 kept top-1 (BENCHMARKS.md).
fn default_lr_qat() -> f64 {
    0.001
}

fn default_calibration_images() -> usize {
    crate::quantize::DEFAULT_CALIBRATION_IMAGES
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            preset: None,
            dataset: "fashion-mnist".into(),
            data_dir: None,
            model: dnal_models::DEFAULT_MODEL.into(),
            width: None,
            image_size: None,
            channels: None,
            augment: None,
            train_limit: None,
            test_limit: None,
            epochs_weights: 20,
            epochs_gates: 5,
            epochs_finetune: 15,
            batch_size: 128,
            lr: 0.1,
            lr_schedule: LrSchedule::Cosine,
            lr_gates: 0.1,
            lr_finetune: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            lambda: 6e-3,
            cost: CostWeighting::Flops,
            delta_start: 1.0,
            delta_end: 1e4,
            gate_position: GatePosition::AfterBn,
            backend: Backend::Cpu,
            seed: 0,
            board: None,
            latency_table: None,
            budget: None,
            lambda_from_data: false,
            gate_norm: GateStageNorm::Batch,
            budget_gain: default_budget_gain(),
            distill: 0.0,
            distill_temperature: default_distill_temperature(),
            precision: Precision::F32,
            epochs_qat: default_epochs_qat(),
            lr_qat: default_lr_qat(),
            distill_qat: crate::quantize::aware::DEFAULT_DISTILL,
            distill_temperature_qat: crate::quantize::aware::DEFAULT_DISTILL_TEMPERATURE,
            calibration_images: default_calibration_images(),
            winograd: false,
        }
    }
}

impl SearchConfig {
    /// The spec of the configured model (with its width) for images of `input` shape.
    pub fn model_spec(
        &self,
        input: dnal_models::Shape3,
        num_classes: usize,
    ) -> Result<dnal_models::NetSpec, dnal_models::ModelError> {
        dnal_models::model_spec_at_width(&self.model, input, num_classes, self.width)
    }

    /// Refuses settings that cannot give a meaningful search, naming the option.
    pub fn validate(&self) -> Result<(), SearchError> {
        let bad = |option: &'static str, value: String, reason: &str| {
            Err(SearchError::InvalidOption {
                option,
                value,
                reason: reason.to_string(),
            })
        };
        if self.epochs_weights == 0 {
            return bad(
                "--epochs-weights",
                "0".into(),
                "the gates can only judge trained weights; use at least 1",
            );
        }
        if self.epochs_gates == 0 {
            return bad(
                "--epochs-gates",
                "0".into(),
                "without a gate stage every gate stays at s = 0 and nothing is learned; use at least 1",
            );
        }
        if self.batch_size == 0 {
            return bad("--batch-size", "0".into(), "use at least 1");
        }
        for (option, value) in [
            ("--lr", self.lr),
            ("--lr-gates", self.lr_gates),
            ("--lr-finetune", self.lr_finetune),
            ("--lr-qat", self.lr_qat),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return bad(option, value.to_string(), "must be a positive number");
            }
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return bad(
                "--lambda",
                self.lambda.to_string(),
                "must be a number >= 0 (0 prunes only what hurts the loss)",
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad("--momentum", self.momentum.to_string(), "must be in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "--weight-decay",
                self.weight_decay.to_string(),
                "must be a number >= 0",
            );
        }
        if !(self.delta_start > 0.0
            && self.delta_end >= self.delta_start
            && self.delta_end.is_finite())
        {
            return bad(
                "--delta-end",
                format!("{} (start {})", self.delta_end, self.delta_start),
                "delta must grow from a positive start to a finite end",
            );
        }
        if let Some(budget) = self.budget {
            if !budget.is_valid() {
                let (value, reason) = match budget {
                    Budget::FlopsShare(share) | Budget::ParamsShare(share) => (
                        format!("{}%", 100.0 * share),
                        "a share of the parent's cost must be above 0% and at most 100%",
                    ),
                    _ => (budget.target().to_string(), "must be a positive number"),
                };
                return bad(budget.option(), value, reason);
            }
            if self.lambda <= 0.0 {
                return bad(
                    "--lambda",
                    self.lambda.to_string(),
                    "a budget steers lambda_a from its start value, which must be positive",
                );
            }
        }
        let has_latency = self.board.is_some() || self.latency_table.is_some();
        if matches!(self.budget, Some(Budget::LatencyMs(_))) && !has_latency {
            return bad(
                "--latency-budget-ms",
                self.budget
                    .map(|b| b.target())
                    .unwrap_or_default()
                    .to_string(),
                "needs the board's latency: add --board BOARD (profiled on the fly) or --latency-table FILE",
            );
        }
        if self.cost == CostWeighting::Latency && !has_latency {
            return bad(
                "--cost",
                "latency".into(),
                "needs the board's latency: add --board BOARD (profiled on the fly) or --latency-table FILE",
            );
        }
        if !(self.budget_gain.is_finite() && self.budget_gain > 0.0) {
            return bad(
                "--budget-gain",
                self.budget_gain.to_string(),
                "must be a positive number",
            );
        }
        check_distillation(
            ("--distill", self.distill),
            ("--distill-temperature", self.distill_temperature),
        )?;
        check_distillation(
            ("--distill-qat", self.distill_qat),
            ("--distill-temperature-qat", self.distill_temperature_qat),
        )?;
        for (option, limit) in [
            ("--train-limit", self.train_limit),
            ("--test-limit", self.test_limit),
        ] {
            if limit == Some(0) {
                return bad(option, "0".into(), "use at least 1 image, or leave it out");
            }
        }
        if self.winograd && self.precision != Precision::Int8 {
            return bad(
                "--winograd",
                "true".into(),
                "Winograd's 3x3 convolutions are int8 kernels: add --precision int8",
            );
        }
        if self.winograd && !has_latency {
            return bad(
                "--winograd",
                "true".into(),
                "chooses the firmware the search measures on a board: add --board BOARD or \
                 --latency-table FILE (or deploy the result with `dnal deploy --winograd`)",
            );
        }
        if self.precision == Precision::Int8 && self.calibration_images == 0 {
            return bad(
                "--calibration-images",
                "0".into(),
                "int8 scales come from the values seen on calibration images: use at least 1",
            );
        }
        Ok(())
    }
}

/// Refuses a distillation weight outside [0, 1] or a temperature that is not positive, naming
/// the option that set it.
pub fn check_distillation(
    (weight_option, weight): (&'static str, f64),
    (temperature_option, temperature): (&'static str, f64),
) -> Result<(), SearchError> {
    if !(0.0..=1.0).contains(&weight) {
        return Err(SearchError::InvalidOption {
            option: weight_option,
            value: weight.to_string(),
            reason: "is the weight of the teacher's soft targets: a number in [0, 1] (0 turns \
                     distillation off)"
                .into(),
        });
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(SearchError::InvalidOption {
            option: temperature_option,
            value: temperature.to_string(),
            reason: "must be a positive number".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_recorded_before_the_gate_norm_option_resume_as_they_ran() {
        let mut json = serde_json::to_value(SearchConfig::default()).unwrap();
        assert_eq!(json["gate_norm"], "batch");
        assert_eq!(json["lambda_from_data"], false);
        let fields = json.as_object_mut().unwrap();
        fields.remove("gate_norm");
        fields.remove("lambda_from_data");
        let old: SearchConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.gate_norm, GateStageNorm::Running);
        assert!(!old.lambda_from_data);
        for norm in [GateStageNorm::Batch, GateStageNorm::Running] {
            assert_eq!(norm.to_string().parse::<GateStageNorm>(), Ok(norm));
        }
        assert!(
            "frozen"
                .parse::<GateStageNorm>()
                .unwrap_err()
                .contains("batch or running")
        );
    }

    #[test]
    fn nonsense_settings_are_refused_by_name() {
        let ok = SearchConfig::default();
        assert!(ok.validate().is_ok());
        let cases = [
            (
                SearchConfig {
                    epochs_gates: 0,
                    ..ok.clone()
                },
                "--epochs-gates",
            ),
            (
                SearchConfig {
                    lambda: -1.0,
                    ..ok.clone()
                },
                "--lambda",
            ),
            (
                SearchConfig {
                    lr: f64::NAN,
                    ..ok.clone()
                },
                "--lr",
            ),
            (
                SearchConfig {
                    batch_size: 0,
                    ..ok.clone()
                },
                "--batch-size",
            ),
            (
                SearchConfig {
                    train_limit: Some(0),
                    ..ok.clone()
                },
                "--train-limit",
            ),
            (
                SearchConfig {
                    delta_end: 0.5,
                    ..ok.clone()
                },
                "--delta-end",
            ),
            (
                SearchConfig {
                    cost: CostWeighting::Latency,
                    ..ok.clone()
                },
                "--cost",
            ),
            (
                SearchConfig {
                    budget: Some(Budget::LatencyMs(2.0)),
                    ..ok.clone()
                },
                "--latency-budget-ms",
            ),
            (
                SearchConfig {
                    budget: Some(Budget::Flops(-1.0)),
                    ..ok.clone()
                },
                "--flops-budget",
            ),
            (
                SearchConfig {
                    distill: 1.5,
                    ..ok.clone()
                },
                "--distill",
            ),
            (
                SearchConfig {
                    distill_temperature: 0.0,
                    ..ok.clone()
                },
                "--distill-temperature",
            ),
            (
                SearchConfig {
                    distill_qat: -0.5,
                    ..ok.clone()
                },
                "--distill-qat",
            ),
            (
                SearchConfig {
                    distill_temperature_qat: f64::NAN,
                    ..ok.clone()
                },
                "--distill-temperature-qat",
            ),
            (
                SearchConfig {
                    winograd: true,
                    board: Some("cortex-m7-qemu".into()),
                    ..ok.clone()
                },
                "--winograd",
            ),
            (
                SearchConfig {
                    winograd: true,
                    precision: Precision::Int8,
                    ..ok.clone()
                },
                "--winograd",
            ),
        ];
        for (config, option) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with(option), "{err}");
        }
    }
}
