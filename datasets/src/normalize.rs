//! Per-channel normalisation: `x = (p / 255 - mean[c]) / std[c]`.
//!
//! The statistics come from the training set only (never the test set), and are kept as plain
//! numbers so that the exporter can write them next to the weights: the board must normalise its
//! camera pixels exactly as training did.

use crate::image_set::{ImageSet, Shape3};

/// Per-channel mean and standard deviation of `pixel / 255`.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// A channel whose standard deviation is below this is treated as constant and divided by 1
/// instead, so a blank channel gives finite values rather than infinities.
const MIN_STD: f64 = 1e-6;

impl Normalization {
    /// Mean 0 and std 1 for every channel: values become `p / 255`.
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The exact per-channel mean and (population) standard deviation of `set`.
    ///
    /// Counts a 256-bin histogram per channel and reduces it in f64, so the result does not
    /// depend on summation order and costs one pass over the bytes. An empty set gives the
    /// identity normalisation.
    pub fn from_set(set: &ImageSet) -> Self {
        let shape = set.shape();
        let plane = shape.plane();
        let mut histograms = vec![[0u64; 256]; shape.channels];
        for image in set.pixels().chunks_exact(shape.len()) {
            for (histogram, channel) in histograms.iter_mut().zip(image.chunks_exact(plane)) {
                for &p in channel {
                    histogram[usize::from(p)] += 1;
                }
            }
        }
        let mut mean = Vec::with_capacity(shape.channels);
        let mut std = Vec::with_capacity(shape.channels);
        for histogram in &histograms {
            let count: u64 = histogram.iter().sum();
            if count == 0 {
                mean.push(0.0);
                std.push(1.0);
                continue;
            }
            let n = count as f64;
            let value = |p: usize| p as f64 / 255.0;
            let m = histogram
                .iter()
                .enumerate()
                .map(|(p, &c)| value(p) * c as f64)
                .sum::<f64>()
                / n;
            let variance = histogram
                .iter()
                .enumerate()
                .map(|(p, &c)| (value(p) - m).powi(2) * c as f64)
                .sum::<f64>()
                / n;
            let s = variance.sqrt();
            mean.push(m as f32);
            std.push(if s < MIN_STD { 1.0 } else { s as f32 });
        }
        Normalization { mean, std }
    }

    /// The normalised value of pixel `p` in channel `c`. Every other path (`apply`, the lookup
    /// table) computes exactly this expression, so they agree bit for bit.
    #[inline]
    pub fn value(&self, channel: usize, p: u8) -> f32 {
        (f32::from(p) / 255.0 - self.mean[channel]) / self.std[channel]
    }

    /// Normalises one or more images of `shape` (back to back) from `pixels` into `out`.
    ///
    /// # Panics
    /// If `out.len() != pixels.len()`, if `pixels.len()` is not a multiple of `shape.len()`, or
    /// if this normalisation has fewer channels than `shape`: all are mistakes in the calling
    /// code, not in data.
    pub fn apply(&self, shape: Shape3, pixels: &[u8], out: &mut [f32]) {
        check_lengths(shape, pixels, out, self.mean.len().min(self.std.len()));
        let plane = shape.plane();
        for (i, (src, dst)) in pixels
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(plane))
            .enumerate()
        {
            let channel = i % shape.channels;
            for (d, &p) in dst.iter_mut().zip(src) {
                *d = self.value(channel, p);
            }
        }
    }

    /// A 256-entry table per channel, for normalising many images quickly.
    pub fn table(&self) -> NormalizationTable {
        let channels = self.mean.len().min(self.std.len());
        let per_channel = (0..channels)
            .map(|c| std::array::from_fn(|p| self.value(c, p as u8)))
            .collect();
        NormalizationTable { per_channel }
    }
}

/// [`Normalization`] precomputed for every byte value: one table lookup per pixel instead of a
/// subtraction and a division. The batcher builds it once and uses it for every batch.
#[derive(Clone, Debug)]
pub struct NormalizationTable {
    per_channel: Vec<[f32; 256]>,
}

impl NormalizationTable {
    /// Same contract and same results as [`Normalization::apply`].
    ///
    /// # Panics
    /// As [`Normalization::apply`].
    pub fn apply(&self, shape: Shape3, pixels: &[u8], out: &mut [f32]) {
        check_lengths(shape, pixels, out, self.per_channel.len());
        let plane = shape.plane();
        for (i, (src, dst)) in pixels
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(plane))
            .enumerate()
        {
            let table = &self.per_channel[i % shape.channels];
            for (d, &p) in dst.iter_mut().zip(src) {
                *d = table[usize::from(p)];
            }
        }
    }

    /// The normalised value of byte 0 in `channel`: what zero padding becomes.
    pub fn zero_value(&self, channel: usize) -> f32 {
        self.per_channel[channel][0]
    }
}

fn check_lengths(shape: Shape3, pixels: &[u8], out: &[f32], channels: usize) {
    assert_eq!(
        pixels.len(),
        out.len(),
        "normalisation: {} pixels in but room for {} values out",
        pixels.len(),
        out.len()
    );
    assert!(
        !shape.is_empty() && pixels.len().is_multiple_of(shape.len()),
        "normalisation: {} pixels are not whole images of shape {shape}",
        pixels.len()
    );
    assert!(
        channels >= shape.channels,
        "normalisation: statistics for {channels} channels but images of shape {shape}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_channel_set() -> ImageSet {
        // Channel 0 holds 0 and 255 (mean 0.5, std 0.5); channel 1 is constant 51 (0.2).
        let shape = Shape3::new(2, 1, 2);
        let pixels = vec![0, 255, 51, 51, 255, 0, 51, 51];
        ImageSet::new(shape, pixels, vec![0, 1], vec!["a".into(), "b".into()]).unwrap()
    }

    #[test]
    fn from_set_computes_mean_and_std_per_channel() {
        let norm = Normalization::from_set(&two_channel_set());
        assert!((norm.mean[0] - 0.5).abs() < 1e-6);
        assert!((norm.std[0] - 0.5).abs() < 1e-6);
        assert!((norm.mean[1] - 0.2).abs() < 1e-6);
        assert_eq!(norm.std[1], 1.0, "a constant channel is divided by 1");
    }

    #[test]
    fn apply_and_table_agree_with_the_formula() {
        let set = two_channel_set();
        let norm = Normalization::from_set(&set);
        let mut direct = vec![0.0; set.pixels().len()];
        let mut tabled = vec![0.0; set.pixels().len()];
        norm.apply(set.shape(), set.pixels(), &mut direct);
        norm.table().apply(set.shape(), set.pixels(), &mut tabled);
        assert_eq!(direct, tabled);
        // (0/255 - 0.5)/0.5 = -1, (255/255 - 0.5)/0.5 = 1, 51/255 - 0.2 = 0.
        let expected = [-1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0];
        for (got, want) in direct.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{direct:?}");
        }
        assert_eq!(norm.table().zero_value(0), -1.0);
    }

    #[test]
    fn identity_scales_to_unit_range() {
        let norm = Normalization::identity(1);
        let mut out = [0.0; 2];
        norm.apply(Shape3::new(1, 1, 2), &[0, 255], &mut out);
        assert_eq!(out, [0.0, 1.0]);
    }

    #[test]
    #[should_panic(expected = "not whole images")]
    fn apply_rejects_partial_images() {
        let mut out = [0.0; 3];
        Normalization::identity(1).apply(Shape3::new(1, 1, 2), &[0, 1, 2], &mut out);
    }
}
