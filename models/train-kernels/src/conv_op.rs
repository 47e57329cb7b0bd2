//! The convolution the gated nets train with: burn's `conv2d` everywhere, except that on the
//! flex CPU backend the forward pass and both gradients run as im2col + gemm
//! ([`conv_gemm`]), or by Winograd F(2x2, 3x3)
//! ([`conv_winograd`]) for the 3x3 layers where that
//! [pays off](conv_winograd::pays_off), with a backward pass of our own for autodiff.
//!
//! burn lets a crate add backend operations through a backend extension: [`ConvGemmOps`] is
//! implemented for every backend dnal runs on; only flex overrides the default bodies (which
//! are burn's own kernels), and `Autodiff<B>` records a backward step that calls the inner
//! backend's gradient methods, so GPU backends keep burn's kernels unchanged.

// ndarray is deprecated upstream but still a `--backend` dnal measures against: the extension
// routes it like every backend burn is built with, and the generated routing names it too.
#![allow(deprecated)]

use crate::flex_slices::{contiguous, f32s, from_f32s};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ConvOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, NdArray, TensorMetadata, backend_extension};
use burn::tensor::{DType, Tensor};

use crate::conv_depthwise;
use crate::conv_gemm::{self, ConvGeometry};
use crate::conv_winograd;

/// A 2-D convolution without bias, with its two gradients as separate operations so that a
/// backend can replace any of them.
///
/// # Shapes
/// - `x`: `[batch, in_channels, height, width]`
/// - `weight`: `[out_channels, in_channels / groups, kh, kw]`
/// - output and `output_grad`: `[batch, out_channels, out_h, out_w]`
#[backend_extension(Flex, NdArray, Cube, Autodiff)]
pub trait ConvGemmOps: Backend {
    /// The forward convolution.
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// The gradient of the loss w.r.t. `weight`, given the gradient w.r.t. the output.
    fn conv2d_gemm_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, options)
    }

    /// The gradient of the loss w.r.t. `x`, given the gradient w.r.t. the output.
    fn conv2d_gemm_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, options)
    }

    /// Both gradients, w.r.t. `x` and `weight`, where a backend can share work between them.
    fn conv2d_gemm_grads(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        grads_apart::<Self>(x, weight, output_grad, options)
    }
}

/// Both gradients by the backend's two single-gradient methods.
fn grads_apart<B: ConvGemmOps>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    options: ConvOptions<2>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let input_grad = B::conv2d_gemm_input_grad(
        x.clone(),
        weight.clone(),
        output_grad.clone(),
        options.clone(),
    );
    let weight_grad = B::conv2d_gemm_weight_grad(x, weight, output_grad, options);
    (input_grad, weight_grad)
}

/// A convolution without bias: im2col + gemm on flex (forward and backward), burn's kernels on
/// every other backend. Same arguments and result as `burn::tensor::module::conv2d` with no
/// bias.
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvGemmOps>::conv2d_gemm(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ))
}

// GPU and the slow CPU backend: burn's kernels (the trait's default bodies).
impl ConvGemmOps for Cube {}
impl ConvGemmOps for NdArray {}

/// The geometry of a flex convolution the im2col kernels cover: `f32`, no groups, symmetric
/// padding, a kernel that fits the padded input. `None` sends the call to burn's kernels.
fn flex_geometry(
    x: &FlexTensor,
    weight: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<ConvGeometry> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return None;
    }
    if options.groups != 1 || options.is_asymmetric() {
        return None;
    }
    let dims = |t: &FlexTensor| (t.rank() == 4).then(|| t.shape().dims::<4>());
    let (input, kernel) = (dims(x)?, dims(weight)?);
    if input[1] != kernel[1] || kernel[2] == 0 || kernel[3] == 0 {
        return None;
    }
    let padding = options.padding_begin();
    // Checked after the zero-size kernels above, so `kernel - 1` cannot wrap.
    let fits = (0..2).all(|axis| {
        input[2 + axis] + 2 * padding[axis] > options.dilation[axis] * (kernel[2 + axis] - 1)
    });
    if !fits {
        return None;
    }
    Some(ConvGeometry::new(
        input,
        kernel,
        options.stride,
        padding,
        options.dilation,
    ))
}

