//! [`GatedNet`]: any [`NetSpec`] as a burn module with a DNAL gate on every prunable channel.

use std::sync::Arc;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::AvgPool2dConfig;
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::cost::{CostKind, CostModel};
use crate::error::ModelError;
use crate::gate::{Gate, GateConfig, GateMode, scale_channels};
use crate::groups::ChannelGroups;
use crate::spec::{Activation, NetSpec, Op, Shape3};
use dnal_train_kernels::batch_norm_op::{self, Rectifier};
use dnal_train_kernels::{conv_op, max_pool_op};

/// Where a conv block applies its gate (the paper's ablation; `AfterBn` is its best).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GatePosition {
    /// Conv-SS-BN-ReLU. Pruning is then not exact: batch norm's shift survives a closed gate.
    BeforeBn,
    /// Conv-BN-SS-ReLU (the default).
    #[default]
    AfterBn,
    /// Conv-BN-ReLU-SS.
    AfterActivation,
}

/// Everything about a network that is not a tensor: the spec and what follows from it.
#[derive(Debug)]
pub struct NetPlan {
    /// The architecture.
    pub spec: NetSpec,
    /// The shape of every value.
    pub shapes: Vec<Shape3>,
    /// The channel groups and their gates.
    pub groups: ChannelGroups,
    /// Where the gates sit.
    pub gate_position: GatePosition,
    /// For every node, its index among the convs or among the linear layers.
    pub slot: Vec<usize>,
    /// For every value, the last node that reads it.
    pub last_use: Vec<usize>,
    /// Multiply-accumulates as a function of the group sizes.
    pub flops: CostModel,
    /// Parameters (BN folded) as a function of the group sizes.
    pub params: CostModel,
}

impl NetPlan {
    /// Checks a spec and derives the plan.
    pub fn new(spec: NetSpec, gate_position: GatePosition) -> Result<Self, ModelError> {
        let shapes = spec.value_shapes()?;
        let groups = ChannelGroups::analyse(&spec, &shapes)?;
        let (mut convs, mut linears) = (0, 0);
        let mut slot = Vec::with_capacity(spec.nodes.len());
        let mut last_use = vec![0; shapes.len()];
        for (index, node) in spec.nodes.iter().enumerate() {
            let counter = match node.op {
                Op::Conv { .. } => &mut convs,
                Op::Linear { .. } => &mut linears,
                _ => &mut 0,
            };
            slot.push(*counter);
            *counter += 1;
            for &v in &node.inputs {
                last_use[v] = index;
            }
        }
        let flops = CostModel::new(CostKind::Flops, &spec, &shapes, &groups);
        let params = CostModel::new(CostKind::Params, &spec, &shapes, &groups);
        Ok(Self {
            spec,
            shapes,
            groups,
            gate_position,
            slot,
            last_use,
            flops,
            params,
        })
    }

    /// Channel counts of every group in the unpruned network.
    pub fn full_counts(&self) -> Vec<f64> {
        self.groups
            .groups
            .iter()
            .map(|g| g.channels as f64)
            .collect()
    }

    /// Multiply-accumulates of one forward pass of one image.
    pub fn total_flops(&self) -> u64 {
        self.flops.total(&self.full_counts()).round() as u64
    }

    /// Weights and biases with batch norm folded into the convs.
    pub fn total_params(&self) -> u64 {
        self.params.total(&self.full_counts()).round() as u64
    }
}

/// A conv and the batch norm after it.
///
/// # Shapes
/// - input: `[batch, in_channels, height, width]`
/// - output: `[batch, out_channels, height_out, width_out]`
#[derive(Module, Debug)]
pub struct ConvBn {
    /// The conv, without bias.
    pub conv: Conv2d,
    /// Its batch norm.
    pub bn: BatchNorm,
}

