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
pub fn max_pool2d(params: &Pool2dParams, input: &[i8], output: &mut [i8]) {
    pool(params, 0, input, output, |cells, _| {
        cells.fold(i8::MIN, |m, (_, q)| m.max(q))
    });
}

/// Average pooling: `zero_point + round(sum(q - zero_point) / (kh * kw))`.
///
/// # Shapes
/// - `input`: `params.window.input`, CHW; `output`: `params.output()`
pub fn avg_pool2d(params: &Pool2dParams, zero_point: i32, input: &[i8], output: &mut [i8]) {
    let count = (params.window.kernel[0] * params.window.kernel[1]) as i32;
    pool(params, zero_point, input, output, |cells, z| {
        let sum = cells.fold(0i32, |s, (_, q)| s + (q as i32 - z));
        mean_code(sum, count, z)
    });
}

/// One mean per channel: `zero_point + round(sum(q - zero_point) / (h * w))`.
///
/// # Shapes
/// - `input`: `input_shape`, CHW; `output`: `[channels]`
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

/// Runs `reduce` over the valid cells of every window (as `(index, code)`).
#[inline(always)]
fn pool<F>(params: &Pool2dParams, zero_point: i32, input: &[i8], output: &mut [i8], reduce: F)
where
    F: Fn(&mut dyn Iterator<Item = (usize, i8)>, i32) -> i8,
{
    let w = &params.window;
    assert_eq!(input.len(), w.input.len(), "int8 pool input length");
    assert_eq!(output.len(), w.output.len(), "int8 pool output length");
    let (in_plane, in_w) = (w.input.plane(), w.input.width);
    let (out_plane, out_w) = (w.output.plane(), w.output.width);
    for c in 0..w.input.channels {
        let x = &input[c * in_plane..(c + 1) * in_plane];
        for oy in 0..w.output.height {
            let (ky0, ky1) = w.valid_taps(0, oy);
            let iy0 = oy * w.stride[0] + ky0 - w.padding[0];
            for ox in 0..out_w {
                let (kx0, kx1) = w.valid_taps(1, ox);
                let ix0 = ox * w.stride[1] + kx0 - w.padding[1];
                let mut cells = (0..ky1 - ky0).flat_map(|dy| {
                    let row = (iy0 + dy) * in_w + ix0;
                    (row..row + (kx1 - kx0)).map(|i| (i, x[i]))
                });
                output[c * out_plane + oy * out_w + ox] = reduce(&mut cells, zero_point);
            }
        }
    }
}
