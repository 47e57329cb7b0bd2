//! The pruned network as an export folder (docs/export-format.md), and burn's forward of an
//! export, which `dnal eval` uses and which the board's logits are compared with.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use dnal_datasets::Dataset;
use dnal_export::{
    AddSpec, Arch, Conv2dSpec, Export, Layer, LinearSpec, Normalization, Op as ExportOp, PoolSpec,
    Tensor as ExportTensor,
};
use dnal_models::{Activation, ChannelMasks, ConvBn, GatedNet, NetPlan, Op};
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::config::SearchConfig;
use crate::error::SearchError;

/// What `arch.json`'s `search` field records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchInfo {
    /// The search's settings (dataset, limits, lambda, cost, epochs, seed, ...).
    pub config: SearchConfig,
    /// MACs of the unpruned network.
    pub parent_flops: u64,
    /// Parameters of the unpruned network (BN folded).
    pub parent_params: u64,
}

fn values(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 parameters")
}

/// A conv followed by its batch norm as one conv with bias:
/// `w' = w * gamma / sqrt(var + eps)`, `b' = beta + (b - mean) * gamma / sqrt(var + eps)`.
pub fn fold_batch_norm(unit: &ConvBn) -> (ExportTensor, ExportTensor) {
    let weight = unit.conv.weight.val();
    let shape = weight.dims().to_vec();
    let mut w = weight.into_data().try_to_vec::<f32>().expect("f32 weights");
    let out = shape[0];
    let bn = &unit.bn;
    let gamma = values(bn.gamma.val());
    let beta = values(bn.beta.val());
    let mean = values(bn.running_mean.value());
    let var = values(bn.running_var.value());
    let bias = unit
        .conv
        .bias
        .as_ref()
        .map(|b| values(b.val()))
        .unwrap_or_else(|| vec![0.0; out]);
    let per_filter = w.len() / out;
    let mut b = vec![0.0f32; out];
    for o in 0..out {
        let scale = (gamma[o] as f64 / (var[o] as f64 + bn.epsilon).sqrt()) as f32;
        for v in &mut w[o * per_filter..(o + 1) * per_filter] {
            *v *= scale;
        }
        b[o] = beta[o] + (bias[o] - mean[o]) * scale;
    }
    (ExportTensor::new(shape, w), ExportTensor::new(vec![out], b))
}

/// The layer `index` of `plan`'s network as an export describes it, without weights;
/// `masks` are the kept channels relative to `parent`.
fn export_op(plan: &NetPlan, parent: &NetPlan, masks: &ChannelMasks, index: usize) -> ExportOp {
    let node = &plan.spec.nodes[index];
    let input = plan.shapes[node.inputs[0]];
    let output = plan.shapes[index + 1];
    let pool = |kernel: usize, stride: usize| PoolSpec {
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: [0, 0],
    };
    match &node.op {
        Op::Conv {
            kernel,
            stride,
            padding,
            depthwise,
            activation: act,
            ..
        } => ExportOp::Conv2d(Conv2dSpec {
            in_channels: input.channels,
            out_channels: output.channels,
            kernel: [*kernel, *kernel],
            stride: [*stride, *stride],
            padding: [*padding, *padding],
            groups: if *depthwise { input.channels } else { 1 },
            activation: *act,
            kept_channels: kept_in_parent(parent, masks, &node.name),
        }),
        Op::MaxPool { kernel, stride } => ExportOp::MaxPool2d(pool(*kernel, *stride)),
        Op::AvgPool { kernel, stride } => ExportOp::AvgPool2d(pool(*kernel, *stride)),
        Op::GlobalAvgPool => ExportOp::GlobalAvgPool,
        Op::Add { activation: act } => ExportOp::Add(AddSpec { activation: *act }),
        Op::Linear {
            out_features,
            activation: act,
        } => ExportOp::Linear(LinearSpec {
            in_features: input.len(),
            out_features: *out_features,
            activation: *act,
        }),
    }
}

/// The channels of the parent's layer `name` that a pruned network keeps (pruning removes
/// layers, such as a supernet's vanished branches, but never renames them).
fn kept_in_parent(parent: &NetPlan, masks: &ChannelMasks, name: &str) -> Vec<usize> {
    let index = parent
        .spec
        .node_index(name)
        .expect("a pruned network's layers are its parent's");
    masks.kept(parent.groups.value_group[index + 1])
}

