//! Depthwise 2-D convolution (`groups == channels`): each channel has its own `kh x kw` filter.
//!
//! Weights keep the export order `[channel][ky][kx]` (already streaming for this kernel). The
//! inner tile computes 8 neighbouring output pixels of a row: per tap one weight load and up
//! to 8 input loads for 8 multiply-accumulates; with the kernel size fixed at compile time
//! ([`depthwise_conv2d_fixed`]) and stride 1, neighbouring taps share their input loads.
//! Tiles whose windows cross the left or right padding check each input column instead.

use super::{channel_count, mac};
use crate::{Activation, Conv2dParams, Shape3, Window};

const PIXEL_BLOCK: usize = 8;
const HALF_BLOCK: usize = 4;

/// Depthwise convolution: `output[c] = activation(bias[c] + conv(input[c], weights[c]))`.
#[inline(always)]
pub fn depthwise_conv2d(
    params: &Conv2dParams,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    match params.window.stride[1] {
        1 => depthwise_impl::<0, 0, 1>(params, input, weights, bias, output),
        2 => depthwise_impl::<0, 0, 2>(params, input, weights, bias, output),
        _ => depthwise_impl::<0, 0, 0>(params, input, weights, bias, output),
    }
}

/// [`depthwise_conv2d`] compiled for one kernel size `KH x KW` and column stride `SW` (the
/// code generator calls this). Panics if `params` has another kernel size or stride.
#[inline(always)]
pub fn depthwise_conv2d_fixed<const KH: usize, const KW: usize, const SW: usize>(
    params: &Conv2dParams,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    let w = &params.window;
    assert!(
        w.kernel == [KH, KW] && w.stride[1] == SW,
        "depthwise_conv2d_fixed::<{KH}, {KW}, {SW}> called for kernel {:?} stride {:?}",
        w.kernel,
        w.stride
    );
    depthwise_impl::<KH, KW, SW>(params, input, weights, bias, output);
}

/// `KH`, `KW`, `SW`: kernel size and column stride when fixed at compile time, else 0.
#[inline(always)]
fn depthwise_impl<const KH: usize, const KW: usize, const SW: usize>(
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

    let taps = w.kernel[0] * w.kernel[1];
    let in_plane = w.input.plane();
    let out_plane = w.output.plane();
    for c in 0..channel_count(w.input.channels) {
        let x = &input[c * in_plane..(c + 1) * in_plane];
        let k = &weights[c * taps..(c + 1) * taps];
        let out = &mut output[c * out_plane..(c + 1) * out_plane];
        channel_any_width::<KH, KW, SW>(w, params.activation, x, k, bias[c], out);
    }
}

/// One channel, with the widest tile the output width allows.
#[inline(always)]
fn channel_any_width<const KH: usize, const KW: usize, const SW: usize>(
    w: &Window,
    activation: Activation,
    x: &[f32],
    k: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    // The channel's weights in registers for all its tiles: read from `k` in the tiles, the
    // optimiser loads every tap again for each tile (a MobileNetV2 ran 1.0% more
    // instructions on aarch64 and 1.9% more on the M7, with the weights as firmware keeps
    // them; 7% more in a 7x7 layer).
    let mut taps = [[0.0f32; KW]; KH];
    let k = if KH != 0 && KW != 0 {
        taps.as_flattened_mut().copy_from_slice(k);
        taps.as_flattened()
    } else {
        k
    };
    match w.output.width {
        n if n >= PIXEL_BLOCK => channel::<PIXEL_BLOCK, KH, KW, SW>(w, activation, x, k, bias, out),
        n if n >= HALF_BLOCK => channel::<HALF_BLOCK, KH, KW, SW>(w, activation, x, k, bias, out),
        _ => channel::<1, KH, KW, SW>(w, activation, x, k, bias, out),
    }
}

/// Scratch values [`depthwise_conv2d_padded`] needs: one zero-padded input plane, or none
/// when the convolution has no padding.
pub const fn depthwise_scratch_len(params: &Conv2dParams) -> usize {
    let w = &params.window;
    if w.padding[0] == 0 && w.padding[1] == 0 {
        0
    } else {
        (w.input.height + 2 * w.padding[0]) * (w.input.width + 2 * w.padding[1])
    }
}

