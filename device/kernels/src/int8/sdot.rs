//! int8 dense convolution with the Armv8.2 dot-product instructions (`SDOT`, aarch64 CPUs
//! with `dotprod`: Cortex-A55, A76 and later): one instruction adds four 4-code dot products
//! into four `i32` lanes, 16 MACs.
//!
//! Per output pixel the receptive field is gathered as raw codes (`[ic][ky][kx]`, padded to
//! [`sdot_row_len`] with zeros) and every block of four output channels is accumulated
//! against it: per 16 codes, one load of the pixel's codes and four `SDOT`s by element, each
//! with its own 16 weight codes (four channels' four codes). The weights are re-laid out at
//! generation time ([`pack_conv2d_sdot`]).
//!
//! `SDOT` multiplies int8 by int8, and `x - x_zero` does not fit int8: the products are of
//! the raw codes, and the zero point's share `x_zero * sum(w)` comes off the bias, also at
//! generation time ([`fold_zero_point`]). Padding is written out as the zero point (real 0),
//! as [`super::conv2d_dsp`] writes it, so the sums equal the portable kernel's exactly.
//!
//! Elsewhere (the host's tests) the instruction is computed in plain Rust with the same
//! results.

use super::dsp::copy_padded_rows;
use super::{OutputStage, Requantize};
use crate::Conv2dParams;

/// Codes per output channel in the packed weights: the receptive field `in * kh * kw`
/// padded with zeros to a multiple of 16 (one load of a pixel's codes).
pub const fn sdot_row_len(params: &Conv2dParams) -> usize {
    let w = &params.window;
    (w.input.channels * w.kernel[0] * w.kernel[1]).div_ceil(16) * 16
}

/// The longest row [`conv2d_sdot`] takes: its gathered codes and their input offsets live on
/// the stack (`5 * row` bytes).
pub const MAX_SDOT_ROW: usize = 1024;

/// Bytes of [`pack_conv2d_sdot`]'s output: output channels rounded up to fours, times
/// [`sdot_row_len`].
pub const fn sdot_weights_len(params: &Conv2dParams) -> usize {
    params.window.output.channels.div_ceil(4) * 4 * sdot_row_len(params)
}

/// Codes of scratch [`conv2d_sdot`] needs: for a padded layer, the `kh` input rows of one
/// output row with the padding written out (`padded_rows_len`); 0 without
/// padding.
pub const fn sdot_scratch_len(params: &Conv2dParams) -> usize {
    super::dsp::padded_rows_len(params)
}

/// Packs OIHW weights for [`conv2d_sdot`]: per block of four output channels (a short last
/// block padded with zero channels) and per four codes of the row, the four channels' four
/// codes in turn, 16 bytes.
///
/// # Shapes
/// - `oihw`: `[out, in, kh, kw]`; `packed`: [`sdot_weights_len`]`(params)` codes
pub fn pack_conv2d_sdot(params: &Conv2dParams, oihw: &[i8], packed: &mut [i8]) {
    let w = &params.window;
    let k = w.input.channels * w.kernel[0] * w.kernel[1];
    let row = sdot_row_len(params);
    assert_eq!(
        oihw.len(),
        w.output.channels * k,
        "pack_conv2d_sdot weights"
    );
    assert_eq!(
        packed.len(),
        sdot_weights_len(params),
        "pack_conv2d_sdot packed"
    );
    packed.fill(0);
    for oc in 0..w.output.channels {
        let (block, lane) = (oc / 4, oc % 4);
        for i in 0..k {
            packed[block * 4 * row + (i / 4) * 16 + lane * 4 + i % 4] = oihw[oc * k + i];
        }
    }
}

