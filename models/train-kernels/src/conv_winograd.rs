//! A 3x3 convolution with stride 1 and padding 1 by Winograd's minimal filtering F(2x2, 3x3),
//! in all three directions of training.
//!
//! Each 2x2 block of outputs (a tile) comes from the 4x4 block of inputs around it:
//! `Y = A^T [sum over c of U_c ⊙ V_c] A` with `V = B^T d B` (input block), `U = G g G^T`
//! (3x3 kernel). For each of the 16 elements `ξ` of the 4x4 transform domain the sum over input
//! channels is a gemm, 16 multiply-adds per tile and channel pair instead of direct
//! convolution's 36 (2.25x fewer):
//!
//! - forward: `M_ξ[O, T] = U_ξ[O, C] * V_ξ[C, T]`, then `Y = A^T M A` per tile
//!
//! The gradients are the exact adjoints of those linear steps (the same arithmetic as
//! backpropagating through them):
//!
//! - input gradient: `dM = A dY A^T` per tile, `dV_ξ[C, T] = U_ξ^T * dM_ξ`, and `B dV B^T`
//!   added into the input gradient (neighbouring input blocks overlap by two)
//! - weight gradient: `dU_ξ[O, C] = sum over tiles of dM_ξ[O, T] * V_ξ[C, T]^T`, then
//!   `dW = G^T dU G`
//!
//! where `T` counts the tiles of a group of images. The transforms are cheap next to the
//! gemms when the layer has many channels and few positions (the deep layers of VGG16); with
//! few channels they are not, and [`pays_off`] keeps those layers on im2col
//! ([`crate::conv_gemm`]). Tensors are contiguous NCHW `f32` slices.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::conv_gemm::{ConvGeometry, Gemm, sum_over_batch_shares};
use crate::kernel_buffers::{Unwritten, with_scratch};

/// Elements of the transform domain: one 4x4 block.
const XI: usize = 16;

/// The fewest tiles worth one group's 16 gemms: narrower layers put several images together.
pub const MIN_GEMM_TILES: usize = 128;

/// Whether `g` is a convolution this module computes: 3x3 kernel, stride 1, padding 1, no
/// dilation.
pub fn supports(g: &ConvGeometry) -> bool {
    g.kh == 3
        && g.kw == 3
        && g.stride == [1, 1]
        && g.padding == [1, 1]
        && g.dilation == [1, 1]
        && g.in_h > 0
        && g.in_w > 0
}

/// Whether Winograd is faster than im2col for `g` on the CPU (forward and both gradients
/// together; `examples/conv_strategies.rs`, BENCHMARKS.md, "Winograd against im2col, per
/// layer"): a supported geometry
/// whose transforms cost little next to its gemms: at least 64 channels on both sides, and
/// 128 or planes of at least 16x16 (the transforms work a row of tiles at a time: short rows
/// and few channels leave them overhead-bound; vgg-small's 64-channel 14x14 layer broke
/// even); planes of at least 4x4 (on 2x2 the gradients' gemms are too narrow) and of even
/// size (an odd plane's last row and column of tiles are half wasted: vgg-small's 7x7 layer
/// ran slower).
pub fn pays_off(g: &ConvGeometry) -> bool {
    let (c, o) = (g.in_channels, g.out_channels);
    let wide = c >= 128 && o >= 128;
    let large = c >= 64 && o >= 64 && g.out_h >= 16 && g.out_w >= 16;
    supports(g)
        && (wide || large)
        && g.out_h >= 4
        && g.out_w >= 4
        && g.out_h.is_multiple_of(2)
        && g.out_w.is_multiple_of(2)
}

/// `B v` along one axis: the adjoint of `B^T d` (written out in [`transform_inputs`]).
#[inline(always)]
fn input_adjoint_1d(v: [f32; 4]) -> [f32; 4] {
    [v[0], v[1] - v[2] + v[3], v[1] + v[2] - v[0], -v[3]]
}

