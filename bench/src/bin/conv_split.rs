//! Where a training step's convolution time goes: for every conv layer of a model, the
//! milliseconds of its forward pass, of forward + the weight gradient, and of forward + the
//! input gradient, at one batch size, on the CPU backend, with dnal's kernels (`--kernels
//! dnal`, the default: `dnal_train_kernels::conv_op`, im2col + gemm) or burn flex's own (`--kernels
//! burn`). Prints one JSON line per layer.
//!
//! `bench/conv_split.sh` runs both next to PyTorch on the same layers.
//!
//! ```text
//! cargo run --release -p dnal-bench --bin conv_split -- --model vgg-small --input 1,28,28 --batch 64
//! cargo run --release -p dnal-bench --bin conv_split -- --model mobilenetv2 --width 0.35
//! ```

use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Distribution, Tensor};
use dnal::backend::Backend;
use dnal_bench::{LayerBenchArgs, best_ms};
use dnal_models::{Op, Shape3};
use dnal_train_kernels::conv_op::conv2d as dnal_conv2d;

/// Which gradient the backward pass computes.
#[derive(Clone, Copy)]
enum Grad {
    Weight,
    Input,
}

/// Whose convolution kernels run.
#[derive(Clone, Copy)]
enum Kernels {
    /// burn flex's `conv2d`.
    Burn,
    /// dnal's `conv_op::conv2d` (what `GatedNet` trains with).
    Dnal,
}

impl Kernels {
    fn conv2d(self, x: Tensor<4>, w: Tensor<4>, opts: &ConvOptions<2>) -> Tensor<4> {
        match self {
            Kernels::Burn => burn_conv2d(x, w, None, opts.clone()),
            Kernels::Dnal => dnal_conv2d(x, w, opts.clone()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kernels::Burn => "burn-flex",
            Kernels::Dnal => "dnal",
        }
    }
}

/// Forward and backward of one conv on the autodiff device; waits for the gradient.
fn forward_backward(
    kernels: Kernels,
    x: &Tensor<4>,
    w: &Tensor<4>,
    g: &Tensor<4>,
    opts: &ConvOptions<2>,
    grad: Grad,
) {
    let (x, w) = match grad {
        Grad::Weight => (x.clone(), w.clone().require_grad()),
        Grad::Input => (x.clone().require_grad(), w.clone()),
    };
    let y = kernels.conv2d(x.clone(), w.clone(), opts);
    let grads = (y * g.clone()).sum().backward();
    let tracked = match grad {
        Grad::Weight => w,
        Grad::Input => x,
    };
    let _ = tracked
        .grad(&grads)
        .expect("a tracked tensor gets a gradient")
        .sum()
        .into_scalar::<f32>();
}

fn main() {
    let mut kernels = Kernels::Dnal;
    let args = LayerBenchArgs {
        model: "vgg-small".into(),
        width: None,
        input: Shape3::new(1, 28, 28),
        batch: 64,
        runs: 21,
    }
    .parse(|flag, value| {
        if flag != "--kernels" {
            return false;
        }
        kernels = match value().as_str() {
            "burn" => Kernels::Burn,
            "dnal" => Kernels::Dnal,
            other => panic!("--kernels is burn or dnal, not {other}"),
        };
        true
    });
    let (batch, runs) = (args.batch, args.runs);
    dnal::allocator::keep_freed_memory();
    let plan = args.plan();
    let device: Device = Backend::Cpu.device().expect("the CPU backend");
    let train = device.clone().autodiff();
    let macs_per_node = plan
        .flops
        .per_node(plan.spec.nodes.len(), &plan.full_counts());
    for (index, node) in plan.spec.nodes.iter().enumerate() {
        let Op::Conv {
            out_channels,
            kernel,
            stride,
            padding,
            depthwise,
            ..
        } = node.op
        else {
            continue;
        };
        let s = plan.shapes[node.inputs[0]];
        let out = plan.shapes[index + 1];
        let groups = if depthwise { s.channels } else { 1 };
        let opts = ConvOptions::new([stride; 2], [padding; 2], [1, 1], groups);
        let normal = Distribution::Normal(0.0, 1.0);
        let w_shape = [out_channels, s.channels / groups, kernel, kernel];
        let x_shape = [batch, s.channels, s.height, s.width];
        let g_shape = [batch, out_channels, out.height, out.width];
        let (x, w) = (
            Tensor::<4>::random(x_shape, normal, &device),
            Tensor::<4>::random(w_shape, normal, &device),
        );
        let forward = best_ms(runs, || {
            let y = kernels.conv2d(x.clone(), w.clone(), &opts);
            let _ = y.sum().into_scalar::<f32>();
        });
        let (x, w, g) = (
            Tensor::<4>::random(x_shape, normal, &train),
            Tensor::<4>::random(w_shape, normal, &train),
            Tensor::<4>::random(g_shape, normal, &train),
        );
        let with_weight_grad = best_ms(runs, || {
            forward_backward(kernels, &x, &w, &g, &opts, Grad::Weight)
        });
        let with_input_grad = best_ms(runs, || {
            forward_backward(kernels, &x, &w, &g, &opts, Grad::Input)
        });
        let macs = batch as f64 * macs_per_node[index];
        println!(
            "{{\"framework\": \"{}\", \"layer\": \"{}\", \"in\": [{}, {}, {}], \"out_channels\": {}, \"kernel\": {}, \"stride\": {}, \"padding\": {}, \"groups\": {}, \"batch\": {}, \"macs\": {:.0}, \"forward_ms\": {:.3}, \"forward_weight_grad_ms\": {:.3}, \"forward_input_grad_ms\": {:.3}}}",
            kernels.name(),
            node.name,
            s.channels,
            s.height,
            s.width,
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            batch,
            macs,
            forward,
            with_weight_grad,
            with_input_grad
        );
    }
}
