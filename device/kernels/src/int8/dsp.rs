//! int8 dense convolution with the Cortex-M DSP extension (`SMLAD`: two 16-bit multiplies
//! and a 32-bit accumulate in one instruction), in the layout of CMSIS-NN's s8 kernels.
//!
//! Per output row, neighbouring output pixels are gathered ("im2col") in pairs as
//! `x - x_zero` in `i16` (padding as 0), and every pair of output channels is computed
//! against each pixel pair: per four input codes, one word of each channel's weights becomes
//! two `i16` pairs through `SXTB16` (bytes 0 and 2, then bytes 1 and 3), and eight `SMLAD`s
//! add sixteen products. Where a layer's rows allow ([`dsp_block_words`]), a block of pixel
//! pairs is gathered first and each channel pair's weights are widened once for all of them
//! (`arm/dot2x2_i16.s`, about 0.67 instructions per MAC inside); otherwise the widening
//! happens in the inner product (`arm/dot2x2.s`, about 0.94). The weights are re-laid out at
//! generation time ([`pack_conv2d_dsp`]): those byte pairs meet their neighbours in the
//! gathered codes, and the two channels of a pair alternate every four codes, so that one
//! `LDRD` loads both.
//!
//! On other targets the three instructions are computed in plain Rust with the same
//! results, so the kernel is tested on the host against the portable kernel and the integer
//! reference, and runs anywhere (slowly).

use super::simd32::{
    copy_codes, load_word, pack16, smlad, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8,
};
use super::{OutputStage, Requantize};
use crate::Conv2dParams;

/// Codes per output channel in the packed weights: the receptive field `in * kh * kw`
/// padded with zeros to a multiple of 4.
pub const fn dsp_row_len(params: &Conv2dParams) -> usize {
    let w = &params.window;
    (w.input.channels * w.kernel[0] * w.kernel[1]).div_ceil(4) * 4
}

/// The longest packed row [`conv2d_dsp`] takes: its two gathered columns and the row's input
/// offsets live on the stack (`6 * row` bytes, 3 KiB at most; with a block of pixel pairs,
/// [`dsp_block_words`], the block and the widened weights take at most
/// [`DSP_STACK_WORDS`]); wider layers use the portable kernel.
pub const MAX_DSP_ROW: usize = 512;

/// Bytes of [`pack_conv2d_dsp`]'s output: output channels rounded up to pairs, times
/// [`dsp_row_len`].
pub const fn dsp_weights_len(params: &Conv2dParams) -> usize {
    params.window.output.channels.div_ceil(2) * 2 * dsp_row_len(params)
}

/// Codes of scratch [`conv2d_dsp`] needs: for a padded layer, the input rows one pass of
/// output rows reads (`pass_input_rows`), with the padding written out, so that every
/// window lies inside them, and for a `word_gather` 4 codes of slack; 0 without padding.
pub const fn dsp_scratch_len(params: &Conv2dParams) -> usize {
    let rows = padded_input_rows(params, pass_input_rows(params));
    // A word gather's last single pixel loads up to 4 codes past its rows.
    if rows > 0 && word_gather(params) {
        rows + 4
    } else {
        rows
    }
}

/// Codes [`copy_padded_rows`] writes for one output row: its `kh` input rows with their
/// padding (`channels x kh x (w + 2 pw)`); 0 without padding, where no copy is made.
pub const fn padded_rows_len(params: &Conv2dParams) -> usize {
    padded_input_rows(params, params.window.kernel[0])
}

/// Codes of `rows` padded input rows per channel (`channels x rows x (w + 2 pw)`); 0 without
/// padding.
const fn padded_input_rows(params: &Conv2dParams, rows: usize) -> usize {
    let w = &params.window;
    if w.padding[0] == 0 && w.padding[1] == 0 {
        0
    } else {
        w.input.channels * rows * (w.input.width + 2 * w.padding[1])
    }
}

/// Output rows [`conv2d_dsp`] takes at once: two for a [`word_gather`] layer of odd width
/// (and more than one row), whose pixel pairs then run on across the end of a row; one
/// otherwise. A row of odd width alone pairs its last pixel with a neighbour whose sums are
/// dropped: a row of 7 wasted an eighth of its inner products.
pub const fn rows_per_pass(params: &Conv2dParams) -> usize {
    let out = &params.window.output;
    if word_gather(params) && !out.width.is_multiple_of(2) && out.height > 1 {
        2
    } else {
        1
    }
}

/// Input rows per channel that one pass of [`rows_per_pass`] output rows reads: `kh`, and
/// the vertical stride for each further row.
pub const fn pass_input_rows(params: &Conv2dParams) -> usize {
    let w = &params.window;
    w.kernel[0] + (rows_per_pass(params) - 1) * w.stride[0]
}

/// Whether [`conv2d_dsp`] gathers a layer's codes a kernel row per word load: a padded 3x3
/// convolution at horizontal stride 1. One word of a row holds both pixels' three codes
/// (`a0 a1 a2` and `a1 a2 a3`); `SXTAB16` turns it into `(a0, a2)` and `(a1, a3)` minus the
/// zero point, each pixel's outer taps, and the middle taps of two rows pair up by halves.
/// The receptive field is then in another order ([`pack_conv2d_dsp`] packs the weights to
/// match): per input channel `(r0 k0, r0 k2, r1 k0, r1 k2, r2 k0, r2 k2, r0 k1, r1 k1)`, and
/// after all channels each one's `r2 k1`.
pub const fn word_gather(params: &Conv2dParams) -> bool {
    let w = &params.window;
    w.kernel[0] == 3
        && w.kernel[1] == 3
        && w.stride[1] == 1
        && (w.padding[0] != 0 || w.padding[1] != 0)
}

/// Where code `k` of the receptive field (`[ic][ky][kx]`) lies in a row of a layer that
/// [`word_gather`]s: see there.
const fn word_gather_position(channels: usize, k: usize) -> usize {
    let (ic, r, kx) = (k / 9, (k % 9) / 3, k % 3);
    match (r, kx) {
        (2, 1) => 8 * channels + ic,
        (_, 1) => 8 * ic + 6 + r,
        _ => 8 * ic + 2 * r + kx / 2,
    }
}

/// int8 codes on a 4-byte boundary, as [`conv2d_dsp`] needs its packed weights: the inner
/// product reads them a word pair at a time (`LDRD`), and Cortex-M faults on an unaligned
/// `LDRD`. A plain `[i8; N]` static may lie at any byte. Dereferences to the codes.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordAligned<const N: usize>(pub [i8; N]);

impl<const N: usize> core::ops::Deref for WordAligned<N> {
    type Target = [i8];

    fn deref(&self) -> &[i8] {
        &self.0
    }
}

/// Packs OIHW weights for [`conv2d_dsp`]. Output channels go in pairs (an odd last one with
/// a zero channel); per pair and per four codes of the receptive field (padded with zeros to
/// [`dsp_row_len`]), the first channel's four codes then the second's, each group
/// `[w0, w1, w2, w3]` stored as `[w0, w2, w1, w3]`.
///
/// # Shapes
/// - `oihw`: `[out, in, kh, kw]`; `packed`: [`dsp_weights_len`]`(params)` codes
pub fn pack_conv2d_dsp(params: &Conv2dParams, oihw: &[i8], packed: &mut [i8]) {
    let w = &params.window;
    let k = w.input.channels * w.kernel[0] * w.kernel[1];
    let row = dsp_row_len(params);
    assert_eq!(oihw.len(), w.output.channels * k, "pack_conv2d_dsp weights");
    assert_eq!(
        packed.len(),
        dsp_weights_len(params),
        "pack_conv2d_dsp packed"
    );
    packed.fill(0);
    let words = word_gather(params);
    for oc in 0..w.output.channels {
        let (pair, second) = (oc / 2, oc % 2);
        for i in 0..k {
            let q = if words {
                word_gather_position(w.input.channels, i)
            } else {
                i
            };
            let at = pair * 2 * row + (q / 4) * 8 + second * 4 + packed_position(q) % 4;
            packed[at] = oihw[oc * k + i];
        }
    }
}

