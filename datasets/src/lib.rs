//! Image classification datasets for dnal.
//!
//! Readers turn files into [`ImageSet`]s of u8 pixels (IDX for MNIST and Fashion-MNIST,
//! CIFAR-10's binary batches, ImageNet-style image folders), or generate one
//! ([`SyntheticConfig`]); [`load`] picks one by name and pairs it with the [`Normalization`] of
//! its training set and the [`Augmentation`] its usual recipe uses. A [`Batcher`] then shuffles,
//! augments and normalises batches, reproducibly from a seed and an epoch, and
//! [`BatchData::to_tensors`] puts them on a burn device.
//!
//! Errors are [`DatasetError`]s that name the file or value at fault and say what to do.

pub mod augment;
pub mod batch;
pub mod catalog;
pub mod cifar10;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod image_folder;
pub mod image_set;
pub mod normalize;
mod seeded_rng;
pub mod synthetic;

pub use augment::{Augmentation, ImageTransform};
pub use batch::{Batch, BatchData, Batcher, EpochBatches};
pub use catalog::{DATASET_NAMES, LoadOptions, load, load_with};
pub use dataset::{Dataset, Split};
pub use error::DatasetError;
pub use image_folder::FolderShape;
pub use image_set::{ImageSet, Shape3};
pub use normalize::{Normalization, NormalizationTable};
pub use synthetic::SyntheticConfig;
