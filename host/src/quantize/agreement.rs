//! How an int8 network's answers compare with its f32 network's, image by image.
//!
//! Two top-1 figures on the same test images differ by the images one network gets right and
//! the other wrong; the images both get right or both wrong cancel. So the noise of the
//! difference comes from those discordant images alone, and is far smaller than the noise of
//! either top-1 (about 0.27 pp at 92% on 10,000 images). [`Agreement`] counts them and gives
//! the paired standard error, which says whether a change of a tenth of a point is there.

use serde::{Deserialize, Serialize};

/// The int8 network against the f32 network on the same test images.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// Test images compared.
    pub images: usize,
    /// Images on which both networks' best class is the same.
    pub same_class: usize,
    /// Images the f32 network classifies right and the int8 network wrong.
    pub lost: usize,
    /// Images the int8 network classifies right and the f32 network wrong.
    pub gained: usize,
    /// Standard error of the top-1 change (int8 - f32), in percentage points: of the mean of
    /// the per-image differences (+1 gained, -1 lost, 0 otherwise).
    pub change_se_pp: f64,
}

impl Agreement {
    /// Compares the best classes of both networks with the labels, image by image.
    ///
    /// # Panics
    /// If the three slices differ in length.
    pub fn of(f32_classes: &[u32], int8_classes: &[u32], labels: &[u32]) -> Self {
        assert_eq!(f32_classes.len(), labels.len(), "one f32 class per label");
        assert_eq!(int8_classes.len(), labels.len(), "one int8 class per label");
        let (mut same_class, mut lost, mut gained) = (0, 0, 0);
        for ((&a, &b), &label) in f32_classes.iter().zip(int8_classes).zip(labels) {
            same_class += usize::from(a == b);
            lost += usize::from(a == label && b != label);
            gained += usize::from(b == label && a != label);
        }
        let images = labels.len();
        let n = images.max(1) as f64;
        // The differences d take +1 (gained), -1 (lost) or 0: E[d^2] = (gained + lost) / n.
        let mean = (gained as f64 - lost as f64) / n;
        let variance = (gained + lost) as f64 / n - mean * mean;
        Self {
            images,
            same_class,
            lost,
            gained,
            change_se_pp: 100.0 * (variance.max(0.0) / n).sqrt(),
        }
    }

    /// Fraction of the images on which both networks answer the same.
    pub fn fraction_same(&self) -> f64 {
        self.same_class as f64 / self.images.max(1) as f64
    }

    /// One line for people: how often the networks agree, and how sure the change is.
    pub fn describe(&self) -> String {
        format!(
            "int8 answers as f32 on {:.2}% of the images; right where f32 was wrong on {}, \
             wrong where f32 was right on {} (the top-1 change's paired standard error: \
             {:.2} pp)",
            100.0 * self.fraction_same(),
            self.gained,
            self.lost,
            self.change_se_pp
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_discordant_images_and_their_standard_error() {
        // 10 images, label = index % 3. f32 right on 0..8; int8 right on 2..10, and on
        // image 0 and 1 it answers another class.
        let labels: Vec<u32> = (0..10).map(|i| i % 3).collect();
        let f32_classes: Vec<u32> = (0..10)
            .map(|i| if i < 8 { i % 3 } else { (i + 1) % 3 })
            .collect();
        let int8_classes: Vec<u32> = (0..10)
            .map(|i| if i >= 2 { i % 3 } else { (i + 2) % 3 })
            .collect();
        let a = Agreement::of(&f32_classes, &int8_classes, &labels);
        assert_eq!((a.images, a.lost, a.gained), (10, 2, 2));
        assert_eq!(a.same_class, 6);
        assert!((a.fraction_same() - 0.6).abs() < 1e-12);
        // d = +-1 on 4 of 10 images, mean 0: variance 0.4, SE sqrt(0.04) = 0.2 = 20 pp.
        assert!((a.change_se_pp - 20.0).abs() < 1e-9, "{}", a.change_se_pp);
    }

    #[test]
    fn identical_answers_have_no_noise() {
        let labels = [0, 1, 2, 1];
        let classes = [0, 2, 2, 1];
        let a = Agreement::of(&classes, &classes, &labels);
        assert_eq!((a.same_class, a.lost, a.gained), (4, 0, 0));
        assert_eq!(a.change_se_pp, 0.0);
    }

    #[test]
    fn a_one_sided_change_has_the_binomial_error() {
        // int8 loses 1 image of 100 and gains none: d = -1 once, mean -0.01, variance
        // 0.01 - 0.0001.
        let labels = vec![0u32; 100];
        let f32_classes = vec![0u32; 100];
        let mut int8_classes = vec![0u32; 100];
        int8_classes[7] = 1;
        let a = Agreement::of(&f32_classes, &int8_classes, &labels);
        assert_eq!((a.lost, a.gained, a.same_class), (1, 0, 99));
        let expected = 100.0 * ((0.01f64 - 0.0001) / 100.0).sqrt();
        assert!((a.change_se_pp - expected).abs() < 1e-12);
    }
}
