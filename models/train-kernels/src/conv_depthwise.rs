//! Depthwise convolution (one filter per channel, `groups == channels`) on `f32` NCHW slices:
//! the forward pass and both gradients as direct loops, one image plane per task (rayon).
//!
//! burn's grouped convolution unfolds every group into a gemm of one channel, which leaves a
//! depthwise layer (k*k multiply-adds per output) dominated by overhead; here each output row
//! is a few axpy-like passes over a contiguous input row. The loops skip the padding instead
//! of testing every tap: for a kernel column `j`, the output columns whose input column falls
//! inside the image form one range.

use rayon::prelude::*;

use crate::conv_gemm::ConvGeometry;

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

/// Along one axis (rows or columns): the outputs `ow` whose input `ow * stride + j - padding`
/// lies in `0..in_w` for kernel tap `j`, as a range.
fn valid_outputs(
    j: usize,
    stride: usize,
    padding: usize,
    in_w: usize,
    out_w: usize,
) -> (usize, usize) {
    // ow * stride + j >= padding  <=>  ow >= ceil((padding - j) / stride)
    let lo = padding.saturating_sub(j).div_ceil(stride);
    // ow * stride + j - padding <= in_w - 1  <=>  ow <= (in_w - 1 + padding - j) / stride
    let hi = if in_w + padding > j {
        ((in_w - 1 + padding - j) / stride + 1).min(out_w)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// `y = depthwise(x, w)`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, out_h, out_w]`
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let mut y = vec![0.0f32; g.batch * g.in_channels * out_plane];
    y.par_chunks_mut(out_plane)
        .zip(x.par_chunks(in_plane))
        .enumerate()
        .for_each(|(plane, (y, x))| {
            let filter = &w[(plane % g.in_channels) * taps..][..taps];
            for i in 0..g.kh {
                let (oh_lo, oh_hi) = valid_outputs(i, g.stride[0], g.padding[0], g.in_h, g.out_h);
                for oh in oh_lo..oh_hi {
                    let ih = oh * g.stride[0] + i - g.padding[0];
                    let x_row = &x[ih * g.in_w..][..g.in_w];
                    let y_row = &mut y[oh * g.out_w..][..g.out_w];
                    for j in 0..g.kw {
                        let tap = filter[i * g.kw + j];
                        let (lo, hi) = valid_outputs(j, g.stride[1], g.padding[1], g.in_w, g.out_w);
                        // A kernel wider than the padded row reaches no output from some taps.
                        if lo == hi {
                            continue;
                        }
                        if g.stride[1] == 1 {
                            let x_cols = &x_row[lo + j - g.padding[1]..][..hi - lo];
                            for (out, &v) in y_row[lo..hi].iter_mut().zip(x_cols) {
                                *out += tap * v;
                            }
                        } else {
                            for (ow, out) in y_row.iter_mut().enumerate().take(hi).skip(lo) {
                                *out += tap * x_row[ow * g.stride[1] + j - g.padding[1]];
                            }
                        }
                    }
                }
            }
        });
    y
}

/// The gradient w.r.t. `x` given `dy`, the gradient w.r.t. the output.
///
/// # Shapes
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, in_h, in_w]`
pub fn input_grad(dy: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let mut dx = vec![0.0f32; g.batch * g.in_channels * in_plane];
    dx.par_chunks_mut(in_plane)
        .zip(dy.par_chunks(out_plane))
        .enumerate()
        .for_each(|(plane, (dx, dy))| {
            let filter = &w[(plane % g.in_channels) * taps..][..taps];
            for i in 0..g.kh {
                let (oh_lo, oh_hi) = valid_outputs(i, g.stride[0], g.padding[0], g.in_h, g.out_h);
                for oh in oh_lo..oh_hi {
                    let ih = oh * g.stride[0] + i - g.padding[0];
                    let dy_row = &dy[oh * g.out_w..][..g.out_w];
                    let dx_row = &mut dx[ih * g.in_w..][..g.in_w];
                    for j in 0..g.kw {
                        let tap = filter[i * g.kw + j];
                        let (lo, hi) = valid_outputs(j, g.stride[1], g.padding[1], g.in_w, g.out_w);
                        // A kernel wider than the padded row reaches no output from some taps.
                        if lo == hi {
                            continue;
                        }
                        if g.stride[1] == 1 {
                            let dx_cols = &mut dx_row[lo + j - g.padding[1]..][..hi - lo];
                            for (out, &d) in dx_cols.iter_mut().zip(&dy_row[lo..hi]) {
                                *out += tap * d;
                            }
                        } else {
                            for (ow, &d) in dy_row.iter().enumerate().take(hi).skip(lo) {
                                dx_row[ow * g.stride[1] + j - g.padding[1]] += tap * d;
                            }
                        }
                    }
                }
            }
        });
    dx
}

/// The gradient w.r.t. the weight given `dy`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - result: `[channels, 1, kh, kw]`
pub fn weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let channels = g.in_channels;
    let mut dw = vec![0.0f32; channels * taps];
    dw.par_chunks_mut(taps)
        .enumerate()
        .for_each(|(c, filter_grad)| {
            for n in 0..g.batch {
                let plane = n * channels + c;
                let x = &x[plane * in_plane..][..in_plane];
                let dy = &dy[plane * out_plane..][..out_plane];
                for i in 0..g.kh {
                    let (oh_lo, oh_hi) =
                        valid_outputs(i, g.stride[0], g.padding[0], g.in_h, g.out_h);
                    for j in 0..g.kw {
                        let (lo, hi) = valid_outputs(j, g.stride[1], g.padding[1], g.in_w, g.out_w);
                        // A kernel wider than the padded row reaches no output from some taps.
                        if lo == hi {
                            continue;
                        }
                        let mut sum = 0.0f32;
                        for oh in oh_lo..oh_hi {
                            let ih = oh * g.stride[0] + i - g.padding[0];
                            let x_row = &x[ih * g.in_w..][..g.in_w];
                            let dy_row = &dy[oh * g.out_w..][..g.out_w];
                            if g.stride[1] == 1 {
                                let x_cols = &x_row[lo + j - g.padding[1]..][..hi - lo];
                                sum += dy_row[lo..hi]
                                    .iter()
                                    .zip(x_cols)
                                    .map(|(&d, &v)| d * v)
                                    .sum::<f32>();
                            } else {
                                for (ow, &d) in dy_row.iter().enumerate().take(hi).skip(lo) {
                                    sum += d * x_row[ow * g.stride[1] + j - g.padding[1]];
                                }
                            }
                        }
                        filter_grad[i * g.kw + j] += sum;
                    }
                }
            }
        });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_valid_ranges_skip_exactly_the_padding() {
        // 3 taps, padding 1, stride 1, 5 columns: tap 0 reads column ow - 1 (valid from
        // ow = 1), tap 2 reads ow + 1 (valid up to ow = 3).
        assert_eq!(valid_outputs(0, 1, 1, 5, 5), (1, 5));
        assert_eq!(valid_outputs(1, 1, 1, 5, 5), (0, 5));
        assert_eq!(valid_outputs(2, 1, 1, 5, 5), (0, 4));
        // Stride 2 over 6 columns into 3: tap 0 reads 2 * ow - 1.
        assert_eq!(valid_outputs(0, 2, 1, 6, 3), (1, 3));
        assert_eq!(valid_outputs(2, 2, 1, 6, 3), (0, 3));
        // Brute force over small geometries.
        for stride in 1..4 {
            for padding in 0..4 {
                for in_w in 1..8 {
                    for k in 1..8 {
                        if in_w + 2 * padding < k {
                            continue;
                        }
                        let out_w = (in_w + 2 * padding - k) / stride + 1;
                        for j in 0..k {
                            let (lo, hi) = valid_outputs(j, stride, padding, in_w, out_w);
                            for ow in 0..out_w {
                                let col = (ow * stride + j) as isize - padding as isize;
                                let inside = col >= 0 && (col as usize) < in_w;
                                assert_eq!(
                                    inside,
                                    (lo..hi).contains(&ow),
                                    "{stride} {padding} {in_w} {k} {j} {ow}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