/// `G g` along one axis.
#[inline(always)]
fn kernel_1d(g: [f32; 3]) -> [f32; 4] {
    let (sum_even, odd) = (0.5 * (g[0] + g[2]), 0.5 * g[1]);
    [g[0], sum_even + odd, sum_even - odd, g[2]]
}

/// `G^T u` along one axis: the adjoint of [`kernel_1d`].
#[inline(always)]
fn kernel_adjoint_1d(u: [f32; 4]) -> [f32; 3] {
    let (sum, diff) = (0.5 * (u[1] + u[2]), 0.5 * (u[1] - u[2]));
    [u[0] + sum, diff, sum + u[3]]
}

/// `A^T m` along one axis (its adjoint `A y` is written out in [`transform_output_grads`]).
#[inline(always)]
fn output_1d(m: [f32; 4]) -> [f32; 2] {
    [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
}

/// A separable 2-D transform: `f` along each row of `block`, then along each column of the
/// result; the result is row-major, `R` rows of `R` values.
#[inline(always)]
fn transform_2d<const N: usize, const R: usize>(
    block: [[f32; N]; N],
    f: impl Fn([f32; N]) -> [f32; R],
) -> [[f32; R]; R] {
    let rows = block.map(&f);
    let mut out = [[0.0; R]; R];
    for j in 0..R {
        let column = f(std::array::from_fn(|i| rows[i][j]));
        for i in 0..R {
            out[i][j] = column[i];
        }
    }
    out
}

/// Tiles of one image: `(rows, columns)` of 2x2 output blocks (the last ones partly outside
/// an odd-sized output).
fn tile_grid(g: &ConvGeometry) -> (usize, usize) {
    (g.out_h.div_ceil(2), g.out_w.div_ceil(2))
}

/// Images per group: enough for [`MIN_GEMM_TILES`] tiles, at least one, no more than an even
/// share of the batch per thread.
fn group(g: &ConvGeometry) -> usize {
    let (th, tw) = tile_grid(g);
    let wanted = MIN_GEMM_TILES.div_ceil(th * tw);
    let share = g.batch.div_ceil(rayon::current_num_threads().max(1));
    wanted.min(share).max(1)
}

/// Rows the transforms work in (one set per call): `count` rows of `len` floats.
struct Rows {
    values: Vec<f32>,
    len: usize,
}

impl Rows {
    fn new(count: usize, len: usize) -> Self {
        Self {
            values: vec![0.0; count * len],
            len,
        }
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.len..][..self.len]
    }

    fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.values[i * self.len..][..self.len]
    }

    fn pair_mut(&mut self, i: usize) -> (&mut [f32], &mut [f32]) {
        self.values[2 * i * self.len..][..2 * self.len].split_at_mut(self.len)
    }
}

