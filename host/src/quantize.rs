//! `dnal quantize`: post-training int8 quantisation of an export, calibrated on the training
//! images of its dataset, and the int8 network's accuracy as the board computes it.
//!
//! Calibration runs the f32 export through burn ([`ExportNet::forward_values`]) and keeps each
//! value's range; `dnal_export::int8::quantize` turns the ranges and the f32 weights into an
//! int8 export. Its accuracy is measured with dnal-kernels' portable int8 kernels, which are
//! bit-exact with the integer reference (`dnal_export::int8::reference_forward`) and so with
//! what every int8 firmware computes.

use std::path::{Path, PathBuf};

use dnal_datasets::{Batcher, ImageSet};
use dnal_export::int8::{ValueRanges, quantize};
use dnal_export::{ARCH_FILE, Export, Precision};
use serde::Serialize;

use crate::backend::Backend;
use crate::data::ExportTestSet;
use crate::error::SearchError;
use crate::eval::{evaluate_export, evaluate_int8};
use crate::export::ExportNet;
use crate::report::NetReport;
use crate::train::{Accuracy, EVAL_BATCH};

/// Training images calibration observes unless told otherwise: enough for stable ranges of a
/// small network, a few seconds of forward passes.
pub const DEFAULT_CALIBRATION_IMAGES: usize = 1000;

/// What `dnal quantize` does.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// The f32 export.
    pub export_dir: PathBuf,
    /// Where the int8 export goes.
    pub out_dir: PathBuf,
    /// Training images to calibrate on (the first ones of the training set).
    pub calibration_images: usize,
    /// Folder holding the dataset (default: the one the search used).
    pub data_dir: Option<PathBuf>,
    /// Test images to evaluate both networks on (default: as many as the search evaluated).
    pub test_limit: Option<usize>,
    /// Where the f32 network runs (calibration and its evaluation).
    pub backend: Backend,
}

/// The phases [`quantize_export`] reports progress in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantizePhase {
    /// Forward passes over the calibration images.
    Calibrate,
    /// The int8 network over the test images.
    EvaluateInt8,
}

/// What `dnal quantize` did, also written to the int8 export's `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
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
    progress: &mut dyn FnMut(QuantizePhase, usize, usize),
) -> Result<QuantizeReport, SearchError> {
    if options.calibration_images == 0 {
        return Err(SearchError::InvalidOption {
            option: "--calibration-images",
            value: "0".into(),
            reason: "int8 scales come from the values seen on calibration images: use at \
                     least 1 (the default is 1000)"
                .into(),
        });
    }
    check_out_dir(&options.export_dir, &options.out_dir)?;
    let export = Export::load(&options.export_dir)?;
    let (set, train) = ExportTestSet::load_with_train(
        export.arch(),
        &options.export_dir,
        options.data_dir.as_deref(),
        options.test_limit,
        options.calibration_images,
    )?;
    let device = options.backend.device()?;
    let net = ExportNet::new(&export, &device);
    let ranges = calibrate(&export, &net, train, &set, &device, progress);
    let calibration = serde_json::json!({
        "method": "min-max",
        "images": ranges.images(),
        "dataset": set.dataset,
        // Absolute, so that `dnal deploy` finds the f32 source from anywhere.
        "from": options.export_dir.canonicalize().unwrap_or_else(|_| options.export_dir.clone()),
    });
    let int8 = quantize(&export, &ranges, calibration).map_err(|e| SearchError::Quantize {
        export: options.export_dir.clone(),
        reason: e.to_string(),
    })?;

    let f32_eval = evaluate_export(
        &options.export_dir,
        options.data_dir.as_deref(),
        options.test_limit,
        options.backend,
    )?;
    let int8_accuracy = evaluate_int8(&int8, &set, &mut |done, total| {
        progress(QuantizePhase::EvaluateInt8, done, total)
    });
    let report = QuantizeReport {
        dataset: set.dataset.clone(),
        calibration_images: ranges.images(),
        top1_change_pp: 100.0 * (int8_accuracy.top1 - f32_eval.accuracy.top1),
        f32: f32_eval.accuracy,
        int8: int8_accuracy,
        f32_weight_bytes: 4 * export.arch().params,
        int8_weight_bytes: int8.weight_bytes(),
        flops: export.arch().flops,
        params: export.arch().params,
    };
    int8.write(&options.out_dir)?;
    write_report(&options.out_dir, &report)?;
    Ok(report)
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

/// Every value's range over the first calibration images, from batched f32 forward passes.
fn calibrate(
    export: &Export,
    net: &ExportNet,
    train: ImageSet,
    set: &ExportTestSet,
    device: &burn::tensor::Device,
    progress: &mut dyn FnMut(QuantizePhase, usize, usize),
) -> ValueRanges {
    let batcher = Batcher::new(train, set.normalization.clone(), EVAL_BATCH);
    let total = batcher.set().len();
    let mut ranges = ValueRanges::new(export.arch().layers.len() + 1);
    let mut done = 0;
    progress(QuantizePhase::Calibrate, 0, total);
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
        progress(QuantizePhase::Calibrate, done, total);
    }
    ranges
}

/// `report.json` of the int8 export: its accuracy as `pruned` (what `dnal eval` reproduces),
/// the f32 source's beside it, and how it was quantised.
fn write_report(out: &Path, report: &QuantizeReport) -> Result<(), SearchError> {
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
