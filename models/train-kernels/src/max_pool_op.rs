//! Max pooling for the gated nets (square window, no padding): burn's `max_pool2d` everywhere,
//! except on the flex CPU backend, where forward and backward are plain loops over each image
//! plane, planes in parallel. The backward pass finds each window's maximum again from the
//! input instead of keeping an index tensor from the forward pass.
//!
//! flex's generic pooling (3-D, with padding, dilation and index bookkeeping) took a sizeable
//! share of a vgg-small training step after the convolutions and batch norm were replaced
//! (BENCHMARKS.md, "CPU backends").

// ndarray is deprecated upstream but still a `--backend` dnal measures against: the extension
// routes it like every backend burn is built with, and the generated routing names it too.
#![allow(deprecated)]

use crate::flex_slices::{contiguous, f32s, from_f32s};
use crate::kernel_buffers::{Unwritten, written};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Cube, Dispatch, Flex, NdArray, TensorMetadata, backend_extension};
use burn::tensor::{DType, IntDType, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Max pooling with a `kernel` x `kernel` window moved by `stride`, no padding, and its
/// input gradient, as operations a backend can replace.
///
/// # Shapes
/// - `x`: `[batch, channels, height, width]`
/// - output and `output_grad`: `[batch, channels, (height - kernel) / stride + 1, same for width]`
#[backend_extension(Flex, NdArray, Cube, Autodiff)]
pub trait MaxPoolOps: Backend {
    /// The forward pass.
    fn max_pool2d_square(x: FloatTensor<Self>, kernel: usize, stride: usize) -> FloatTensor<Self> {
        Self::max_pool2d(x, [kernel, kernel], [stride, stride], [0, 0], [1, 1], false)
    }

    /// The gradient w.r.t. `x`: each output's gradient goes to the (first) maximum of its
    /// window.
    fn max_pool2d_square_backward(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
    ) -> FloatTensor<Self> {
        burn_backward::<Self>(x, output_grad, kernel, stride)
    }
}

/// burn's own max pooling backward: the forward again with indices, then their scatter.
fn burn_backward<B: Backend>(
    x: FloatTensor<B>,
    output_grad: FloatTensor<B>,
    kernel: usize,
    stride: usize,
) -> FloatTensor<B> {
    let (window, step) = ([kernel, kernel], [stride, stride]);
    // i32 indices: every backend dnal runs on supports them (wgpu may lack i64).
    let indices = B::max_pool2d_with_indices(
        x.clone(),
        window,
        step,
        [0, 0],
        [1, 1],
        false,
        IntDType::I32,
    )
    .indices;
    B::max_pool2d_with_indices_backward(
        x,
        window,
        step,
        [0, 0],
        [1, 1],
        false,
        output_grad,
        indices,
    )
    .x_grad
}

/// Max pooling with a square window and no padding: plane loops on flex, burn's kernels
/// elsewhere. Same result as `burn::tensor::module::max_pool2d` with padding 0, dilation 1.
pub fn max_pool2d(x: Tensor<4>, kernel: usize, stride: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as MaxPoolOps>::max_pool2d_square(
        x.into_dispatch(),
        kernel,
        stride,
    ))
}

// GPU and the slow CPU backend: burn's kernels (the trait's default bodies).
impl MaxPoolOps for Cube {}
impl MaxPoolOps for NdArray {}

/// The shape of one pooling: planes (`batch * channels`), input and output sizes.
#[derive(Debug, Clone, Copy)]
struct PoolGeometry {
    dims: [usize; 4],
    kernel: usize,
    stride: usize,
    out_h: usize,
    out_w: usize,
}

impl PoolGeometry {
    /// `None` when flex's kernels should run instead: not `f32`, not rank 4, a window larger
    /// than the input, or a zero kernel or stride.
    fn of(x: &FlexTensor, kernel: usize, stride: usize) -> Option<Self> {
        if x.dtype() != DType::F32 || x.rank() != 4 || kernel == 0 || stride == 0 {
            return None;
        }
        let dims = x.shape().dims::<4>();
        if dims[2] < kernel || dims[3] < kernel {
            return None;
        }
        Some(Self {
            dims,
            kernel,
            stride,
            out_h: (dims[2] - kernel) / stride + 1,
            out_w: (dims[3] - kernel) / stride + 1,
        })
    }

    fn in_plane(&self) -> usize {
        self.dims[2] * self.dims[3]
    }

    fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }

    /// The input rows of output row `oy`'s windows: `kernel` slices of the plane.
    fn window_rows<'a>(
        &self,
        plane: &'a [f32],
        oy: usize,
    ) -> impl Iterator<Item = (usize, &'a [f32])> {
        let width = self.dims[3];
        (0..self.kernel).map(move |i| {
            let start = (oy * self.stride + i) * width;
            (start, &plane[start..start + width])
        })
    }

    /// The largest value of output `(oy, ox)`'s window.
    fn max(&self, plane: &[f32], oy: usize, ox: usize) -> f32 {
        let x0 = ox * self.stride;
        // `f32::max` compiles to a compare-free max instruction: the maxima of random data
        // would mispredict a branch half the time.
        self.window_rows(plane, oy)
            .flat_map(|(_, row)| &row[x0..x0 + self.kernel])
            .fold(f32::NEG_INFINITY, |best, &v| best.max(v))
    }

    /// The offset in the input plane of the first maximum of output `(oy, ox)`'s window.
    fn argmax(&self, plane: &[f32], oy: usize, ox: usize) -> usize {
        let x0 = ox * self.stride;
        let (mut best, mut best_value) =
            ((oy * self.stride) * self.dims[3] + x0, f32::NEG_INFINITY);
        for (start, row) in self.window_rows(plane, oy) {
            for (offset, &v) in row[x0..x0 + self.kernel].iter().enumerate() {
                // Selects rather than branches, for the same reason as in `max`.
                let take = v > best_value;
                best = if take { start + x0 + offset } else { best };
                best_value = if take { v } else { best_value };
            }
        }
        best
    }
}

/// The forward pass of 2x2 windows moved by 2 (VGG's pooling) in loops over pairs of rows that
/// the compiler vectorises: much faster than the general loops above (an iterator chain per
/// window). A backward pass in the same style measured slower than the general one on
/// post-ReLU data (ties and random maxima), so the backward keeps the general loops
/// (BENCHMARKS.md, "Per convolution against PyTorch").
impl PoolGeometry {
    fn is_2x2(&self) -> bool {
        self.kernel == 2 && self.stride == 2
    }

    /// The pairs of input rows under output row `oy`, cut to the windows' width.
    fn row_pair<'a>(&self, plane: &'a [f32], oy: usize) -> (&'a [f32], &'a [f32]) {
        let (w, used) = (self.dims[3], 2 * self.out_w);
        let top = 2 * oy * w;
        (&plane[top..top + used], &plane[top + w..top + w + used])
    }

    fn max_2x2(&self, plane: &[f32], out: &mut [MaybeUninit<f32>]) {
        for (oy, out) in out.chunks_exact_mut(self.out_w).enumerate() {
            let (r0, r1) = self.row_pair(plane, oy);
            for ((o, a), b) in out
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
            {
                o.write(a[0].max(a[1]).max(b[0].max(b[1])));
            }
        }
    }
}

impl MaxPoolOps for Flex {
    fn max_pool2d_square(x: FlexTensor, kernel: usize, stride: usize) -> FlexTensor {
        let Some(g) = PoolGeometry::of(&x, kernel, stride) else {
            return Self::max_pool2d(x, [kernel, kernel], [stride, stride], [0, 0], [1, 1], false);
        };
        let x = contiguous(x);
        let mut out = Unwritten::new(g.dims[0] * g.dims[1] * g.out_plane());
        out.slots()
            .par_chunks_mut(g.out_plane())
            .zip(f32s(&x).par_chunks(g.in_plane()))
            .for_each(|(out, plane)| {
                if g.is_2x2() {
                    g.max_2x2(plane, out);
                } else {
                    written(out, |i| g.max(plane, i / g.out_w, i % g.out_w));
                }
            });
        let shape = [g.dims[0], g.dims[1], g.out_h, g.out_w];
        // SAFETY: one chunk per plane of the output, each written whole by `written`.
        from_f32s(unsafe { out.assume_written() }, shape)
    }

