//! IDX files (MNIST, Fashion-MNIST): a big-endian header, then raw u8 data.
//!
//! Images: magic 0x00000803 (u8 data, 3 dimensions), then n, rows, cols as u32, then n*rows*cols
//! bytes. Labels: magic 0x00000801, then n, then n bytes. The files are usually gzipped; a gzip
//! stream is recognised by its first two bytes (1f 8b), not by the name, because renamed and
//! already-inflated copies are common (torchvision keeps both next to each other).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::augment::Augmentation;
use crate::dataset::Dataset;
use crate::error::DatasetError;
use crate::image_set::{ImageSet, Shape3};
use crate::normalize::Normalization;

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;
const IMAGES_HEADER_BYTES: usize = 16;
const LABELS_HEADER_BYTES: usize = 8;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Where Debian's package `dataset-fashion-mnist` installs the four gzipped IDX files.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub const FASHION_MNIST_CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

pub const MNIST_CLASS_NAMES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The four files of an MNIST-style dataset, without the optional `.gz`.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// What to tell a person whose generic IDX file is damaged.
const GENERIC_CORRUPT_FIX: &str = "re-download the file";

/// The images of one IDX file.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxImages {
    /// 1 channel, rows, cols.
    pub shape: Shape3,
    pub count: usize,
    /// `count * shape.len()` bytes, images back to back.
    pub pixels: Vec<u8>,
}

/// Reads an IDX images file, raw or gzipped.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DatasetError> {
    read_images(path, GENERIC_CORRUPT_FIX)
}

/// Reads an IDX labels file, raw or gzipped. Range checks are left to the caller, who knows the
/// number of classes.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DatasetError> {
    read_labels(path, GENERIC_CORRUPT_FIX)
}

/// Reads a matching images/labels pair into an [`ImageSet`], checking that they hold the same
/// number of items and that every label is below `class_names.len()`.
pub fn read_idx_set(
    images: &Path,
    labels: &Path,
    class_names: Vec<String>,
) -> Result<ImageSet, DatasetError> {
    read_set(images, labels, class_names, GENERIC_CORRUPT_FIX)
}

/// Fashion-MNIST from `data_dir` (the folder itself, its `fashion-mnist/` or torchvision's
/// `FashionMNIST/raw/`), or, when no folder is named, from [`FASHION_MNIST_SYSTEM_DIR`]. A
/// named folder that lacks the files is an error, not a reason to read other files than the
/// ones asked for. The first folder that holds all four files is used, so files are never
/// mixed from two places.
pub fn load_fashion_mnist(data_dir: Option<&Path>) -> Result<Dataset, DatasetError> {
    let dirs = match data_dir {
        Some(dir) => vec![
            dir.to_path_buf(),
            dir.join("fashion-mnist"),
            dir.join("FashionMNIST").join("raw"),
        ],
        None => vec![PathBuf::from(FASHION_MNIST_SYSTEM_DIR)],
    };
    load_flavor(&FASHION_MNIST, &dirs)
}

/// MNIST from `data_dir` (the folder itself, its `mnist/` or torchvision's `MNIST/raw/`). There
/// is no system-wide copy to fall back on, so the folder is required.
pub fn load_mnist(data_dir: Option<&Path>) -> Result<Dataset, DatasetError> {
    let Some(dir) = data_dir else {
        return Err(DatasetError::DataDirRequired {
            name: MNIST.name.into(),
            fix: MNIST.missing_fix.into(),
        });
    };
    let dirs = [
        dir.to_path_buf(),
        dir.join("mnist"),
        dir.join("MNIST").join("raw"),
    ];
    load_flavor(&MNIST, &dirs)
}

/// The file that names the classes of an IDX dataset of one's own, one name per line.
pub const CLASS_NAMES_FILE: &str = "classes.txt";

