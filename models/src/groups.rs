//! Channel groups: which layers produce and consume which channels.
//!
//! A channel group is a set of values whose channel dimensions must stay aligned: a conv starts
//! a new group, a depthwise conv, a pool or a global pool keeps its input's group, and a
//! residual add merges the groups of its inputs into one (a *coupled* group). Pruning removes
//! channels per group, so every layer that writes or reads the group is sliced the same way:
//! this is the one mechanism behind VGG, ResNet and, next, MobileNetV2's inverted residuals.
//!
//! A group is prunable when every value in it comes from a conv (with its batch norm and gate):
//! the input image and the outputs of linear layers have fixed sizes.

use crate::error::ModelError;
use crate::spec::{Activation, NetSpec, Op, Shape3};

/// One channel group.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelGroup {
    /// The channels every value of the group has.
    pub channels: usize,
    /// Whether its channels may be removed.
    pub prunable: bool,
    /// The conv nodes that write values of this group (each applies the group's gate).
    pub producers: Vec<usize>,
    /// The values of this group.
    pub values: Vec<usize>,
}

/// One of two or more parallel branches summed by one add: a hidden group (say a mobile
/// block's expanded channels, kept by its depthwise conv) that one conv without activation
/// projects into the add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Branch {
    /// The hidden group, which may lose all its channels.
    pub group: usize,
    /// The conv node that reads the hidden group and writes an input of the add.
    pub projection: usize,
}

/// Parallel branches into one add (a supernet's candidate operations). Any branch may vanish
/// when all its hidden channels close, as long as one of the set survives: with its hidden
/// channels at zero a branch adds a constant (its projection's batch-norm shift), which
/// pruning folds into a surviving branch's projection, so removing it is exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchSet {
    /// The add node.
    pub add: usize,
    /// Its branches, in input order.
    pub branches: Vec<Branch>,
}

/// The channel groups of a network.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelGroups {
    /// For every value, the group of its channel dimension.
    pub value_group: Vec<usize>,
    /// The groups, in order of first appearance.
    pub groups: Vec<ChannelGroup>,
    /// For every group, its gate index when it is prunable.
    pub gate_of_group: Vec<Option<usize>>,
    /// For every gate, its group.
    pub group_of_gate: Vec<usize>,
    /// Parallel branches that may vanish (none outside supernets).
    pub branch_sets: Vec<BranchSet>,
}

/// Disjoint sets over value ids.
struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        // The smaller root wins so that a group is named after its first value.
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        self.0[hi] = lo;
    }
}

impl ChannelGroups {
    /// Analyses a spec whose shapes were already checked.
    pub fn analyse(spec: &NetSpec, shapes: &[Shape3]) -> Result<Self, ModelError> {
        let values = shapes.len();
        let mut sets = UnionFind((0..values).collect());
        // Values whose channel count cannot change.
        let mut fixed = vec![false; values];
        fixed[0] = true;
        for (index, node) in spec.nodes.iter().enumerate() {
            let out = index + 1;
            match &node.op {
                Op::Conv { depthwise, .. } => {
                    if *depthwise {
                        sets.union(out, node.inputs[0]);
                    }
                }
                Op::MaxPool { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool => {
                    sets.union(out, node.inputs[0]);
                }
                Op::Add { .. } => {
                    for &v in &node.inputs {
                        sets.union(out, v);
                    }
                }
                Op::Linear { .. } => fixed[out] = true,
            }
        }

        let mut group_of_root = vec![usize::MAX; values];
        let mut value_group = vec![0; values];
        let mut groups: Vec<ChannelGroup> = Vec::new();
        for v in 0..values {
            let root = sets.find(v);
            if group_of_root[root] == usize::MAX {
                group_of_root[root] = groups.len();
                groups.push(ChannelGroup {
                    channels: shapes[v].channels,
                    prunable: true,
                    producers: Vec::new(),
                    values: Vec::new(),
                });
            }
            let g = group_of_root[root];
            value_group[v] = g;
            let group = &mut groups[g];
            if group.channels != shapes[v].channels {
                return Err(ModelError::InvalidSpec {
                    model: spec.name.clone(),
                    node: spec.nodes[v.saturating_sub(1)].name.clone(),
                    reason: format!(
                        "joins channels of {} and {} in one group",
                        group.channels, shapes[v].channels
                    ),
                });
            }
            group.values.push(v);
            if fixed[v] {
                group.prunable = false;
            }
        }
        for (index, node) in spec.nodes.iter().enumerate() {
            if matches!(node.op, Op::Conv { .. }) {
                groups[value_group[index + 1]].producers.push(index);
            }
        }
        let mut gate_of_group = vec![None; groups.len()];
        let mut group_of_gate = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            if group.prunable {
                gate_of_group[g] = Some(group_of_gate.len());
                group_of_gate.push(g);
            }
        }
        let branch_sets = branch_sets(spec, &value_group, &groups);
        Ok(Self {
            value_group,
            groups,
            gate_of_group,
            group_of_gate,
            branch_sets,
        })
    }

