//! int8 3x3 convolution at stride 1 and padding 1 by Winograd's minimal filtering F(2x2, 3x3)
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), exact in
//! integers, for Cortex-M4/M7 (`SMLAD`).
//!
//! A 2x2 block of outputs ("tile") of one channel is `A^T [(G g G^T) . (B^T d B)] A`, where
//! `d` is the 4x4 input patch (`x - x_zero`, padding 0), `g` the 3x3 kernel, and `.` the
//! product element by element: 16 multiplies per input channel where the direct convolution
//! takes 36. `G` holds halves; with `G' = 2 G` every transform is in integers, the tile comes
//! out 4 times the accumulator, and the shift back by 2 is exact. So the results equal
//! [`super::conv2d`]'s bit for bit: no rounding happens before the requantisation.
//!
//! Ranges: `B^T d B` sums at most 4 of `|x - x_zero| <= 255` (`|v| <= 1020`), `G' g G'^T`
//! at most 9 weights of `|w| <= 127` (`|u| <= 1143`): both fit the `i16` halves `SMLAD`
//! multiplies. The 16 sums of products over the input channels ([`super::dsp`]'s
//! `dot2x2_i16`, two channels by two tiles) and 4 times the accumulator stay far inside `i32`
//! for the at most [`MAX_WINOGRAD_PAIRS`]` * 2` input channels taken.
//!
//! The transformed weights take 32 bytes per kernel (against 9 codes), the transformed
//! inputs 32 bytes per tile and input channel, so one of the two is kept whole in the
//! scratch, the smaller ([`winograd_weights_whole`]), and the other made for one channel
//! pair or tile pair at a time on the stack. The weights stay in flash as exported.

#[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
use super::simd32::smlad;
use super::simd32::{bottoms, copy_codes, load_word, pack16, sadd16, ssub16, tops};
use super::simd32::{sxtab16, sxtab16_ror8};
use super::{OutputStage, Requantize};
use crate::Conv2dParams;

/// The most pairs of input channels taken (96 channels): a channel pair's or tile pair's
/// transformed operand, `32 * pairs` words, stays within [`super::DSP_STACK_WORDS`].
pub const MAX_WINOGRAD_PAIRS: usize = super::DSP_STACK_WORDS / 32;

/// The fewest input channels taken: two pairs, the products' first step (whether firmware
/// uses it is [`winograd_pays`]).
pub const MIN_WINOGRAD_CHANNELS: usize = 4;

/// Words of one channel pair's transformed weights or one tile pair's transformed inputs
/// over `pairs` pairs of input channels: per position of the 4x4 tile, per step of four
/// channels, the pair's first item's two words (channels `4 s..4 s + 2` and `4 s + 2..4 s +
/// 4` as `i16` pairs), then the second's; and for an odd `pairs`, the last pair's word of
/// each item. Channels past the layer fill at most one half of the last word.
const fn pair_words(pairs: usize) -> usize {
    16 * 2 * pairs
}

/// Words of one channel pair's transformed weights or one tile pair's transformed inputs
/// (the `WORDS` of [`conv2d_winograd`]): 16 tile positions of one word per pair of input
/// channels (`winograd_pairs`) for each of the pair.
pub const fn winograd_pair_words(params: &Conv2dParams) -> usize {
    pair_words(winograd_pairs(params))
}

/// Whether [`conv2d_winograd`] takes a layer: a dense 3x3 convolution at stride 1 and
/// padding 1 with [`MIN_WINOGRAD_CHANNELS`] to `2 * `[`MAX_WINOGRAD_PAIRS`] input channels.
pub const fn winograd_fits(params: &Conv2dParams) -> bool {
    let w = &params.window;
    w.kernel[0] == 3
        && w.kernel[1] == 3
        && w.stride[0] == 1
        && w.stride[1] == 1
        && w.padding[0] == 1
        && w.padding[1] == 1
        && w.input.channels >= MIN_WINOGRAD_CHANNELS
        && winograd_pairs(params) <= MAX_WINOGRAD_PAIRS
}

/// The fewest input channels, and the smallest output side, at which firmware runs a layer
/// by [`conv2d_winograd`] rather than directly ([`winograd_pays`]).
pub const WINOGRAD_PAYS_FROM: (usize, usize) = (8, 4);

