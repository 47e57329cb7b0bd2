//! Depthwise convolution plane by plane: each plane is laid out zero padded and split by
//! stride phase ([`Phases`]), so that every tap reads the plane contiguously; several small
//! planes make one rayon task. The forward pass sums every tap of a block of outputs in
//! registers ([`correlate`]), the input gradient is the forward pass with the filters turned
//! (at stride 1), and the weight gradient is a dot product per tap. The strategy for large
//! planes at stride 1, where the rows are long enough to vectorise (see [`super`]); on x86-64
//! each plane's loops are also compiled for AVX2 and chosen at run time (`with_avx2!`).

use rayon::prelude::*;

use super::{map_planes, planes_per_task};
use crate::conv_gemm::ConvGeometry;

/// A plane's input as `stride[0] x stride[1]` phase planes, zero padded: phase `(a, b)` holds
/// the padded input's rows `a, a + sh, ...` and columns `b, b + sw, ...`. Tap `(i, j)` of
/// output `(oh, ow)` then reads phase `(i % sh, j % sw)` at row `oh + i / sh`, column
/// `ow + j / sw`: computed on a grid `row_pitch` wide, every tap is one contiguous
/// multiply-add over the whole plane (the columns past `out_w` are computed and dropped), so
/// the loops vectorise even on the 7x7 and 4x4 planes of a mobile network's last stages,
/// where per-row loops spent their time on loop overhead.
#[derive(Debug, Clone, Copy)]
struct Phases {
    sh: usize,
    sw: usize,
    /// Rows and columns of one phase plane.
    rows: usize,
    row_pitch: usize,
    /// Outputs on the grid: `(out_h - 1) * row_pitch + out_w` (the last row stops at `out_w`,
    /// so no tap reads past its phase plane).
    grid: usize,
}

impl Phases {
    fn new(g: &ConvGeometry) -> Self {
        let [sh, sw] = g.stride;
        let rows = (g.in_h + 2 * g.padding[0]).div_ceil(sh);
        let row_pitch = (g.in_w + 2 * g.padding[1]).div_ceil(sw);
        Self {
            sh,
            sw,
            rows,
            row_pitch,
            grid: (g.out_h - 1) * row_pitch + g.out_w,
        }
    }

    fn phase_len(&self) -> usize {
        self.rows * self.row_pitch
    }

    fn len(&self) -> usize {
        self.sh * self.sw * self.phase_len()
    }

    /// Where padded pixel `(r, c)` lives in the phase buffer.
    #[inline]
    fn index(&self, r: usize, c: usize) -> usize {
        ((r % self.sh) * self.sw + c % self.sw) * self.phase_len()
            + (r / self.sh) * self.row_pitch
            + c / self.sw
    }

    /// Where tap `(i, j)` of grid output 0 reads; output `q` reads `q` further on.
    #[inline]
    fn tap_start(&self, i: usize, j: usize) -> usize {
        self.index(i, j)
    }

    /// Writes input plane `x` into `phases`. Only the positions of input pixels are written:
    /// the padding keeps what it holds, so a buffer zeroed once serves every plane.
    #[inline(always)]
    fn scatter(&self, x: &[f32], g: &ConvGeometry, phases: &mut [f32]) {
        for r in 0..g.in_h {
            let row = &x[r * g.in_w..][..g.in_w];
            self.for_each_column_phase(r, g, |start, first, dst_len| {
                let dst = &mut phases[start..start + dst_len];
                if self.sw == 1 {
                    copy_row(dst, row);
                } else {
                    for (d, &v) in dst.iter_mut().zip(row[first..].iter().step_by(self.sw)) {
                        *d = v;
                    }
                }
            });
        }
    }

    /// Reads input plane `x` back out of `phases` (the inverse of [`Phases::scatter`]).
    #[inline(always)]
    fn gather(&self, phases: &[f32], g: &ConvGeometry, x: &mut [f32]) {
        for r in 0..g.in_h {
            let row = &mut x[r * g.in_w..][..g.in_w];
            self.for_each_column_phase(r, g, |start, first, src_len| {
                let src = &phases[start..start + src_len];
                if self.sw == 1 {
                    copy_row(row, src);
                } else {
                    for (v, &p) in row[first..].iter_mut().step_by(self.sw).zip(src) {
                        *v = p;
                    }
                }
            });
        }
    }

