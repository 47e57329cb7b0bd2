//! Real pruning: channel masks per group -> a dense, smaller [`GatedNet`].
//!
//! Every layer that writes a group loses the dropped output channels (conv filters, batch norm
//! entries, the gate's parameters); every layer that reads it loses the matching input slices
//! (dense conv input channels, linear input features). Depthwise convs and pools keep their
//! group, so they shrink with it. With gates after batch norm (or after the activation) the
//! pruned network computes exactly what the gated network computes with hard 0/1 gates.

use std::sync::Arc;

use burn::module::{Param, RunningState};
use burn::nn::BatchNorm;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::gate::Gate;
use crate::groups::{Branch, BranchSet};
use crate::net::{ConvBn, GatedNet, NetPlan};
use crate::spec::Op;

/// Which channels of every channel group survive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelMasks {
    /// One flag per channel, per group (fixed groups keep everything).
    pub keep: Vec<Vec<bool>>,
}

impl ChannelMasks {
    /// Keeps every channel.
    pub fn full(plan: &NetPlan) -> Self {
        Self {
            keep: plan
                .groups
                .groups
                .iter()
                .map(|g| vec![true; g.channels])
                .collect(),
        }
    }

    /// The binarised architecture: a channel lives iff its gate's `s > 0`
    /// (`sigmoid(delta * s) > 0.5`); see [`ChannelMasks::above`].
    pub fn from_gates(net: &GatedNet) -> Self {
        let scores: Vec<Vec<f32>> = net.gates.iter().map(|g| g.scores()).collect();
        Self::above(&net.plan, &scores, 0.0)
    }

    /// The channels whose gate's score (one vector per gate) is above `tau`. A group whose
    /// channels all fall below keeps its highest one, so no layer is left empty; a branch of
    /// a supernet instead vanishes, as long as a branch of its set survives (when none does,
    /// the set keeps its highest channel).
    pub fn above(plan: &NetPlan, scores: &[Vec<f32>], tau: f32) -> Self {
        let groups = &plan.groups;
        let mut masks = Self::full(plan);
        for (gate, s) in scores.iter().enumerate() {
            let group = groups.group_of_gate[gate];
            masks.keep[group] = s.iter().map(|&v| v > tau).collect();
            if !masks.keeps_any(group)
                && !groups.removable(group)
                && let Some(best) = argmax(s)
            {
                masks.keep[group][best] = true;
            }
        }
        for set in &groups.branch_sets {
            if masks.set_vanished(set) {
                let best = set
                    .branches
                    .iter()
                    .filter_map(|b| {
                        let s = &scores[groups.gate_of_group[b.group]?];
                        argmax(s).map(|i| (b.group, i, s[i]))
                    })
                    .max_by(|a, b| a.2.total_cmp(&b.2));
                if let Some((group, channel, _)) = best {
                    masks.keep[group][channel] = true;
                }
            }
        }
        masks
    }

    /// Whether a group keeps any channel.
    pub fn keeps_any(&self, group: usize) -> bool {
        self.keep[group].contains(&true)
    }

    /// Whether every branch of a supernet's set lost all its channels.
    fn set_vanished(&self, set: &BranchSet) -> bool {
        set.branches.iter().all(|b| !self.keeps_any(b.group))
    }

    /// The kept channel indices of a group, in order.
    pub fn kept(&self, group: usize) -> Vec<usize> {
        self.keep[group]
            .iter()
            .enumerate()
            .filter(|&(_, &k)| k)
            .map(|(i, _)| i)
            .collect()
    }

    /// Kept channels per group, as numbers for the cost models.
    pub fn counts(&self) -> Vec<f64> {
        self.keep
            .iter()
            .map(|k| k.iter().filter(|&&x| x).count() as f64)
            .collect()
    }

