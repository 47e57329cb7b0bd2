//! Training-time augmentation: random crop from a zero-padded image, then random horizontal flip.
//!
//! These two are the standard recipe for the small-image benchmarks the DNAL paper reports
//! (pad-and-crop plus flip on CIFAR-10), and they work on u8 pixels before normalisation, so
//! padding is pixel value 0, as in the usual pipelines that pad the raw image.

use crate::error::DatasetError;
use crate::image_set::Shape3;
use crate::seeded_rng::SeededRng;

/// Which augmentations a training batch gets. Evaluation batches get none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Augmentation {
    /// Pad each side by this many zero pixels, then crop a random window of the original size
    /// (a shift of up to `crop_padding` pixels in each direction). 0 turns cropping off.
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2. Off for digits, where a mirrored 2 is not a 2.
    pub horizontal_flip: bool,
}

impl Augmentation {
    pub const fn none() -> Self {
        Augmentation {
            crop_padding: 0,
            horizontal_flip: false,
        }
    }

    /// Fashion-MNIST: clothes look the same mirrored; small shifts.
    pub const fn fashion_mnist() -> Self {
        Augmentation {
            crop_padding: 2,
            horizontal_flip: true,
        }
    }

    /// MNIST: small shifts, no flip (digits are not mirror-symmetric).
    pub const fn mnist() -> Self {
        Augmentation {
            crop_padding: 2,
            horizontal_flip: false,
        }
    }

    /// CIFAR-10: the standard pad 4, crop 32, flip.
    pub const fn cifar10() -> Self {
        Augmentation {
            crop_padding: 4,
            horizontal_flip: true,
        }
    }

    pub const fn is_none(&self) -> bool {
        self.crop_padding == 0 && !self.horizontal_flip
    }

    /// The augmentation a choice names for images of `shape`: `none`, `flip`, `shift` or
    /// `flip,shift` (in either order). A shift moves the image by up to 1/8 of its shorter
    /// side (at least one pixel), as CIFAR-10's pad-4 crop does at 32x32.
    pub fn from_choice(choice: &str, shape: Shape3) -> Result<Self, DatasetError> {
        let mut augmentation = Augmentation::none();
        if choice != "none" {
            for part in choice.split(',') {
                match part.trim() {
                    "flip" => augmentation.horizontal_flip = true,
                    "shift" => {
                        augmentation.crop_padding = (shape.height.min(shape.width) / 8).max(1)
                    }
                    _ => {
                        return Err(DatasetError::InvalidValue {
                            what: "augmentation",
                            problem: format!("{choice:?} is not one of the choices"),
                            fix: "use none, flip, shift or flip,shift".into(),
                        });
                    }
                }
            }
        }
        Ok(augmentation)
    }

    /// Draws one image's transform: crop origin uniform in `0..=2*padding` on each axis, then
    /// the flip coin. Always draws in this order so a seed gives the same transforms whatever
    /// the image content.
    pub(crate) fn draw(&self, rng: &mut SeededRng) -> ImageTransform {
        let span = 2 * self.crop_padding as u64 + 1;
        let top = rng.below(span) as usize;
        let left = rng.below(span) as usize;
        let flip = self.horizontal_flip && rng.coin();
        ImageTransform {
            padding: self.crop_padding,
            top,
            left,
            flip,
        }
    }
}

impl std::fmt::Display for Augmentation {
    /// `none`, `flip`, `shift N` or `flip, shift N` (N: pixels).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.horizontal_flip, self.crop_padding) {
            (false, 0) => f.write_str("none"),
            (true, 0) => f.write_str("flip"),
            (false, n) => write!(f, "shift {n}"),
            (true, n) => write!(f, "flip, shift {n}"),
        }
    }
}

impl Default for Augmentation {
    fn default() -> Self {
        Augmentation::none()
    }
}

/// One image's augmentation, already drawn: crop the window at (`top`, `left`) out of the image
/// padded by `padding` zeros on every side, then mirror it if `flip`.
///
/// `top == left == padding` and `flip == false` is the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageTransform {
    pub padding: usize,
    /// Row of the padded image where the crop starts (0..=2*padding).
    pub top: usize,
    /// Column of the padded image where the crop starts (0..=2*padding).
    pub left: usize,
    pub flip: bool,
}

impl ImageTransform {
    pub const fn identity() -> Self {
        ImageTransform {
            padding: 0,
            top: 0,
            left: 0,
            flip: false,
        }
    }