    /// Whether a group may lose all its channels: it is a branch of a [`BranchSet`].
    pub fn removable(&self, group: usize) -> bool {
        self.branch_sets
            .iter()
            .any(|set| set.branches.iter().any(|b| b.group == group))
    }

    /// The prunable groups that every path from the image to the logits passes through, in
    /// order. Nothing past such a group sees more feature maps than it keeps, so one kept at a
    /// single channel squeezes the whole image through one map: every group of a plain conv
    /// chain, a mobile network's coupled streams (not the expansions its residual adds
    /// bypass), a supernet's streams (not its candidates' hidden channels).
    pub fn bottlenecks(&self, spec: &NetSpec) -> Vec<usize> {
        let values = self.value_group.len();
        let mut readers = vec![Vec::new(); values];
        for (index, node) in spec.nodes.iter().enumerate() {
            for &v in &node.inputs {
                readers[v].push(index + 1);
            }
        }
        let output = values - 1;
        // A group is on every path when the logits cannot be reached from the image without
        // passing through one of its values.
        let reaches_output_without = |group: usize| {
            let mut seen = vec![false; values];
            let mut stack = vec![0];
            seen[0] = true;
            while let Some(v) = stack.pop() {
                if v == output {
                    return true;
                }
                for &next in &readers[v] {
                    if !seen[next] && self.value_group[next] != group {
                        seen[next] = true;
                        stack.push(next);
                    }
                }
            }
            false
        };
        (0..self.groups.len())
            .filter(|&g| self.groups[g].prunable && !reaches_output_without(g))
            .collect()
    }

    /// The gate a conv node applies, if its output group is prunable.
    pub fn gate_of_value(&self, value: usize) -> Option<usize> {
        self.gate_of_group[self.value_group[value]]
    }

    /// A short human name for a group: its producers' names, or for a group written by many
    /// (a supernet stage's coupled stream) the first two, the last and their count.
    pub fn describe(&self, spec: &NetSpec, group: usize) -> String {
        let names: Vec<&str> = self.groups[group]
            .producers
            .iter()
            .map(|&n| spec.nodes[n].name.as_str())
            .collect();
        match names.as_slice() {
            [] => format!("group {group}"),
            [first, second, .., last] if names.len() > 4 => {
                format!("{first}+{second}+...+{last} ({} layers)", names.len())
            }
            _ => names.join("+"),
        }
    }
}