/// Any IDX dataset, from `data_dir` (required): the four files of MNIST's layout and names
/// (each may be gzipped), with as many classes as the labels use, named by
/// [`CLASS_NAMES_FILE`] when the folder has one (else "0", "1", ...). No augmentation: what
/// suits data of one's own is not known here.
pub fn load_idx(data_dir: Option<&Path>) -> Result<Dataset, DatasetError> {
    let Some(dir) = data_dir else {
        return Err(DatasetError::DataDirRequired {
            name: IDX.name.into(),
            fix: IDX.missing_fix.into(),
        });
    };
    let [train_images, train_labels, test_images, test_labels] =
        locate(&IDX, &[dir.to_path_buf()])?;
    let fix = IDX.corrupt_fix;
    let (train, train_y) = read_pair(&train_images, &train_labels, fix)?;
    let (test, test_y) = read_pair(&test_images, &test_labels, fix)?;
    let used = train_y
        .iter()
        .chain(&test_y)
        .max()
        .map_or(0, |&m| usize::from(m) + 1);
    let names_path = dir.join(CLASS_NAMES_FILE);
    let class_names = if names_path.is_file() {
        let text =
            std::fs::read_to_string(&names_path).map_err(|e| DatasetError::io(&names_path, e))?;
        let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
        let names: Vec<String> = match names.iter().rposition(|n| !n.is_empty()) {
            Some(last) => names[..=last].to_vec(),
            None => Vec::new(),
        };
        if names.len() < used || names.iter().any(String::is_empty) {
            return Err(DatasetError::Malformed {
                path: names_path,
                detail: format!(
                    "names {} classes (blank lines included) but the labels use {used}",
                    names.len()
                ),
                fix: "write one name per line, one line per class, in label order".into(),
            });
        }
        names
    } else {
        (0..used).map(|c| c.to_string()).collect()
    };
    let train = into_set(train, train_y, &train_labels, class_names.clone())?;
    let test = into_set(test, test_y, &test_labels, class_names)?;
    let normalization = Normalization::from_set(&train);
    Ok(Dataset {
        name: IDX.name.to_string(),
        train,
        test,
        normalization,
        augmentation: Augmentation::none(),
    })
}

/// What differs between the IDX datasets: names, where to look, what to tell people.
struct IdxFlavor {
    name: &'static str,
    title: &'static str,
    class_names: [&'static str; 10],
    augmentation: Augmentation,
    missing_fix: &'static str,
    corrupt_fix: &'static str,
}

const FASHION_MNIST: IdxFlavor = IdxFlavor {
    name: "fashion-mnist",
    title: "Fashion-MNIST",
    class_names: FASHION_MNIST_CLASS_NAMES,
    augmentation: Augmentation::fashion_mnist(),
    missing_fix: "install the Debian package with `apt-get install dataset-fashion-mnist` (it puts \
                  the files in /usr/share/datasets/fashion-mnist) or give as the data folder one \
                  holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, \
                  t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz",
    corrupt_fix: "re-download it or reinstall the Debian package dataset-fashion-mnist \
                  (`apt-get install --reinstall dataset-fashion-mnist`)",
};

const MNIST: IdxFlavor = IdxFlavor {
    name: "mnist",
    title: "MNIST",
    class_names: MNIST_CLASS_NAMES,
    augmentation: Augmentation::mnist(),
    missing_fix: "give as the data folder one holding the four MNIST IDX files \
                  train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and \
                  t10k-labels-idx1-ubyte (each may be gzipped, with a .gz name)",
    corrupt_fix: "re-download the MNIST files",
};

/// IDX data of one's own: its classes come from its labels, not from this table.
const IDX: IdxFlavor = IdxFlavor {
    name: "idx",
    title: "IDX",
    class_names: MNIST_CLASS_NAMES,
    augmentation: Augmentation::none(),
    missing_fix: "give as the data folder one holding train-images-idx3-ubyte, \
                  train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte \
                  (each may be gzipped, with a .gz name), and optionally classes.txt",
    corrupt_fix: "write the file again",
};

fn load_flavor(flavor: &IdxFlavor, dirs: &[PathBuf]) -> Result<Dataset, DatasetError> {
    let [train_images, train_labels, test_images, test_labels] = locate(flavor, dirs)?;
    let class_names: Vec<String> = flavor.class_names.iter().map(|s| s.to_string()).collect();
    let fix = flavor.corrupt_fix;
    let train = read_set(&train_images, &train_labels, class_names.clone(), fix)?;
    let test = read_set(&test_images, &test_labels, class_names, fix)?;
    let normalization = Normalization::from_set(&train);
    Ok(Dataset {
        name: flavor.name.to_string(),
        train,
        test,
        normalization,
        augmentation: flavor.augmentation,
    })
}

/// The paths a file may have in `dir`: raw first (no inflating needed), then gzipped.
fn candidates(dir: &Path, stem: &str) -> [PathBuf; 2] {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
}

/// The four files, all from the first folder that holds every one of them.
fn locate(flavor: &IdxFlavor, dirs: &[PathBuf]) -> Result<[PathBuf; 4], DatasetError> {
    let stems = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];
    // For the error: the folder that came closest, and the first file missing there.
    let mut closest: Option<(usize, &str)> = None;
    for dir in dirs {
        let found: Vec<Option<PathBuf>> = stems
            .iter()
            .map(|stem| candidates(dir, stem).into_iter().find(|p| p.is_file()))
            .collect();
        let present: Vec<PathBuf> = found.iter().flatten().cloned().collect();
        let present = match <[PathBuf; 4]>::try_from(present) {
            Ok(all_four) => return Ok(all_four),
            Err(some) => some.len(),
        };
        let missing = stems
            .iter()
            .zip(&found)
            .find(|(_, path)| path.is_none())
            .map_or(stems[0], |(stem, _)| *stem);
        if closest.is_none_or(|(best, _)| present > best) {
            closest = Some((present, missing));
        }
    }
    let missing = closest.map_or(stems[0], |(_, stem)| stem);
    Err(DatasetError::MissingFile {
        what: format!("{} file {missing}", flavor.title),
        tried: dirs
            .iter()
            .flat_map(|dir| candidates(dir, missing))
            .collect(),
        fix: flavor.missing_fix.to_string(),
    })
}

