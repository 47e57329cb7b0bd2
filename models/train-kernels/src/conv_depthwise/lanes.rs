//! Depthwise convolution [`LANES`] planes at a time: a block of consecutive planes is
//! interleaved, zero padded, into one buffer in which every pixel holds its [`LANES`] values
//! (one per plane) next to one another ([`Frame`]), so that every tap of every output is one
//! multiply-add of [`LANES`]-wide vectors, whatever the plane's size or the stride. The
//! strategy for small planes and strided layers (see [`super`]). On x86-64 the block loops
//! are also compiled for AVX2 and chosen at run time (`with_avx2!`), so that a vector is one
//! register.

use rayon::prelude::*;

use super::{map_planes, planes_per_task};
use crate::conv_gemm::ConvGeometry;

/// Planes computed side by side, one per lane: eight `f32`, one AVX register.
const LANES: usize = 8;

/// An `h x w` plane inside an interleaved buffer `cols` pixels wide, at `(top, left)`: pixel
/// `(r, c)` of lane `l` lies at `((r + top) * cols + c + left) * LANES + l`.
#[derive(Debug, Clone, Copy)]
struct Frame {
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    cols: usize,
}

impl Frame {
    /// Where pixel `(r, c)`'s lanes start.
    #[inline(always)]
    fn at(&self, r: usize, c: usize) -> usize {
        ((r + self.top) * self.cols + c + self.left) * LANES
    }

    /// Writes `planes` (one to [`LANES`] planes of `h * w` values, one after another) into
    /// their lanes of `buf`. Nothing else is written: padding keeps what it holds (a buffer
    /// zeroed once keeps zero padding), and so do the lanes past the planes given, whose
    /// results are dropped. A full block goes a pixel at a time, its [`LANES`] values
    /// gathered from the planes and stored as one vector: one value at a time, the strided
    /// stores and their index arithmetic cost as much as a 3x3 layer's multiply-adds.
    #[inline(always)]
    fn interleave(&self, planes: &[f32], buf: &mut [f32]) {
        let plane = self.h * self.w;
        if planes.len() == LANES * plane {
            let planes: [&[f32]; LANES] =
                core::array::from_fn(|lane| &planes[lane * plane..][..plane]);
            for r in 0..self.h {
                let row = &mut buf[self.at(r, 0)..][..self.w * LANES];
                for (c, px) in row.chunks_exact_mut(LANES).enumerate() {
                    let q = r * self.w + c;
                    px.copy_from_slice(&core::array::from_fn::<f32, LANES, _>(|lane| {
                        planes[lane][q]
                    }));
                }
            }
            return;
        }
        for (lane, plane) in planes.chunks_exact(plane).enumerate() {
            for (r, row) in plane.chunks_exact(self.w).enumerate() {
                let start = self.at(r, 0) + lane;
                let dst = &mut buf[start..start + (self.w - 1) * LANES + 1];
                for (d, &v) in dst.iter_mut().step_by(LANES).zip(row) {
                    *d = v;
                }
            }
        }
    }

    /// Reads `planes` back out of their lanes of `buf` (the inverse of
    /// [`Frame::interleave`]), a pixel at a time for a full block.
    #[inline(always)]
    fn deinterleave(&self, buf: &[f32], planes: &mut [f32]) {
        let plane = self.h * self.w;
        if planes.len() == LANES * plane {
            let mut planes: [&mut [f32]; LANES] = {
                let mut rest = planes;
                core::array::from_fn(|_| {
                    let (this, tail) = core::mem::take(&mut rest).split_at_mut(plane);
                    rest = tail;
                    this
                })
            };
            for r in 0..self.h {
                let row = &buf[self.at(r, 0)..][..self.w * LANES];
                for (c, px) in row.chunks_exact(LANES).enumerate() {
                    let q = r * self.w + c;
                    for (plane, &v) in planes.iter_mut().zip(px) {
                        plane[q] = v;
                    }
                }
            }
            return;
        }
        for (lane, plane) in planes.chunks_exact_mut(plane).enumerate() {
            for (r, row) in plane.chunks_exact_mut(self.w).enumerate() {
                let start = self.at(r, 0) + lane;
                let src = &buf[start..start + (self.w - 1) * LANES + 1];
                for (v, &s) in row.iter_mut().zip(src.iter().step_by(LANES)) {
                    *v = s;
                }
            }
        }
    }
}

