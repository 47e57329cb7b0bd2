//! Depthwise convolution (one filter per channel, `groups == channels`) on `f32` NCHW slices:
//! the forward pass and both gradients, in one of two strategies (one file each).
//!
//! burn's grouped convolution unfolds every group into a gemm of one channel, which leaves a
//! depthwise layer (k*k multiply-adds per output) dominated by overhead. `phases` computes
//! a plane at a time, each tap a contiguous read of the whole plane: fast on large planes,
//! but on the 4x4 planes of a mobile network's last stages, and at stride 2 (whose phase split
//! copies a value at a time), per-plane and per-row overhead took most of the time. `lanes`
//! computes eight planes side by side, each tap of each output one eight-wide multiply-add,
//! with no per-plane overhead but a transpose in and out. Measured on MobileNetV2 (width
//! 0.35, batch 64, `bench/conv_split.sh`, sums over layers): on its strided layers and 4x4
//! outputs `lanes` takes 0.56x the time of `phases` forward, 0.82x for the weight gradient
//! and 0.78x for the input gradient, while `phases` is up to 2x faster on 28x28 and 14x14
//! outputs at stride 1; on 7x7 ones the two are within noise of each other.

/// Defines `$name`, which runs `$body` compiled for AVX2 where the CPU has it (checked at run
/// time, once per call) and for the baseline target otherwise. The bodies are
/// `#[inline(always)]`, so each copy is vectorised for its own target.
macro_rules! with_avx2 {
    ($(#[$doc:meta])* fn $name:ident / $avx2:ident = $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the only requirement of a `#[target_feature(enable = "avx2")]`
                // function is a CPU with AVX2, which was checked just above.
                return unsafe { $avx2($($arg),*) };
            }
            $body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        fn $avx2($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

mod lanes;
mod phases;

use rayon::prelude::*;

use crate::conv_gemm::ConvGeometry;
use crate::kernel_buffers::{Unwritten, written};

/// The geometry of a depthwise convolution of an input of `input` dims with a weight of
/// `weight` dims in `groups` groups, when these kernels cover it: one filter of one channel
/// per channel, no dilation, a kernel that fits the padded input. `None` otherwise.
pub fn geometry(
    input: [usize; 4],
    weight: [usize; 4],
    groups: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Option<ConvGeometry> {
    let [_, channels, in_h, in_w] = input;
    let [out_channels, per_group, kh, kw] = weight;
    let covered = groups == channels
        && out_channels == channels
        && per_group == 1
        && dilation == [1, 1]
        && kh > 0
        && kw > 0
        && stride[0] > 0
        && stride[1] > 0
        && in_h + 2 * padding[0] >= kh
        && in_w + 2 * padding[1] >= kw;
    covered.then(|| ConvGeometry::grouped(input, weight, groups, stride, padding, dilation))
}

/// Planes per rayon task, in groups of `step` (a strategy's block): enough work per task
/// (about 32K multiply-adds) that scheduling stays small beside it on tiny planes.
fn planes_per_task(g: &ConvGeometry, step: usize) -> usize {
    (32 * 1024 / (step * g.out_h * g.out_w * g.kh * g.kw).max(1)).max(1) * step
}

/// Maps the planes of `src` (`src_plane` values each) to those of a new output of
/// `dst_plane` values per plane, `per_task` planes to a rayon task (a multiple of `step`) and
/// `step` planes at a time: `group(state, first, src, dst)` gets the index of its first plane
/// and its planes of both (fewer than `step` at the end), and `state` is made once per task
/// (its scratch buffers).
fn map_planes<S>(
    src: &[f32],
    src_plane: usize,
    dst_plane: usize,
    per_task: usize,
    step: usize,
    state: impl Fn() -> S + Sync,
    group: impl Fn(&mut S, usize, &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let planes = src.len() / src_plane;
    let mut dst = Unwritten::new(planes * dst_plane);
    dst.slots()
        .par_chunks_mut(dst_plane * per_task)
        .zip(src.par_chunks(src_plane * per_task))
        .enumerate()
        .for_each(|(task, (dst, src))| {
            // Zeroed by the thread that writes it next, while it is in that core's cache: a
            // `vec![0.0; n]` up front was a `memset` of every output on the calling thread.
            let dst = written(dst, |_| 0.0);
            let mut state = state();
            for (k, (dst, src)) in dst
                .chunks_mut(dst_plane * step)
                .zip(src.chunks(src_plane * step))
                .enumerate()
            {
                group(&mut state, task * per_task + k * step, src, dst);
            }
        });
    // SAFETY: the chunks cover `dst`, and `written` wrote every slot of each.
    unsafe { dst.assume_written() }
}

/// Output planes of at most this many values take [`lanes`] at any stride.
const SMALL_PLANE: usize = 16;

/// Whether [`lanes`] computes a layer (see the module's notes), rather than [`phases`].
fn by_lanes(g: &ConvGeometry) -> bool {
    g.stride != [1, 1] || g.out_h * g.out_w <= SMALL_PLANE
}

/// `y = depthwise(x, w)`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, out_h, out_w]`
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    if by_lanes(g) {
        lanes::forward(x, w, g)
    } else {
        phases::forward(x, w, g)
    }
}

/// The gradient w.r.t. `x` given `dy`, the gradient w.r.t. the output.
///
/// # Shapes
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, in_h, in_w]`
pub fn input_grad(dy: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    if by_lanes(g) {
        lanes::input_grad(dy, w, g)
    } else {
        phases::input_grad(dy, w, g)
    }
}

/// The gradient w.r.t. the weight given `dy`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - result: `[channels, 1, kh, kw]`
pub fn weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    if by_lanes(g) {
        lanes::weight_grad(x, dy, g)
    } else {
        phases::weight_grad(x, dy, g)
    }
}

/// What the layout tests of both strategies share: the geometries they walk and the padded
/// input they compare with.
#[cfg(test)]
mod layout_cases {
    use crate::conv_gemm::ConvGeometry;

    /// Depthwise geometries of `planes` planes of one image: strides 1 to 3, paddings 0 to 3,
    /// kernels 3 to 7, one larger than its plane.
    pub(super) fn geometries(planes: usize) -> Vec<ConvGeometry> {
        let mut cases = Vec::new();
        for stride in [[1, 1], [2, 2], [2, 1], [1, 3]] {
            for padding in [[0, 0], [1, 1], [3, 2]] {
                for (in_h, in_w, k) in [(5, 5, 3), (2, 2, 7), (7, 6, 5), (3, 2, 3)] {
                    if in_h + 2 * padding[0] >= k && in_w + 2 * padding[1] >= k {
                        cases.push(ConvGeometry::grouped(
                            [1, planes, in_h, in_w],
                            [planes, 1, k, k],
                            planes,
                            stride,
                            padding,
                            [1, 1],
                        ));
                    }
                }
            }
        }
        cases
    }

    /// Pixel `(r, c)` of plane `x` (`g`'s input size) with `g`'s zero padding around it.
    pub(super) fn padded(g: &ConvGeometry, x: &[f32], r: usize, c: usize) -> f32 {
        let (r, c) = (r.wrapping_sub(g.padding[0]), c.wrapping_sub(g.padding[1]));
        if r < g.in_h && c < g.in_w {
            x[r * g.in_w + c]
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_gemm::tests::values;

    /// Both strategies give the same outputs and gradients (up to the order of the sums), on
    /// shapes either would take: strides, padding, kernels 3, 5, 7 and 2x3 (the generic
    /// loops), odd planes, and plane counts that leave a partial block of lanes.
    #[test]
    fn lanes_and_phases_agree() {
        let cases = [
            ([3, 5, 7, 7], [3, 3], [1, 1], [1, 1]),
            ([2, 11, 9, 8], [3, 3], [2, 2], [1, 1]),
            ([2, 3, 11, 10], [5, 5], [2, 1], [2, 2]),
            ([1, 9, 4, 4], [7, 7], [1, 1], [3, 3]),
            ([2, 4, 6, 7], [2, 3], [1, 2], [0, 1]),
            ([4, 6, 4, 4], [3, 3], [1, 1], [1, 1]),
        ];
        let mut seed = 0;
        let mut random = |n: usize| {
            seed += 1;
            values(n, seed)
        };
        for (input, kernel, stride, padding) in cases {
            let channels = input[1];
            let weight = [channels, 1, kernel[0], kernel[1]];
            let g = geometry(input, weight, channels, stride, padding, [1, 1])
                .expect("a depthwise geometry");
            let x = random(input.iter().product());
            let w = random(weight.iter().product());
            let dy = random(g.batch * channels * g.out_h * g.out_w);
            let close = |what: &str, a: &[f32], b: &[f32]| {
                assert_eq!(a.len(), b.len(), "{what} {input:?}");
                for (i, (a, b)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{what} {input:?} k{kernel:?} s{stride:?} p{padding:?} at {i}: {a} vs {b}"
                    );
                }
            };
            close(
                "forward",
                &lanes::forward(&x, &w, &g),
                &phases::forward(&x, &w, &g),
            );
            close(
                "input gradient",
                &lanes::input_grad(&dy, &w, &g),
                &phases::input_grad(&dy, &w, &g),
            );
            close(
                "weight gradient",
                &lanes::weight_grad(&x, &dy, &g),
                &phases::weight_grad(&x, &dy, &g),
            );
        }
    }
}
