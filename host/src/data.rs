//! The data a search and an export's users read: a search's dataset with its limits, and the
//! test images of an export's dataset normalised as its network was trained, which `dnal eval`,
//! `dnal deploy` and the board's latency measurement all take.

use std::path::Path;

use dnal_datasets::{
    Augmentation, Batcher, Dataset, FolderShape, ImageSet, LoadOptions, Normalization,
};
use dnal_export::Arch;
use dnal_models::Shape3;

use crate::config::SearchConfig;
use crate::error::SearchError;
use crate::export::SearchInfo;

/// Loads the dataset of a search, with its limits.
pub fn load_dataset(config: &SearchConfig) -> Result<Dataset, SearchError> {
    let options = LoadOptions {
        folder: FolderShape {
            size: config.image_size,
            channels: config.channels,
        },
        augmentation: config.augment.clone(),
    };
    let dataset = dnal_datasets::load_with(&config.dataset, config.data_dir.as_deref(), &options)?;
    Ok(dataset.truncate(config.train_limit, config.test_limit))
}

/// The input shape of a dataset's networks: the shape of its images.
pub fn input_shape(dataset: &Dataset) -> Shape3 {
    dataset.shape()
}

/// The test set of an export's dataset and the normalisation its network was trained with.
#[derive(Clone, Debug)]
pub struct ExportTestSet {
    /// The dataset's name.
    pub dataset: String,
    /// Its test images (the first `limit`, when one was given).
    pub test: ImageSet,
    /// The normalisation the export records (else the dataset's own).
    pub normalization: Normalization,
}

impl ExportTestSet {
    /// Reads the test set of the dataset the search behind `export` (the folder `dir`) used,
    /// from `data_dir` when given (else where the search read it), keeping the first `limit`
    /// images. Refuses a dataset whose images or classes the network does not take.
    pub fn load(
        arch: &Arch,
        dir: &Path,
        data_dir: Option<&Path>,
        limit: Option<usize>,
    ) -> Result<Self, SearchError> {
        Self::load_with_train(arch, dir, data_dir, limit, Some(1)).map(|(set, _)| set)
    }

    /// As [`ExportTestSet::load`], and also the training half as the search trained on it:
    /// its first `train_images` images (what int8 calibration observes), or with `None` all
    /// the search used (what quantisation-aware training trains on).
    pub fn load_with_train(
        arch: &Arch,
        dir: &Path,
        data_dir: Option<&Path>,
        limit: Option<usize>,
        train_images: Option<usize>,
    ) -> Result<(Self, ExportTrainSet), SearchError> {
        let mut config = serde_json::from_value::<SearchInfo>(arch.search.clone())
            .map(|info| info.config)
            .unwrap_or_else(|_| SearchConfig {
                dataset: arch.dataset.clone(),
                ..Default::default()
            });
        // Only as much of the training half as asked for: one image keeps the load cheap.
        if let Some(n) = train_images {
            config.train_limit = Some(n.max(1));
        }
        if let Some(d) = data_dir {
            config.data_dir = Some(d.to_path_buf());
        }
        if limit.is_some() {
            config.test_limit = limit;
        }
        let dataset = load_dataset(&config)?;
        let shape = dataset.test.shape();
        let input = arch.input;
        if shape != input || dataset.test.num_classes() != arch.num_classes {
            return Err(SearchError::InvalidOption {
                option: "--export",
                value: dir.display().to_string(),
                reason: format!(
                    "the network takes {input} images and gives {} classes, but {} has {shape} images of {} classes",
                    arch.num_classes,
                    config.dataset,
                    dataset.test.num_classes()
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
        let train = ExportTrainSet {
            images: dataset.train,
            augmentation: dataset.augmentation,
            batch_size: config.batch_size,
            seed: config.seed,
            epochs_trained: (config.epochs_weights + config.epochs_gates + config.epochs_finetune)
                as u64,
        };
        Ok((
            Self {
                dataset: config.dataset,
                test: dataset.test,
                normalization,
            },
            train,
        ))
    }

    /// The first `count` test images, normalised.
    pub fn normalised_images(&self, count: usize) -> Vec<Vec<f32>> {
        normalised_images(&self.test, &self.normalization, count)
    }
}

/// The training half of an export's dataset, as the search behind it trained.
#[derive(Clone, Debug)]
pub struct ExportTrainSet {
    /// The images.
    pub images: ImageSet,
    /// The search's augmentation.
    pub augmentation: Augmentation,
    /// The search's batch size.
    pub batch_size: usize,
    /// The search's seed (data order).
    pub seed: u64,
    /// Epochs the search ran: training that goes on numbers its epochs from here, so that
    /// its data order is new.
    pub epochs_trained: u64,
}

impl ExportTrainSet {
    /// Shuffled, augmented training batches, as the search's.
    pub fn batcher(&self, normalization: &Normalization) -> Batcher {
        Batcher::new(self.images.clone(), normalization.clone(), self.batch_size)
            .with_augmentation(self.augmentation)
            .with_shuffle(self.seed)
    }
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
