//! `dnal deploy`: the export onto a board, with the export's own test images and burn's logits
//! for them, so the board's answers are checked against the network the search measured.

use std::path::PathBuf;

use dnal_export::int8::Int8Export;
use dnal_export::{AnyExport, Arch, Export};
use dnal_firmware::codegen::Network;
use dnal_firmware::deploy::Top1Agreement;
use dnal_firmware::latency::{LatencyTable, PredictionCheck};
use dnal_firmware::{DeployReport, DeployRequest};

use crate::data::ExportTestSet;
use crate::error::SearchError;
use crate::export::reference_logits;
use crate::latency::{check_table_precision, check_table_winograd};
use crate::lock::OutputLock;

/// What `dnal deploy` is asked to do.
#[derive(Clone, Debug)]
pub struct DeployOptions {
    /// The export folder.
    pub export_dir: PathBuf,
    /// The board's name.
    pub board: String,
    /// The firmware folder to write.
    pub out_dir: PathBuf,
    /// Build only, or also run and measure.
    pub run: bool,
    /// Test images to embed and compare on.
    pub images: usize,
    /// Runs of the firmware (2 or more also checks that the cost repeats exactly).
    pub runs: usize,
    /// The dataset's folder, if not where the search found it.
    pub data_dir: Option<PathBuf>,
    /// A latency table of the board for the export's model: the measured cost is checked
    /// against its prediction and kept beside it (needs `run`).
    pub latency_table: Option<PathBuf>,
    /// int8 on a board with the DSP extension: 3x3 convolutions by Winograd's F(2x2, 3x3).
    pub winograd: bool,
}

/// Generates, builds and (with `run`) runs the firmware; writes `OUT/deploy.json`.
pub fn deploy_export(options: &DeployOptions) -> Result<DeployReport, SearchError> {
    // A misspelt board is refused before the export, the dataset and burn are touched.
    dnal_firmware::deploy_board(&options.board)?;
    let table = options
        .latency_table
        .as_ref()
        .map(|path| {
            let table = table_for_board(path, &options.board)?;
            check_table_winograd(&table, path, "--latency-table", options.winograd)?;
            Ok::<_, SearchError>(table)
        })
        .transpose()?;
    // One deploy per firmware folder at a time; held until deploy.json is written.
    let lock = OutputLock::acquire(&options.out_dir)?;
    lock.remove_stale_temporaries(&options.out_dir);
    let export = AnyExport::load(&options.export_dir)?;
    let network = Network::from(&export);
    // Before anything is built: the table must be of this export's precision and cover its
    // layers.
    let predicted = match (&table, &options.latency_table) {
        (Some(table), Some(path)) => {
            check_table_precision(table, path, "--latency-table", network.precision())?;
            Some((table, table.predict(network.arch())?))
        }
        _ => None,
    };
    let mut report = match &export {
        AnyExport::F32(export) => deploy_f32(options, export)?,
        AnyExport::Int8(export) => deploy_int8(options, export)?,
    };
    if let (Some((table, prediction)), Some(cost)) = (&predicted, &report.cost) {
        let what = format!("dnal deploy of {}", options.export_dir.display());
        let check = table.check_and_learn(prediction, cost.per_inference, &what)?;
        report.prediction = Some(check.with_layers(prediction, &cost.per_layer));
    }
    report.write(&report.firmware_dir.clone())?;
    Ok(report)
}

/// `dnal deploy` of an f32 export: the firmware's logits are compared with burn's.
fn deploy_f32(options: &DeployOptions, export: &Export) -> Result<DeployReport, SearchError> {
    let mut request = request_with_images(options, export.arch())?;
    if !request.images.is_empty() {
        request.reference_logits = Some(reference_logits(export, &request.images)?);
        request.reference_name = "burn".into();
    }
    Ok(dnal_firmware::deploy_loaded(export, &request)?)
}

/// `dnal deploy` of an int8 export: the firmware's codes must equal the integer reference's
/// bit for bit (the firmware crate checks that); with test images, its top-1 is also compared
/// with the f32 export it was quantised from, when that folder is still there.
fn deploy_int8(options: &DeployOptions, export: &Int8Export) -> Result<DeployReport, SearchError> {
    let request = request_with_images(options, export.arch())?;
    let mut source = None;
    if !request.images.is_empty() {
        // The f32 export `dnal quantize` recorded, if it still loads.
        source = export
            .arch()
            .quantization
            .as_ref()
            .and_then(|q| q.calibration["from"].as_str().map(PathBuf::from))
            .and_then(|dir| Export::load(&dir).ok().map(|e| (dir, e)))
            .map(|(dir, f32_export)| {
                reference_logits(&f32_export, &request.images).map(|logits| (dir, logits))
            })
            .transpose()?;
    }
    let mut report = dnal_firmware::deploy_loaded(export, &request)?;
    if let Some((dir, logits)) = source
        && !report.logits.is_empty()
    {
        report.f32_agreement = Some(Top1Agreement::of(dir, &report.logits, &logits));
    }
    Ok(report)
}

/// The request `options` make, with the export's first `options.images` test images,
/// normalised as its network was trained, when images are asked for.
fn request_with_images(options: &DeployOptions, arch: &Arch) -> Result<DeployRequest, SearchError> {
    let mut request = DeployRequest::new(&options.export_dir, &options.board, &options.out_dir);
    request.run = options.run;
    request.runs = options.runs.max(1);
    request.winograd = options.winograd;
    if options.images > 0 {
        request.images = ExportTestSet::load(
            arch,
            &options.export_dir,
            options.data_dir.as_deref(),
            Some(options.images),
        )?
        .normalised_images(options.images);
    }
    Ok(request)
}

/// The latency table in `path`, which must have been measured on `board`.
fn table_for_board(path: &std::path::Path, board: &str) -> Result<LatencyTable, SearchError> {
    let table = LatencyTable::load(path)?;
    if table.board != board {
        return Err(SearchError::InvalidOption {
            option: "--latency-table",
            value: path.display().to_string(),
            reason: format!(
                "was measured on {}, not on --board {board}; give that board's table (`dnal profile --board {board}`)",
                table.board
            ),
        });
    }
    Ok(table)
}

/// One line on a measured cost against a table's prediction.
pub fn describe_prediction(check: &PredictionCheck) -> String {
    let corrected = match (check.corrected_ms, check.corrected_error_pct) {
        (Some(ms), Some(pct)) => format!(", corrected {ms:.3} ms ({pct:+.2}%)"),
        _ => String::new(),
    };
    let errors = check
        .errors
        .map(|e| format!("; {}", e.describe()))
        .unwrap_or_default();
    // Where the table is furthest off, in its unit: what to look at when it is.
    let layers: Vec<String> = check
        .most_off(3)
        .iter()
        .map(|l| {
            format!(
                "{} {:+.0} ({:+.1}%)",
                l.name,
                l.predicted - l.measured,
                l.error_pct()
            )
        })
        .collect();
    let layers = if layers.is_empty() {
        String::new()
    } else {
        format!(
            "; layers most off, in {}: {}",
            check.unit,
            layers.join(", ")
        )
    };
    format!(
        "measured {:.3} ms, table {:.3} ms ({:+.2}%){corrected}{errors}{layers}",
        check.measured_ms, check.predicted_ms, check.error_pct
    )
}
