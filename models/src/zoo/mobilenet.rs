//! MobileNetV2 (Sandler et al. 2018) in its CIFAR layout: inverted residual blocks of a 1x1
//! expansion, a 3x3 depthwise conv and a 1x1 linear projection, with a residual add where the
//! block keeps its shape. For 32x32 inputs (and 28x28) the stem and the second stage keep
//! stride 1, as the usual CIFAR ports do, so three stride-2 stages take 32x32 to 4x4.
//!
//! Channel groups do the pruning's work: the expansion starts a group that the depthwise
//! conv keeps (one gate over the expanded channels, sliced together with the depthwise
//! filters and the projection's inputs), and the projections of one stage, joined by
//! residual adds, are one coupled group.

use crate::spec::{Activation, NetSpec, Op, Shape3, SpecBuilder};

/// The width multipliers [`mobilenet_v2`] takes.
pub const WIDTHS: std::ops::RangeInclusive<f64> = 0.35..=1.4;

/// The blocks: expansion t, output channels c, repeats n, first stride s (the paper's table
/// 2, with the CIFAR stride 1 in the second row).
const BLOCKS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// `channels * width` rounded to the nearest multiple of 8, never below 8 nor 10% under
/// the exact product (the reference implementation's `make_divisible`).
pub fn scaled_channels(channels: usize, width: f64) -> usize {
    let exact = channels as f64 * width;
    let mut rounded = (((exact + 4.0) / 8.0).floor() as usize * 8).max(8);
    if (rounded as f64) < 0.9 * exact {
        rounded += 8;
    }
    rounded
}

/// One mobile inverted bottleneck reading value `x` (`channels` wide): a 1x1 expansion (none
/// at expansion 1), a depthwise `kernel` x `kernel` conv and a 1x1 linear projection to `out`
/// channels; the projection's value.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mbconv(
    b: &mut SpecBuilder,
    prefix: &str,
    x: usize,
    channels: usize,
    out: usize,
    kernel: usize,
    expansion: usize,
    stride: usize,
) -> usize {
    let hidden = channels * expansion;
    let expanded = if expansion == 1 {
        x
    } else {
        b.conv(
            format!("{prefix}.expand"),
            x,
            hidden,
            1,
            1,
            Activation::Relu6,
        )
    };
    let filtered = b.push(
        format!("{prefix}.depthwise"),
        Op::Conv {
            out_channels: hidden,
            kernel,
            stride,
            padding: kernel / 2,
            depthwise: true,
            activation: Activation::Relu6,
        },
        vec![expanded],
    );
    b.conv(
        format!("{prefix}.project"),
        filtered,
        out,
        1,
        1,
        Activation::None,
    )
}

/// MobileNetV2 at width multiplier `width` (1.0: 2.2M parameters).
pub fn mobilenet_v2(name: &str, width: f64, input: Shape3, num_classes: usize) -> NetSpec {
    let mut b = SpecBuilder::new(name, input, num_classes);
    let stem = scaled_channels(32, width);
    let mut x = b.conv("stem", 0, stem, 3, 1, Activation::Relu6);
    let mut channels = stem;
    for (stage, &(expansion, c, repeats, first_stride)) in BLOCKS.iter().enumerate() {
        let out = scaled_channels(c, width);
        for block in 0..repeats {
            let stride = if block == 0 { first_stride } else { 1 };
            let prefix = format!("s{}b{}", stage + 1, block + 1);
            let projected = mbconv(&mut b, &prefix, x, channels, out, 3, expansion, stride);
            x = if stride == 1 && channels == out {
                b.push(
                    format!("{prefix}.add"),
                    Op::Add {
                        activation: Activation::None,
                    },
                    vec![x, projected],
                )
            } else {
                projected
            };
            channels = out;
        }
    }
    mobile_head(b, x, width)
}

/// The end of a mobile network after its last block (value `x`): a 1x1 conv to 1280 channels
/// (kept at 1280 below width 1, as the paper does), the global pool and the classifier.
pub(crate) fn mobile_head(mut b: SpecBuilder, x: usize, width: f64) -> NetSpec {
    let last = scaled_channels(1280, width.max(1.0));
    let x = b.conv("last", x, last, 1, 1, Activation::Relu6);
    let x = b.push("gap", Op::GlobalAvgPool, vec![x]);
    b.classifier(x);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_round_to_multiples_of_8_as_the_reference_does() {
        assert_eq!(scaled_channels(32, 1.0), 32);
        assert_eq!(scaled_channels(32, 0.35), 16);
        assert_eq!(scaled_channels(16, 0.35), 8);
        assert_eq!(scaled_channels(24, 0.5), 16);
        assert_eq!(scaled_channels(320, 1.4), 448);
        assert_eq!(scaled_channels(1280, 1.0), 1280);
    }
}