/// `out[t] = f(a[t], b[t])` over the shortest of the three.
#[inline(always)]
fn combine(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for (o, (&x, &y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(x, y);
    }
}

/// Splits the rows of `plane` `[h, w]` into even and odd columns, shifted by `pad` (0 or 1)
/// rows and columns: `split[2r]` (even) and `split[2r + 1]` (odd) hold columns `2t - pad`
/// and `2t + 1 - pad` of row `r - pad`, zero outside the plane. With `pad` 1 that is the
/// plane padded by one value on every side, as the input blocks read it. `split` has
/// `2 * rows` rows of `len`.
fn deinterleave(plane: &[f32], w: usize, pad: usize, split: &mut [f32], len: usize) {
    split.fill(0.0);
    for (y, row) in plane.chunks_exact(w).enumerate() {
        let (even, odd) = split[2 * (y + pad) * len..][..2 * len].split_at_mut(len);
        // Column x lands on padded column x + pad: even columns of the row go to `odd` when
        // padded, and the odd ones to `even`, one further on.
        let (first, second) = if pad == 0 {
            (even, odd)
        } else {
            (odd, &mut even[1..])
        };
        let pairs = row.chunks_exact(2);
        if let [last] = pairs.remainder() {
            first[w / 2] = *last;
        }
        for (t, pair) in pairs.enumerate() {
            first[t] = pair[0];
            second[t] = pair[1];
        }
    }
}

/// `V[ξ][c][t] = (B^T d B)[ξ]` for every input block of the `images` of a group (`t` = image
/// * tiles per image + tile), `V` being `[16, C, tiles]`.
///
/// Works on planes split into even and odd columns, a row of tiles at a time, so that every
/// loop runs over consecutive tiles with unit stride (and vectorises). Each element of `B^T d`
/// combines two values, written out below.
fn transform_inputs(images: &[f32], g: &ConvGeometry, v: &mut [f32], tiles: usize) {
    let (th, tw) = tile_grid(g);
    let (h, w, c_count) = (g.in_h, g.in_w, g.in_channels);
    // A block reaches one column past its tile: tw + 1 even and odd columns; the blocks of
    // tile row ty cover padded rows 2 ty .. 2 ty + 4.
    let len = tw + 1;
    let mut padded = vec![0.0; 2 * (2 * th + 2) * len];
    let mut along_y = vec![0.0; 8 * len];
    let count = images.len() / g.image_len();
    // Channel-major, so that the group's tiles of one channel (consecutive in `V`) are written
    // one after the other: image-major order wrote each cache line of `V` piecewise, a few
    // floats at a time, after it had left the cache (much slower on 4x4 planes; BENCHMARKS.md,
    // "Winograd against im2col, per layer").
    for c in 0..c_count {
        for n in 0..count {
            let plane = &images[n * g.image_len() + c * h * w..][..h * w];
            deinterleave(plane, w, 1, &mut padded, len);
            for ty in 0..th {
                let row = |k: usize, odd: usize| &padded[(2 * (2 * ty + k) + odd) * len..][..len];
                // Along y, for the even and the odd columns: B^T over the block's four rows.
                for odd in 0..2 {
                    let [d0, d1, d2, d3] = std::array::from_fn(|k| row(k, odd));
                    let mut out = along_y.chunks_exact_mut(len).skip(odd).step_by(2);
                    combine(out.next().unwrap(), d0, d2, |a, b| a - b);
                    combine(out.next().unwrap(), d1, d2, |a, b| a + b);
                    combine(out.next().unwrap(), d2, d1, |a, b| a - b);
                    combine(out.next().unwrap(), d1, d3, |a, b| a - b);
                }
                // Along x: a tile's columns are even[t], odd[t], even[t + 1], odd[t + 1].
                let start = n * th * tw + ty * tw;
                for i in 0..4 {
                    let even = &along_y[2 * i * len..][..len];
                    let odd = &along_y[(2 * i + 1) * len..][..len];
                    let at = |j: usize| ((i * 4 + j) * c_count + c) * tiles + start;
                    combine(&mut v[at(0)..][..tw], even, &even[1..], |a, b| a - b);
                    combine(&mut v[at(1)..][..tw], odd, &even[1..], |a, b| a + b);
                    combine(&mut v[at(2)..][..tw], &even[1..], odd, |a, b| a - b);
                    combine(&mut v[at(3)..][..tw], odd, &odd[1..], |a, b| a - b);
                }
            }
        }
    }
}

/// `dM[ξ][o][t] = (A dY A^T)[ξ]` for every output tile of the group's output gradients
/// `grads` (`[count, O, out_h, out_w]`), `dM` being `[16, O, tiles]`; outputs outside an
/// odd-sized plane count as zero. Works as [`transform_inputs`] does; each element of
/// `A dY` is written out below.
fn transform_output_grads(grads: &[f32], g: &ConvGeometry, dm: &mut [f32], tiles: usize) {
    let (th, tw) = tile_grid(g);
    let (h, w, o_count) = (g.out_h, g.out_w, g.out_channels);
    let mut split = vec![0.0; 2 * (2 * th) * tw];
    let mut along_y = vec![0.0; 8 * tw];
    let count = grads.len() / g.output_len();
    // Channel-major, as in `transform_inputs`.
    for o in 0..o_count {
        for n in 0..count {
            let plane = &grads[n * g.output_len() + o * h * w..][..h * w];
            deinterleave(plane, w, 0, &mut split, tw);
            for ty in 0..th {
                let row = |a: usize, odd: usize| &split[(2 * (2 * ty + a) + odd) * tw..][..tw];
                for odd in 0..2 {
                    let (y0, y1) = (row(0, odd), row(1, odd));
                    let mut out = along_y.chunks_exact_mut(tw).skip(odd).step_by(2);
                    out.next().unwrap().copy_from_slice(y0);
                    combine(out.next().unwrap(), y0, y1, |a, b| a + b);
                    combine(out.next().unwrap(), y0, y1, |a, b| a - b);
                    combine(out.next().unwrap(), y0, y1, |_, b| -b);
                }
                let start = n * th * tw + ty * tw;
                for i in 0..4 {
                    let even = &along_y[2 * i * tw..][..tw];
                    let odd = &along_y[(2 * i + 1) * tw..][..tw];
                    let at = |j: usize| ((i * 4 + j) * o_count + o) * tiles + start;
                    dm[at(0)..][..tw].copy_from_slice(even);
                    combine(&mut dm[at(1)..][..tw], even, odd, |a, b| a + b);
                    combine(&mut dm[at(2)..][..tw], even, odd, |a, b| a - b);
                    combine(&mut dm[at(3)..][..tw], even, odd, |_, b| -b);
                }
            }
        }
    }
}

/// The group's outputs `[count, O, out_h, out_w]` from `M` `[16, O, tiles]`: `A^T M A` per
/// tile. Every output slot is written once.
fn inverse_outputs(m: &[f32], g: &ConvGeometry, out: &mut [MaybeUninit<f32>], tiles: usize) {
    let (th, tw) = tile_grid(g);
    let (h, w, o_count) = (g.out_h, g.out_w, g.out_channels);
    // Rows 2i, 2i + 1: row i of the blocks, reduced along x to the even and odd output
    // columns; rows 8-11: the two output rows, even and odd columns.
    let mut rows = Rows::new(12, tw);
    let count = out.len() / g.output_len();
    // Channel-major, so that `M` is read in order (as in `transform_inputs`).
    for o in 0..o_count {
        for n in 0..count {
            let plane = &mut out[n * g.output_len() + o * h * w..][..h * w];
            for ty in 0..th {
                let start = n * th * tw + ty * tw;
                for i in 0..4 {
                    let src: [&[f32]; 4] = std::array::from_fn(|j| {
                        &m[((i * 4 + j) * o_count + o) * tiles + start..][..tw]
                    });
                    let (even, odd) = rows.pair_mut(i);
                    for t in 0..tw {
                        [even[t], odd[t]] = output_1d([src[0][t], src[1][t], src[2][t], src[3][t]]);
                    }
                }
                for p in 0..2 * tw {
                    let (column, t) = (p % 2, p / 2);
                    let block_column = std::array::from_fn(|i| rows.row(2 * i + column)[t]);
                    let [first, second] = output_1d(block_column);
                    rows.row_mut(8 + column)[t] = first;
                    rows.row_mut(10 + column)[t] = second;
                }
                for a in 0..2 {
                    let y = 2 * ty + a;
                    if y >= h {
                        continue;
                    }
                    let (even, odd) = (rows.row(8 + 2 * a), rows.row(9 + 2 * a));
                    for (x, slot) in plane[y * w..][..w].iter_mut().enumerate() {
                        slot.write(if x % 2 == 0 { even[x / 2] } else { odd[x / 2] });
                    }
                }
            }
        }
    }
}

/// `dst[a][t] += (B v)[a]` with `v = [r[0][t], .., r[3][t]]`: four rows at once.
fn add_adjoint_rows(dst: [&mut [f32]; 4], r: [&[f32]; 4]) {
    let [d0, d1, d2, d3] = dst;
    let len = d0.len();
    let (d1, d2, d3) = (&mut d1[..len], &mut d2[..len], &mut d3[..len]);
    let (r0, r1, r2, r3) = (&r[0][..len], &r[1][..len], &r[2][..len], &r[3][..len]);
    for t in 0..len {
        let [a, b, c, d] = input_adjoint_1d([r0[t], r1[t], r2[t], r3[t]]);
        d0[t] += a;
        d1[t] += b;
        d2[t] += c;
        d3[t] += d;
    }
}

/// The group's input gradients `[count, C, H, W]` (every slot written) from `dV`
/// `[16, C, tiles]`: the sum of `B dV B^T` over the blocks that cover each input; what falls
/// on the padding is dropped.
fn input_grads_from(dv: &[f32], g: &ConvGeometry, dx: &mut [MaybeUninit<f32>], tiles: usize) {
    let (th, tw) = tile_grid(g);
    let (h, w, c_count) = (g.in_h, g.in_w, g.in_channels);
    let len = tw + 1;
    // Rows 2i, 2i + 1: row i of the blocks spread along x onto even and odd padded columns;
    // then the padded plane's rows (2 th + 2 of them, even and odd columns) the blocks add
    // into.
    let plane_rows = 2 * th + 2;
    let mut rows = Rows::new(8 + 2 * plane_rows, len);
    let count = dx.len() / g.image_len();
    // Channel-major, so that `dV` is read in order (as in `transform_inputs`).
    for c in 0..c_count {
        for n in 0..count {
            let plane = &mut dx[n * g.image_len() + c * h * w..][..h * w];
            rows.values[8 * len..].fill(0.0);
            for ty in 0..th {
                let start = n * th * tw + ty * tw;
                for i in 0..4 {
                    let src: [&[f32]; 4] = std::array::from_fn(|j| {
                        &dv[((i * 4 + j) * c_count + c) * tiles + start..][..tw]
                    });
                    let (even, odd) = rows.pair_mut(i);
                    even[tw] = 0.0;
                    odd[tw] = 0.0;
                    // A tile's columns are even[t], odd[t], even[t + 1], odd[t + 1]: the first
                    // two are set by tile t, the last two added by it onto tile t + 1's.
                    for t in 0..tw {
                        let [d0, d1, ..] =
                            input_adjoint_1d([src[0][t], src[1][t], src[2][t], src[3][t]]);
                        even[t] = d0;
                        odd[t] = d1;
                    }
                    for t in 0..tw {
                        let [.., d2, d3] =
                            input_adjoint_1d([src[0][t], src[1][t], src[2][t], src[3][t]]);
                        even[t + 1] += d2;
                        odd[t + 1] += d3;
                    }
                }
                // Along y: the block's rows land on padded rows 2 ty .. 2 ty + 4.
                let (spread, padded) = rows.values.split_at_mut(8 * len);
                let block_rows = &mut padded[2 * (2 * ty) * len..][..8 * len];
                for column in 0..2 {
                    let r: [&[f32]; 4] =
                        std::array::from_fn(|i| &spread[(2 * i + column) * len..][..len]);
                    let mut dst = block_rows.chunks_exact_mut(len).skip(column).step_by(2);
                    let [d0, d1, d2, d3] = std::array::from_fn(|_| dst.next().unwrap());
                    add_adjoint_rows([d0, d1, d2, d3], r);
                }
            }
            // Input (y, x) is padded (y + 1, x + 1): odd column x + 1 = 2t + 1 for even x, even
            // column 2t + 2 for odd x.
            for (y, row) in plane.chunks_mut(w).enumerate() {
                let (even, odd) = (rows.row(8 + 2 * (y + 1)), rows.row(9 + 2 * (y + 1)));
                for (x, slot) in row.iter_mut().enumerate() {
                    slot.write(if x % 2 == 0 {
                        odd[x / 2]
                    } else {
                        even[x / 2 + 1]
                    });
                }
            }
        }
    }
}

/// `U = G g G^T` of every kernel of `weight` `[O, C, 3, 3]`, laid out `[O, 16, C]` (so that
/// each output channel's rows are written by one thread); `U_ξ` is then the `[O, C]` matrix
/// at offset `ξ * C` with row stride `16 * C`.
fn transform_weights(weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let c_count = g.in_channels;
    let mut u = Unwritten::new(g.out_channels * XI * c_count);
    u.slots()
        .par_chunks_mut(XI * c_count)
        .zip(weight.par_chunks(c_count * 9))
        .for_each(|(rows, kernels)| {
            for (c, k) in kernels.chunks(9).enumerate() {
                let kernel: [[f32; 3]; 3] =
                    std::array::from_fn(|a| [k[3 * a], k[3 * a + 1], k[3 * a + 2]]);
                let block = transform_2d(kernel, kernel_1d);
                for (xi, value) in block.as_flattened().iter().enumerate() {
                    rows[xi * c_count + c].write(*value);
                }
            }
        });
    // SAFETY: each output channel's chunk holds 16 * C slots and the loop wrote every
    // (ξ, c) pair of it.
    unsafe { u.assume_written() }
}

/// The weight gradient `[O, C, 3, 3]` from `dU` `[16, O, C]`: `G^T dU G` per kernel.
fn weight_grad_from(du: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (o_count, c_count) = (g.out_channels, g.in_channels);
    let mut dw = vec![0.0; o_count * c_count * 9];
    dw.par_chunks_mut(c_count * 9)
        .enumerate()
        .for_each(|(o, kernels)| {
            for (c, k) in kernels.chunks_mut(9).enumerate() {
                let block: [[f32; 4]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| du[((i * 4 + j) * o_count + o) * c_count + c])
                });
                let kernel = transform_2d(block, kernel_adjoint_1d);
                k.copy_from_slice(kernel.as_flattened());
            }
        });
    dw
}

