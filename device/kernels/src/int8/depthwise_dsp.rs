//! int8 3x3 depthwise convolution with the Cortex-M DSP extension: two neighbouring output
//! pixels at a time, each kernel row in one word load, two `SXTB16` and four 16-bit
//! multiply-accumulates (7 instructions for 6 MACs at stride 1, 9 at stride 2).
//!
//! Stride 1, output pixels `o0` and `o1` over input codes `a0 a1 a2 a3` (one word of the
//! row) and kernel row `w0 w1 w2`:
//! - `SXTB16` gives `(a0, a2)`, with `ROR #8` `(a1, a3)`;
//! - `o0 += (a0, a2) . (w0, w2) + a1 * w1` (`SMLAD`, `SMLABB`);
//! - `o1 += (a1, a3) . (w0, w2) + a2 * w1` (`SMLAD`, `SMLATB`).
//!
//! At stride 2 `o1` starts two codes on: a second word at `a2` gives `(a2, a4)`, and `a3`
//! is the top half of `(a1, a3)`.
//!
//! Each input plane is first copied into a padded plane whose border is the input's zero
//! point (the code of real 0), so no window needs a border test. The products are of the raw
//! codes: the zero point's share, `x_zero * sum(w)`, comes off the bias once per channel,
//! which gives exactly the portable kernel's `sum((x - x_zero) * w) + bias`.

use super::OutputStage;
use super::Requantize;
use super::simd32::{copy_codes, load_word, pack16, smlabb, smlad, smlatb, sxtb16, sxtb16_ror8};
use crate::Conv2dParams;

/// Whether [`depthwise3x3_dsp`] takes a depthwise layer: a 3x3 kernel at stride 1 or 2 (the
/// same both ways).
pub const fn depthwise3x3_dsp_fits(params: &Conv2dParams) -> bool {
    let w = &params.window;
    w.kernel[0] == 3
        && w.kernel[1] == 3
        && w.stride[0] == w.stride[1]
        && (w.stride[0] == 1 || w.stride[0] == 2)
}

/// Codes beyond the padded plane that the last pair of a row may load (and ignore).
const SLACK: usize = 4;

/// Outputs of a row summed before they are requantised, as one run of the channel
/// ([`OutputStage::requantize_run`]): the inner products then need only the weights in
/// registers, and the requantisation only its factor's (in one loop, LLVM kept part of the
/// six weight pairs on the stack). Even, so that every run starts a pair.
const RUN: usize = 32;

/// The narrowest output rows that run `arm/dw3x3.s` (at stride 1 on Cortex-M4/M7); narrower
/// ones stay in Rust. Measured on MobileNetV2's layers (Cortex-M7): rows of 28 and 14
/// pixels 18% and 13% fewer instructions in assembly, rows of 7 and 4 13% and 21% more (the
/// call and its arguments, per row of 4 pairs or fewer); on Cortex-M4 all fewer.
#[cfg_attr(not(all(target_arch = "arm", target_abi = "eabihf")), allow(dead_code))]
const ASM_MIN_WIDTH: usize = 13;

/// Codes of scratch [`depthwise3x3_dsp`] needs: one padded input plane and a few codes of
/// slack.
pub const fn depthwise3x3_dsp_scratch_len(params: &Conv2dParams) -> usize {
    let w = &params.window;
    (w.input.height + 2 * w.padding[0]) * (w.input.width + 2 * w.padding[1]) + SLACK
}

/// What both 3x3 depthwise kernels ([`depthwise3x3_dsp`], [`super::depthwise3x3_padded`])
/// share: their checks, and one input plane at a time copied into a padded plane in the
/// scratch, whose border is the input's zero point (the code of real 0), with the zero
/// point's share of the sums taken off the bias.
pub(super) struct PaddedPlanes {
    /// Codes per padded row.
    pub wide: usize,
}