    /// For input row `r`, per column phase: where its pixels start in the phase buffer, the
    /// first input column in that phase, and how many there are (they lie contiguously
    /// there, every `sw`-th column of the input row).
    #[inline(always)]
    fn for_each_column_phase(
        &self,
        r: usize,
        g: &ConvGeometry,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let [ph, pw] = g.padding;
        for first in 0..self.sw.min(g.in_w) {
            let start = self.index(r + ph, first + pw);
            let count = (g.in_w - first).div_ceil(self.sw);
            f(start, first, count);
        }
    }

    /// Output plane `y` from grid values `grid` (dropping the columns past `out_w`).
    #[inline(always)]
    fn crop_grid(&self, grid: &[f32], g: &ConvGeometry, y: &mut [f32]) {
        for (oh, row) in y.chunks_exact_mut(g.out_w).enumerate() {
            copy_row(row, &grid[oh * self.row_pitch..][..g.out_w]);
        }
    }

    /// Grid values from output plane `dy`. The columns past `out_w` are not written: a grid
    /// zeroed once keeps them zero for every plane.
    #[inline(always)]
    fn spread_to_grid(&self, dy: &[f32], g: &ConvGeometry, grid: &mut [f32]) {
        for (oh, row) in dy.chunks_exact(g.out_w).enumerate() {
            copy_row(&mut grid[oh * self.row_pitch..][..g.out_w], row);
        }
    }
}

/// `dst = src` for the short rows of small planes (4 to 28 values): fixed-size moves, where
/// `copy_from_slice` calls memcpy, whose call cost a tenth of a MobileNetV2 training step.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    assert_eq!(n, src.len(), "copy_row: lengths");
    if n >= 8 {
        let mut i = 0;
        while i + 8 <= n {
            dst[i..i + 8].copy_from_slice(&src[i..i + 8]);
            i += 8;
        }
        if i < n {
            // The last eight, overlapping what was copied.
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s;
        }
    }
}

/// `acc[q] += tap * src[q]`.
#[inline(always)]
fn axpy(acc: &mut [f32], tap: f32, src: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(src) {
        *a += tap * v;
    }
}

/// Taps whose products one pass over the grid sums together (at most): each keeps its own
/// eight lanes, so the adds of different taps do not wait on one another, and each grid
/// value is loaded once for all of them. Four taps' lanes and the grid's fill 10 of the 16
/// SSE registers.
const TAPS_PER_PASS: usize = 4;

/// `lanes[t][l] += sum over q = l mod 8 of grid[q] * src[starts[t] + q]` for the `N` taps
/// starting at `starts`, over a grid of whole vectors (see [`PlaneScratch`]). A single tap's
/// dot product waits on the previous add every eight values (the add's latency, not its
/// throughput, set its pace); `N` of them in one pass overlap.
#[inline(always)]
fn dot_taps<const N: usize>(lanes: &mut [[f32; 8]], grid: &[f32], src: &[f32], starts: &[usize]) {
    let n = grid.len();
    assert_eq!(n % 8, 0, "a grid of whole vectors");
    let taps: [&[f32]; N] = core::array::from_fn(|t| &src[starts[t]..starts[t] + n]);
    let mut acc = [[0.0f32; 8]; N];
    let mut q = 0;
    while q < n {
        let g: &[f32; 8] = grid[q..q + 8].try_into().expect("eight grid values");
        for (acc, tap) in acc.iter_mut().zip(&taps) {
            let v: &[f32; 8] = tap[q..q + 8].try_into().expect("eight tap values");
            for lane in 0..8 {
                acc[lane] += g[lane] * v[lane];
            }
        }
        q += 8;
    }
    for (t, acc) in acc.iter().enumerate() {
        for (sum, &a) in lanes[t].iter_mut().zip(acc) {
            *sum += a;
        }
    }
}