impl ConvBn {
    /// The conv alone, through [`conv_op::conv2d`] (im2col + gemm on the CPU backend) when it
    /// has explicit padding and no bias, as every conv [`GatedNetConfig`] builds does; burn's
    /// `Conv2d::forward` otherwise.
    ///
    /// # Shapes
    /// - input: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height_out, width_out]`
    pub fn conv_forward(&self, x: Tensor<4>) -> Tensor<4> {
        let conv = &self.conv;
        match explicit_conv_options(conv) {
            Some(options) if conv.bias.is_none() => conv_op::conv2d(x, conv.weight.val(), options),
            _ => conv.forward(x),
        }
    }

    /// The batch norm, then `activation`: in training (an autodiff device and a batch norm
    /// that is not frozen) through [`batch_norm_op::batch_norm_train`] with burn's
    /// running-statistics update, where the CPU backend runs both in the same fused passes;
    /// otherwise burn's `BatchNorm::forward` and `activate`.
    ///
    /// # Shapes
    /// - input and output: `[batch, channels, height, width]`
    pub fn bn_forward(&self, x: Tensor<4>, activation: Activation) -> Tensor<4> {
        self.bn_forward_gated(x, None, activation)
    }

    /// [`bn_forward`](Self::bn_forward) with every channel scaled by its gate value between
    /// the batch norm and `activation` (a gate after the batch norm). In training the gate is
    /// folded into the batch norm's scale and shift (`g * (gamma * x_hat + beta)` is a batch norm
    /// with `g * gamma` and `g * beta`), so the rectifier stays in the fused passes and the gate
    /// costs no pass over the activations, nor does its gradient.
    ///
    /// # Shapes
    /// - `x` and output: `[batch, channels, height, width]`
    /// - `gate`: `[channels]`
    pub fn bn_forward_gated(
        &self,
        x: Tensor<4>,
        gate: Option<Tensor<1>>,
        activation: Activation,
    ) -> Tensor<4> {
        let bn = &self.bn;
        if !(x.device().is_autodiff() && bn.training.is_enabled()) {
            let y = bn.forward(x);
            let y = match gate {
                Some(g) => scale_channels(y, g),
                None => y,
            };
            return activate(y, activation);
        }
        let device = x.device();
        // Only flex has fused kernels: elsewhere burn's backward would recompute the batch
        // norm for the rectifier's mask, so the rectifier stays a separate op there.
        let fused = activation != Activation::None && device == Device::flex();
        let in_pass = if fused {
            rectifier_of(activation)
        } else {
            Rectifier::None
        };
        let (gamma, beta) = match gate {
            Some(g) => (bn.gamma.val() * g.clone(), bn.beta.val() * g),
            None => (bn.gamma.val(), bn.beta.val()),
        };
        let result = batch_norm_op::batch_norm_train(x, gamma, beta, bn.epsilon, in_pass);
        // The same exponential moving average as burn's BatchNorm.
        let momentum = bn.momentum;
        let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
            let running = state.value_sync().to_device(&device);
            let running = running
                .mul_scalar(1.0 - momentum)
                .add(batch.detach().mul_scalar(momentum));
            state.update(running.detach());
        };
        update(&bn.running_mean, result.mean);
        update(&bn.running_var, result.variance);
        if fused {
            result.output
        } else {
            activate(result.output, activation)
        }
    }
}

/// `conv`'s stride, padding, dilation and groups as [`conv_op::conv2d`] takes them, when its
/// padding is explicit (as every conv dnal builds has, in a gated network or from an export).
pub fn explicit_conv_options(conv: &Conv2d) -> Option<ConvOptions<2>> {
    match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => Some(ConvOptions::new_with_padding(
            conv.stride,
            [(top, bottom), (left, right)],
            conv.dilation,
            conv.groups,
        )),
        _ => None,
    }
}

/// Configuration of a [`GatedNet`].
#[derive(Config, Debug)]
pub struct GatedNetConfig {
    /// The architecture.
    pub spec: NetSpec,
    /// Where the gates sit.
    #[config(default = "GatePosition::AfterBn")]
    pub gate_position: GatePosition,
}

