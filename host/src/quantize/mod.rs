//! `dnal quantize`: post-training int8 quantisation of an export, calibrated on the training
//! images of its dataset, and the int8 network's accuracy as the board computes it.
//!
//! Calibration runs the f32 export through burn ([`ExportNet::forward_values`]) and keeps each
//! value's range; `dnal_export::int8::quantize` turns the ranges and the f32 weights into an
//! int8 export. With quantisation-aware training ([`aware`]) the export is then trained on
//! the grids calibration chose, and its trained weights are quantised on the same grids. Its accuracy is measured with dnal-kernels' portable int8 kernels, which are
//! bit-exact with the integer reference (`dnal_export::int8::reference_forward`) and so with
//! what every int8 firmware computes.

pub mod agreement;
pub mod aware;
pub mod fake;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use dnal_datasets::{Batcher, ImageSet, Normalization};
use dnal_export::int8::{Int8Export, ValueRanges, quantize};
use dnal_export::{ARCH_FILE, Export, Precision};
use serde::{Deserialize, Serialize};

use self::agreement::Agreement;
use self::aware::{AwareProgress, AwareTraining, Training, train_quantization_aware};

use crate::backend::Backend;
use crate::config::check_distillation;
use crate::data::ExportTestSet;
use crate::error::SearchError;
use crate::eval::{check_test_limit, evaluate_f32, evaluate_int8};
use crate::export::ExportNet;
use crate::report::{EpochRecord, NetReport};
use crate::train::{Accuracy, EVAL_BATCH, EpochStats, Predictions};

/// Training images calibration observes unless told otherwise: enough for stable ranges of a
/// small network, a few seconds of forward passes.
pub const DEFAULT_CALIBRATION_IMAGES: usize = 1000;

/// Training images calibration observes for an int8 network built only to measure its
/// latency: its cost does not depend on the ranges, so a few batches' worth suffice.
pub const BOARD_CALIBRATION_IMAGES: usize = 64;

/// What `dnal quantize` does.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// The f32 export.
    pub export_dir: PathBuf,
    /// Where the int8 export goes.
    pub out_dir: PathBuf,
    /// Training images to calibrate on (the first ones of the training set).
    pub calibration_images: usize,
    /// Quantisation-aware training after calibration (`None`: post-training quantisation
    /// alone).
    pub training: Option<AwareTraining>,
    /// Folder holding the dataset (default: the one the search used).
    pub data_dir: Option<PathBuf>,
    /// Test images to evaluate both networks on (default: as many as the search evaluated).
    pub test_limit: Option<usize>,
    /// Where the f32 network runs (calibration, training and its evaluation).
    pub backend: Backend,
}

/// The phases quantisation reports progress in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantizePhase {
    /// Forward passes over the calibration images (images).
    Calibrate,
    /// Quantisation-aware training, this 1-based epoch (steps).
    Train {
        /// The epoch.
        epoch: usize,
    },
    /// The post-training-quantised network over the test images, before training (images).
    EvaluatePtq,
    /// The int8 network over the test images (images).
    EvaluateInt8,
}

/// What quantisation reports as it goes.
pub trait QuantizeProgress {
    /// `done` of `total` units (images or steps) of `phase` are done.
    fn progress(&mut self, phase: QuantizePhase, done: usize, total: usize);
    /// Step `step` of `steps` of quantisation-aware epoch `epoch` (1-based) is done.
    fn step(&mut self, epoch: usize, step: usize, steps: usize, _stats: &EpochStats) {
        self.progress(QuantizePhase::Train { epoch }, step, steps);
    }
    /// A quantisation-aware epoch ended (its test top-1 is the fake-quantised network's).
    fn epoch(&mut self, _record: &EpochRecord) {}
}

impl<F: FnMut(QuantizePhase, usize, usize)> QuantizeProgress for F {
    fn progress(&mut self, phase: QuantizePhase, done: usize, total: usize) {
        self(phase, done, total)
    }
}

