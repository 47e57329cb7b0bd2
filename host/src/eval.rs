//! `dnal eval`: an export's accuracy on its dataset's test set, computed as the search
//! computed it, so the reported top-1 is reproduced exactly.

use std::path::Path;

use burn::tensor::Device;
use dnal_datasets::Batcher;
use dnal_export::int8::{Int8Export, forward_with_kernels};
use dnal_export::{AnyExport, Export, Precision};
use rayon::prelude::*;
use serde::Serialize;

use crate::backend::Backend;
use crate::checkpoint::read_regular_file;
use crate::data::ExportTestSet;
use crate::error::SearchError;
use crate::export::ExportNet;
use crate::report::NetReport;
use crate::train::{Accuracy, EVAL_BATCH, PredictionTally, Predictions, predict};

/// What `dnal eval` found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalResult {
    /// The dataset evaluated on.
    pub dataset: String,
    /// The export's number format.
    pub precision: Precision,
    /// Test accuracy.
    pub accuracy: Accuracy,
    /// MACs of the exported network.
    pub flops: u64,
    /// Its parameters.
    pub params: u64,
    /// How the evaluation compares with `report.json` beside the export, if there is one.
    pub reproduction: Option<Reproduction>,
}

/// The evaluation against the pruned network's accuracy in `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Reproduction {
    /// The same images, the same hits.
    Exact { hits: usize, images: usize },
    /// The same images, other hits: the export or the data is not what the search had.
    Different {
        reported_hits: usize,
        hits: usize,
        images: usize,
    },
    /// The report counted another test set (another `--test-limit`): not comparable.
    OtherImages {
        reported_images: usize,
        images: usize,
    },
    /// A report without hit counts (an older dnal): its top-1 fraction, compared to within
    /// float rounding.
    Fraction { reported_top1: f64, same: bool },
}

impl Reproduction {
    /// Compares an evaluation with the report's figures for the pruned network.
    pub fn of(reported: &NetReport, accuracy: &Accuracy) -> Self {
        if reported.images != accuracy.images {
            return Reproduction::OtherImages {
                reported_images: reported.images,
                images: accuracy.images,
            };
        }
        match reported.top1_hits {
            Some(reported_hits) if reported_hits == accuracy.top1_hits => Reproduction::Exact {
                hits: reported_hits,
                images: accuracy.images,
            },
            Some(reported_hits) => Reproduction::Different {
                reported_hits,
                hits: accuracy.top1_hits,
                images: accuracy.images,
            },
            // A fraction written as JSON and read back may differ in its last bit.
            None => Reproduction::Fraction {
                reported_top1: reported.top1,
                same: (reported.top1 - accuracy.top1).abs() <= 1e-12,
            },
        }
    }
}

/// Evaluates the export in `dir`. The dataset, its folder and the test limit default to what
/// the search recorded in `arch.json`.
pub fn evaluate_export(
    dir: &Path,
    data_dir: Option<&Path>,
    test_limit: Option<usize>,
    backend: Backend,
) -> Result<EvalResult, SearchError> {
    check_test_limit(test_limit)?;
    let export = match AnyExport::load(dir)? {
        AnyExport::F32(export) => export,
        AnyExport::Int8(export) => return evaluate_int8_export(&export, dir, data_dir, test_limit),
    };
    let arch = export.arch();
    let set = ExportTestSet::load(export.arch(), dir, data_dir, test_limit)?;
    let accuracy = evaluate_f32(&export, &set, &backend.device()?, dir)?.accuracy;
    Ok(EvalResult {
        dataset: set.dataset,
        precision: Precision::F32,
        reproduction: reproduction(dir, &accuracy),
        accuracy,
        flops: arch.flops,
        params: arch.params,
    })
}

/// Refuses a test limit of 0.
pub fn check_test_limit(test_limit: Option<usize>) -> Result<(), SearchError> {
    if test_limit == Some(0) {
        return Err(SearchError::InvalidOption {
            option: "--test-limit",
            value: "0".into(),
            reason: "a top-1 over no image means nothing; use at least 1, or leave it out".into(),
        });
    }
    Ok(())
}

