//! A generated, seeded dataset that small CNNs learn quickly: for tests, CI and demos where no
//! real data is installed, and for checking a training loop end to end in seconds.
//!
//! Each class has its own texture (a random 3x3 binary tile, repeated over a square patch of a
//! third of the image side) placed at its own spot on a grid, moved by a pixel either way, over
//! a noisy background; with several channels each class also has its own tint. Both cues are
//! there on purpose: the texture repeats the same local pattern many times, which convolutions
//! followed by global pooling pick up reliably (an earlier version with one random glyph per
//! class left a small pooled CNN near 90%, depending on its initialisation); the position
//! serves networks that end in a dense layer.

use crate::augment::Augmentation;
use crate::dataset::Dataset;
use crate::error::DatasetError;
use crate::image_set::{ImageSet, Shape3};
use crate::normalize::Normalization;
use crate::seeded_rng::SeededRng;

/// Background pixels are uniform in `0..BACKGROUND_NOISE`.
const BACKGROUND_NOISE: u64 = 64;
/// Pattern pixels are `PATTERN_BASE` plus uniform noise in `0..PATTERN_NOISE` (before the tint).
const PATTERN_BASE: u64 = 160;
const PATTERN_NOISE: u64 = 96;
/// Most pixels a patch is moved from its grid spot in each direction.
const JITTER: usize = 1;
/// Stream labels for [`SeededRng::for_stream`].
const LOOK_STREAM: u64 = 1;
const SPLIT_STREAM: u64 = 2;

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyntheticConfig {
    /// Training images.
    pub train: usize,
    /// Test images.
    pub test: usize,
    pub classes: usize,
    pub shape: Shape3,
    /// Everything (glyphs, tints, noise, positions) follows from this.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    /// 1x28x28, 10 classes, 2048 training and 512 test images: Fashion-MNIST's shape, so a
    /// model built for one runs on the other.
    fn default() -> Self {
        SyntheticConfig {
            train: 2048,
            test: 512,
            classes: 10,
            shape: Shape3::new(1, 28, 28),
            seed: 0,
        }
    }
}

impl SyntheticConfig {
    /// Generates the dataset. Image `i` of either split has label `i % classes`, so classes are
    /// balanced (to within one image) and stay so under [`ImageSet::truncate`].
    pub fn generate(&self) -> Result<Dataset, DatasetError> {
        self.check()?;
        let classes = ClassLooks::draw_all(self);
        let train = self.generate_split(&classes, 0, self.train)?;
        let test = self.generate_split(&classes, 1, self.test)?;
        let normalization = Normalization::from_set(&train);
        Ok(Dataset {
            name: "synthetic".to_string(),
            train,
            test,
            normalization,
            augmentation: Augmentation::none(),
        })
    }

    fn check(&self) -> Result<(), DatasetError> {
        let invalid = |problem: String, fix: &str| {
            Err(DatasetError::InvalidValue {
                what: "synthetic dataset config",
                problem,
                fix: fix.to_string(),
            })
        };
        if self.classes == 0 {
            return invalid("0 classes".into(), "ask for at least one class");
        }
        if self.classes > u32::MAX as usize {
            return invalid(format!("{} classes", self.classes), "ask for fewer classes");
        }
        if self.shape.is_empty() {
            return invalid(
                format!("image shape {} has a zero dimension", self.shape),
                "give every image at least one channel, row and column",
            );
        }
        let pixels = self
            .train
            .checked_add(self.test)
            .and_then(|n| n.checked_mul(self.shape.len()));
        if pixels.is_none_or(|n| n > isize::MAX as usize) {
            return invalid(
                format!("{} + {} images of {}", self.train, self.test, self.shape),
                "ask for fewer or smaller images",
            );
        }
        Ok(())
    }

    /// The patch side: a third of the shorter image side (9 pixels on 28x28), at least one
    /// tile when the image has room for that.
    fn patch_size(&self, tile: usize) -> usize {
        let side = self.shape.height.min(self.shape.width);
        (side / 3).max(tile).min(side)
    }

    fn generate_split(
        &self,
        classes: &ClassLooks,
        split: u64,
        count: usize,
    ) -> Result<ImageSet, DatasetError> {
        let shape = self.shape;
        let (patch, tile) = (classes.patch, classes.tile);
        let mut pixels = vec![0u8; count * shape.len()];
        let mut labels = Vec::with_capacity(count);
        let mut rng = SeededRng::for_stream(&[self.seed, SPLIT_STREAM, split]);
        for (i, image) in pixels.chunks_exact_mut(shape.len()).enumerate() {
            let label = i % self.classes;
            labels.push(label as u32);
            let look = &classes.looks[label];
            let top = jittered(look.top, shape.height - patch, &mut rng);
            let left = jittered(look.left, shape.width - patch, &mut rng);
            for (c, plane) in image.chunks_exact_mut(shape.plane()).enumerate() {
                for p in plane.iter_mut() {
                    *p = rng.below(BACKGROUND_NOISE) as u8;
                }
                for py in 0..patch {
                    let row = &mut plane[(top + py) * shape.width + left..][..patch];
                    for (px, p) in row.iter_mut().enumerate() {
                        if look.tile[(py % tile) * tile + px % tile] {
                            let value = (PATTERN_BASE + rng.below(PATTERN_NOISE)) as f32;
                            *p = (value * look.tint[c]).round().clamp(0.0, 255.0) as u8;
                        }
                    }
                }
            }
        }
        let names = (0..self.classes).map(|k| format!("class {k}")).collect();
        ImageSet::new(shape, pixels, labels, names)
    }
}