/// The forward convolution: `input` `[N, C, H, W]`, `weight` `[O, C, 3, 3]`; returns
/// `[N, O, H, W]`. `g` must be [`supports`]ed.
pub fn conv2d_forward(input: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    assert!(
        supports(g),
        "conv_winograd: not a 3x3/1 same convolution: {g:?}"
    );
    g.check_input(input, "conv2d_forward");
    g.check_weight(weight, "conv2d_forward");
    let (th, tw) = tile_grid(g);
    let (c, o) = (g.in_channels, g.out_channels);
    let u = transform_weights(weight, g);
    let mut output = Unwritten::new(g.batch * g.output_len());
    output
        .slots()
        .par_chunks_mut(group(g) * g.output_len())
        .zip(input.par_chunks(group(g) * g.image_len()))
        .for_each(|(out, images)| {
            let tiles = images.len() / g.image_len() * th * tw;
            with_scratch(XI * (c + o) * tiles, |scratch| {
                let (v, m) = scratch.split_at_mut(XI * c * tiles);
                transform_inputs(images, g, v, tiles);
                for xi in 0..XI {
                    // M_ξ[O, T] = U_ξ[O, C] * V_ξ[C, T]
                    Gemm {
                        m: o,
                        n: tiles,
                        k: c,
                        lhs: &u[xi * c..],
                        lhs_strides: [XI * c, 1],
                        rhs: &v[xi * c * tiles..][..c * tiles],
                        rhs_strides: [tiles, 1],
                    }
                    .store(&mut m[xi * o * tiles..][..o * tiles], false);
                }
                inverse_outputs(m, g, out, tiles);
            });
        });
    // SAFETY: the chunks cover the output and `inverse_outputs` wrote every slot of
    // each (every output lies in exactly one tile).
    unsafe { output.assume_written() }
}