    fn max_pool2d_square_backward(
        x: FlexTensor,
        output_grad: FlexTensor,
        kernel: usize,
        stride: usize,
    ) -> FlexTensor {
        let Some(g) =
            PoolGeometry::of(&x, kernel, stride).filter(|_| output_grad.dtype() == DType::F32)
        else {
            return burn_backward::<Self>(x, output_grad, kernel, stride);
        };
        let (x, dy) = (contiguous(x), contiguous(output_grad));
        let mut dx = Unwritten::new(g.dims[0] * g.dims[1] * g.in_plane());
        dx.slots()
            .par_chunks_mut(g.in_plane())
            .zip(f32s(&x).par_chunks(g.in_plane()))
            .zip(f32s(&dy).par_chunks(g.out_plane()))
            .for_each(|((dx, plane), dy)| {
                // Zeroed here, in parallel, by the thread that adds the gradient in.
                let dx = written(dx, |_| 0.0);
                for oy in 0..g.out_h {
                    for ox in 0..g.out_w {
                        // Overlapping windows (stride < kernel) may pick the same input twice.
                        dx[g.argmax(plane, oy, ox)] += dy[oy * g.out_w + ox];
                    }
                }
            });
        // SAFETY: one chunk per input plane, each zeroed whole by `written`.
        from_f32s(unsafe { dx.assume_written() }, g.dims)
    }
}

/// The backward step of [`MaxPoolOps::max_pool2d_square`] under autodiff.
#[derive(Debug)]
struct MaxPoolBackward;

impl<B: Backend + MaxPoolOps> Backward<B, 1> for MaxPoolBackward {
    /// The checkpointed input, the kernel and the stride.
    type State = (NodeId, usize, usize);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let output_grad = grads.consume::<B>(&ops.node);
        let (x_id, kernel, stride) = ops.state;
        if let Some(node) = node_x {
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_id);
            let grad = B::max_pool2d_square_backward(x, output_grad, kernel, stride);
            grads.register::<B>(node.id, grad);
        }
    }
}

impl<B: Backend + MaxPoolOps, C: CheckpointStrategy> MaxPoolOps for Autodiff<B, C> {
    fn max_pool2d_square(x: FloatTensor<Self>, kernel: usize, stride: usize) -> FloatTensor<Self> {
        match MaxPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_id = prep.checkpoint(&x);
                let y = B::max_pool2d_square(x.into_primitive(), kernel, stride);
                prep.finish((x_id, kernel, stride), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::max_pool2d_square(x.into_primitive(), kernel, stride))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::module::max_pool2d as burn_max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    use burn::tensor::{Device, Distribution, TensorData};

    use super::*;

    /// On flex (plane loops) and ndarray (burn's, through the extension's routing), output
    /// and input gradient equal burn's max_pool2d's, for the usual 2x2/2, overlapping 3x3/2
    /// windows, sizes the window does not divide, and tied maxima.
    #[test]
    fn output_and_gradient_match_burns_max_pool() {
        let host = Device::flex();
        for device in [Device::flex(), Device::ndarray()] {
            for (dims, kernel, stride, ties) in [
                ([2, 3, 8, 8], 2, 2, false),
                ([2, 2, 7, 9], 3, 2, false),
                ([1, 4, 5, 5], 2, 2, false),
                // After a ReLU most windows hold several zeros: the first one gets the gradient.
                ([2, 3, 6, 7], 2, 2, true),
                ([2, 2, 7, 9], 3, 2, true),
            ] {
                let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &host);
                let x = if ties { x.clamp_min(0.0) } else { x };
                let device = device.clone().autodiff();
                let run = |ours: bool| {
                    let x = Tensor::<4>::from_data(x.to_data(), &device).require_grad();
                    let y = if ours {
                        max_pool2d(x.clone(), kernel, stride)
                    } else {
                        let options =
                            MaxPoolOptions::new([kernel, kernel]).with_stride([stride, stride]);
                        burn_max_pool2d(x.clone(), options)
                    };
                    // A fixed linear read-out per position makes the gradient position-aware.
                    let weights = Tensor::<4>::from_data(
                        TensorData::new(
                            (0..y.dims().iter().product::<usize>())
                                .map(|i| (i % 7) as f32 - 3.0)
                                .collect::<Vec<_>>(),
                            y.dims(),
                        ),
                        &device,
                    );
                    let grads = (y.clone() * weights).sum().backward();
                    let back = |t: Tensor<4>| Tensor::<4>::from_data(t.to_data(), &host);
                    (back(y.inner()), back(x.grad(&grads).expect("x is tracked")))
                };
                let (ours, theirs) = (run(true), run(false));
                let diff = |a: Tensor<4>, b: Tensor<4>| (a - b).abs().max().into_scalar::<f32>();
                assert_eq!(
                    diff(ours.0, theirs.0),
                    0.0,
                    "{device:?} {dims:?} k{kernel} s{stride}: output"
                );
                assert!(
                    diff(ours.1, theirs.1) < 1e-6,
                    "{device:?} {dims:?} k{kernel} s{stride} ties {ties}: dx"
                );
            }
        }
    }
}