/// The geometry of a flex convolution the depthwise kernels cover (see
/// [`conv_depthwise::geometry`]); `None` for any other.
fn flex_depthwise(
    x: &FlexTensor,
    weight: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<ConvGeometry> {
    if options.groups == 1
        || options.is_asymmetric()
        || x.dtype() != DType::F32
        || weight.dtype() != DType::F32
        || x.rank() != 4
        || weight.rank() != 4
    {
        return None;
    }
    conv_depthwise::geometry(
        x.shape().dims::<4>(),
        weight.shape().dims::<4>(),
        options.groups,
        options.stride,
        options.padding_begin(),
        options.dilation,
    )
}

impl ConvGemmOps for Flex {
    fn conv2d_gemm(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        if let Some(g) = flex_depthwise(&x, &weight, &options) {
            let (x, weight) = (contiguous(x), contiguous(weight));
            let y = conv_depthwise::forward(f32s(&x), f32s(&weight), &g);
            return from_f32s(y, [g.batch, g.out_channels, g.out_h, g.out_w]);
        }
        let Some(g) = flex_geometry(&x, &weight, &options) else {
            return Self::conv2d(x, weight, None, options);
        };
        let (x, weight) = (contiguous(x), contiguous(weight));
        let y = if conv_winograd::pays_off(&g) {
            conv_winograd::conv2d_forward(f32s(&x), f32s(&weight), &g)
        } else {
            conv_gemm::conv2d_forward(f32s(&x), f32s(&weight), None, &g)
        };
        from_f32s(y, [g.batch, g.out_channels, g.out_h, g.out_w])
    }

    fn conv2d_gemm_weight_grad(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        if let Some(g) = flex_depthwise(&x, &weight, &options) {
            let (x, dy) = (contiguous(x), contiguous(output_grad));
            let dw = conv_depthwise::weight_grad(f32s(&x), f32s(&dy), &g);
            return from_f32s(dw, [g.out_channels, 1, g.kh, g.kw]);
        }
        let Some(g) = flex_geometry(&x, &weight, &options) else {
            return Self::conv2d_weight_backward(x, weight, output_grad, options);
        };
        let (x, dy) = (contiguous(x), contiguous(output_grad));
        let dw = if conv_winograd::pays_off(&g) {
            conv_winograd::conv2d_weight_grad(f32s(&x), f32s(&dy), &g)
        } else {
            conv_gemm::conv2d_weight_grad(f32s(&x), f32s(&dy), &g)
        };
        from_f32s(dw, [g.out_channels, g.in_channels, g.kh, g.kw])
    }

    fn conv2d_gemm_input_grad(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        if let Some(g) = flex_depthwise(&x, &weight, &options) {
            let (weight, dy) = (contiguous(weight), contiguous(output_grad));
            let dx = conv_depthwise::input_grad(f32s(&dy), f32s(&weight), &g);
            return from_f32s(dx, [g.batch, g.in_channels, g.in_h, g.in_w]);
        }
        let Some(g) = flex_geometry(&x, &weight, &options) else {
            return Self::conv2d_x_backward(x, weight, output_grad, options);
        };
        let (weight, dy) = (contiguous(weight), contiguous(output_grad));
        let dx = if conv_winograd::pays_off(&g) {
            conv_winograd::conv2d_input_grad(f32s(&dy), f32s(&weight), &g)
        } else {
            conv_gemm::conv2d_input_grad(f32s(&dy), f32s(&weight), &g)
        };
        from_f32s(dx, [g.batch, g.in_channels, g.in_h, g.in_w])
    }

    fn conv2d_gemm_grads(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> (FlexTensor, FlexTensor) {
        // Winograd layers and burn's fall-backs compute the two apart.
        let Some(g) = flex_geometry(&x, &weight, &options).filter(|g| !conv_winograd::pays_off(g))
        else {
            return grads_apart::<Self>(x, weight, output_grad, options);
        };
        let [x, weight, dy] = [x, weight, output_grad].map(contiguous);
        let (dx, dw) = conv_gemm::conv2d_grads(f32s(&x), f32s(&dy), f32s(&weight), &g);
        (
            from_f32s(dx, [g.batch, g.in_channels, g.in_h, g.in_w]),
            from_f32s(dw, [g.out_channels, g.in_channels, g.kh, g.kw]),
        )
    }
}

/// The backward step of [`ConvGemmOps::conv2d_gemm`] under autodiff: both gradients come from
/// the inner backend's `conv2d_gemm_*_grad`.
#[derive(Debug)]
struct Conv2dGemmBackward;

impl<B: Backend + ConvGemmOps> Backward<B, 2> for Conv2dGemmBackward {
    /// The checkpointed input and weight, and the options.
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (x_id, weight_id, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_id);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_id);
        match (node_x, node_weight) {
            (Some(node_x), Some(node_weight)) => {
                let (x_grad, weight_grad) = B::conv2d_gemm_grads(x, weight, output_grad, options);
                grads.register::<B>(node_x.id, x_grad);
                grads.register::<B>(node_weight.id, weight_grad);
            }
            (Some(node), None) => {
                let grad = B::conv2d_gemm_input_grad(x, weight, output_grad, options);
                grads.register::<B>(node.id, grad);
            }
            (None, Some(node)) => {
                let grad = B::conv2d_gemm_weight_grad(x, weight, output_grad, options);
                grads.register::<B>(node.id, grad);
            }
            (None, None) => {}
        }
    }
}

