//! Depthwise convolution (one filter per channel, `groups == channels`) on `f32` NCHW slices:
//! the forward pass and both gradients as direct loops over image planes (rayon).
//!
//! burn's grouped convolution unfolds every group into a gemm of one channel, which leaves a
//! depthwise layer (k*k multiply-adds per output) dominated by overhead. Here each plane is
//! first laid out zero padded and split by stride phase ([`Phases`]), so that every tap is one
//! contiguous multiply-add over the whole plane; several small planes make one rayon task.

use rayon::prelude::*;

use crate::conv_gemm::ConvGeometry;

/// The geometry of a depthwise convolution of an input of `input` dims with a weight of
/// `weight` dims in `groups` groups, when these kernels cover it: one filter of one channel
/// per channel, no dilation, a kernel that fits the padded input. `None` otherwise.
pub fn geometry(
    input: [usize; 4],
    weight: [usize; 4],
    groups: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    dilation: [usize; 2],
) -> Option<ConvGeometry> {
    let [_, channels, in_h, in_w] = input;
    let [out_channels, per_group, kh, kw] = weight;
    let covered = groups == channels
        && out_channels == channels
        && per_group == 1
        && dilation == [1, 1]
        && kh > 0
        && kw > 0
        && stride[0] > 0
        && stride[1] > 0
        && in_h + 2 * padding[0] >= kh
        && in_w + 2 * padding[1] >= kw;
    covered.then(|| ConvGeometry::grouped(input, weight, groups, stride, padding, dilation))
}

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

    /// Writes input plane `x` into `phases`, zero padded.
    fn scatter(&self, x: &[f32], g: &ConvGeometry, phases: &mut [f32]) {
        phases.fill(0.0);
        let [ph, pw] = g.padding;
        for r in 0..g.in_h {
            let row = &x[r * g.in_w..][..g.in_w];
            if self.sw == 1 {
                let start = self.index(r + ph, pw);
                phases[start..start + g.in_w].copy_from_slice(row);
            } else {
                for (c, &v) in row.iter().enumerate() {
                    phases[self.index(r + ph, c + pw)] = v;
                }
            }
        }
    }

    /// Reads input plane `x` back out of `phases` (the inverse of [`Phases::scatter`]).
    fn gather(&self, phases: &[f32], g: &ConvGeometry, x: &mut [f32]) {
        let [ph, pw] = g.padding;
        for r in 0..g.in_h {
            let row = &mut x[r * g.in_w..][..g.in_w];
            if self.sw == 1 {
                let start = self.index(r + ph, pw);
                row.copy_from_slice(&phases[start..start + g.in_w]);
            } else {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = phases[self.index(r + ph, c + pw)];
                }
            }
        }
    }

    /// Output plane `y` from grid values `grid` (dropping the columns past `out_w`).
    fn from_grid(&self, grid: &[f32], g: &ConvGeometry, y: &mut [f32]) {
        for (oh, row) in y.chunks_exact_mut(g.out_w).enumerate() {
            row.copy_from_slice(&grid[oh * self.row_pitch..][..g.out_w]);
        }
    }

    /// Grid values from output plane `dy`, zero in the columns past `out_w`.
    fn to_grid(&self, dy: &[f32], g: &ConvGeometry, grid: &mut [f32]) {
        grid.fill(0.0);
        for (oh, row) in dy.chunks_exact(g.out_w).enumerate() {
            grid[oh * self.row_pitch..][..g.out_w].copy_from_slice(row);
        }
    }
}

/// Planes per rayon task: enough work per task (about 32K multiply-adds) that scheduling
/// stays small beside it on tiny planes.
fn planes_per_task(g: &ConvGeometry) -> usize {
    (32 * 1024 / (g.out_h * g.out_w * g.kh * g.kw).max(1)).max(1)
}

/// `acc[q] += tap * src[q]`.
#[inline]
fn axpy(acc: &mut [f32], tap: f32, src: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(src) {
        *a += tap * v;
    }
}

/// `sum(a[q] * b[q])` in eight `f32` lanes (which the compiler vectorises), then in `f64`.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for lane in 0..8 {
            lanes[lane] += ca[lane] * cb[lane];
        }
    }
    (lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64) as f32
}

/// `y = depthwise(x, w)`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, out_h, out_w]`
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let phases = Phases::new(g);
    let per_task = planes_per_task(g);
    let mut y = vec![0.0f32; g.batch * g.in_channels * out_plane];
    y.par_chunks_mut(out_plane * per_task)
        .zip(x.par_chunks(in_plane * per_task))
        .enumerate()
        .for_each(|(task, (y, x))| {
            let mut scratch = vec![0.0f32; phases.len()];
            let mut grid = vec![0.0f32; phases.grid];
            for (k, (y, x)) in y
                .chunks_exact_mut(out_plane)
                .zip(x.chunks_exact(in_plane))
                .enumerate()
            {
                let channel = (task * per_task + k) % g.in_channels;
                let filter = &w[channel * taps..][..taps];
                phases.scatter(x, g, &mut scratch);
                grid.fill(0.0);
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let start = phases.tap_start(i, j);
                        axpy(&mut grid, filter[i * g.kw + j], &scratch[start..]);
                    }
                }
                phases.from_grid(&grid, g, y);
            }
        });
    y
}