/// What `dnal quantize` (and `dnal search --precision int8`) did, also written to the int8
/// export's `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizeReport {
    /// The dataset evaluated on.
    pub dataset: String,
    /// Training images the ranges were taken from.
    pub calibration_images: usize,
    /// The f32 export's accuracy on the test images.
    pub f32: Accuracy,
    /// The int8 export's, computed as the board computes it.
    pub int8: Accuracy,
    /// `int8.top1 - f32.top1`, in percentage points.
    pub top1_change_pp: f64,
    /// The int8 network's answers against the f32 network's, image by image (absent from the
    /// reports of an older dnal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f32_agreement: Option<Agreement>,
    /// With quantisation-aware training: the int8 accuracy of post-training quantisation
    /// alone (the same calibration, the weights before training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_training: Option<Accuracy>,
    /// How quantisation-aware training ran, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<AwareTraining>,
    /// Its epochs (test top-1 of the fake-quantised network).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<EpochRecord>,
    /// Bytes of f32 weights and biases.
    pub f32_weight_bytes: u64,
    /// Bytes of int8 weights, int32 biases and per-channel requantisation.
    pub int8_weight_bytes: u64,
    /// MACs of one forward pass.
    pub flops: u64,
    /// Weights and biases.
    pub params: u64,
}

/// Quantises the export in `options.export_dir` into `options.out_dir` and measures both.
pub fn quantize_export(
    options: &QuantizeOptions,
    progress: &mut dyn QuantizeProgress,
) -> Result<QuantizeReport, SearchError> {
    check_calibration_images(options.calibration_images)?;
    check_test_limit(options.test_limit)?;
    if let Some(training) = &options.training {
        check_training(training)?;
    }
    check_out_dir(&options.export_dir, &options.out_dir)?;
    let export = Export::load(&options.export_dir)?;
    // Training reads the whole training half; calibration alone only its first images.
    let train_images = match options.training {
        Some(_) => None,
        None => Some(options.calibration_images),
    };
    let (set, train) = ExportTestSet::load_with_train(
        export.arch(),
        &options.export_dir,
        options.data_dir.as_deref(),
        options.test_limit,
        train_images,
    )?;
    let device = options.backend.device()?;
    let f32 = evaluate_f32(&export, &set, &device, &options.export_dir)?;
    let batcher = train.batcher(&set.normalization);
    let data = QuantizeData {
        test: &set,
        calibration: train.images.truncate(options.calibration_images),
        training: options.training.as_ref().map(|settings| Training {
            settings,
            batches: &batcher,
            first_data_epoch: train.epochs_trained,
        }),
    };
    let (int8, report) =
        quantize_network(&export, &options.export_dir, &f32, data, &device, progress)?;
    int8.write(&options.out_dir)?;
    write_report(&options.out_dir, &report)?;
    Ok(report)
}

/// What [`quantize_network`] calibrates, trains and measures on.
pub struct QuantizeData<'a> {
    /// The test images both networks are measured on, normalised as the network was trained.
    pub test: &'a ExportTestSet,
    /// The training images calibration observes.
    pub calibration: ImageSet,
    /// Quantisation-aware training, if any.
    pub training: Option<Training<'a>>,
}

