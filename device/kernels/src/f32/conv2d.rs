//! Dense 2-D convolution (any kernel size, stride and zero padding).
//!
//! Weights are packed (by [`pack_conv2d_weights`], at generation time) so that the inner loop
//! streams them: output channels are taken [`OUT_BLOCK`] at a time, and for each block the
//! weights run `[in_channel][ky][kx][OUT_BLOCK]`. Output channels left over after the last full
//! block keep the plain `[in_channel][ky][kx]` order, one channel after another.
//!
//! The inner tile holds 4 output channels x 4 output pixels of a row in 16 accumulators: per
//! kernel tap it loads 4 weights and 4 inputs for 16 multiply-accumulates. Columns whose
//! window crosses the padding take a one-pixel path that clamps the kernel columns, so the
//! tile itself never tests bounds; rows clamp the kernel rows once per output row.

use super::{OUT_BLOCK, mac};
use crate::{Conv2dParams, Window};

/// Output pixels of one row computed together.
const PIXEL_BLOCK: usize = 4;

/// Re-lays out `[out][in][kh][kw]` weights (PyTorch order) into the order [`conv2d`] reads.
///
/// Both slices must hold [`Conv2dParams::dense_weight_len`] values.
pub fn pack_conv2d_weights(params: &Conv2dParams, oihw: &[f32], packed: &mut [f32]) {
    let len = params.dense_weight_len();
    assert!(
        oihw.len() == len && packed.len() == len,
        "conv2d weight length"
    );
    let per_channel = len / params.output().channels;
    pack_blocked(oihw, packed, params.output().channels, per_channel);
}

/// Interleaves rows of a `[rows][cols]` matrix [`OUT_BLOCK`] at a time: `[block][col][4]`,
/// then the leftover rows unchanged.
pub(crate) fn pack_blocked(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    let full_blocks = rows / OUT_BLOCK;
    for block in 0..full_blocks {
        let base = block * OUT_BLOCK * cols;
        for col in 0..cols {
            for lane in 0..OUT_BLOCK {
                dst[base + col * OUT_BLOCK + lane] = src[base + lane * cols + col];
            }
        }
    }
    let tail = full_blocks * OUT_BLOCK * cols;
    dst[tail..].copy_from_slice(&src[tail..]);
}

/// Dense convolution: `output = activation(bias + conv(input, weights))`.
///
/// `input` is `params.input()` CHW, `packed_weights` comes from [`pack_conv2d_weights`],
/// `bias` has one value per output channel and `output` is `params.output()` CHW.
#[inline(always)]
pub fn conv2d(
    params: &Conv2dParams,
    input: &[f32],
    packed_weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    match params.window.stride[1] {
        1 => conv2d_impl::<0, 0, 1>(params, input, packed_weights, bias, output),
        2 => conv2d_impl::<0, 0, 2>(params, input, packed_weights, bias, output),
        _ => conv2d_impl::<0, 0, 0>(params, input, packed_weights, bias, output),
    }
}

/// [`conv2d`] compiled for one kernel size `KH x KW` and column stride `SW` (the code
/// generator calls this): the kernel loops unroll and the input loads take immediate
/// offsets, far fewer instructions per MAC than the generic version (BENCHMARKS.md,
/// "Instructions per MAC, per kernel"). Panics if `params` has another kernel size or stride.
#[inline(always)]
pub fn conv2d_fixed<const KH: usize, const KW: usize, const SW: usize>(
    params: &Conv2dParams,
    input: &[f32],
    packed_weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    let w = &params.window;
    assert!(
        w.kernel == [KH, KW] && w.stride[1] == SW,
        "conv2d_fixed::<{KH}, {KW}, {SW}> called for kernel {:?} stride {:?}",
        w.kernel,
        w.stride
    );
    conv2d_impl::<KH, KW, SW>(params, input, packed_weights, bias, output);
}