    fn check(&self, plan: &NetPlan) -> Result<(), ModelError> {
        let groups = &plan.groups.groups;
        let describe = |g: usize| plan.groups.describe(&plan.spec, g);
        if self.keep.len() != groups.len() {
            return Err(ModelError::InvalidMask {
                group: self.keep.len(),
                layers: plan.spec.name.clone(),
                reason: format!(
                    "{} masks given for {} channel groups",
                    self.keep.len(),
                    groups.len()
                ),
            });
        }
        for (g, (mask, group)) in self.keep.iter().zip(groups).enumerate() {
            let reason = if mask.len() != group.channels {
                format!("mask of {} for {} channels", mask.len(), group.channels)
            } else if !self.keeps_any(g) && !plan.groups.removable(g) {
                "no channel left: a layer may not be pruned to nothing".to_string()
            } else if !group.prunable && mask.iter().any(|&k| !k) {
                "drops channels of a group that cannot be pruned (input or logits)".to_string()
            } else {
                continue;
            };
            return Err(ModelError::InvalidMask {
                group: g,
                layers: describe(g),
                reason,
            });
        }
        for set in &plan.groups.branch_sets {
            if self.set_vanished(set) {
                return Err(ModelError::InvalidMask {
                    group: set.branches[0].group,
                    layers: plan.spec.nodes[set.add].name.clone(),
                    reason:
                        "every branch into this add lost all its channels: one must keep a channel"
                            .into(),
                });
            }
        }
        Ok(())
    }
}