impl GatedNetConfig {
    /// Builds the network with freshly initialised weights (Kaiming normal, fan-out, as for
    /// ReLU nets), BN at identity and every gate at `s = 0`.
    pub fn init(&self, device: &Device) -> Result<GatedNet, ModelError> {
        let plan = NetPlan::new(self.spec.clone(), self.gate_position)?;
        let mut convs = Vec::new();
        let mut linears = Vec::new();
        for node in &plan.spec.nodes {
            let input = plan.shapes[node.inputs[0]];
            match &node.op {
                Op::Conv {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    depthwise,
                    ..
                } => {
                    let groups = if *depthwise { input.channels } else { 1 };
                    let conv =
                        Conv2dConfig::new([input.channels, *out_channels], [*kernel, *kernel])
                            .with_stride([*stride, *stride])
                            .with_padding(PaddingConfig2d::Explicit(
                                *padding, *padding, *padding, *padding,
                            ))
                            .with_groups(groups)
                            .with_bias(false)
                            .with_initializer(Initializer::KaimingNormal {
                                gain: std::f64::consts::SQRT_2,
                                fan_out_only: true,
                            })
                            .init(device);
                    let bn = BatchNormConfig::new(*out_channels).init(device);
                    convs.push(ConvBn { conv, bn });
                }
                Op::Linear { out_features, .. } => {
                    linears.push(LinearConfig::new(input.len(), *out_features).init(device));
                }
                _ => {}
            }
        }
        let gates = plan
            .groups
            .group_of_gate
            .iter()
            .map(|&g| GateConfig::new(plan.groups.groups[g].channels).init(device))
            .collect();
        Ok(GatedNet {
            convs,
            linears,
            gates,
            plan: Arc::new(plan),
        })
    }
}

/// Any [`NetSpec`] as a burn module, with one [`Gate`] per prunable channel group. Every conv
/// that writes a group applies that group's gate, so coupled channels (residual joins) open and
/// close together.
///
/// # Shapes
/// - input: `[batch, channels, height, width]` as in the spec's `input`
/// - output: `[batch, num_classes]`
#[derive(Module, Debug)]
pub struct GatedNet {
    /// Conv-BN pairs, one per conv node, in node order.
    pub convs: Vec<ConvBn>,
    /// Linear layers, one per linear node, in node order.
    pub linears: Vec<Linear>,
    /// One gate per prunable channel group.
    pub gates: Vec<Gate>,
    /// The architecture and what follows from it.
    #[module(skip)]
    pub plan: Arc<NetPlan>,
}

/// The batch norm's fused form of `activation`.
fn rectifier_of(activation: Activation) -> Rectifier {
    match activation {
        Activation::None => Rectifier::None,
        Activation::Relu => Rectifier::Relu,
        Activation::Relu6 => Rectifier::Relu6,
    }
}

fn activate<const D: usize>(x: Tensor<D>, activation: Activation) -> Tensor<D> {
    match activation {
        Activation::None => x,
        Activation::Relu => activation::relu(x),
        Activation::Relu6 if x.device() == Device::flex() => relu6_by_relus(x),
        Activation::Relu6 => x.clamp(0.0, 6.0),
    }
}

/// ReLU6 as `relu(x) - relu(x - 6)`, for the CPU backend where it runs apart from the batch
/// norm's fused passes (a frozen batch norm, as in a `--gate-norm running` gate stage; a
/// forward pass without autodiff): burn's `clamp` there is two compares and two masked fills
/// each way, which took a third of a supernet gate-stage step when the gate still sat between
/// the batch norm and the rectifier as an op of its own; two ReLUs ran that step at 1.46x.
/// Exact for `|x| < 2^24`, where `x - 6` is exact, and so is its gradient (1 on `(0, 6]`, else
/// 0); beyond, an activation no trained network reaches, it may round.
fn relu6_by_relus<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    activation::relu(x.clone()) - activation::relu(x.sub_scalar(6.0))
}