/// Input channels from which the products saved pay for tiles that hang over the plane's
/// edge by more than a quarter (an odd side of 5: 25 outputs in 36 tile places).
const WINOGRAD_ANY_TILES_FROM: usize = 32;

/// Whether firmware should run a layer that [`conv2d_winograd`] takes ([`winograd_fits`]) by
/// it: where it took fewer instructions than the direct `SMLAD` kernel on Cortex-M7 (QEMU;
/// BENCHMARKS.md). The transforms and the tiles' output stage cost per tile and channel
/// pair; on small planes or few channels too few products share them. Measured: planes of
/// 1x1 to 3x3 took 1.2-4.4x the direct instructions at 4 to 48 channels; 4 channels took
/// 0.97x (4x4) to 1.27x (5x5); 16 channels 0.89x (4x4), 1.14x (5x5), 0.94x (7x7); 48
/// channels 0.63-0.83x from 4x4 up.
pub const fn winograd_pays(params: &Conv2dParams) -> bool {
    let out = &params.window.output;
    let (th, tw) = tile_grid(params);
    let (channels, side) = WINOGRAD_PAYS_FROM;
    winograd_fits(params)
        && params.window.input.channels >= channels
        && out.height >= side
        && out.width >= side
        // The outputs fill at least three quarters of the tiles' places, or many channels.
        && (out.height * out.width >= 3 * th * tw
            || params.window.input.channels >= WINOGRAD_ANY_TILES_FROM)
}

/// Pairs of input channels: the `i16` pairs of a transformed tile's words.
pub const fn winograd_pairs(params: &Conv2dParams) -> usize {
    params.window.input.channels.div_ceil(2)
}

/// Tiles down and across.
const fn tile_grid(params: &Conv2dParams) -> (usize, usize) {
    let out = &params.window.output;
    (out.height.div_ceil(2), out.width.div_ceil(2))
}

const fn tile_pairs(params: &Conv2dParams) -> usize {
    let (th, tw) = tile_grid(params);
    (th * tw).div_ceil(2)
}

const fn channel_pairs(params: &Conv2dParams) -> usize {
    params.window.output.channels.div_ceil(2)
}

/// Whether the transformed weights are kept whole (each tile pair's inputs transformed in
/// turn) rather than the transformed inputs (each channel pair's weights in turn): whichever
/// has fewer pairs, so takes less scratch. Each is transformed once either way.
pub const fn winograd_weights_whole(params: &Conv2dParams) -> bool {
    channel_pairs(params) <= tile_pairs(params)
}

/// Codes per row of the band of padded input rows the tiles read: columns `-1..=2 tw`.
const fn band_width(params: &Conv2dParams) -> usize {
    2 * tile_grid(params).1 + 2
}

/// Input rows per channel in the band: two rows of tiles (a tile pair may end on the next).
const BAND_ROWS: usize = 6;

/// Codes of the band of padded input rows.
const fn band_len(params: &Conv2dParams) -> usize {
    params.window.input.channels * BAND_ROWS * band_width(params)
}

/// Codes of scratch [`conv2d_winograd`] needs: the band of padded input rows (six per
/// channel, for two rows of tiles), then the whole transformed weights or inputs (see
/// [`winograd_weights_whole`]) with 3 codes of slack to align them to a word.
pub const fn winograd_scratch_len(params: &Conv2dParams) -> usize {
    let pairs = if winograd_weights_whole(params) {
        channel_pairs(params)
    } else {
        tile_pairs(params)
    };
    band_len(params) + 3 + 4 * pairs * pair_words(winograd_pairs(params))
}

