//! A 2-D convolution as im2col + one gemm per group of images, in all three directions of
//! training.
//!
//! burn's CPU backend (flex) computes the weight gradient generically, as a convolution of the
//! input with the output gradient as the kernel, which it runs as one skinny gemm per input
//! channel (BENCHMARKS.md, "CPU backends"). Here every direction is the textbook lowering,
//! with the columns of a group of images built once and shared by a single gemm:
//!
//! - forward: `y[O, G*L] = W[O, K] * col[K, G*L]`
//! - weight gradient: `dW[O, K] = sum over groups of dy[O, G*L] * col[K, G*L]^T` (computed as
//!   `dW^T` where that spares the gemm packing the tall col)
//! - input gradient: `dcol[K, G*L] = W[O, K]^T * dy[O, G*L]`, scattered back by col2im; with
//!   stride 1, on planes of 14x14 or more and layers that do not widen, the forward
//!   convolution of `dy` with the flipped kernel instead, whose columns of `dy` then give the
//!   weight gradient too when both are wanted ([`conv2d_grads`])
//!
//! where `K = in_channels * kh * kw`, `L = out_h * out_w` and `G` images side by side make
//! the gemm at least [`MIN_GEMM_COLUMNS`] wide (one image at 28x28, several in the small late
//! layers, where a gemm per image would be too narrow to run at speed). Groups run in
//! parallel (rayon); each gemm runs on one thread. Tensors are contiguous NCHW `f32` slices;
//! groups of channels are not supported (callers fall back to burn's kernels for them).
//! Outputs are not zeroed before the gemm overwrites them and the columns live in per-thread
//! scratch ([`crate::kernel_buffers`]).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::kernel_buffers::{Unwritten, with_scratch, written};

/// The narrowest gemm (in output positions) worth running: narrower layers put several images
/// side by side.
pub const MIN_GEMM_COLUMNS: usize = 512;

