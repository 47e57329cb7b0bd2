//! `dnal deploy`: the export onto a board, with the export's own test images and burn's logits
//! for them, so the board's answers are checked against the network the search measured.

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use dnal_datasets::{ImageSet, Normalization};
use dnal_export::Export;
use dnal_firmware::{DeployReport, DeployRequest};

use crate::backend::Backend;
use crate::error::SearchError;
use crate::export::{ExportNet, SearchInfo};
use crate::lock::OutputLock;
use crate::search::load_dataset;

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

/// The first `count` test images of the export's dataset, normalised as the network expects.
pub fn test_images(
    export: &Export,
    dir: &Path,
    data_dir: Option<&Path>,
    count: usize,
) -> Result<Vec<Vec<f32>>, SearchError> {
    let arch = export.arch();
    let mut config = serde_json::from_value::<SearchInfo>(arch.search.clone())
        .map(|info| info.config)
        .unwrap_or_else(|_| crate::config::SearchConfig {
            dataset: arch.dataset.clone(),
            ..Default::default()
        });
    config.train_limit = Some(1);
    config.test_limit = Some(count.max(1));
    if let Some(d) = data_dir {
        config.data_dir = Some(d.to_path_buf());
    }
    let dataset = load_dataset(&config)?;
    let shape = dataset.test.shape();
    if shape.len() != export.input_len() {
        return Err(SearchError::InvalidOption {
            option: "--export",
            value: dir.display().to_string(),
            reason: format!(
                "the network takes {} values per image but {} images have {}",
                export.input_len(),
                config.dataset,
                shape.len()
            ),
        });
    }
    let normalization = match &arch.normalization {
        Some(n) => Normalization {
            mean: n.mean.clone(),
            std: n.std.clone(),
        },
        None => dataset.normalization.clone(),
    };
    Ok(normalised_images(&dataset.test, &normalization, count))
}

/// The first `count` images of `set`, normalised.
pub fn normalised_images(
    set: &ImageSet,
    normalization: &Normalization,
    count: usize,
) -> Vec<Vec<f32>> {
    let shape = set.shape();
    (0..set.len().min(count))
        .map(|i| {
            let mut image = vec![0.0; shape.len()];
            normalization.apply(shape, set.image(i), &mut image);
            image
        })
        .collect()
}

/// burn's logits (CPU) for each image: the reference the board is held to.
pub fn reference_logits(
    export: &Export,
    images: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>, SearchError> {
    let device = Backend::Cpu.device()?;
    let net = ExportNet::new(export, &device);
    let s = export.arch().input;
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    let x = Tensor::<4>::from_data(
        TensorData::new(flat, [images.len(), s.channels, s.height, s.width]),
        &device,
    );
    let logits = net
        .forward(x)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 logits");
    let classes = export.output_len().max(1);
    if let Some((i, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(SearchError::NonFiniteOutput {
            what: "the export's network (burn's reference forward)".into(),
            image: i / classes,
            value,
            fix: "its weights overflow f32 arithmetic, so no board could agree with it; export it again from a healthy search".into(),
        });
    }
    Ok(logits
        .chunks(export.output_len())
        .map(<[f32]>::to_vec)
        .collect())
}

/// Generates, builds and (with `run`) runs the firmware; writes `OUT/deploy.json`.
pub fn deploy_export(options: &DeployOptions) -> Result<DeployReport, SearchError> {
    // One deploy per firmware folder at a time; held until deploy.json is written.
    let lock = OutputLock::acquire(&options.out_dir)?;
    lock.remove_stale_temporaries(&options.out_dir);
    let export = Export::load(&options.export_dir)?;
    let mut request = DeployRequest::new(&options.export_dir, &options.board, &options.out_dir);
    request.run = options.run;
    request.runs = options.runs.max(1);
    if options.images > 0 {
        let images = test_images(
            &export,
            &options.export_dir,
            options.data_dir.as_deref(),
            options.images,
        )?;
        request.reference_logits = Some(reference_logits(&export, &images)?);
        request.images = images;
    }
    Ok(dnal_firmware::deploy(&request)?)
}