/// Where a block's values lie: its input zero padded ([`Frame`]), its output dense, and
/// where each tap of an output's window reads.
#[derive(Debug, Clone)]
struct Layout {
    /// `[kh, kw]`.
    kernel: [usize; 2],
    input: Frame,
    output: Frame,
    /// Values of the padded input buffer.
    padded_len: usize,
    /// Per tap `(i, j)`, row by row: its offset from the output's window
    /// ([`Layout::windows`]) in the padded buffer.
    taps: Vec<usize>,
    /// Per output `(oh, ow)`, row by row: where its window starts in the padded buffer.
    windows: Vec<usize>,
}

impl Layout {
    fn new(g: &ConvGeometry) -> Self {
        let [ph, pw] = g.padding;
        let [sh, sw] = g.stride;
        let input = Frame {
            h: g.in_h,
            w: g.in_w,
            top: ph,
            left: pw,
            cols: g.in_w + 2 * pw,
        };
        let output = Frame {
            h: g.out_h,
            w: g.out_w,
            top: 0,
            left: 0,
            cols: g.out_w,
        };
        let padded = Frame {
            top: 0,
            left: 0,
            ..input
        };
        let taps = (0..g.kh)
            .flat_map(|i| (0..g.kw).map(move |j| padded.at(i, j)))
            .collect();
        let windows = (0..g.out_h)
            .flat_map(|oh| (0..g.out_w).map(move |ow| padded.at(oh * sh, ow * sw)))
            .collect();
        Self {
            kernel: [g.kh, g.kw],
            input,
            output,
            padded_len: (g.in_h + 2 * ph) * input.cols * LANES,
            taps,
            windows,
        }
    }

    fn in_plane(&self) -> usize {
        self.input.h * self.input.w
    }

    fn out_plane(&self) -> usize {
        self.output.h * self.output.w
    }

    /// Whether every tap of every window lies inside a padded buffer of `len` values: the
    /// last window and the last tap are the furthest (both lists increase), so this one check
    /// covers the unchecked reads of the block loops.
    fn fits(&self, len: usize) -> bool {
        match (self.windows.last(), self.taps.last()) {
            (Some(&window), Some(&tap)) => window + tap + LANES <= len,
            _ => true,
        }
    }
}

/// `acc[l] += a[l] * b[l]` for the [`LANES`] lanes at `b[at..]`.
#[inline(always)]
fn multiply_add(acc: &mut [f32; LANES], a: &[f32; LANES], b: &[f32], at: usize) {
    let b: &[f32; LANES] = b[at..at + LANES].try_into().expect("a pixel's lanes");
    for lane in 0..LANES {
        acc[lane] += a[lane] * b[lane];
    }
}

/// The [`LANES`] values at `values[at..]`.
#[inline(always)]
fn lanes(values: &[f32], at: usize) -> &[f32; LANES] {
    values[at..at + LANES].try_into().expect("a pixel's lanes")
}

/// Each lane's filter, tap by tap: `filters[t * LANES + l]` is tap `t` of the channel of
/// plane `first + l` (planes past `planes` get zeros).
fn block_filters(w: &[f32], g: &ConvGeometry, first: usize, planes: usize, filters: &mut [f32]) {
    let taps = g.kh * g.kw;
    filters.fill(0.0);
    for lane in 0..planes {
        let channel = (first + lane) % g.in_channels;
        for (t, &v) in w[channel * taps..][..taps].iter().enumerate() {
            filters[t * LANES + lane] = v;
        }
    }
}