    /// Writes the transformed image of `shape` from `src` into `dst`. Output pixels that fall
    /// outside the source (in the padding) are 0. Origins beyond `2*padding` are allowed and
    /// just give more zeros.
    ///
    /// # Panics
    /// If `src` or `dst` is not exactly `shape.len()` bytes long (a mistake in the calling code).
    pub fn apply(&self, shape: Shape3, src: &[u8], dst: &mut [u8]) {
        assert!(
            src.len() == shape.len() && dst.len() == shape.len(),
            "augmentation: image of shape {shape} needs {} bytes, got {} in and {} out",
            shape.len(),
            src.len(),
            dst.len()
        );
        let (height, width) = (shape.height, shape.width);
        // Output (y, x) before the flip reads source (y + top - padding, x + left - padding).
        let row_shift = self.top as isize - self.padding as isize;
        let col_shift = self.left as isize - self.padding as isize;
        // Columns x whose source column is inside 0..width.
        let x_start = (-col_shift).clamp(0, width as isize) as usize;
        let x_end = (width as isize - col_shift).clamp(0, width as isize) as usize;
        let x_end = x_end.max(x_start);
        for (src_plane, dst_plane) in src
            .chunks_exact(shape.plane())
            .zip(dst.chunks_exact_mut(shape.plane()))
        {
            for (y, dst_row) in dst_plane.chunks_exact_mut(width).enumerate() {
                let source_row = y as isize + row_shift;
                if source_row < 0 || source_row >= height as isize || x_start == x_end {
                    dst_row.fill(0);
                    continue;
                }
                let row_start = source_row as usize * width;
                let src_row = &src_plane[row_start..row_start + width];
                let from = (x_start as isize + col_shift) as usize;
                dst_row[..x_start].fill(0);
                dst_row[x_start..x_end].copy_from_slice(&src_row[from..from + (x_end - x_start)]);
                dst_row[x_end..].fill(0);
                if self.flip {
                    dst_row.reverse();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn choices_name_the_augmentations() {
        let shape = Shape3::new(1, 28, 28);
        let both = Augmentation::from_choice("shift,flip", shape).unwrap();
        assert_eq!(
            both,
            Augmentation {
                crop_padding: 3,
                horizontal_flip: true
            }
        );
        assert_eq!(both.to_string(), "flip, shift 3");
        assert_eq!(
            Augmentation::from_choice("none", shape).unwrap(),
            Augmentation::none()
        );
        assert_eq!(
            Augmentation::from_choice("shift", Shape3::new(1, 4, 4))
                .unwrap()
                .crop_padding,
            1
        );
        let err = Augmentation::from_choice("rotate", shape)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rotate") && err.contains("flip,shift"),
            "{err}"
        );
    }

    use super::*;

    const SHAPE: Shape3 = Shape3::new(1, 3, 3);
    // 1 2 3
    // 4 5 6
    // 7 8 9
    const IMAGE: [u8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

    fn transformed(t: ImageTransform) -> [u8; 9] {
        let mut out = [0xAA; 9];
        t.apply(SHAPE, &IMAGE, &mut out);
        out
    }

    #[test]
    fn identity_and_centered_crop_copy_the_image() {
        assert_eq!(transformed(ImageTransform::identity()), IMAGE);
        let centered = ImageTransform {
            padding: 1,
            top: 1,
            left: 1,
            flip: false,
        };
        assert_eq!(transformed(centered), IMAGE);
    }

    #[test]
    fn flip_mirrors_each_row() {
        let flip = ImageTransform {
            flip: true,
            ..ImageTransform::identity()
        };
        assert_eq!(transformed(flip), [3, 2, 1, 6, 5, 4, 9, 8, 7]);
    }

    #[test]
    fn crop_at_the_top_left_corner_shifts_the_image_down_right() {
        let corner = ImageTransform {
            padding: 1,
            top: 0,
            left: 0,
            flip: false,
        };
        assert_eq!(transformed(corner), [0, 0, 0, 0, 1, 2, 0, 4, 5]);
    }

    #[test]
    fn crop_at_the_bottom_right_corner_shifts_the_image_up_left() {
        let corner = ImageTransform {
            padding: 1,
            top: 2,
            left: 2,
            flip: false,
        };
        assert_eq!(transformed(corner), [5, 6, 0, 8, 9, 0, 0, 0, 0]);
    }

    #[test]
    fn crop_then_flip() {
        let t = ImageTransform {
            padding: 1,
            top: 1,
            left: 0,
            flip: true,
        };
        // Crop shifts right: [0 1 2 / 0 4 5 / 0 7 8]; flip mirrors rows.
        assert_eq!(transformed(t), [2, 1, 0, 5, 4, 0, 8, 7, 0]);
    }

    #[test]
    fn origins_far_outside_give_zeros_not_panics() {
        let far = ImageTransform {
            padding: 1,
            top: 1,
            left: 9,
            flip: true,
        };
        assert_eq!(transformed(far), [0; 9]);
    }

    #[test]
    fn each_channel_gets_the_same_transform() {
        let shape = Shape3::new(2, 1, 2);
        let mut out = [0; 4];
        let t = ImageTransform {
            padding: 1,
            top: 1,
            left: 2,
            flip: false,
        };
        t.apply(shape, &[1, 2, 3, 4], &mut out);
        assert_eq!(out, [2, 0, 4, 0]);
    }

    #[test]
    fn draws_stay_within_the_padding() {
        let aug = Augmentation::cifar10();
        let mut rng = SeededRng::new(5);
        let mut flips = 0;
        for _ in 0..1000 {
            let t = aug.draw(&mut rng);
            assert!(t.top <= 8 && t.left <= 8 && t.padding == 4);
            flips += usize::from(t.flip);
        }
        assert!((400..600).contains(&flips), "{flips}");
        let never = Augmentation::mnist();
        assert!((0..100).all(|_| !never.draw(&mut rng).flip));
    }
}