/// [`dot_taps`] for every tap, [`TAPS_PER_PASS`] or fewer at a time, in passes of even
/// size (9 taps: three passes of three, not 4 + 4 + 1).
#[inline(always)]
fn dot_all_taps(tap_lanes: &mut [[f32; 8]], grid: &[f32], src: &[f32], starts: &[usize]) {
    let passes = starts.len().div_ceil(TAPS_PER_PASS);
    let mut first = 0;
    for pass in 0..passes {
        let end = starts.len() * (pass + 1) / passes;
        let (lanes, starts) = (&mut tap_lanes[first..end], &starts[first..end]);
        match starts.len() {
            1 => dot_taps::<1>(lanes, grid, src, starts),
            2 => dot_taps::<2>(lanes, grid, src, starts),
            3 => dot_taps::<3>(lanes, grid, src, starts),
            4 => dot_taps::<4>(lanes, grid, src, starts),
            n => unreachable!("a pass of {n} taps (at most {TAPS_PER_PASS})"),
        }
        first = end;
    }
}

/// Outputs that one pass of [`correlate`] keeps in registers across every tap: four
/// vectors of eight (eight of four without AVX2), whose sums are independent of one another,
/// so their adds overlap.
const BLOCK: usize = 32;

/// `grid[q..q + N] = sum over taps t of filter[t] * src[starts[t] + q..][..N]`, summed in tap
/// order in registers: each tap costs a load and a multiply-add per value, where a pass per
/// tap over the whole grid also loaded and stored the sum (which bound the stores' port).
#[inline(always)]
fn correlate_block<const N: usize>(
    grid: &mut [f32],
    src: &[f32],
    starts: &[usize],
    filter: &[f32],
    q: usize,
) {
    let first: &[f32; N] = src[starts[0] + q..][..N].try_into().expect("N values");
    let mut acc = [0.0f32; N];
    for (a, &v) in acc.iter_mut().zip(first) {
        *a = filter[0] * v;
    }
    for (&start, &tap) in starts[1..].iter().zip(&filter[1..]) {
        let v: &[f32; N] = src[start + q..][..N].try_into().expect("N values");
        for (a, &v) in acc.iter_mut().zip(v) {
            *a += tap * v;
        }
    }
    grid[q..q + N].copy_from_slice(&acc);
}

/// Every grid output from the phase buffer `src`: [`correlate_block`] in blocks of
/// [`BLOCK`] (or eight), the last block moved back to end at the grid's end, recomputing some
/// outputs rather than finishing one at a time (a tail of single outputs is a chain of
/// dependent adds per output: on a 7x7 plane it cost as much as the blocks).
#[inline(always)]
fn correlate(grid: &mut [f32], src: &[f32], starts: &[usize], filter: &[f32]) {
    #[inline(always)]
    fn blocks<const N: usize>(grid: &mut [f32], src: &[f32], starts: &[usize], filter: &[f32]) {
        let n = grid.len();
        let mut q = 0;
        while q < n {
            let at = q.min(n - N);
            correlate_block::<N>(grid, src, starts, filter, at);
            q += N;
        }
    }
    match grid.len() {
        n if n >= BLOCK => blocks::<BLOCK>(grid, src, starts, filter),
        n if n >= 8 => blocks::<8>(grid, src, starts, filter),
        _ => blocks::<1>(grid, src, starts, filter),
    }
}

/// The buffers one plane of a pass needs: its input's phases and the output grid. Both run
/// on past their ends, the grid to a whole number of vectors and the phases by a vector, with
/// zeros no pass writes: the weight gradient's dot products then end on a whole vector
/// (products of zeros), where a tail a value at a time cost a tenth of its time.
struct PlaneScratch {
    phases: Vec<f32>,
    grid: Vec<f32>,
}

impl PlaneScratch {
    fn new(phases: &Phases) -> Self {
        Self {
            phases: vec![0.0; phases.len() + 8],
            grid: vec![0.0; phases.grid.next_multiple_of(8)],
        }
    }
}

/// What every plane of a pass ([`forward`], [`weight_grad`]) shares: the geometry, its phases
/// and where each tap reads.
struct PlanePass<'a> {
    g: &'a ConvGeometry,
    phases: Phases,
    /// Where each tap of grid output 0 reads in the phase buffer, taps in row-major order.
    starts: Vec<usize>,
}

