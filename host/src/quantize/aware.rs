//! Quantisation-aware training: the f32 export trained a few more epochs with every value and
//! weight rounded to the int8 grid it will have on the board (fake quantisation, straight-
//! through gradients), so that the int8 network is the network that was trained.
//!
//! It trains the export itself, batch norm folded into the convs: the weights it rounds are
//! the weights the int8 export holds, and the value grids are calibration's, fixed, so that
//! quantising the trained weights gives exactly the grids the training saw.

use burn::module::Module;
use burn::tensor::Device;
use dnal_datasets::Batcher;
use dnal_export::Export;
use dnal_export::int8::ValueQuantization;
use dnal_models::GateMode;
use serde::{Deserialize, Serialize};

use crate::distill::Distillation;
use crate::export::ExportNet;
use crate::report::EpochRecord;
use crate::schedule::CosineSchedule;
use crate::train::{Accuracy, EpochStats, StepPlan, evaluate, sgd, train_epoch};

/// The stage name quantisation-aware epochs carry in records and reports.
pub const STAGE: &str = "qat";

/// How quantisation-aware training runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AwareTraining {
    /// Epochs over the training images.
    pub epochs: usize,
    /// Peak learning rate (cosine schedule to 0, no warm-up: the network is trained already).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Weight of the f32 export's softened outputs in the loss, in [0, 1]:
    /// `(1 - X) * CE + X * T^2 * KL(f32 || int8)` ([`Distillation`]). 0 trains on the labels
    /// alone.
    #[serde(default)]
    pub distill: f64,
    /// Temperature T that softens the f32 export's outputs.
    #[serde(default = "default_distill_temperature")]
    pub distill_temperature: f64,
}

impl AwareTraining {
    /// What it does, for people: "2 epochs of quantisation-aware training, ...".
    pub fn describe(&self) -> String {
        let teacher = if self.distill > 0.0 {
            format!(
                ", the f32 network as teacher (weight {}, temperature {})",
                self.distill, self.distill_temperature
            )
        } else {
            ", on the labels alone".to_string()
        };
        format!(
            "{} epochs of quantisation-aware training{teacher}",
            self.epochs
        )
    }
}

/// The weight of the f32 export's soft targets unless told otherwise (`dnal quantize
/// --distill`, `dnal search --distill-qat`).
pub const DEFAULT_DISTILL: f64 = 1.0;

/// The temperature of distillation from the f32 export unless told otherwise: 1, the f32
/// network's own probabilities, whose largest is the answer int8 should keep.
pub const DEFAULT_DISTILL_TEMPERATURE: f64 = 1.0;

/// [`DEFAULT_DISTILL_TEMPERATURE`], where a report or a search's configuration predates
/// distillation from the f32 export.
pub(crate) fn default_distill_temperature() -> f64 {
    DEFAULT_DISTILL_TEMPERATURE
}

/// What one quantisation-aware training reports as it goes.
pub trait AwareProgress {
    /// `step` of `steps` of epoch `epoch` (1-based) is done.
    fn step(&mut self, epoch: usize, step: usize, steps: usize, stats: &EpochStats);
    /// An epoch ended; `record.test_top1` is the fake-quantised network's on the test images.
    fn epoch(&mut self, record: &EpochRecord);
}

/// Why quantisation-aware training stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum AwareError {
    /// The loss was not a number at this 1-based epoch and step.
    Loss {
        epoch: usize,
        step: usize,
        value: f32,
    },
    /// The network's logits were not numbers after this epoch.
    Logits { epoch: usize, image: usize },
}

impl std::fmt::Display for AwareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwareError::Loss { epoch, step, value } => write!(
                f,
                "quantisation-aware training's loss became {value} at epoch {epoch}, step {step}"
            ),
            AwareError::Logits { epoch, image } => write!(
                f,
                "after quantisation-aware epoch {epoch} the network's logits for test image \
                 {image} are not numbers"
            ),
        }
    }
}

