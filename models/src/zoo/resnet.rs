//! The CIFAR ResNet family (He et al. 2016, section 4.2): a 3x3 stem, three stages of basic
//! blocks with 16, 32 and 64 channels, global average pooling and a linear classifier;
//! ResNet-(6n+2) has n blocks per stage.
//!
//! Where a stage changes width or resolution the shortcut is a 1x1 conv + BN (option B),
//! not the zero padding of option A: every residual add then joins channels of one coupled
//! group, whose gate every conv writing the stage shares. The paper zero-pads missing channels
//! instead; coupled gates keep the pruned network dense and exact.

use crate::spec::{Activation, NetSpec, Op, Shape3, SpecBuilder};

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
            let shortcut = if stride != 1 || width != planes {
                b.conv(
                    format!("{prefix}.shortcut"),
                    x,
                    planes,
                    1,
                    stride,
                    Activation::None,
                )
            } else {
                x
            };
            x = b.push(
                format!("{prefix}.add"),
                Op::Add {
                    activation: Activation::Relu,
                },
                vec![shortcut, h],
            );
            width = planes;
        }
    }
    let x = b.push("gap", Op::GlobalAvgPool, vec![x]);
    b.classifier(x);
    b.finish()
}