fn read_set(
    images_path: &Path,
    labels_path: &Path,
    class_names: Vec<String>,
    fix: &str,
) -> Result<ImageSet, DatasetError> {
    let (images, labels) = read_pair(images_path, labels_path, fix)?;
    into_set(images, labels, labels_path, class_names)
}

/// An images file and its labels file, checked to hold as many items.
fn read_pair(
    images_path: &Path,
    labels_path: &Path,
    fix: &str,
) -> Result<(IdxImages, Vec<u8>), DatasetError> {
    let images = read_images(images_path, fix)?;
    let labels = read_labels(labels_path, fix)?;
    if images.count != labels.len() {
        return Err(DatasetError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.count,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    Ok((images, labels))
}

/// The images with their labels (read from `labels_path`), every label a class of
/// `class_names`.
fn into_set(
    images: IdxImages,
    labels: Vec<u8>,
    labels_path: &Path,
    class_names: Vec<String>,
) -> Result<ImageSet, DatasetError> {
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &label)| usize::from(label) >= class_names.len())
    {
        return Err(DatasetError::LabelOutOfRange {
            path: labels_path.to_path_buf(),
            index,
            label: u64::from(label),
            num_classes: class_names.len(),
        });
    }
    let labels = labels.into_iter().map(u32::from).collect();
    ImageSet::new(images.shape, images.pixels, labels, class_names)
}

fn read_images(path: &Path, fix: &str) -> Result<IdxImages, DatasetError> {
    let contents = read_maybe_gzip(path, fix)?;
    let holds = contents.holds_phrase();
    let mut data = contents.bytes;
    check_magic(path, &data, IMAGES_MAGIC, "IDX images", &holds, fix)?;
    if data.len() < IMAGES_HEADER_BYTES {
        return Err(DatasetError::Truncated {
            path: path.to_path_buf(),
            detail: format!("{holds}, less than the {IMAGES_HEADER_BYTES}-byte IDX images header"),
            fix: fix.to_string(),
        });
    }
    let count = be_u32(&data, 4) as usize;
    let rows = be_u32(&data, 8) as usize;
    let cols = be_u32(&data, 12) as usize;
    if rows == 0 || cols == 0 {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            detail: format!("header says images of {rows}x{cols} pixels"),
            fix: fix.to_string(),
        });
    }
    let expected = IMAGES_HEADER_BYTES as u128 + count as u128 * rows as u128 * cols as u128;
    let described = format!("header says {count} images of {rows}x{cols} ({expected} bytes)");
    check_size(path, data.len(), expected, &described, &holds, fix)?;
    data.drain(..IMAGES_HEADER_BYTES);
    Ok(IdxImages {
        shape: Shape3::new(1, rows, cols),
        count,
        pixels: data,
    })
}

