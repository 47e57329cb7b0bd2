//! The paper's CIFAR-10 settings as presets (`dnal search --preset paper-vgg16`): model,
//! dataset, epochs, learning rates, batch size and a budget where section V gives them.
//!
//! What the paper states (section V-B and the mobile networks' paragraphs): a weight stage of
//! 100 epochs at a fixed learning rate of 0.1, a gate stage of 20 epochs at a constant 0.1,
//! finetuning for 110 epochs with batches of 96 ("the other hyper-parameters are the same",
//! in the mobile networks' paragraph, which the presets take for all three), and the costs of
//! its results: VGG16 at 61.23M FLOPs (92.33% top-1) and the lightweight MobileNetV2 at about
//! 20x fewer FLOPs (87.85%). It gives no lambda_a and no cost for ResNet-56, so that preset
//! keeps dnal's default budget (40% of the parent's MACs). Options given on the command line
//! override a preset's.

use crate::budget::Budget;
use crate::config::{LrSchedule, SearchConfig};

/// One preset: what it sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    /// `--preset NAME`.
    pub name: &'static str,
    /// One line for `dnal list`.
    pub what: &'static str,
    /// The model it searches.
    pub model: &'static str,
    /// The budget the paper's result landed at, or `None` where the paper gives none.
    pub budget: Option<Budget>,
}

/// The paper's dataset for every preset.
pub const DATASET: &str = "cifar10";
/// Weight-stage epochs (section V-B).
pub const EPOCHS_WEIGHTS: usize = 100;
/// Gate-stage epochs ("20 epochs for CIFAR-10").
pub const EPOCHS_GATES: usize = 20;
/// Finetuning epochs (the mobile networks' paragraph).
pub const EPOCHS_FINETUNE: usize = 110;
/// Images per step (the mobile networks' paragraph).
pub const BATCH_SIZE: usize = 96;
/// The weight stage's fixed learning rate and the gates' constant one.
pub const LR: f64 = 0.1;

/// The presets `dnal search --preset` knows.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "paper-vgg16",
        what: "VGG16 on CIFAR-10 as in the paper, pruned to its 61.23M FLOPs (92.33% there)",
        model: "vgg16",
        budget: Some(Budget::Flops(61.23e6)),
    },
    Preset {
        name: "paper-resnet56",
        what: "ResNet-56 on CIFAR-10 as in the paper (93.75% there); no cost given: 40% budget",
        model: "resnet56",
        budget: None,
    },
    Preset {
        name: "paper-mobilenetv2",
        what: "MobileNetV2 on CIFAR-10 as in the paper, pruned to 5% of its FLOPs (87.85% at about 20x there)",
        model: "mobilenetv2",
        budget: Some(Budget::FlopsShare(0.05)),
    },
];

/// The preset called `name`, or what to pick instead.
pub fn preset(name: &str) -> Result<&'static Preset, String> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let known: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        format!("unknown preset {name:?}; choose {}", known.join(", "))
    })
}

impl Preset {
    /// What the preset sets, in one line for the terminal.
    pub fn describe(&self) -> String {
        let budget = self
            .budget
            .map_or_else(|| "the default budget".into(), |b| b.to_string());
        format!(
            "{} on {DATASET}, {EPOCHS_WEIGHTS}/{EPOCHS_GATES}/{EPOCHS_FINETUNE} epochs, batches of {BATCH_SIZE}, learning rate {LR} fixed, {budget}",
            self.model
        )
    }

    /// Sets the preset's settings in `config`, except those `given` on the command line
    /// (by option id: `epochs_weights`, `lr`, ...), and records its name.
    pub fn apply(&self, config: &mut SearchConfig, given: impl Fn(&str) -> bool) {
        config.preset = Some(self.name.to_string());
        macro_rules! set {
            ($($id:literal => $field:ident = $value:expr),* $(,)?) => {
                $(if !given($id) { config.$field = $value; })*
            };
        }
        set! {
            "model" => model = self.model.to_string(),
            "dataset" => dataset = DATASET.to_string(),
            "epochs_weights" => epochs_weights = EPOCHS_WEIGHTS,
            "epochs_gates" => epochs_gates = EPOCHS_GATES,
            "epochs_finetune" => epochs_finetune = EPOCHS_FINETUNE,
            "batch_size" => batch_size = BATCH_SIZE,
            "lr" => lr = LR,
            "lr_schedule" => lr_schedule = LrSchedule::Constant,
            "lr_gates" => lr_gates = LR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preset_sets_the_papers_settings_but_not_what_was_given() {
        let vgg = preset("paper-vgg16").unwrap();
        let mut config = SearchConfig::default();
        vgg.apply(&mut config, |_| false);
        assert_eq!(config.preset.as_deref(), Some("paper-vgg16"));
        assert_eq!(config.model, "vgg16");
        assert_eq!(config.dataset, "cifar10");
        assert_eq!(
            (
                config.epochs_weights,
                config.epochs_gates,
                config.epochs_finetune
            ),
            (100, 20, 110)
        );
        assert_eq!(config.batch_size, 96);
        assert_eq!(config.lr_schedule, LrSchedule::Constant);
        assert_eq!((config.lr, config.lr_gates), (0.1, 0.1));
        assert_eq!(vgg.budget, Some(Budget::Flops(61.23e6)));

        // Given options win: a subset run on another dataset, shorter.
        let mut config = SearchConfig {
            dataset: "folder".into(),
            epochs_weights: 2,
            ..SearchConfig::default()
        };
        vgg.apply(&mut config, |id| id == "dataset" || id == "epochs_weights");
        assert_eq!(
            (config.dataset.as_str(), config.epochs_weights),
            ("folder", 2)
        );
        assert_eq!(config.epochs_gates, 20);

        let err = preset("paper-alexnet").unwrap_err();
        assert!(
            err.contains("paper-vgg16") && err.contains("paper-mobilenetv2"),
            "{err}"
        );
        // Every preset names a model the zoo knows.
        for p in PRESETS {
            assert!(
                dnal_models::MODELS.iter().any(|(m, _)| *m == p.model),
                "{}",
                p.name
            );
        }
    }
}