impl PaddedPlanes {
    /// Checks the geometry for `kernel` (its name, for the messages) at stride `sw`, and
    /// writes the zero point over `scratch`: only interiors are overwritten later, so the
    /// border stays the zero point for every channel.
    #[inline(always)]
    pub(super) fn begin(
        kernel: &str,
        sw: usize,
        params: &Conv2dParams,
        input_zero: i32,
        scratch: &mut [i8],
    ) -> PaddedPlanes {
        let w = &params.window;
        assert!(
            depthwise3x3_dsp_fits(params) && w.stride[1] == sw,
            "{kernel}::<{sw}> called for kernel {:?} stride {:?}",
            w.kernel,
            w.stride
        );
        assert_eq!(
            scratch.len(),
            depthwise3x3_dsp_scratch_len(params),
            "{kernel} scratch length"
        );
        let [ph, pw] = w.padding;
        let wide = w.input.width + 2 * pw;
        // The windows of the last output row and column lie inside the padded plane (the
        // geometry's own invariant), the last pair's loads inside its slack.
        assert!(
            (w.output.height - 1) * sw + 3 <= w.input.height + 2 * ph
                && (w.output.width - 1) * sw + 3 <= wide
        );
        // `input_zero` is a code (-128..=127, the export's reader checks it).
        scratch.fill(input_zero as i8);
        PaddedPlanes { wide }
    }

    /// The buffers' lengths against the layer's.
    #[inline(always)]
    pub(super) fn check(
        &self,
        params: &Conv2dParams,
        weights: &[i8],
        bias: &[i32],
        requantize: &[Requantize],
        input: &[i8],
        output: &[i8],
    ) {
        let w = &params.window;
        let channels = w.output.channels;
        assert_eq!(w.input.channels, channels, "depthwise channels");
        assert_eq!(input.len(), w.input.len(), "int8 depthwise input length");
        assert_eq!(output.len(), w.output.len(), "int8 depthwise output length");
        assert_eq!(weights.len(), channels * 9, "int8 depthwise weight length");
        assert_eq!(bias.len(), channels, "int8 depthwise bias length");
        assert_eq!(
            requantize.len(),
            channels,
            "int8 depthwise requantize length"
        );
    }

    /// Copies channel `c` of `input` into the padded plane's interior; returns the
    /// channel's bias less the zero point's share (`x_zero * sum(w)`), so that sums of raw
    /// codes over the plane equal the portable kernel's sums of `(x - x_zero) * w`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn channel(
        &self,
        params: &Conv2dParams,
        input_zero: i32,
        c: usize,
        input: &[i8],
        weights: &[i8],
        bias: &[i32],
        scratch: &mut [i8],
    ) -> i32 {
        let w = &params.window;
        let [ph, pw] = w.padding;
        let (in_w, in_plane) = (w.input.width, w.input.plane());
        for (y, src) in input[c * in_plane..(c + 1) * in_plane]
            .chunks_exact(in_w)
            .enumerate()
        {
            let start = (y + ph) * self.wide + pw;
            copy_codes(&mut scratch[start..start + in_w], src);
        }
        let taps_sum: i32 = weights[c * 9..(c + 1) * 9].iter().map(|&v| v as i32).sum();
        bias[c] - input_zero * taps_sum
    }
}