fn read_labels(path: &Path, fix: &str) -> Result<Vec<u8>, DatasetError> {
    let contents = read_maybe_gzip(path, fix)?;
    let holds = contents.holds_phrase();
    let mut data = contents.bytes;
    check_magic(path, &data, LABELS_MAGIC, "IDX labels", &holds, fix)?;
    if data.len() < LABELS_HEADER_BYTES {
        return Err(DatasetError::Truncated {
            path: path.to_path_buf(),
            detail: format!("{holds}, less than the {LABELS_HEADER_BYTES}-byte IDX labels header"),
            fix: fix.to_string(),
        });
    }
    let count = be_u32(&data, 4) as usize;
    let expected = LABELS_HEADER_BYTES as u128 + count as u128;
    let described = format!("header says {count} labels ({expected} bytes)");
    check_size(path, data.len(), expected, &described, &holds, fix)?;
    data.drain(..LABELS_HEADER_BYTES);
    Ok(data)
}

/// A file's bytes, inflated if it was gzipped.
struct FileContents {
    bytes: Vec<u8>,
    was_gzip: bool,
}

impl FileContents {
    /// "the file holds 1000 bytes" or "the gzipped file inflates to 1000 bytes", for size
    /// errors.
    fn holds_phrase(&self) -> String {
        let len = self.bytes.len();
        if self.was_gzip {
            format!("the gzipped file inflates to {len} bytes")
        } else {
            format!("the file holds {len} bytes")
        }
    }
}

fn read_maybe_gzip(path: &Path, fix: &str) -> Result<FileContents, DatasetError> {
    let raw = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(FileContents {
            bytes: raw,
            was_gzip: false,
        });
    }
    // The gzip trailer's last 4 bytes hold the inflated size mod 2^32: a good capacity hint for
    // these files (all far below 4 GiB), capped so a damaged trailer cannot ask for too much.
    let hint = raw
        .last_chunk::<4>()
        .map_or(0, |size| u32::from_le_bytes(*size) as usize)
        .min(1 << 30);
    let mut bytes = Vec::with_capacity(hint);
    let mut decoder = flate2::read::MultiGzDecoder::new(raw.as_slice());
    if let Err(e) = decoder.read_to_end(&mut bytes) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            DatasetError::Truncated {
                path: path.to_path_buf(),
                detail: format!(
                    "the gzip stream of {} bytes ends before its end marker (after inflating {} \
                     bytes)",
                    raw.len(),
                    bytes.len()
                ),
                fix: fix.to_string(),
            }
        } else {
            DatasetError::Malformed {
                path: path.to_path_buf(),
                detail: format!("the gzip data is corrupt ({e})"),
                fix: fix.to_string(),
            }
        });
    }
    Ok(FileContents {
        bytes,
        was_gzip: true,
    })
}

fn check_magic(
    path: &Path,
    data: &[u8],
    expected: u32,
    kind: &'static str,
    holds: &str,
    fix: &str,
) -> Result<(), DatasetError> {
    if data.len() < 4 {
        return Err(DatasetError::Truncated {
            path: path.to_path_buf(),
            detail: format!("{holds}, less than a 4-byte magic number"),
            fix: fix.to_string(),
        });
    }
    let found = be_u32(data, 0);
    if found == expected {
        return Ok(());
    }
    let fix = match found {
        IMAGES_MAGIC => "this is an IDX images file: pass the *-labels-idx1-ubyte file here".into(),
        LABELS_MAGIC => "this is an IDX labels file: pass the *-images-idx3-ubyte file here".into(),
        _ => format!("the file is not an {kind} file: check its name, or {fix}"),
    };
    Err(DatasetError::BadMagic {
        path: path.to_path_buf(),
        kind,
        expected,
        found,
        fix,
    })
}

fn check_size(
    path: &Path,
    len: usize,
    expected: u128,
    described: &str,
    holds: &str,
    fix: &str,
) -> Result<(), DatasetError> {
    let len_wide = len as u128;
    if len_wide < expected {
        return Err(DatasetError::Truncated {
            path: path.to_path_buf(),
            detail: format!("{described} but {holds}"),
            fix: fix.to_string(),
        });
    }
    if len_wide > expected {
        return Err(DatasetError::Malformed {
            path: path.to_path_buf(),
            detail: format!(
                "{described} but {holds}, {} bytes more than that",
                len_wide - expected
            ),
            fix: fix.to_string(),
        });
    }
    Ok(())
}