/// Where code `i` of a row goes in the packed layout.
const fn packed_position(i: usize) -> usize {
    (i & !3) | [0, 2, 1, 3][i & 3]
}

/// Two output pixels' gathered receptive fields, `x - x_zero` as `i16`, interleaved every
/// four codes (pixel 0's four, then pixel 1's) and word aligned, as `dnal_s8_dot2x2` reads
/// them with one `LDM` per step: `2 * ROW` codes in `ROW` words.
#[repr(transparent)]
struct Columns<const ROW: usize>([u32; ROW]);

/// The gathered codes held in `words`, two per word (bottom half first).
#[inline(always)]
fn codes_of(words: &mut [u32]) -> &mut [i16] {
    // SAFETY: `words` is `4 * len` initialised bytes, aligned for `i16`; the slice borrows
    // `words` mutably, so nothing else reads or writes them meanwhile.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<i16>(), 2 * words.len()) }
}

/// The most words a block of gathered codes and the widened weights of a channel pair (a
/// row) take on the stack together: 6 KiB of the 8 KiB the boards keep for it (see
/// [`dsp_block_words`]). Measured on the pruned vgg-small (Cortex-M7), blocks of at most
/// 4 KiB beside at most 1.3 KiB of weights took its layers of 272 and 300 codes 2-3 pairs a
/// block, and widening the weights for each block cost 13% of the network's instructions.
pub const DSP_STACK_WORDS: usize = 1536;

/// The fewest pixel pairs a block takes: widening a channel pair's weights costs about 6.5
/// instructions per step (`dnal_s8_widen_pair`), and saves about 4 per step and pixel pair.
/// Measured on the pruned vgg-small (Cortex-M7): blocks of 2 and 3 pairs took its two
/// largest layers 3-5% lower than pair by pair.
const MIN_BLOCK_PAIRS: usize = 2;

/// The shortest row of a pointwise layer that goes in blocks. Measured on a pruned
/// MobileNetV2 (Cortex-M7): rows of 16-48 codes took 5-38% more instructions in blocks
/// (per pixel pair and channel pair, the call and four requantisations outweigh a short
/// inner product, and around the call LLVM keeps the factors on the stack), rows of 56-120
/// mostly 8-15% fewer.
const MIN_POINTWISE_BLOCK_ROW: usize = 56;

/// Words of gathered codes [`conv2d_dsp`] keeps for a layer (its `BLOCK`), or 0 where it
/// goes pair by pair. A pass of output rows (`rows_per_pass`; a pointwise layer's whole
/// plane) runs in blocks of
/// pixel pairs: each channel pair's weights are widened to `i16` once per block
/// (`widen_pair`) instead of in the inner product for every pair (`ConvRow::outputs_block`),
/// 0.67 instructions per MAC inside it on Cortex-M4/M7 against 0.94. The row is split into
/// equal blocks, each with the widened weights within [`DSP_STACK_WORDS`]; blocks of fewer
/// than `MIN_BLOCK_PAIRS`
/// would not pay for the widening, nor rows of one step (`INLINE_ROW`) or short pointwise
/// rows (`MIN_POINTWISE_BLOCK_ROW`).
#[inline(always)]
pub const fn dsp_block_words(params: &Conv2dParams) -> usize {
    let row = dsp_row_len(params);
    let w = &params.window;
    let pointwise = params.is_pointwise();
    if row <= INLINE_ROW || (pointwise && row < MIN_POINTWISE_BLOCK_ROW) {
        return 0;
    }
    let pixels = if pointwise {
        w.output.height * w.output.width
    } else {
        rows_per_pass(params) * w.output.width
    };
    let pairs = pixels.div_ceil(2);
    let fit = DSP_STACK_WORDS.saturating_sub(words_beside_block(params)) / row;
    if fit < MIN_BLOCK_PAIRS {
        return 0;
    }
    let blocks = pairs.div_ceil(fit);
    if pairs / blocks < MIN_BLOCK_PAIRS {
        return 0;
    }
    pairs.div_ceil(blocks) * row
}

/// Words [`conv2d_dsp`] keeps on the stack beside a block of pixel pairs: a channel pair's
/// widened weights (a row), and for a layer gathered through its table of input offsets
/// (neither pointwise nor a [`word_gather`]; `u16` per code) half a row more.
pub const fn words_beside_block(params: &Conv2dParams) -> usize {
    let row = dsp_row_len(params);
    if params.is_pointwise() || word_gather(params) {
        row
    } else {
        row + row.div_ceil(2)
    }
}

/// Rows of at most this many codes take the inner product inline ([`dot2x2`]) instead of
/// calling `arm/dot2x2.s`: a row of one step (a pointwise layer reading at most four
/// channels) spends more on the call (saving and restoring eight registers) than on its
/// step. Longer rows are cheaper through the call: inline, LLVM spills (measured on
/// MobileNetV2's pointwise layers, Cortex-M7: 11% fewer instructions at one step, 4-38% more
/// at 3-5 steps).
#[cfg_attr(not(all(target_arch = "arm", target_abi = "eabihf")), allow(dead_code))]
const INLINE_ROW: usize = 4;

/// Pointwise layers whose rows are at most this many codes (12 input channels) take a run
/// of pixels per output channel ([`ConvRow::pointwise_runs`]): their few products per output
/// weigh less than loading each channel's weights and factor again for every pixel pair.
/// Measured on MobileNetV2's pruned layers (Cortex-M7): 2 input channels -28%, 11 -11 to
/// -15%; at 17-24 the channel's weights no longer fit the registers, +14 to +29%.
const CHANNEL_RUN_ROW: usize = 12;

/// Pixels [`ConvRow::pointwise_runs`] gathers at once (even: pairs).
const PIXEL_RUN: usize = 32;

/// `acc[c * 2 + p] += sum_k w[c][k] * x[p][k]` over one packed channel pair `weights`
/// (`2 * ROW` codes) and the gathered codes (`2 * ROW`, as the words of a [`Columns`]).
#[inline(always)]
fn dot2x2<const ROW: usize>(acc: &mut [i32; 4], cols: &Columns<ROW>, weights: &[i8]) {
    assert!(weights.len() == 2 * ROW && ROW.is_multiple_of(4) && ROW > 0);
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if ROW > INLINE_ROW {
        // SAFETY: `acc` holds 4 values; the codes are `ROW` words (`8 * steps` `i16`) and
        // `weights` `2 * ROW` codes (checked above), the codes word aligned (a `Columns`);
        // the routine reads exactly those, writes only `acc`, and follows the AAPCS.
        unsafe {
            super::arm::dnal_s8_dot2x2(
                acc.as_mut_ptr(),
                cols.0.as_ptr().cast::<i16>(),
                weights.as_ptr(),
                ROW / 4,
            );
        }
        return;
    }
    let word = |b: &[i8]| u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8]);
    // Per step of four codes: pixel 0's two pairs, pixel 1's two; each channel's four
    // weights, their pairs through `SXTB16`.
    for (x, w) in cols.0.chunks_exact(4).zip(weights.chunks_exact(8)) {
        for (c, wc) in [word(&w[0..4]), word(&w[4..8])].into_iter().enumerate() {
            let (lo, hi) = (sxtb16(wc), sxtb16_ror8(wc));
            acc[c * 2] = smlad(hi, x[1], smlad(lo, x[0], acc[c * 2]));
            acc[c * 2 + 1] = smlad(hi, x[3], smlad(lo, x[2], acc[c * 2 + 1]));
        }
    }
}