/// The shape of one convolution: input, kernel and output sizes, stride, padding, dilation.
///
/// # Shapes
/// - input: `[batch, in_channels, in_h, in_w]`
/// - weight: `[out_channels, in_channels, kh, kw]`
/// - output: `[batch, out_channels, out_h, out_w]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_channels: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeometry {
    /// The geometry of a convolution of an input of `input` dims with a weight of `weight`
    /// dims; the output size follows from stride, padding and dilation.
    pub fn new(
        input: [usize; 4],
        weight: [usize; 4],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> Self {
        Self::grouped(input, weight, 1, stride, padding, dilation)
    }

    /// [`ConvGeometry::new`] for a convolution in `groups` groups, whose weight holds
    /// `in_channels / groups` input channels per filter (a depthwise conv: one).
    pub fn grouped(
        input: [usize; 4],
        weight: [usize; 4],
        groups: usize,
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
    ) -> Self {
        let [batch, in_channels, in_h, in_w] = input;
        let [out_channels, weight_in, kh, kw] = weight;
        assert_eq!(
            weight_in * groups,
            in_channels,
            "conv_gemm: the weight's input channels times the groups must match the input"
        );
        let out = |size: usize, k: usize, axis: usize| {
            (size + 2 * padding[axis] - dilation[axis] * (k - 1) - 1) / stride[axis] + 1
        };
        Self {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kh,
            kw,
            stride,
            padding,
            dilation,
            out_h: out(in_h, kh, 0),
            out_w: out(in_w, kw, 1),
        }
    }

    /// Rows of an image's column matrix: `in_channels * kh * kw`.
    pub fn patch(&self) -> usize {
        self.in_channels * self.kh * self.kw
    }

    /// Columns of an image's column matrix: `out_h * out_w`.
    pub fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Panics, naming `context`, unless `input` holds `batch` input images.
    pub(crate) fn check_input(&self, input: &[f32], context: &str) {
        assert_eq!(
            input.len(),
            self.batch * self.image_len(),
            "{context}: input"
        );
    }

    /// Panics, naming `context`, unless `output_grad` holds `batch` output images.
    pub(crate) fn check_output_grad(&self, output_grad: &[f32], context: &str) {
        let expected = self.batch * self.output_len();
        assert_eq!(output_grad.len(), expected, "{context}: output_grad");
    }

    /// Panics, naming `context`, unless `weight` holds `[out_channels, patch]`.
    pub(crate) fn check_weight(&self, weight: &[f32], context: &str) {
        assert_eq!(
            weight.len(),
            self.out_channels * self.patch(),
            "{context}: weight"
        );
    }

    pub(crate) fn image_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    pub(crate) fn output_len(&self) -> usize {
        self.out_channels * self.positions()
    }

    /// Floats of the `[out_channels, count * L]` buffer a group of `count` images goes
    /// through; none when images run one at a time (their gemm reads and writes in place).
    fn side_by_side_len(&self, count: usize) -> usize {
        if count > 1 {
            self.out_channels * count * self.positions()
        } else {
            0
        }
    }

    /// Images per gemm: enough for [`MIN_GEMM_COLUMNS`] columns, at least one, no more than
    /// an even share of the batch per thread.
    fn group(&self) -> usize {
        let wanted = MIN_GEMM_COLUMNS.div_ceil(self.positions().max(1));
        let share = self.batch.div_ceil(rayon::current_num_threads().max(1));
        wanted.min(share).max(1)
    }

    /// With stride 1, the geometry of the forward convolution that computes this one's input
    /// gradient: the output gradient `[N, O, out_h, out_w]` convolved with the flipped kernel
    /// `[C, O, kh, kw]` (same dilation, padding `dilation * (k - 1) - padding`) gives
    /// `[N, C, in_h, in_w]`. None for other strides, or where the padding exceeds the
    /// kernel's reach (the flipped padding would be negative).
    pub fn input_grad_as_forward(&self) -> Option<ConvGeometry> {
        let reach = [
            self.dilation[0] * (self.kh - 1),
            self.dilation[1] * (self.kw - 1),
        ];
        if self.stride != [1, 1] || self.padding[0] > reach[0] || self.padding[1] > reach[1] {
            return None;
        }
        let flipped = ConvGeometry::new(
            [self.batch, self.out_channels, self.out_h, self.out_w],
            [self.in_channels, self.out_channels, self.kh, self.kw],
            [1, 1],
            [reach[0] - self.padding[0], reach[1] - self.padding[1]],
            self.dilation,
        );
        debug_assert_eq!((flipped.out_h, flipped.out_w), (self.in_h, self.in_w));
        Some(flipped)
    }

    /// [`Self::input_grad_as_forward`] where that pays: its im2col is `O * kh * kw` rows deep
    /// where col2im's columns are `C * kh * kw`, so on layers that do not widen, with planes
    /// large enough for im2col to run at speed (measured at 28x28 and 14x14; slower at 2x2;
    /// BENCHMARKS.md, "Per convolution against PyTorch").
    fn flipped_input_grad(&self) -> Option<ConvGeometry> {
        self.input_grad_as_forward()
            .filter(|_| self.out_channels <= self.in_channels && self.positions() >= 14 * 14)
    }

    /// For kernel offset `k` along an axis, the output range whose input index
    /// `o * stride - padding + k * dilation` lies inside `0..size`, and that index at its start.
    fn valid(&self, axis: usize, k: usize, size: usize, out: usize) -> (usize, usize) {
        let (s, p, d) = (self.stride[axis], self.padding[axis], self.dilation[axis]);
        let offset = k * d;
        // First o with o * s + offset >= p.
        let start = if offset >= p {
            0
        } else {
            (p - offset).div_ceil(s)
        };
        // Last o with o * s + offset - p < size, i.e. o * s < size + p - offset.
        let end = if size + p > offset {
            ((size + p - offset - 1) / s + 1).min(out)
        } else {
            0
        };
        (start.min(end), end)
    }
}

/// The valid output ranges `(start, end)` of every kernel offset along an axis (see
/// [`ConvGeometry::valid`]), computed once per image rather than once per channel.
fn valid_ranges(g: &ConvGeometry, axis: usize) -> Vec<(usize, usize)> {
    let (k, size, out) = match axis {
        0 => (g.kh, g.in_h, g.out_h),
        _ => (g.kw, g.in_w, g.out_w),
    };
    (0..k)
        .map(|offset| g.valid(axis, offset, size, out))
        .collect()
}

/// Whether every window row is the input row shifted by one offset (stride 1 and output rows
/// as wide as the input's): a kernel offset's window over a plane is then one run of the
/// plane, whose elements that wrap around the ends of rows are the only exceptions.
fn whole_rows(g: &ConvGeometry) -> bool {
    g.stride == [1, 1] && g.out_w == g.in_w
}