impl GatedNet {
    /// The architecture.
    pub fn spec(&self) -> &NetSpec {
        &self.plan.spec
    }

    /// Runs the network with the gates in `mode`.
    pub fn forward(&self, x: Tensor<4>, mode: GateMode) -> Tensor<2> {
        let plan = &*self.plan;
        let batch = x.dims()[0];
        let mut values: Vec<Option<Tensor<4>>> = vec![None; plan.shapes.len()];
        values[0] = Some(x);
        for (index, node) in plan.spec.nodes.iter().enumerate() {
            // The last reader takes a value instead of cloning it, so backends may reuse its
            // memory in place.
            let mut take = |v: usize| -> Tensor<4> {
                let last = plan.last_use[v] == index
                    && node.inputs.iter().filter(|&&u| u == v).count() == 1;
                let value = if last {
                    values[v].take()
                } else {
                    values[v].clone()
                };
                value.expect("values are computed before they are read")
            };
            let out = match &node.op {
                Op::Conv { activation, .. } => {
                    let unit = &self.convs[plan.slot[index]];
                    let gate = plan.groups.gate_of_value(index + 1).map(|g| &self.gates[g]);
                    let gated = |y: Tensor<4>, at: GatePosition| match gate {
                        Some(gate) if plan.gate_position == at => gate.forward(y, mode),
                        _ => y,
                    };
                    let y = unit.conv_forward(take(node.inputs[0]));
                    let y = gated(y, GatePosition::BeforeBn);
                    // A gate between the batch norm and the rectifier is folded into the batch
                    // norm, so that the rectifier still runs with it (in one pass on the CPU).
                    let gate_between = gate
                        .filter(|_| plan.gate_position == GatePosition::AfterBn)
                        .and_then(|gate| gate.values(mode));
                    let y = unit.bn_forward_gated(y, gate_between, *activation);
                    gated(y, GatePosition::AfterActivation)
                }
                Op::MaxPool { kernel, stride } => {
                    max_pool_op::max_pool2d(take(node.inputs[0]), *kernel, *stride)
                }
                Op::AvgPool { kernel, stride } => AvgPool2dConfig::new([*kernel, *kernel])
                    .with_strides([*stride, *stride])
                    .init()
                    .forward(take(node.inputs[0])),
                Op::GlobalAvgPool => take(node.inputs[0]).mean_dim(3).mean_dim(2),
                Op::Add { activation } => {
                    let mut sum = take(node.inputs[0]);
                    for &v in &node.inputs[1..] {
                        sum = sum + take(v);
                    }
                    activate(sum, *activation)
                }
                Op::Linear {
                    out_features,
                    activation,
                } => {
                    let x = take(node.inputs[0]);
                    let [b, c, h, w] = x.dims();
                    let y = self.linears[plan.slot[index]].forward(x.reshape([b, c * h * w]));
                    activate(y, *activation).reshape([b, *out_features, 1, 1])
                }
            };
            values[index + 1] = Some(out);
        }
        let logits = values
            .pop()
            .flatten()
            .expect("the last node writes the logits");
        logits.reshape([batch, plan.spec.num_classes])
    }

    /// Multiply-accumulates of one forward pass of one image.
    pub fn flops(&self) -> u64 {
        self.plan.total_flops()
    }

    /// Weights and biases with batch norm folded into the convs (gates and running statistics
    /// are not counted).
    pub fn params(&self) -> u64 {
        self.plan.total_params()
    }

    /// Live channels per gate (`s > 0`).
    pub fn alive_per_gate(&self) -> Vec<usize> {
        self.gates
            .iter()
            .map(|g| g.alive().iter().filter(|&&a| a).count())
            .collect()
    }

    /// A name for every gate: the layers that write its group.
    pub fn gate_names(&self) -> Vec<String> {
        self.plan
            .groups
            .group_of_gate
            .iter()
            .map(|&g| self.plan.groups.describe(&self.plan.spec, g))
            .collect()
    }

