//! ResNets (He et al. 2016). The CIFAR family (section 4.2): a 3x3 stem, three stages of
//! basic blocks with 16, 32 and 64 channels, global average pooling and a linear classifier;
//! ResNet-(6n+2) has n blocks per stage. And the bottleneck ResNet-50 of ImageNet, with its
//! stem fitted to the input's size.
//!
//! Where a stage changes width or resolution the shortcut is a 1x1 conv + BN (option B),
//! not the zero padding of option A: every residual add then joins channels of one coupled
//! group, whose gate every conv writing the stage shares. The paper zero-pads missing channels
//! instead; coupled gates keep the pruned network dense and exact.

use crate::spec::{Activation, NetSpec, Op, Shape3, SpecBuilder};

/// The end of residual block `prefix`: its last conv's output `h` (`out` channels) added to
/// the block's input `x` (`width` channels), then a ReLU. Where the block changes the shape
/// (`stride` or width), the shortcut is a 1x1 conv + BN.
fn join_residual(
    b: &mut SpecBuilder,
    prefix: &str,
    x: usize,
    width: usize,
    h: usize,
    out: usize,
    stride: usize,
) -> usize {
    let shortcut = if stride != 1 || width != out {
        b.conv(
            format!("{prefix}.shortcut"),
            x,
            out,
            1,
            stride,
            Activation::None,
        )
    } else {
        x
    };
    b.push(
        format!("{prefix}.add"),
        Op::Add {
            activation: Activation::Relu,
        },
        vec![shortcut, h],
    )
}

/// A CIFAR ResNet with `blocks` basic blocks per stage (3 -> ResNet-20, 9 -> ResNet-56).
pub fn cifar_resnet(name: &str, blocks: usize, input: Shape3, num_classes: usize) -> NetSpec {
    let mut b = SpecBuilder::new(name, input, num_classes);
    let mut x = b.conv("stem", 0, 16, 3, 1, Activation::Relu);
    let mut width = 16;
    for (stage, planes) in [16, 32, 64].into_iter().enumerate() {
        for block in 0..blocks {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let prefix = format!("s{}b{}", stage + 1, block + 1);
            let h = b.conv(
                format!("{prefix}.conv1"),
                x,
                planes,
                3,
                stride,
                Activation::Relu,
            );
            let h = b.conv(format!("{prefix}.conv2"), h, planes, 3, 1, Activation::None);
            x = join_residual(&mut b, &prefix, x, width, h, planes, stride);
            width = planes;
        }
    }
    let x = b.push("gap", Op::GlobalAvgPool, vec![x]);
    b.classifier(x);
    b.finish()
}

/// The bottleneck stages of ResNet-50: (blocks, inner channels); a block's output is 4x its
/// inner channels.
const RESNET50_STAGES: [(usize, usize); 4] = [(3, 64), (4, 128), (6, 256), (3, 512)];

/// Inputs at least this tall and wide get ResNet-50's ImageNet stem; smaller ones its CIFAR
/// adaptation.
pub const IMAGENET_STEM_FROM: usize = 128;

/// Bottleneck ResNet-50 (He et al. 2016, table 1), the paper's ImageNet network.
///
/// Each block is a 1x1 reduction, a 3x3 conv (carrying the stage's stride) and a 1x1
/// expansion to 4x, joined to its shortcut by an add; the shortcut is a 1x1 conv + BN where
/// the shape changes. The reduction's and the 3x3's channels have a gate each, and a stage's
/// block outputs, joined by the adds, are one coupled group.
///
/// The stem fits the input: from [`IMAGENET_STEM_FROM`] pixels the ImageNet stem (7x7 conv
/// with stride 2, then a 2x2 max pool with stride 2: the same 4x reduction as the original's
/// padded 3x3 pool, which our unpadded pools can't express), below it a 3x3 conv with stride
/// 1 and no pool, as CIFAR ports of ResNet-50 do, so 32x32 images reach the last stage at 4x4.
pub fn resnet50(name: &str, input: Shape3, num_classes: usize) -> NetSpec {
    let mut b = SpecBuilder::new(name, input, num_classes);
    let mut x = if input.height.min(input.width) >= IMAGENET_STEM_FROM {
        let stem = b.conv("stem", 0, 64, 7, 2, Activation::Relu);
        b.push(
            "stem.pool",
            Op::MaxPool {
                kernel: 2,
                stride: 2,
            },
            vec![stem],
        )
    } else {
        b.conv("stem", 0, 64, 3, 1, Activation::Relu)
    };
    let mut width = 64;
    for (stage, &(blocks, inner)) in RESNET50_STAGES.iter().enumerate() {
        let out = 4 * inner;
        for block in 0..blocks {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let prefix = format!("s{}b{}", stage + 1, block + 1);
            let h = b.conv(format!("{prefix}.conv1"), x, inner, 1, 1, Activation::Relu);
            let h = b.conv(
                format!("{prefix}.conv2"),
                h,
                inner,
                3,
                stride,
                Activation::Relu,
            );
            let h = b.conv(format!("{prefix}.conv3"), h, out, 1, 1, Activation::None);
            x = join_residual(&mut b, &prefix, x, width, h, out, stride);
            width = out;
        }
    }
    let x = b.push("gap", Op::GlobalAvgPool, vec![x]);
    b.classifier(x);
    b.finish()
}
