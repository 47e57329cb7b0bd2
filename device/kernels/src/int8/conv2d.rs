//! int8 convolutions, dense and depthwise: portable loops over the valid taps of each output
//! pixel, an `i32` accumulator of `(x - x_zero) * w`, and one requantisation per output.
//!
//! Weights are in the export's order (OIHW; `[C, 1, kh, kw]` for depthwise), symmetric
//! (`-127..=127`, zero point 0) with one [`Requantize`] per output channel; biases are `i32` in
//! units of `x_scale * w_scale[oc]`. The export's reader guarantees that no accumulator can
//! overflow (`|bias| + taps * 255 * 127 < 2^31`).

use super::{OutputStage, Requantize};
use crate::Conv2dParams;

/// A dense convolution (`groups == 1`).
///
/// # Shapes
/// - `input`: `params.input()`, CHW
/// - `weights`: `[out_channels, in_channels, kh, kw]`
/// - `bias`, `requantize`: `[out_channels]`
/// - `output`: `params.output()`, CHW
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn conv2d(
    params: &Conv2dParams,
    input_zero: i32,
    weights: &[i8],
    bias: &[i32],
    requantize: &[Requantize],
    stage: OutputStage,
    input: &[i8],
    output: &mut [i8],
) {
    let w = &params.window;
    let channels = w.input.channels;
    convolve(
        params,
        channels,
        |_| 0..channels,
        input_zero,
        weights,
        bias,
        requantize,
        stage,
        input,
        output,
    );
}

/// A depthwise convolution (`groups == in_channels == out_channels`).
///
/// # Shapes
/// - `input`: `params.input()`, CHW
/// - `weights`: `[channels, 1, kh, kw]`
/// - `bias`, `requantize`: `[channels]`
/// - `output`: `params.output()`, CHW
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn depthwise_conv2d(
    params: &Conv2dParams,
    input_zero: i32,
    weights: &[i8],
    bias: &[i32],
    requantize: &[Requantize],
    stage: OutputStage,
    input: &[i8],
    output: &mut [i8],
) {
    assert_eq!(
        params.input().channels,
        params.output().channels,
        "depthwise channels"
    );
    convolve(
        params,
        1,
        |oc| oc..oc + 1,
        input_zero,
        weights,
        bias,
        requantize,
        stage,
        input,
        output,
    );
}

/// Output pixels of one row accumulated together: a stack buffer (no allocation), long
/// enough that the multiply-add over it is a vector loop.
const ROW_CHUNK: usize = 64;

/// The loop both share: output channel `oc` reads input channels `inputs_of(oc)`, with
/// `per_group` input channels per weight row.
///
/// Per output row, up to [`ROW_CHUNK`] pixels are accumulated at once: for every input
/// channel and kernel tap, one weight times a run of input codes (contiguous at stride 1), the
/// run clipped once to the columns the tap reaches, so the inner loop has no bounds tests.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn convolve(
    params: &Conv2dParams,
    per_group: usize,
    inputs_of: impl Fn(usize) -> core::ops::Range<usize>,
    input_zero: i32,
    weights: &[i8],
    bias: &[i32],
    requantize: &[Requantize],
    stage: OutputStage,
    input: &[i8],
    output: &mut [i8],
) {
    let w = &params.window;
    let [kh, kw] = w.kernel;
    let [_, sw] = w.stride;
    let pw = w.padding[1];
    let taps = kh * kw;
    let out_channels = w.output.channels;
    assert_eq!(input.len(), w.input.len(), "int8 conv input length");
    assert_eq!(output.len(), w.output.len(), "int8 conv output length");
    assert_eq!(
        weights.len(),
        out_channels * per_group * taps,
        "int8 conv weight length"
    );
    assert_eq!(bias.len(), out_channels, "int8 conv bias length");
    assert_eq!(
        requantize.len(),
        out_channels,
        "int8 conv requantize length"
    );
    let (in_plane, in_w) = (w.input.plane(), w.input.width);
    let (out_plane, out_w) = (w.output.plane(), w.output.width);
    let mut acc = [0i32; ROW_CHUNK];
    for oc in 0..out_channels {
        let rows = &weights[oc * per_group * taps..(oc + 1) * per_group * taps];
        let out = &mut output[oc * out_plane..(oc + 1) * out_plane];
        for oy in 0..w.output.height {
            let (ky0, ky1) = w.valid_taps(0, oy);
            let iy0 = oy * w.stride[0] + ky0 - w.padding[0];
            for ox0 in (0..out_w).step_by(ROW_CHUNK) {
                let n = ROW_CHUNK.min(out_w - ox0);
                let acc = &mut acc[..n];
                acc.fill(bias[oc]);
                for (g, ic) in inputs_of(oc).enumerate() {
                    let plane = &input[ic * in_plane..(ic + 1) * in_plane];
                    let kernel = &rows[g * taps..(g + 1) * taps];
                    for (dy, ky) in (ky0..ky1).enumerate() {
                        let row = &plane[(iy0 + dy) * in_w..(iy0 + dy + 1) * in_w];
                        for kx in 0..kw {
                            // No skip of zero weights: a layer's cost must not depend on
                            // its values, or no latency table could predict it.
                            let weight = kernel[ky * kw + kx] as i32;
                            // Pixels j of the chunk whose column `(ox0 + j) * sw + kx - pw`
                            // lies in the row.
                            let first = (pw.saturating_sub(kx)).div_ceil(sw).max(ox0) - ox0;
                            let end = if in_w + pw > kx {
                                ((in_w + pw - kx - 1) / sw + 1).min(ox0 + n).max(ox0) - ox0
                            } else {
                                0
                            };
                            if first >= end {
                                continue;
                            }
                            let ix0 = (ox0 + first) * sw + kx - pw;
                            let acc = &mut acc[first..end];
                            if sw == 1 {
                                let x = &row[ix0..ix0 + acc.len()];
                                for (a, x) in acc.iter_mut().zip(x) {
                                    *a += (*x as i32 - input_zero) * weight;
                                }
                            } else {
                                let x = row[ix0..].iter().step_by(sw);
                                for (a, x) in acc.iter_mut().zip(x) {
                                    *a += (*x as i32 - input_zero) * weight;
                                }
                            }
                        }
                    }
                }
                let at = oy * out_w + ox0;
                // NEON requantises runs four at a time; elsewhere the loop as it was, whose
                // code on Cortex-M the int8 latency tables were fitted to (the same loop
                // through `requantize_run` compiles differently alone and in a model).
                #[cfg(target_arch = "aarch64")]
                stage.requantize_run(&requantize[oc], acc, &mut out[at..at + n]);
                #[cfg(not(target_arch = "aarch64"))]
                for (j, a) in acc.iter().enumerate() {
                    out[at + j] = stage.requantize(&requantize[oc], *a);
                }
            }
        }
    }
}
