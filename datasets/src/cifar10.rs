//! CIFAR-10, binary version: `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`,
//! each a run of 3073-byte records (1 label byte, then 3072 pixel bytes: 32x32 red, green,
//! blue planes, which is already the CHW order burn wants).
//!
//! The files are memory-mapped rather than read: the pixels are copied once, straight from the
//! page cache into the set's buffer, with no intermediate 30 MB `Vec` per file.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::augment::Augmentation;
use crate::dataset::Dataset;
use crate::error::DatasetError;
use crate::image_set::{ImageSet, Shape3};
use crate::normalize::Normalization;

pub const CIFAR10_SHAPE: Shape3 = Shape3::new(3, 32, 32);
const RECORD_BYTES: usize = 1 + 3 * 32 * 32;

pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
/// Optional: one class name per line.
pub const META_FILE: &str = "batches.meta.txt";
/// The folder the official archive extracts to.
pub const ARCHIVE_FOLDER: &str = "cifar-10-batches-bin";

pub const CIFAR10_CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub(crate) const MISSING_FIX: &str = "download the CIFAR-10 binary version (cifar-10-binary.tar.gz) \
    and extract it, then give the cifar-10-batches-bin folder (or the folder holding it) as \
    the data folder";
const CORRUPT_FIX: &str = "re-download and extract the CIFAR-10 binary version";

/// Loads CIFAR-10 from `data_dir`, which may hold the `.bin` files or a
/// `cifar-10-batches-bin/` folder holding them.
pub fn load_cifar10(data_dir: &Path) -> Result<Dataset, DatasetError> {
    let dir = locate(data_dir)?;
    let class_names = read_class_names(&dir.join(META_FILE))?;
    let train_paths: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| dir.join(f)).collect();
    let train = read_batches(&train_paths, class_names.clone())?;
    let test = read_batches(&[dir.join(TEST_FILE)], class_names)?;
    let normalization = Normalization::from_set(&train);
    Ok(Dataset {
        name: "cifar10".to_string(),
        train,
        test,
        normalization,
        augmentation: Augmentation::cifar10(),
    })
}

/// Reads CIFAR-10 binary batch files, in order, into one set.
pub fn read_batches(paths: &[PathBuf], class_names: Vec<String>) -> Result<ImageSet, DatasetError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        read_batch_into(path, class_names.len(), &mut pixels, &mut labels)?;
    }
    ImageSet::new(CIFAR10_SHAPE, pixels, labels, class_names)
}

/// The folder holding the batches: `data_dir` itself or its `cifar-10-batches-bin/`; the
/// first that holds every batch file.
fn locate(data_dir: &Path) -> Result<PathBuf, DatasetError> {
    let dirs = [data_dir.to_path_buf(), data_dir.join(ARCHIVE_FOLDER)];
    let all_files = || TRAIN_FILES.iter().chain([&TEST_FILE]);
    if let Some(dir) = dirs
        .iter()
        .find(|dir| all_files().all(|f| dir.join(f).is_file()))
    {
        return Ok(dir.clone());
    }
    // Report the first file missing from the folder that holds most of them.
    let present = |dir: &PathBuf| all_files().filter(|f| dir.join(f).is_file()).count();
    let best = if present(&dirs[1]) > present(&dirs[0]) {
        &dirs[1]
    } else {
        &dirs[0]
    };
    let missing = all_files()
        .find(|f| !best.join(f).is_file())
        .copied()
        .unwrap_or(TEST_FILE);
    Err(DatasetError::MissingFile {
        what: format!("CIFAR-10 file {missing}"),
        tried: dirs.iter().map(|dir| dir.join(missing)).collect(),
        fix: MISSING_FIX.to_string(),
    })
}

/// Class names from `batches.meta.txt` when it exists (one per line, blank lines ignored),
/// else the standard ten.
fn read_class_names(path: &Path) -> Result<Vec<String>, DatasetError> {
    if !path.exists() {
        return Ok(CIFAR10_CLASS_NAMES.map(String::from).to_vec());
    }
    let text = std::fs::read_to_string(path).map_err(|e| DatasetError::io(path, e))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect();
    if names.len() != CIFAR10_CLASS_NAMES.len() {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            detail: format!("lists {} class names, CIFAR-10 has 10", names.len()),
            fix: format!("{CORRUPT_FIX}, or delete the file to use the standard names"),
        });
    }
    Ok(names)
}