/// `KH`, `KW`, `SW`: kernel size and column stride when fixed at compile time, 0 to read
/// them from `params`.
#[inline(always)]
fn conv2d_impl<const KH: usize, const KW: usize, const SW: usize>(
    params: &Conv2dParams,
    input: &[f32],
    packed_weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    let w = &params.window;
    assert_eq!(input.len(), w.input.len(), "conv2d input length");
    assert_eq!(
        packed_weights.len(),
        params.dense_weight_len(),
        "conv2d weight length"
    );
    assert_eq!(bias.len(), w.output.channels, "conv2d bias length");
    assert_eq!(output.len(), w.output.len(), "conv2d output length");

    let taps_per_channel = w.input.channels * w.kernel[0] * w.kernel[1];
    // Hidden from the optimiser: with every shape constant (a generated model inlines the
    // kernel), LLVM unrolls the input-channel loop completely and runs out of registers.
    let in_channels = core::hint::black_box(w.input.channels);
    let full_blocks = w.output.channels / OUT_BLOCK;
    for block in 0..full_blocks {
        let oc0 = block * OUT_BLOCK;
        let weights = &packed_weights[oc0 * taps_per_channel..(oc0 + OUT_BLOCK) * taps_per_channel];
        let bias = &bias[oc0..oc0 + OUT_BLOCK];
        channel_block::<OUT_BLOCK, KH, KW, SW>(
            params,
            in_channels,
            input,
            weights,
            bias,
            oc0,
            output,
        );
    }
    for oc in full_blocks * OUT_BLOCK..w.output.channels {
        let weights = &packed_weights[oc * taps_per_channel..(oc + 1) * taps_per_channel];
        let bias = &bias[oc..oc + 1];
        channel_block::<1, KH, KW, SW>(params, in_channels, input, weights, bias, oc, output);
    }
}

/// Computes output channels `oc0 .. oc0 + OC` whose weights are `[ic][ky][kx][OC]`.
///
/// `SW` is the column stride when it is a compile-time constant (1 or 2: the input loads of
/// a tile then use immediate offsets), or 0 to read it from `params`.
#[inline(always)]
fn channel_block<const OC: usize, const KH: usize, const KW: usize, const SW: usize>(
    params: &Conv2dParams,
    in_channels: usize,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    oc0: usize,
    output: &mut [f32],
) {
    let w = &params.window;
    let (interior_lo, interior_hi) = w.interior_columns();
    let plane = w.output.plane();
    for oy in 0..w.output.height {
        let rows = w.valid_taps(0, oy);
        let row_start = oy * w.output.width;
        let out_w = w.output.width;
        if out_w < PIXEL_BLOCK {
            for ox in 0..out_w {
                // SAFETY: `edge_tile` checks every input column; the kernel rows are
                // clamped by `rows`; the slice lengths were checked in `conv2d`.
                let acc = unsafe {
                    edge_tile::<OC, 1, KH, KW, SW>(w, in_channels, input, weights, oy, rows, ox)
                };
                store(params, &acc, bias, output, (oc0, plane), row_start + ox);
            }
            continue;
        }
        // Tiles of 4 pixels across the row; the last one moves back to end at the row's
        // end, recomputing (identically) a few pixels rather than taking a slower path.
        let mut ox = 0;
        while ox < out_w {
            let start = ox.min(out_w - PIXEL_BLOCK);
            let acc = if start >= interior_lo && start + PIXEL_BLOCK <= interior_hi {
                // SAFETY: pixels start..start+4 are interior columns, so every kernel
                // column is inside the input; `rows` clamps the kernel rows; the slice
                // lengths were checked in `conv2d`.
                unsafe {
                    tile::<OC, PIXEL_BLOCK, KH, KW, SW>(
                        w,
                        in_channels,
                        input,
                        weights,
                        oy,
                        rows,
                        start,
                        (0, if KW == 0 { w.kernel[1] } else { KW }),
                    )
                }
            } else {
                // SAFETY: `edge_tile` checks every input column; rows are clamped;
                // the slice lengths were checked in `conv2d`.
                unsafe {
                    edge_tile::<OC, PIXEL_BLOCK, KH, KW, SW>(
                        w,
                        in_channels,
                        input,
                        weights,
                        oy,
                        rows,
                        start,
                    )
                }
            };
            store(params, &acc, bias, output, (oc0, plane), row_start + start);
            ox = start + PIXEL_BLOCK;
        }
    }
}

/// Writes `activation(acc + bias)` for `OC` channels x `PX` pixels starting at `pixel`.
#[inline(always)]
fn store<const OC: usize, const PX: usize>(
    params: &Conv2dParams,
    acc: &[[f32; PX]; OC],
    bias: &[f32],
    output: &mut [f32],
    (oc0, plane): (usize, usize),
    pixel: usize,
) {
    for (lane, acc_lane) in acc.iter().enumerate() {
        let start = (oc0 + lane) * plane + pixel;
        for (d, a) in output[start..start + PX].iter_mut().zip(acc_lane.iter()) {
            *d = params.activation.apply(*a + bias[lane]);
        }
    }
}