/// One packed channel pair's weights (`2 * ROW` codes, [`pack_conv2d_dsp`]) as `i16` pairs:
/// per step of four codes the first channel's two pairs, then the second's; what `SXTB16`
/// makes of them in [`dot2x2`], done once for a block of pixel pairs.
#[inline(always)]
fn widen_pair<const ROW: usize>(weights: &[i8], wide: &mut [u32; ROW]) {
    assert!(weights.len() == 2 * ROW && ROW.is_multiple_of(4) && ROW > 0);
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    // SAFETY: `weights` is `2 * ROW` codes, word aligned (a channel pair's part of the packed
    // weights, which `conv2d_dsp` checks are, at a multiple of 8 codes); `wide` is `ROW`
    // words; the routine reads and writes exactly those (`ROW / 4` steps), and follows the
    // AAPCS.
    unsafe {
        super::arm::dnal_s8_widen_pair(wide.as_mut_ptr(), weights.as_ptr(), ROW / 4);
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    for (w, q) in wide.chunks_exact_mut(4).zip(weights.chunks_exact(8)) {
        let (a, b) = (load_word(q, 0), load_word(q, 4));
        w.copy_from_slice(&[sxtb16(a), sxtb16_ror8(a), sxtb16(b), sxtb16_ror8(b)]);
    }
}

/// As [`dot2x2`], with the channel pair's weights widened ([`widen_pair`]): `codes` is one
/// pixel pair's gathered words and `wide` as many, both a multiple of 4, word aligned.
#[inline(always)]
pub(super) fn dot2x2_i16(acc: &mut [i32; 4], codes: &[u32], wide: &[u32]) {
    assert!(codes.len() == wide.len() && codes.len().is_multiple_of(4) && !codes.is_empty());
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    // SAFETY: `acc` holds 4 values; `codes` and `wide` are `4 * steps` words each (checked
    // above), word aligned as `u32` slices; the routine reads exactly those, writes only
    // `acc`, and follows the AAPCS.
    unsafe {
        super::arm::dnal_s8_dot2x2_i16(
            acc.as_mut_ptr(),
            codes.as_ptr().cast::<i16>(),
            wide.as_ptr(),
            codes.len() / 4,
        );
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    for (x, w) in codes.chunks_exact(4).zip(wide.chunks_exact(4)) {
        acc[0] = smlad(w[1], x[1], smlad(w[0], x[0], acc[0]));
        acc[1] = smlad(w[1], x[3], smlad(w[0], x[2], acc[1]));
        acc[2] = smlad(w[3], x[1], smlad(w[2], x[0], acc[2]));
        acc[3] = smlad(w[3], x[3], smlad(w[2], x[2], acc[3]));
    }
}

/// A dense convolution (`groups == 1`) with packed weights; the results equal
/// [`super::conv2d`]'s bit for bit. `ROW` is [`dsp_row_len`]`(params)`, at most
/// [`MAX_DSP_ROW`].
///
/// A padded layer copies, per output row, the `kh` input rows it reads into `scratch` with
/// the padding written out as the input's zero point (real 0, so it adds nothing), and
/// convolves that block without padding: every window lies inside, and the gather never
/// tests a border.
///
/// # Shapes
/// - `input`: `params.input()`, CHW
/// - `packed`: [`dsp_weights_len`]`(params)` codes ([`pack_conv2d_dsp`]), word aligned
///   (a [`WordAligned`] static)
/// - `bias`, `requantize`: `[out_channels]`
/// - `scratch`: [`dsp_scratch_len`]`(params)` codes
/// - `output`: `params.output()`, CHW
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn conv2d_dsp<const ROW: usize, const BLOCK: usize>(
    params: &Conv2dParams,
    input_zero: i32,
    packed: &[i8],
    bias: &[i32],
    requantize: &[Requantize],
    stage: OutputStage,
    input: &[i8],
    scratch: &mut [i8],
    output: &mut [i8],
) {
    let w = &params.window;
    let out_channels = w.output.channels;
    assert_eq!(ROW, dsp_row_len(params), "conv2d_dsp row length");
    assert!(ROW <= MAX_DSP_ROW, "conv2d_dsp row longer than MAX_DSP_ROW");
    assert_eq!(BLOCK, dsp_block_words(params), "conv2d_dsp block length");
    assert_eq!(input.len(), w.input.len(), "int8 conv input length");
    assert_eq!(output.len(), w.output.len(), "int8 conv output length");
    assert_eq!(
        scratch.len(),
        dsp_scratch_len(params),
        "conv2d_dsp scratch length"
    );
    assert_eq!(packed.len(), dsp_weights_len(params), "conv2d_dsp weights");
    assert!(
        packed.as_ptr().cast::<u32>().is_aligned(),
        "conv2d_dsp weights not word aligned (keep them in a WordAligned)"
    );
    assert_eq!(bias.len(), out_channels, "int8 conv bias length");
    assert_eq!(
        requantize.len(),
        out_channels,
        "int8 conv requantize length"
    );
    let layer = ConvRow {
        input_zero,
        packed,
        bias,
        requantize,
        stage,
        out_plane: w.output.plane(),
    };
    // Zeroed once per layer: per output row, clearing it cost more than small layers save.
    let mut pairs = [0u32; BLOCK];
    let pairs = &mut pairs[..];
    if params.is_pointwise() {
        layer.pointwise::<ROW, BLOCK>(params, input, pairs, output);
        return;
    }
    if scratch.is_empty() {
        let offsets = Offsets::<ROW>::new(params);
        for oy in 0..w.output.height {
            layer.row::<ROW, BLOCK>(
                params,
                &offsets,
                oy,
                input,
                pairs,
                oy * w.output.width,
                output,
            );
        }
        return;
    }
    let kh = w.kernel[0];
    let wide = w.input.width + 2 * w.padding[1];
    if word_gather(params) {
        // A constant per layer: only one of the two is compiled into it.
        if rows_per_pass(params) == 2 {
            layer.word_passes::<ROW, BLOCK, 2>(params, input, scratch, pairs, output);
        } else {
            layer.word_passes::<ROW, BLOCK, 1>(params, input, scratch, pairs, output);
        }
        return;
    }
    // The block of rows one output row reads, as a layer of its own: no padding, one row.
    let block = match Conv2dParams::new(
        crate::Shape3::new(w.input.channels, kh, wide),
        out_channels,
        w.kernel,
        [1, w.stride[1]],
        [0, 0],
        params.activation,
    ) {
        Ok(p) => p,
        Err(_) => unreachable!("kh padded rows hold one row of windows"),
    };
    let offsets = Offsets::<ROW>::new(&block);
    for oy in 0..w.output.height {
        copy_padded_rows(params, input_zero, oy, kh, input, scratch);
        layer.row::<ROW, BLOCK>(
            &block,
            &offsets,
            0,
            scratch,
            pairs,
            oy * w.output.width,
            output,
        );
    }
}

/// Copies `rows` input rows per channel from the first that output row `oy` of a padded
/// layer reads (`kh` for that row alone) into `scratch`, each channel's rows in turn, with
/// the padding written out as the input's zero point (the code of real 0, so it adds
/// nothing): every window then lies inside, and no gather tests a border. Rows past the
/// input are padding. `scratch` holds `channels * rows * (width + 2 * pw)` codes (and any
/// slack after).
#[inline(always)]
pub(super) fn copy_padded_rows(
    params: &Conv2dParams,
    input_zero: i32,
    oy: usize,
    rows: usize,
    input: &[i8],
    scratch: &mut [i8],
) {
    let w = &params.window;
    let [ph, pw] = w.padding;
    let (in_h, in_w) = (w.input.height, w.input.width);
    let wide = in_w + 2 * pw;
    // `input_zero` is a code (-128..=127, the export's reader checks it).
    let pad = input_zero as i8;
    for ic in 0..w.input.channels {
        for ky in 0..rows {
            let dst = &mut scratch[(ic * rows + ky) * wide..][..wide];
            let iy = (oy * w.stride[0] + ky).wrapping_sub(ph);
            if iy < in_h {
                dst[..pw].fill(pad);
                copy_codes(
                    &mut dst[pw..pw + in_w],
                    &input[(ic * in_h + iy) * in_w..][..in_w],
                );
                dst[pw + in_w..].fill(pad);
            } else {
                dst.fill(pad);
            }
        }
    }
}

/// Where a row's pixel pairs come from: `gather(i, words)` gathers pixels `i` and `i + 1`
/// into `words` (`ROW` of them, as a [`Columns`] holds them), or an odd last pixel with any
/// second one, whose sums are dropped. Types, not closures, so that each gather is inlined
/// wherever a block runs: a closure shared by several layers of one firmware (the latency
/// benchmarks build many of one row length) was compiled once and called per pair, and the
/// benchmarks cost up to twice the same layer in a model.
trait PixelPairs {
    fn gather(&self, i: usize, words: &mut [u32]);
}

/// Output row `oy`'s pixels through the offset table, or [`gather`] at the borders.
struct RowPairs<'a, const ROW: usize> {
    params: &'a Conv2dParams,
    offsets: &'a Offsets<ROW>,
    input: &'a [i8],
    zero: i32,
    oy: usize,
}

impl<const ROW: usize> PixelPairs for RowPairs<'_, ROW> {
    #[inline(always)]
    fn gather(&self, ox: usize, words: &mut [u32]) {
        let out_w = self.params.window.output.width;
        let second = if ox + 1 < out_w { ox + 1 } else { ox };
        let codes = codes_of(words);
        let (params, input, zero, oy) = (self.params, self.input, self.zero, self.oy);
        if !self
            .offsets
            .gather_inside(params, input, zero, oy, [ox, second], codes)
        {
            gather(params, input, zero, oy, ox, 0, codes);
            gather(params, input, zero, oy, second, 1, codes);
        }
    }
}