/// A dense 3x3 convolution at stride 1 and padding 1 ([`winograd_fits`]) by F(2x2, 3x3); the
/// results equal [`super::conv2d`]'s bit for bit. `WORDS` is
/// [`winograd_pair_words`]`(params)`: a pair's transformed operand on the stack.
///
/// # Shapes
/// - `input`: `params.input()`, CHW
/// - `weights`: `params.dense_weight_len()` codes, OIHW as exported
/// - `bias`, `requantize`: `[out_channels]`
/// - `scratch`: [`winograd_scratch_len`]`(params)` codes
/// - `output`: `params.output()`, CHW
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn conv2d_winograd<const WORDS: usize>(
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
    assert!(
        winograd_fits(params),
        "conv2d_winograd: not a layer it takes"
    );
    assert_eq!(WORDS, winograd_pair_words(params), "conv2d_winograd words");
    assert_eq!(input.len(), w.input.len(), "int8 conv input length");
    assert_eq!(output.len(), w.output.len(), "int8 conv output length");
    assert_eq!(
        weights.len(),
        params.dense_weight_len(),
        "int8 conv weights"
    );
    assert_eq!(bias.len(), w.output.channels, "int8 conv bias length");
    assert_eq!(requantize.len(), w.output.channels, "int8 conv requantize");
    assert_eq!(
        scratch.len(),
        winograd_scratch_len(params),
        "conv2d_winograd scratch length"
    );
    let (band, rest) = scratch.split_at_mut(band_len(params));
    // SAFETY: every bit pattern is a valid `u32`, and `align_to_mut` returns a middle slice
    // of whole, aligned words within `rest`.
    let (_, whole, _) = unsafe { rest.align_to_mut::<u32>() };
    let layer = Tiles {
        params,
        input_zero,
        weights,
        bias,
        requantize,
        stage,
        input,
    };
    let mut pair = [0u32; WORDS];
    // Written whole by each tile pair's products: zeroed once.
    let mut m = [0i32; 64];
    let mut band_at = usize::MAX;
    if winograd_weights_whole(params) {
        let whole = &mut whole[..channel_pairs(params) * WORDS];
        for (cp, u) in whole.chunks_exact_mut(WORDS).enumerate() {
            layer.transform_weights(cp, u);
        }
        for tp in 0..tile_pairs(params) {
            layer.transform_inputs(tp, band, &mut band_at, &mut pair);
            for (cp, u) in whole.chunks_exact(WORDS).enumerate() {
                layer.outputs(tp, cp, &pair, u, &mut m, output);
            }
        }
    } else {
        let whole = &mut whole[..tile_pairs(params) * WORDS];
        for (tp, v) in whole.chunks_exact_mut(WORDS).enumerate() {
            layer.transform_inputs(tp, band, &mut band_at, v);
        }
        for cp in 0..channel_pairs(params) {
            layer.transform_weights(cp, &mut pair);
            for (tp, v) in whole.chunks_exact(WORDS).enumerate() {
                layer.outputs(tp, cp, v, &pair, &mut m, output);
            }
        }
    }
}

/// One layer's operands, for its transforms and tiles.
struct Tiles<'a> {
    params: &'a Conv2dParams,
    input_zero: i32,
    weights: &'a [i8],
    bias: &'a [i32],
    requantize: &'a [Requantize],
    stage: OutputStage,
    input: &'a [i8],
}

