//! Batch norm in training mode for the gated nets: on the flex CPU backend forward and
//! backward run as the fused passes of [`batch_norm_fused`]; on every
//! other backend (GPUs, ndarray) as tensor ops that reduce one axis at a time. A backward
//! step of our own for autodiff.
//!
//! Not burn's `batch_norm_train`: burn 0.22.1's reduces `x` transposed and reshaped to
//! `[channels, rest]`, and on wgpu (lavapipe, measured) its normalised output came out wrong
//! from about 2M elements on: at 128 x 32 x 28 x 28 it was off by up to 630 while the
//! statistics were right. Training still ran (the next batch norm hid the scale), but the
//! running statistics, taken from those outputs one layer on, reached variances of 1e7, and
//! every network trained there evaluated and exported at chance.
//!
//! Same structure as [`conv_op`](crate::conv_op): a backend extension whose default bodies
//! serve every backend, overridden for flex.

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
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    AutodiffBackend, Backend, Cube, Dispatch, Flex, NdArray, Scalar, Shape, TensorMetadata,
    backend_extension,
};
use burn::tensor::{DType, Tensor};

pub use crate::batch_norm_fused::Rectifier;
use crate::batch_norm_fused::{self, NormAffine, NormShape};

/// Batch norm with batch statistics, optionally followed by a ReLU or ReLU6, and its
/// gradients, as operations a backend can replace.
///
/// # Shapes
/// - `x`, output and `output_grad`: `[batch, channels, height, width]`
/// - `gamma`, `beta`, `mean`, `variance` and their gradients: `[channels]`
#[backend_extension(Flex, NdArray, Cube, Autodiff)]
pub trait BatchNormTrainOps: Backend {
    /// The normalised output (rectified by `options.rectifier`), the batch mean and the biased
    /// batch variance.
    fn batch_norm_train_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        options: NormOptions,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        axiswise_forward::<Self>(x, gamma, beta, options)
    }

    /// The gradients w.r.t. `x`, `gamma` and `beta`, given the output's gradient and the
    /// statistics the forward pass (with the same `options`) returned.
    fn batch_norm_train_fused_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        options: NormOptions,
        output_grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        axiswise_backward::<Self>(x, [gamma, beta, mean, variance], options, output_grad)
    }
}

/// The settings of a batch norm in training that are not tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormOptions {
    /// Added to the variance before its square root.
    pub epsilon: f64,
    /// What follows, fused into the same passes where the backend can.
    pub rectifier: Rectifier,
}

/// `rectifier` applied to `y`.
fn rectify<B: Backend>(y: FloatTensor<B>, rectifier: Rectifier) -> FloatTensor<B> {
    match rectifier {
        Rectifier::None => y,
        Rectifier::Relu => B::relu(y),
        Rectifier::Relu6 => B::float_clamp(y, 0.0.into(), 6.0.into()),
    }
}

/// The gradient `rectifier` passes back to its input `y`: where `y` was positive (and under 6).
fn rectifier_backward<B: Backend>(
    y: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    rectifier: Rectifier,
) -> FloatTensor<B> {
    if rectifier == Rectifier::None {
        return output_grad;
    }
    let passed = B::relu_backward(y.clone(), output_grad);
    if rectifier == Rectifier::Relu6 {
        let bool_dtype = burn::backend::get_or_init_device_settings::<B>(&y.device()).bool_dtype;
        let above = B::float_greater_equal_elem(y, 6.0.into(), bool_dtype);
        B::float_mask_fill(passed, above, 0.0.into())
    } else {
        passed
    }
}

/// What [`batch_norm_train`] returns.
#[derive(Debug, Clone)]
pub struct BatchNormTrainOutput {
    /// The normalised, scaled and shifted input.
    pub output: Tensor<4>,
    /// The batch mean per channel (not tracked by autodiff).
    pub mean: Tensor<1>,
    /// The biased batch variance per channel (not tracked by autodiff).
    pub variance: Tensor<1>,
}