impl<'a> PlanePass<'a> {
    fn new(g: &'a ConvGeometry) -> Self {
        let phases = Phases::new(g);
        let starts = (0..g.kh)
            .flat_map(|i| (0..g.kw).map(move |j| (i, j)))
            .map(|(i, j)| phases.tap_start(i, j))
            .collect();
        Self { g, phases, starts }
    }
}

#[inline(always)]
fn forward_plane_body(
    pass: &PlanePass,
    x: &[f32],
    filter: &[f32],
    scratch: &mut PlaneScratch,
    y: &mut [f32],
) {
    pass.phases.scatter(x, pass.g, &mut scratch.phases);
    let grid = &mut scratch.grid[..pass.phases.grid];
    correlate(grid, &scratch.phases, &pass.starts, filter);
    pass.phases.crop_grid(&scratch.grid, pass.g, y);
}

with_avx2! {
    /// One plane of [`forward`]: `y` from `x` and its channel's `filter`.
    fn forward_plane / forward_plane_avx2 = forward_plane_body(
        pass: &PlanePass,
        x: &[f32],
        filter: &[f32],
        scratch: &mut PlaneScratch,
        y: &mut [f32],
    )
}

/// One plane of [`input_grad`] where the padding exceeds `k - 1` (see there): `dx` from `dy`
/// and its channel's `filter`, each tap sending the gradient of every output back to the
/// input it read.
fn input_grad_plane_by_taps(
    dy: &[f32],
    filter: &[f32],
    g: &ConvGeometry,
    phases: &Phases,
    scratch: &mut PlaneScratch,
    dx: &mut [f32],
) {
    // The grid's dropped columns carry zeros.
    phases.spread_to_grid(dy, g, &mut scratch.grid);
    scratch.phases.fill(0.0);
    for i in 0..g.kh {
        for j in 0..g.kw {
            let start = phases.tap_start(i, j);
            axpy(
                &mut scratch.phases[start..start + phases.grid],
                filter[i * g.kw + j],
                &scratch.grid[..phases.grid],
            );
        }
    }
    phases.gather(&scratch.phases, g, dx);
}

/// `y = depthwise(x, w)`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, out_h, out_w]`
pub(super) fn forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let pass = PlanePass::new(g);
    map_planes(
        x,
        in_plane,
        out_plane,
        planes_per_task(g, 1),
        1,
        || PlaneScratch::new(&pass.phases),
        |scratch, plane, x, y| {
            let channel = plane % g.in_channels;
            let filter = &w[channel * taps..][..taps];
            forward_plane(&pass, x, filter, scratch, y);
        },
    )
}