/// The big-endian u32 at `offset`; callers have checked the length.
fn be_u32(data: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&data[offset..offset + 4]);
    u32::from_be_bytes(word)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write as _;

    /// An IDX images file's bytes: `count` images of `rows`x`cols`, image i filled with i.
    pub(crate) fn images_bytes(count: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [IMAGES_MAGIC, count, rows, cols] {
            bytes.extend(word.to_be_bytes());
        }
        for i in 0..count {
            bytes.extend(std::iter::repeat_n(i as u8, (rows * cols) as usize));
        }
        bytes
    }

    pub(crate) fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for word in [LABELS_MAGIC, labels.len() as u32] {
            bytes.extend(word.to_be_bytes());
        }
        bytes.extend(labels);
        bytes
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes the four files of a small IDX dataset (raw or gzipped) into `dir`.
    fn write_dataset(dir: &Path, gz: bool) {
        let suffix = if gz { ".gz" } else { "" };
        let pack = |b: Vec<u8>| if gz { gzip(&b) } else { b };
        let train_labels: Vec<u8> = (0..20).map(|i| i % 10).collect();
        let test_labels: Vec<u8> = (0..10).collect();
        write(
            dir,
            &format!("{TRAIN_IMAGES}{suffix}"),
            &pack(images_bytes(20, 4, 3)),
        );
        write(
            dir,
            &format!("{TRAIN_LABELS}{suffix}"),
            &pack(labels_bytes(&train_labels)),
        );
        write(
            dir,
            &format!("{TEST_IMAGES}{suffix}"),
            &pack(images_bytes(10, 4, 3)),
        );
        write(
            dir,
            &format!("{TEST_LABELS}{suffix}"),
            &pack(labels_bytes(&test_labels)),
        );
    }

    #[test]
    fn any_idx_data_takes_its_classes_from_its_labels_and_names() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), true);
        let data = load_idx(Some(dir.path())).unwrap();
        assert_eq!(data.name, "idx");
        assert_eq!(data.train.num_classes(), 10);
        assert_eq!(data.train.class_names()[3], "3");
        assert_eq!(data.augmentation, Augmentation::none());

        // Names from classes.txt, which may name classes the files do not use.
        let names: Vec<String> = (0..12).map(|c| format!("part-{c}")).collect();
        std::fs::write(dir.path().join(CLASS_NAMES_FILE), names.join("\n") + "\n\n").unwrap();
        let data = load_idx(Some(dir.path())).unwrap();
        assert_eq!(data.train.class_names(), &names[..]);
        assert_eq!(data.test.num_classes(), 12);

        // Too few names for the labels is an error that names the file.
        std::fs::write(dir.path().join(CLASS_NAMES_FILE), "a\nb\n").unwrap();
        let err = load_idx(Some(dir.path())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(CLASS_NAMES_FILE) && text.contains("use 10"),
            "{text}"
        );

        assert!(matches!(
            load_idx(None),
            Err(DatasetError::DataDirRequired { .. })
        ));
    }

    #[test]
    fn raw_and_gzipped_files_round_trip() {
        for gz in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            write_dataset(dir.path(), gz);
            let data = load_mnist(Some(dir.path())).unwrap();
            assert_eq!(data.name, "mnist");
            assert_eq!(data.train.len(), 20);
            assert_eq!(data.test.len(), 10);
            assert_eq!(data.train.shape(), Shape3::new(1, 4, 3));
            assert_eq!(data.train.image(7), &[7; 12]);
            assert_eq!(data.train.label(13), 3);
            assert_eq!(data.test.labels(), &(0..10).collect::<Vec<u32>>()[..]);
            assert_eq!(data.augmentation, Augmentation::mnist());
        }
    }

    #[test]
    fn gzip_is_detected_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "images.raw", &gzip(&images_bytes(3, 2, 2)));
        assert_eq!(
            read_idx_images(&path).unwrap().pixels,
            [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
        );
        let path = write(dir.path(), "labels.gz", &labels_bytes(&[1, 2]));
        assert_eq!(read_idx_labels(&path).unwrap(), [1, 2]);
    }

    #[test]
    fn truncated_images_say_what_the_header_promised() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = images_bytes(10, 28, 28);
        bytes.truncate(1000);
        let path = write(dir.path(), TRAIN_IMAGES, &bytes);
        let err = read_idx_images(&path).unwrap_err();
        assert!(matches!(err, DatasetError::Truncated { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with(&path.display().to_string()), "{text}");
        assert!(
            text.contains(
                "header says 10 images of 28x28 (7856 bytes) but the file holds 1000 bytes"
            ),
            "{text}"
        );
        // Shorter than the header, and shorter than the magic number.
        for len in [10, 2] {
            let path = write(dir.path(), "short", &images_bytes(1, 2, 2)[..len]);
            let err = read_idx_images(&path).unwrap_err();
            assert!(matches!(err, DatasetError::Truncated { .. }), "{err:?}");
        }
        let path = write(dir.path(), "short-labels", &labels_bytes(&[1, 2, 3])[..9]);
        let err = read_idx_labels(&path).unwrap_err();
        assert!(
            err.to_string()
                .contains("header says 3 labels (11 bytes) but the file holds 9"),
            "{err}"
        );
    }

    #[test]
    fn truncated_gzip_stream_is_reported_as_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let gz = gzip(&images_bytes(50, 28, 28));
        let path = write(dir.path(), "cut.gz", &gz[..gz.len() / 2]);
        let err = read_idx_images(&path).unwrap_err();
        assert!(matches!(err, DatasetError::Truncated { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("cut.gz: truncated: the gzip stream"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_gzip_and_trailing_bytes_are_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let mut gz = gzip(&images_bytes(5, 4, 4));
        let middle = gz.len() / 2;
        for byte in &mut gz[12..middle] {
            *byte ^= 0x5a;
        }
        let path = write(dir.path(), "bad.gz", &gz);
        let err = read_idx_images(&path).unwrap_err();
        assert!(
            matches!(
                err,
                DatasetError::Malformed { .. } | DatasetError::Truncated { .. }
            ),
            "{err:?}"
        );
        let mut long = labels_bytes(&[1, 2]);
        long.push(9);
        let path = write(dir.path(), "long", &long);
        let err = read_idx_labels(&path).unwrap_err();
        assert!(matches!(err, DatasetError::Malformed { .. }), "{err:?}");
        assert!(err.to_string().contains("1 bytes more"), "{err}");
    }

    #[test]
    fn wrong_magic_names_the_file_and_spots_swapped_files() {
        let dir = tempfile::tempdir().unwrap();
        let labels = write(dir.path(), TRAIN_LABELS, &labels_bytes(&[1]));
        let err = read_idx_images(&labels).unwrap_err();
        assert!(
            matches!(
                err,
                DatasetError::BadMagic {
                    found: LABELS_MAGIC,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(TRAIN_LABELS) && text.contains("IDX labels file"),
            "{text}"
        );

        let junk = write(dir.path(), "junk", b"PK\x03\x04 not an idx file at all");
        let err = read_idx_labels(&junk).unwrap_err();
        assert!(
            matches!(
                err,
                DatasetError::BadMagic {
                    expected: LABELS_MAGIC,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("junk: wrong magic number 0x504b0304"),
            "{err}"
        );
    }

    #[test]
    fn label_out_of_range_names_file_index_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(dir.path(), "i", &images_bytes(3, 2, 2));
        let labels = write(dir.path(), "l", &labels_bytes(&[0, 9, 10]));
        let names = MNIST_CLASS_NAMES.map(String::from).to_vec();
        let err = read_idx_set(&images, &labels, names).unwrap_err();
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
        assert!(
            err.to_string().contains(&labels.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(dir.path(), "imgs", &images_bytes(3, 2, 2));
        let labels = write(dir.path(), "lbls", &labels_bytes(&[0, 1]));
        let names = MNIST_CLASS_NAMES.map(String::from).to_vec();
        let err = read_idx_set(&images, &labels, names).unwrap_err();
        assert!(
            matches!(
                err,
                DatasetError::CountMismatch {
                    images: 3,
                    labels: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("imgs holds 3 images") && text.contains("lbls holds 2 labels"),
            "{text}"
        );
    }

    #[test]
    fn missing_files_list_the_paths_tried() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), true);
        std::fs::remove_file(dir.path().join(format!("{TEST_LABELS}.gz"))).unwrap();
        let err = load_mnist(Some(dir.path())).unwrap_err();
        assert!(matches!(err, DatasetError::MissingFile { .. }), "{err:?}");
        let text = err.to_string();
        let expected = dir.path().join(format!("{TEST_LABELS}.gz"));
        assert!(text.contains(&expected.display().to_string()), "{text}");
        assert!(text.contains("MNIST/raw"), "{text}");
        assert!(text.contains("as the data folder"), "{text}");

        let err = load_mnist(None).unwrap_err();
        assert!(
            matches!(err, DatasetError::DataDirRequired { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn fashion_mnist_missing_everywhere_says_how_to_install_it() {
        let dirs = [PathBuf::from("/nonexistent/dnal-test")];
        let err = locate(&FASHION_MNIST, &dirs).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("apt-get install dataset-fashion-mnist"),
            "{text}"
        );
        assert!(text.contains("as the data folder"), "{text}");
        assert!(
            text.contains("/nonexistent/dnal-test/train-images-idx3-ubyte.gz"),
            "{text}"
        );
    }

    #[test]
    fn a_named_folder_without_the_files_is_an_error_not_a_fallback() {
        // Even where Debian's copy is installed, --data-dir means these files, not others.
        let dir = tempfile::tempdir().unwrap();
        let err = load_fashion_mnist(Some(dir.path())).unwrap_err();
        assert!(matches!(err, DatasetError::MissingFile { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        let tried = text.split(';').next().unwrap();
        assert!(!tried.contains(FASHION_MNIST_SYSTEM_DIR), "{text}");
    }

    #[test]
    fn damaged_fashion_mnist_in_data_dir_says_how_to_reinstall() {
        let dir = tempfile::tempdir().unwrap();
        write_dataset(dir.path(), false);
        let mut bytes = images_bytes(20, 4, 3);
        bytes.truncate(100);
        let path = write(dir.path(), TRAIN_IMAGES, &bytes);
        let err = load_fashion_mnist(Some(dir.path())).unwrap_err();
        assert!(matches!(err, DatasetError::Truncated { .. }), "{err:?}");
        let text = err.to_string();
        let expected = format!(
            "{}: truncated: header says 20 images of 4x3 (256 bytes) but the file holds 100 \
             bytes; re-download it or reinstall the Debian package dataset-fashion-mnist",
            path.display()
        );
        assert!(text.starts_with(&expected), "{text}");
    }

    #[test]
    fn files_are_not_mixed_across_folders() {
        let partial = tempfile::tempdir().unwrap();
        let complete = tempfile::tempdir().unwrap();
        write_dataset(complete.path(), false);
        write(partial.path(), TRAIN_IMAGES, &images_bytes(1, 1, 1));
        let dirs = [partial.path().to_path_buf(), complete.path().to_path_buf()];
        let found = locate(&MNIST, &dirs).unwrap();
        assert!(
            found.iter().all(|p| p.starts_with(complete.path())),
            "{found:?}"
        );
    }

    /// The real data set, as Debian's `dataset-fashion-mnist` installs it (CI installs it too).
    /// Fails, rather than skips, when it is missing: a green run must mean it was checked.
    #[test]
    fn real_fashion_mnist_from_the_debian_package() {
        let data = load_fashion_mnist(None).unwrap_or_else(|e| {
            panic!(
                "Fashion-MNIST is needed for this test; install it with \
                 `apt-get install dataset-fashion-mnist`: {e}"
            )
        });
        assert_eq!(data.name, "fashion-mnist");
        assert_eq!(data.train.len(), 60_000);
        assert_eq!(data.test.len(), 10_000);
        assert_eq!(data.train.shape(), Shape3::new(1, 28, 28));
        assert_eq!(data.test.shape(), Shape3::new(1, 28, 28));
        assert_eq!(data.train.num_classes(), 10);
        assert_eq!(data.train.class_names()[0], "T-shirt/top");
        assert_eq!(data.train.class_names()[9], "Ankle boot");
        assert_eq!(data.train.class_counts(), vec![6000; 10]);
        assert_eq!(data.test.class_counts(), vec![1000; 10]);
        // Published statistics of the Fashion-MNIST training set: mean 0.2860, std 0.3530.
        assert!(
            (data.normalization.mean[0] - 0.2860).abs() < 1e-3,
            "{:?}",
            data.normalization
        );
        assert!(
            (data.normalization.std[0] - 0.3530).abs() < 1e-3,
            "{:?}",
            data.normalization
        );
        assert_eq!(data.augmentation, Augmentation::fashion_mnist());
    }
}