impl<B: Backend + ConvGemmOps, C: CheckpointStrategy> ConvGemmOps for Autodiff<B, C> {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match Conv2dGemmBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let weight_id = prep.checkpoint(&weight);
                let y =
                    B::conv2d_gemm(x.into_primitive(), weight.into_primitive(), options.clone());
                prep.finish((x_id, weight_id, options), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv2d_gemm(
                x.into_primitive(),
                weight.into_primitive(),
                options,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::{Device, Distribution};

    use super::*;

    fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Output, input gradient and weight gradient of `conv` on the autodiff `device`, for
    /// the loss `sum(y * r)` with a fixed random `r`.
    fn run(
        device: &Device,
        conv: impl Fn(Tensor<4>, Tensor<4>) -> Tensor<4>,
        x: &Tensor<4>,
        w: &Tensor<4>,
        r: &Tensor<4>,
    ) -> [Tensor<4>; 3] {
        let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), device);
        let (x, w) = (on(x).require_grad(), on(w).require_grad());
        let y = conv(x.clone(), w.clone());
        let grads = (y.clone() * on(r)).sum().backward();
        let dx = x.grad(&grads).expect("x is tracked");
        let dw = w.grad(&grads).expect("w is tracked");
        [y.inner(), dx, dw]
    }

    /// On flex (im2col kernels) and ndarray (burn's, through the extension's routing), the
    /// output and both gradients equal burn's own conv2d's, for strides, padding, dilation,
    /// and the shapes the kernels hand back to burn (groups, asymmetric padding).
    #[test]
    fn output_and_gradients_match_burns_conv2d() {
        let cases: Vec<([usize; 4], [usize; 4], ConvOptions<2>)> = vec![
            (
                [4, 3, 9, 9],
                [8, 3, 3, 3],
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            ),
            (
                [2, 5, 11, 8],
                [6, 5, 3, 2],
                ConvOptions::new([2, 1], [1, 0], [1, 2], 1),
            ),
            (
                [3, 4, 6, 6],
                [4, 4, 1, 1],
                ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
            ),
            // Both gradients from the columns of dy (`conv_gemm::conv2d_grads`): stride 1, a
            // layer that does not widen, 14x14 planes, several images side by side.
            (
                [5, 4, 14, 14],
                [3, 4, 3, 3],
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            ),
            // Winograd F(2x2, 3x3) (`conv_winograd::pays_off`).
            (
                [2, 128, 6, 6],
                [160, 128, 3, 3],
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            ),
            // Depthwise (`conv_depthwise`): stride 1 and 2, padding 0 to 2, odd planes,
            // kernels 3 and 5, several images.
            (
                [2, 4, 7, 7],
                [4, 1, 3, 3],
                ConvOptions::new([1, 1], [1, 1], [1, 1], 4),
            ),
            (
                [3, 6, 9, 8],
                [6, 1, 3, 3],
                ConvOptions::new([2, 2], [1, 1], [1, 1], 6),
            ),
            (
                [2, 5, 11, 10],
                [5, 1, 5, 5],
                ConvOptions::new([2, 1], [2, 2], [1, 1], 5),
            ),
            (
                [2, 3, 6, 7],
                [3, 1, 3, 3],
                ConvOptions::new([1, 2], [0, 0], [1, 1], 3),
            ),
            // Stride 1 on planes of more than 16 outputs (`phases`), kernels 5 and 7: the
            // input gradient as the forward convolution with the filters turned.
            (
                [2, 3, 12, 11],
                [3, 1, 5, 5],
                ConvOptions::new([1, 1], [2, 2], [1, 1], 3),
            ),
            (
                [2, 2, 9, 10],
                [2, 1, 7, 7],
                ConvOptions::new([1, 1], [3, 1], [1, 1], 2),
            ),
            // A supernet's 7x7 candidate on the 2x2 planes of the last stages: taps that
            // reach no output at all.
            (
                [2, 3, 2, 2],
                [3, 1, 7, 7],
                ConvOptions::new([1, 1], [3, 3], [1, 1], 3),
            ),
            (
                [2, 3, 3, 2],
                [3, 1, 7, 7],
                ConvOptions::new([2, 2], [3, 3], [1, 1], 3),
            ),
            // Handed back to burn: a grouped conv that is not depthwise, dilation, and
            // asymmetric padding.
            (
                [2, 4, 7, 7],
                [6, 2, 3, 3],
                ConvOptions::new([1, 1], [1, 1], [1, 1], 2),
            ),
            (
                [2, 4, 9, 9],
                [4, 1, 3, 3],
                ConvOptions::new([1, 1], [2, 2], [2, 2], 4),
            ),
            (
                [2, 3, 7, 7],
                [5, 3, 3, 3],
                ConvOptions::new_with_padding([1, 1], [(0, 1), (1, 0)], [1, 1], 1),
            ),
        ];
        for device in [Device::flex(), Device::ndarray()] {
            for (input, kernel, options) in &cases {
                let host = Device::flex();
                let x = Tensor::<4>::random(*input, Distribution::Normal(0.0, 1.0), &host);
                let w = Tensor::<4>::random(*kernel, Distribution::Normal(0.0, 0.5), &host);
                let y = burn_conv2d(x.clone(), w.clone(), None, options.clone());
                let r = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &host);
                let autodiff = device.clone().autodiff();
                let ours = run(&autodiff, |x, w| conv2d(x, w, options.clone()), &x, &w, &r);
                let theirs = run(
                    &autodiff,
                    |x, w| burn_conv2d(x, w, None, options.clone()),
                    &x,
                    &w,
                    &r,
                );
                for (name, (a, b)) in ["output", "dX", "dW"]
                    .iter()
                    .zip(ours.into_iter().zip(theirs))
                {
                    let back = |t: Tensor<4>| Tensor::<4>::from_data(t.to_data(), &host);
                    let diff = max_abs_diff(back(a), back(b));
                    assert!(
                        diff < 1e-4,
                        "{device:?} {input:?} {kernel:?} {options:?}: {name} differs by {diff}"
                    );
                }
            }
        }
    }

    /// Without autodiff the extension is a plain forward pass.
    #[test]
    fn inference_device_gives_the_forward_pass() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);
        let ours = conv2d(x.clone(), w.clone(), options.clone());
        let theirs = burn_conv2d(x, w, None, options);
        assert!(max_abs_diff(ours, theirs) < 1e-4);
    }
}