/// The architecture of `plan`'s network, without weights: its layers, shapes and costs, as
/// the board's latency table is made for and checked against. `masks` are the kept channels
/// relative to `parent` (the parent itself: `plan` and [`ChannelMasks::full`]).
pub fn structure_arch(
    plan: &NetPlan,
    parent: &NetPlan,
    masks: &ChannelMasks,
) -> Result<Arch, SearchError> {
    let layers = plan
        .spec
        .nodes
        .iter()
        .enumerate()
        .map(|(index, node)| {
            Layer::new(
                node.name.clone(),
                node.inputs.clone(),
                export_op(plan, parent, masks, index),
            )
        })
        .collect();
    let mut arch = Arch::new(
        plan.spec.name.clone(),
        plan.spec.input,
        plan.spec.num_classes,
        layers,
    );
    arch.complete()?;
    Ok(arch)
}

/// Builds the export of a pruned network (an inference copy, `net.valid()`); `masks` are the
/// kept channels relative to `parent`.
pub fn build_export(
    net: &GatedNet,
    parent: &NetPlan,
    masks: &ChannelMasks,
    dataset: &Dataset,
    info: &SearchInfo,
) -> Result<Export, SearchError> {
    let plan = &*net.plan;
    let mut tensors = BTreeMap::new();
    for (index, node) in plan.spec.nodes.iter().enumerate() {
        match &node.op {
            Op::Conv { .. } => {
                let (w, b) = fold_batch_norm(&net.convs[plan.slot[index]]);
                tensors.insert(format!("{}.weight", node.name), w);
                tensors.insert(format!("{}.bias", node.name), b);
            }
            Op::Linear { out_features, .. } => {
                let layer = &net.linears[plan.slot[index]];
                // burn stores [in, out]; the export stores [out, in] (one row per output).
                let w = layer.weight.val().transpose();
                let shape = w.dims().to_vec();
                let w = w.into_data().try_to_vec::<f32>().expect("f32 weights");
                let b = layer
                    .bias
                    .as_ref()
                    .map(|b| values(b.val()))
                    .unwrap_or_else(|| vec![0.0; *out_features]);
                tensors.insert(format!("{}.weight", node.name), ExportTensor::new(shape, w));
                tensors.insert(
                    format!("{}.bias", node.name),
                    ExportTensor::new(vec![*out_features], b),
                );
            }
            Op::MaxPool { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool | Op::Add { .. } => {}
        }
    }
    let mut arch = structure_arch(plan, parent, masks)?;
    arch.dataset = dataset.name.clone();
    arch.classes = dataset.train.class_names().to_vec();
    arch.normalization = Some(Normalization {
        mean: dataset.normalization.mean.clone(),
        std: dataset.normalization.std.clone(),
    });
    arch.search = serde_json::to_value(info).expect("search info serialises");
    Ok(Export::new(arch, tensors)?)
}

enum ExportLayer {
    Conv(Conv2d, Activation),
    MaxPool(PoolSpec),
    AvgPool(PoolSpec),
    GlobalAvgPool,
    Add(Activation),
    Linear(Linear, Activation),
}

/// burn's forward pass of an export, exactly as the files say (BN folded): the reference for
/// `dnal eval` and for the board's logits.
pub struct ExportNet {
    layers: Vec<(ExportLayer, Vec<usize>)>,
    num_classes: usize,
}

fn tensor<const D: usize>(t: &ExportTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), device)
}

fn act<const D: usize>(x: Tensor<D>, a: Activation) -> Tensor<D> {
    match a {
        Activation::None => x,
        Activation::Relu => relu(x),
        Activation::Relu6 => x.clamp(0.0, 6.0),
    }
}