    /// Channels per gate in this network.
    pub fn channels_per_gate(&self) -> Vec<usize> {
        self.plan
            .groups
            .group_of_gate
            .iter()
            .map(|&g| self.plan.groups.groups[g].channels)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecBuilder;
    use burn::tensor::activation::sigmoid;
    use burn::tensor::{Distribution, TensorData};

    /// On the CPU, with autodiff, ReLU6 by two ReLUs gives `clamp(0, 6)`'s values exactly and
    /// its gradient (1 inside, 0 outside; at the ends what it is on `(0, 6]`), at the edges and
    /// far past them.
    #[test]
    fn relu6_by_relus_is_clamp() {
        let device = Device::flex().autodiff();
        let values = [
            -1e6, -7.0, -1e-30, -0.0, 0.0, 1e-30, 1e-7, 0.5, 5.9999995, 6.0, 6.0000005, 11.5, 12.0,
            1e3, 1.6e7,
        ];
        let x = Tensor::<1>::from_floats(values, &device).require_grad();
        let y = relu6_by_relus(x.clone());
        let got = y.clone().into_data().try_to_vec::<f32>().unwrap();
        let want: Vec<f32> = values.iter().map(|v: &f32| v.clamp(0.0, 6.0)).collect();
        assert_eq!(got, want);
        let grads = y.sum().backward();
        let dx = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let inside: Vec<f32> = values
            .iter()
            .map(|&v| if v > 0.0 && v <= 6.0 { 1.0 } else { 0.0 })
            .collect();
        assert_eq!(dx, inside);
    }

    /// In training, `bn_forward` (dnal's fused batch norm, with no activation, ReLU or ReLU6) gives
    /// burn's output and moves the running statistics exactly as burn's `BatchNorm::forward`
    /// does; frozen, it uses them.
    #[test]
    fn bn_forward_trains_like_burns_batch_norm() {
        let device = Device::flex().autodiff();
        let block = |device: &Device| ConvBn {
            conv: Conv2dConfig::new([2, 3], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(3).init(device),
        };
        // Two fresh blocks, not clones: clones share their running statistics.
        let (ours, theirs) = (block(&device), block(&device));
        let diff = |a: Tensor<1>, b: Tensor<1>| (a - b).abs().max().into_scalar::<f32>();
        for step in 0..3 {
            let x = Tensor::<4>::random(
                [4, 3, 5, 5],
                Distribution::Normal(step as f64, 2.0),
                &device,
            );
            let act = [Activation::None, Activation::Relu, Activation::Relu6][step % 3];
            let a = ours.bn_forward(x.clone(), act);
            let b = activate(theirs.bn.forward(x), act);
            assert!(
                (a - b).abs().max().into_scalar::<f32>() < 1e-4,
                "step {step}: output"
            );
            let running = |c: &ConvBn| {
                (
                    c.bn.running_mean.value_sync(),
                    c.bn.running_var.value_sync(),
                )
            };
            let ((m1, v1), (m2, v2)) = (running(&ours), running(&theirs));
            assert!(diff(m1.clone(), m2) < 1e-5, "step {step}: running mean");
            assert!(diff(v1, v2) < 1e-4, "step {step}: running variance");
            assert!(
                m1.abs().sum().into_scalar::<f32>() > 0.0,
                "the running mean moved"
            );
        }
        // Frozen: the running statistics are used and left alone.
        let frozen = ConvBn {
            conv: ours.conv.clone(),
            bn: ours.bn.clone().freeze(),
        };
        let before = frozen.bn.running_mean.value_sync();
        let x = Tensor::<4>::random([4, 3, 5, 5], Distribution::Normal(5.0, 1.0), &device);
        let (a, b) = (
            frozen.bn_forward(x.clone(), Activation::Relu),
            frozen.bn.forward(x),
        );
        assert!((a - activation::relu(b)).abs().max().into_scalar::<f32>() < 1e-6);
        assert_eq!(diff(before, frozen.bn.running_mean.value_sync()), 0.0);
    }

    /// A gate folded into the batch norm (`bn_forward_gated`) computes what the gate applied
    /// between the batch norm and the rectifier computes, and passes back the same gradients
    /// to the input, the batch norm's scale and shift, and the gate's `s`.
    #[test]
    fn a_gate_folded_into_the_batch_norm_acts_as_one_between_it_and_the_rectifier() {
        let device = Device::flex().autodiff();
        let block = ConvBn {
            conv: Conv2dConfig::new([2, 3], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(&device),
            bn: BatchNormConfig::new(3).init(&device),
        };
        let shape = [4, 3, 5, 5];
        let x = Tensor::<4>::random(shape, Distribution::Normal(1.0, 2.0), &device);
        // Weights that make the loss depend on every output differently.
        let w = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let s = Tensor::<1>::from_data(TensorData::new(vec![-0.4f32, 0.1, 0.7], [3]), &device);
        let values = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
        let grads_of = |folded: bool, act: Activation| {
            let x = x.clone().detach().require_grad();
            let s = s.clone().detach().require_grad();
            let g = sigmoid(s.clone().mul_scalar(3.0));
            let y = if folded {
                block.bn_forward_gated(x.clone(), Some(g), act)
            } else {
                let y = block.bn_forward(x.clone(), Activation::None);
                activate(y * g.reshape([1, 3, 1, 1]), act)
            };
            let out = values(y.clone());
            let grads = (y * w.clone()).sum().backward();
            let vec = |t: Option<Tensor<1>>| t.unwrap().into_data().try_to_vec::<f32>().unwrap();
            let dx = values(x.grad(&grads).unwrap());
            let ds = vec(s.grad(&grads));
            let dgamma = vec(block.bn.gamma.val().grad(&grads));
            let dbeta = vec(block.bn.beta.val().grad(&grads));
            (out, dx, ds, dgamma, dbeta)
        };
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len());
            for (i, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                    "{what}[{i}]: folded {p}, between {q}"
                );
            }
        };
        for act in [Activation::None, Activation::Relu, Activation::Relu6] {
            let folded = grads_of(true, act);
            let between = grads_of(false, act);
            close(&folded.0, &between.0, &format!("{act:?} output"));
            close(&folded.1, &between.1, &format!("{act:?} dx"));
            close(&folded.2, &between.2, &format!("{act:?} ds"));
            close(&folded.3, &between.3, &format!("{act:?} dgamma"));
            close(&folded.4, &between.4, &format!("{act:?} dbeta"));
            assert!(
                folded.2.iter().all(|d| *d != 0.0),
                "{act:?}: ds {:?}",
                folded.2
            );
        }
    }