/// Like [`tile`], for pixels whose windows cross the left or right padding: every input
/// column is checked and padded taps read zero. It costs about one and a half times the
/// interior tile per MAC. Inlined into each layer: one out-of-line copy shared by the layers
/// of a firmware was specialised by LLVM for some of them only (its constant window), so a
/// layer's cost depended on the other layers. With a copy per layer it does not.
///
/// # Safety
/// `input` holds `w.input`, `weights` holds `[ic][kh][kw][OC]`, every kernel row in `rows`
/// lands inside the input for output row `oy`, `in_channels` is `w.input.channels` and `SW`
/// is 0 or `w.stride[1]`.
// SAFETY: unsafe because the caller must uphold the bounds listed under # Safety;
// inside, every pointer read relies on them.
#[inline(always)]
unsafe fn edge_tile<
    const OC: usize,
    const PX: usize,
    const KH: usize,
    const KW: usize,
    const SW: usize,
>(
    w: &Window,
    in_channels: usize,
    input: &[f32],
    weights: &[f32],
    oy: usize,
    rows: (usize, usize),
    ox: usize,
) -> [[f32; PX]; OC] {
    let kh = if KH == 0 { w.kernel[0] } else { KH };
    let kw = if KW == 0 { w.kernel[1] } else { KW };
    let sw = if SW == 0 { w.stride[1] } else { SW };
    let in_w = w.input.width;
    let in_plane = w.input.plane();
    let iy0 = (oy * w.stride[0]).wrapping_sub(w.padding[0]);
    // Input column of tap 0 of pixel 0; "negative" values wrap and fail the `< in_w` test.
    let ix0 = (ox * sw).wrapping_sub(w.padding[1]);
    // Kernel columns inside the input for all the tile's pixels take the unchecked path;
    // only the few others (next to the padding) check each pixel's column.
    let (safe_lo, safe_hi) = w.columns_valid_for_all(ox, PX, sw);
    let mut acc = [[0.0f32; PX]; OC];
    let inp = input.as_ptr();
    let wp = weights.as_ptr();
    for ic in 0..in_channels {
        for ky in rows.0..rows.1 {
            let row = ic * in_plane + iy0.wrapping_add(ky) * in_w;
            let w_row = ((ic * kh + ky) * kw) * OC;
            for kx in 0..kw {
                let mut xv = [0.0f32; PX];
                if kx >= safe_lo && kx < safe_hi {
                    for (p, v) in xv.iter_mut().enumerate() {
                        // SAFETY: kx is inside the input for every pixel of the tile
                        // (`columns_valid_for_all`), and the row by this function's contract.
                        *v = unsafe { *inp.add(row + ix0.wrapping_add(p * sw + kx)) };
                    }
                } else {
                    for (p, v) in xv.iter_mut().enumerate() {
                        let col = ix0.wrapping_add(p * sw + kx);
                        if col < in_w {
                            // SAFETY: `col` is a column of the input and the row is
                            // inside the input by this function's contract.
                            *v = unsafe { *inp.add(row + col) };
                        }
                    }
                }
                let mut wv = [0.0f32; OC];
                for (lane, v) in wv.iter_mut().enumerate() {
                    // SAFETY: `weights` holds `in_channels * kh * kw * OC` values.
                    *v = unsafe { *wp.add(w_row + kx * OC + lane) };
                }
                for lane in 0..OC {
                    for p in 0..PX {
                        acc[lane][p] = mac(acc[lane][p], wv[lane], xv[p]);
                    }
                }
            }
        }
    }
    acc
}

/// Sums the windows of `PX` neighbouring output pixels `(oy, ox..ox+PX)` for `OC` channels,
/// over kernel rows `rows` and kernel columns `cols` (half-open ranges).
///
/// # Safety
/// `input` holds `w.input`, `weights` holds `[ic][kh][kw][OC]`, and for every kernel row in
/// `rows`, column in `cols` and pixel `p < PX` the input coordinate
/// `(oy*sh + ky - ph, (ox+p)*sw + kx - pw)` lies inside the input; `in_channels` is
/// `w.input.channels` and `SW` is 0 or `w.stride[1]`.
// SAFETY: unsafe because the caller must uphold the bounds listed under # Safety;
// inside, every pointer read relies on them.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<
    const OC: usize,
    const PX: usize,
    const KH: usize,
    const KW: usize,
    const SW: usize,