/// A pass of a [`word_gather`] layer's output rows ([`rows_per_pass`]) from its padded
/// input rows ([`WordPairs::gather_words`]): pixel `i` is pixel `i % out_w` of the pass's row
/// `i / out_w`, and a pair may run across the end of a row.
struct WordPairs<'a, const PASS: usize> {
    /// The pass's padded input rows ([`copy_padded_rows`]).
    rows: &'a [i8],
    channels: usize,
    /// Codes from one input channel's rows to the next's.
    channel_step: usize,
    /// Codes per padded input row.
    wide: usize,
    /// Codes from one output row's first input row to the next's.
    row_step: usize,
    out_w: usize,
    /// Output pixels in the pass.
    pixels: usize,
    zero: i32,
}

impl<const PASS: usize> PixelPairs for WordPairs<'_, PASS> {
    #[inline(always)]
    fn gather(&self, i: usize, words: &mut [u32]) {
        if PASS == 1 {
            // One row of pairs; an odd last pixel takes the codes after it as its neighbour.
            self.gather_words::<true>([i, i + 1], words);
            return;
        }
        let (row, x) = (i / self.out_w, i % self.out_w);
        let at = row * self.row_step + x;
        // A pass's odd last pixel takes the codes after it as its neighbour (sums dropped).
        if x + 1 < self.out_w || i + 1 >= self.pixels {
            self.gather_words::<true>([at, at + 1], words);
        } else {
            self.gather_across([at, (row + 1) * self.row_step], words);
        }
    }
}

/// A pointwise layer's plane as one row ([`gather_pointwise`]; a last single pixel through
/// [`gather`], twice).
struct PointwisePairs<'a> {
    params: &'a Conv2dParams,
    input: &'a [i8],
    zero: i32,
}

impl PixelPairs for PointwisePairs<'_> {
    #[inline(always)]
    fn gather(&self, p: usize, words: &mut [u32]) {
        let w = &self.params.window;
        let plane = w.input.plane();
        if p + 1 < plane {
            gather_pointwise(self.input, w.input.channels, plane, self.zero, p, words);
        } else {
            let (y, x) = (p / w.input.width, p % w.input.width);
            let codes = codes_of(words);
            gather(self.params, self.input, self.zero, y, x, 0, codes);
            gather(self.params, self.input, self.zero, y, x, 1, codes);
        }
    }
}

/// What the output rows of one [`conv2d_dsp`] call share besides their geometry.
struct ConvRow<'a> {
    input_zero: i32,
    packed: &'a [i8],
    bias: &'a [i32],
    requantize: &'a [Requantize],
    stage: OutputStage,
    /// Output values per channel.
    out_plane: usize,
}