/// [`depthwise_conv2d_fixed`] through a zero-padded copy of each input plane in `scratch`
/// ([`depthwise_scratch_len`] values; the code generator plans it in the arena): every tile
/// is then an interior one. Depthwise layers do only `kh * kw` MACs per output, so the
/// column checks of edge tiles would otherwise cost more than the copy (a load and a store
/// per input value).
#[inline(always)]
pub fn depthwise_conv2d_padded<const KH: usize, const KW: usize, const SW: usize>(
    params: &Conv2dParams,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    scratch: &mut [f32],
    output: &mut [f32],
) {
    let w = &params.window;
    let scratch_len = depthwise_scratch_len(params);
    if scratch_len == 0 {
        return depthwise_conv2d_fixed::<KH, KW, SW>(params, input, weights, bias, output);
    }
    assert!(
        w.kernel == [KH, KW] && w.stride[1] == SW,
        "depthwise_conv2d_padded::<{KH}, {KW}, {SW}> called for kernel {:?} stride {:?}",
        w.kernel,
        w.stride
    );
    assert_eq!(input.len(), w.input.len(), "depthwise input length");
    assert_eq!(
        weights.len(),
        params.depthwise_weight_len(),
        "depthwise weight length"
    );
    assert_eq!(bias.len(), w.output.channels, "depthwise bias length");
    assert_eq!(output.len(), w.output.len(), "depthwise output length");
    assert!(scratch.len() >= scratch_len, "depthwise scratch length");

    let [ph, pw] = w.padding;
    let padded = Shape3::new(1, w.input.height + 2 * ph, w.input.width + 2 * pw);
    // The same convolution over the padded plane, without padding.
    let inner = Window {
        input: padded,
        output: Shape3::new(1, w.output.height, w.output.width),
        kernel: w.kernel,
        stride: w.stride,
        padding: [0, 0],
    };
    let plane = &mut scratch[..scratch_len];
    // Only the interior is overwritten below, so the border stays zero for every channel.
    plane.fill(0.0);
    let taps = w.kernel[0] * w.kernel[1];
    let (in_plane, out_plane) = (w.input.plane(), w.output.plane());
    for c in 0..channel_count(w.input.channels) {
        let x = &input[c * in_plane..(c + 1) * in_plane];
        for (y, src) in x.chunks_exact(w.input.width).enumerate() {
            let start = (y + ph) * padded.width + pw;
            plane[start..start + w.input.width].copy_from_slice(src);
        }
        let k = &weights[c * taps..(c + 1) * taps];
        let out = &mut output[c * out_plane..(c + 1) * out_plane];
        channel_any_width::<KH, KW, SW>(&inner, params.activation, plane, k, bias[c], out);
    }
}

/// One channel, in tiles of `PX` pixels (`PX <= output width`); the last tile of a row moves
/// back to end at the row's end (a few pixels computed twice, identically).
#[inline(always)]
fn channel<const PX: usize, const KH: usize, const KW: usize, const SW: usize>(
    w: &Window,
    activation: Activation,
    x: &[f32],
    k: &[f32],
    bias: f32,
    out: &mut [f32],
) {
    let (interior_lo, interior_hi) = w.interior_columns();
    let out_w = w.output.width;
    for oy in 0..w.output.height {
        let rows = w.valid_taps(0, oy);
        let row = &mut out[oy * out_w..(oy + 1) * out_w];
        let mut ox = 0;
        while ox < out_w {
            let start = ox.min(out_w - PX);
            let acc = if start >= interior_lo && start + PX <= interior_hi {
                // SAFETY: interior columns (every kernel column inside the input),
                // rows clamped, slice lengths checked in `depthwise_impl`.
                unsafe { tile::<PX, KH, KW, SW>(w, x, k, oy, rows, start) }
            } else {
                // SAFETY: `edge_tile` checks every column; rows clamped; lengths checked.
                unsafe { edge_tile::<PX, KH, KW, SW>(w, x, k, oy, rows, start) }
            };
            for (d, a) in row[start..start + PX].iter_mut().zip(acc) {
                *d = activation.apply(a + bias);
            }
            ox = start + PX;
        }
    }
}

