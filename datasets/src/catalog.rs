//! The datasets dnal knows by name, and [`load`], which finds, reads and checks one.

use std::path::Path;

use crate::augment::Augmentation;
use crate::dataset::Dataset;
use crate::error::DatasetError;
use crate::image_folder::FolderShape;
use crate::synthetic::SyntheticConfig;
use crate::{cifar10, idx, image_folder};

/// The names [`load`] accepts.
pub const DATASET_NAMES: &[&str] = &[
    "fashion-mnist",
    "mnist",
    "idx",
    "cifar10",
    "folder",
    "synthetic",
];

/// What a caller may ask of a dataset beyond its name and folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// An image folder's input size and channels (the images' own where not given). The other
    /// datasets have a fixed shape and refuse either.
    pub folder: FolderShape,
    /// The training augmentation instead of the dataset's own: `none`, `flip`, `shift` or
    /// `flip,shift` ([`Augmentation::from_choice`]).
    pub augmentation: Option<String>,
}

/// Loads a dataset by name (one of [`DATASET_NAMES`]) with its own shape and augmentation:
/// [`load_with`] and the default [`LoadOptions`].
pub fn load(name: &str, data_dir: Option<&Path>) -> Result<Dataset, DatasetError> {
    load_with(name, data_dir, &LoadOptions::default())
}

/// Loads a dataset by name (one of [`DATASET_NAMES`]).
///
/// - `fashion-mnist`: from `data_dir` (or its `fashion-mnist/` or `FashionMNIST/raw/`), else
///   from /usr/share/datasets/fashion-mnist (Debian's package `dataset-fashion-mnist`); the files
///   `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`,
///   `t10k-labels-idx1-ubyte[.gz]`.
/// - `mnist`: the same four file names, from `data_dir` (required).
/// - `idx`: any IDX data in those four files, from `data_dir` (required), with the classes its
///   labels use, named by an optional `classes.txt` (see [`idx::load_idx`]).
/// - `cifar10`: the binary version, from `data_dir` or its `cifar-10-batches-bin/` (required).
/// - `folder`: an ImageNet-style `train/<class>/` + `val/<class>/` tree in `data_dir`
///   (required), at the images' own size and colour unless `options.folder` says otherwise
///   ([`image_folder::folder_input_shape`]).
/// - `synthetic`: [`SyntheticConfig::default`], generated; `data_dir` is ignored.
pub fn load_with(
    name: &str,
    data_dir: Option<&Path>,
    options: &LoadOptions,
) -> Result<Dataset, DatasetError> {
    if name != "folder" && options.folder != FolderShape::default() {
        return Err(DatasetError::InvalidValue {
            what: "image size or channels",
            problem: format!("dataset {name} has images of one fixed shape"),
            fix: "give an image size or channel count for folder datasets only".into(),
        });
    }
    let mut dataset = match name {
        "fashion-mnist" => idx::load_fashion_mnist(data_dir),
        "mnist" => idx::load_mnist(data_dir),
        "idx" => idx::load_idx(data_dir),
        "cifar10" => match data_dir {
            Some(dir) => cifar10::load_cifar10(dir),
            None => Err(DatasetError::DataDirRequired {
                name: name.into(),
                fix: cifar10::MISSING_FIX.into(),
            }),
        },
        "folder" => match data_dir {
            Some(dir) => image_folder::folder_input_shape(dir, options.folder)
                .and_then(|shape| image_folder::load_image_folder(dir, shape)),
            None => Err(DatasetError::DataDirRequired {
                name: name.into(),
                fix: image_folder::LAYOUT_FIX.into(),
            }),
        },
        "synthetic" => SyntheticConfig::default().generate(),
        _ => Err(DatasetError::UnknownDataset { name: name.into() }),
    }?;
    dataset.check_usable(data_dir)?;
    if let Some(choice) = &options.augmentation {
        dataset.augmentation = Augmentation::from_choice(choice, dataset.shape())?;
    }
    Ok(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = load("imagenet-21k", None).unwrap_err();
        assert!(
            matches!(err, DatasetError::UnknownDataset { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        for name in DATASET_NAMES {
            assert!(text.contains(name), "{text}");
        }
    }

    #[test]
    fn options_apply_where_they_mean_something() {
        let options = LoadOptions {
            folder: FolderShape {
                size: Some((16, 16)),
                channels: None,
            },
            augmentation: None,
        };
        let err = load_with("synthetic", None, &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains("folder datasets only"), "{err}");
        let options = LoadOptions {
            augmentation: Some("flip".into()),
            ..LoadOptions::default()
        };
        let data = load_with("synthetic", None, &options).unwrap();
        assert!(data.augmentation.horizontal_flip && data.augmentation.crop_padding == 0);
    }

    #[test]
    fn datasets_without_a_home_need_a_data_dir() {
        for name in ["mnist", "idx", "cifar10", "folder"] {
            let err = load(name, None).unwrap_err();
            assert!(
                matches!(err, DatasetError::DataDirRequired { .. }),
                "{name}: {err:?}"
            );
        }
    }
}
