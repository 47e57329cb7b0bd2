//! The one error type of this crate.
//!
//! Every variant names the file or value at fault and ends with what to do about it, because
//! these errors reach a person running `dnal search` who cannot see the code: "wrong magic" on
//! its own does not tell them which of four files to re-download.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a dataset could not be loaded or built.
///
/// `#[non_exhaustive]`: new readers may add variants; match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The file exists (or was named) but reading it failed. (The cause is part of the
    /// message, not a `source()` as well: an error chain would print it twice.)
    #[error("{}: cannot read: {cause}; check that it exists and that this user may read it", .path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// None of the places a file may live holds it.
    #[error("{what} not found; tried {}; {fix}", display_paths(.tried))]
    MissingFile {
        /// What was looked for, e.g. "Fashion-MNIST file train-images-idx3-ubyte".
        what: String,
        /// Every path tried, in the order tried.
        tried: Vec<PathBuf>,
        fix: String,
    },

    /// The file starts with the wrong magic number: it is not the kind of file expected.
    #[error("{}: wrong magic number 0x{found:08x}, expected 0x{expected:08x} ({kind}); {fix}", .path.display())]
    BadMagic {
        path: PathBuf,
        /// What the file should be, e.g. "IDX images".
        kind: &'static str,
        expected: u32,
        found: u32,
        fix: String,
    },

    /// The file ends before the data its header (or its format) promises.
    #[error("{}: truncated: {detail}; {fix}", .path.display())]
    Truncated {
        path: PathBuf,
        detail: String,
        fix: String,
    },

    /// The file is of the right kind but its content does not make sense (extra bytes, zero
    /// image sizes, a class-name list of the wrong length, gzip data that does not inflate).
    #[error("{}: {detail}; {fix}", .path.display())]
    Malformed {
        path: PathBuf,
        detail: String,
        fix: String,
    },

    /// An images file and its labels file disagree on how many items they hold.
    #[error(
        "{} holds {images} images but {} holds {labels} labels; the two files belong to different \
         sets: use the matching pair (train-images with train-labels, t10k-images with t10k-labels) \
         or re-download them",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },

    /// A label is not a class index of the dataset.
    #[error(
        "{}: label {label} at index {index} is out of range: the dataset has {num_classes} classes \
         (labels 0..={}); the file is corrupt or belongs to another dataset: re-download it",
        .path.display(),
        .num_classes.saturating_sub(1)
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u64,
        num_classes: usize,
    },

    /// An image file of an image folder could not be decoded (the cause in the message only,
    /// as for [`DatasetError::Io`]).
    #[error("{}: cannot decode image: {cause}; remove the file or replace it with a valid PNG or JPEG", .path.display())]
    ImageDecode {
        path: PathBuf,
        cause: image::ImageError,
    },

    /// A folder that must hold classes or images holds none.
    #[error("{}: {detail}; {fix}", .path.display())]
    EmptyFolder {
        path: PathBuf,
        detail: String,
        fix: String,
    },

    /// The training and evaluation folders of an image-folder dataset have different classes.
    #[error(
        "class folders differ between {} and {}: only in the first: [{}], only in the second: [{}]; \
         both must hold one folder per class with the same names",
        .train_dir.display(),
        .eval_dir.display(),
        .only_in_train.join(", "),
        .only_in_eval.join(", ")
    )]
    ClassMismatch {
        train_dir: PathBuf,
        eval_dir: PathBuf,
        only_in_train: Vec<String>,
        only_in_eval: Vec<String>,
    },

    /// `load` was given a name it does not know.
    #[error("unknown dataset {name:?}; known datasets: {}", crate::DATASET_NAMES.join(", "))]
    UnknownDataset { name: String },

    /// The dataset has no default location: the caller must say where it is.
    #[error("dataset {name:?} needs a data folder: {fix}")]
    DataDirRequired { name: String, fix: String },

    /// A value given to a constructor (an image set, a synthetic configuration, an image size)
    /// is inconsistent.
    #[error("invalid {what}: {problem}; {fix}")]
    InvalidValue {
        /// What the value is, e.g. "image set" or "synthetic dataset config".
        what: &'static str,
        problem: String,
        fix: String,
    },

    /// A dataset that loaded but cannot be searched: an empty half, or halves that disagree.
    #[error("dataset {name} (from {location}): {problem}; {fix}")]
    Unusable {
        name: String,
        /// The data folder it was read from.
        location: String,
        problem: String,
        fix: String,
    },
}

impl DatasetError {
    /// True when the mend is another data folder: files not found where they were looked for,
    /// no folder given for a dataset without a default one, or a folder whose content cannot
    /// be searched. A caller that takes the folder from an option names that option.
    pub fn wants_data_folder(&self) -> bool {
        matches!(
            self,
            DatasetError::MissingFile { .. }
                | DatasetError::DataDirRequired { .. }
                | DatasetError::EmptyFolder { .. }
                | DatasetError::Unusable { .. }
        )
    }

    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.to_path_buf(),
            cause: source,
        }
    }
}

/// "a, b or c": the paths tried, for messages.
fn display_paths(paths: &[PathBuf]) -> String {
    let mut out = String::new();
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            out.push_str(if i + 1 == paths.len() { " and " } else { ", " });
        }
        let _ = write!(out, "{}", path.display());
    }
    if out.is_empty() {
        out.push_str("nothing (no candidate folder)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_lists_every_path_and_the_fix() {
        let err = DatasetError::MissingFile {
            what: "Fashion-MNIST file train-images-idx3-ubyte".into(),
            tried: vec![
                PathBuf::from("/a/x"),
                PathBuf::from("/a/x.gz"),
                PathBuf::from("/b/x"),
            ],
            fix: "apt-get install dataset-fashion-mnist".into(),
        };
        let text = err.to_string();
        assert!(text.contains("/a/x, /a/x.gz and /b/x"), "{text}");
        assert!(
            text.ends_with("apt-get install dataset-fashion-mnist"),
            "{text}"
        );
    }

    #[test]
    fn label_out_of_range_names_index_label_and_range() {
        let err = DatasetError::LabelOutOfRange {
            path: PathBuf::from("/d/labels"),
            index: 7,
            label: 12,
            num_classes: 10,
        };
        let text = err.to_string();
        assert!(text.starts_with("/d/labels: label 12 at index 7"), "{text}");
        assert!(text.contains("labels 0..=9"), "{text}");
    }
}