>(
    w: &Window,
    in_channels: usize,
    input: &[f32],
    weights: &[f32],
    oy: usize,
    rows: (usize, usize),
    ox: usize,
    cols: (usize, usize),
) -> [[f32; PX]; OC] {
    let kh = if KH == 0 { w.kernel[0] } else { KH };
    let kw = if KW == 0 { w.kernel[1] } else { KW };
    let sh = w.stride[0];
    let sw = if SW == 0 { w.stride[1] } else { SW };
    let in_plane = w.input.plane();
    let in_w = w.input.width;
    // Input index of kernel tap (0, 0) for pixel 0; may be "negative" for padded taps, which
    // the clamped ranges never visit, so wrapping arithmetic keeps it in usize.
    let origin = (oy * sh)
        .wrapping_sub(w.padding[0])
        .wrapping_mul(in_w)
        .wrapping_add((ox * sw).wrapping_sub(w.padding[1]));
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    if OC == 4
        && PX == 4
        && KH == 3
        && KW == 3
        && (SW == 1 || SW == 2)
        && rows == (0, 3)
        && cols == (0, 3)
        && in_channels > 0
    {
        let mut sums = [0.0f32; 16];
        let tile_fn = if SW == 1 {
            super::arm::dnal_conv3x3_s1_tile4x4
        } else {
            super::arm::dnal_conv3x3_s2_tile4x4
        };
        // SAFETY: all three kernel rows and columns of the 4 pixels are inside the
        // input (this function's contract with full `rows` and `cols`), so `origin` is an
        // index into `input` and the assembly reads only inside it; `weights` holds the
        // `in_channels * 9 * 4` values it streams; `sums` has the 16 values it writes.
        unsafe {
            tile_fn(
                sums.as_mut_ptr(),
                weights.as_ptr(),
                input.as_ptr().add(origin),
                in_channels,
                in_w * 4,
                in_plane * 4,
            );
        }
        let mut acc = [[0.0f32; PX]; OC];
        for (lane, acc_lane) in acc.iter_mut().enumerate() {
            for (p, a) in acc_lane.iter_mut().enumerate() {
                *a = sums[lane * 4 + p];
            }
        }
        return acc;
    }
    let mut acc = [[0.0f32; PX]; OC];
    let inp = input.as_ptr();
    let wp = weights.as_ptr();
    for ic in 0..in_channels {
        let in_base = origin.wrapping_add(ic * in_plane);
        let w_base = ic * kh * kw;
        for ky in rows.0..rows.1 {
            let in_row = in_base.wrapping_add(ky * in_w);
            let w_row = (w_base + ky * kw) * OC;
            for kx in cols.0..cols.1 {
                // SAFETY: in bounds by this function's contract (see # Safety).
                unsafe {
                    let wk = wp.add(w_row + kx * OC);
                    let mut wv = [0.0f32; OC];
                    for (lane, v) in wv.iter_mut().enumerate() {
                        *v = *wk.add(lane);
                    }
                    let mut xv = [0.0f32; PX];
                    for (p, v) in xv.iter_mut().enumerate() {
                        *v = *inp.add(in_row.wrapping_add(kx + p * sw));
                    }
                    for lane in 0..OC {
                        for p in 0..PX {
                            acc[lane][p] = mac(acc[lane][p], wv[lane], xv[p]);
                        }
                    }
                }
            }
        }
    }
    acc
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::f32::test_util::{Rng, assert_close};
    use crate::{Activation, Shape3};
    use std::vec::Vec;

    /// Straightforward convolution on PyTorch-ordered weights, with groups.
    pub(crate) fn naive_conv(
        params: &Conv2dParams,
        groups: usize,
        input: &[f32],
        oihw: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let w = &params.window;
        let (ic_n, ih, iw) = (
            w.input.channels,
            w.input.height as isize,
            w.input.width as isize,
        );
        let (oc_n, oh, ow) = (w.output.channels, w.output.height, w.output.width);
        let [kh, kw] = w.kernel;
        let icg = ic_n / groups;
        let ocg = oc_n / groups;
        let mut out = vec![0.0; w.output.len()];
        for oc in 0..oc_n {
            let g = oc / ocg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[oc] as f64;
                    for i in 0..icg {
                        let ic = g * icg + i;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let y = (oy * w.stride[0] + ky) as isize - w.padding[0] as isize;
                                let x = (ox * w.stride[1] + kx) as isize - w.padding[1] as isize;
                                if y < 0 || x < 0 || y >= ih || x >= iw {
                                    continue;
                                }
                                let xi = (ic as isize * ih + y) * iw + x;
                                s += input[xi as usize] as f64
                                    * oihw[((oc * icg + i) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    out[(oc * oh + oy) * ow + ox] = params.activation.apply(s as f32);
                }
            }
        }
        out
    }

    fn check(
        input: Shape3,
        out_c: usize,
        k: [usize; 2],
        s: [usize; 2],
        p: [usize; 2],
        act: Activation,
        seed: u32,
    ) {
        let params = Conv2dParams::new(input, out_c, k, s, p, act).unwrap();
        let mut rng = Rng::new(seed);
        let x = rng.vec(input.len());
        let wt = rng.vec(params.dense_weight_len());
        let b = rng.vec(out_c);
        let mut packed = vec![0.0; wt.len()];
        pack_conv2d_weights(&params, &wt, &mut packed);
        let mut got = vec![f32::NAN; params.output().len()];
        conv2d(&params, &x, &packed, &b, &mut got);
        let want = naive_conv(&params, 1, &x, &wt, &b);
        if k == [3, 3] && s[1] == 1 {
            let mut fixed = vec![f32::NAN; got.len()];
            conv2d_fixed::<3, 3, 1>(&params, &x, &packed, &b, &mut fixed);
            assert_close(&fixed, &want, 1e-5, "conv2d_fixed 3x3 s1");
        }
        if k == [3, 3] && s[1] == 2 {
            let mut fixed = vec![f32::NAN; got.len()];
            conv2d_fixed::<3, 3, 2>(&params, &x, &packed, &b, &mut fixed);
            assert_close(&fixed, &want, 1e-5, "conv2d_fixed 3x3 s2");
        }
        assert_close(
            &got,
            &want,
            1e-5,
            &format!("conv {input} -> {out_c} k{k:?} s{s:?} p{p:?}"),
        );
    }

    #[test]
    fn matches_naive_reference_on_many_shapes() {
        let mut seed = 1;
        for &(c, h, w) in &[
            (1, 1, 1),
            (1, 5, 5),
            (3, 8, 8),
            (2, 7, 9),
            (5, 6, 11),
            (4, 3, 2),
        ] {
            for &oc in &[1, 3, 4, 5, 8, 9] {
                for &(k, s, p) in &[
                    ([1, 1], [1, 1], [0, 0]),
                    ([3, 3], [1, 1], [1, 1]),
                    ([3, 3], [2, 2], [1, 1]),
                    ([1, 3], [1, 2], [0, 1]),
                    ([5, 5], [1, 1], [2, 2]),
                    ([2, 2], [2, 1], [0, 0]),
                ] {
                    if Conv2dParams::new(Shape3::new(c, h, w), oc, k, s, p, Activation::None)
                        .is_err()
                    {
                        continue;
                    }
                    seed += 1;
                    check(Shape3::new(c, h, w), oc, k, s, p, Activation::None, seed);
                }
            }
        }
    }

    #[test]
    fn fused_activations() {
        for (i, act) in [Activation::Relu, Activation::Relu6]
            .into_iter()
            .enumerate()
        {
            check(
                Shape3::new(3, 6, 6),
                6,
                [3, 3],
                [1, 1],
                [1, 1],
                act,
                77 + i as u32,
            );
        }
    }

    #[test]
    fn kernel_as_large_as_padded_input() {
        // 1x1 image, 3x3 kernel, padding 1: one output pixel, only the centre tap is real.
        check(
            Shape3::new(2, 1, 1),
            5,
            [3, 3],
            [1, 1],
            [1, 1],
            Activation::None,
            9,
        );
        // Kernel wider than the image, fits only with padding: no interior column.
        check(
            Shape3::new(1, 2, 2),
            4,
            [3, 3],
            [1, 1],
            [1, 1],
            Activation::None,
            10,
        );
    }
}