/// Sums the windows of output pixels `(oy, ox..ox+PX)` of one channel.
///
/// # Safety
/// `plane` is one input channel, `kernel` its `kh * kw` weights, every kernel row in `rows`
/// lands inside the plane for output row `oy`, every kernel column lands inside it for the
/// pixels `ox..ox+PX`, and `KH`, `KW`, `SW` are 0 or equal to the window's.
// SAFETY: unsafe because the caller must uphold the bounds listed under # Safety;
// inside, every pointer read relies on them.
#[inline(always)]
unsafe fn tile<const PX: usize, const KH: usize, const KW: usize, const SW: usize>(
    w: &Window,
    plane: &[f32],
    kernel: &[f32],
    oy: usize,
    rows: (usize, usize),
    ox: usize,
) -> [f32; PX] {
    let _ = KH;
    let kw = if KW == 0 { w.kernel[1] } else { KW };
    let sw = if SW == 0 { w.stride[1] } else { SW };
    let in_w = w.input.width;
    let origin = (oy * w.stride[0])
        .wrapping_sub(w.padding[0])
        .wrapping_mul(in_w)
        .wrapping_add((ox * sw).wrapping_sub(w.padding[1]));
    let mut acc = [0.0f32; PX];
    let xp = plane.as_ptr();
    let kp = kernel.as_ptr();
    for ky in rows.0..rows.1 {
        let in_row = origin.wrapping_add(ky * in_w);
        for kx in 0..kw {
            // SAFETY: in bounds by this function's contract (see # Safety).
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

/// Like [`tile`] for pixels whose windows cross the left or right padding: each input column
/// is checked and padded taps read zero. Inlined into each layer, as conv2d's edge tile is,
/// so that a layer's code does not depend on the other layers of a firmware.
///
/// # Safety
/// As [`tile`], except that the kernel columns may fall outside the plane.
// SAFETY: unsafe because the caller must uphold the bounds listed under # Safety;
// inside, every pointer read relies on them.
#[inline(always)]
unsafe fn edge_tile<const PX: usize, const KH: usize, const KW: usize, const SW: usize>(
    w: &Window,
    plane: &[f32],
    kernel: &[f32],
    oy: usize,
    rows: (usize, usize),
    ox: usize,
) -> [f32; PX] {
    let _ = KH;
    let kw = if KW == 0 { w.kernel[1] } else { KW };
    let sw = if SW == 0 { w.stride[1] } else { SW };
    let in_w = w.input.width;
    let iy0 = (oy * w.stride[0]).wrapping_sub(w.padding[0]);
    let ix0 = (ox * sw).wrapping_sub(w.padding[1]);
    // Kernel columns inside the input for every pixel take the unchecked path.
    let (safe_lo, safe_hi) = w.columns_valid_for_all(ox, PX, sw);
    let mut acc = [0.0f32; PX];
    let xp = plane.as_ptr();
    for ky in rows.0..rows.1 {
        let row = iy0.wrapping_add(ky) * in_w;
        for kx in 0..kw {
            let wv = kernel[ky * kw + kx];
            if kx >= safe_lo && kx < safe_hi {
                for (p, a) in acc.iter_mut().enumerate() {
                    // SAFETY: kx is inside the plane for every pixel of the tile
                    // (`columns_valid_for_all`), and the row by this function's contract.
                    *a = mac(*a, wv, unsafe {
                        *xp.add(row + ix0.wrapping_add(p * sw + kx))
                    });
                }
            } else {
                for (p, a) in acc.iter_mut().enumerate() {
                    // "Negative" columns wrap around and fail the test too.
                    let col = ix0.wrapping_add(p * sw + kx);
                    if col < in_w {
                        // SAFETY: `col` is a column of the plane and the row is inside
                        // it by this function's contract.
                        *a = mac(*a, wv, unsafe { *xp.add(row + col) });
                    }
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::f32::conv2d::tests::naive_conv;
    use crate::f32::test_util::{Rng, assert_close};
    use crate::{Activation, Shape3};

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
                    if k == [3, 3] && s[1] == 1 {
                        let mut fixed = vec![f32::NAN; got.len()];
                        depthwise_conv2d_fixed::<3, 3, 1>(&params, &x, &wt, &b, &mut fixed);
                        assert_close(&fixed, &want, 1e-5, "depthwise_conv2d_fixed");
                        let mut scratch = vec![f32::NAN; depthwise_scratch_len(&params)];
                        let mut padded = vec![f32::NAN; got.len()];
                        depthwise_conv2d_padded::<3, 3, 1>(
                            &params,
                            &x,
                            &wt,
                            &b,
                            &mut scratch,
                            &mut padded,
                        );
                        assert_close(&padded, &want, 1e-5, "depthwise_conv2d_padded");
                    }
                    if k == [3, 3] && s[1] == 2 {
                        let mut scratch = vec![f32::NAN; depthwise_scratch_len(&params)];
                        let mut padded = vec![f32::NAN; got.len()];
                        depthwise_conv2d_padded::<3, 3, 2>(
                            &params,
                            &x,
                            &wt,
                            &b,
                            &mut scratch,
                            &mut padded,
                        );
                        assert_close(&padded, &want, 1e-5, "depthwise_conv2d_padded s2");
                    }
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