/// Batch norm with batch statistics, then `rectifier`: the fused kernels on flex, tensor ops
/// everywhere else. Same results as `burn::tensor::module::batch_norm_train` (and `relu` or
/// `clamp(0, 6)`).
pub fn batch_norm_train(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    rectifier: Rectifier,
) -> BatchNormTrainOutput {
    let (output, mean, variance) = <Dispatch as BatchNormTrainOps>::batch_norm_train_fused(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        NormOptions { epsilon, rectifier },
    );
    BatchNormTrainOutput {
        output: Tensor::from_dispatch(output),
        mean: Tensor::from_dispatch(mean),
        variance: Tensor::from_dispatch(variance),
    }
}

// GPUs and the slow CPU backend: the trait's default bodies.
impl BatchNormTrainOps for Cube {}
impl BatchNormTrainOps for NdArray {}

/// The mean over every axis but the channels': `[batch, channels, h, w]` -> `[1, channels, 1, 1]`.
fn channel_mean<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mean_dim(B::float_mean_dim(B::float_mean_dim(t, 0), 2), 3)
}

/// The sum over every axis but the channels'.
fn channel_sum<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    B::float_sum_dim(B::float_sum_dim(B::float_sum_dim(t, 0), 2), 3)
}

/// A per-channel `[channels]` tensor as `[1, channels, 1, 1]`, to broadcast over a batch.
fn broadcastable<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let channels = t.shape()[0];
    B::float_reshape(t, Shape::new([1, channels, 1, 1]))
}

/// `1 / sqrt(variance + epsilon)`.
fn inverse_std<B: Backend>(variance: FloatTensor<B>, epsilon: f64) -> FloatTensor<B> {
    B::float_recip(B::float_sqrt(B::float_add_scalar(
        variance,
        Scalar::Float(epsilon),
    )))
}

/// The forward pass with the statistics reduced one axis at a time (the trait's default; see
/// the module's doc for why not burn's).
fn axiswise_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    options: NormOptions,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let channels = x.shape()[1];
    let mean = channel_mean::<B>(x.clone());
    let centred = B::float_sub(x, mean.clone());
    let variance = channel_mean::<B>(B::float_mul(centred.clone(), centred.clone()));
    let scale = B::float_mul(
        inverse_std::<B>(variance.clone(), options.epsilon),
        broadcastable::<B>(gamma),
    );
    let output = B::float_add(B::float_mul(centred, scale), broadcastable::<B>(beta));
    let output = rectify::<B>(output, options.rectifier);
    let flat = |t| B::float_reshape(t, Shape::new([channels]));
    (output, flat(mean), flat(variance))
}

/// The backward pass of [`axiswise_forward`]; `per_channel` is gamma, beta, mean and variance.
fn axiswise_backward<B: Backend>(
    x: FloatTensor<B>,
    per_channel: [FloatTensor<B>; 4],
    options: NormOptions,
    output_grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let [gamma, beta, mean, variance] = per_channel;
    let channels = x.shape()[1];
    let inv_std = broadcastable::<B>(inverse_std::<B>(variance, options.epsilon));
    let gamma = broadcastable::<B>(gamma);
    let normalised = B::float_mul(B::float_sub(x, broadcastable::<B>(mean)), inv_std.clone());
    let output_grad = if options.rectifier == Rectifier::None {
        output_grad
    } else {
        // The rectifier passed the gradient where its input, the affine output, was positive
        // (and under 6).
        let y = B::float_add(
            B::float_mul(normalised.clone(), gamma.clone()),
            broadcastable::<B>(beta),
        );
        rectifier_backward::<B>(y, output_grad, options.rectifier)
    };
    let weighted = B::float_mul(output_grad.clone(), normalised.clone());
    let flat = |t| B::float_reshape(t, Shape::new([channels]));
    let beta_grad = flat(channel_sum::<B>(output_grad.clone()));
    let gamma_grad = flat(channel_sum::<B>(weighted.clone()));
    // dx = gamma / std * (dy - mean(dy) - x_hat * mean(dy * x_hat))
    let centred_grad = B::float_sub(output_grad.clone(), channel_mean::<B>(output_grad));
    let projected = B::float_mul(normalised, channel_mean::<B>(weighted));
    let x_grad = B::float_mul(
        B::float_mul(gamma, inv_std),
        B::float_sub(centred_grad, projected),
    );
    (x_grad, gamma_grad, beta_grad)
}