/// Writes the column matrix `[K, L]` of one image `[in_channels, in_h, in_w]` into `col`,
/// row `r` at `col[r * row_stride..][..L]` (`row_stride` > L when images sit side by side).
/// Every element of those rows is written: the image or, where the kernel reaches into the
/// padding, zero.
fn im2col(image: &[f32], g: &ConvGeometry, col: &mut [f32], row_stride: usize) {
    let positions = g.positions();
    let (rows, columns) = (valid_ranges(g, 0), valid_ranges(g, 1));
    let mut row = 0;
    for plane in image.chunks_exact(g.in_h * g.in_w).take(g.in_channels) {
        for (i, &(y0, y1)) in rows.iter().enumerate() {
            for (j, &(x0, x1)) in columns.iter().enumerate() {
                let dst = &mut col[row * row_stride..row * row_stride + positions];
                row += 1;
                if x0 >= x1 || y0 >= y1 {
                    dst.fill(0.0);
                    continue;
                }
                // Zero only the padding: the rest is overwritten by the copies below.
                dst[..y0 * g.out_w].fill(0.0);
                dst[y1 * g.out_w..].fill(0.0);
                let ix0 = x0 * g.stride[1] + j * g.dilation[1] - g.padding[1];
                if whole_rows(g) {
                    // One copy of the whole run, whose wrapped-around ends of rows are then
                    // zeroed (a copy per 28-float row spent more on calls than copying).
                    let w = g.in_w;
                    let (start, end) = (y0 * w + x0, (y1 - 1) * w + x1);
                    let src = (y0 + i * g.dilation[0] - g.padding[0]) * w + ix0;
                    dst[start..end].copy_from_slice(&plane[src..src + (end - start)]);
                    zero_wrapped_columns(&mut dst[y0 * w..y1 * w], w, x0, x1);
                    continue;
                }
                for oy in y0..y1 {
                    let iy = oy * g.stride[0] + i * g.dilation[0] - g.padding[0];
                    let src_row = &plane[iy * g.in_w..(iy + 1) * g.in_w];
                    let dst_row = &mut dst[oy * g.out_w..(oy + 1) * g.out_w];
                    dst_row[..x0].fill(0.0);
                    dst_row[x1..].fill(0.0);
                    if g.stride[1] == 1 {
                        dst_row[x0..x1].copy_from_slice(&src_row[ix0..ix0 + (x1 - x0)]);
                    } else {
                        for (n, ox) in (x0..x1).enumerate() {
                            dst_row[ox] = src_row[ix0 + n * g.stride[1]];
                        }
                    }
                }
            }
        }
    }
}

/// Zeroes the columns outside `x0..x1` of every `width`-wide row of `rows`: one strided pass
/// per column (one or two columns for a padding of 1), not a branchy call per row.
fn zero_wrapped_columns(rows: &mut [f32], width: usize, x0: usize, x1: usize) {
    for column in (0..x0).chain(x1..width) {
        for value in rows[column..].iter_mut().step_by(width) {
            *value = 0.0;
        }
    }
}

/// Adds the column matrix `[K, L]` back onto one image's gradient (the adjoint of [`im2col`],
/// with the same `row_stride`). `col` is scratch: its elements that fall into the padding may
/// be overwritten with zeros.
fn col2im(col: &mut [f32], g: &ConvGeometry, image: &mut [f32], row_stride: usize) {
    let positions = g.positions();
    let (rows, columns) = (valid_ranges(g, 0), valid_ranges(g, 1));
    let mut row = 0;
    for plane in image.chunks_exact_mut(g.in_h * g.in_w).take(g.in_channels) {
        for (i, &(y0, y1)) in rows.iter().enumerate() {
            for (j, &(x0, x1)) in columns.iter().enumerate() {
                let src = &mut col[row * row_stride..row * row_stride + positions];
                row += 1;
                if x0 >= x1 || y0 >= y1 {
                    continue;
                }
                let ix0 = x0 * g.stride[1] + j * g.dilation[1] - g.padding[1];
                if whole_rows(g) {
                    // As in im2col: one run, after zeroing the column entries that wrap around
                    // the ends of rows (they read the padding, so they add nothing).
                    let w = g.in_w;
                    zero_wrapped_columns(&mut src[y0 * w..y1 * w], w, x0, x1);
                    let (start, end) = (y0 * w + x0, (y1 - 1) * w + x1);
                    let first = (y0 + i * g.dilation[0] - g.padding[0]) * w + ix0;
                    let dst = &mut plane[first..first + (end - start)];
                    for (d, &s) in dst.iter_mut().zip(&src[start..end]) {
                        *d += s;
                    }
                    continue;
                }
                for oy in y0..y1 {
                    let iy = oy * g.stride[0] + i * g.dilation[0] - g.padding[0];
                    let dst_row = &mut plane[iy * g.in_w..(iy + 1) * g.in_w];
                    let src_row = &src[oy * g.out_w..(oy + 1) * g.out_w];
                    if g.stride[1] == 1 {
                        // Contiguous on both sides: a loop the compiler vectorises.
                        let dst = &mut dst_row[ix0..ix0 + (x1 - x0)];
                        for (d, &s) in dst.iter_mut().zip(&src_row[x0..x1]) {
                            *d += s;
                        }
                    } else {
                        for (n, ox) in (x0..x1).enumerate() {
                            dst_row[ix0 + n * g.stride[1]] += src_row[ox];
                        }
                    }
                }
            }
        }
    }
}