/// A 3x3 depthwise convolution at stride `SW` (1 or 2; [`depthwise3x3_dsp_fits`]); the
/// results equal [`super::depthwise_conv2d`]'s bit for bit.
///
/// # Shapes
/// - `input`: `params.input()`, CHW
/// - `weights`: `[channels, 1, 3, 3]`
/// - `bias`, `requantize`: `[channels]`
/// - `scratch`: [`depthwise3x3_dsp_scratch_len`]`(params)` codes
/// - `output`: `params.output()`, CHW
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn depthwise3x3_dsp<const SW: usize>(
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
    let planes = PaddedPlanes::begin("depthwise3x3_dsp", SW, params, input_zero, scratch);
    planes.check(params, weights, bias, requantize, input, output);
    let wide = planes.wide;
    let (out_h, out_w) = (w.output.height, w.output.width);
    let out_plane = w.output.plane();
    for c in 0..channels {
        let start = planes.channel(params, input_zero, c, input, weights, bias, scratch);
        let k = &weights[c * 9..(c + 1) * 9];
        // Per kernel row: (w0, w2) as a pair, w1 in the bottom half.
        let outer = [0, 1, 2].map(|r| pack16(k[3 * r] as i32, k[3 * r + 2] as i32));
        let middle = [0, 1, 2].map(|r| k[3 * r + 1] as i32 as u32);
        // The same as the assembly reads them: the pairs, then the middle taps as halves.
        #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
        let packed: [u32; 5] = [
            outer[0],
            outer[1],
            outer[2],
            (middle[0] & 0xffff) | (middle[1] << 16),
            middle[2],
        ];
        let factor = &requantize[c];
        let out = &mut output[c * out_plane..(c + 1) * out_plane];
        // Cleared per channel although every run writes the sums it reads: declared once
        // for all channels, LLVM compiled the Cortex-M7 loop 1.7% dearer.
        let mut acc = [0i32; RUN];
        for oy in 0..out_h {
            let rows = oy * SW * wide;
            let row_out = &mut out[oy * out_w..(oy + 1) * out_w];
            for (run, codes) in row_out.chunks_mut(RUN).enumerate() {
                // Pairs from an even start: an odd last pixel's partner lies in the slack
                // (its sum, at `acc[n]`, is dropped).
                #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
                if SW == 1 && out_w >= ASM_MIN_WIDTH {
                    let pairs = codes.len().div_ceil(2);
                    let at = rows + run * RUN;
                    // The last pair's windows end within the padded plane and its slack.
                    assert!(at + 2 * (pairs - 1) + 2 * wide + 4 <= scratch.len());
                    // SAFETY: `acc` holds `RUN >= 2 * pairs` sums (word aligned, an `i32`
                    // array); the routine reads, for pair `p < pairs`, the words at `at + 2 p
                    // + r * wide` for rows `r < 3` (within `scratch`, asserted above) and the
                    // 5 words of `packed`, writes `2 * pairs` sums, and follows the AAPCS.
                    unsafe {
                        super::arm::dnal_s8_dw3x3_pairs(
                            acc.as_mut_ptr(),
                            scratch.as_ptr().add(at),
                            wide,
                            start,
                            packed.as_ptr(),
                            pairs,
                        );
                    }
                    stage.requantize_run(factor, &acc[..codes.len()], codes);
                    continue;
                }
                for (pair, two) in acc
                    .chunks_exact_mut(2)
                    .take(codes.len().div_ceil(2))
                    .enumerate()
                {
                    let at = rows + (run * RUN + 2 * pair) * SW;
                    let (mut o0, mut o1) = (start, start);
                    for r in 0..3 {
                        let row = at + r * wide;
                        let a = load_word(scratch, row);
                        let (even, odd) = (sxtb16(a), sxtb16_ror8(a));
                        o0 = smlabb(odd, middle[r], smlad(even, outer[r], o0));
                        if SW == 1 {
                            o1 = smlatb(even, middle[r], smlad(odd, outer[r], o1));
                        } else {
                            let next = sxtb16(load_word(scratch, row + 2));
                            o1 = smlatb(odd, middle[r], smlad(next, outer[r], o1));
                        }
                    }
                    two[0] = o0;
                    two[1] = o1;
                }
                stage.requantize_run(factor, &acc[..codes.len()], codes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::depthwise_conv2d;
    use crate::{Activation, Shape3};
    use std::vec;
    use std::vec::Vec;

    use crate::int8::test_codes::Rng;

    fn check<const SW: usize>(rng: &mut Rng, input: Shape3, padding: usize, act: Activation) {
        let params =
            Conv2dParams::depthwise(input, [3, 3], [SW, SW], [padding, padding], act).unwrap();
        let c = input.channels;
        let x = rng.codes(input.len());
        let weights = rng.weights(c * 9);
        let bias = rng.biases(c);
        let rq: Vec<Requantize> = (0..c)
            .map(|_| Requantize::from_real(0.0005 + (rng.next() % 1000) as f64 * 1e-5).unwrap())
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
        // Stale values in the scratch must not matter.
        let mut scratch = vec![0x55i8; depthwise3x3_dsp_scratch_len(&params)];
        let told = stage.with_factors(&rq);
        assert!(told.factors_below_half);
        depthwise3x3_dsp::<SW>(
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
        assert_eq!(got, want, "{input} stride {SW} padding {padding} {act:?}");
    }

    #[test]
    fn the_dsp_depthwise_kernel_equals_the_portable_one() {
        let mut rng = Rng(29);
        // Odd and even widths and heights (a last pixel without a partner), one channel and
        // several, both strides, with and without padding, every activation.
        for act in [Activation::None, Activation::Relu, Activation::Relu6] {
            check::<1>(&mut rng, Shape3::new(3, 7, 9), 1, act);
            check::<1>(&mut rng, Shape3::new(5, 8, 8), 1, act);
            check::<1>(&mut rng, Shape3::new(2, 6, 5), 0, act);
            check::<1>(&mut rng, Shape3::new(1, 3, 3), 1, act);
            check::<2>(&mut rng, Shape3::new(3, 8, 8), 1, act);
            check::<2>(&mut rng, Shape3::new(4, 7, 9), 1, act);
            check::<2>(&mut rng, Shape3::new(2, 9, 6), 0, act);
            check::<2>(&mut rng, Shape3::new(1, 3, 4), 1, act);
        }
    }
}