/// The biases [`conv2d_sdot`] takes: `bias - x_zero * sum(w)` per output channel, so that
/// products of raw codes give the portable kernel's sums of `(x - x_zero) * w`. The export's
/// limits keep them within `i32` (`|bias| + taps * 255 * 127 < 2^31`).
///
/// # Shapes
/// - `oihw`: `[out, in, kh, kw]`; `bias`, `folded`: `[out]`
pub fn fold_zero_point(input_zero: i32, oihw: &[i8], bias: &[i32], folded: &mut [i32]) {
    assert!(!bias.is_empty() && oihw.len().is_multiple_of(bias.len()));
    assert_eq!(folded.len(), bias.len(), "fold_zero_point folded");
    let k = oihw.len() / bias.len();
    for ((f, b), w) in folded.iter_mut().zip(bias).zip(oihw.chunks_exact(k)) {
        let sum: i32 = w.iter().map(|&v| v as i32).sum();
        *f = b - input_zero * sum;
    }
}

/// `acc[i] += sum_b w[4 i + b] * x[4 LANE + b]` for the four lanes `i` (`SDOT` by element).
#[cfg(all(target_arch = "aarch64", target_feature = "dotprod"))]
#[inline(always)]
fn sdot<const LANE: usize>(
    acc: core::arch::aarch64::int32x4_t,
    w: core::arch::aarch64::int8x16_t,
    x: core::arch::aarch64::int8x16_t,
) -> core::arch::aarch64::int32x4_t {
    let mut acc = acc;
    // SAFETY: a register-only instruction of the `dotprod` extension, which this cfg
    // guarantees the target has; no memory, stack or flags.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{lane}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            lane = const LANE,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Four output channels' sums over one pixel's gathered `codes` and their packed `weights`
/// (`4 * ROW` codes), added to `acc`.
#[inline(always)]
fn dot4<const ROW: usize>(acc: &mut [i32; 4], codes: &[i8; ROW], weights: &[i8]) {
    assert!(weights.len() == 4 * ROW && ROW.is_multiple_of(16));
    #[cfg(all(target_arch = "aarch64", target_feature = "dotprod"))]
    {
        use core::arch::aarch64::{vld1q_s8, vld1q_s32, vst1q_s32};
        // SAFETY: `acc` holds 4 `i32`, `codes` `ROW` codes and `weights` `4 * ROW` (asserted),
        // and every load below stays within them: 16 codes at `16 s < ROW`, 16 weights at
        // `64 s + 16 j < 4 * ROW`.
        unsafe {
            let mut sum = vld1q_s32(acc.as_ptr());
            for s in 0..ROW / 16 {
                let x = vld1q_s8(codes.as_ptr().add(16 * s));
                let w = weights.as_ptr().add(64 * s);
                sum = sdot::<0>(sum, vld1q_s8(w), x);
                sum = sdot::<1>(sum, vld1q_s8(w.add(16)), x);
                sum = sdot::<2>(sum, vld1q_s8(w.add(32)), x);
                sum = sdot::<3>(sum, vld1q_s8(w.add(48)), x);
            }
            vst1q_s32(acc.as_mut_ptr(), sum);
        }
    }
    #[cfg(not(all(target_arch = "aarch64", target_feature = "dotprod")))]
    for (x, w) in codes.chunks_exact(4).zip(weights.chunks_exact(16)) {
        for (lane, a) in acc.iter_mut().enumerate() {
            *a += (0..4)
                .map(|b| w[4 * lane + b] as i32 * x[b] as i32)
                .sum::<i32>();
        }
    }
}

/// Four output channels' codes from their accumulators and `factors` (four), as
/// [`OutputStage::requantize`] gives them. With `SDOT` (an Armv8.2 CPU, so NEON) and every
/// factor below a half, the four at once (`apply4_neon`).
#[inline(always)]
fn requantize4(acc: &[i32; 4], factors: &[Requantize], stage: OutputStage) -> [i8; 4] {
    assert_eq!(factors.len(), 4);
    #[cfg(all(target_arch = "aarch64", target_feature = "dotprod"))]
    if stage.factors_below_half {
        use core::arch::aarch64::*;
        // SAFETY: `acc` holds 4 `i32` and `factors` 4 `Requantize` (asserted), two `i32`
        // each (`#[repr(C)]`: multiplier, then shift), which `vld2q_s32` reads as 8 `i32`
        // and splits into the multipliers and the shifts.
        unsafe {
            let pairs = vld2q_s32(factors.as_ptr().cast::<i32>());
            let y = super::requantize::apply4_neon(vld1q_s32(acc.as_ptr()), pairs.0, pairs.1);
            let mut out = [0i32; 4];
            vst1q_s32(out.as_mut_ptr(), stage.clamp4_neon(y));
            return out.map(|v| v as i8);
        }
    }
    [0, 1, 2, 3].map(|lane| stage.requantize(&factors[lane], acc[lane]))
}

/// A dense convolution (`groups == 1`) with packed weights and folded biases; the results
/// equal [`super::conv2d`]'s bit for bit. `ROW` is [`sdot_row_len`]`(params)`, at most
/// [`MAX_SDOT_ROW`].
///
/// A padded layer copies, per output row, the `kh` input rows it reads into `scratch`
/// (`copy_padded_rows`, as [`super::conv2d_dsp`] does) and
/// convolves that block without padding, so no gather tests a border.
///
/// # Shapes
/// - `input`: `params.input()`, CHW
/// - `packed`: [`sdot_weights_len`]`(params)` codes ([`pack_conv2d_sdot`])
/// - `folded_bias` ([`fold_zero_point`]), `requantize`: `[out_channels]`
/// - `scratch`: [`sdot_scratch_len`]`(params)` codes
/// - `output`: `params.output()`, CHW
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn conv2d_sdot<const ROW: usize>(
    params: &Conv2dParams,
    input_zero: i32,
    packed: &[i8],
    folded_bias: &[i32],
    requantize: &[Requantize],
    stage: OutputStage,
    input: &[i8],
    scratch: &mut [i8],
    output: &mut [i8],
) {
    let w = &params.window;
    let out_channels = w.output.channels;
    assert_eq!(ROW, sdot_row_len(params), "conv2d_sdot row length");
    assert!(
        ROW <= MAX_SDOT_ROW,
        "conv2d_sdot row longer than MAX_SDOT_ROW"
    );
    assert_eq!(input.len(), w.input.len(), "int8 conv input length");
    assert_eq!(output.len(), w.output.len(), "int8 conv output length");
    assert_eq!(
        scratch.len(),
        sdot_scratch_len(params),
        "conv2d_sdot scratch length"
    );
    assert_eq!(
        packed.len(),
        sdot_weights_len(params),
        "conv2d_sdot weights"
    );
    assert_eq!(folded_bias.len(), out_channels, "int8 conv bias length");
    assert_eq!(
        requantize.len(),
        out_channels,
        "int8 conv requantize length"
    );
    let ([kh, kw], [sh, sw], pw) = (w.kernel, w.stride, w.padding[1]);
    let (in_h, in_w) = (w.input.height, w.input.width);
    let (out_w, out_plane) = (w.output.width, w.output.plane());
    // The rows one output row reads: the input itself, or its padded copy in `scratch`.
    let wide = in_w + 2 * pw;
    let (rows_w, rows_plane) = if scratch.is_empty() {
        (in_w, in_h * in_w)
    } else {
        (wide, kh * wide)
    };
    // Where each code of the receptive field lies from the window's top-left cell.
    let mut offsets = [0u32; ROW];
    let receptive = w.input.channels * kh * kw;
    for (k, at) in offsets.iter_mut().enumerate().take(receptive) {
        let (ic, ky, kx) = (k / (kh * kw), (k / kw) % kh, k % kw);
        *at = (ic * rows_plane + ky * rows_w + kx) as u32;
    }
    let mut codes = [0i8; ROW];
    // A short last block's factors, padded with its first: its outputs are requantised as a
    // full block's (the padding lanes are dropped), so a layer's cost grows block by block
    // with its output channels, as latency tables assume.
    let full = out_channels / 4;
    let short = out_channels - 4 * full;
    let mut last_factors = [Requantize::ONE; 4];
    let mut last_bias = [0i32; 4];
    if short > 0 {
        last_factors = [requantize[4 * full]; 4];
        last_factors[..short].copy_from_slice(&requantize[4 * full..]);
        last_bias[..short].copy_from_slice(&folded_bias[4 * full..]);
    }
    // Hidden once for the layer (see the block loop below), not once a pixel.
    let (packed, full_blocks) = core::hint::black_box((packed, full));
    for oy in 0..w.output.height {
        let (rows, top): (&[i8], usize) = if scratch.is_empty() {
            (input, oy * sh * in_w)
        } else {
            copy_padded_rows(params, input_zero, oy, kh, input, scratch);
            (&*scratch, 0)
        };
        for ox in 0..out_w {
            let base = top + ox * sw;
            // The window's last cell is its largest offset.
            assert!(base + (offsets[receptive - 1] as usize) < rows.len());
            for (c, &at) in codes.iter_mut().zip(&offsets).take(receptive) {
                // SAFETY: `base + at <= base + offsets[receptive - 1] < rows.len()`
                // (asserted above; the offsets grow with `k`).
                *c = unsafe { *rows.get_unchecked(base + at as usize) };
            }
            let at = oy * out_w + ox;
            // The block count hidden from the optimiser: unrolled for a few blocks (a
            // latency table's small grid points) and looped for many (a model's layer), the
            // same layer would cost differently per block alone and in a model. The full
            // blocks run one loop, without bounds checks and without a test for the short
            // block, which runs after it: checked and tested, LLVM's loop took about 45
            // instructions a block and pixel against 25 where it unrolled the blocks of a
            // count that is a multiple of 4 (a 1x1 conv of 5 -> 13 channels took 2.3x one of
            // 5 -> 12).
            let mut blocks = packed.chunks_exact(4 * ROW);
            for (block, weights) in (&mut blocks).take(full_blocks).enumerate() {
                let first = 4 * block;
                // SAFETY: `block < full_blocks`, which is `full` (`black_box` returns its
                // argument), so `first + 4 <= 4 * full <= out_channels`, the length of
                // `folded_bias` and of `requantize` (asserted above).
                let (bias, factors) = unsafe {
                    (
                        &*folded_bias.as_ptr().add(first).cast::<[i32; 4]>(),
                        requantize.get_unchecked(first..first + 4),
                    )
                };
                let mut acc = *bias;
                dot4::<ROW>(&mut acc, &codes, weights);
                let outs = requantize4(&acc, factors, stage);
                for (lane, &o) in outs.iter().enumerate() {
                    // SAFETY: `first + lane < out_channels` (above) and `at < out_plane`, and
                    // `output` holds `out_channels * out_plane` codes (asserted above).
                    unsafe { *output.get_unchecked_mut((first + lane) * out_plane + at) = o };
                }
            }
            if short > 0
                && let Some(weights) = blocks.next()
            {
                let first = 4 * full;
                let mut acc = last_bias;
                dot4::<ROW>(&mut acc, &codes, weights);
                let outs = requantize4(&acc, &last_factors, stage);
                for (lane, &o) in outs.iter().enumerate().take(short) {
                    output[(first + lane) * out_plane + at] = o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::conv2d;
    use crate::{Activation, Conv2dParams, Shape3};
    use std::vec;
    use std::vec::Vec;

    use crate::int8::test_codes::Rng;

    fn check<const ROW: usize>(
        rng: &mut Rng,
        input: Shape3,
        out: usize,
        k: usize,
        s: usize,
        p: usize,
    ) {
        let params =
            Conv2dParams::new(input, out, [k, k], [s, s], [p, p], Activation::Relu).unwrap();
        assert_eq!(sdot_row_len(&params), ROW);
        let x = rng.codes(input.len());
        let weights = rng.weights(params.dense_weight_len());
        let bias = rng.biases(out);
        // Factors from 2^-20 to just under a half, log-uniform, and now and then one of 0.75
        // (the layer then takes the per-factor way).
        let mut rq: Vec<Requantize> = (0..out)
            .map(|_| {
                let e = (rng.next() % 19_000) as f64 / 1000.0 + 1.05;
                Requantize::from_real(0.5f64.powf(e)).unwrap()
            })
            .collect();
        if rng.next().is_multiple_of(3) {
            rq[0] = Requantize::from_real(0.75).unwrap();
        }
        let zero_point = (rng.next() % 200) as i32 - 100;
        let stage = OutputStage {
            zero_point,
            min: zero_point.max(-128) as i8,
            max: (zero_point + 90).min(127) as i8,
            factors_below_half: false,
            factors_short: false,
        };
        let zero = (rng.next() % 256) as i32 - 128;
        let mut want = vec![0i8; params.output().len()];
        conv2d(&params, zero, &weights, &bias, &rq, stage, &x, &mut want);
        let mut packed = vec![0i8; sdot_weights_len(&params)];
        pack_conv2d_sdot(&params, &weights, &mut packed);
        let mut folded = vec![0i32; out];
        fold_zero_point(zero, &weights, &bias, &mut folded);
        let mut got = vec![0i8; params.output().len()];
        let mut scratch = vec![0x55i8; sdot_scratch_len(&params)];
        conv2d_sdot::<ROW>(
            &params,
            zero,
            &packed,
            &folded,
            &rq,
            stage.with_factors(&rq),
            &x,
            &mut scratch,
            &mut got,
        );
        assert_eq!(got, want, "{input} -> {out}, k {k} s {s} p {p}");
    }

    /// Compiled only where `SDOT` is (tests/aarch64_under_qemu.rs runs it): the instruction
    /// by each element of the pixel's codes, against sums worked out by hand.
    #[cfg(all(target_arch = "aarch64", target_feature = "dotprod"))]
    #[test]
    fn the_sdot_instruction_runs_here() {
        let mut codes = [0i8; 16];
        codes[..8].copy_from_slice(&[1, -2, 3, -128, 5, 6, 7, 127]);
        let weights: Vec<i8> = (0..64).map(|i| (i as i8 - 32) * 3).collect();
        let mut acc = [10, 20, 30, 40];
        dot4::<16>(&mut acc, &codes, &weights);
        let mut want = [10, 20, 30, 40];
        for (step, x) in codes.chunks_exact(4).enumerate() {
            for (lane, a) in want.iter_mut().enumerate() {
                for b in 0..4 {
                    *a += weights[16 * step + 4 * lane + b] as i32 * x[b] as i32;
                }
            }
        }
        assert_eq!(acc, want);
    }

    #[test]
    fn the_sdot_kernel_equals_the_portable_one() {
        let mut rng = Rng(41);
        // Output channels of one block, several, and a short last block; receptive fields
        // below, at and above 16; every padding and stride; 1x1 too.
        check::<32>(&mut rng, Shape3::new(3, 7, 9), 5, 3, 1, 1);
        check::<32>(&mut rng, Shape3::new(3, 8, 8), 4, 3, 2, 1);
        check::<80>(&mut rng, Shape3::new(3, 6, 11), 3, 5, 1, 2);
        check::<48>(&mut rng, Shape3::new(48, 5, 5), 9, 1, 1, 0);
        check::<16>(&mut rng, Shape3::new(11, 4, 3), 2, 1, 1, 0);
        check::<16>(&mut rng, Shape3::new(1, 6, 6), 8, 3, 1, 1);
        check::<64>(&mut rng, Shape3::new(7, 9, 4), 6, 3, 2, 0);
    }
}