/// The operands of one gemm `dst[m, n] (+)= lhs[m, k] * rhs[k, n]` on one thread; strides
/// are (row, column) in elements.
#[derive(Clone, Copy)]
pub(crate) struct Gemm<'a> {
    pub(crate) m: usize,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) lhs: &'a [f32],
    pub(crate) lhs_strides: [usize; 2],
    pub(crate) rhs: &'a [f32],
    pub(crate) rhs_strides: [usize; 2],
}

impl Gemm<'_> {
    /// Checks that every index the strides can form lies inside the operands and that `dst`
    /// holds `m * n` elements.
    fn check(&self, dst_len: usize) {
        let last = |strides: [usize; 2], rows: usize, cols: usize| {
            (rows - 1) * strides[0] + (cols - 1) * strides[1]
        };
        assert!(self.m > 0 && self.n > 0 && self.k > 0, "gemm: empty matrix");
        assert!(dst_len >= self.m * self.n, "gemm: dst too small");
        assert!(
            self.lhs.len() > last(self.lhs_strides, self.m, self.k),
            "gemm: lhs too small"
        );
        assert!(
            self.rhs.len() > last(self.rhs_strides, self.k, self.n),
            "gemm: rhs too small"
        );
    }

    /// # Safety
    /// `dst` must be valid for writes of `m * n` row-major elements, initialised when
    /// `accumulate`, and alias neither operand; [`Self::check`] must have passed.
    unsafe fn run(&self, dst: *mut f32, accumulate: bool) {
        // SAFETY: the caller's contract plus `check` keep every access in bounds;
        // without `accumulate` gemm writes `dst` without reading it.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                dst,
                1,
                self.n as isize,
                accumulate,
                self.lhs.as_ptr(),
                self.lhs_strides[1] as isize,
                self.lhs_strides[0] as isize,
                self.rhs.as_ptr(),
                self.rhs_strides[1] as isize,
                self.rhs_strides[0] as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }

    /// `dst = lhs * rhs`, or `dst += lhs * rhs` when `accumulate`.
    pub(crate) fn store(&self, dst: &mut [f32], accumulate: bool) {
        self.check(dst.len());
        // SAFETY: `dst` is an initialised slice of at least m * n elements (checked),
        // borrowed mutably, so it aliases neither operand.
        unsafe { self.run(dst.as_mut_ptr(), accumulate) }
    }

    /// `dst = lhs * rhs` into slots not yet written; all `m * n` of them are written.
    fn store_unwritten(&self, dst: &mut [MaybeUninit<f32>]) {
        self.check(dst.len());
        // SAFETY: as in `store`; gemm does not read `dst` when not accumulating, so its
        // slots may be uninitialised, and `MaybeUninit<f32>` has the layout of `f32`.
        unsafe { self.run(dst.as_mut_ptr().cast::<f32>(), false) }
    }
}

/// Puts the `[rows, L]` blocks of consecutive images (one after the other in `images`) side
/// by side in `wide` `[rows, count * L]`.
fn gather_side_by_side(images: &[f32], wide: &mut [f32], rows: usize, positions: usize) {
    let count = images.len() / (rows * positions);
    let width = count * positions;
    for (image, block) in images.chunks(rows * positions).enumerate() {
        for (row, src) in block.chunks(positions).enumerate() {
            wide[row * width + image * positions..][..positions].copy_from_slice(src);
        }
    }
}

/// The inverse of [`gather_side_by_side`]: `wide` `[rows, count * L]` back to consecutive
/// `[rows, L]` blocks in `images`, every slot of which is written.
fn scatter_side_by_side(
    wide: &[f32],
    images: &mut [MaybeUninit<f32>],
    rows: usize,
    positions: usize,
) {
    let count = images.len() / (rows * positions);
    let width = count * positions;
    for (image, block) in images.chunks_mut(rows * positions).enumerate() {
        for (row, dst) in block.chunks_mut(positions).enumerate() {
            let src = &wide[row * width + image * positions..][..positions];
            for (d, &s) in dst.iter_mut().zip(src) {
                d.write(s);
            }
        }
    }
}

/// The forward convolution: `input` `[N, C, H, W]`, `weight` `[O, C, kh, kw]`, an optional
/// `bias` `[O]`; returns `[N, O, out_h, out_w]`.
pub fn conv2d_forward(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    g.check_input(input, "conv2d_forward");
    g.check_weight(weight, "conv2d_forward");
    let (k, l, group) = (g.patch(), g.positions(), g.group());
    let mut output = Unwritten::new(g.batch * g.output_len());
    output
        .slots()
        .par_chunks_mut(group * g.output_len())
        .zip(input.par_chunks(group * g.image_len()))
        .for_each(|(out, images)| {
            let width = images.len() / g.image_len() * l;
            with_scratch(k * width + g.side_by_side_len(width / l), |scratch| {
                let (col, y) = scratch.split_at_mut(k * width);
                forward_group(images, weight, bias, g, col, y, out);
            });
        });
    // SAFETY: the chunks cover the output, and `forward_group` wrote each chunk whole.
    unsafe { output.assume_written() }
}

