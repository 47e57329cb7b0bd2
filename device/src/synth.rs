//! Small random exports, for tests and benchmarks (the same format `dnal search` writes).

use std::collections::BTreeMap;

use crate::export::{
    AddSpec, Arch, Conv2dSpec, Export, ExportError, Layer, LinearSpec, Op, PoolSpec, Tensor,
};
use crate::kernels::{Activation, Shape3};

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