/// The layout of a flex activation the fused kernels cover: `f32`, rank 4. `None` sends the
/// call to the axis-wise tensor ops.
fn flex_shape(x: &FlexTensor, per_channel: &[&FlexTensor]) -> Option<NormShape> {
    let all_f32 = per_channel.iter().all(|t| t.dtype() == DType::F32);
    if x.dtype() != DType::F32 || x.rank() != 4 || !all_f32 {
        return None;
    }
    let [batch, channels, height, width] = x.shape().dims::<4>();
    Some(NormShape {
        batch,
        channels,
        spatial: height * width,
    })
}

impl BatchNormTrainOps for Flex {
    fn batch_norm_train_fused(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        options: NormOptions,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let Some(shape) = flex_shape(&x, &[&gamma, &beta]) else {
            return axiswise_forward::<Self>(x, gamma, beta, options);
        };
        let dims = x.shape().dims::<4>();
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let affine = NormAffine {
            gamma: f32s(&gamma),
            beta: f32s(&beta),
            epsilon: options.epsilon,
            rectifier: options.rectifier,
        };
        let out = batch_norm_fused::batch_norm_train(f32s(&x), &affine, &shape);
        (
            from_f32s(out.output, dims),
            from_f32s(out.mean, [shape.channels]),
            from_f32s(out.variance, [shape.channels]),
        )
    }

    fn batch_norm_train_fused_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        options: NormOptions,
        output_grad: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let Some(shape) = flex_shape(&x, &[&gamma, &beta, &mean, &variance, &output_grad]) else {
            return axiswise_backward::<Self>(
                x,
                [gamma, beta, mean, variance],
                options,
                output_grad,
            );
        };
        let dims = x.shape().dims::<4>();
        let [x, gamma, beta, mean, variance, output_grad] =
            [x, gamma, beta, mean, variance, output_grad].map(contiguous);
        let affine = NormAffine {
            gamma: f32s(&gamma),
            beta: f32s(&beta),
            epsilon: options.epsilon,
            rectifier: options.rectifier,
        };
        let grads = batch_norm_fused::batch_norm_train_backward(
            f32s(&x),
            &affine,
            f32s(&mean),
            f32s(&variance),
            f32s(&output_grad),
            &shape,
        );
        (
            from_f32s(grads.x, dims),
            from_f32s(grads.gamma, [shape.channels]),
            from_f32s(grads.beta, [shape.channels]),
        )
    }
}

/// The backward step of [`BatchNormTrainOps::batch_norm_train_fused`] under autodiff.
#[derive(Debug)]
struct BatchNormTrainBackward;