/// Quantises `export` (read from `source`, whose `f32` predictions on `data.test` are
/// known): calibrates the value ranges, quantises, and, with training, trains the
/// fake-quantised network and quantises the result on the same grids. Returns the int8
/// export and the report.
pub fn quantize_network(
    export: &Export,
    source: &Path,
    f32: &Predictions,
    data: QuantizeData<'_>,
    device: &Device,
    progress: &mut dyn QuantizeProgress,
) -> Result<(Int8Export, QuantizeReport), SearchError> {
    let failed = |reason: String| SearchError::Quantize {
        export: source.to_path_buf(),
        reason,
    };
    check_calibration_images(data.calibration.len())?;
    let device = device.clone().without_autodiff();
    let ranges = calibrate(
        export,
        data.calibration,
        &data.test.normalization,
        &device,
        progress,
    );
    let mut calibration = serde_json::json!({
        "method": "min-max",
        "images": ranges.images(),
        "dataset": data.test.dataset,
        // Absolute, so that `dnal deploy` finds the f32 source from anywhere.
        "from": source.canonicalize().unwrap_or_else(|_| source.to_path_buf()),
    });
    let post_training =
        quantize(export, &ranges, calibration.clone()).map_err(|e| failed(e.to_string()))?;
    let (int8, post_training, history) = match &data.training {
        None => (post_training, None, Vec::new()),
        Some(training) => {
            let ptq = evaluate_int8(&post_training, data.test, &mut |done, total| {
                progress.progress(QuantizePhase::EvaluatePtq, done, total)
            })
            .accuracy;
            let values = post_training
                .arch()
                .quantization
                .as_ref()
                .expect("an int8 export has its quantisation")
                .values
                .clone();
            let test = Batcher::new(
                data.test.test.clone(),
                data.test.normalization.clone(),
                EVAL_BATCH,
            );
            let mut observer = TrainingProgress(progress);
            let (trained, history) =
                train_quantization_aware(export, values, *training, &test, &device, &mut observer)
                    .map_err(|e| {
                        failed(format!(
                            "{e}; lower the quantisation-aware learning rate (--lr-qat, now {})",
                            training.settings.lr
                        ))
                    })?;
            calibration["training"] =
                serde_json::to_value(training.settings).expect("settings serialise");
            // The same ranges: the grids are those the training saw.
            let int8 =
                quantize(&trained, &ranges, calibration).map_err(|e| failed(e.to_string()))?;
            (int8, Some(ptq), history)
        }
    };
    let int8_predictions = evaluate_int8(&int8, data.test, &mut |done, total| {
        progress.progress(QuantizePhase::EvaluateInt8, done, total)
    });
    let agreement = Agreement::of(
        &f32.classes,
        &int8_predictions.classes,
        data.test.test.labels(),
    );
    let int8_accuracy = int8_predictions.accuracy;
    let report = QuantizeReport {
        dataset: data.test.dataset.clone(),
        calibration_images: ranges.images(),
        top1_change_pp: 100.0 * (int8_accuracy.top1 - f32.accuracy.top1),
        f32_agreement: Some(agreement),
        f32: f32.accuracy,
        int8: int8_accuracy,
        post_training,
        training: data.training.map(|t| t.settings.clone()),
        history,
        f32_weight_bytes: 4 * export.arch().params,
        int8_weight_bytes: int8.weight_bytes(),
        flops: export.arch().flops,
        params: export.arch().params,
    };
    Ok((int8, report))
}

/// `export` quantised after calibrating on `calibration` (normalised by `normalization`),
/// without evaluating it: what a latency measurement of an int8 network needs (its cost does
/// not depend on the ranges).
pub fn quantize_for_board(
    export: &Export,
    calibration: ImageSet,
    normalization: &Normalization,
    device: &Device,
) -> Result<Int8Export, SearchError> {
    check_calibration_images(calibration.len())?;
    let device = device.clone().without_autodiff();
    let mut quiet = |_: QuantizePhase, _: usize, _: usize| {};
    let ranges = calibrate(export, calibration, normalization, &device, &mut quiet);
    let calibration = serde_json::json!({ "method": "min-max", "images": ranges.images() });
    quantize(export, &ranges, calibration).map_err(|e| SearchError::Quantize {
        export: PathBuf::from(&export.arch().name),
        reason: e.to_string(),
    })
}

/// Quantisation-aware training's progress as quantisation's.
struct TrainingProgress<'a>(&'a mut dyn QuantizeProgress);