fn read_batch_into(
    path: &Path,
    num_classes: usize,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<(), DatasetError> {
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    // SAFETY: the map is read-only and lives only inside this function, which copies out of
    // it at once. The one hazard of mapping a file is another process truncating it while it
    // is mapped (SIGBUS); dataset files are not written while a run reads them.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DatasetError::io(path, e))?;
    let bytes: &[u8] = &map;
    if bytes.is_empty() {
        return Err(DatasetError::Truncated {
            path: path.to_path_buf(),
            detail: "the file is empty, a CIFAR-10 batch holds 3073-byte records".into(),
            fix: CORRUPT_FIX.into(),
        });
    }
    if !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(DatasetError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "the file holds {} bytes, not a multiple of the {RECORD_BYTES}-byte record \
                 (1 label byte + 3072 pixel bytes): {} whole records and {} bytes of a cut one",
                bytes.len(),
                bytes.len() / RECORD_BYTES,
                bytes.len() % RECORD_BYTES
            ),
            fix: CORRUPT_FIX.into(),
        });
    }
    let records = bytes.len() / RECORD_BYTES;
    pixels.reserve(records * (RECORD_BYTES - 1));
    labels.reserve(records);
    for (index, record) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = record[0];
        if usize::from(label) >= num_classes {
            return Err(DatasetError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: u64::from(label),
                num_classes,
            });
        }
        labels.push(u32::from(label));
        pixels.extend_from_slice(&record[1..]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` records; record i has label i % 10 and pixel j = (i + j) % 256.
    fn batch_bytes(n: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(n * RECORD_BYTES);
        for i in 0..n {
            bytes.push((i % 10) as u8);
            bytes.extend((0..3072).map(|j| ((i + j) % 256) as u8));
        }
        bytes
    }

    fn write_all_batches(dir: &Path) {
        for (k, name) in TRAIN_FILES.iter().enumerate() {
            std::fs::write(dir.join(name), batch_bytes(3 + k)).unwrap();
        }
        std::fs::write(dir.join(TEST_FILE), batch_bytes(4)).unwrap();
    }

    #[test]
    fn round_trip_from_the_folder_or_its_parent() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join(ARCHIVE_FOLDER);
        std::fs::create_dir(&dir).unwrap();
        write_all_batches(&dir);
        for root in [parent.path(), dir.as_path()] {
            let data = load_cifar10(root).unwrap();
            assert_eq!(data.name, "cifar10");
            assert_eq!(data.train.len(), 3 + 4 + 5 + 6 + 7);
            assert_eq!(data.test.len(), 4);
            assert_eq!(data.train.shape(), CIFAR10_SHAPE);
            assert_eq!(data.train.class_names()[0], "airplane");
            // The second file's first record is record 0 of that file.
            assert_eq!(data.train.label(3), 0);
            assert_eq!(data.train.image(4)[..3], [1, 2, 3]);
            assert_eq!(data.test.labels(), &[0, 1, 2, 3]);
            assert_eq!(data.augmentation, Augmentation::cifar10());
        }
    }

    #[test]
    fn class_names_come_from_the_meta_file() {
        let dir = tempfile::tempdir().unwrap();
        write_all_batches(dir.path());
        let names: String = (0..10).map(|i| format!("thing{i}\n")).collect();
        std::fs::write(dir.path().join(META_FILE), format!("{names}\n\n")).unwrap();
        let data = load_cifar10(dir.path()).unwrap();
        assert_eq!(data.train.class_names()[9], "thing9");

        std::fs::write(dir.path().join(META_FILE), "cat\ndog\n").unwrap();
        let err = load_cifar10(dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::Malformed { .. }), "{err:?}");
        assert!(err.to_string().contains(META_FILE), "{err}");
    }

    #[test]
    fn a_cut_record_is_truncation() {
        let dir = tempfile::tempdir().unwrap();
        write_all_batches(dir.path());
        let path = dir.path().join(TRAIN_FILES[2]);
        let mut bytes = batch_bytes(2);
        bytes.truncate(RECORD_BYTES + 100);
        std::fs::write(&path, bytes).unwrap();
        let err = load_cifar10(dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::Truncated { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with(&path.display().to_string()), "{text}");
        assert!(text.contains("1 whole records and 100 bytes"), "{text}");

        std::fs::write(&path, b"").unwrap();
        let err = load_cifar10(dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::Truncated { .. }), "{err:?}");
    }

    #[test]
    fn label_above_nine_names_the_record() {
        let dir = tempfile::tempdir().unwrap();
        write_all_batches(dir.path());
        let mut bytes = batch_bytes(3);
        bytes[2 * RECORD_BYTES] = 10;
        let path = dir.path().join(TEST_FILE);
        std::fs::write(&path, bytes).unwrap();
        let err = load_cifar10(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DatasetError::LabelOutOfRange {
                    index: 2,
                    label: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(TEST_FILE), "{err}");
    }

    #[test]
    fn missing_file_names_it_in_both_places() {
        let dir = tempfile::tempdir().unwrap();
        write_all_batches(dir.path());
        std::fs::remove_file(dir.path().join(TRAIN_FILES[3])).unwrap();
        let err = load_cifar10(dir.path()).unwrap_err();
        assert!(matches!(err, DatasetError::MissingFile { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&dir.path().join(TRAIN_FILES[3]).display().to_string()),
            "{text}"
        );
        assert!(
            text.contains("cifar-10-batches-bin/data_batch_4.bin"),
            "{text}"
        );
        assert!(text.contains("as the data folder"), "{text}");
    }
}