/// The gradient w.r.t. `x` given `dy`, the gradient w.r.t. the output.
///
/// At stride 1 with padding `p <= k - 1` this is the forward convolution of `dy`, padded by
/// `k - 1 - p`, with the filters turned by 180 degrees, and runs as [`forward`] does (on
/// MobileNetV2's and the supernet's layers; a tap at a time over the plane took 2-3x as long).
/// Other paddings send each tap's gradients back a tap at a time.
///
/// # Shapes
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, in_h, in_w]`
pub(super) fn input_grad(dy: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    if let Some(turned) = turned_geometry(g) {
        let taps = g.kh * g.kw;
        let turned_w: Vec<f32> = w
            .chunks_exact(taps)
            .flat_map(|filter| filter.iter().rev().copied())
            .collect();
        return forward(dy, &turned_w, &turned);
    }
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let phases = Phases::new(g);
    map_planes(
        dy,
        out_plane,
        in_plane,
        planes_per_task(g, 1),
        1,
        || PlaneScratch::new(&phases),
        |scratch, plane, dy, dx| {
            let channel = plane % g.in_channels;
            let filter = &w[channel * taps..][..taps];
            input_grad_plane_by_taps(dy, filter, g, &phases, scratch, dx);
        },
    )
}

/// The geometry of the forward convolution that computes `g`'s input gradient: `dy` as the
/// input, padded by `k - 1 - p`, giving `g`'s input size. `None` where that padding would be
/// negative or the stride is not 1.
fn turned_geometry(g: &ConvGeometry) -> Option<ConvGeometry> {
    let fits = g.stride == [1, 1] && g.padding[0] < g.kh && g.padding[1] < g.kw;
    fits.then(|| {
        let channels = g.in_channels;
        let turned = ConvGeometry::grouped(
            [g.batch, channels, g.out_h, g.out_w],
            [channels, 1, g.kh, g.kw],
            channels,
            [1, 1],
            [g.kh - 1 - g.padding[0], g.kw - 1 - g.padding[1]],
            [1, 1],
        );
        debug_assert_eq!([turned.out_h, turned.out_w], [g.in_h, g.in_w]);
        turned
    })
}

#[inline(always)]
fn weight_grad_plane_body(
    pass: &PlanePass,
    x: &[f32],
    dy: &[f32],
    scratch: &mut PlaneScratch,
    tap_lanes: &mut [[f32; 8]],
) {
    pass.phases.scatter(x, pass.g, &mut scratch.phases);
    pass.phases.spread_to_grid(dy, pass.g, &mut scratch.grid);
    dot_all_taps(tap_lanes, &scratch.grid, &scratch.phases, &pass.starts);
}

with_avx2! {
    /// One plane's share of [`weight_grad`], added to its channel's per-tap lanes.
    fn weight_grad_plane / weight_grad_plane_avx2 = weight_grad_plane_body(
        pass: &PlanePass,
        x: &[f32],
        dy: &[f32],
        scratch: &mut PlaneScratch,
        tap_lanes: &mut [[f32; 8]],
    )
}

/// The gradient w.r.t. the weight given `dy`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - result: `[channels, 1, kh, kw]`
pub(super) fn weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let channels = g.in_channels;
    let pass = PlanePass::new(g);
    let mut dw = vec![0.0f32; channels * taps];
    dw.par_chunks_mut(taps)
        .enumerate()
        .for_each(|(c, filter_grad)| {
            let mut scratch = PlaneScratch::new(&pass.phases);
            let mut tap_lanes = vec![[0.0f32; 8]; taps];
            for n in 0..g.batch {
                let plane = n * channels + c;
                let x = &x[plane * in_plane..][..in_plane];
                let dy = &dy[plane * out_plane..][..out_plane];
                weight_grad_plane(&pass, x, dy, &mut scratch, &mut tap_lanes);
            }
            for (out, lanes) in filter_grad.iter_mut().zip(&tap_lanes) {
                *out = lanes.iter().map(|&v| v as f64).sum::<f64>() as f32;
            }
        });
    dw
}

#[cfg(test)]
mod tests {
    use super::super::layout_cases;
    use super::*;

    /// Every tap of every output reads, through the phases, the padded input pixel it would
    /// read directly, and no read leaves the buffer.
    #[test]
    fn the_phases_hold_what_each_tap_reads() {
        for g in layout_cases::geometries(1) {
            let phases = Phases::new(&g);
            let x: Vec<f32> = (0..g.in_h * g.in_w).map(|v| v as f32 + 1.0).collect();
            // The padding is never written: a NaN buffer keeps NaN everywhere but at the
            // input pixels, a zeroed one is the padded input.
            let mut untouched = vec![f32::NAN; phases.len()];
            phases.scatter(&x, &g, &mut untouched);
            let written = untouched.iter().filter(|v| !v.is_nan()).count();
            assert_eq!(written, x.len());
            let mut buffer = vec![0.0; phases.len()];
            phases.scatter(&x, &g, &mut buffer);
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let start = phases.tap_start(i, j);
                    assert!(start + phases.grid <= phases.len());
                    for oh in 0..g.out_h {
                        for ow in 0..g.out_w {
                            let q = oh * phases.row_pitch + ow;
                            let (r, c) = (oh * g.stride[0] + i, ow * g.stride[1] + j);
                            assert_eq!(
                                buffer[start + q],
                                layout_cases::padded(&g, &x, r, c),
                                "{g:?} tap {i},{j} out {oh},{ow}"
                            );
                        }
                    }
                }
            }
            let mut back = vec![0.0; x.len()];
            phases.gather(&buffer, &g, &mut back);
            assert_eq!(back, x);
        }
    }
}
