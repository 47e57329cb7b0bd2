//! Small random exports, for tests and benchmarks (the same format `dnal search` writes).

use std::collections::BTreeMap;

use dnal_export::{
    AddSpec, Arch, Conv2dSpec, Export, ExportError, Layer, LinearSpec, Op, PoolSpec, Tensor,
};
use dnal_kernels::{Activation, Shape3};

/// A dense or depthwise conv layer spec.
pub fn conv(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    depthwise: bool,
    activation: Activation,
) -> Op {
    Op::Conv2d(Conv2dSpec {
        in_channels,
        out_channels,
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: [padding, padding],
        groups: if depthwise { in_channels } else { 1 },
        activation,
        kept_channels: (0..out_channels).collect(),
    })
}

pub fn pool(max: bool, kernel: usize, stride: usize, padding: usize) -> Op {
    let spec = PoolSpec {
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: [padding, padding],
    };
    if max {
        Op::MaxPool2d(spec)
    } else {
        Op::AvgPool2d(spec)
    }
}

pub fn linear(in_features: usize, out_features: usize, activation: Activation) -> Op {
    Op::Linear(LinearSpec {
        in_features,
        out_features,
        activation,
    })
}

pub fn add(activation: Activation) -> Op {
    Op::Add(AddSpec { activation })
}

/// A small network that uses every op: dense, depthwise and pointwise conv, a residual add,
/// max, average and global pooling, and a linear classifier. Input 3x12x12, 10 classes.
pub fn tiny_cnn_arch(name: &str) -> Arch {
    use Activation::*;
    let layers = vec![
        Layer::new("conv1", vec![0], conv(3, 8, 3, 1, 1, false, Relu)),
        Layer::new("dw", vec![1], conv(8, 8, 3, 1, 1, true, Relu6)),
        Layer::new("pw", vec![2], conv(8, 8, 1, 1, 0, false, None)),
        Layer::new("res", vec![1, 3], add(Relu)),
        Layer::new("pool", vec![4], pool(true, 2, 2, 0)),
        Layer::new("conv2", vec![5], conv(8, 6, 3, 2, 1, false, Relu)),
        Layer::new("avg", vec![6], pool(false, 3, 1, 1)),
        Layer::new("gap", vec![7], Op::GlobalAvgPool),
        Layer::new("fc", vec![8], linear(6, 10, None)),
    ];
    let mut arch = Arch::new(name, Shape3::new(3, 12, 12), 10, layers);
    arch.dataset = "synthetic".into();
    arch
}

/// The host's default model, `vgg-small`, unpruned: five 3x3 conv layers (stride 1, padding
/// 1, relu) 32-32-M-64-64-M-128 on 1x28x28, 2x2 max pools, global average pooling and a
/// linear classifier to 10 classes, with the host's layer names.
pub fn vgg_small_arch() -> Arch {
    use Activation::*;
    let layers = vec![
        Layer::new("conv1", vec![0], conv(1, 32, 3, 1, 1, false, Relu)),
        Layer::new("conv2", vec![1], conv(32, 32, 3, 1, 1, false, Relu)),
        Layer::new("pool1", vec![2], pool(true, 2, 2, 0)),
        Layer::new("conv3", vec![3], conv(32, 64, 3, 1, 1, false, Relu)),
        Layer::new("conv4", vec![4], conv(64, 64, 3, 1, 1, false, Relu)),
        Layer::new("pool2", vec![5], pool(true, 2, 2, 0)),
        Layer::new("conv5", vec![6], conv(64, 128, 3, 1, 1, false, Relu)),
        Layer::new("gap", vec![7], Op::GlobalAvgPool),
        Layer::new("fc", vec![8], linear(128, 10, None)),
    ];
    let mut arch = Arch::new("vgg-small", Shape3::new(1, 28, 28), 10, layers);
    arch.dataset = "synthetic".into();
    arch.complete().expect("vgg-small is a valid network");
    arch
}

/// A pruned variant of `arch`: the dense conv and linear layers named in `out_channels` get
/// that many output channels, and every later layer's input side follows (depthwise convs,
/// pools and adds keep their input's count; a linear layer reads its input's values).
/// Shapes and totals are recomputed.
pub fn with_channels(
    arch: &Arch,
    out_channels: &BTreeMap<String, usize>,
) -> Result<Arch, ExportError> {
    let mut arch = arch.clone();
    arch.complete()?;
    // Spatial sizes do not depend on channel counts: the parent's shapes give them.
    let mut shapes = vec![arch.input];
    shapes.extend(arch.layers.iter().map(|l| l.output));
    for (i, layer) in arch.layers.iter_mut().enumerate() {
        let input = shapes[layer.inputs[0]];
        let wanted = out_channels.get(&layer.name).copied();
        let out = match &mut layer.op {
            Op::Conv2d(c) if c.is_depthwise() => {
                c.in_channels = input.channels;
                c.out_channels = input.channels;
                c.groups = input.channels;
                c.kept_channels = (0..input.channels).collect();
                input.channels
            }
            Op::Conv2d(c) => {
                c.in_channels = input.channels;
                c.out_channels = wanted.unwrap_or(c.out_channels);
                c.kept_channels = (0..c.out_channels).collect();
                c.out_channels
            }
            Op::Linear(l) => {
                l.in_features = input.len();
                l.out_features = wanted.unwrap_or(l.out_features);
                l.out_features
            }
            _ => input.channels,
        };
        shapes[i + 1].channels = out;
    }
    arch.num_classes = shapes[arch.layers.len()].len();
    arch.complete()?;
    Ok(arch)
}

/// Completes `arch` (shapes and totals) and fills it with deterministic random weights
/// (uniform, scaled by 1/sqrt(fan-in) so activations stay near unit size).
pub fn random_export(mut arch: Arch, seed: u64) -> Result<Export, ExportError> {
    let summary = arch.complete()?;
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut tensors = BTreeMap::new();
    for layer in &summary.layers {
        if let Some([w, b]) = &layer.tensor_shapes {
            let fan_in: usize = w[1..].iter().product();
            let scale = 1.0 / (fan_in as f32).sqrt();
            let n: usize = w.iter().product();
            let weights = (0..n).map(|_| next() * scale * 1.7).collect();
            let bias = (0..b[0]).map(|_| next() * 0.1).collect();
            tensors.insert(
                format!("{}.weight", layer.name),
                Tensor::new(w.clone(), weights),
            );
            tensors.insert(format!("{}.bias", layer.name), Tensor::new(b.clone(), bias));
        }
    }
    Export::new(arch, tensors)
}

/// A latency table for `arch` on `board` over the grid [`crate::latency::profile`] would
/// measure, with costs from `cost(structure, in_channels, out_channels)` instead of a board:
/// for tests of code that reads tables (interpolation, predictions, errors) without QEMU.
/// The overhead is 0 and there is no calibration.
pub fn modelled_latency_table(
    arch: &Arch,
    board: &str,
    grid: &crate::latency::GridOptions,
    cost: impl Fn(&crate::latency::LayerStructure, usize, usize) -> f64,
) -> Result<crate::latency::LatencyTable, crate::latency::LatencyError> {
    crate::latency::modelled_table(arch, board, grid, cost)
}
