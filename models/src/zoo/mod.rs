//! Named model families.

pub mod mobilenet;
pub mod proxyless;
pub mod resnet;
pub mod vgg;

use crate::error::ModelError;
use crate::spec::{NetSpec, Shape3};

/// The models `dnal search --model` knows, with what each is for.
pub const MODELS: &[(&str, &str)] = &[
    (
        "vgg-small",
        "5 conv layers (32-32-M-64-64-M-128), GAP, linear; the default, for 28x28 inputs",
    ),
    (
        "vgg16",
        "the paper's CIFAR VGG16: 13 conv layers, 4224 channels; needs 32x32 inputs",
    ),
    ("resnet20", "CIFAR ResNet-20 (3 blocks per stage)"),
    ("resnet56", "CIFAR ResNet-56 (9 blocks per stage)"),
    (
        "resnet50",
        "bottleneck ResNet-50 (the paper's ImageNet network); 3x3 stem below 128x128 inputs, 7x7/2 + pool from 128",
    ),
    (
        "mobilenetv2",
        "MobileNetV2, CIFAR layout (inverted residuals, depthwise 3x3); --width 0.35 to 1.4",
    ),
    (
        "proxyless",
        "ProxylessNAS-space supernet: 6 parallel MBConv candidates (k3/5/7, e3/6) per layer, each gated; --width",
    ),
];

/// The models that take a width multiplier (`--width`).
pub const WIDTH_MODELS: &[&str] = &["mobilenetv2", "proxyless"];

/// The model `dnal search` uses when none is named.
pub const DEFAULT_MODEL: &str = "vgg-small";

/// The spec of a named model for inputs of `input` shape and `num_classes` classes.
pub fn model_spec(name: &str, input: Shape3, num_classes: usize) -> Result<NetSpec, ModelError> {
    model_spec_at_width(name, input, num_classes, None)
}