/// The scratch buffers of one task.
struct Buffers {
    /// The block's input (or input gradient), zero padded and interleaved.
    padded: Vec<f32>,
    /// The block's output (or output gradient), interleaved.
    dense: Vec<f32>,
    /// The block's filters ([`block_filters`]).
    filters: Vec<f32>,
}

impl Buffers {
    fn new(layout: &Layout) -> Self {
        Self {
            padded: vec![0.0; layout.padded_len],
            dense: vec![0.0; layout.out_plane() * LANES],
            filters: vec![0.0; layout.taps.len() * LANES],
        }
    }
}

/// The [`LANES`] values at `values[at..]`, without a bounds check.
///
/// # Safety
/// `at + LANES <= values.len()`.
#[inline(always)]
unsafe fn read_lanes(values: &[f32], at: usize) -> [f32; LANES] {
    debug_assert!(at + LANES <= values.len());
    // SAFETY: the caller keeps `at + LANES` within `values`; `[f32; LANES]` needs no more
    // alignment than `f32`.
    unsafe { values.as_ptr().add(at).cast::<[f32; LANES]>().read() }
}

/// The [`LANES`] values at `values[at..]`, mutably, without a bounds check.
///
/// # Safety
/// `at + LANES <= values.len()`.
#[inline(always)]
unsafe fn lanes_mut(values: &mut [f32], at: usize) -> &mut [f32; LANES] {
    debug_assert!(at + LANES <= values.len());
    // SAFETY: as in `read_lanes`; the borrow of `values` covers the result's.
    unsafe { &mut *values.as_mut_ptr().add(at).cast::<[f32; LANES]>() }
}

/// A block's filters as `KH x KW` vectors, kept in registers by the loops that take them
/// (nine of the 16 AVX registers for a 3x3 kernel).
#[inline(always)]
fn filter_taps<const KH: usize, const KW: usize>(filters: &[f32]) -> [[[f32; LANES]; KW]; KH] {
    core::array::from_fn(|i| core::array::from_fn(|j| *lanes(filters, (i * KW + j) * LANES)))
}