impl ConvRow<'_> {
    /// Output channel `oc`'s code for accumulator `acc`. Always inlined: an outlined helper
    /// (as a closure once was) is shared by every layer, so it cannot know a layer's stage
    /// and costs a call per output.
    #[inline(always)]
    fn out_of(&self, acc: i32, oc: usize) -> i8 {
        self.stage.requantize(&self.requantize[oc], acc)
    }

    /// Output row `oy` of `params` (whose input is `input`) into `output` at `at_row` (the
    /// row's first pixel in every output channel's plane).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn row<const ROW: usize, const BLOCK: usize>(
        &self,
        params: &Conv2dParams,
        offsets: &Offsets<ROW>,
        oy: usize,
        input: &[i8],
        pairs: &mut [u32],
        at_row: usize,
        output: &mut [i8],
    ) {
        let out_w = params.window.output.width;
        let row = RowPairs {
            params,
            offsets,
            input,
            zero: self.input_zero,
            oy,
        };
        if BLOCK > 0 {
            self.blocks::<ROW>(out_w, at_row, &row, pairs, output);
        } else {
            self.pair_by_pair::<ROW>(out_w, at_row, &row, output);
        }
    }

    /// A layer that [`word_gather`]s, `PASS` output rows at a time ([`rows_per_pass`]; an
    /// odd last row alone): each pass's input rows are copied with their padding into
    /// `scratch`, then gathered in pairs of pixels that may run across a row's end.
    #[inline(always)]
    fn word_passes<const ROW: usize, const BLOCK: usize, const PASS: usize>(
        &self,
        params: &Conv2dParams,
        input: &[i8],
        scratch: &mut [i8],
        pairs: &mut [u32],
        output: &mut [i8],
    ) {
        let w = &params.window;
        let (height, out_w) = (w.output.height, w.output.width);
        let wide = w.input.width + 2 * w.padding[1];
        let rows = pass_input_rows(params);
        // An odd last row is a pass of its own, through the same code (a second copy of
        // the pass for it took 3.5 KB of flash for 0.4% fewer instructions on vgg-small).
        for oy in (0..height).step_by(PASS) {
            copy_padded_rows(params, self.input_zero, oy, rows, input, scratch);
            let pass = WordPairs::<'_, PASS> {
                rows: scratch,
                channels: w.input.channels,
                channel_step: rows * wide,
                wide,
                row_step: w.stride[0] * wide,
                out_w,
                pixels: PASS.min(height - oy) * out_w,
                zero: self.input_zero,
            };
            let at = oy * out_w;
            if BLOCK > 0 {
                self.blocks::<ROW>(pass.pixels, at, &pass, pairs, output);
            } else {
                self.pair_by_pair::<ROW>(pass.pixels, at, &pass, output);
            }
        }
    }

    /// A pointwise layer (1x1, stride 1, no padding): its output pixels are its input
    /// pixels, so the plane is one long row, taken two pixels at a time; pixel `p`'s codes
    /// are the `p`-th code of every input plane, gathered two planes and two pixels at a
    /// time ([`gather_pointwise`]).
    #[inline(always)]
    fn pointwise<const ROW: usize, const BLOCK: usize>(
        &self,
        params: &Conv2dParams,
        input: &[i8],
        pairs: &mut [u32],
        output: &mut [i8],
    ) {
        if ROW <= CHANNEL_RUN_ROW {
            self.pointwise_runs::<ROW>(params, input, output);
            return;
        }
        let plane = params.window.input.plane();
        let plane_pairs = PointwisePairs {
            params,
            input,
            zero: self.input_zero,
        };
        if BLOCK > 0 {
            self.blocks::<ROW>(plane, 0, &plane_pairs, pairs, output);
        } else {
            self.pair_by_pair::<ROW>(plane, 0, &plane_pairs, output);
        }
    }

    /// A pointwise layer of short rows ([`CHANNEL_RUN_ROW`]): [`PIXEL_RUN`] pixels are
    /// gathered at once, then each output channel takes the whole run, its weights and its
    /// factor held in registers. Pixel pair by pixel pair over every channel, as longer rows
    /// go, the factor and weights of each channel were loaded again for every pair, and
    /// MobileNetV2's expansions from 2 channels took 27 instructions per output, against
    /// 11.5 in f32. On Cortex-M4/M7, rows of one or two steps take the run's sums in
    /// assembly (`arm/pw_sums.s`; LLVM kept the weights and the bias on the stack), then
    /// requantise it as one run: MobileNetV2's expansions from 5 channels -18% on M7.
    #[inline(always)]
    fn pointwise_runs<const ROW: usize>(
        &self,
        params: &Conv2dParams,
        input: &[i8],
        output: &mut [i8],
    ) {
        let plane = params.window.input.plane();
        let plane_pairs = PointwisePairs {
            params,
            input,
            zero: self.input_zero,
        };
        let out_channels = self.bias.len();
        let mut cols: [Columns<ROW>; PIXEL_RUN / 2] =
            core::array::from_fn(|_| Columns([0u32; ROW]));
        for start in (0..plane).step_by(PIXEL_RUN) {
            let n = PIXEL_RUN.min(plane - start);
            let pairs = n.div_ceil(2);
            for (pair, col) in cols[..pairs].iter_mut().enumerate() {
                plane_pairs.gather(start + 2 * pair, &mut col.0);
            }
            for oc in 0..out_channels {
                let (pair, second) = (oc / 2, oc % 2);
                let packed = &self.packed[pair * 2 * ROW..][..2 * ROW];
                // The channel's pairs of weights, per step of four codes (`SXTB16` of its
                // word in each of the pair's steps).
                let weights: [(u32, u32); ROW] = core::array::from_fn(|q| {
                    if q < ROW / 4 {
                        let word = load_word(packed, 8 * q + 4 * second);
                        (sxtb16(word), sxtb16_ror8(word))
                    } else {
                        (0, 0)
                    }
                });
                let factor = self.requantize[oc];
                let bias = self.bias[oc];
                let out = &mut output[oc * self.out_plane + start..][..n];
                // Rows of one or two steps: the run's sums in assembly, then requantised as
                // one run.
                #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
                if ROW == 4 || ROW == 8 {
                    let wide = [weights[0].0, weights[0].1, weights[1].0, weights[1].1];
                    let mut sums = [0i32; PIXEL_RUN];
                    let codes = cols.as_ptr().cast::<u32>();
                    // SAFETY: `sums` holds `PIXEL_RUN >= 2 * pairs` sums; `cols` holds
                    // `pairs <= PIXEL_RUN / 2` gathered pairs of `ROW` words each, contiguous
                    // (`Columns` is a transparent `[u32; ROW]`), `ROW / 4` steps of 4 words
                    // per pair, which the routine reads; `wide` holds the 2 words per step
                    // it reads (4, with `ROW >= 4` and `weights` at least 4 entries long);
                    // all are word aligned; it writes `2 * pairs` sums and follows the AAPCS.
                    unsafe {
                        let f = if ROW == 4 {
                            super::arm::dnal_s8_pw_sums_1
                        } else {
                            super::arm::dnal_s8_pw_sums_2
                        };
                        f(sums.as_mut_ptr(), codes, pairs, bias, wide.as_ptr());
                    }
                    self.stage.requantize_run(&factor, &sums[..n], out);
                    continue;
                }
                for (two, col) in out.chunks_mut(2).zip(&cols[..pairs]) {
                    let (mut a0, mut a1) = (bias, bias);
                    for (q, (lo, hi)) in weights.iter().take(ROW / 4).enumerate() {
                        let x = &col.0[4 * q..4 * q + 4];
                        a0 = smlad(*hi, x[1], smlad(*lo, x[0], a0));
                        a1 = smlad(*hi, x[3], smlad(*lo, x[2], a1));
                    }
                    two[0] = self.stage.requantize(&factor, a0);
                    if let Some(o) = two.get_mut(1) {
                        *o = self.stage.requantize(&factor, a1);
                    }
                }
            }
        }
    }

    /// Every output channel at `pixels` output pixels, the `i`-th at `at + i` in each
    /// channel's plane, a pixel pair at a time gathered by `row` (the inner product widening
    /// the weights, [`dot2x2`]). A loop of its own, not a block size of one pair: routed
    /// through [`ConvRow::blocks`], LLVM compiled MobileNetV2's pointwise layers 25-65%
    /// dearer.
    #[inline(always)]
    fn pair_by_pair<const ROW: usize>(
        &self,
        pixels: usize,
        at: usize,
        row: &impl PixelPairs,
        output: &mut [i8],
    ) {
        let mut cols = Columns([0u32; ROW]);
        for i in (0..pixels).step_by(2) {
            row.gather(i, &mut cols.0);
            self.outputs(&mut cols, at + i, i + 1 < pixels, output);
        }
    }

    /// Every output channel at `pixels` output pixels, the `i`-th at `at + i` in each
    /// channel's plane, in equal blocks of at least [`MIN_BLOCK_PAIRS`] pixel pairs held in
    /// `block` ([`dsp_block_words`], a multiple of `ROW`), gathered by `row`.
    #[inline(always)]
    fn blocks<const ROW: usize>(
        &self,
        pixels: usize,
        at: usize,
        row: &impl PixelPairs,
        block: &mut [u32],
        output: &mut [i8],
    ) {
        let pairs = pixels.div_ceil(2);
        let blocks = pairs.div_ceil(block.len() / ROW);
        for b in 0..blocks {
            let (first, end) = (b * pairs / blocks, (b + 1) * pairs / blocks);
            let words = block.chunks_exact_mut(ROW).take(end - first);
            for (pair, words) in words.enumerate() {
                row.gather(2 * (first + pair), words);
            }
            let n = (2 * end).min(pixels) - 2 * first;
            self.outputs_block::<ROW>(block, n, at + 2 * first, output);
        }
    }

    /// Every output channel at the `pixels` pixels from `at`, gathered in `block` (pair `p`
    /// in words `p * ROW..`): each channel pair's weights are widened once
    /// ([`widen_pair`]) and run against every pair, 0.67 instructions per MAC in the inner
    /// product on Cortex-M4/M7 against 0.94 with the widening inside it ([`dot2x2`]).
    #[inline(always)]
    fn outputs_block<const ROW: usize>(
        &self,
        block: &[u32],
        pixels: usize,
        at: usize,
        output: &mut [i8],
    ) {
        let out_channels = self.bias.len();
        let plane = self.out_plane;
        let mut wide = [0u32; ROW];
        for (pair, weights) in self.packed.chunks_exact(2 * ROW).enumerate() {
            widen_pair(weights, &mut wide);
            let (a, b) = (2 * pair, 2 * pair + 1);
            let second = b < out_channels;
            let (bias_a, bias_b) = (self.bias[a], if second { self.bias[b] } else { 0 });
            // By value: a byte store may alias anything, so through a reference the factors
            // would be loaded again for every output.
            let factor_a = self.requantize[a];
            let factor_b = if second { self.requantize[b] } else { factor_a };
            let pairs = block.chunks_exact(ROW).take(pixels.div_ceil(2));
            for (p, codes) in pairs.enumerate() {
                let mut acc = [bias_a, bias_a, bias_b, bias_b];
                dot2x2_i16(&mut acc, codes, &wide);
                let (px, two) = (at + 2 * p, 2 * p + 1 < pixels);
                output[a * plane + px] = self.stage.requantize(&factor_a, acc[0]);
                if two {
                    output[a * plane + px + 1] = self.stage.requantize(&factor_a, acc[1]);
                }
                if second {
                    output[b * plane + px] = self.stage.requantize(&factor_b, acc[2]);
                    if two {
                        output[b * plane + px + 1] = self.stage.requantize(&factor_b, acc[3]);
                    }
                }
            }
        }
    }

    /// Every output channel at the pixel pair `at` (and `at + 1` if `two`) from the gathered
    /// `cols`.
    #[inline(always)]
    fn outputs<const ROW: usize>(
        &self,
        cols: &mut Columns<ROW>,
        at: usize,
        two: bool,
        output: &mut [i8],
    ) {
        let out_channels = self.bias.len();
        let plane = self.out_plane;
        for (pair, weights) in self.packed.chunks_exact(2 * ROW).enumerate() {
            let (a, b) = (2 * pair, 2 * pair + 1);
            let bb = if b < out_channels { self.bias[b] } else { 0 };
            let mut acc = [self.bias[a], self.bias[a], bb, bb];
            dot2x2(&mut acc, cols, weights);
            output[a * plane + at] = self.out_of(acc[0], a);
            if two {
                output[a * plane + at + 1] = self.out_of(acc[1], a);
            }
            if b < out_channels {
                output[b * plane + at] = self.out_of(acc[2], b);
                if two {
                    output[b * plane + at + 1] = self.out_of(acc[3], b);
                }
            }
        }
    }
}

