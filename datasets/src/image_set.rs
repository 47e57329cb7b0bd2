//! In-memory image sets: u8 pixels plus labels.
//!
//! Pixels stay u8 until a batch is built: a Fashion-MNIST training set is 47 MB as u8 and would
//! be 188 MB as f32, and normalisation through a 256-entry table per channel costs less than
//! reading the larger buffer would.

use crate::error::DatasetError;

/// The shape of one image: channels, height, width (CHW order, as burn's conv layers expect).
/// The device kernels' own type: one definition of a shape from the data to the board.
pub use dnal_kernels::Shape3;

/// Images as u8 pixels, CHW per image, images back to back, with one label per image.
///
/// Built only through [`ImageSet::new`], which checks that the pixel buffer, labels and class
/// names agree, so every accessor can index without further checks.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    shape: Shape3,
    pixels: Vec<u8>,
    labels: Vec<u32>,
    class_names: Vec<String>,
}

impl ImageSet {
    /// Checks that `pixels` holds exactly `labels.len()` images of `shape`, that the shape and the
    /// class list are not empty, and that every label is below `class_names.len()`.
    pub fn new(
        shape: Shape3,
        pixels: Vec<u8>,
        labels: Vec<u32>,
        class_names: Vec<String>,
    ) -> Result<Self, DatasetError> {
        let invalid = |problem: String, fix: &str| DatasetError::InvalidValue {
            what: "image set",
            problem,
            fix: fix.to_string(),
        };
        if shape.is_empty() {
            return Err(invalid(
                format!("image shape {shape} has a zero dimension"),
                "give every image at least one channel, row and column",
            ));
        }
        if class_names.is_empty() {
            return Err(invalid("no class names".into(), "pass one name per class"));
        }
        let expected = labels.len().checked_mul(shape.len());
        if expected != Some(pixels.len()) {
            return Err(invalid(
                format!(
                    "{} labels of {shape} images need {} pixel bytes but {} were given",
                    labels.len(),
                    expected.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string()),
                    pixels.len()
                ),
                "pass one label per image and exactly channels*height*width bytes per image",
            ));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &label)| label as usize >= class_names.len())
        {
            return Err(invalid(
                format!(
                    "label {label} at index {index} is out of range for {} classes",
                    class_names.len()
                ),
                "labels must be class indices below the number of class names",
            ));
        }
        Ok(ImageSet {
            shape,
            pixels,
            labels,
            class_names,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn shape(&self) -> Shape3 {
        self.shape
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The pixels of image `i` (CHW, `shape().len()` bytes).
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The label of image `i`.
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing.
    pub fn label(&self, i: usize) -> u32 {
        self.labels[i]
    }

    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// All pixels, images back to back.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// How many images each class has, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// Keeps the first `n` images (all of them when `n >= len()`).
    ///
    /// The first images rather than a random subset, so that `--train-limit 1000` means the same
    /// images in every run and in every tool. The IDX and CIFAR-10 files are already in random
    /// class order, and the synthetic set cycles through classes, so a prefix stays close to
    /// balanced; image folders are stored class by class, so a prefix of one is not balanced.
    pub fn truncate(mut self, n: usize) -> Self {
        if n < self.len() {
            self.labels.truncate(n);
            self.pixels.truncate(n * self.shape.len());
            self.labels.shrink_to_fit();
            self.pixels.shrink_to_fit();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class{i}")).collect()
    }

    #[test]
    fn accessors_index_images_back_to_back() {
        let shape = Shape3::new(1, 2, 2);
        let set = ImageSet::new(shape, (0..12).collect(), vec![0, 2, 1], names(3)).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.image(1), &[4, 5, 6, 7]);
        assert_eq!(set.label(1), 2);
        assert_eq!(set.class_counts(), vec![1, 1, 1]);
        let first = set.truncate(2);
        assert_eq!(first.len(), 2);
        assert_eq!(first.pixels(), &(0..8).collect::<Vec<u8>>()[..]);
        assert_eq!(first.clone().truncate(10), first);
    }

    #[test]
    fn new_rejects_inconsistent_parts() {
        let shape = Shape3::new(1, 2, 2);
        let short = ImageSet::new(shape, vec![0; 7], vec![0, 1], names(2)).unwrap_err();
        assert!(
            short.to_string().contains("need 8 pixel bytes but 7"),
            "{short}"
        );
        let label = ImageSet::new(shape, vec![0; 8], vec![0, 2], names(2)).unwrap_err();
        assert!(label.to_string().contains("label 2 at index 1"), "{label}");
        assert!(ImageSet::new(Shape3::new(0, 2, 2), vec![], vec![], names(2)).is_err());
        assert!(ImageSet::new(shape, vec![], vec![], vec![]).is_err());
    }
}
