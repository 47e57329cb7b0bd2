//! int8 pooling: max, average and global average. The output keeps the input's scale and zero
//! point, so no requantisation is needed: max pooling compares codes, averaging divides the
//! sum of `q - zero_point` by the window's size, rounding ties away from zero (padded cells
//! count as real zeros, as in the f32 kernels). The export's reader caps a window at
//! [`MAX_POOL_CELLS`] cells, so the `i32` sum cannot overflow.

use crate::{Pool2dParams, Shape3};

/// Cells one pooling window (or a global pool's plane) may cover: `255 * 2^23 < 2^31`.
pub const MAX_POOL_CELLS: usize = 1 << 23;

/// Max pooling; padded cells are ignored.
///
/// # Shapes
/// - `input`: `params.window.input`, CHW; `output`: `params.output()`
#[inline(always)]
pub fn max_pool2d(params: &Pool2dParams, input: &[i8], output: &mut [i8]) {
    pool::<true>(params, 0, input, output);
}

/// Average pooling: `zero_point + round(sum(q - zero_point) / (kh * kw))`.
///
/// # Shapes
/// - `input`: `params.window.input`, CHW; `output`: `params.output()`
#[inline(always)]
pub fn avg_pool2d(params: &Pool2dParams, zero_point: i32, input: &[i8], output: &mut [i8]) {
    pool::<false>(params, zero_point, input, output);
}

/// One mean per channel: `zero_point + round(sum(q - zero_point) / (h * w))`.
///
/// # Shapes
/// - `input`: `input_shape`, CHW; `output`: `[channels]`
#[inline(always)]
pub fn global_avg_pool(input_shape: Shape3, zero_point: i32, input: &[i8], output: &mut [i8]) {
    assert_eq!(
        input.len(),
        input_shape.len(),
        "int8 global pool input length"
    );
    assert_eq!(
        output.len(),
        input_shape.channels,
        "int8 global pool output"
    );
    let plane = input_shape.plane();
    for (o, x) in output.iter_mut().zip(input.chunks_exact(plane)) {
        let sum = x.iter().fold(0i32, |s, q| s + (*q as i32 - zero_point));
        *o = mean_code(sum, plane as i32, zero_point);
    }
}

/// `zero_point + sum / count` rounded half away from zero, saturated to int8.
#[inline]
pub fn mean_code(sum: i32, count: i32, zero_point: i32) -> i8 {
    let half = count / 2;
    let mean = if sum >= 0 {
        (sum + half) / count
    } else {
        -((-sum + half) / count)
    };
    (mean + zero_point).clamp(i8::MIN as i32, i8::MAX as i32) as i8
}

/// The loops both share: per output, the window's cells inside the input (clamped once per
/// row and column), their maximum or the rounded mean of `q - zero_point`.
#[inline(always)]
fn pool<const MAX: bool>(params: &Pool2dParams, zero_point: i32, input: &[i8], output: &mut [i8]) {
    let w = &params.window;
    assert_eq!(input.len(), w.input.len(), "int8 pool input length");
    assert_eq!(output.len(), w.output.len(), "int8 pool output length");
    let count = (w.kernel[0] * w.kernel[1]) as i32;
    let (in_plane, in_w) = (w.input.plane(), w.input.width);
    let (out_plane, out_w) = (w.output.plane(), w.output.width);
    for c in 0..w.input.channels {
        let x = &input[c * in_plane..(c + 1) * in_plane];
        let out = &mut output[c * out_plane..(c + 1) * out_plane];
        for oy in 0..w.output.height {
            let (ky0, ky1) = w.valid_taps(0, oy);
            let iy0 = oy * w.stride[0] + ky0 - w.padding[0];
            for (ox, o) in out[oy * out_w..(oy + 1) * out_w].iter_mut().enumerate() {
                let (kx0, kx1) = w.valid_taps(1, ox);
                let ix0 = ox * w.stride[1] + kx0 - w.padding[1];
                let (mut max, mut sum) = (i8::MIN, 0i32);
                for dy in 0..ky1 - ky0 {
                    let row = &x[(iy0 + dy) * in_w + ix0..][..kx1 - kx0];
                    for &q in row {
                        if MAX {
                            max = max.max(q);
                        } else {
                            sum += q as i32 - zero_point;
                        }
                    }
                }
                *o = if MAX {
                    max
                } else {
                    mean_code(sum, count, zero_point)
                };
            }
        }
    }
}