/// Quantisation-aware training's settings and data.
#[derive(Clone, Copy)]
pub struct Training<'a> {
    /// How it runs.
    pub settings: &'a AwareTraining,
    /// Its training batches.
    pub batches: &'a Batcher,
    /// The number of its first epoch in the data order (the search's epochs so far), so that
    /// a search's data order goes on.
    pub first_data_epoch: u64,
}

/// Trains `export` with every value fake-quantised to `values` (one per value: the input,
/// then each layer's output) and every weight to int8 per output channel, as `training`
/// says, evaluating on `test` after each epoch. Returns the trained weights as an export of
/// the same architecture, and one record per epoch.
pub fn train_quantization_aware(
    export: &Export,
    values: Vec<ValueQuantization>,
    training: Training<'_>,
    test: &Batcher,
    device: &Device,
    progress: &mut dyn AwareProgress,
) -> Result<(Export, Vec<EpochRecord>), AwareError> {
    let Training {
        settings,
        batches: train,
        first_data_epoch,
    } = training;
    let device = device.clone().without_autodiff();
    let train_device = device.clone().autodiff();
    let classes = export.arch().num_classes;
    let mut net = ExportNet::new(export, &train_device)
        .with_fake_quantization(values)
        .train();
    let mut optim = sgd(settings.momentum, settings.weight_decay);
    let steps = train.num_batches();
    let schedule = CosineSchedule {
        base: settings.lr,
        steps: settings.epochs * steps,
        warmup: 0,
    };
    let lr = move |step: usize| schedule.at(step);
    let mode = |_: usize| GateMode::Off;
    let teacher = (settings.distill > 0.0).then(|| {
        Distillation::from_export(
            export,
            &device,
            settings.distill,
            settings.distill_temperature,
        )
    });
    let mut records = Vec::with_capacity(settings.epochs);
    for epoch in 0..settings.epochs {
        let plan = StepPlan {
            lr: &lr,
            mode: &mode,
            first_step: epoch * steps,
            data_epoch: first_data_epoch + epoch as u64,
            distill: teacher.as_ref(),
        };
        let (trained, stats) = train_epoch(
            net,
            &mut optim,
            train,
            &train_device,
            &plan,
            None,
            |step, stats| progress.step(epoch + 1, step, steps, stats),
        )
        .map_err(|bad| AwareError::Loss {
            epoch: epoch + 1,
            step: bad.step,
            value: bad.value,
        })?;
        net = trained;
        let eval = net.valid();
        let accuracy: Accuracy =
            evaluate(test, classes, &device, |x| eval.forward(x)).map_err(|bad| {
                AwareError::Logits {
                    epoch: epoch + 1,
                    image: bad.image,
                }
            })?;
        let record = EpochRecord::new(
            STAGE,
            epoch + 1,
            &stats,
            &accuracy,
            lr((epoch + 1) * steps - 1),
        );
        progress.epoch(&record);
        records.push(record);
    }
    let trained = net
        .valid()
        .to_export(export)
        .expect("the trained weights have the export's shapes");
    Ok((trained, records))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dnal_datasets::{ImageSet, Normalization};
    use dnal_export::{
        Activation, Arch, Conv2dSpec, Layer, LinearSpec, Op, Shape3, Tensor as ExportTensor,
    };

    use super::*;

    struct Quiet;
    impl AwareProgress for Quiet {
        fn step(&mut self, _: usize, _: usize, _: usize, _: &EpochStats) {}
        fn epoch(&mut self, _: &EpochRecord) {}
    }

    /// A 2-class task a 4x4 conv net learns: bright top half or bright bottom half.
    fn task(n: usize) -> ImageSet {
        let mut pixels = Vec::with_capacity(n * 16);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = i % 2;
            for p in 0..16 {
                let top = p < 8;
                let bright = top == (label == 0);
                pixels.push(if bright {
                    150 + (i * 7 + p * 3) % 100
                } else {
                    (i * 5 + p) % 90
                } as u8);
            }
            labels.push(label as u32);
        }
        ImageSet::new(
            Shape3::new(1, 4, 4),
            pixels,
            labels,
            vec!["top".into(), "bottom".into()],
        )
        .unwrap()
    }

    fn export() -> Export {
        let conv = Conv2dSpec {
            in_channels: 1,
            out_channels: 3,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            groups: 1,
            activation: Activation::Relu,
            kept_channels: vec![0, 1, 2],
        };
        let linear = LinearSpec {
            in_features: 48,
            out_features: 2,
            activation: Activation::None,
        };
        let mut arch = Arch::new(
            "tiny",
            Shape3::new(1, 4, 4),
            2,
            vec![
                Layer::new("conv", vec![0], Op::Conv2d(conv)),
                Layer::new("fc", vec![1], Op::Linear(linear)),
            ],
        );
        arch.complete().unwrap();
        let weights = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 37 + seed) % 19) as f32 - 9.0) / 30.0)
                .collect()
        };
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "conv.weight".into(),
            ExportTensor::new(vec![3, 1, 3, 3], weights(27, 1)),
        );
        tensors.insert(
            "conv.bias".into(),
            ExportTensor::new(vec![3], vec![0.0, 0.1, -0.1]),
        );
        tensors.insert(
            "fc.weight".into(),
            ExportTensor::new(vec![2, 48], weights(96, 5)),
        );
        tensors.insert("fc.bias".into(), ExportTensor::new(vec![2], vec![0.0, 0.0]));
        Export::new(arch, tensors).unwrap()
    }

    /// Quantisation-aware training of [`export`] on the tiny task, calibrated on its training
    /// images as `dnal quantize` does.
    fn train(export: &Export, settings: &AwareTraining) -> (Export, Vec<EpochRecord>) {
        let norm = Normalization {
            mean: vec![0.5],
            std: vec![0.25],
        };
        let device = Device::flex();
        let train = Batcher::new(task(64), norm.clone(), 16).with_shuffle(3);
        let test = Batcher::new(task(32), norm.clone(), 32);
        let values = crate::quantize::quantize_for_board(export, task(64), &norm, &device)
            .unwrap()
            .arch()
            .quantization
            .clone()
            .unwrap()
            .values;
        let training = Training {
            settings,
            batches: &train,
            first_data_epoch: 0,
        };
        train_quantization_aware(export, values, training, &test, &device, &mut Quiet).unwrap()
    }

    #[test]
    fn training_moves_the_weights_and_keeps_the_architecture() {
        let export = export();
        let settings = AwareTraining {
            epochs: 3,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            distill: 0.0,
            distill_temperature: 1.0,
        };
        let (trained, records) = train(&export, &settings);
        assert_eq!(records.len(), 3);
        assert!(
            records
                .iter()
                .all(|r| r.stage == STAGE && r.loss.is_finite())
        );
        assert_eq!(trained.arch(), export.arch());
        let (before, _) = export.weight_and_bias("conv").unwrap();
        let (after, _) = trained.weight_and_bias("conv").unwrap();
        assert_eq!(before.shape, after.shape);
        assert_ne!(before.data, after.data, "the weights were trained");
        // The task is easy: training on it must lower the loss.
        assert!(
            records[2].cross_entropy < records[0].cross_entropy,
            "{records:?}"
        );
    }

    #[test]
    fn distillation_teaches_the_f32_exports_own_outputs() {
        // With the f32 export as the only teacher (X = 1) the loss is T^2 * KL(f32 || int8):
        // the int8 network starts as the f32 one rounded, so the loss starts near 0 while
        // the labels' cross entropy does not. A teacher other than the export (or none)
        // would not give a loss far below the cross entropy.
        let export = export();
        let settings = AwareTraining {
            epochs: 1,
            lr: 1e-6,
            momentum: 0.9,
            weight_decay: 0.0,
            distill: 1.0,
            distill_temperature: 2.0,
        };
        let (_, records) = train(&export, &settings);
        let first = &records[0];
        assert!(first.cross_entropy > 0.3, "{first:?}");
        assert!(first.loss < 0.02 * first.cross_entropy, "{first:?}");
        // Without the teacher the loss is the cross entropy.
        let plain = AwareTraining {
            distill: 0.0,
            ..settings
        };
        let (_, records) = train(&export, &plain);
        assert_eq!(records[0].loss, records[0].cross_entropy);
    }
}