/// [`model_spec`] with a width multiplier for the models that take one ([`WIDTH_MODELS`];
/// `None`: 1.0).
pub fn model_spec_at_width(
    name: &str,
    input: Shape3,
    num_classes: usize,
    width: Option<f64>,
) -> Result<NetSpec, ModelError> {
    if let Some(w) = width {
        if !WIDTH_MODELS.contains(&name) {
            return Err(ModelError::Incompatible {
                model: name.to_string(),
                expected: "no width multiplier".into(),
                found: format!("width {w}"),
                fix: format!(
                    "leave the width out, or pick a model that takes one ({})",
                    WIDTH_MODELS.join(", ")
                ),
            });
        }
        if !mobilenet::WIDTHS.contains(&w) {
            return Err(ModelError::Incompatible {
                model: name.to_string(),
                expected: format!(
                    "a width from {} to {}",
                    mobilenet::WIDTHS.start(),
                    mobilenet::WIDTHS.end()
                ),
                found: format!("width {w}"),
                fix: "pick a width in that range (0.35 for a quick search on a CPU)".into(),
            });
        }
    }
    let spec = match name {
        "mobilenetv2" => mobilenet::mobilenet_v2(name, width.unwrap_or(1.0), input, num_classes),
        "proxyless" => {
            proxyless::proxyless_supernet(name, width.unwrap_or(1.0), input, num_classes)
        }
        "vgg-small" => vgg::vgg(name, vgg::VGG_SMALL, input, num_classes),
        "vgg16" => vgg::vgg(name, vgg::VGG16_CIFAR, input, num_classes),
        "resnet20" => resnet::cifar_resnet(name, 3, input, num_classes),
        "resnet56" => resnet::cifar_resnet(name, 9, input, num_classes),
        "resnet50" => resnet::resnet50(name, input, num_classes),
        _ => {
            return Err(ModelError::UnknownModel {
                name: name.to_string(),
                known: MODELS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    if let Err(e) = spec.value_shapes() {
        return Err(ModelError::Incompatible {
            model: name.to_string(),
            expected: "inputs its pooling stages can shrink".into(),
            found: format!(
                "{}x{}x{} images ({e})",
                input.channels, input.height, input.width
            ),
            fix: "pick a model for this input size (vgg-small for 28x28)".into(),
        });
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::ChannelGroups;
    use crate::net::GatePosition;
    use crate::net::NetPlan;

    #[test]
    fn vgg16_has_the_papers_4224_channels_and_flops() {
        let spec = model_spec("vgg16", Shape3::new(3, 32, 32), 10).unwrap();
        let plan = NetPlan::new(spec, GatePosition::AfterBn).unwrap();
        let channels: usize = plan
            .groups
            .group_of_gate
            .iter()
            .map(|&g| plan.groups.groups[g].channels)
            .sum();
        assert_eq!(channels, 4224);
        // 313.2M conv MACs + 5120 for the classifier (HRank and DNAL report 313.73M with a
        // two-layer classifier).
        let flops = plan.total_flops();
        assert!((313_000_000..314_000_000).contains(&flops), "{flops}");
    }

    #[test]
    fn resnet_stages_are_coupled_groups() {
        for (name, blocks) in [("resnet20", 3), ("resnet56", 9)] {
            let spec = model_spec(name, Shape3::new(3, 32, 32), 10).unwrap();
            let convs = spec
                .nodes
                .iter()
                .filter(|n| matches!(n.op, crate::spec::Op::Conv { .. }))
                .count();
            assert_eq!(convs, 1 + 3 * blocks * 2 + 2, "{name}");
            let shapes = spec.value_shapes().unwrap();
            let groups = ChannelGroups::analyse(&spec, &shapes).unwrap();
            // One gate per conv1 of every block, plus one per stage for the coupled stream.
            assert_eq!(groups.group_of_gate.len(), 3 * blocks + 3, "{name}");
        }
        let resnet56 = model_spec("resnet56", Shape3::new(3, 32, 32), 10).unwrap();
        let plan = NetPlan::new(resnet56, GatePosition::AfterBn).unwrap();
        // ~125.5M MACs and ~0.85M parameters, as usually reported for ResNet-56.
        assert!(
            (120_000_000..130_000_000).contains(&plan.total_flops()),
            "{}",
            plan.total_flops()
        );
        assert!(
            (800_000..900_000).contains(&plan.total_params()),
            "{}",
            plan.total_params()
        );
    }

    #[test]
    fn resnet50_has_its_imagenet_size_and_a_small_input_stem() {
        // On ImageNet (224x224, 1000 classes): 25.5M parameters and 4.1G MACs, as torchvision's.
        let spec = model_spec("resnet50", Shape3::new(3, 224, 224), 1000).unwrap();
        let plan = NetPlan::new(spec.clone(), GatePosition::AfterBn).unwrap();
        let (params, flops) = (plan.total_params(), plan.total_flops());
        assert!((25_400_000..25_700_000).contains(&params), "{params}");
        assert!((4_000_000_000..4_200_000_000).contains(&flops), "{flops}");
        // A gate for every block's conv1 and conv2, one per stage's coupled outputs, the stem.
        let shapes = spec.value_shapes().unwrap();
        let groups = ChannelGroups::analyse(&spec, &shapes).unwrap();
        assert_eq!(groups.group_of_gate.len(), 16 * 2 + 4 + 1);
        let value = |name: &str| 1 + spec.nodes.iter().position(|n| n.name == name).unwrap();
        let group = |name: &str| groups.value_group[value(name)];
        assert_eq!(group("s3b1.shortcut"), group("s3b6.conv3"));
        assert_ne!(group("s3b1.conv1"), group("s3b1.conv2"));
        assert!(shapes[value("stem.pool")].height == 56);

        // Below 128 pixels the 3x3 stem keeps the resolution: 32x32 ends at 4x4.
        let cifar = model_spec("resnet50", Shape3::new(3, 32, 32), 10).unwrap();
        assert!(cifar.nodes.iter().all(|n| n.name != "stem.pool"));
        let shapes = cifar.value_shapes().unwrap();
        let last = cifar
            .nodes
            .iter()
            .position(|n| n.name == "s4b3.add")
            .unwrap();
        assert_eq!((shapes[last + 1].height, shapes[last + 1].width), (4, 4));
    }

    #[test]
    fn mobilenetv2_has_its_size_and_gates_its_expansions_and_coupled_stages() {
        let spec = model_spec("mobilenetv2", Shape3::new(3, 32, 32), 10).unwrap();
        let plan = NetPlan::new(spec.clone(), GatePosition::AfterBn).unwrap();
        // The CIFAR MobileNetV2 at width 1: about 2.2M parameters and 94M MACs (the usual
        // CIFAR port reports 2.24M and 94M-98M, its classifier 1280 -> 10).
        let (params, flops) = (plan.total_params(), plan.total_flops());
        assert!((2_150_000..2_350_000).contains(&params), "{params}");
        assert!((85_000_000..100_000_000).contains(&flops), "{flops}");
        // 17 blocks; 16 expansions (the first block has none); one gate per expansion (its
        // depthwise conv shares it), one per stage's coupled projections, stem and last.
        let depthwise = spec
            .nodes
            .iter()
            .filter(|n| {
                matches!(
                    n.op,
                    crate::spec::Op::Conv {
                        depthwise: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(depthwise, 17);
        let shapes = spec.value_shapes().unwrap();
        let groups = ChannelGroups::analyse(&spec, &shapes).unwrap();
        // stem (with the first block's depthwise), 16 expansions, 7 stages, last.
        assert_eq!(groups.group_of_gate.len(), 1 + 16 + 7 + 1);
        // A depthwise conv is in its input's group; the adds join a stage into one group.
        let value = |name: &str| 1 + spec.nodes.iter().position(|n| n.name == name).unwrap();
        let group = |name: &str| groups.value_group[value(name)];
        assert_eq!(group("s2b1.expand"), group("s2b1.depthwise"));
        assert_eq!(group("s3b1.project"), group("s3b3.add"));
        assert_eq!(group("s3b2.project"), group("s3b3.project"));
        assert_ne!(group("s3b1.project"), group("s4b1.project"));

        // Narrower and 28x28 inputs build too; other models refuse a width.
        let narrow =
            model_spec_at_width("mobilenetv2", Shape3::new(1, 28, 28), 10, Some(0.35)).unwrap();
        let narrow = NetPlan::new(narrow, GatePosition::AfterBn).unwrap();
        assert!(narrow.total_params() < params / 4);
        let err = model_spec_at_width("vgg-small", Shape3::new(1, 28, 28), 10, Some(0.5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mobilenetv2"), "{err}");
        let err = model_spec_at_width("mobilenetv2", Shape3::new(1, 28, 28), 10, Some(3.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.35") && err.contains("1.4"), "{err}");
    }

    #[test]
    fn the_default_model_suits_28x28_and_vgg16_does_not() {
        let spec = model_spec(DEFAULT_MODEL, Shape3::new(1, 28, 28), 10).unwrap();
        assert!(spec.value_shapes().is_ok());
        let err = model_spec("vgg16", Shape3::new(1, 28, 28), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("28x28") && err.contains("vgg-small"), "{err}");
        let err = model_spec("alexnet", Shape3::new(1, 28, 28), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("resnet20"), "{err}");
    }
}
