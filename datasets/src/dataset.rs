//! A loaded dataset: its two halves, its normalisation and augmentation, and the checks that
//! make it usable for a search. The named datasets are in [`crate::catalog`].

use std::path::Path;

use crate::augment::Augmentation;
use crate::error::DatasetError;
use crate::image_set::{ImageSet, Shape3};
use crate::normalize::Normalization;

/// Which half of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// A loaded dataset with the preprocessing that suits it: normalisation statistics from its
/// training set, and the augmentation its usual training recipe uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub name: String,
    pub train: ImageSet,
    pub test: ImageSet,
    pub normalization: Normalization,
    pub augmentation: Augmentation,
}

impl Dataset {
    pub fn split(&self, split: Split) -> &ImageSet {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }

    /// The shape of every image (train and test share it).
    pub fn shape(&self) -> Shape3 {
        self.train.shape()
    }

    pub fn num_classes(&self) -> usize {
        self.train.num_classes()
    }

    /// Keeps the first `train` training and `test` test images (`None`: all), for quick runs.
    /// The normalisation stays the one of the full training set: a better estimate of the same
    /// statistics, and the same numbers whatever the limit, so exports stay comparable.
    pub fn truncate(mut self, train: Option<usize>, test: Option<usize>) -> Self {
        if let Some(n) = train {
            self.train = self.train.truncate(n);
        }
        if let Some(n) = test {
            self.test = self.test.truncate(n);
        }
        self
    }

    /// Refuses a dataset a search cannot use: an empty half (training on nothing, or a top-1
    /// over no image, would "succeed"), or halves of different image shapes or classes.
    pub fn check_usable(&self, data_dir: Option<&Path>) -> Result<(), DatasetError> {
        let unusable = |problem: String, fix: &str| DatasetError::Unusable {
            name: self.name.clone(),
            location: data_dir.map_or_else(
                || "its default location".to_string(),
                |d| d.display().to_string(),
            ),
            problem,
            fix: fix.to_string(),
        };
        for split in [Split::Train, Split::Test] {
            if self.split(split).is_empty() {
                return Err(unusable(
                    format!("the {split} set holds no image"),
                    "point the data folder at a dataset whose train and test files both hold images",
                ));
            }
        }
        if self.train.shape() != self.test.shape() {
            return Err(unusable(
                format!(
                    "train images are {} but test images are {}",
                    self.train.shape(),
                    self.test.shape()
                ),
                "both halves must come from the same dataset, at the same size and colour type",
            ));
        }
        if self.train.class_names() != self.test.class_names() {
            return Err(unusable(
                format!(
                    "the train set has {} classes, the test set {} (or other names)",
                    self.train.num_classes(),
                    self.test.num_classes()
                ),
                "both halves must have the same classes, in the same order",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::load;
    use crate::synthetic::SyntheticConfig;

    #[test]
    fn empty_halves_and_mismatched_shapes_are_unusable() {
        let data = load("synthetic", None).unwrap();
        let mut empty_train = data.clone();
        empty_train.train = empty_train.train.truncate(0);
        let err = empty_train.check_usable(None).unwrap_err();
        assert!(
            err.to_string().contains("train set holds no image"),
            "{err}"
        );
        let mut empty_test = data.clone();
        empty_test.test = empty_test.test.truncate(0);
        let err = empty_test.check_usable(None).unwrap_err();
        assert!(err.to_string().contains("test set holds no image"), "{err}");

        let other = SyntheticConfig {
            shape: Shape3::new(3, 8, 8),
            ..SyntheticConfig::default()
        }
        .generate()
        .unwrap();
        let mut mixed = data.clone();
        mixed.test = other.test;
        let err = mixed.check_usable(Some(Path::new("/data/x"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("1x28x28") && text.contains("3x8x8"), "{text}");
        assert!(text.contains("/data/x"), "{text}");
        data.check_usable(None).unwrap();
    }

    #[test]
    fn synthetic_loads_by_name_and_truncates() {
        let data = load("synthetic", None).unwrap();
        assert_eq!(data.name, "synthetic");
        assert_eq!((data.train.len(), data.test.len()), (2048, 512));
        assert_eq!(data.shape(), Shape3::new(1, 28, 28));
        assert_eq!(data.num_classes(), 10);
        assert_eq!(data.split(Split::Test).len(), 512);
        let small = data.truncate(Some(100), Some(10));
        assert_eq!((small.train.len(), small.test.len()), (100, 10));
        assert_eq!(
            small.normalization,
            Normalization::from_set(&load("synthetic", None).unwrap().train)
        );
    }
}
