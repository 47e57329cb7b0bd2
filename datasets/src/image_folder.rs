//! Image folders in the ImageNet layout: `DIR/train/<class>/*.png|jpg|jpeg` and
//! `DIR/val/<class>/...` (or `DIR/test/<class>/...`).
//!
//! Every image is decoded once, scaled to cover the target size and centre-cropped (so the
//! aspect ratio is kept, as the usual ImageNet preprocessing does), and stored as u8 in the
//! set. Decoding is the slow part, so it runs on all cores; the order of the result is fixed
//! (classes by name, files by name) whatever the thread count.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::augment::Augmentation;
use crate::dataset::Dataset;
use crate::error::DatasetError;
use crate::image_set::{ImageSet, Shape3};
use crate::normalize::Normalization;

/// The size `load("folder", ..)` uses: CIFAR-sized RGB, which the small networks DNAL targets
/// (and the boards they run on) take.
pub const DEFAULT_FOLDER_SHAPE: Shape3 = Shape3::new(3, 32, 32);

pub const TRAIN_FOLDER: &str = "train";
/// Tried in this order for the evaluation images.
pub const EVAL_FOLDERS: [&str; 2] = ["val", "test"];
/// File name extensions read as images (any letter case); other files are skipped.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

pub(crate) const LAYOUT_FIX: &str = "give as the data folder one holding \
    train/<class>/*.png|jpg|jpeg and val/<class>/... (or test/<class>/...), one folder per class \
    with the same class folders in both";

/// What a search asks of an image folder's images: a size and a channel count, each taken
/// from the images when not given (see [`folder_input_shape`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FolderShape {
    /// Height and width.
    pub size: Option<(usize, usize)>,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: Option<usize>,
}

/// The input shape for the images of `dir`: the images' own height and width when every one
/// has the same (else [`DEFAULT_FOLDER_SHAPE`]'s 32x32), 1 channel when every one is grayscale
/// (else 3); what `given` names overrides either. Only the files' headers are read.
pub fn folder_input_shape(dir: &Path, given: FolderShape) -> Result<Shape3, DatasetError> {
    let (train_dir, eval_dir) = split_folders(dir)?;
    let mut sizes = std::collections::BTreeSet::new();
    let mut colour = false;
    if given.size.is_none() || given.channels.is_none() {
        for split in [&train_dir, &eval_dir] {
            for class in class_folders(split)? {
                for path in image_files(&split.join(class))? {
                    let (size, has_colour) = image_header(&path)?;
                    sizes.insert(size);
                    colour |= has_colour;
                }
            }
        }
    }
    let (height, width) = given.size.unwrap_or_else(|| match sizes.len() {
        1 => *sizes.first().expect("one size"),
        _ => (DEFAULT_FOLDER_SHAPE.height, DEFAULT_FOLDER_SHAPE.width),
    });
    let channels = given.channels.unwrap_or(if colour { 3 } else { 1 });
    let shape = Shape3::new(channels, height, width);
    check_shape(shape)?;
    Ok(shape)
}

/// An image file's (height, width) and whether it has colour, from its header.
fn image_header(path: &Path) -> Result<((usize, usize), bool), DatasetError> {
    use image::ImageDecoder as _;
    let decoder = image::ImageReader::open(path)
        .map_err(|e| DatasetError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DatasetError::io(path, e))?
        .into_decoder()
        .map_err(|cause| DatasetError::ImageDecode {
            path: path.to_path_buf(),
            cause,
        })?;
    let (width, height) = decoder.dimensions();
    Ok((
        (height as usize, width as usize),
        decoder.color_type().has_color(),
    ))
}

/// The training folder and the evaluation folder of `dir`.
fn split_folders(dir: &Path) -> Result<(PathBuf, PathBuf), DatasetError> {
    let train_dir = dir.join(TRAIN_FOLDER);
    if !train_dir.is_dir() {
        return Err(DatasetError::MissingFile {
            what: "image-folder training folder".into(),
            tried: vec![train_dir],
            fix: LAYOUT_FIX.into(),
        });
    }
    let eval_candidates: Vec<PathBuf> = EVAL_FOLDERS.iter().map(|f| dir.join(f)).collect();
    let Some(eval_dir) = eval_candidates.iter().find(|d| d.is_dir()).cloned() else {
        return Err(DatasetError::MissingFile {
            what: "image-folder evaluation folder".into(),
            tried: eval_candidates,
            fix: LAYOUT_FIX.into(),
        });
    };
    Ok((train_dir, eval_dir))
}

