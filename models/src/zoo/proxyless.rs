//! A supernet in the ProxylessNAS space (Cai et al. 2019), searched as DNAL does (section
//! III-B of the paper): every layer holds all its candidate operations in parallel, summed,
//! instead of sampling one. The candidates are mobile inverted bottlenecks (1x1 expansion,
//! depthwise k x k, 1x1 linear projection) with kernel 3, 5 or 7 and expansion 3 or 6; each
//! candidate's expanded channels carry their own gate.
//!
//! A candidate whose channels all close vanishes: its projection then only adds its batch
//! norm's shift, which pruning folds into a surviving candidate ([`crate::groups::BranchSet`]),
//! so the searched network keeps any number of candidates per layer, at least one.
//!
//! The backbone is ProxylessNAS's: a 3x3 stem, a fixed MBConv1 to 16 channels, six searched
//! stages and a 1x1 conv to 1280 before the pool, with the CIFAR strides of
//! [`super::mobilenet`] (stride 1 in the stem and the first searched stage).

use super::mobilenet::{mbconv, mobile_head, scaled_channels};
use crate::spec::{Activation, NetSpec, Op, Shape3, SpecBuilder};

/// The candidate operations of every searched layer: (kernel, expansion).
pub const CANDIDATES: [(usize, usize); 6] = [(3, 3), (3, 6), (5, 3), (5, 6), (7, 3), (7, 6)];

/// The searched stages: output channels, layers, first stride.
const STAGES: [(usize, usize, usize); 6] = [
    (24, 4, 1),
    (40, 4, 2),
    (80, 4, 2),
    (96, 4, 1),
    (192, 4, 2),
    (320, 1, 1),
];

/// The name of a candidate in a layer: `s2b1.k5e3`.
pub fn candidate_name(layer: &str, kernel: usize, expansion: usize) -> String {
    format!("{layer}.k{kernel}e{expansion}")
}

/// The supernet at width multiplier `width`.
pub fn proxyless_supernet(name: &str, width: f64, input: Shape3, num_classes: usize) -> NetSpec {
    let mut b = SpecBuilder::new(name, input, num_classes);
    let stem = scaled_channels(32, width);
    let x = b.conv("stem", 0, stem, 3, 1, Activation::Relu6);
    let first = scaled_channels(16, width);
    let mut x = mbconv(&mut b, "s0b1", x, stem, first, 3, 1, 1);
    let mut channels = first;
    for (stage, &(c, layers, first_stride)) in STAGES.iter().enumerate() {
        let out = scaled_channels(c, width);
        for layer in 0..layers {
            let stride = if layer == 0 { first_stride } else { 1 };
            let prefix = format!("s{}b{}", stage + 1, layer + 1);
            let mut sum: Vec<usize> = Vec::with_capacity(CANDIDATES.len() + 1);
            if stride == 1 && channels == out {
                sum.push(x);
            }
            for (kernel, expansion) in CANDIDATES {
                let candidate = candidate_name(&prefix, kernel, expansion);
                sum.push(mbconv(
                    &mut b, &candidate, x, channels, out, kernel, expansion, stride,
                ));
            }
            x = b.push(
                format!("{prefix}.add"),
                Op::Add {
                    activation: Activation::None,
                },
                sum,
            );
            channels = out;
        }
    }
    mobile_head(b, x, width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::ChannelGroups;

    #[test]
    fn every_searched_layer_is_one_set_of_six_removable_candidates() {
        let spec = proxyless_supernet("proxyless", 0.35, Shape3::new(1, 28, 28), 10);
        let shapes = spec.value_shapes().unwrap();
        let groups = ChannelGroups::analyse(&spec, &shapes).unwrap();
        let layers: usize = STAGES.iter().map(|s| s.1).sum();
        assert_eq!(groups.branch_sets.len(), layers);
        for set in &groups.branch_sets {
            assert_eq!(set.branches.len(), CANDIDATES.len());
            let add = &spec.nodes[set.add].name;
            for (branch, (k, e)) in set.branches.iter().zip(CANDIDATES) {
                let layer = add.trim_end_matches(".add");
                assert_eq!(
                    spec.nodes[branch.projection].name,
                    format!("{}.project", candidate_name(layer, k, e))
                );
                assert!(groups.removable(branch.group));
                assert!(groups.gate_of_group[branch.group].is_some());
            }
        }
        // The fixed first block, the stem and the streams are not removable.
        let stem = groups.value_group[1];
        assert!(!groups.removable(stem));
    }
}
