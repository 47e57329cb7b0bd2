//! `dnal eval`: an export's accuracy on its dataset's test set, computed as the search
//! computed it, so the reported top-1 is reproduced exactly.

use std::path::Path;

use dnal_datasets::Batcher;
use dnal_export::Export;

use crate::backend::Backend;
use crate::checkpoint::read_regular_file;
use crate::data::ExportTestSet;
use crate::error::SearchError;
use crate::export::ExportNet;
use crate::train::{Accuracy, EVAL_BATCH, evaluate};

/// What `dnal eval` found.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    /// The dataset evaluated on.
    pub dataset: String,
    /// Test accuracy.
    pub accuracy: Accuracy,
    /// MACs of the exported network.
    pub flops: u64,
    /// Its parameters.
    pub params: u64,
    /// The top-1 that `report.json` beside the export states, if there is one.
    pub reported_top1: Option<f64>,
}

/// Evaluates the export in `dir`. The dataset, its folder and the test limit default to what
/// the search recorded in `arch.json`.
pub fn evaluate_export(
    dir: &Path,
    data_dir: Option<&Path>,
    test_limit: Option<usize>,
    backend: Backend,
) -> Result<EvalResult, SearchError> {
    if test_limit == Some(0) {
        return Err(SearchError::InvalidOption {
            option: "--test-limit",
            value: "0".into(),
            reason: "a top-1 over no image means nothing; use at least 1, or leave it out".into(),
        });
    }
    let export = Export::load(dir)?;
    let arch = export.arch();
    let set = ExportTestSet::load(&export, dir, data_dir, test_limit)?;
    let test = Batcher::new(set.test, set.normalization, EVAL_BATCH);
    let device = backend.device()?;
    let net = ExportNet::new(&export, &device);
    let accuracy = evaluate(&test, arch.num_classes, &device, |x| net.forward(x)).map_err(|bad| {
        SearchError::NonFiniteOutput {
            what: format!("the network of {}", dir.display()),
            image: bad.image,
            value: bad.value,
            fix: "its weights overflow f32 arithmetic, so it cannot be evaluated or deployed; export it again from a healthy search".into(),
        }
    })?;
    // report.json is informational: one that is not a small regular file is ignored.
    let reported_top1 = read_regular_file(&dir.join("report.json"), 64 << 20, "")
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|report| report["pruned"]["top1"].as_f64());
    Ok(EvalResult {
        dataset: set.dataset,
        accuracy,
        flops: arch.flops,
        params: arch.params,
        reported_top1,
    })
}