impl ExportNet {
    /// Puts an export's weights on `device`.
    pub fn new(export: &Export, device: &Device) -> Self {
        let arch = export.arch();
        let layers = arch
            .layers
            .iter()
            .map(|layer| {
                let weights = || {
                    export
                        .weight_and_bias(&layer.name)
                        .expect("a validated export has the weights of its layers")
                };
                let built = match &layer.op {
                    ExportOp::Conv2d(c) => {
                        let (w, b) = weights();
                        let conv = Conv2d {
                            weight: Param::from_tensor(tensor::<4>(w, device)),
                            bias: Some(Param::from_tensor(tensor::<1>(b, device))),
                            stride: c.stride,
                            kernel_size: c.kernel,
                            dilation: [1, 1],
                            groups: c.groups,
                            padding: PaddingConfig2d::Explicit(
                                c.padding[0],
                                c.padding[1],
                                c.padding[0],
                                c.padding[1],
                            ),
                        };
                        ExportLayer::Conv(conv, c.activation)
                    }
                    ExportOp::MaxPool2d(p) => ExportLayer::MaxPool(p.clone()),
                    ExportOp::AvgPool2d(p) => ExportLayer::AvgPool(p.clone()),
                    ExportOp::GlobalAvgPool => ExportLayer::GlobalAvgPool,
                    ExportOp::Add(a) => ExportLayer::Add(a.activation),
                    ExportOp::Linear(l) => {
                        let (w, b) = weights();
                        let linear = Linear {
                            weight: Param::from_tensor(tensor::<2>(w, device).transpose()),
                            bias: Some(Param::from_tensor(tensor::<1>(b, device))),
                        };
                        ExportLayer::Linear(linear, l.activation)
                    }
                };
                (built, layer.inputs.clone())
            })
            .collect();
        Self {
            layers,
            num_classes: arch.num_classes,
        }
    }

    /// Logits for a batch of normalised images.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let batch = x.dims()[0];
        self.forward_values(x)
            .pop()
            .expect("an export has layers")
            .reshape([batch, self.num_classes])
    }

    /// Every value of a batch's forward pass: the input (value 0), then each layer's output
    /// (value `i + 1`; a linear layer's as `[batch, features, 1, 1]`). What int8 calibration
    /// observes.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]`
    /// - output: `layers + 1` tensors `[batch, c, h, w]`
    pub fn forward_values(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut values: Vec<Tensor<4>> = vec![x];
        for (layer, inputs) in &self.layers {
            let x = values[inputs[0]].clone();
            let y = match layer {
                ExportLayer::Conv(conv, a) => act(conv.forward(x), *a),
                ExportLayer::MaxPool(p) => MaxPool2dConfig::new(p.kernel)
                    .with_strides(p.stride)
                    .with_padding(PaddingConfig2d::Explicit(
                        p.padding[0],
                        p.padding[1],
                        p.padding[0],
                        p.padding[1],
                    ))
                    .init()
                    .forward(x),
                ExportLayer::AvgPool(p) => AvgPool2dConfig::new(p.kernel)
                    .with_strides(p.stride)
                    .with_padding(PaddingConfig2d::Explicit(
                        p.padding[0],
                        p.padding[1],
                        p.padding[0],
                        p.padding[1],
                    ))
                    .with_count_include_pad(true)
                    .init()
                    .forward(x),
                ExportLayer::GlobalAvgPool => x.mean_dim(3).mean_dim(2),
                ExportLayer::Add(a) => {
                    let mut sum = x;
                    for &v in &inputs[1..] {
                        sum = sum + values[v].clone();
                    }
                    act(sum, *a)
                }
                ExportLayer::Linear(linear, a) => {
                    let [b, c, h, w] = x.dims();
                    let y = act(linear.forward(x.reshape([b, c * h * w])), *a);
                    let [_, f] = y.dims();
                    y.reshape([b, f, 1, 1])
                }
            };
            values.push(y);
        }
        values
    }
}

/// burn's logits (CPU) for each image: the reference the board is held to.
pub fn reference_logits(
    export: &Export,
    images: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>, SearchError> {
    let device = Backend::Cpu.device()?;
    let net = ExportNet::new(export, &device);
    let s = export.arch().input;
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    let x = Tensor::<4>::from_data(
        TensorData::new(flat, [images.len(), s.channels, s.height, s.width]),
        &device,
    );
    let logits = net
        .forward(x)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32 logits");
    let classes = export.output_len().max(1);
    if let Some((i, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(SearchError::NonFiniteOutput {
            what: "the export's network (burn's reference forward)".into(),
            image: i / classes,
            value,
            fix: "its weights overflow f32 arithmetic, so no board could agree with it; export it again from a healthy search".into(),
        });
    }
    Ok(logits
        .chunks(export.output_len())
        .map(<[f32]>::to_vec)
        .collect())
}