impl<const PASS: usize> WordPairs<'_, PASS> {
    /// [`WordPairs::gather_words`] of a pair across a row's end: once a pass, so kept out of
    /// line (inlined, LLVM unrolled it over a layer's channels: 9 KB of flash for one layer).
    #[cold]
    #[inline(never)]
    fn gather_across(&self, at: [usize; 2], words: &mut [u32]) {
        self.gather_words::<false>(at, words);
    }

    /// Gathers the pixels whose windows start at codes `at[0]` and `at[1]` of the first
    /// channel's padded rows (loads may reach 3 codes past a window) as pixels 0 and 1 of
    /// `cols`, `x - x_zero` in [`word_gather`]'s order. `ADJACENT`: `at[1] = at[0] + 1`, and one
    /// word per row holds both windows: per channel three word loads, six `SXTAB16` and two
    /// half-word packs for its 16 codes, the channels' last codes joined four channels to a
    /// step; about 1.2 instructions per code against 4.5. Otherwise (a pair across the end of
    /// an output row) each pixel's words are loaded and widened alike.
    #[inline(always)]
    fn gather_words<const ADJACENT: bool>(&self, at: [usize; 2], cols: &mut [u32]) {
        let (rows, channels, channel_step, wide) =
            (self.rows, self.channels, self.channel_step, self.wide);
        assert!(cols.len() >= 8 * channels + 4 * channels.div_ceil(4));
        let minus_zero = pack16(-self.zero, -self.zero);
        // One channel's 16 codes; returns row 2's middle tap, pixel 0's and pixel 1's.
        let channel = |ic: usize, cols: &mut [u32]| {
            let words = |at: usize| {
                let at = ic * channel_step + at;
                [at, at + wide, at + 2 * wide].map(|i| load_word(rows, i))
            };
            let a = words(at[0]);
            // Pixel 0's outer taps of each row (bytes 0 and 2), its middle taps (byte 1).
            let even = a.map(|x| sxtab16(minus_zero, x));
            let odd = a.map(|x| sxtab16_ror8(minus_zero, x));
            // Pixel 1's: in the word pixel 0's starts, bytes 1 and 3, and byte 2.
            let (outer1, middle1) = if ADJACENT {
                (odd, even.map(|x| x >> 16))
            } else {
                let b = words(at[1]);
                (
                    b.map(|x| sxtab16(minus_zero, x)),
                    b.map(|x| sxtab16_ror8(minus_zero, x)),
                )
            };
            // The middle taps of rows 0 and 1 in one word, pixel 0's and pixel 1's.
            let middle = |m: [u32; 3]| (m[0] & 0xffff) | (m[1] << 16);
            cols[8 * ic..8 * ic + 8].copy_from_slice(&[
                even[0],
                even[1],
                outer1[0],
                outer1[1],
                even[2],
                middle(odd),
                outer1[2],
                middle(middle1),
            ]);
            (odd[2] & 0xffff, middle1[2] & 0xffff)
        };
        // The last codes of four channels, one step after all channels' own.
        let join = |group: usize, last: [(u32, u32); 4], cols: &mut [u32]| {
            let t = 8 * channels + 4 * group;
            cols[t] = last[0].0 | (last[1].0 << 16);
            cols[t + 1] = last[2].0 | (last[3].0 << 16);
            cols[t + 2] = last[0].1 | (last[1].1 << 16);
            cols[t + 3] = last[2].1 | (last[3].1 << 16);
        };
        let groups = channels / 4;
        for g in 0..groups {
            let last = [0, 1, 2, 3].map(|i| channel(4 * g + i, cols));
            join(g, last, cols);
        }
        if !channels.is_multiple_of(4) {
            // A group short of four channels: zeros, which meet zero weights.
            let mut last = [(0, 0); 4];
            for (i, l) in last.iter_mut().enumerate().take(channels % 4) {
                *l = channel(4 * groups + i, cols);
            }
            join(groups, last, cols);
        }
    }
}

/// Gathers pixels `p` and `p + 1` of a pointwise layer's input (`channels` planes of
/// `plane` codes) as pixels 0 and 1 of `cols` (`x - x_zero`, laid out as [`gather`] lays
/// them out, in words): per two planes, one halfword of each (both pixels' codes) joined into
/// a word, whose `SXTAB16`s with `(-x_zero, -x_zero)` are pixel 0's and pixel 1's pair of
/// codes, about 2.5 instructions per code against 4.5 through the offset table. An odd last
/// plane is paired with zeros, which meet the packed weights' zero padding.
#[inline(always)]
fn gather_pointwise(
    input: &[i8],
    channels: usize,
    plane: usize,
    zero: i32,
    p: usize,
    cols: &mut [u32],
) {
    assert!(p + 1 < plane && channels * plane <= input.len());
    assert!(channels.div_ceil(4) * 4 <= cols.len());
    let minus_zero = pack16(-zero, -zero);
    let pair_at = |c: usize| {
        // SAFETY: `c < channels` and `p + 1 < plane` (asserted above), so both codes lie
        // within the first `channels * plane <= input.len()`; `read_unaligned` takes any
        // alignment.
        unsafe {
            input
                .as_ptr()
                .add(c * plane + p)
                .cast::<u16>()
                .read_unaligned() as u32
        }
    };
    for c in (0..channels).step_by(2) {
        let second = if c + 1 < channels { pair_at(c + 1) } else { 0 };
        // Bytes: plane c at p and p + 1, then plane c + 1 at p and p + 1.
        let joined = pair_at(c) | (second << 16);
        let word = (c / 4) * 4 + (c % 4) / 2;
        // SAFETY: `word + 2 < channels.div_ceil(4) * 4 <= cols.len()` (asserted above).
        unsafe {
            *cols.get_unchecked_mut(word) = sxtab16(minus_zero, joined);
            *cols.get_unchecked_mut(word + 2) = sxtab16_ror8(minus_zero, joined);
        }
    }
}