    #[test]
    fn forward_gives_logits_and_off_gates_change_nothing() {
        let device = Device::flex();
        let mut b = SpecBuilder::new("t", Shape3::new(2, 6, 6), 3);
        let c = b.conv("c", 0, 4, 3, 1, Activation::Relu);
        let g = b.push("gap", Op::GlobalAvgPool, vec![c]);
        b.push(
            "fc",
            Op::Linear {
                out_features: 3,
                activation: Activation::None,
            },
            vec![g],
        );
        let net = GatedNetConfig::new(b.finish())
            .init(&device)
            .unwrap()
            .valid();
        let x = Tensor::<4>::ones([5, 2, 6, 6], &device);
        let off = net.forward(x.clone(), GateMode::Off);
        assert_eq!(off.dims(), [5, 3]);
        // At s = 0 a soft gate halves every channel; a hard gate closes them all.
        let hard = net
            .forward(x, GateMode::Hard)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let bias = net.linears[0].bias.as_ref().unwrap().val().into_data();
        let bias = bias.try_to_vec::<f32>().unwrap();
        for row in hard.chunks(3) {
            for (v, b) in row.iter().zip(&bias) {
                assert!((v - b).abs() < 1e-6);
            }
        }
        assert_eq!(net.flops(), 6 * 6 * 4 * 2 * 9 + 4 * 3);
    }
}