impl<B: Backend + BatchNormTrainOps> Backward<B, 3> for BatchNormTrainBackward {
    /// The checkpointed input, gamma and beta, the batch statistics, epsilon and the rectifier
    /// fused in.
    type State = ([NodeId; 3], [FloatTensor<B>; 2], NormOptions);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (ids, [mean, variance], options) = ops.state;
        let [x, gamma, beta] =
            ids.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let (x_grad, gamma_grad, beta_grad) = B::batch_norm_train_fused_backward(
            x,
            gamma,
            beta,
            mean,
            variance,
            options,
            output_grad,
        );
        for (node, grad) in [
            (node_x, x_grad),
            (node_gamma, gamma_grad),
            (node_beta, beta_grad),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + BatchNormTrainOps, C: CheckpointStrategy> BatchNormTrainOps for Autodiff<B, C> {
    fn batch_norm_train_fused(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        options: NormOptions,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match BatchNormTrainBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let ids = [
                    prep.checkpoint(&x),
                    prep.checkpoint(&gamma),
                    prep.checkpoint(&beta),
                ];
                let (output, mean, variance) = B::batch_norm_train_fused(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    options,
                );
                let state = (ids, [mean.clone(), variance.clone()], options);
                (
                    prep.finish(state, output),
                    Self::from_inner(mean),
                    Self::from_inner(variance),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (output, mean, variance) = B::batch_norm_train_fused(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    options,
                );
                (
                    prep.finish(output),
                    Self::from_inner(mean),
                    Self::from_inner(variance),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::batch_norm_train as burn_batch_norm_train;
    use burn::tensor::{Device, Distribution};

    use super::*;

    fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let host = Device::flex();
        let back = |t: Tensor<D>| Tensor::<D>::from_data(t.to_data(), &host);
        (back(a) - back(b)).abs().max().into_scalar::<f32>()
    }

    /// On flex (fused kernels) and ndarray (the axis-wise tensor ops GPUs run too), with
    /// and without a ReLU or ReLU6, the output, the statistics and the gradients w.r.t. x,
    /// gamma and beta equal those of burn's own batch_norm_train (and relu or clamp).
    #[test]
    fn output_statistics_and_gradients_match_burns_batch_norm() {
        let host = Device::flex();
        for device in [Device::flex(), Device::ndarray()] {
            for (dims, rectifier) in [
                ([4, 3, 5, 5], Rectifier::None),
                ([2, 6, 3, 7], Rectifier::None),
                ([8, 2, 1, 1], Rectifier::None),
                ([4, 3, 5, 5], Rectifier::Relu),
                ([2, 6, 3, 7], Rectifier::Relu),
                ([4, 3, 5, 5], Rectifier::Relu6),
                ([2, 6, 3, 7], Rectifier::Relu6),
            ] {
                let x = Tensor::<4>::random(dims, Distribution::Normal(2.0, 3.0), &host);
                // Gammas around 4, so that ReLU6 cuts at both ends.
                let gamma = Tensor::<1>::random([dims[1]], Distribution::Normal(4.0, 0.5), &host);
                let beta = Tensor::<1>::random([dims[1]], Distribution::Normal(0.0, 0.5), &host);
                let r = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &host);
                let device = device.clone().autodiff();
                let on4 = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &device);
                let on1 = |t: &Tensor<1>| Tensor::<1>::from_data(t.to_data(), &device);
                let run = |fused: bool| {
                    let (x, gamma, beta) = (
                        on4(&x).require_grad(),
                        on1(&gamma).require_grad(),
                        on1(&beta).require_grad(),
                    );
                    let (output, mean, variance) = if fused {
                        let out = batch_norm_train(
                            x.clone(),
                            gamma.clone(),
                            beta.clone(),
                            1e-5,
                            rectifier,
                        );
                        (out.output, out.mean, out.variance)
                    } else {
                        let out =
                            burn_batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                        let output = match rectifier {
                            Rectifier::None => out.output,
                            Rectifier::Relu => burn::tensor::activation::relu(out.output),
                            Rectifier::Relu6 => out.output.clamp(0.0, 6.0),
                        };
                        (output, out.mean, out.variance)
                    };
                    let grads = (output.clone() * on4(&r)).sum().backward();
                    (
                        output.inner(),
                        mean.inner(),
                        variance.inner(),
                        x.grad(&grads).expect("x is tracked"),
                        gamma.grad(&grads).expect("gamma is tracked"),
                        beta.grad(&grads).expect("beta is tracked"),
                    )
                };
                let (ours, theirs) = (run(true), run(false));
                let context = format!("{device:?} {dims:?} {rectifier:?}");
                assert!(max_abs_diff(ours.0, theirs.0) < 1e-4, "{context}: output");
                assert!(max_abs_diff(ours.1, theirs.1) < 1e-4, "{context}: mean");
                assert!(max_abs_diff(ours.2, theirs.2) < 1e-3, "{context}: variance");
                assert!(max_abs_diff(ours.3, theirs.3) < 1e-4, "{context}: dx");
                assert!(max_abs_diff(ours.4, theirs.4) < 1e-3, "{context}: dgamma");
                assert!(max_abs_diff(ours.5, theirs.5) < 1e-3, "{context}: dbeta");
            }
        }
    }
}