/// Where each code of the receptive field lies in the input, relative to the window's
/// top-left cell (`ic * plane + ky * width + kx`, in the weights' order): the gather of a
/// window inside the input is then one load per code, whatever the kernel's shape. The rows
/// [`conv2d_dsp`] convolves have no padding (padded layers run on a padded copy of their
/// rows), so every window is inside; inputs of more than 65,536 codes, whose offsets do not
/// fit `u16`, take the general [`gather`].
struct Offsets<const ROW: usize> {
    at: [u16; ROW],
    receptive: usize,
    usable: bool,
}

impl<const ROW: usize> Offsets<ROW> {
    /// The table of a layer (its first `in * kh * kw` entries).
    #[inline(always)]
    fn new(params: &Conv2dParams) -> Self {
        let w = &params.window;
        let [kh, kw] = w.kernel;
        let usable = w.input.len() <= 1 << 16;
        let mut at = [0u16; ROW];
        let mut k = 0;
        for ic in 0..w.input.channels {
            for ky in 0..kh {
                for kx in 0..kw {
                    if usable {
                        at[k] = (ic * w.input.plane() + ky * w.input.width + kx) as u16;
                    }
                    k += 1;
                }
            }
        }
        Offsets {
            at,
            receptive: k,
            usable,
        }
    }

    /// Gathers the pixels `ox` of row `oy` as pixels 0 and 1 (see [`gather`]) if the table
    /// can be used and both windows lie inside the input; returns false (and gathers
    /// nothing) otherwise.
    #[inline(always)]
    fn gather_inside(
        &self,
        params: &Conv2dParams,
        input: &[i8],
        zero: i32,
        oy: usize,
        ox: [usize; 2],
        cols: &mut [i16],
    ) -> bool {
        let w = &params.window;
        let [kh, kw] = w.kernel;
        let inside = |x: usize| w.valid_taps(1, x) == (0, kw);
        if !self.usable || w.valid_taps(0, oy) != (0, kh) || !inside(ox[0]) || !inside(ox[1]) {
            return false;
        }
        let top = (oy * w.stride[0] - w.padding[0]) * w.input.width;
        let base = ox.map(|x| top + x * w.stride[1] - w.padding[1]);
        // The offsets grow with `k`: the last is the window's bottom-right cell.
        let last = base[0].max(base[1]) + self.at[self.receptive - 1] as usize;
        assert!(last < input.len() && 2 * self.receptive.div_ceil(4) * 4 <= cols.len());
        for k in 0..self.receptive {
            let off = self.at[k] as usize;
            let slot = k + (k & !3);
            // SAFETY: `base[p] + off <= last < input.len()`, and `slot + 4 < cols.len()`
            // for `k < receptive` (both asserted above).
            unsafe {
                *cols.get_unchecked_mut(slot) =
                    (*input.get_unchecked(base[0] + off) as i32 - zero) as i16;
                *cols.get_unchecked_mut(slot + 4) =
                    (*input.get_unchecked(base[1] + off) as i32 - zero) as i16;
            }
        }
        true
    }
}

