//! `dnal deploy`: the export onto a board, with the export's own test images and burn's logits
//! for them, so the board's answers are checked against the network the search measured.

use std::path::PathBuf;

use dnal_export::Export;
use dnal_firmware::{DeployReport, DeployRequest};

use crate::data::ExportTestSet;
use crate::error::SearchError;
use crate::export::reference_logits;
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
}

/// Generates, builds and (with `run`) runs the firmware; writes `OUT/deploy.json`.
pub fn deploy_export(options: &DeployOptions) -> Result<DeployReport, SearchError> {
    // A misspelt board is refused before the export, the dataset and burn are touched.
    dnal_firmware::deploy_board(&options.board)?;
    // One deploy per firmware folder at a time; held until deploy.json is written.
    let lock = OutputLock::acquire(&options.out_dir)?;
    lock.remove_stale_temporaries(&options.out_dir);
    let export = Export::load(&options.export_dir)?;
    let mut request = DeployRequest::new(&options.export_dir, &options.board, &options.out_dir);
    request.run = options.run;
    request.runs = options.runs.max(1);
    if options.images > 0 {
        let images = ExportTestSet::load(
            &export,
            &options.export_dir,
            options.data_dir.as_deref(),
            Some(options.images),
        )?
        .normalised_images(options.images);
        request.reference_logits = Some(reference_logits(&export, &images)?);
        request.reference_name = "burn".into();
        request.images = images;
    }
    Ok(dnal_firmware::deploy_loaded(&export, &request)?)
}
