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
    /// (`sigmoid(delta * s) > 0.5`). A group whose gates all closed keeps its most open
    /// channel, so no layer is left empty.
    pub fn from_gates(net: &GatedNet) -> Self {
        let mut masks = Self::full(&net.plan);
        for (gate_index, gate) in net.gates.iter().enumerate() {
            let group = net.plan.groups.group_of_gate[gate_index];
            let scores = gate.scores();
            let mut keep: Vec<bool> = scores.iter().map(|&s| s > 0.0).collect();
            if !keep.iter().any(|&k| k)
                && let Some((best, _)) = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))
            {
                keep[best] = true;
            }
            masks.keep[group] = keep;
        }
        masks
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
            } else if !mask.iter().any(|&k| k) {
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
        Ok(())
    }
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
/// Call it on an inference copy (`net.valid()`); the result starts a new parameter set (new
/// ids), to be finetuned with a fresh optimizer.
pub fn prune_channels(net: &GatedNet, masks: &ChannelMasks) -> Result<GatedNet, ModelError> {
    let plan = &*net.plan;
    masks.check(plan)?;
    let group_of = |v: usize| plan.groups.value_group[v];

    let mut spec = plan.spec.clone();
    for (index, node) in spec.nodes.iter_mut().enumerate() {
        if let Op::Conv { out_channels, .. } = &mut node.op {
            *out_channels = masks.kept(group_of(index + 1)).len();
        }
    }
    let pruned_plan = NetPlan::new(spec, plan.gate_position)?;

    let mut convs = Vec::with_capacity(net.convs.len());
    let mut linears = Vec::with_capacity(net.linears.len());
    for (index, node) in plan.spec.nodes.iter().enumerate() {
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
                let bn = BatchNorm {
                    gamma: param(select(bn.gamma.val(), 0, &out_keep)),
                    beta: param(select(bn.beta.val(), 0, &out_keep)),
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
    let gates = net
        .gates
        .iter()
        .enumerate()
        .map(|(gate_index, gate)| Gate {
            s: param(select(
                gate.s.val(),
                0,
                &masks.kept(plan.groups.group_of_gate[gate_index]),
            )),
        })
        .collect();
    Ok(GatedNet {
        convs,
        linears,
        gates,
        plan: Arc::new(pruned_plan),
    })
}
