//! The pruned network as an export folder (docs/export-format.md), and burn's forward of an
//! export, which `dnal eval` uses and which the board's logits are compared with.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2dConfig, MaxPool2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use dnal_datasets::Dataset;
use dnal_export::int8::ValueQuantization;
use dnal_export::{
    AddSpec, Arch, Conv2dSpec, Export, Layer, LinearSpec, Normalization, Op as ExportOp, PoolSpec,
    Tensor as ExportTensor,
};
use dnal_models::{
    Activation, ChannelMasks, ConvBn, GateMode, GatedNet, NetPlan, Op, explicit_conv_options,
};
use dnal_train_kernels::conv_op;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::config::SearchConfig;
use crate::error::SearchError;
use crate::quantize::fake::{
    fake_quantize_conv_weights, fake_quantize_value, fake_quantize_weights,
};
use crate::train::Classifier;

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

/// What one layer of an [`ExportNet`] computes; convs and linears name their module.
#[derive(Clone, Debug)]
enum GraphOp {
    Conv { slot: usize, activation: Activation },
    MaxPool(PoolSpec),
    AvgPool(PoolSpec),
    GlobalAvgPool,
    Add(Activation),
    Linear { slot: usize, activation: Activation },
}

/// Everything about an [`ExportNet`] that is not a tensor.
#[derive(Debug)]
struct ExportGraph {
    /// Each layer and the values it reads.
    layers: Vec<(GraphOp, Vec<usize>)>,
    num_classes: usize,
    /// The int8 grid of every value (the input, then each layer's output), when the forward
    /// pass rounds to int8 as the board will.
    fake_quantization: Option<Vec<ValueQuantization>>,
}