/// The input gradient: `output_grad` `[N, O, H, W]` and `weight` `[O, C, 3, 3]`; returns
/// `[N, C, H, W]`. `g` must be [`supports`]ed.
pub fn conv2d_input_grad(output_grad: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    assert!(
        supports(g),
        "conv_winograd: not a 3x3/1 same convolution: {g:?}"
    );
    g.check_output_grad(output_grad, "conv2d_input_grad");
    g.check_weight(weight, "conv2d_input_grad");
    let (th, tw) = tile_grid(g);
    let (c, o) = (g.in_channels, g.out_channels);
    let u = transform_weights(weight, g);
    let mut input_grad = Unwritten::new(g.batch * g.image_len());
    input_grad
        .slots()
        .par_chunks_mut(group(g) * g.image_len())
        .zip(output_grad.par_chunks(group(g) * g.output_len()))
        .for_each(|(images, grads)| {
            let tiles = images.len() / g.image_len() * th * tw;
            with_scratch(XI * (c + o) * tiles, |scratch| {
                let (dv, dm) = scratch.split_at_mut(XI * c * tiles);
                transform_output_grads(grads, g, dm, tiles);
                for xi in 0..XI {
                    // dV_ξ[C, T] = U_ξ[O, C]^T * dM_ξ[O, T]
                    Gemm {
                        m: c,
                        n: tiles,
                        k: o,
                        lhs: &u[xi * c..],
                        lhs_strides: [1, XI * c],
                        rhs: &dm[xi * o * tiles..][..o * tiles],
                        rhs_strides: [tiles, 1],
                    }
                    .store(&mut dv[xi * c * tiles..][..c * tiles], false);
                }
                input_grads_from(dv, g, images, tiles);
            });
        });
    // SAFETY: the chunks cover the gradient and `input_grads_from` wrote every slot of
    // each.
    unsafe { input_grad.assume_written() }
}