/// The adds whose inputs include two or more branches: a conv with no activation, read only
/// by the add, whose input is a prunable group read by nothing outside it but that conv (its
/// values are written by convs, depthwise convs and pools that keep it).
fn branch_sets(spec: &NetSpec, value_group: &[usize], groups: &[ChannelGroup]) -> Vec<BranchSet> {
    let mut readers = vec![Vec::new(); value_group.len()];
    for (index, node) in spec.nodes.iter().enumerate() {
        for &v in &node.inputs {
            readers[v].push(index);
        }
    }
    let is_add = |v: usize| v > 0 && matches!(spec.nodes[v - 1].op, Op::Add { .. });
    let branch = |add: usize, v: usize| -> Option<Branch> {
        let projection = v.checked_sub(1)?;
        let node = &spec.nodes[projection];
        let Op::Conv {
            depthwise: false,
            activation: Activation::None,
            ..
        } = node.op
        else {
            return None;
        };
        if readers[v] != [add] {
            return None;
        }
        let group = value_group[node.inputs[0]];
        let hidden = &groups[group];
        let private = hidden.prunable
            && group != value_group[v]
            && hidden.values.iter().all(|&h| {
                !is_add(h)
                    && readers[h]
                        .iter()
                        .all(|&r| r == projection || value_group[r + 1] == group)
            });
        private.then_some(Branch { group, projection })
    };
    spec.nodes
        .iter()
        .enumerate()
        .filter(|(_, node)| matches!(node.op, Op::Add { .. }))
        .filter_map(|(add, node)| {
            let branches: Vec<Branch> =
                node.inputs.iter().filter_map(|&v| branch(add, v)).collect();
            (branches.len() >= 2).then_some(BranchSet { add, branches })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecBuilder;

    #[test]
    fn residual_adds_couple_groups_and_depthwise_keeps_them() {
        let mut b = SpecBuilder::new("t", Shape3::new(3, 8, 8), 2);
        let stem = b.conv("stem", 0, 4, 3, 1, Activation::Relu); // value 1
        let c1 = b.conv("c1", stem, 6, 1, 1, Activation::Relu); // value 2
        let dw = b.push(
            "dw",
            Op::Conv {
                out_channels: 6,
                kernel: 3,
                stride: 1,
                padding: 1,
                depthwise: true,
                activation: Activation::Relu,
            },
            vec![c1],
        ); // value 3
        let c2 = b.conv("c2", dw, 4, 1, 1, Activation::None); // value 4
        let add = b.push(
            "add",
            Op::Add {
                activation: Activation::None,
            },
            vec![stem, c2],
        ); // value 5
        let gap = b.push("gap", Op::GlobalAvgPool, vec![add]);
        b.push(
            "fc",
            Op::Linear {
                out_features: 2,
                activation: Activation::None,
            },
            vec![gap],
        );
        let spec = b.finish();
        let shapes = spec.value_shapes().unwrap();
        let groups = ChannelGroups::analyse(&spec, &shapes).unwrap();
        let g = &groups.value_group;
        assert_eq!(g[1], g[4], "the add couples stem and c2");
        assert_eq!(g[1], g[5]);
        assert_eq!(g[1], g[6], "the pool keeps its group");
        assert_eq!(g[2], g[3], "depthwise keeps its group");
        assert_ne!(g[1], g[2]);
        assert!(!groups.groups[g[0]].prunable, "the image is fixed");
        assert!(!groups.groups[g[7]].prunable, "logits are fixed");
        assert!(groups.groups[g[1]].prunable);
        assert_eq!(groups.groups[g[1]].producers, vec![0, 3]);
        assert_eq!(groups.groups[g[2]].producers, vec![1, 2]);
        assert_eq!(groups.group_of_gate.len(), 2);
        assert_eq!(
            groups.bottlenecks(&spec),
            vec![g[1]],
            "the residual add bypasses c1's expansion, not the stream"
        );
        assert_eq!(groups.describe(&spec, g[1]), "stem+c2");
        // Many writers are abbreviated, with their count.
        let mut many = groups.clone();
        many.groups[g[1]].producers = vec![0, 1, 2, 3, 0];
        assert_eq!(many.describe(&spec, g[1]), "stem+c1+...+stem (5 layers)");
    }

    #[test]
    fn without_a_residual_every_group_is_a_bottleneck() {
        let mut b = SpecBuilder::new("chain", Shape3::new(1, 8, 8), 2);
        let stem = b.conv("stem", 0, 4, 3, 1, Activation::Relu);
        let c1 = b.conv("c1", stem, 6, 3, 1, Activation::Relu);
        b.classifier(c1);
        let spec = b.finish();
        let shapes = spec.value_shapes().unwrap();
        let groups = ChannelGroups::analyse(&spec, &shapes).unwrap();
        let g = &groups.value_group;
        assert_eq!(groups.bottlenecks(&spec), vec![g[1], g[2]]);
    }
}