/// Gathers output pixel `(oy, ox)`'s receptive field as pixel `p` (0 or 1) of `cols`:
/// `x - x_zero` in the weights' order (`[ic][ky][kx]`), code `k` at `(k / 4) * 8 + p * 4 +
/// k % 4`; padding and the padded tail are 0.
#[inline(always)]
fn gather(
    params: &Conv2dParams,
    input: &[i8],
    zero: i32,
    oy: usize,
    ox: usize,
    p: usize,
    cols: &mut [i16],
) {
    let w = &params.window;
    let [kh, kw] = w.kernel;
    let (in_w, in_plane) = (w.input.width, w.input.plane());
    let (ky0, ky1) = w.valid_taps(0, oy);
    let (kx0, kx1) = w.valid_taps(1, ox);
    let receptive = w.input.channels * kh * kw;
    let slot = |k: usize| k + (k & !3) + 4 * p;
    for k in 0..receptive.div_ceil(4) * 4 {
        cols[slot(k)] = 0;
    }
    let iy0 = oy * w.stride[0] + ky0 - w.padding[0];
    let ix0 = ox * w.stride[1] + kx0 - w.padding[1];
    for ic in 0..w.input.channels {
        let plane = &input[ic * in_plane..(ic + 1) * in_plane];
        for (dy, ky) in (ky0..ky1).enumerate() {
            let src = &plane[(iy0 + dy) * in_w + ix0..][..kx1 - kx0];
            let k0 = (ic * kh + ky) * kw + kx0;
            for (j, s) in src.iter().enumerate() {
                cols[slot(k0 + j)] = (*s as i32 - zero) as i16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::{OutputStage, Requantize, conv2d};
    use crate::{Activation, Conv2dParams, Shape3};
    use std::vec::Vec;

    use crate::int8::test_codes::Rng;

    fn check<const ROW: usize, const BLOCK: usize>(
        rng: &mut Rng,
        input: Shape3,
        out: usize,
        k: usize,
        s: [usize; 2],
        p: usize,
    ) {
        let params = Conv2dParams::new(input, out, [k, k], s, [p, p], Activation::Relu).unwrap();
        assert_eq!(dsp_row_len(&params), ROW);
        assert_eq!(dsp_block_words(&params), BLOCK);
        let x = rng.codes(input.len());
        let weights = rng.weights(params.dense_weight_len());
        let bias = rng.biases(out);
        let rq: Vec<Requantize> = (0..out)
            .map(|_| Requantize::from_real(0.0005 + (rng.next() % 1000) as f64 * 1e-6).unwrap())
            .collect();
        // The portable kernel tests each factor; the DSP one is told they are all below a half.
        let stage = OutputStage {
            zero_point: -7,
            min: -7,
            max: 127,
            factors_below_half: false,
            factors_short: false,
        };
        let told = stage.with_factors(&rq);
        assert!(told.factors_below_half);
        let zero = (rng.next() % 256) as i32 - 128;
        let mut want = vec![0i8; params.output().len()];
        conv2d(&params, zero, &weights, &bias, &rq, stage, &x, &mut want);
        // Word aligned as the kernel requires: the codes of a `u32` buffer.
        let mut words = vec![0u32; dsp_weights_len(&params) / 4];
        // SAFETY: `words` owns `4 * words.len()` initialised bytes, and any byte is a valid
        // `i8`; the slice borrows `words` mutably for its whole life.
        let packed = unsafe {
            core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<i8>(), 4 * words.len())
        };
        pack_conv2d_dsp(&params, &weights, packed);
        let mut got = vec![0i8; params.output().len()];
        let mut scratch = vec![0i8; dsp_scratch_len(&params)];
        conv2d_dsp::<ROW, BLOCK>(
            &params,
            zero,
            packed,
            &bias,
            &rq,
            told,
            &x,
            &mut scratch,
            &mut got,
        );
        assert_eq!(got, want, "{input} -> {out}, k {k} s {s:?} p {p}");
    }

    #[test]
    fn blocks_of_pixel_pairs_stay_within_their_stack() {
        // Every 3x3 (padded or not, stride 1 or 2), 5x5 and pointwise layer the kernel
        // takes, on rows of 1 to 64 pixels: a block, its widened weights and the offset
        // table hold at most DSP_STACK_WORDS, and a block whole pixel pairs of at least 2.
        for (k, s, p) in [(3, 1, 1), (3, 1, 0), (3, 2, 1), (5, 1, 2), (1, 1, 0)] {
            for channels in 1..=MAX_DSP_ROW / (k * k) {
                for width in 1..=64 {
                    let input = Shape3::new(channels, k.max(2), width + k - 1);
                    let params =
                        Conv2dParams::new(input, 2, [k, k], [s, s], [p, p], Activation::Relu)
                            .unwrap();
                    let (row, block) = (dsp_row_len(&params), dsp_block_words(&params));
                    let case = format!("{input} k{k} s{s} p{p}: {block}");
                    assert!(
                        block + words_beside_block(&params) <= DSP_STACK_WORDS,
                        "{case}"
                    );
                    assert!(block == 0 || block >= MIN_BLOCK_PAIRS * row, "{case}");
                    assert_eq!(block % row, 0, "{case}");
                }
            }
        }
        // 56 channels (504 codes): padded, 2 pairs fit beside their weights; unpadded, the
        // offset table (252 words) leaves room for one, and the rows go pair by pair.
        let wide = |padding| {
            let input = Shape3::new(56, 3, 28);
            Conv2dParams::new(input, 8, [3, 3], [1, 1], padding, Activation::Relu).unwrap()
        };
        assert_eq!(dsp_block_words(&wide([1, 1])), 2 * 504);
        assert_eq!(dsp_block_words(&wide([0, 0])), 0);
    }

    #[test]
    fn the_dsp_kernel_equals_the_portable_one() {
        let mut rng = Rng(17);
        // Odd and even widths, output channels and receptive fields; every padding and
        // stride; 1x1 (pointwise) too.
        check::<28, 252>(&mut rng, Shape3::new(3, 7, 9), 5, 3, [1, 1], 1);
        check::<28, 56>(&mut rng, Shape3::new(3, 8, 8), 4, 3, [2, 2], 1);
        check::<76, 456>(&mut rng, Shape3::new(3, 6, 11), 3, 5, [1, 1], 2);
        check::<48, 0>(&mut rng, Shape3::new(48, 5, 5), 7, 1, [1, 1], 0);
        check::<12, 0>(&mut rng, Shape3::new(11, 4, 3), 2, 1, [1, 1], 0);
        check::<108, 216>(&mut rng, Shape3::new(12, 6, 6), 1, 3, [1, 1], 0);
        check::<64, 0>(&mut rng, Shape3::new(7, 9, 4), 6, 3, [2, 2], 0);
        // Word gathers: 1 to 9 input channels (groups of four and every remainder), odd and
        // even widths, odd output channels.
        check::<12, 36>(&mut rng, Shape3::new(1, 5, 6), 3, 3, [1, 1], 1);
        // One input channel in rows of more than 32 pixels, padded (word gathers) or not,
        // both strides.
        check::<12, 444>(&mut rng, Shape3::new(1, 4, 37), 4, 3, [1, 1], 1);
        check::<12, 204>(&mut rng, Shape3::new(1, 5, 36), 3, 3, [1, 1], 0);
        check::<12, 216>(&mut rng, Shape3::new(1, 7, 70), 5, 3, [2, 2], 1);
        check::<20, 140>(&mut rng, Shape3::new(2, 4, 7), 2, 3, [1, 1], 1);
        check::<28, 140>(&mut rng, Shape3::new(3, 6, 5), 3, 3, [1, 1], 1);
        check::<36, 144>(&mut rng, Shape3::new(4, 3, 8), 5, 3, [1, 1], 1);
        check::<84, 252>(&mut rng, Shape3::new(9, 5, 3), 4, 3, [1, 1], 1);
        // Pointwise: one plane; odd planes and an odd pixel count (a last pixel alone).
        check::<4, 0>(&mut rng, Shape3::new(1, 3, 3), 3, 1, [1, 1], 0);
        // Pointwise rows of one step run a channel over runs of pixels: more than one run,
        // an odd last pixel, odd and even input channels.
        check::<4, 0>(&mut rng, Shape3::new(2, 7, 7), 5, 1, [1, 1], 0);
        check::<4, 0>(&mut rng, Shape3::new(4, 8, 8), 6, 1, [1, 1], 0);
        check::<4, 0>(&mut rng, Shape3::new(3, 5, 7), 2, 1, [1, 1], 0);
        check::<12, 0>(&mut rng, Shape3::new(9, 5, 9), 7, 1, [1, 1], 0);
        check::<8, 0>(&mut rng, Shape3::new(5, 1, 7), 4, 1, [1, 1], 0);
        check::<16, 0>(&mut rng, Shape3::new(16, 2, 2), 5, 1, [1, 1], 0);
        // Blocks of pixel pairs against widened weights ([`dsp_block_words`]): one block a
        // pass (39 pairs of 28 codes over two rows, then a last row of 20, its last pixel
        // alone; 19 pairs through the offset table; a pointwise plane of 13 pairs), in
        // blocks of 2 and 3 (288 codes, 5 pairs; a pointwise plane of 5), and rows of one
        // pair, which widen in the inner product.
        check::<28, 1092>(&mut rng, Shape3::new(3, 3, 39), 3, 3, [1, 1], 1);
        check::<28, 532>(&mut rng, Shape3::new(3, 4, 40), 2, 3, [1, 1], 0);
        check::<64, 832>(&mut rng, Shape3::new(64, 5, 5), 3, 1, [1, 1], 0);
        check::<288, 864>(&mut rng, Shape3::new(32, 4, 5), 3, 3, [1, 1], 1);
        check::<260, 780>(&mut rng, Shape3::new(260, 3, 3), 3, 1, [1, 1], 0);
        check::<288, 0>(&mut rng, Shape3::new(32, 5, 5), 2, 3, [2, 2], 0);
        // Passes in several blocks: equal (288 codes, 6 pairs of one even row and 9 of two
        // rows in blocks of 3), unequal (288 codes, 17 pairs in blocks of 3 and 4, then a
        // last row of 9 in blocks of 3, its last pixel alone; 200 codes, 43 pairs in blocks
        // of 5 and 6; 360 codes, 5 pairs in 2 and 3), and a pointwise plane of 18 pairs in
        // blocks of 3 and 4.
        check::<288, 864>(&mut rng, Shape3::new(32, 2, 12), 3, 3, [1, 1], 1);
        check::<288, 864>(&mut rng, Shape3::new(32, 2, 9), 2, 3, [1, 1], 1);
        check::<288, 1152>(&mut rng, Shape3::new(32, 3, 17), 2, 3, [1, 1], 1);
        check::<200, 1200>(&mut rng, Shape3::new(22, 3, 43), 3, 3, [1, 1], 1);
        check::<360, 1080>(&mut rng, Shape3::new(40, 3, 5), 3, 3, [1, 1], 1);
        check::<260, 1040>(&mut rng, Shape3::new(260, 6, 6), 3, 1, [1, 1], 0);
        // Rows too long for blocks beside the offset table go pair by pair (504 codes).
        check::<504, 0>(&mut rng, Shape3::new(56, 4, 6), 3, 3, [1, 1], 0);
        // Word gathers of odd width take two output rows a pass, pairs running across a
        // row's end: rows of one pixel (every pair across, pair by pair), in blocks, an odd
        // last row alone, and a vertical stride of 2.
        check::<28, 0>(&mut rng, Shape3::new(3, 5, 1), 3, 3, [1, 1], 1);
        check::<84, 588>(&mut rng, Shape3::new(9, 7, 7), 5, 3, [1, 1], 1);
        check::<28, 252>(&mut rng, Shape3::new(3, 9, 9), 3, 3, [2, 1], 1);
    }

    #[test]
    fn the_packed_order_pairs_neighbours_under_sxtb16() {
        let word = u32::from_le_bytes([1u8, 0xfe, 3, 0x80]);
        // Bytes 0 and 2: 1 and 3; bytes 1 and 3: -2 and -128.
        assert_eq!(sxtb16(word), 1 | (3 << 16));
        assert_eq!(sxtb16_ror8(word), 0xfffe | (0xff80 << 16));
        assert_eq!(smlad(sxtb16_ror8(word), 0x0002_0003, 10), 10 - 6 - 256);
        assert_eq!(
            (0..8).map(packed_position).collect::<Vec<_>>(),
            [0, 2, 1, 3, 4, 6, 5, 7]
        );
    }
}