impl Tiles<'_> {
    /// Channel pair `cp`'s weights transformed (`G' g G'^T`) into `u` (`pair_words(pairs)`),
    /// input channels and a missing second output channel past the layer as zeros.
    #[inline(always)]
    fn transform_weights(&self, cp: usize, u: &mut [u32]) {
        let w = &self.params.window;
        let pairs = winograd_pairs(self.params);
        let (cin, cout) = (w.input.channels, w.output.channels);
        const NONE: [i8; 9] = [0; 9];
        for item in 0..2 {
            let oc = 2 * cp + item;
            for q in 0..pairs {
                let (a, b) = (2 * q, 2 * q + 1);
                let word = word_at(q, item, pairs);
                // Channel `ic`'s kernel, zeros past the layer.
                let kernel = |ic: usize| -> &[i8; 9] {
                    if oc < cout && ic < cin {
                        match self.weights[(oc * cin + ic) * 9..][..9].try_into() {
                            Ok(k) => k,
                            Err(_) => unreachable!("a slice of 9"),
                        }
                    } else {
                        &NONE
                    }
                };
                let (ka, kb) = (kernel(a), kernel(b));
                // A tap of input channels `a` and `b` as an `i16` pair.
                let tap = |t: usize| pack16(ka[t] as i32, kb[t] as i32);
                // Across each kernel row: (2 g0, g0 + g1 + g2, g0 - g1 + g2, 2 g2).
                let mut h = [[0u32; 4]; 3];
                for (r, hr) in h.iter_mut().enumerate() {
                    let (g0, g1, g2) = (tap(3 * r), tap(3 * r + 1), tap(3 * r + 2));
                    let outer = sadd16(g0, g2);
                    *hr = [
                        sadd16(g0, g0),
                        sadd16(outer, g1),
                        ssub16(outer, g1),
                        sadd16(g2, g2),
                    ];
                }
                // Then down each column, the same combination.
                for j in 0..4 {
                    let outer = sadd16(h[0][j], h[2][j]);
                    let column = [
                        sadd16(h[0][j], h[0][j]),
                        sadd16(outer, h[1][j]),
                        ssub16(outer, h[1][j]),
                        sadd16(h[2][j], h[2][j]),
                    ];
                    for (i, value) in column.into_iter().enumerate() {
                        u[(4 * i + j) * 2 * pairs + word] = value;
                    }
                }
            }
        }
    }

    /// Tile pair `tp`'s inputs transformed (`B^T d B`) into `v` (`pair_words(pairs)`), an
    /// input channel past the layer as zeros; a missing second tile repeats the first (its outputs
    /// are dropped). `band` holds the padded input rows of two rows of tiles from
    /// `*band_at`, refilled when the pair starts on a later row.
    #[inline(always)]
    fn transform_inputs(&self, tp: usize, band: &mut [i8], band_at: &mut usize, v: &mut [u32]) {
        let w = &self.params.window;
        let (th, tw) = tile_grid(self.params);
        let (cin, pairs) = (w.input.channels, winograd_pairs(self.params));
        let first = 2 * tp;
        let second = (first + 1).min(th * tw - 1);
        let top = first / tw;
        if *band_at != top {
            self.fill_band(top, band);
            *band_at = top;
        }
        let wide = band_width(self.params);
        // `x - x_zero` comes out of `SXTAB16` with `-x_zero` in both halves.
        let negative_zero = pack16(-self.input_zero, -self.input_zero);
        for (item, tile) in [first, second].into_iter().enumerate() {
            let (ty, tx) = (tile / tw, tile % tw);
            let rows = 2 * (ty - top);
            for q in 0..pairs {
                let (a, b) = (2 * q, 2 * q + 1);
                let word = word_at(q, item, pairs);
                // The patch as pairs of channels: `d[r][c]` = (a, b) at row r, column c.
                let mut d = [[0u32; 4]; 4];
                for (r, dr) in d.iter_mut().enumerate() {
                    let at = |ic: usize| (ic * BAND_ROWS + rows + r) * wide + 2 * tx;
                    let wa = load_word(band, at(a));
                    let (a02, a13) = (sxtab16(negative_zero, wa), sxtab16_ror8(negative_zero, wa));
                    let (b02, b13) = if b < cin {
                        let wb = load_word(band, at(b));
                        (sxtab16(negative_zero, wb), sxtab16_ror8(negative_zero, wb))
                    } else {
                        (0, 0)
                    };
                    *dr = [
                        bottoms(a02, b02),
                        bottoms(a13, b13),
                        tops(a02, b02),
                        tops(a13, b13),
                    ];
                }
                // Down each column: (d0 - d2, d1 + d2, d2 - d1, d1 - d3); then across.
                let mut t = [[0u32; 4]; 4];
                for c in 0..4 {
                    t[0][c] = ssub16(d[0][c], d[2][c]);
                    t[1][c] = sadd16(d[1][c], d[2][c]);
                    t[2][c] = ssub16(d[2][c], d[1][c]);
                    t[3][c] = ssub16(d[1][c], d[3][c]);
                }
                for (i, ti) in t.iter().enumerate() {
                    let row = [
                        ssub16(ti[0], ti[2]),
                        sadd16(ti[1], ti[2]),
                        ssub16(ti[2], ti[1]),
                        ssub16(ti[1], ti[3]),
                    ];
                    for (j, value) in row.into_iter().enumerate() {
                        v[(4 * i + j) * 2 * pairs + word] = value;
                    }
                }
            }
        }
    }

    /// Copies the input rows that tile rows `top` and `top + 1` read (`2 top - 1` on, six
    /// per channel) into `band`, each `-1..=2 tw` wide, with the padding written out as the
    /// input's zero point (real 0).
    #[inline(always)]
    fn fill_band(&self, top: usize, band: &mut [i8]) {
        let w = &self.params.window;
        let (h, width) = (w.input.height, w.input.width);
        let wide = band_width(self.params);
        // `input_zero` is a code (-128..=127, the export's reader checks it).
        let pad = self.input_zero as i8;
        for ic in 0..w.input.channels {
            for r in 0..BAND_ROWS {
                let dst = &mut band[(ic * BAND_ROWS + r) * wide..][..wide];
                let iy = (2 * top + r).wrapping_sub(1);
                if iy < h {
                    dst[0] = pad;
                    copy_codes(
                        &mut dst[1..1 + width],
                        &self.input[(ic * h + iy) * width..][..width],
                    );
                    dst[1 + width..].fill(pad);
                } else {
                    dst.fill(pad);
                }
            }
        }
    }

    /// The outputs of tile pair `tp` and channel pair `cp` from their transformed inputs
    /// `v` and weights `u`: 16 inner products over the input channels ([`products`]), each
    /// tile's `A^T M A`, a quarter of it plus the bias requantised. Outputs past the layer (a
    /// missing channel or tile, the odd edge of a tile) are dropped.
    #[inline(always)]
    fn outputs(
        &self,
        tp: usize,
        cp: usize,
        v: &[u32],
        u: &[u32],
        m: &mut [i32; 64],
        out: &mut [i8],
    ) {
        let w = &self.params.window;
        let (th, tw) = tile_grid(self.params);
        let (height, width, cout) = (w.output.height, w.output.width, w.output.channels);
        products(m, v, u, winograd_pairs(self.params));
        let m = &*m;
        // Per channel `c` and tile `p` of the pairs (the sums' order: channel-major), the
        // tile's four values, 4 times the accumulators.
        let tile4 = |c: usize, p: usize| {
            let at = |k: usize| m[4 * k + 2 * c + p];
            // Down each column: (m0 + m1 + m2, m1 - m2 - m3); then across.
            let column = |j: usize| {
                let (m0, m1, m2, m3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                let inner = m1.wrapping_sub(m2);
                (m0.wrapping_add(m1).wrapping_add(m2), inner.wrapping_sub(m3))
            };
            let (s0, s1, s2, s3) = (column(0), column(1), column(2), column(3));
            let across = |a: i32, b: i32, c: i32, d: i32| {
                (
                    a.wrapping_add(b).wrapping_add(c),
                    b.wrapping_sub(c).wrapping_sub(d),
                )
            };
            let (y00, y01) = across(s0.0, s1.0, s2.0, s3.0);
            let (y10, y11) = across(s0.1, s1.1, s2.1, s3.1);
            [y00, y01, y10, y11]
        };
        for c in 0..2 {
            let oc = 2 * cp + c;
            if oc >= cout {
                break;
            }
            let factor = &{ self.requantize[oc] };
            let bias = self.bias[oc];
            let plane = &mut out[oc * height * width..][..height * width];
            for p in 0..2 {
                let tile = 2 * tp + p;
                if tile >= th * tw {
                    break;
                }
                let (y0, x0) = (2 * (tile / tw), 2 * (tile % tw));
                // Exactly 4 times the accumulators (the transforms' `G' = 2 G`).
                let code = |four: i32| {
                    self.stage
                        .requantize(factor, (four >> 2).wrapping_add(bias))
                };
                let y = tile4(c, p);
                if y0 + 1 < height && x0 + 1 < width {
                    let at = y0 * width + x0;
                    plane[at] = code(y[0]);
                    plane[at + 1] = code(y[1]);
                    plane[at + width] = code(y[2]);
                    plane[at + width + 1] = code(y[3]);
                } else {
                    for (i, four) in y.into_iter().enumerate() {
                        let (yy, xx) = (y0 + i / 2, x0 + i % 2);
                        if yy < height && xx < width {
                            plane[yy * width + xx] = code(four);
                        }
                    }
                }
            }
        }
    }
}

