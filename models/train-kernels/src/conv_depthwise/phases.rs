//! Depthwise convolution plane by plane: each plane is laid out zero padded and split by
//! stride phase ([`Phases`]), so that every tap is one contiguous multiply-add over the whole
//! plane; several small planes make one rayon task. The strategy for large planes at stride
//! 1, where the rows are long enough to vectorise (see [`super`]).

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
    fn crop_grid(&self, grid: &[f32], g: &ConvGeometry, y: &mut [f32]) {
        for (oh, row) in y.chunks_exact_mut(g.out_w).enumerate() {
            copy_row(row, &grid[oh * self.row_pitch..][..g.out_w]);
        }
    }

    /// Grid values from output plane `dy`. The columns past `out_w` are not written: a grid
    /// zeroed once keeps them zero for every plane.
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
#[inline]
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
/// starting at `starts`. A single tap's dot product waits on the previous add every
/// eight values (the add's latency, not its throughput, set its pace); `N` of them in one
/// pass overlap.
#[inline(always)]
fn dot_taps<const N: usize>(lanes: &mut [[f32; 8]], grid: &[f32], src: &[f32], starts: &[usize]) {
    let n = grid.len();
    let taps: [&[f32]; N] = core::array::from_fn(|t| &src[starts[t]..starts[t] + n]);
    let mut acc = [[0.0f32; 8]; N];
    let full = n - n % 8;
    let mut q = 0;
    while q < full {
        let g: &[f32; 8] = grid[q..q + 8].try_into().expect("eight grid values");
        for (acc, tap) in acc.iter_mut().zip(&taps) {
            let v: &[f32; 8] = tap[q..q + 8].try_into().expect("eight tap values");
            for lane in 0..8 {
                acc[lane] += g[lane] * v[lane];
            }
        }
        q += 8;
    }
    for (t, (acc, tap)) in acc.iter_mut().zip(&taps).enumerate() {
        for (lane, q) in (full..n).enumerate() {
            acc[lane] += grid[q] * tap[q];
        }
        for (sum, &a) in lanes[t].iter_mut().zip(acc.iter()) {
            *sum += a;
        }
    }
}

/// [`dot_taps`] for every tap, [`TAPS_PER_PASS`] or fewer at a time, in passes of even
/// size (9 taps: three passes of three, not 4 + 4 + 1).
#[inline(never)]
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

/// One plane of [`forward`]: `y` from `x` and its channel's `filter`.
#[inline(never)]
fn forward_plane(
    x: &[f32],
    filter: &[f32],
    g: &ConvGeometry,
    phases: &Phases,
    scratch: &mut [f32],
    grid: &mut [f32],
    y: &mut [f32],
) {
    phases.scatter(x, g, scratch);
    // The first tap sets the grid, the others add to it.
    for (o, &v) in grid.iter_mut().zip(scratch.iter()) {
        *o = filter[0] * v;
    }
    for i in 0..g.kh {
        for j in 0..g.kw {
            if i + j > 0 {
                let start = phases.tap_start(i, j);
                axpy(grid, filter[i * g.kw + j], &scratch[start..]);
            }
        }
    }
    phases.crop_grid(grid, g, y);
}

/// One plane of [`input_grad`]: `dx` from `dy` and its channel's `filter`.
#[inline(never)]
fn input_grad_plane(
    dy: &[f32],
    filter: &[f32],
    g: &ConvGeometry,
    phases: &Phases,
    scratch: &mut [f32],
    grid: &mut [f32],
    dx: &mut [f32],
) {
    // Each tap sends the gradient of every output back to the input it read; the grid's
    // dropped columns carry zeros.
    phases.spread_to_grid(dy, g, grid);
    scratch.fill(0.0);
    for i in 0..g.kh {
        for j in 0..g.kw {
            let start = phases.tap_start(i, j);
            axpy(
                &mut scratch[start..start + phases.grid],
                filter[i * g.kw + j],
                grid,
            );
        }
    }
    phases.gather(scratch, g, dx);
}

/// `y = depthwise(x, w)`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, out_h, out_w]`
pub(super) fn forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let phases = Phases::new(g);
    let scratch = || (vec![0.0f32; phases.len()], vec![0.0f32; phases.grid]);
    map_planes(
        x,
        in_plane,
        out_plane,
        planes_per_task(g, 1),
        1,
        scratch,
        |(scratch, grid), plane, x, y| {
            let channel = plane % g.in_channels;
            let filter = &w[channel * taps..][..taps];
            forward_plane(x, filter, g, &phases, scratch, grid, y);
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
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let phases = Phases::new(g);
    let scratch = || (vec![0.0f32; phases.len()], vec![0.0f32; phases.grid]);
    map_planes(
        dy,
        out_plane,
        in_plane,
        planes_per_task(g, 1),
        1,
        scratch,
        |(scratch, grid), plane, dy, dx| {
            let channel = plane % g.in_channels;
            let filter = &w[channel * taps..][..taps];
            input_grad_plane(dy, filter, g, &phases, scratch, grid, dx);
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
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let channels = g.in_channels;
    let phases = Phases::new(g);
    let starts: Vec<usize> = (0..g.kh)
        .flat_map(|i| (0..g.kw).map(move |j| (i, j)))
        .map(|(i, j)| phases.tap_start(i, j))
        .collect();
    let mut dw = vec![0.0f32; channels * taps];
    dw.par_chunks_mut(taps)
        .enumerate()
        .for_each(|(c, filter_grad)| {
            let mut scratch = vec![0.0f32; phases.len()];
            let mut grid = vec![0.0f32; phases.grid];
            let mut tap_lanes = vec![[0.0f32; 8]; taps];
            for n in 0..g.batch {
                let plane = n * channels + c;
                let x = &x[plane * in_plane..][..in_plane];
                let dy = &dy[plane * out_plane..][..out_plane];
                // One plane's share, added to the channel's per-tap lanes.
                phases.scatter(x, g, &mut scratch);
                phases.spread_to_grid(dy, g, &mut grid);
                dot_all_taps(&mut tap_lanes, &grid, &scratch, &starts);
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
