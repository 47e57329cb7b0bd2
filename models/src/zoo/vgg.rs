//! The VGG family: stacks of 3x3 Conv-BN-gate-ReLU blocks and max pools.

use crate::spec::{Activation, NetSpec, Op, Shape3, SpecBuilder};

/// One entry of a VGG configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VggItem {
    /// A 3x3 conv block with this many output channels.
    Conv(usize),
    /// A 2x2 max pool with stride 2.
    Pool,
}

use VggItem::{Conv as C, Pool as M};

/// The CIFAR variant of VGG16 used by the paper (after Li et al.): 13 conv layers, 4224
/// channels, BN after every conv, one linear classifier over the last 512 channels.
pub const VGG16_CIFAR: &[VggItem] = &[
    C(64),
    C(64),
    M,
    C(128),
    C(128),
    M,
    C(256),
    C(256),
    C(256),
    M,
    C(512),
    C(512),
    C(512),
    M,
    C(512),
    C(512),
    C(512),
    M,
];

/// The default model for 28x28 inputs: five conv layers (32-32-M-64-64-M-128), global
/// average pooling and a linear classifier; about 22M MACs and 100K parameters before
/// pruning.
pub const VGG_SMALL: &[VggItem] = &[C(32), C(32), M, C(64), C(64), M, C(128)];

/// A VGG network: the conv/pool stack, then global average pooling when the last feature map
/// is larger than 1x1, then a linear classifier.
pub fn vgg(name: &str, items: &[VggItem], input: Shape3, num_classes: usize) -> NetSpec {
    let mut b = SpecBuilder::new(name, input, num_classes);
    let mut x = 0;
    let (mut convs, mut pools) = (0, 0);
    let mut size = (input.height, input.width);
    for item in items {
        match item {
            VggItem::Conv(channels) => {
                convs += 1;
                x = b.conv(format!("conv{convs}"), x, *channels, 3, 1, Activation::Relu);
            }
            VggItem::Pool => {
                pools += 1;
                size = (size.0 / 2, size.1 / 2);
                x = b.push(
                    format!("pool{pools}"),
                    Op::MaxPool {
                        kernel: 2,
                        stride: 2,
                    },
                    vec![x],
                );
            }
        }
    }
    if size != (1, 1) {
        x = b.push("gap", Op::GlobalAvgPool, vec![x]);
    }
    b.classifier(x);
    b.finish()
}