/// `m[4 k..4 k + 4]` = the sums, from zero, of tile position `k`'s products over the input
/// channels for the two channels and two tiles of a pair (channel-major, as `dot2x2_i16`
/// in dsp.rs orders them): `v` and `u` hold the positions' `2 * pairs` words one after
/// another ([`word_at`]).
#[inline(always)]
fn products(m: &mut [i32; 64], v: &[u32], u: &[u32], pairs: usize) {
    assert!(v.len() == pair_words(pairs) && u.len() == v.len() && pairs > 1);
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    // SAFETY: `m` holds 64 values; `v` and `u` are `32 * pairs` words each (checked above;
    // `pairs` is 2 to MAX_WINOGRAD_PAIRS, 48, the routines there are), word aligned as `u32`
    // slices; the routine for `pairs` reads exactly those, writes only `m`, and follows the
    // AAPCS.
    unsafe {
        super::arm::winograd_products(pairs)(m.as_mut_ptr(), v.as_ptr(), u.as_ptr());
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    for ((mk, vk), uk) in m
        .chunks_exact_mut(4)
        .zip(v.chunks_exact(2 * pairs))
        .zip(u.chunks_exact(2 * pairs))
    {
        let mut acc = [0i32; 4];
        // Steps of four channels (two words of each item): the dense kernel's inner product.
        let whole = 4 * (pairs / 2);
        super::dsp::dot2x2_i16(&mut acc, &vk[..whole], &uk[..whole]);
        // The last pair of an odd count: one word of each.
        if let ([x0, x1], [w0, w1]) = (&vk[whole..], &uk[whole..]) {
            acc[0] = smlad(*w0, *x0, acc[0]);
            acc[1] = smlad(*w0, *x1, acc[1]);
            acc[2] = smlad(*w1, *x0, acc[2]);
            acc[3] = smlad(*w1, *x1, acc[3]);
        }
        mk.copy_from_slice(&acc);
    }
}

/// Where the word of input channels `2 q, 2 q + 1` of item `item` (of a pair) lies in each
/// tile position's `2 * pairs` words (see `pair_words`): in a step of four channels, or past
/// them for the last of an odd count of pairs.
#[inline(always)]
const fn word_at(q: usize, item: usize, pairs: usize) -> usize {
    if q < 2 * (pairs / 2) {
        (q / 2) * 4 + item * 2 + q % 2
    } else {
        4 * (pairs / 2) + item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use crate::int8::conv2d;
    use crate::int8::test_codes::Rng;
    use std::vec;
    use std::vec::Vec;

    /// Random layers of every shape the kernel takes against the portable kernel, which is
    /// bit-exact with the integer reference: odd and even sides, channel counts off the
    /// pairs and off the steps of four, one output channel, both orders (weights whole or
    /// inputs whole), extreme zero points and saturating factors.
    #[test]
    fn winograd_equals_the_portable_kernel() {
        let mut rng = Rng(0x5eed_1234);
        let cases: &[(usize, usize, usize, usize)] = &[
            // (in channels, height, width, out channels)
            (4, 4, 4, 2),
            (5, 7, 7, 3),
            (11, 28, 28, 14),
            (14, 14, 14, 30),
            (30, 14, 14, 33),
            (33, 7, 7, 61),
            (8, 3, 5, 1),
            (9, 1, 1, 4),
            (6, 2, 9, 7),
            (96, 5, 4, 5),
        ];
        for &(cin, h, wd, cout) in cases {
            for (zero, activation) in [
                (-128, Activation::Relu),
                (127, Activation::None),
                (3, Activation::Relu6),
            ] {
                let params = Conv2dParams::new(
                    crate::Shape3::new(cin, h, wd),
                    cout,
                    [3, 3],
                    [1, 1],
                    [1, 1],
                    activation,
                )
                .unwrap();
                assert!(winograd_fits(&params));
                let input = rng.codes(params.input().len());
                let weights = rng.weights(params.dense_weight_len());
                let bias = rng.biases(cout);
                let requantize: Vec<Requantize> = (0..cout)
                    .map(|i| Requantize::from_real(0.0004 + (0.0007 * i as f64) % 0.01).unwrap())
                    .collect();
                let stage = OutputStage {
                    zero_point: -5,
                    min: if activation == Activation::None {
                        -128
                    } else {
                        -5
                    },
                    max: 127,
                    factors_below_half: false,
                    factors_short: false,
                }
                .with_factors(&requantize);
                let (got, want) = Tiles {
                    params: &params,
                    input_zero: zero,
                    weights: &weights,
                    bias: &bias,
                    requantize: &requantize,
                    stage,
                    input: &input,
                }
                .codes();
                assert_eq!(got, want, "{cin}x{h}x{wd} -> {cout}, zero point {zero}");
            }
        }
    }

    impl Tiles<'_> {
        /// The layer's codes by `conv2d_winograd` (its `WORDS` chosen at run time, for the
        /// tests' shapes; the scratch starts full of junk) and by the portable kernel.
        fn codes(&self) -> (Vec<i8>, Vec<i8>) {
            let Tiles {
                params,
                input_zero: zero,
                weights,
                bias,
                requantize,
                stage,
                input,
            } = *self;
            let mut want = vec![0i8; params.output().len()];
            conv2d(
                params, zero, weights, bias, requantize, stage, input, &mut want,
            );
            let mut got = vec![0i8; params.output().len()];
            let scratch = &mut vec![0x55i8; winograd_scratch_len(params)];
            let output = &mut got;
            macro_rules! pairs {
                ($($n:literal)*) => {
                    match winograd_pairs(params) {
                        $($n => conv2d_winograd::<{ 32 * $n }>(params, zero, weights, bias, requantize, stage, input, scratch, output),)*
                        n => panic!("no test instance for {n} pairs"),
                    }
                };
            }
            pairs!(2 3 4 5 6 7 15 17 48);
            (got, want)
        }
    }

    /// Firmware runs by Winograd the layers it was measured faster on, and not the others.
    #[test]
    fn winograd_pays_where_it_was_measured_to() {
        let pays = |cin: usize, side: usize, cout: usize| {
            let shape = crate::Shape3::new(cin, side, side);
            let params =
                Conv2dParams::new(shape, cout, [3, 3], [1, 1], [1, 1], Activation::Relu).unwrap();
            winograd_pays(&params)
        };
        // vgg-small 4.0x's conv2-conv5 (0.56-0.89x the direct instructions).
        assert!(pays(11, 28, 14) && pays(14, 14, 30) && pays(30, 14, 33) && pays(33, 7, 122));
        // 0.63-0.94x.
        assert!(pays(16, 4, 16) && pays(16, 7, 16) && pays(48, 4, 48) && pays(48, 5, 48));
        // 1.06-4.4x.
        for (cin, side) in [(16, 1), (16, 2), (16, 3), (48, 3), (16, 5), (4, 5), (4, 7)] {
            assert!(!pays(cin, side, cin), "{cin} channels, {side}x{side}");
        }
    }

    /// The extremes: every input at the far end from its zero point, every weight at
    /// +-127, so the transforms reach their largest values (1020 and 1143) and the
    /// accumulator its largest; no room for an overflow to hide.
    #[test]
    fn winograd_is_exact_at_the_extremes() {
        for (code, weight) in [(127i8, 127i8), (-128, 127), (127, -127), (-128, -127)] {
            let (cin, cout) = (96, 2);
            let params = Conv2dParams::new(
                crate::Shape3::new(cin, 6, 6),
                cout,
                [3, 3],
                [1, 1],
                [1, 1],
                Activation::None,
            )
            .unwrap();
            let zero = if code > 0 { -128 } else { 127 };
            let input = vec![code; params.input().len()];
            let weights = vec![weight; params.dense_weight_len()];
            let bias = vec![0; cout];
            let requantize = vec![Requantize::from_real(1.0 / 250_000.0).unwrap(); cout];
            let stage = OutputStage {
                zero_point: 0,
                min: -128,
                max: 127,
                factors_below_half: false,
                factors_short: false,
            };
            let (got, want) = Tiles {
                params: &params,
                input_zero: zero,
                weights: &weights,
                bias: &bias,
                requantize: &requantize,
                stage,
                input: &input,
            }
            .codes();
            assert!(want.iter().any(|&c| c.unsigned_abs() > 100), "{want:?}");
            assert_eq!(got, want);
        }
    }
}
