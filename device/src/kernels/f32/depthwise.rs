//! Depthwise 2-D convolution (`groups == channels`): each channel has its own `kh x kw` filter.
//!
//! Weights keep the export order `[channel][ky][kx]` (already streaming for this kernel). The
//! inner tile computes 8 neighbouring output pixels of a row: per tap one weight load and 8
//! input loads for 8 multiply-accumulates (each weight is used once per input, so loads can't
//! drop below one per MAC without keeping input rows in registers).

use super::mac;
use crate::kernels::{Conv2dParams, Window};

const PIXEL_BLOCK: usize = 8;
const HALF_BLOCK: usize = 4;

/// Depthwise convolution: `output[c] = activation(bias[c] + conv(input[c], weights[c]))`.
pub fn depthwise_conv2d(
    params: &Conv2dParams,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    let w = &params.window;
    assert_eq!(input.len(), w.input.len(), "depthwise input length");
    assert_eq!(
        weights.len(),
        params.depthwise_weight_len(),
        "depthwise weight length"
    );
    assert_eq!(bias.len(), w.output.channels, "depthwise bias length");
    assert_eq!(output.len(), w.output.len(), "depthwise output length");
    assert_eq!(w.input.channels, w.output.channels, "depthwise channels");

    match w.stride[1] {
        1 => channels::<1>(params, input, weights, bias, output),
        2 => channels::<2>(params, input, weights, bias, output),
        _ => channels::<0>(params, input, weights, bias, output),
    }
}

/// All channels; `SW` is the column stride when constant (1, 2), else 0.
#[inline(always)]
fn channels<const SW: usize>(
    params: &Conv2dParams,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    let w = &params.window;
    let taps = w.kernel[0] * w.kernel[1];
    let (interior_lo, interior_hi) = w.interior_columns();
    let in_plane = w.input.plane();
    let out_plane = w.output.plane();
    for c in 0..w.input.channels {
        let x = &input[c * in_plane..(c + 1) * in_plane];
        let k = &weights[c * taps..(c + 1) * taps];
        let out = &mut output[c * out_plane..(c + 1) * out_plane];
        for oy in 0..w.output.height {
            let rows = w.valid_taps(0, oy);
            let row = &mut out[oy * w.output.width..(oy + 1) * w.output.width];
            let mut ox = 0;
            while ox < w.output.width {
                let all_cols = (0, w.kernel[1]);
                if ox >= interior_lo && ox + PIXEL_BLOCK <= interior_hi {
                    // NOTE(unsafe): interior columns (every kernel column inside the input),
                    // rows clamped, slice lengths checked above.
                    let acc = unsafe { tile::<PIXEL_BLOCK, SW>(w, x, k, oy, rows, ox, all_cols) };
                    for (d, a) in row[ox..ox + PIXEL_BLOCK].iter_mut().zip(acc) {
                        *d = params.activation.apply(a + bias[c]);
                    }
                    ox += PIXEL_BLOCK;
                } else if ox >= interior_lo && ox + HALF_BLOCK <= interior_hi {
                    // The interior's remainder, 4 pixels at a time (same argument as above).
                    let acc = unsafe { tile::<HALF_BLOCK, SW>(w, x, k, oy, rows, ox, all_cols) };
                    for (d, a) in row[ox..ox + HALF_BLOCK].iter_mut().zip(acc) {
                        *d = params.activation.apply(a + bias[c]);
                    }
                    ox += HALF_BLOCK;
                } else {
                    let cols = w.valid_taps(1, ox);
                    // NOTE(unsafe): rows and columns clamped to the input for this pixel.
                    let [a] = unsafe { tile::<1, SW>(w, x, k, oy, rows, ox, cols) };
                    row[ox] = params.activation.apply(a + bias[c]);
                    ox += 1;
                }
            }
        }
    }
}

/// Sums the windows of output pixels `(oy, ox..ox+PX)` of one channel.
///
/// # Safety
/// `plane` is one input channel, `kernel` its `kh * kw` weights, and every visited tap
/// `(oy*sh + ky - ph, (ox+p)*sw + kx - pw)`, `ky` in `rows`, `kx` in `cols`, `p < PX`, lies
/// inside the plane; `SW` is 0 or `w.stride[1]`.
#[inline(always)]
unsafe fn tile<const PX: usize, const SW: usize>(
    w: &Window,
    plane: &[f32],
    kernel: &[f32],
    oy: usize,
    rows: (usize, usize),
    ox: usize,
    cols: (usize, usize),
) -> [f32; PX] {
    let kw = w.kernel[1];
    let in_w = w.input.width;
    let sw = if SW == 0 { w.stride[1] } else { SW };
    let origin = (oy * w.stride[0])
        .wrapping_sub(w.padding[0])
        .wrapping_mul(in_w)
        .wrapping_add((ox * sw).wrapping_sub(w.padding[1]));
    let mut acc = [0.0f32; PX];
    let xp = plane.as_ptr();
    let kp = kernel.as_ptr();
    for ky in rows.0..rows.1 {
        let in_row = origin.wrapping_add(ky * in_w);
        for kx in cols.0..cols.1 {
            // NOTE(unsafe): in bounds by this function's contract (see # Safety).
            unsafe {
                let wv = *kp.add(ky * kw + kx);
                for (p, a) in acc.iter_mut().enumerate() {
                    *a = mac(*a, wv, *xp.add(in_row.wrapping_add(kx + p * sw)));
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::f32::conv2d::tests::naive_conv;
    use crate::kernels::f32::test_util::{Rng, assert_close};
    use crate::kernels::{Activation, Shape3};

    #[test]
    fn matches_naive_reference_on_many_shapes() {
        let mut seed = 100;
        for &(c, h, w) in &[(1, 1, 1), (1, 5, 5), (3, 8, 8), (2, 7, 9), (6, 6, 11)] {
            for &(k, s, p) in &[
                ([3, 3], [1, 1], [1, 1]),
                ([3, 3], [2, 2], [1, 1]),
                ([5, 5], [1, 1], [2, 2]),
                ([1, 3], [1, 2], [0, 1]),
                ([2, 2], [1, 1], [0, 0]),
            ] {
                for act in [Activation::None, Activation::Relu6] {
                    let input = Shape3::new(c, h, w);
                    let Ok(params) = Conv2dParams::depthwise(input, k, s, p, act) else {
                        continue;
                    };
                    seed += 1;
                    let mut rng = Rng::new(seed);
                    let x = rng.vec(input.len());
                    let wt = rng.vec(params.depthwise_weight_len());
                    let b = rng.vec(c);
                    let mut got = vec![f32::NAN; params.output().len()];
                    depthwise_conv2d(&params, &x, &wt, &b, &mut got);
                    let want = naive_conv(&params, c, &x, &wt, &b);
                    assert_close(
                        &got,
                        &want,
                        1e-5,
                        &format!("depthwise {input} k{k:?} s{s:?}"),
                    );
                }
            }
        }
    }
}