/// Loads `dir/train` and `dir/val` (or `dir/test`), every image scaled and cropped to `shape`
/// (1 channel: grayscale; 3: RGB).
///
/// Augmentation: shifts of up to 1/8 of the side (4 pixels at 32x32, as on CIFAR-10), and for
/// RGB images flips, which suit photographs; grayscale folders (digits, characters, symbols)
/// are not mirrored.
pub fn load_image_folder(dir: &Path, shape: Shape3) -> Result<Dataset, DatasetError> {
    check_shape(shape)?;
    let (train_dir, eval_dir) = split_folders(dir)?;
    let class_names = class_folders(&train_dir)?;
    let eval_classes = class_folders(&eval_dir)?;
    if eval_classes != class_names {
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter().filter(|name| !b.contains(name)).cloned().collect()
        };
        return Err(DatasetError::ClassMismatch {
            only_in_train: only(&class_names, &eval_classes),
            only_in_eval: only(&eval_classes, &class_names),
            train_dir,
            eval_dir,
        });
    }
    let train = read_split(&train_dir, class_names.clone(), shape)?;
    let test = read_split(&eval_dir, class_names, shape)?;
    let normalization = Normalization::from_set(&train);
    Ok(Dataset {
        name: "folder".to_string(),
        train,
        test,
        normalization,
        augmentation: Augmentation {
            crop_padding: shape.height.min(shape.width) / 8,
            horizontal_flip: shape.channels == 3,
        },
    })
}

/// Reads one split folder (`<class>/<image>` inside) with the given classes, in that order.
pub fn read_split(
    split_dir: &Path,
    class_names: Vec<String>,
    shape: Shape3,
) -> Result<ImageSet, DatasetError> {
    check_shape(shape)?;
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in class_names.iter().enumerate() {
        let class_dir = split_dir.join(class);
        let images = image_files(&class_dir)?;
        if images.is_empty() {
            return Err(DatasetError::EmptyFolder {
                path: class_dir,
                detail: "holds no .png, .jpg or .jpeg image".into(),
                fix: LAYOUT_FIX.into(),
            });
        }
        labels.extend(std::iter::repeat_n(label as u32, images.len()));
        files.extend(images);
    }
    let pixels = decode_all(&files, shape)?;
    ImageSet::new(shape, pixels, labels, class_names)
}

/// Decodes the image at `path`, scales it to cover `shape`, centre-crops it, and writes it to
/// `out` as CHW bytes.
///
/// # Panics
/// If `out.len() != shape.len()`.
pub fn decode_image(path: &Path, shape: Shape3, out: &mut [u8]) -> Result<(), DatasetError> {
    check_shape(shape)?;
    assert_eq!(out.len(), shape.len(), "decode_image: output buffer size");
    let decode_error = |cause| DatasetError::ImageDecode {
        path: path.to_path_buf(),
        cause,
    };
    let image = image::ImageReader::open(path)
        .map_err(|e| DatasetError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DatasetError::io(path, e))?
        .decode()
        .map_err(decode_error)?;
    // check_shape made sure both fit in u32.
    let (width, height) = (shape.width as u32, shape.height as u32);
    let image = if image.width() == width && image.height() == height {
        image
    } else {
        image.resize_to_fill(width, height, FilterType::Triangle)
    };
    let plane = shape.plane();
    if shape.channels == 1 {
        out.copy_from_slice(image.to_luma8().as_raw());
    } else {
        // Interleaved RGB (HWC) to planes (CHW).
        let rgb = image.to_rgb8();
        for (i, pixel) in rgb.as_raw().chunks_exact(3).enumerate() {
            out[i] = pixel[0];
            out[plane + i] = pixel[1];
            out[2 * plane + i] = pixel[2];
        }
    }
    Ok(())
}

fn check_shape(shape: Shape3) -> Result<(), DatasetError> {
    let fits = |n: usize| n > 0 && u32::try_from(n).is_ok();
    if matches!(shape.channels, 1 | 3) && fits(shape.height) && fits(shape.width) {
        return Ok(());
    }
    Err(DatasetError::InvalidValue {
        what: "image-folder image size",
        problem: format!("{shape} (channels x height x width)"),
        fix: "use 1 (grayscale) or 3 (RGB) channels and a height and width of at least 1".into(),
    })
}

