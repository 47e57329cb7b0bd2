//! int8 3x3 depthwise convolution on a padded plane, for CPUs with vector units (aarch64's
//! NEON): per output row, each of the nine taps adds `w * x` over the whole row at once,
//! plain loops that the compiler vectorises, and the row is requantised as a run
//! ([`OutputStage::requantize_run`]).
//!
//! As [`super::depthwise3x3_dsp`], each input plane is first copied into a padded plane
//! whose border is the input's zero point, and the zero point's share `x_zero * sum(w)` comes
//! off the bias once per channel, so the products are of raw codes and no tap's run is
//! clipped at a border: the results equal [`super::depthwise_conv2d`]'s bit for bit.

use super::depthwise_dsp::PaddedPlanes;
use super::{OutputStage, Requantize};
use crate::Conv2dParams;

/// Output pixels of a row accumulated at once: a stack buffer.
const ROW_CHUNK: usize = 64;

/// A 3x3 depthwise convolution at stride `SW` (1 or 2; [`super::depthwise3x3_dsp_fits`]) through a
/// padded plane in `scratch`; the results equal [`super::depthwise_conv2d`]'s bit for bit.
///
/// # Shapes
/// - `input`: `params.input()`, CHW
/// - `weights`: `[channels, 1, 3, 3]`
/// - `bias`, `requantize`: `[channels]`
/// - `scratch`: [`super::depthwise3x3_dsp_scratch_len`]`(params)` codes
/// - `output`: `params.output()`, CHW
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn depthwise3x3_padded<const SW: usize>(
    params: &Conv2dParams,
    input_zero: i32,
    weights: &[i8],
    bias: &[i32],
    requantize: &[Requantize],
    stage: OutputStage,
    input: &[i8],
    scratch: &mut [i8],
    output: &mut [i8],
) {
    let w = &params.window;
    let channels = w.output.channels;
    let planes = PaddedPlanes::begin("depthwise3x3_padded", SW, params, input_zero, scratch);
    planes.check(params, weights, bias, requantize, input, output);
    let wide = planes.wide;
    let (out_h, out_w) = (w.output.height, w.output.width);
    let out_plane = w.output.plane();
    let mut acc = [0i32; ROW_CHUNK];
    for c in 0..channels {
        let start = planes.channel(params, input_zero, c, input, weights, bias, scratch);
        // The channel's taps in registers for all its rows: read from `weights` in the loop,
        // the optimiser loads them again for every row (a MobileNetV2 ran 7% more
        // instructions, 12% more in its 7x7 layers, with the codes as firmware keeps them).
        let k: [i32; 9] = core::array::from_fn(|tap| weights[c * 9 + tap] as i32);
        let out = &mut output[c * out_plane..(c + 1) * out_plane];
        for oy in 0..out_h {
            for ox0 in (0..out_w).step_by(ROW_CHUNK) {
                let n = ROW_CHUNK.min(out_w - ox0);
                let acc = &mut acc[..n];
                acc.fill(start);
                for (tap, &weight) in k.iter().enumerate() {
                    let (r, kx) = (tap / 3, tap % 3);
                    let at = (oy * SW + r) * wide + ox0 * SW + kx;
                    let row = &scratch[at..at + (n - 1) * SW + 1];
                    for (a, x) in acc.iter_mut().zip(row.iter().step_by(SW)) {
                        *a += weight * *x as i32;
                    }
                }
                let at = oy * out_w + ox0;
                stage.requantize_run(&requantize[c], acc, &mut out[at..at + n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::{depthwise_conv2d, depthwise3x3_dsp_scratch_len};
    use crate::{Activation, Shape3};
    use std::vec;
    use std::vec::Vec;

    use crate::int8::test_codes::Rng;

    #[test]
    fn the_padded_depthwise_kernel_equals_the_portable_one() {
        let mut rng = Rng(0x1234_5677);
        // Odd and even sizes, rows longer than a chunk, both strides, with and without
        // padding, every activation.
        for act in [Activation::None, Activation::Relu, Activation::Relu6] {
            for (input, stride, padding) in [
                (Shape3::new(3, 7, 9), 1, 1),
                (Shape3::new(2, 5, 70), 1, 1),
                (Shape3::new(2, 6, 5), 1, 0),
                (Shape3::new(3, 8, 8), 2, 1),
                (Shape3::new(2, 9, 135), 2, 1),
                (Shape3::new(1, 9, 6), 2, 0),
            ] {
                let params = Conv2dParams::depthwise(
                    input,
                    [3, 3],
                    [stride, stride],
                    [padding, padding],
                    act,
                )
                .unwrap();
                let c = input.channels;
                let x = rng.codes(input.len());
                let weights = rng.weights(c * 9);
                let bias = rng.biases(c);
                let rq: Vec<Requantize> = (0..c)
                    .map(|_| {
                        Requantize::from_real(0.0005 + (rng.next() % 1000) as f64 * 1e-5).unwrap()
                    })
                    .collect();
                let stage = OutputStage {
                    zero_point: 11,
                    min: if act == Activation::None { -128 } else { 11 },
                    max: if act == Activation::Relu6 { 90 } else { 127 },
                    factors_below_half: false,
                    factors_short: false,
                };
                let zero = (rng.next() % 256) as i32 - 128;
                let mut want = vec![0i8; params.output().len()];
                depthwise_conv2d(&params, zero, &weights, &bias, &rq, stage, &x, &mut want);
                let mut got = vec![0i8; params.output().len()];
                let mut scratch = vec![0x55i8; depthwise3x3_dsp_scratch_len(&params)];
                let told = stage.with_factors(&rq);
                let run = match stride {
                    1 => depthwise3x3_padded::<1>,
                    _ => depthwise3x3_padded::<2>,
                };
                run(
                    &params,
                    zero,
                    &weights,
                    &bias,
                    &rq,
                    told,
                    &x,
                    &mut scratch,
                    &mut got,
                );
                assert_eq!(
                    got, want,
                    "{input} stride {stride} padding {padding} {act:?}"
                );
            }
        }
    }
}