/// The weight gradient: `input` `[N, C, H, W]` and `output_grad` `[N, O, H, W]`; returns
/// `[O, C, 3, 3]`. `g` must be [`supports`]ed.
pub fn conv2d_weight_grad(input: &[f32], output_grad: &[f32], g: &ConvGeometry) -> Vec<f32> {
    assert!(
        supports(g),
        "conv_winograd: not a 3x3/1 same convolution: {g:?}"
    );
    g.check_input(input, "conv2d_weight_grad");
    g.check_output_grad(output_grad, "conv2d_weight_grad");
    let (th, tw) = tile_grid(g);
    let (c, o, group) = (g.in_channels, g.out_channels, group(g));
    let du_len = XI * o * c;
    let du = sum_over_batch_shares(g.batch, du_len, |images, du| {
        with_scratch(XI * (c + o) * group * th * tw, |scratch| {
            for first in images.clone().step_by(group) {
                let count = group.min(images.end - first);
                let tiles = count * th * tw;
                let (v, dm) = scratch.split_at_mut(XI * c * tiles);
                let x = &input[first * g.image_len()..][..count * g.image_len()];
                let dy = &output_grad[first * g.output_len()..][..count * g.output_len()];
                transform_inputs(x, g, v, tiles);
                transform_output_grads(dy, g, dm, tiles);
                for xi in 0..XI {
                    // dU_ξ[O, C] += dM_ξ[O, T] * V_ξ[C, T]^T
                    Gemm {
                        m: o,
                        n: c,
                        k: tiles,
                        lhs: &dm[xi * o * tiles..][..o * tiles],
                        lhs_strides: [tiles, 1],
                        rhs: &v[xi * c * tiles..][..c * tiles],
                        rhs_strides: [1, tiles],
                    }
                    .store(&mut du[xi * o * c..][..o * c], true);
                }
            }
        });
    });
    weight_grad_from(&du, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_gemm;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale
    }

    /// The three directions equal im2col's (which the conv_gemm tests check against the
    /// definition) on even and odd planes, one-tile planes, batches that do and do not fill
    /// the groups, and channel counts that are not powers of two.
    #[test]
    fn matches_im2col_in_all_directions() {
        for (batch, c, o, h, w) in [
            (3, 5, 7, 6, 6),
            (2, 3, 4, 7, 5),
            (5, 16, 8, 2, 2),
            (1, 2, 3, 1, 1),
            (4, 9, 11, 3, 8),
            (70, 4, 6, 4, 4),
        ] {
            let g = ConvGeometry::new([batch, c, h, w], [o, c, 3, 3], [1, 1], [1, 1], [1, 1]);
            assert!(supports(&g));
            let x = random(batch * c * h * w, 1);
            let wt = random(o * c * 9, 2);
            let dy = random(batch * o * h * w, 3);
            let case = format!("batch {batch}, {c} -> {o}, {h}x{w}");
            let y = conv2d_forward(&x, &wt, &g);
            let y_ref = conv_gemm::conv2d_forward(&x, &wt, None, &g);
            assert!(max_rel_diff(&y, &y_ref) < 1e-5, "forward, {case}");
            let dx = conv2d_input_grad(&dy, &wt, &g);
            let dx_ref = conv_gemm::conv2d_input_grad(&dy, &wt, &g);
            assert!(max_rel_diff(&dx, &dx_ref) < 1e-5, "input grad, {case}");
            let dw = conv2d_weight_grad(&x, &dy, &g);
            let dw_ref = conv_gemm::conv2d_weight_grad(&x, &dy, &g);
            assert!(max_rel_diff(&dw, &dw_ref) < 1e-5, "weight grad, {case}");
        }
    }

    /// `B^T d` along one axis.
    fn input_1d(d: [f32; 4]) -> [f32; 4] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    }

    /// `A y` along one axis: the adjoint of [`output_1d`].
    fn output_adjoint_1d(y: [f32; 2]) -> [f32; 4] {
        [y[0], y[0] + y[1], y[0] - y[1], -y[1]]
    }

    /// Each 1-D adjoint is the transpose of its transform: <f(a), b> = <a, f*(b)>.
    #[test]
    fn adjoints_are_transposes() {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let (a4, b4) = ([0.3, -1.2, 2.0, 0.7], [1.1, 0.4, -0.9, 2.5]);
        let (a3, a2) = ([0.5, -0.25, 1.5], [-0.6, 1.3]);
        assert!((dot(&input_1d(a4), &b4) - dot(&a4, &input_adjoint_1d(b4))).abs() < 1e-6);
        assert!((dot(&kernel_1d(a3), &b4) - dot(&a3, &kernel_adjoint_1d(b4))).abs() < 1e-6);
        assert!((dot(&output_1d(a4), &a2) - dot(&a4, &output_adjoint_1d(a2))).abs() < 1e-6);
    }

    #[test]
    fn geometry_support() {
        let same = ConvGeometry::new([1, 128, 8, 8], [256, 128, 3, 3], [1, 1], [1, 1], [1, 1]);
        assert!(supports(&same) && pays_off(&same));
        let tiny = ConvGeometry::new([1, 512, 2, 2], [512, 512, 3, 3], [1, 1], [1, 1], [1, 1]);
        assert!(supports(&tiny) && !pays_off(&tiny));
        let odd = ConvGeometry::new([1, 128, 7, 7], [128, 128, 3, 3], [1, 1], [1, 1], [1, 1]);
        assert!(supports(&odd) && !pays_off(&odd));
        let large = ConvGeometry::new([1, 64, 16, 16], [64, 64, 3, 3], [1, 1], [1, 1], [1, 1]);
        assert!(pays_off(&large));
        let small = ConvGeometry::new([1, 64, 14, 14], [64, 64, 3, 3], [1, 1], [1, 1], [1, 1]);
        assert!(!pays_off(&small));
        let strided = ConvGeometry::new([1, 64, 8, 8], [64, 64, 3, 3], [2, 2], [1, 1], [1, 1]);
        assert!(!supports(&strided));
        let valid = ConvGeometry::new([1, 64, 8, 8], [64, 64, 3, 3], [1, 1], [0, 0], [1, 1]);
        assert!(!supports(&valid));
        let five = ConvGeometry::new([1, 64, 8, 8], [64, 64, 5, 5], [1, 1], [2, 2], [1, 1]);
        assert!(!supports(&five));
        let narrow = ConvGeometry::new([1, 1, 28, 28], [32, 1, 3, 3], [1, 1], [1, 1], [1, 1]);
        assert!(supports(&narrow) && !pays_off(&narrow));
    }
}