/// The class folders of a split, sorted by name; hidden folders (".git", ".cache") are skipped.
fn class_folders(split_dir: &Path) -> Result<Vec<String>, DatasetError> {
    let mut names = Vec::new();
    for entry in read_dir(split_dir)? {
        if entry.is_dir() {
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !name.is_empty() && !name.starts_with('.') {
                names.push(name);
            }
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(DatasetError::EmptyFolder {
            path: split_dir.to_path_buf(),
            detail: "holds no class folder".into(),
            fix: LAYOUT_FIX.into(),
        });
    }
    Ok(names)
}

/// The image files of a class folder, sorted by name.
fn image_files(class_dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let mut files: Vec<PathBuf> = read_dir(class_dir)?
        .into_iter()
        .filter(|path| {
            let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase());
            path.is_file() && extension.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    std::fs::read_dir(dir)
        .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
        .map_err(|e| DatasetError::io(dir, e))
}

/// Decodes `files` into one buffer on all cores, in file order. The first failing file (in
/// file order) is reported.
fn decode_all(files: &[PathBuf], shape: Shape3) -> Result<Vec<u8>, DatasetError> {
    let mut pixels = vec![0u8; files.len() * shape.len()];
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len())
        .max(1);
    let per_thread = files.len().div_ceil(threads).max(1);
    let results: Vec<Result<(), DatasetError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(per_thread)
            .zip(pixels.chunks_mut(per_thread * shape.len()))
            .map(|(chunk, out)| {
                scope.spawn(move || {
                    for (path, image_out) in chunk.iter().zip(out.chunks_exact_mut(shape.len())) {
                        decode_image(path, shape, image_out)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    for result in results {
        result?;
    }
    Ok(pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    /// A `size`x`size` image of one colour.
    fn save_solid(path: &Path, size: u32, colour: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(size, size, Rgb(colour))
            .save(path)
            .unwrap();
    }

    const RED: [u8; 3] = [250, 0, 0];
    const BLUE: [u8; 3] = [0, 0, 250];

    /// train/{cat,dog} and val/{cat,dog}: cats are red PNGs, dogs blue JPEGs.
    fn write_tree(root: &Path, eval: &str) {
        for (split, count) in [("train", 3), (eval, 1)] {
            for i in 0..count {
                save_solid(
                    &root.join(split).join("cat").join(format!("{i}.png")),
                    8,
                    RED,
                );
                save_solid(
                    &root.join(split).join("dog").join(format!("{i}.JPG")),
                    12,
                    BLUE,
                );
            }
        }
        std::fs::write(
            root.join("train").join("cat").join("notes.txt"),
            "not an image",
        )
        .unwrap();
    }

    #[test]
    fn a_folder_keeps_its_images_own_shape() {
        use image::{GrayImage, Luma};
        let root = tempfile::tempdir().unwrap();
        for (split, i) in [("train", 0), ("train", 1), ("val", 0)] {
            for class in ["a", "b"] {
                let path = root.path().join(split).join(class).join(format!("{i}.png"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                GrayImage::from_pixel(10, 6, Luma([9])).save(&path).unwrap();
            }
        }
        let auto = FolderShape::default();
        // 6 rows of 10 grayscale pixels: 1x6x10, not 3x32x32.
        assert_eq!(
            folder_input_shape(root.path(), auto).unwrap(),
            Shape3::new(1, 6, 10)
        );
        let data = load_image_folder(root.path(), Shape3::new(1, 6, 10)).unwrap();
        assert!(
            !data.augmentation.horizontal_flip,
            "grayscale is not mirrored"
        );
        // What is given wins.
        let given = FolderShape {
            size: Some((8, 8)),
            channels: Some(3),
        };
        assert_eq!(
            folder_input_shape(root.path(), given).unwrap(),
            Shape3::new(3, 8, 8)
        );
        // Mixed sizes and a colour image: the default size, RGB.
        save_solid(&root.path().join("val").join("b").join("1.png"), 5, RED);
        assert_eq!(
            folder_input_shape(root.path(), auto).unwrap(),
            Shape3::new(3, 32, 32)
        );
    }

    #[test]
    fn round_trip_resizes_and_orders_by_class() {
        let root = tempfile::tempdir().unwrap();
        write_tree(root.path(), "val");
        let data = load_image_folder(root.path(), Shape3::new(3, 4, 4)).unwrap();
        assert_eq!(data.name, "folder");
        assert_eq!(data.train.class_names(), ["cat", "dog"]);
        assert_eq!(data.train.labels(), [0, 0, 0, 1, 1, 1]);
        assert_eq!(data.test.labels(), [0, 1]);
        let cat = data.train.image(0);
        assert!(cat[..16].iter().all(|&r| r == 250) && cat[16..].iter().all(|&v| v == 0));
        let dog = data.test.image(1);
        // JPEG is lossy: blue plane high, red plane low.
        assert!(dog[32..].iter().all(|&b| b > 230), "{dog:?}");
        assert!(dog[..16].iter().all(|&r| r < 20), "{dog:?}");
    }

    #[test]
    fn test_folder_and_grayscale_work_too() {
        let root = tempfile::tempdir().unwrap();
        write_tree(root.path(), "test");
        let data = load_image_folder(root.path(), Shape3::new(1, 6, 5)).unwrap();
        assert_eq!(data.test.shape(), Shape3::new(1, 6, 5));
        assert_eq!(data.test.len(), 2);
    }

    #[test]
    fn the_default_size_comes_through_load() {
        let root = tempfile::tempdir().unwrap();
        write_tree(root.path(), "val");
        let data = crate::load("folder", Some(root.path())).unwrap();
        assert_eq!(data.shape(), DEFAULT_FOLDER_SHAPE);
        assert_eq!(data.augmentation.crop_padding, 4);
    }

    #[test]
    fn an_unreadable_image_is_named() {
        let root = tempfile::tempdir().unwrap();
        write_tree(root.path(), "val");
        let bad = root.path().join("val").join("dog").join("broken.jpeg");
        std::fs::write(&bad, b"\xff\xd8\xff\xe0 this is not really a jpeg").unwrap();
        let err = load_image_folder(root.path(), DEFAULT_FOLDER_SHAPE).unwrap_err();
        assert!(matches!(err, DatasetError::ImageDecode { .. }), "{err:?}");
        assert!(err.to_string().contains("broken.jpeg"), "{err}");
        // The decoder's cause is in the message and not a source as well, so an error chain
        // (`dnal`'s `error: a: b: c`) says it once.
        assert!(std::error::Error::source(&err).is_none(), "{err:?}");
    }

    #[test]
    fn empty_folders_are_named() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("train")).unwrap();
        std::fs::create_dir_all(root.path().join("val")).unwrap();
        let err = load_image_folder(root.path(), DEFAULT_FOLDER_SHAPE).unwrap_err();
        assert!(matches!(err, DatasetError::EmptyFolder { .. }), "{err:?}");
        assert!(
            err.to_string().contains("train: holds no class folder"),
            "{err}"
        );

        write_tree(root.path(), "val");
        std::fs::create_dir_all(root.path().join("train").join("eel")).unwrap();
        std::fs::create_dir_all(root.path().join("val").join("eel")).unwrap();
        let err = load_image_folder(root.path(), DEFAULT_FOLDER_SHAPE).unwrap_err();
        assert!(matches!(err, DatasetError::EmptyFolder { .. }), "{err:?}");
        assert!(err.to_string().contains("eel: holds no .png"), "{err}");
    }

    #[test]
    fn class_folders_must_match_between_splits() {
        let root = tempfile::tempdir().unwrap();
        write_tree(root.path(), "val");
        save_solid(&root.path().join("val").join("eel").join("0.png"), 4, RED);
        let err = load_image_folder(root.path(), DEFAULT_FOLDER_SHAPE).unwrap_err();
        match &err {
            DatasetError::ClassMismatch {
                only_in_train,
                only_in_eval,
                ..
            } => {
                assert!(only_in_train.is_empty());
                assert_eq!(only_in_eval, &["eel"]);
            }
            other => panic!("expected ClassMismatch, got {other:?}"),
        }
    }

    #[test]
    fn missing_split_folders_and_bad_sizes_are_errors() {
        let root = tempfile::tempdir().unwrap();
        let err = load_image_folder(root.path(), DEFAULT_FOLDER_SHAPE).unwrap_err();
        assert!(matches!(err, DatasetError::MissingFile { .. }), "{err:?}");
        std::fs::create_dir_all(root.path().join("train").join("a")).unwrap();
        let err = load_image_folder(root.path(), DEFAULT_FOLDER_SHAPE).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("val") && text.contains("test"), "{text}");
        let err = load_image_folder(root.path(), Shape3::new(2, 8, 8)).unwrap_err();
        assert!(matches!(err, DatasetError::InvalidValue { .. }), "{err:?}");
    }
}