/// The f32 export's (read from `dir`) accuracy and predictions on `set`, with burn on
/// `device`.
pub fn evaluate_f32(
    export: &Export,
    set: &ExportTestSet,
    device: &Device,
    dir: &Path,
) -> Result<Predictions, SearchError> {
    let test = Batcher::new(set.test.clone(), set.normalization.clone(), EVAL_BATCH);
    let net = ExportNet::new(export, device);
    predict(&test, export.arch().num_classes, device, |x| net.forward(x)).map_err(|bad| {
        SearchError::NonFiniteOutput {
            what: format!("the network of {}", dir.display()),
            image: bad.image,
            value: bad.value,
            fix: "its weights overflow f32 arithmetic, so it cannot be evaluated or deployed; export it again from a healthy search".into(),
        }
    })
}

/// An int8 export's accuracy, computed as the board computes it (dnal-kernels' int8 kernels,
/// bit-exact with the integer reference).
fn evaluate_int8_export(
    export: &Int8Export,
    dir: &Path,
    data_dir: Option<&Path>,
    test_limit: Option<usize>,
) -> Result<EvalResult, SearchError> {
    let arch = export.arch();
    let set = ExportTestSet::load(arch, dir, data_dir, test_limit)?;
    let accuracy = evaluate_int8(export, &set, &mut |_, _| {}).accuracy;
    Ok(EvalResult {
        dataset: set.dataset,
        precision: Precision::Int8,
        reproduction: reproduction(dir, &accuracy),
        accuracy,
        flops: arch.flops,
        params: arch.params,
    })
}

/// Images the int8 evaluation runs between progress reports.
const EVAL_CHUNK: usize = 256;

/// The int8 network's accuracy and predictions on the test images, computed with the portable
/// int8 kernels (bit-exact with the integer reference), images in parallel.
pub fn evaluate_int8(
    export: &Int8Export,
    set: &ExportTestSet,
    progress: &mut dyn FnMut(usize, usize),
) -> Predictions {
    let classes = export.output_len();
    let total = set.test.len();
    let mut tally = PredictionTally::with_capacity(total);
    progress(0, total);
    for start in (0..total).step_by(EVAL_CHUNK) {
        let end = (start + EVAL_CHUNK).min(total);
        let logits: Vec<f32> = (start..end)
            .into_par_iter()
            .flat_map_iter(|i| {
                let mut image = vec![0.0; export.input_len()];
                set.normalization
                    .apply(set.test.shape(), set.test.image(i), &mut image);
                forward_with_kernels(export, &export.quantize_input(&image))
                    .into_iter()
                    .map(|code| code as f32)
            })
            .collect();
        let labels: Vec<i64> = (start..end).map(|i| set.test.label(i) as i64).collect();
        tally.add(&logits, classes, &labels);
        progress(end, total);
    }
    tally.finish()
}

/// How `accuracy` compares with the `pruned` figures of `report.json` in `dir`, if any.
fn reproduction(dir: &Path, accuracy: &Accuracy) -> Option<Reproduction> {
    // report.json is informational: one that is not a small regular file is ignored.
    read_regular_file(&dir.join("report.json"), 64 << 20, "")
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|report| serde_json::from_value::<NetReport>(report["pruned"].clone()).ok())
        .map(|reported| Reproduction::of(&reported, accuracy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accuracy(hits: usize, images: usize) -> Accuracy {
        Accuracy {
            top1: hits as f64 / images as f64,
            top5: 1.0,
            images,
            top1_hits: hits,
        }
    }

    fn reported(hits: Option<usize>, top1: f64, images: usize) -> NetReport {
        NetReport {
            top1,
            images,
            top1_hits: hits,
            ..NetReport::default()
        }
    }

    #[test]
    fn hits_compare_exactly_where_fractions_would_not() {
        // 89/90 read back from JSON without float_roundtrip can come back one ulp low.
        let one_ulp_low = f64::from_bits((89.0f64 / 90.0).to_bits() - 1);
        let got = accuracy(89, 90);
        assert_eq!(
            Reproduction::of(&reported(Some(89), one_ulp_low, 90), &got),
            Reproduction::Exact {
                hits: 89,
                images: 90
            }
        );
        assert_eq!(
            Reproduction::of(&reported(None, one_ulp_low, 90), &got),
            Reproduction::Fraction {
                reported_top1: one_ulp_low,
                same: true
            }
        );
        assert_eq!(
            Reproduction::of(&reported(Some(88), 88.0 / 90.0, 90), &got),
            Reproduction::Different {
                reported_hits: 88,
                hits: 89,
                images: 90
            }
        );
        assert_eq!(
            Reproduction::of(&reported(Some(89), 89.0 / 90.0, 90), &accuracy(40, 45)),
            Reproduction::OtherImages {
                reported_images: 90,
                images: 45
            }
        );
    }
}
