//! `dnal eval`: an export's accuracy on its dataset's test set, computed as the search
//! computed it, so the reported top-1 is reproduced exactly.

use std::path::Path;

use dnal_datasets::{Batcher, Normalization};
use dnal_export::Export;

use crate::backend::Backend;
use crate::checkpoint::read_regular_file;
use crate::error::SearchError;
use crate::export::{ExportNet, SearchInfo};
use crate::search::{EVAL_BATCH, load_dataset};
use crate::train::{Accuracy, evaluate};

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
    let info: Option<SearchInfo> = serde_json::from_value(arch.search.clone()).ok();
    let mut config = match &info {
        Some(info) => info.config.clone(),
        None => crate::config::SearchConfig {
            dataset: arch.dataset.clone(),
            ..Default::default()
        },
    };
    if data_dir.is_some() {
        config.data_dir = data_dir.map(Path::to_path_buf);
    }
    if test_limit.is_some() {
        config.test_limit = test_limit;
    }
    let dataset = load_dataset(&config)?;
    let shape = dataset.test.shape();
    let input = arch.input;
    if (shape.channels, shape.height, shape.width) != (input.channels, input.height, input.width)
        || dataset.test.num_classes() != arch.num_classes
    {
        return Err(SearchError::InvalidOption {
            option: "--export",
            value: dir.display().to_string(),
            reason: format!(
                "the network takes {}x{}x{} images and gives {} classes, but {} has {}x{}x{} images of {} classes",
                input.channels,
                input.height,
                input.width,
                arch.num_classes,
                config.dataset,
                shape.channels,
                shape.height,
                shape.width,
                dataset.test.num_classes()
            ),
        });
    }
    // The normalisation the network was trained with, as recorded in the export.
    let normalization = match &arch.normalization {
        Some(n) => Normalization {
            mean: n.mean.clone(),
            std: n.std.clone(),
        },
        None => dataset.normalization.clone(),
    };
    let test = Batcher::new(dataset.test.clone(), normalization, EVAL_BATCH);
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
        dataset: config.dataset,
        accuracy,
        flops: arch.flops,
        params: arch.params,
        reported_top1,
    })
}
