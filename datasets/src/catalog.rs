//! The datasets dnal knows by name, and [`load`], which finds, reads and checks one.

use std::path::Path;

use crate::dataset::Dataset;
use crate::error::DatasetError;
use crate::synthetic::SyntheticConfig;
use crate::{cifar10, idx, image_folder};

/// The names [`load`] accepts.
pub const DATASET_NAMES: &[&str] = &["fashion-mnist", "mnist", "cifar10", "folder", "synthetic"];

/// Loads a dataset by name (one of [`DATASET_NAMES`]).
///
/// - `fashion-mnist`: from `data_dir` (or its `fashion-mnist/` or `FashionMNIST/raw/`), else
///   from /usr/share/datasets/fashion-mnist (Debian's package `dataset-fashion-mnist`); the files
///   `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`,
///   `t10k-labels-idx1-ubyte[.gz]`.
/// - `mnist`: the same four file names, from `data_dir` (required).
/// - `cifar10`: the binary version, from `data_dir` or its `cifar-10-batches-bin/` (required).
/// - `folder`: an ImageNet-style `train/<class>/` + `val/<class>/` tree in `data_dir`
///   (required), resized to 3x32x32; see [`image_folder::load_image_folder`] for other sizes.
/// - `synthetic`: [`SyntheticConfig::default`], generated; `data_dir` is ignored.
pub fn load(name: &str, data_dir: Option<&Path>) -> Result<Dataset, DatasetError> {
    let dataset = match name {
        "fashion-mnist" => idx::load_fashion_mnist(data_dir),
        "mnist" => idx::load_mnist(data_dir),
        "cifar10" => match data_dir {
            Some(dir) => cifar10::load_cifar10(dir),
            None => Err(DatasetError::DataDirRequired {
                name: name.into(),
                fix: cifar10::MISSING_FIX.into(),
            }),
        },
        "folder" => match data_dir {
            Some(dir) => image_folder::load_image_folder(dir, image_folder::DEFAULT_FOLDER_SHAPE),
            None => Err(DatasetError::DataDirRequired {
                name: name.into(),
                fix: image_folder::LAYOUT_FIX.into(),
            }),
        },
        "synthetic" => SyntheticConfig::default().generate(),
        _ => Err(DatasetError::UnknownDataset { name: name.into() }),
    }?;
    dataset.check_usable(data_dir)?;
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
    fn datasets_without_a_home_need_a_data_dir() {
        for name in ["mnist", "cifar10", "folder"] {
            let err = load(name, None).unwrap_err();
            assert!(
                matches!(err, DatasetError::DataDirRequired { .. }),
                "{name}: {err:?}"
            );
        }
    }
}