/// The forward convolution of one group of images (consecutive in `images`) into `out`, every
/// slot of which is written; their columns are left in `col` (`[K, G*L]`), and a group of
/// more than one image goes through `y` (at least `[O, G*L]`) on its way to `out`.
fn forward_group(
    images: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    g: &ConvGeometry,
    col: &mut [f32],
    y: &mut [f32],
    out: &mut [MaybeUninit<f32>],
) {
    let (k, l) = (g.patch(), g.positions());
    let count = images.len() / g.image_len();
    let width = count * l;
    for (n, image) in images.chunks(g.image_len()).enumerate() {
        im2col(image, g, &mut col[n * l..], width);
    }
    // y[O, G*L] = W[O, K] * col[K, G*L] (+ bias per row)
    let product = Gemm {
        m: g.out_channels,
        n: width,
        k,
        lhs: weight,
        lhs_strides: [k, 1],
        rhs: &col[..k * width],
        rhs_strides: [width, 1],
    };
    let y = &mut y[..if count > 1 { g.out_channels * width } else { 0 }];
    match (count, bias) {
        (1, None) => product.store_unwritten(out),
        (1, Some(bias)) => product.store(written(out, |i| bias[i / width]), true),
        (_, None) => product.store(y, false),
        (_, Some(bias)) => {
            for (row, &b) in y.chunks_mut(width).zip(bias) {
                row.fill(b);
            }
            product.store(y, true);
        }
    }
    if count > 1 {
        scatter_side_by_side(y, out, g.out_channels, l);
    }
}

/// Splits `0..batch` into one even share per thread, runs `partial(share, sum)` on each with
/// a zeroed `sum` of `len` floats, and returns the sum of those partial sums: each share's
/// gemms accumulate into memory no other thread touches.
pub(crate) fn sum_over_batch_shares(
    batch: usize,
    len: usize,
    partial: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let shares = rayon::current_num_threads().clamp(1, batch.max(1));
    let per_share = batch.div_ceil(shares);
    let partials: Vec<Vec<f32>> = (0..shares)
        .into_par_iter()
        .map(|share| {
            let mut sum = vec![0.0; len];
            partial(
                share * per_share..((share + 1) * per_share).min(batch),
                &mut sum,
            );
            sum
        })
        .collect();
    add_up(partials, len)
}

/// The element-wise sum of per-thread partial sums of `len` floats each.
fn add_up(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut partials = partials.into_iter();
    let mut sum = partials.next().unwrap_or_else(|| vec![0.0; len]);
    for partial in partials {
        for (a, b) in sum.iter_mut().zip(partial) {
            *a += b;
        }
    }
    sum
}