/// The index of the largest score.
fn argmax(scores: &[f32]) -> Option<usize> {
    scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

fn select<const D: usize>(tensor: Tensor<D>, dim: usize, indices: &[usize]) -> Tensor<D> {
    if indices.len() == tensor.dims()[dim] {
        return tensor;
    }
    let device = tensor.device();
    let indices: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    let n = indices.len();
    tensor.select(
        dim,
        Tensor::<1, Int>::from_data(TensorData::new(indices, [n]), &device),
    )
}

fn param<const D: usize>(tensor: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(tensor.detach())
}

/// Builds the dense network that keeps only the masked-in channels.
///
/// A supernet's branch whose hidden channels all closed is removed with its projection; the
/// constant it added (its projection's batch-norm shift) moves into a surviving branch's
/// projection, and an add left with one input becomes that input (with the add's activation).
///
/// Call it on an inference copy (`net.valid()`); the result starts a new parameter set (new
/// ids), to be finetuned with a fresh optimizer.
pub fn prune_channels(net: &GatedNet, masks: &ChannelMasks) -> Result<GatedNet, ModelError> {
    let plan = &*net.plan;
    masks.check(plan)?;
    let group_of = |v: usize| plan.groups.value_group[v];
    let vanished = VanishedBranches::find(plan, masks);

    // The pruned spec: surviving nodes, their inputs renumbered, convs at their kept width.
    let mut spec = plan.spec.clone();
    let mut new_value = vec![None; plan.shapes.len()];
    new_value[0] = Some(0);
    // The parent's value of every value of the pruned network.
    let mut old_value = vec![0];
    let mut nodes = Vec::with_capacity(spec.nodes.len());
    for (index, mut node) in std::mem::take(&mut spec.nodes).into_iter().enumerate() {
        if vanished.removed[index] {
            if let Some(&(_, input)) = vanished.bypassed.iter().find(|(add, _)| *add == index) {
                new_value[index + 1] = new_value[input];
            }
            continue;
        }
        node.inputs = node.inputs.iter().filter_map(|&v| new_value[v]).collect();
        match &mut node.op {
            Op::Conv {
                out_channels,
                activation,
                ..
            } => {
                *out_channels = masks.kept(group_of(index + 1)).len();
                if let Some(&(add, _)) = vanished.bypassed.iter().find(|(_, v)| *v == index + 1)
                    && let Op::Add { activation: act } = plan.spec.nodes[add].op
                {
                    *activation = act;
                }
            }
            Op::Add { .. } => {}
            _ if node.inputs.len() != plan.spec.nodes[index].inputs.len() => {
                unreachable!("only adds read vanished branches")
            }
            _ => {}
        }
        nodes.push(node);
        new_value[index + 1] = Some(nodes.len());
        old_value.push(index + 1);
    }
    spec.nodes = nodes;
    let pruned_plan = NetPlan::new(spec, plan.gate_position)?;

    let mut convs = Vec::with_capacity(net.convs.len());
    let mut linears = Vec::with_capacity(net.linears.len());
    for (index, node) in plan.spec.nodes.iter().enumerate() {
        if vanished.removed[index] {
            continue;
        }
        let input = node.inputs[0];
        match &node.op {
            Op::Conv { depthwise, .. } => {
                let unit = &net.convs[plan.slot[index]];
                let out_keep = masks.kept(group_of(index + 1));
                let mut weight = select(unit.conv.weight.val(), 0, &out_keep);
                if !*depthwise {
                    weight = select(weight, 1, &masks.kept(group_of(input)));
                }
                let conv = Conv2d {
                    weight: param(weight),
                    bias: unit
                        .conv
                        .bias
                        .as_ref()
                        .map(|b| param(select(b.val(), 0, &out_keep))),
                    stride: unit.conv.stride,
                    kernel_size: unit.conv.kernel_size,
                    dilation: unit.conv.dilation,
                    groups: if *depthwise { out_keep.len() } else { 1 },
                    padding: unit.conv.padding.clone(),
                };
                let bn = &unit.bn;
                let mut beta = bn.beta.val();
                for &(gone, into) in &vanished.folded {
                    if into == index {
                        beta = beta + shift_at_zero_input(&net.convs[plan.slot[gone]]);
                    }
                }
                let bn = BatchNorm {
                    gamma: param(select(bn.gamma.val(), 0, &out_keep)),
                    beta: param(select(beta, 0, &out_keep)),
                    training: bn.training.clone(),
                    running_mean: RunningState::new(select(bn.running_mean.value(), 0, &out_keep)),
                    running_var: RunningState::new(select(bn.running_var.value(), 0, &out_keep)),
                    momentum: bn.momentum,
                    epsilon: bn.epsilon,
                };
                convs.push(ConvBn { conv, bn });
            }
            Op::Linear { .. } => {
                let layer = &net.linears[plan.slot[index]];
                let x = plan.shapes[input];
                let spatial = x.height * x.width;
                let rows: Vec<usize> = masks
                    .kept(group_of(input))
                    .iter()
                    .flat_map(|&c| c * spatial..(c + 1) * spatial)
                    .collect();
                linears.push(Linear {
                    weight: param(select(layer.weight.val(), 0, &rows)),
                    bias: layer.bias.as_ref().map(|b| param(b.val())),
                });
            }
            _ => {}
        }
    }
    // A group's gate follows it by one of its values: removing a supernet's branches can
    // change the order in which groups first appear.
    let gates = pruned_plan
        .groups
        .group_of_gate
        .iter()
        .map(|&group| {
            let value = pruned_plan.groups.groups[group].values[0];
            let old_group = group_of(old_value[value]);
            let gate = plan.groups.gate_of_group[old_group]
                .expect("a gated group of the pruned network was gated in its parent");
            Gate {
                s: param(select(net.gates[gate].s.val(), 0, &masks.kept(old_group))),
            }
        })
        .collect();
    Ok(GatedNet {
        convs,
        linears,
        gates,
        plan: Arc::new(pruned_plan),
    })
}

/// What pruning removes of a supernet's branches whose hidden channels all closed.
struct VanishedBranches {
    /// Per node: removed (a vanished branch's layers and projection, or a bypassed add).
    removed: Vec<bool>,
    /// (vanished projection, surviving projection that takes its constant), as nodes.
    folded: Vec<(usize, usize)>,
    /// (add left with one input, that input's value): the add is replaced by its input.
    bypassed: Vec<(usize, usize)>,
}

impl VanishedBranches {
    fn find(plan: &NetPlan, masks: &ChannelMasks) -> Self {
        let mut found = Self {
            removed: vec![false; plan.spec.nodes.len()],
            folded: Vec::new(),
            bypassed: Vec::new(),
        };
        for set in &plan.groups.branch_sets {
            let (gone, kept): (Vec<&Branch>, Vec<&Branch>) =
                set.branches.iter().partition(|b| !masks.keeps_any(b.group));
            // `ChannelMasks::check` made sure one branch survives.
            let Some(survivor) = kept.first() else {
                continue;
            };
            for branch in &gone {
                found.removed[branch.projection] = true;
                found.folded.push((branch.projection, survivor.projection));
                for &v in &plan.groups.groups[branch.group].values {
                    found.removed[v - 1] = true;
                }
            }
            // The add keeps its other inputs (a residual, possibly itself a bypassed add).
            let live = plan.spec.nodes[set.add].inputs.len() - gone.len();
            if !gone.is_empty() && live == 1 {
                found.removed[set.add] = true;
                found.bypassed.push((set.add, survivor.projection + 1));
            }
        }
        found
    }
}

/// What a conv + batch norm outputs for an input of zeros, per channel: its batch norm
/// applied to the conv's bias.
fn shift_at_zero_input(unit: &ConvBn) -> Tensor<1> {
    let bn = &unit.bn;
    let mean = bn.running_mean.value();
    let bias = match &unit.conv.bias {
        Some(b) => b.val(),
        None => mean.zeros_like(),
    };
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    (bias - mean) * scale + bn.beta.val()
}