/// The gradient w.r.t. `x` given `dy`, the gradient w.r.t. the output.
///
/// # Shapes
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - `w`: `[channels, 1, kh, kw]`
/// - result: `[batch, channels, in_h, in_w]`
pub fn input_grad(dy: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let phases = Phases::new(g);
    let per_task = planes_per_task(g);
    let mut dx = vec![0.0f32; g.batch * g.in_channels * in_plane];
    dx.par_chunks_mut(in_plane * per_task)
        .zip(dy.par_chunks(out_plane * per_task))
        .enumerate()
        .for_each(|(task, (dx, dy))| {
            let mut scratch = vec![0.0f32; phases.len()];
            let mut grid = vec![0.0f32; phases.grid];
            for (k, (dx, dy)) in dx
                .chunks_exact_mut(in_plane)
                .zip(dy.chunks_exact(out_plane))
                .enumerate()
            {
                let channel = (task * per_task + k) % g.in_channels;
                let filter = &w[channel * taps..][..taps];
                // Each tap sends the gradient of every output back to the input it read;
                // the grid's dropped columns carry zeros.
                phases.to_grid(dy, g, &mut grid);
                scratch.fill(0.0);
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let start = phases.tap_start(i, j);
                        let target = &mut scratch[start..start + phases.grid];
                        axpy(target, filter[i * g.kw + j], &grid);
                    }
                }
                phases.gather(&scratch, g, dx);
            }
        });
    dx
}

/// The gradient w.r.t. the weight given `dy`.
///
/// # Shapes
/// - `x`: `[batch, channels, in_h, in_w]`
/// - `dy`: `[batch, channels, out_h, out_w]`
/// - result: `[channels, 1, kh, kw]`
pub fn weight_grad(x: &[f32], dy: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (g.in_h * g.in_w, g.out_h * g.out_w, g.kh * g.kw);
    let channels = g.in_channels;
    let phases = Phases::new(g);
    let mut dw = vec![0.0f32; channels * taps];
    dw.par_chunks_mut(taps)
        .enumerate()
        .for_each(|(c, filter_grad)| {
            let mut scratch = vec![0.0f32; phases.len()];
            let mut grid = vec![0.0f32; phases.grid];
            for n in 0..g.batch {
                let plane = n * channels + c;
                phases.scatter(&x[plane * in_plane..][..in_plane], g, &mut scratch);
                phases.to_grid(&dy[plane * out_plane..][..out_plane], g, &mut grid);
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let start = phases.tap_start(i, j);
                        filter_grad[i * g.kw + j] +=
                            dot(&grid, &scratch[start..start + phases.grid]);
                    }
                }
            }
        });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tap of every output reads, through the phases, the padded input pixel it would
    /// read directly, and no read leaves the buffer.
    #[test]
    fn the_phases_hold_what_each_tap_reads() {
        for stride in [[1, 1], [2, 2], [2, 1], [1, 3]] {
            for padding in [[0, 0], [1, 1], [3, 2]] {
                for (in_h, in_w, k) in [(5, 5, 3), (2, 2, 7), (7, 6, 5), (3, 2, 3)] {
                    if in_h + 2 * padding[0] < k || in_w + 2 * padding[1] < k {
                        continue;
                    }
                    let g = ConvGeometry::grouped(
                        [1, 1, in_h, in_w],
                        [1, 1, k, k],
                        1,
                        stride,
                        padding,
                        [1, 1],
                    );
                    let phases = Phases::new(&g);
                    let x: Vec<f32> = (0..in_h * in_w).map(|v| v as f32 + 1.0).collect();
                    let mut buffer = vec![f32::NAN; phases.len()];
                    phases.scatter(&x, &g, &mut buffer);
                    let padded = |r: usize, c: usize| -> f32 {
                        let (r, c) = (
                            r as isize - padding[0] as isize,
                            c as isize - padding[1] as isize,
                        );
                        if r < 0 || c < 0 || r >= in_h as isize || c >= in_w as isize {
                            0.0
                        } else {
                            x[r as usize * in_w + c as usize]
                        }
                    };
                    for i in 0..k {
                        for j in 0..k {
                            let start = phases.tap_start(i, j);
                            assert!(start + phases.grid <= phases.len());
                            for oh in 0..g.out_h {
                                for ow in 0..g.out_w {
                                    let q = oh * phases.row_pitch + ow;
                                    assert_eq!(
                                        buffer[start + q],
                                        padded(oh * stride[0] + i, ow * stride[1] + j),
                                        "{stride:?} {padding:?} {in_h}x{in_w} k{k} tap {i},{j} out {oh},{ow}"
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
    }
}