/// The weight gradient: `input` `[N, C, H, W]` and `output_grad` `[N, O, out_h, out_w]`;
/// returns `[O, C, kh, kw]`.
pub fn conv2d_weight_grad(input: &[f32], output_grad: &[f32], g: &ConvGeometry) -> Vec<f32> {
    g.check_input(input, "conv2d_weight_grad");
    g.check_output_grad(output_grad, "conv2d_weight_grad");
    let (k, l, group) = (g.patch(), g.positions(), g.group());
    let weight_len = g.out_channels * k;
    // gemm packs the operand that runs along its output's rows, in the orientation that has
    // unit stride: dW[O, K] has it packing col (K rows), dW^T[K, O] the O-row dy, which is
    // cheaper while O is well below K. Past a few hundred output channels the unpacked col
    // it then streams costs more (measured in BENCHMARKS.md, "Per convolution against PyTorch").
    let transposed = g.out_channels <= 256 && k >= g.out_channels;
    let sum = sum_over_batch_shares(g.batch, weight_len, |images, grad| {
        with_scratch(k * group * l + g.side_by_side_len(group), |scratch| {
            let (col, dy_group) = scratch.split_at_mut(k * group * l);
            let starts = images.clone().step_by(group);
            for (step, first) in starts.enumerate() {
                let count = group.min(images.end - first);
                let width = count * l;
                for n in 0..count {
                    let image = &input[(first + n) * g.image_len()..][..g.image_len()];
                    im2col(image, g, &mut col[n * l..], width);
                }
                let grads = &output_grad[first * g.output_len()..][..count * g.output_len()];
                let dy = if count == 1 {
                    grads
                } else {
                    gather_side_by_side(grads, dy_group, g.out_channels, l);
                    &dy_group[..g.out_channels * width]
                };
                let col = &col[..k * width];
                let product = if transposed {
                    // dW^T[K, O] += col[K, G*L] * dy[O, G*L]^T
                    Gemm {
                        m: k,
                        n: g.out_channels,
                        k: width,
                        lhs: col,
                        lhs_strides: [width, 1],
                        rhs: dy,
                        rhs_strides: [1, width],
                    }
                } else {
                    // dW[O, K] += dy[O, G*L] * col[K, G*L]^T
                    Gemm {
                        m: g.out_channels,
                        n: k,
                        k: width,
                        lhs: dy,
                        lhs_strides: [width, 1],
                        rhs: col,
                        rhs_strides: [1, width],
                    }
                };
                product.store(grad, step > 0);
            }
        });
    });
    if !transposed {
        return sum;
    }
    // dW^T[K, O] -> dW[O, K]
    transpose(&sum, k, g.out_channels)
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` matrix.
fn transpose(matrix: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| matrix[(i % rows) * cols + i / rows])
        .collect()
}

/// The input gradient: `output_grad` `[N, O, out_h, out_w]` and `weight` `[O, C, kh, kw]`;
/// returns `[N, C, H, W]`.
///
/// With stride 1 it is the forward convolution of the output gradient with the kernel
/// flipped and its channel axes swapped ([`ConvGeometry::input_grad_as_forward`]): one
/// im2col + gemm with `O * kh * kw` deep products, instead of a gemm only `O` deep whose
/// `[K, L]` result col2im then adds back, which wrote and read as much again.
pub fn conv2d_input_grad(output_grad: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    g.check_output_grad(output_grad, "conv2d_input_grad");
    g.check_weight(weight, "conv2d_input_grad");
    match g.flipped_input_grad() {
        Some(flipped) => conv2d_forward(output_grad, &flip_kernel(weight, g), None, &flipped),
        None => input_grad_by_col2im(output_grad, weight, g),
    }
}

/// Both gradients, `(input_grad, weight_grad)`, as [`conv2d_input_grad`] and
/// [`conv2d_weight_grad`] give them. Where the input gradient is the flipped forward
/// convolution, the columns of `dy` it builds serve the weight gradient too: `dW` is then
/// `x[C, L] * col(dy)[O * kh * kw, L]^T` turned back (the kernel flipped and its channel axes
/// swapped), which spares the im2col of `x`.
pub fn conv2d_grads(
    input: &[f32],
    output_grad: &[f32],
    weight: &[f32],
    g: &ConvGeometry,
) -> (Vec<f32>, Vec<f32>) {
    let Some(f) = g.flipped_input_grad() else {
        return (
            conv2d_input_grad(output_grad, weight, g),
            conv2d_weight_grad(input, output_grad, g),
        );
    };
    g.check_input(input, "conv2d_grads");
    g.check_output_grad(output_grad, "conv2d_grads");
    g.check_weight(weight, "conv2d_grads");
    let flipped_weight = flip_kernel(weight, g);
    let (c, k, l, group) = (g.in_channels, f.patch(), f.positions(), f.group());
    let shares = rayon::current_num_threads().clamp(1, g.batch.max(1));
    let per_share = g.batch.div_ceil(shares);
    let mut input_grad = Unwritten::new(g.batch * g.image_len());
    let partials: Vec<Vec<f32>> = input_grad
        .slots()
        .par_chunks_mut(per_share * g.image_len())
        .enumerate()
        .map(|(share, dx_share)| {
            // dW'[C, K'] of this share's images, K' = O * kh * kw.
            let mut flipped_grad = vec![0.0; c * k];
            let wide = c * group * l;
            with_scratch(k * group * l + 2 * wide, |scratch| {
                let (col, rest) = scratch.split_at_mut(k * group * l);
                let (y, x_group) = rest.split_at_mut(wide);
                for (step, dx) in dx_share.chunks_mut(group * g.image_len()).enumerate() {
                    let first = share * per_share + step * group;
                    let count = dx.len() / g.image_len();
                    let width = count * l;
                    // dx = the flipped forward convolution of dy, leaving col(dy) in `col`.
                    let dy = &output_grad[first * g.output_len()..][..count * g.output_len()];
                    forward_group(dy, &flipped_weight, None, &f, col, y, dx);
                    let col = &col[..k * width];
                    let images = &input[first * g.image_len()..][..count * g.image_len()];
                    let x = if count == 1 {
                        images
                    } else {
                        gather_side_by_side(images, &mut x_group[..c * width], c, l);
                        &x_group[..c * width]
                    };
                    // dW'^T[K', C] += col[K', G*L] * x[C, G*L]^T (the orientation that packs
                    // the C-row x, as in conv2d_weight_grad)
                    Gemm {
                        m: k,
                        n: c,
                        k: width,
                        lhs: col,
                        lhs_strides: [width, 1],
                        rhs: x,
                        rhs_strides: [1, width],
                    }
                    .store(&mut flipped_grad, step > 0);
                }
            });
            flipped_grad
        })
        .collect();
    let flipped_grad = add_up(partials, c * k);
    // SAFETY: the chunks cover the gradient; each group's slots were written, by the
    // gemm (one image) or by `scatter_side_by_side` (a group).
    let input_grad = unsafe { input_grad.assume_written() };
    // dW'^T[K', C] -> dW'[C, O, kh, kw], flipped back to dW[O, C, kh, kw].
    (input_grad, flip_kernel(&transpose(&flipped_grad, k, c), &f))
}

/// `weight` `[O, C, kh, kw]` as `[C, O, kh, kw]` with each kernel turned by 180 degrees: the
/// weight of the convolution that maps an output gradient to the input gradient (stride 1).
fn flip_kernel(weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (kh, kw) = (g.kh, g.kw);
    let mut flipped = vec![0.0; weight.len()];
    for c in 0..g.in_channels {
        for o in 0..g.out_channels {
            let src = &weight[(o * g.in_channels + c) * kh * kw..][..kh * kw];
            let dst = &mut flipped[(c * g.out_channels + o) * kh * kw..][..kh * kw];
            for (d, &s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = s;
            }
        }
    }
    flipped
}

/// The input gradient as `dcol = W^T * dy` and col2im (any stride).
fn input_grad_by_col2im(output_grad: &[f32], weight: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (k, l, group) = (g.patch(), g.positions(), g.group());
    let mut input_grad = Unwritten::new(g.batch * g.image_len());
    input_grad
        .slots()
        .par_chunks_mut(group * g.image_len())
        .zip(output_grad.par_chunks(group * g.output_len()))
        .for_each(|(images, dy)| {
            let count = images.len() / g.image_len();
            let width = count * l;
            with_scratch(k * width + g.side_by_side_len(count), |scratch| {
                let (col, dy_group) = scratch.split_at_mut(k * width);
                let dy = if count == 1 {
                    dy
                } else {
                    gather_side_by_side(dy, dy_group, g.out_channels, l);
                    &dy_group[..]
                };
                // dcol[K, G*L] = W[O, K]^T * dy[O, G*L]
                Gemm {
                    m: k,
                    n: width,
                    k: g.out_channels,
                    lhs: weight,
                    lhs_strides: [1, k],
                    rhs: dy,
                    rhs_strides: [width, 1],
                }
                .store(col, false);
                // col2im adds overlapping windows up: the images start at zero, zeroed here by
                // the thread that fills them rather than by the allocation.
                let images = written(images, |_| 0.0);
                for (n, image) in images.chunks_mut(g.image_len()).enumerate() {
                    col2im(&mut col[n * l..], g, image, width);
                }
            });
        });
    // SAFETY: the chunks cover the gradient and `written` initialised each of them.
    unsafe { input_grad.assume_written() }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The convolution by its definition, for checking.
    fn naive_forward(x: &[f32], w: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut y = vec![0.0; g.batch * g.output_len()];
        for n in 0..g.batch {
            for o in 0..g.out_channels {
                for oy in 0..g.out_h {
                    for ox in 0..g.out_w {
                        let mut acc = 0.0;
                        for c in 0..g.in_channels {
                            for i in 0..g.kh {
                                for j in 0..g.kw {
                                    let iy = (oy * g.stride[0] + i * g.dilation[0]) as isize
                                        - g.padding[0] as isize;
                                    let ix = (ox * g.stride[1] + j * g.dilation[1]) as isize
                                        - g.padding[1] as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= g.in_h as isize
                                        || ix >= g.in_w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * g.in_channels + c) * g.in_h + iy as usize)
                                        * g.in_w
                                        + ix as usize;
                                    let wi = ((o * g.in_channels + c) * g.kh + i) * g.kw + j;
                                    acc += x[xi] * w[wi];
                                }
                            }
                        }
                        y[((n * g.out_channels + o) * g.out_h + oy) * g.out_w + ox] = acc;
                    }
                }
            }
        }
        y
    }

    /// `len` deterministic values in [-0.5, 0.5) from `seed` (other test modules use them).
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic, no dependency.
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
    }

    fn geometries() -> Vec<ConvGeometry> {
        vec![
            ConvGeometry::new([2, 3, 7, 6], [4, 3, 3, 3], [1, 1], [1, 1], [1, 1]),
            ConvGeometry::new([3, 2, 9, 8], [5, 2, 3, 2], [2, 3], [1, 2], [1, 1]),
            ConvGeometry::new([1, 4, 10, 10], [3, 4, 3, 3], [1, 2], [2, 0], [2, 1]),
            ConvGeometry::new([2, 5, 4, 4], [6, 5, 1, 1], [1, 1], [0, 0], [1, 1]),
            // Batches that put several images side by side in one gemm (with a short last group
            // in the second), whatever the number of threads.
            ConvGeometry::new([8, 3, 5, 5], [4, 3, 3, 3], [1, 1], [1, 1], [1, 1]),
            ConvGeometry::new([7, 2, 6, 4], [3, 2, 3, 3], [2, 1], [1, 1], [1, 1]),
            // Padding wider than the kernel reaches: some kernel rows see only zeros.
            ConvGeometry::new([1, 1, 2, 3], [2, 1, 3, 3], [1, 1], [3, 3], [1, 1]),
            // Output rows as wide as the input's (one run per kernel offset) with dilation,
            // and with padding along x only.
            ConvGeometry::new([2, 2, 6, 5], [3, 2, 3, 3], [1, 1], [2, 2], [2, 2]),
            ConvGeometry::new([1, 2, 5, 6], [2, 2, 3, 3], [1, 1], [0, 1], [1, 1]),
            // Planes large enough, and layers narrow enough, for the input gradient as a
            // forward convolution with the flipped kernel, padded evenly and not.
            ConvGeometry::new([2, 4, 14, 14], [3, 4, 3, 3], [1, 1], [1, 1], [1, 1]),
            ConvGeometry::new([1, 3, 16, 15], [2, 3, 3, 3], [1, 1], [2, 0], [2, 1]),
            // The same with groups of images side by side, the last one short.
            ConvGeometry::new([7, 3, 14, 14], [2, 3, 3, 3], [1, 1], [1, 1], [1, 1]),
            // 1x1 kernels on planes wide enough for one image per gemm, at strides 1 and 2.
            ConvGeometry::new([3, 3, 24, 24], [4, 3, 1, 1], [1, 1], [0, 0], [1, 1]),
            ConvGeometry::new([2, 3, 46, 46], [4, 3, 1, 1], [2, 2], [0, 0], [1, 1]),
        ]
    }

    #[test]
    fn forward_matches_the_definition() {
        for (index, g) in geometries().into_iter().enumerate() {
            let x = values(g.batch * g.image_len(), index as u32);
            let w = values(g.out_channels * g.patch(), 100 + index as u32);
            let bias = values(g.out_channels, 200 + index as u32);
            let expected = naive_forward(&x, &w, &g);
            let got = conv2d_forward(&x, &w, Some(&bias), &g);
            for (position, (a, b)) in got.iter().zip(&expected).enumerate() {
                let o = position / g.positions() % g.out_channels;
                assert!(
                    (a - b - bias[o]).abs() < 1e-5,
                    "{g:?} at {position}: {a} vs {b}"
                );
            }
            let unbiased = conv2d_forward(&x, &w, None, &g);
            for (a, b) in unbiased.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-5, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// The gradients are the adjoints of the forward map: for any `dy`,
    /// `<dy, conv(x, w)> = <dW(x, dy), w> = <dX(dy, w), x>`.
    #[test]
    fn gradients_are_the_adjoints_of_the_forward() {
        for (index, g) in geometries().into_iter().enumerate() {
            let x = values(g.batch * g.image_len(), 300 + index as u32);
            let w = values(g.out_channels * g.patch(), 400 + index as u32);
            let dy = values(g.batch * g.output_len(), 500 + index as u32);
            let y = naive_forward(&x, &w, &g);
            let reference = dot(&dy, &y);
            let dw = conv2d_weight_grad(&x, &dy, &g);
            let dx = conv2d_input_grad(&dy, &w, &g);
            assert_eq!(dw.len(), w.len());
            assert_eq!(dx.len(), x.len());
            assert!((dot(&dw, &w) - reference).abs() < 1e-4, "{g:?}: dW");
            assert!((dot(&dx, &x) - reference).abs() < 1e-4, "{g:?}: dX");
            // Both at once (sharing the columns of dy where the input gradient is flipped).
            let (dx_both, dw_both) = conv2d_grads(&x, &dy, &w, &g);
            for (a, b) in dx_both.iter().zip(&dx).chain(dw_both.iter().zip(&dw)) {
                assert!((a - b).abs() < 1e-4, "{g:?}: conv2d_grads {a} vs {b}");
            }
        }
    }

    /// Element by element: the weight gradient of a one-image, one-channel conv is the
    /// correlation of the input with the output gradient.
    #[test]
    fn weight_gradient_of_a_single_position() {
        // 1x1 output: dW is the input patch times the one output gradient.
        let g = ConvGeometry::new([1, 1, 2, 2], [1, 1, 2, 2], [1, 1], [0, 0], [1, 1]);
        let dw = conv2d_weight_grad(&[1.0, 2.0, 3.0, 4.0], &[0.5], &g);
        assert_eq!(dw, vec![0.5, 1.0, 1.5, 2.0]);
        let dx = conv2d_input_grad(&[0.5], &[1.0, -1.0, 2.0, 0.0], &g);
        assert_eq!(dx, vec![0.5, -0.5, 1.0, 0.0]);
    }
}