impl AwareProgress for TrainingProgress<'_> {
    fn step(&mut self, epoch: usize, step: usize, steps: usize, stats: &EpochStats) {
        self.0.step(epoch, step, steps, stats);
    }

    fn epoch(&mut self, record: &EpochRecord) {
        self.0.epoch(record);
    }
}

/// Refuses to calibrate on no image.
pub fn check_calibration_images(images: usize) -> Result<(), SearchError> {
    if images == 0 {
        return Err(SearchError::InvalidOption {
            option: "--calibration-images",
            value: "0".into(),
            reason: format!(
                "int8 scales come from the values seen on calibration images: use at least 1 \
                 (the default is {DEFAULT_CALIBRATION_IMAGES})"
            ),
        });
    }
    Ok(())
}

/// Refuses quantisation-aware settings that cannot train, naming `dnal quantize`'s option.
fn check_training(training: &AwareTraining) -> Result<(), SearchError> {
    if !(training.lr.is_finite() && training.lr > 0.0) {
        return Err(SearchError::InvalidOption {
            option: "--lr",
            value: training.lr.to_string(),
            reason: "must be a positive number".into(),
        });
    }
    check_distillation(
        ("--distill", training.distill),
        ("--distill-temperature", training.distill_temperature),
    )
}

/// Refuses to write the int8 export over its source or over an f32 export; an earlier int8
/// export in `out` is replaced.
fn check_out_dir(export_dir: &Path, out: &Path) -> Result<(), SearchError> {
    let same = match (export_dir.canonicalize(), out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let f32_there = std::fs::read(out.join(ARCH_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["precision"] != Precision::Int8.name());
    if same || f32_there {
        return Err(SearchError::InvalidOption {
            option: "--out",
            value: out.display().to_string(),
            reason: "holds an f32 export, which quantising would overwrite; give the int8 \
                     export a folder of its own (e.g. DIR-int8)"
                .into(),
        });
    }
    Ok(())
}

/// Every value's range over the calibration images, from batched f32 forward passes of
/// `export` on `device` (without autodiff).
fn calibrate(
    export: &Export,
    train: ImageSet,
    normalization: &Normalization,
    device: &Device,
    progress: &mut dyn QuantizeProgress,
) -> ValueRanges {
    let net = ExportNet::new(export, device);
    let batcher = Batcher::new(train, normalization.clone(), EVAL_BATCH);
    let total = batcher.set().len();
    let mut ranges = ValueRanges::new(export.arch().layers.len() + 1);
    let mut done = 0;
    progress.progress(QuantizePhase::Calibrate, 0, total);
    for data in batcher.epoch(0) {
        let values = net.forward_values(data.images_tensor(device));
        let extremes: Vec<(f32, f32)> = values
            .into_iter()
            .map(|v| {
                let lo = v.clone().min().into_scalar();
                let hi = v.max().into_scalar();
                (lo, hi)
            })
            .collect();
        ranges.observe_extremes(&extremes, data.len());
        done += data.len();
        progress.progress(QuantizePhase::Calibrate, done, total);
    }
    ranges
}

/// `report.json` of the int8 export: its accuracy as `pruned` (what `dnal eval` reproduces),
/// the f32 source's beside it, and how it was quantised.
pub fn write_report(out: &Path, report: &QuantizeReport) -> Result<(), SearchError> {
    let net = |a: &Accuracy| NetReport {
        top1: a.top1,
        top5: a.top5,
        flops: report.flops,
        params: report.params,
        images: a.images,
        top1_hits: Some(a.top1_hits),
    };
    let json = serde_json::json!({
        "precision": "int8",
        "pruned": net(&report.int8),
        "f32": net(&report.f32),
        "quantization": report,
    });
    let mut bytes = serde_json::to_vec_pretty(&json).expect("a report serialises");
    bytes.push(b'\n');
    dnal_export::write_atomically(&out.join("report.json"), &bytes)?;
    Ok(())
}