/// burn's forward pass of an export, exactly as the files say (BN folded): the reference for
/// `dnal eval` and for the board's logits. A burn module, so that quantisation-aware training
/// can train it ([`ExportNet::with_fake_quantization`]).
///
/// # Shapes
/// - input: `[batch, channels, height, width]` as the export's `input`
/// - output: `[batch, num_classes]`
#[derive(Module, Debug)]
pub struct ExportNet {
    /// One conv (with bias) per conv layer, in layer order.
    convs: Vec<Conv2d>,
    /// One linear layer per linear layer, in layer order.
    linears: Vec<Linear>,
    #[module(skip)]
    graph: Arc<ExportGraph>,
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
        let (mut convs, mut linears) = (Vec::new(), Vec::new());
        let layers = arch
            .layers
            .iter()
            .map(|layer| {
                let weights = || {
                    export
                        .weight_and_bias(&layer.name)
                        .expect("a validated export has the weights of its layers")
                };
                let op = match &layer.op {
                    ExportOp::Conv2d(c) => {
                        let (w, b) = weights();
                        convs.push(Conv2d {
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
                        });
                        GraphOp::Conv {
                            slot: convs.len() - 1,
                            activation: c.activation,
                        }
                    }
                    ExportOp::MaxPool2d(p) => GraphOp::MaxPool(p.clone()),
                    ExportOp::AvgPool2d(p) => GraphOp::AvgPool(p.clone()),
                    ExportOp::GlobalAvgPool => GraphOp::GlobalAvgPool,
                    ExportOp::Add(a) => GraphOp::Add(a.activation),
                    ExportOp::Linear(l) => {
                        let (w, b) = weights();
                        linears.push(Linear {
                            weight: Param::from_tensor(tensor::<2>(w, device).transpose()),
                            bias: Some(Param::from_tensor(tensor::<1>(b, device))),
                        });
                        GraphOp::Linear {
                            slot: linears.len() - 1,
                            activation: l.activation,
                        }
                    }
                };
                (op, layer.inputs.clone())
            })
            .collect();
        Self {
            convs,
            linears,
            graph: Arc::new(ExportGraph {
                layers,
                num_classes: arch.num_classes,
                fake_quantization: None,
            }),
        }
    }

    /// The same network with every value rounded to the int8 grid `values` gives it (one per
    /// value: the input, then each layer's output) and every weight to int8 per output
    /// channel, with straight-through gradients: what quantisation-aware training trains.
    pub fn with_fake_quantization(self, values: Vec<ValueQuantization>) -> Self {
        assert_eq!(
            values.len(),
            self.graph.layers.len() + 1,
            "one quantisation per value"
        );
        let graph = ExportGraph {
            layers: self.graph.layers.clone(),
            num_classes: self.graph.num_classes,
            fake_quantization: Some(values),
        };
        Self {
            graph: Arc::new(graph),
            ..self
        }
    }

    /// `like` (an export of this network's architecture) with this network's weights.
    pub fn to_export(&self, like: &Export) -> Result<Export, SearchError> {
        let mut tensors = BTreeMap::new();
        for (layer, (op, _)) in like.arch().layers.iter().zip(&self.graph.layers) {
            let (weight, bias) = match op {
                GraphOp::Conv { slot, .. } => {
                    let conv = &self.convs[*slot];
                    (conv.weight.val(), conv.bias.as_ref().map(|b| b.val()))
                }
                GraphOp::Linear { slot, .. } => {
                    let linear = &self.linears[*slot];
                    // burn stores [in, out]; the export [out, in].
                    let w = linear.weight.val().transpose();
                    let [o, i] = w.dims();
                    (
                        w.reshape([o, i, 1, 1]),
                        linear.bias.as_ref().map(|b| b.val()),
                    )
                }
                _ => continue,
            };
            let like_weight = &like
                .weight_and_bias(&layer.name)
                .expect("a validated export has the weights of its layers")
                .0
                .shape;
            let weight = weight.detach();
            let numel: usize = weight.dims().iter().product();
            tensors.insert(
                format!("{}.weight", layer.name),
                ExportTensor::new(like_weight.clone(), values(weight.reshape([numel]))),
            );
            let bias = values(bias.expect("export layers have biases").detach());
            tensors.insert(
                format!("{}.bias", layer.name),
                ExportTensor::new(vec![bias.len()], bias),
            );
        }
        Ok(Export::new(like.arch().clone(), tensors)?)
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
            .reshape([batch, self.graph.num_classes])
    }

    /// Every value of a batch's forward pass: the input (value 0), then each layer's output
    /// (value `i + 1`; a linear layer's as `[batch, features, 1, 1]`). What int8 calibration
    /// observes.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]`
    /// - output: `layers + 1` tensors `[batch, c, h, w]`
    pub fn forward_values(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let fake = self.graph.fake_quantization.as_deref();
        let value = |v: usize, y: Tensor<4>| match fake {
            Some(q) => fake_quantize_value(y, q[v]),
            None => y,
        };
        let weights = |w: Tensor<4>| match fake {
            Some(_) => fake_quantize_conv_weights(w),
            None => w,
        };
        let mut values: Vec<Tensor<4>> = vec![value(0, x)];
        for (index, (layer, inputs)) in self.graph.layers.iter().enumerate() {
            let x = values[inputs[0]].clone();
            let y = match layer {
                GraphOp::Conv { slot, activation } => {
                    let conv = &self.convs[*slot];
                    // im2col + gemm on the CPU backend (forward and backward), as training's
                    // convs; the bias added after.
                    let options =
                        explicit_conv_options(conv).expect("an export's convs pad explicitly");
                    let y = conv_op::conv2d(x, weights(conv.weight.val()), options);
                    let y = match &conv.bias {
                        Some(bias) => {
                            let channels = bias.dims()[0];
                            y + bias.val().reshape([1, channels, 1, 1])
                        }
                        None => y,
                    };
                    act(y, *activation)
                }
                GraphOp::MaxPool(p) => MaxPool2dConfig::new(p.kernel)
                    .with_strides(p.stride)
                    .with_padding(PaddingConfig2d::Explicit(
                        p.padding[0],
                        p.padding[1],
                        p.padding[0],
                        p.padding[1],
                    ))
                    .init()
                    .forward(x),
                GraphOp::AvgPool(p) => AvgPool2dConfig::new(p.kernel)
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
                GraphOp::GlobalAvgPool => x.mean_dim(3).mean_dim(2),
                GraphOp::Add(a) => {
                    let mut sum = x;
                    for &v in &inputs[1..] {
                        sum = sum + values[v].clone();
                    }
                    act(sum, *a)
                }
                GraphOp::Linear { slot, activation } => {
                    let linear = &self.linears[*slot];
                    let [b, c, h, w] = x.dims();
                    let x = x.reshape([b, c * h * w]);
                    let y = match fake {
                        Some(_) => {
                            let weight = fake_quantize_weights(linear.weight.val(), 1);
                            let y = x.matmul(weight);
                            match &linear.bias {
                                Some(bias) => y + bias.val().unsqueeze(),
                                None => y,
                            }
                        }
                        None => linear.forward(x),
                    };
                    let y = act(y, *activation);
                    let [_, f] = y.dims();
                    y.reshape([b, f, 1, 1])
                }
            };
            values.push(value(index + 1, y));
        }
        values
    }
}

impl Classifier for ExportNet {
    fn logits(&self, x: Tensor<4>, _: GateMode) -> Tensor<2> {
        self.forward(x)
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