/// The looks of all classes, and the sizes they share.
struct ClassLooks {
    /// Side of the square tile that repeats inside a patch.
    tile: usize,
    /// Side of the square patch.
    patch: usize,
    looks: Vec<ClassLook>,
}

/// What makes a class look like itself.
struct ClassLook {
    /// `tile^2` on/off pixels, row by row, repeated over the patch.
    tile: Vec<bool>,
    /// Grid spot of the patch's top-left corner.
    top: usize,
    left: usize,
    /// Brightness factor per channel, 0.6..=1.0 (all 1.0 for one channel).
    tint: Vec<f32>,
}

impl ClassLooks {
    fn draw_all(config: &SyntheticConfig) -> ClassLooks {
        let shape = config.shape;
        let side = shape.height.min(shape.width);
        // 3x3 tiles give about 50 patterns that differ under every shift; beyond 20 classes,
        // 4x4 tiles give thousands.
        let tile = if config.classes <= 20 { 3 } else { 4 }.min(side);
        let patch = config.patch_size(tile);
        let grid = (1..).find(|g| g * g >= config.classes).unwrap_or(1);
        let spot = |cell: usize, room: usize| {
            if grid == 1 {
                room / 2
            } else {
                cell * room / (grid - 1)
            }
        };
        let mut rng = SeededRng::for_stream(&[config.seed, LOOK_STREAM]);
        let mut looks: Vec<ClassLook> = Vec::with_capacity(config.classes);
        for k in 0..config.classes {
            // A tile with between a third and two thirds of its pixels on, which no shift of
            // an earlier class's tile equals (a shifted tile is the same texture). Tried a
            // bounded number of times: tiny tiles cannot all differ, and position still tells.
            let mut tile_bits = Vec::new();
            for _attempt in 0..256 {
                tile_bits = (0..tile * tile).map(|_| rng.coin()).collect();
                let on = tile_bits.iter().filter(|&&bit| bit).count();
                let balanced = 3 * on >= tile * tile && 3 * on <= 2 * tile * tile;
                let fresh = looks
                    .iter()
                    .all(|other| !same_texture(&other.tile, &tile_bits, tile));
                if balanced && fresh {
                    break;
                }
            }
            let tint = if shape.channels == 1 {
                vec![1.0]
            } else {
                (0..shape.channels)
                    .map(|_| 0.6 + 0.4 * rng.below(101) as f32 / 100.0)
                    .collect()
            };
            looks.push(ClassLook {
                tile: tile_bits,
                top: spot(k / grid, shape.height - patch),
                left: spot(k % grid, shape.width - patch),
                tint,
            });
        }
        ClassLooks { tile, patch, looks }
    }
}

/// Whether tile `b` is tile `a` shifted (cyclically) by some rows and columns.
fn same_texture(a: &[bool], b: &[bool], tile: usize) -> bool {
    (0..tile).any(|dy| {
        (0..tile).any(|dx| {
            (0..tile * tile).all(|i| {
                let (y, x) = (i / tile, i % tile);
                a[i] == b[((y + dy) % tile) * tile + (x + dx) % tile]
            })
        })
    })
}