/// One block of [`forward`] for a `KH x KW` kernel: the interleaved outputs from the padded
/// input and the filters.
#[inline(always)]
fn forward_k<const KH: usize, const KW: usize>(
    layout: &Layout,
    padded: &[f32],
    filters: &[f32],
    out: &mut [f32],
) {
    assert!(
        layout.fits(padded.len()),
        "depthwise: padded block too short"
    );
    let row = layout.input.cols * LANES;
    let f = filter_taps::<KH, KW>(filters);
    for (&window, out) in layout.windows.iter().zip(out.chunks_exact_mut(LANES)) {
        let mut acc = [0.0f32; LANES];
        for (i, f) in f.iter().enumerate() {
            for (j, f) in f.iter().enumerate() {
                // SAFETY: `window + i * row + j * LANES` is one of the layout's taps of
                // this window, all inside `padded` (`fits`, asserted above).
                let v = unsafe { read_lanes(padded, window + i * row + j * LANES) };
                for lane in 0..LANES {
                    acc[lane] += f[lane] * v[lane];
                }
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// [`forward_k`] for any kernel, its filters read from memory.
#[inline(always)]
fn forward_any(layout: &Layout, padded: &[f32], filters: &[f32], out: &mut [f32]) {
    for (&window, out) in layout.windows.iter().zip(out.chunks_exact_mut(LANES)) {
        let mut acc = [0.0f32; LANES];
        for (t, &tap) in layout.taps.iter().enumerate() {
            multiply_add(&mut acc, lanes(filters, t * LANES), padded, window + tap);
        }
        out.copy_from_slice(&acc);
    }
}

#[inline(always)]
fn forward_block_body(layout: &Layout, padded: &[f32], filters: &[f32], out: &mut [f32]) {
    match layout.kernel {
        [3, 3] => forward_k::<3, 3>(layout, padded, filters, out),
        [5, 5] => forward_k::<5, 5>(layout, padded, filters, out),
        [7, 7] => forward_k::<7, 7>(layout, padded, filters, out),
        _ => forward_any(layout, padded, filters, out),
    }
}

with_avx2! {
    /// One block of [`forward`]: the interleaved outputs from the padded input and the
    /// filters.
    fn forward_block / forward_block_avx2 = forward_block_body(
        layout: &Layout,
        padded: &[f32],
        filters: &[f32],
        out: &mut [f32],
    )
}

/// One block of [`input_grad`] for a `KH x KW` kernel: the padded input gradient from the
/// interleaved output gradient and the filters. Each output sends its gradient back to every
/// input its window read.
#[inline(always)]
fn input_grad_k<const KH: usize, const KW: usize>(
    layout: &Layout,
    dy: &[f32],
    filters: &[f32],
    padded: &mut [f32],
) {
    assert!(
        layout.fits(padded.len()),
        "depthwise: padded block too short"
    );
    padded.fill(0.0);
    let row = layout.input.cols * LANES;
    let f = filter_taps::<KH, KW>(filters);
    for (&window, dy) in layout.windows.iter().zip(dy.chunks_exact(LANES)) {
        let dy: &[f32; LANES] = dy.try_into().expect("a pixel's lanes");
        for (i, f) in f.iter().enumerate() {
            for (j, f) in f.iter().enumerate() {
                // SAFETY: as in `forward_k`: a tap of this window, inside `padded`.
                let dx = unsafe { lanes_mut(padded, window + i * row + j * LANES) };
                for lane in 0..LANES {
                    dx[lane] += f[lane] * dy[lane];
                }
            }
        }
    }
}

/// [`input_grad_k`] for any kernel, its filters read from memory.
#[inline(always)]
fn input_grad_any(layout: &Layout, dy: &[f32], filters: &[f32], padded: &mut [f32]) {
    padded.fill(0.0);
    for (&window, dy) in layout.windows.iter().zip(dy.chunks_exact(LANES)) {
        let dy: &[f32; LANES] = dy.try_into().expect("a pixel's lanes");
        for (t, &tap) in layout.taps.iter().enumerate() {
            let filter = lanes(filters, t * LANES);
            let dx: &mut [f32; LANES] = (&mut padded[window + tap..][..LANES])
                .try_into()
                .expect("a pixel's lanes");
            for lane in 0..LANES {
                dx[lane] += filter[lane] * dy[lane];
            }
        }
    }
}

#[inline(always)]
fn input_grad_block_body(layout: &Layout, dy: &[f32], filters: &[f32], padded: &mut [f32]) {
    match layout.kernel {
        [3, 3] => input_grad_k::<3, 3>(layout, dy, filters, padded),
        [5, 5] => input_grad_k::<5, 5>(layout, dy, filters, padded),
        [7, 7] => input_grad_k::<7, 7>(layout, dy, filters, padded),
        _ => input_grad_any(layout, dy, filters, padded),
    }
}

with_avx2! {
    /// One block of [`input_grad`]: the padded input gradient from the interleaved output
    /// gradient and the filters.
    fn input_grad_block / input_grad_block_avx2 = input_grad_block_body(
        layout: &Layout,
        dy: &[f32],
        filters: &[f32],
        padded: &mut [f32],
    )
}

/// One block of [`weight_grad`] for a `KH x KW` kernel: per tap and lane, the sum over the
/// plane of the output gradient times the input the tap read, added to `sums`
/// (`[tap][lane]`). A 3x3 kernel's nine sums stay in registers.
#[inline(always)]
fn weight_grad_k<const KH: usize, const KW: usize>(
    layout: &Layout,
    padded: &[f32],
    dy: &[f32],
    sums: &mut [[f32; LANES]],
) {
    assert!(
        layout.fits(padded.len()),
        "depthwise: padded block too short"
    );
    let row = layout.input.cols * LANES;
    let mut acc = [[[0.0f32; LANES]; KW]; KH];
    for (&window, dy) in layout.windows.iter().zip(dy.chunks_exact(LANES)) {
        let dy: &[f32; LANES] = dy.try_into().expect("a pixel's lanes");
        for (i, acc) in acc.iter_mut().enumerate() {
            for (j, acc) in acc.iter_mut().enumerate() {
                // SAFETY: as in `forward_k`: a tap of this window, inside `padded`.
                let v = unsafe { read_lanes(padded, window + i * row + j * LANES) };
                for lane in 0..LANES {
                    acc[lane] += dy[lane] * v[lane];
                }
            }
        }
    }
    for (sum, acc) in sums.iter_mut().zip(acc.iter().flatten()) {
        for lane in 0..LANES {
            sum[lane] += acc[lane];
        }
    }
}

/// [`weight_grad_k`] for any kernel: the sums stay in memory.
#[inline(always)]
fn weight_grad_any(layout: &Layout, padded: &[f32], dy: &[f32], sums: &mut [[f32; LANES]]) {
    for (&window, dy) in layout.windows.iter().zip(dy.chunks_exact(LANES)) {
        let dy: &[f32; LANES] = dy.try_into().expect("a pixel's lanes");
        for (sum, &tap) in sums.iter_mut().zip(&layout.taps) {
            multiply_add(sum, dy, padded, window + tap);
        }
    }
}

#[inline(always)]
fn weight_grad_block_body(layout: &Layout, padded: &[f32], dy: &[f32], sums: &mut [[f32; LANES]]) {
    match layout.kernel {
        [3, 3] => weight_grad_k::<3, 3>(layout, padded, dy, sums),
        [5, 5] => weight_grad_k::<5, 5>(layout, padded, dy, sums),
        [7, 7] => weight_grad_k::<7, 7>(layout, padded, dy, sums),
        _ => weight_grad_any(layout, padded, dy, sums),
    }
}

with_avx2! {
    /// One block of [`weight_grad`]: per tap and lane, the sum over the plane of the output
    /// gradient times the input the tap read, added to `sums` (`[tap][lane]`).
    fn weight_grad_block / weight_grad_block_avx2 = weight_grad_block_body(
        layout: &Layout,
        padded: &[f32],
        dy: &[f32],
        sums: &mut [[f32; LANES]],
    )
}

/// `y = depthwise(x, w)`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, out_h, out_w]`
pub(super) fn forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let layout = Layout::new(g);
    let (in_plane, out_plane) = (layout.in_plane(), layout.out_plane());
    let buffers = || Buffers::new(&layout);
    map_planes(
        x,
        in_plane,
        out_plane,
        planes_per_task(g, LANES),
        LANES,
        buffers,
        |buffers, first, x, y| {
            block_filters(w, g, first, x.len() / in_plane, &mut buffers.filters);
            layout.input.interleave(x, &mut buffers.padded);
            forward_block(
                &layout,
                &buffers.padded,
                &buffers.filters,
                &mut buffers.dense,
            );
            layout.output.deinterleave(&buffers.dense, y);
        },
    )
}

/// The gradient w.r.t. `x` given `dy`, the gradient w.r.t. the output.
///
/// # Shapes
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, in_h, in_w]`
pub(super) fn input_grad(dy: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let layout = Layout::new(g);
    let (in_plane, out_plane) = (layout.in_plane(), layout.out_plane());
    let buffers = || Buffers::new(&layout);
    map_planes(
        dy,
        out_plane,
        in_plane,
        planes_per_task(g, LANES),
        LANES,
        buffers,
        |buffers, first, dy, dx| {
            block_filters(w, g, first, dy.len() / out_plane, &mut buffers.filters);
            layout.output.interleave(dy, &mut buffers.dense);
            input_grad_block(
                &layout,
                &buffers.dense,
                &buffers.filters,
                &mut buffers.padded,
            );
            layout.input.deinterleave(&buffers.padded, dx);
        },
    )
}

/// The gradient w.r.t. the weight given `dy`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - result: `[channels, 1, kh, kw]`
pub(super) fn weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let layout = Layout::new(g);
    let (in_plane, out_plane, taps) = (layout.in_plane(), layout.out_plane(), g.kh * g.kw);
    let channels = g.in_channels;
    let per_task = planes_per_task(g, LANES);
    // Per channel and tap, the sum over the batch: each task adds its blocks' sums into its
    // own copy (in f64, as many blocks go into one), and the copies are added up.
    let dw = x
        .par_chunks(in_plane * per_task)
        .zip(dy.par_chunks(out_plane * per_task))
        .enumerate()
        .fold(
            || vec![0.0f64; channels * taps],
            |mut dw, (task, (x, dy))| {
                let mut buffers = Buffers::new(&layout);
                let mut sums = vec![[0.0f32; LANES]; taps];
                for (block, (x, dy)) in x
                    .chunks(in_plane * LANES)
                    .zip(dy.chunks(out_plane * LANES))
                    .enumerate()
                {
                    let first = task * per_task + block * LANES;
                    layout.input.interleave(x, &mut buffers.padded);
                    layout.output.interleave(dy, &mut buffers.dense);
                    sums.fill([0.0; LANES]);
                    weight_grad_block(&layout, &buffers.padded, &buffers.dense, &mut sums);
                    for lane in 0..x.len() / in_plane {
                        let channel = (first + lane) % channels;
                        for (t, sum) in sums.iter().enumerate() {
                            dw[channel * taps + t] += sum[lane] as f64;
                        }
                    }
                }
                dw
            },
        )
        .reduce(
            || vec![0.0f64; channels * taps],
            |mut a, b| {
                for (a, b) in a.iter_mut().zip(b) {
                    *a += b;
                }
                a
            },
        );
    dw.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::super::layout_cases;
    use super::*;

    /// Every tap of every output reads, through the layout, the padded input pixel it would
    /// read directly, in every lane; interleaving writes only the planes' pixels, and
    /// reading them back gives the planes.
    #[test]
    fn the_layout_holds_what_each_tap_reads() {
        let planes = 3;
        for g in layout_cases::geometries(planes) {
            let layout = Layout::new(&g);
            let plane = g.in_h * g.in_w;
            let x: Vec<f32> = (0..planes * plane).map(|v| v as f32 + 1.0).collect();
            // The padding and the lanes past the planes are never written: a NaN buffer
            // keeps NaN everywhere but at the planes' pixels.
            let mut untouched = vec![f32::NAN; layout.padded_len];
            layout.input.interleave(&x, &mut untouched);
            let written = untouched.iter().filter(|v| !v.is_nan()).count();
            assert_eq!(written, planes * plane);
            let mut buffer = vec![0.0; layout.padded_len];
            layout.input.interleave(&x, &mut buffer);
            for (t, &tap) in layout.taps.iter().enumerate() {
                let (i, j) = (t / g.kw, t % g.kw);
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        let at = layout.windows[oh * g.out_w + ow] + tap;
                        assert!(at + LANES <= layout.padded_len);
                        let (r, c) = (oh * g.stride[0] + i, ow * g.stride[1] + j);
                        for (lane, x) in x.chunks_exact(plane).enumerate() {
                            assert_eq!(
                                buffer[at + lane],
                                layout_cases::padded(&g, x, r, c),
                                "{g:?} tap {i},{j} out {oh},{ow} lane {lane}"
                            );
                        }
                    }
                }
            }
            let mut back = vec![0.0; x.len()];
            layout.input.deinterleave(&buffer, &mut back);
            assert_eq!(back, x);
        }
    }
}