/// `spot` moved by up to [`JITTER`] pixels either way, kept within `0..=room`.
fn jittered(spot: usize, room: usize, rng: &mut SeededRng) -> usize {
    let shift = rng.index(2 * JITTER + 1);
    (spot + shift).saturating_sub(JITTER).min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> SyntheticConfig {
        SyntheticConfig {
            train: 300,
            test: 100,
            classes: 10,
            shape: Shape3::new(1, 28, 28),
            seed,
        }
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = small(1).generate().unwrap();
        assert_eq!(a, small(1).generate().unwrap());
        let b = small(2).generate().unwrap();
        assert_ne!(a.train.pixels(), b.train.pixels());
        assert_ne!(
            a.train.pixels()[..784],
            a.test.pixels()[..784],
            "splits differ"
        );
    }

    #[test]
    fn classes_are_balanced() {
        let data = SyntheticConfig::default().generate().unwrap();
        assert_eq!(
            data.train.class_counts(),
            vec![2048 / 10 + 1; 8]
                .into_iter()
                .chain([204, 204])
                .collect::<Vec<_>>()
        );
        assert_eq!(data.test.class_counts().iter().min(), Some(&51));
        assert_eq!(data.test.class_counts().iter().max(), Some(&52));
        assert_eq!(
            data.train.clone().truncate(100).class_counts(),
            vec![10; 10]
        );
    }

    /// Nearest class mean on raw pixels, a far weaker model than a CNN, already separates the
    /// classes: the data is learnable, not noise.
    #[test]
    fn nearest_class_mean_classifies_the_test_set() {
        for shape in [Shape3::new(1, 28, 28), Shape3::new(3, 32, 32)] {
            let data = SyntheticConfig { shape, ..small(3) }.generate().unwrap();
            let n = shape.len();
            let mut means = vec![vec![0f32; n]; 10];
            let counts = data.train.class_counts();
            for i in 0..data.train.len() {
                let label = data.train.label(i) as usize;
                for (m, &p) in means[label].iter_mut().zip(data.train.image(i)) {
                    *m += f32::from(p) / counts[label] as f32;
                }
            }
            let correct = (0..data.test.len())
                .filter(|&i| {
                    let distance = |mean: &Vec<f32>| -> f32 {
                        mean.iter()
                            .zip(data.test.image(i))
                            .map(|(m, &p)| (m - f32::from(p)).powi(2))
                            .sum()
                    };
                    let best = (0..10)
                        .min_by(|&a, &b| distance(&means[a]).total_cmp(&distance(&means[b])))
                        .unwrap();
                    best == data.test.label(i) as usize
                })
                .count();
            assert!(
                correct * 100 >= 95 * data.test.len(),
                "{shape}: {correct}/100"
            );
        }
    }

    /// The promise of this module: a small CNN that ends in global average pooling (so it can
    /// only use the glyphs, not their positions) passes 90% test accuracy within 300 steps.
    #[test]
    fn a_small_cnn_learns_it_in_a_few_hundred_steps() {
        use crate::Batcher;
        use burn::module::Module;
        use burn::nn::conv::{Conv2d, Conv2dConfig};
        use burn::nn::loss::CrossEntropyLossConfig;
        use burn::nn::pool::{
            AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig,
        };
        use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
        use burn::optim::{AdamConfig, GradientsParams};
        use burn::tensor::activation::relu;
        use burn::tensor::{Device, Tensor};

        #[derive(Module, Debug)]
        struct TinyCnn {
            conv1: Conv2d,
            pool: MaxPool2d,
            conv2: Conv2d,
            global: AdaptiveAvgPool2d,
            classify: Linear,
        }

        impl TinyCnn {
            fn forward(&self, x: Tensor<4>) -> Tensor<2> {
                let x = self.pool.forward(relu(self.conv1.forward(x)));
                let x = self.global.forward(relu(self.conv2.forward(x)));
                self.classify.forward(x.flatten(1, 3))
            }
        }

        let device = Device::flex().autodiff();
        let conv = |from, to| {
            Conv2dConfig::new([from, to], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(&device)
        };
        let mut model = TinyCnn {
            conv1: conv(1, 16),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            conv2: conv(16, 32),
            global: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            classify: LinearConfig::new(32, 10).init(&device),
        };
        let mut optimizer = AdamConfig::new().init();
        let loss = CrossEntropyLossConfig::new().init(&device);
        let data = SyntheticConfig::default().generate().unwrap();
        let train = Batcher::new(data.train, data.normalization.clone(), 32).with_shuffle(0);
        let mut steps = 0;
        for epoch in 0.. {
            for batch in train.epoch(epoch) {
                let batch = batch.into_tensors(&device);
                let cost = loss.forward(model.forward(batch.images), batch.targets);
                let grads = GradientsParams::from_grads(cost.backward(), &model);
                model = optimizer.step(3e-3, model, grads);
                steps += 1;
            }
            if steps >= 300 {
                break;
            }
        }
        let test = Batcher::new(data.test, data.normalization, 256);
        let mut correct = 0;
        for batch in test.epoch(0) {
            let labels = batch.labels.clone();
            let predicted = model.forward(batch.into_tensors(&device).images).argmax(1);
            let predicted: Vec<i64> = predicted
                .into_data()
                .convert::<i64>()
                .try_into_vec()
                .unwrap();
            correct += predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
        }
        assert!(
            correct * 100 > 90 * 512,
            "{correct}/512 after {steps} steps"
        );
    }

    #[test]
    fn odd_shapes_and_bad_configs() {
        let tiny = SyntheticConfig {
            shape: Shape3::new(2, 2, 5),
            classes: 7,
            ..small(0)
        };
        assert_eq!(tiny.generate().unwrap().train.shape(), Shape3::new(2, 2, 5));
        let one = SyntheticConfig {
            classes: 1,
            ..small(0)
        };
        assert_eq!(one.generate().unwrap().num_classes(), 1);
        for bad in [
            SyntheticConfig {
                classes: 0,
                ..small(0)
            },
            SyntheticConfig {
                shape: Shape3::new(1, 0, 4),
                ..small(0)
            },
            SyntheticConfig {
                train: usize::MAX,
                ..small(0)
            },
        ] {
            let err = bad.generate().unwrap_err();
            assert!(matches!(err, DatasetError::InvalidValue { .. }), "{err:?}");
        }
    }
}
