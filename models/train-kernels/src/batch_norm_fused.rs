//! Batch norm in training mode, forward and backward, as two passes over NCHW memory each.
//!
//! burn's generic batch norm computes its per-channel statistics by transposing the activation
//! to `[channels, batch * height * width]` (a full copy) before each reduction, twice forward
//! and twice backward, and builds the output from five element-wise tensor ops; on flex that
//! was a large share of a training step (BENCHMARKS.md, "CPU backends"). Here each direction
//! reads the activation once for the per-channel sums (channels in parallel, each walking its
//! `batch` planes) and once to write the result (planes in parallel). Sums are kept in `f32`
//! lanes over a few planes at a time and added up in `f64`; the forward pass takes both
//! statistics from one read (per group of planes, still in cache, the sum and then the
//! squares about the group's mean).
//!
//! The result pass is not done a channel at a time right after the channel's sums, though that
//! would read its planes again from the core's own cache: on MobileNetV2 0.35 at batch 64
//! (`bench` binary `norm_passes`, 2026-12-04) that measured 1.1-1.4x slower at every plane
//! size. Its activations (2.5 MB a layer on average) sit in the shared cache anyway, and
//! planes in parallel stream contiguous memory where a channel's planes lie far apart.
//!
//! The formulas are burn's: biased variance, `x_hat = (x - mean) / sqrt(var + eps)`,
//! `y = gamma * x_hat + beta`, and
//! `dx = gamma / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat))`.
//!
//! A ReLU or ReLU6 after the batch norm can run with it ([`NormAffine::rectifier`]): the
//! forward writes `max(0, y)` (or `min(max(0, y), 6)`) in its output pass, and the backward
//! zeroes `dy` where the rectifier cut, recomputing `y` from `x` wherever it reads `dy` rather
//! than keeping it. That spares the rectifier's own passes over the activation and its output
//! tensor (measured in BENCHMARKS.md, "Per convolution against PyTorch"; burn's ReLU6, a
//! clamp, costs two comparisons and two masked fills forward and two backward).

use rayon::prelude::*;

use crate::kernel_buffers::Unwritten;

/// The layout of the activation: `[batch, channels, spatial]`, `spatial` = height * width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NormShape {
    pub batch: usize,
    pub channels: usize,
    pub spatial: usize,
}

impl NormShape {
    fn len(&self) -> usize {
        self.batch * self.channels * self.spatial
    }

    /// Values per channel: the `M` that means divide by.
    fn per_channel(&self) -> f64 {
        (self.batch * self.spatial) as f64
    }

    /// The plane of sample `n`, channel `c`.
    fn plane<'a>(&self, data: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        let start = (n * self.channels + c) * self.spatial;
        &data[start..start + self.spatial]
    }
}

/// What follows the affine map in the same passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rectifier {
    /// Nothing: `y`.
    #[default]
    None,
    /// `max(0, y)`.
    Relu,
    /// `min(max(0, y), 6)`, MobileNetV2's.
    Relu6,
}

impl Rectifier {
    /// The rectified value.
    #[inline]
    pub fn apply(self, y: f32) -> f32 {
        match self {
            Rectifier::None => y,
            Rectifier::Relu => y.max(0.0),
            Rectifier::Relu6 => y.clamp(0.0, 6.0),
        }
    }

    /// Whether the gradient passes at `y` (burn's convention: not where `y <= 0`, nor where
    /// `y >= 6` for ReLU6).
    #[inline]
    pub fn passes(self, y: f32) -> bool {
        match self {
            Rectifier::None => true,
            Rectifier::Relu => y > 0.0,
            Rectifier::Relu6 => y > 0.0 && y < 6.0,
        }
    }
}

/// The learned per-channel affine map after the normalisation, and the rectifier after it.
#[derive(Debug, Clone, Copy)]
pub struct NormAffine<'a> {
    /// Per-channel scale, `[channels]`.
    pub gamma: &'a [f32],
    /// Per-channel shift, `[channels]`.
    pub beta: &'a [f32],
    /// Added to the variance before its square root.
    pub epsilon: f64,
    /// Applied after the affine map (and its gradient in the backward pass).
    pub rectifier: Rectifier,
}

impl NormAffine<'_> {
    /// `y = x * scale + shift` per channel, with `scale = gamma / sqrt(var + eps)` and
    /// `shift = beta - mean * scale`: the forward pass and the backward pass's recomputation
    /// of the ReLU's mask both use these, so the two agree on every element.
    fn scale_shift(&self, mean: &[f32], variance: &[f32]) -> Vec<(f32, f32)> {
        (0..mean.len())
            .map(|c| {
                let scale = self.gamma[c] as f64 / (variance[c] as f64 + self.epsilon).sqrt();
                let shift = self.beta[c] as f64 - mean[c] as f64 * (scale as f32) as f64;
                (scale as f32, shift as f32)
            })
            .collect()
    }

    fn check(&self, channels: usize, context: &str) {
        assert_eq!(self.gamma.len(), channels, "{context}: gamma");
        assert_eq!(self.beta.len(), channels, "{context}: beta");
    }
}

/// Partial sums are kept in this many `f32` lanes, which the compiler vectorises.
const LANES: usize = 8;

/// Values a channel's `f32` lanes take (at most) before they are added to its `f64` totals: 512
/// per lane bounds their rounding, and on the 4x4 and 7x7 planes of a mobile network's last
/// stages a reduction to `f64` per plane would cost more than the plane's sums.
const FLUSH_EVERY: usize = 4096;

/// Adds `f(a_i, b_i)` (`N` quantities) into `lanes` for planes `planes` of channel `c` of `a`
/// and `b`: element `i` of a plane goes to lane `i % LANES`. Not inlined, and the lanes passed
/// in and out: with their reduction in the same function, LLVM vectorised across the `N`
/// quantities (two wide, the products scalar) instead of across the lanes.
#[inline(never)]
fn accumulate<const N: usize>(
    a: &[f32],
    b: &[f32],
    shape: &NormShape,
    c: usize,
    planes: std::ops::Range<usize>,
    lanes: &mut [[f32; LANES]; N],
    f: &impl Fn(f32, f32) -> [f32; N],
) {
    let mut acc = *lanes;
    for n in planes {
        let (a, b) = (shape.plane(a, n, c), shape.plane(b, n, c));
        let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (lane, (&x, &y)) in a_chunks
            .remainder()
            .iter()
            .zip(b_chunks.remainder())
            .enumerate()
        {
            let v = f(x, y);
            for k in 0..N {
                acc[k][lane] += v[k];
            }
        }
        for (ca, cb) in a_chunks.zip(b_chunks) {
            let (ca, cb): (&[f32; LANES], &[f32; LANES]) = (
                ca.try_into().expect("a chunk of lanes"),
                cb.try_into().expect("a chunk of lanes"),
            );
            for lane in 0..LANES {
                let v = f(ca[lane], cb[lane]);
                for k in 0..N {
                    acc[k][lane] += v[k];
                }
            }
        }
    }
    *lanes = acc;
}

/// Planes of one channel whose sums stay in `f32` lanes before they go into `f64`: as many as
/// hold [`FLUSH_EVERY`] values, at least one.
fn planes_per_group(shape: &NormShape) -> usize {
    (FLUSH_EVERY / shape.spatial.max(1)).max(1)
}

/// The `N` lane sums of `f(x, other)` over planes `planes` of channel `c`.
fn group_sums<const N: usize>(
    x: &[f32],
    other: &[f32],
    shape: &NormShape,
    c: usize,
    planes: std::ops::Range<usize>,
    f: &impl Fn(f32, f32) -> [f32; N],
) -> [f64; N] {
    let mut lanes = [[0.0f32; LANES]; N];
    accumulate(x, other, shape, c, planes, &mut lanes, f);
    lanes.map(|lanes| lanes.iter().map(|&v| v as f64).sum())
}

/// The first planes of each group of [`planes_per_group`], as ranges.
fn plane_groups(shape: &NormShape) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let group = planes_per_group(shape);
    (0..shape.batch)
        .step_by(group)
        .map(move |first| first..(first + group).min(shape.batch))
}

/// Per channel, `N` sums over its planes of `f(c)(x, other)`, channels in parallel. `f(c)`
/// fixes the channel's constants once, so the inner loop is plain arithmetic.
fn channel_sums<const N: usize, F, G>(
    x: &[f32],
    other: &[f32],
    shape: &NormShape,
    f: F,
) -> Vec<[f64; N]>
where
    F: Fn(usize) -> G + Sync,
    G: Fn(f32, f32) -> [f32; N],
{
    assert!(
        x.len() == shape.len() && other.len() == shape.len(),
        "channel_sums: inputs"
    );
    (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let g = f(c);
            plane_groups(shape).fold([0.0f64; N], |mut totals, planes| {
                let sums = group_sums(x, other, shape, c, planes, &g);
                for (total, sum) in totals.iter_mut().zip(sums) {
                    *total += sum;
                }
                totals
            })
        })
        .collect()
}

/// Per channel, the mean and the biased variance of `x` in one read of memory: per group of
/// planes (small enough to stay in cache) the group's sum, then its squares about the group's
/// mean, the groups merged in `f64` (Chan, Golub and LeVeque's pairwise update). Centred per
/// group, the variance does not cancel when the mean is far from zero, as `E[x^2] - E[x]^2`
/// would, and `x` comes from memory once, not once per statistic.
fn channel_moments(x: &[f32], shape: &NormShape) -> Vec<(f64, f64)> {
    assert_eq!(x.len(), shape.len(), "channel_moments: x");
    (0..shape.channels)
        .into_par_iter()
        .map(|c| {
            let (mut count, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
            for planes in plane_groups(shape) {
                let k = (planes.len() * shape.spatial) as f64;
                let [sum] = group_sums(x, x, shape, c, planes.clone(), &|a, _| [a]);
                let centre = (sum / k) as f32;
                let [squares, deviation] = group_sums(x, x, shape, c, planes, &|a, _| {
                    let d = a - centre;
                    [d * d, d]
                });
                // About the group's own mean (`centre` is its rounding).
                let group_mean = centre as f64 + deviation / k;
                let group_m2 = squares - deviation * deviation / k;
                let total = count + k;
                let delta = group_mean - mean;
                mean += delta * k / total;
                m2 += group_m2 + delta * delta * count * k / total;
                count = total;
            }
            (mean, (m2 / count).max(0.0))
        })
        .collect()
}

/// `v` where `pass`, zero elsewhere, as `v * 1.0` or `v * 0.0`: a multiply keeps the loops
/// that read the rectifier's mask branch-free. As a select (`if`, or a mask on the bits), LLVM
/// turned it into a branch per lane, which mispredicts on about every second value of a
/// rectified activation. The one difference to a select: an infinite `v` where the rectifier
/// cut gives NaN instead of zero, on a step that has diverged anyway.
#[inline(always)]
fn keep(pass: bool, v: f32) -> f32 {
    v * f32::from(u8::from(pass))
}

/// `out[n, c, s] = g(c)(a[n, c, s], b[n, c, s])`, planes in parallel.
fn map_planes<F, G>(a: &[f32], b: &[f32], shape: &NormShape, f: F) -> Vec<f32>
where
    F: Fn(usize) -> G + Sync,
    G: Fn(f32, f32) -> f32,
{
    assert!(
        a.len() == shape.len() && b.len() == shape.len(),
        "map_planes: inputs"
    );
    let mut out = Unwritten::new(shape.len());
    out.slots()
        .par_chunks_mut(shape.spatial)
        .zip(a.par_chunks(shape.spatial))
        .zip(b.par_chunks(shape.spatial))
        .enumerate()
        .for_each(|(plane, ((out, a), b))| {
            let g = f(plane % shape.channels);
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                o.write(g(x, y));
            }
        });
    // SAFETY: `a` and `b` are as long as the output (asserted), so the zipped chunks
    // and their element loops write every slot.
    unsafe { out.assume_written() }
}

/// What the forward pass returns: the normalised output and the batch statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormTrainOutput {
    /// `[batch, channels, spatial]`.
    pub output: Vec<f32>,
    /// Per-channel batch mean.
    pub mean: Vec<f32>,
    /// Per-channel biased batch variance.
    pub variance: Vec<f32>,
}

/// Batch norm with batch statistics, then `affine.rectifier`: `x` `[batch, channels, spatial]`.
pub fn batch_norm_train(x: &[f32], affine: &NormAffine, shape: &NormShape) -> BatchNormTrainOutput {
    assert_eq!(x.len(), shape.len(), "batch_norm_train: x");
    affine.check(shape.channels, "batch_norm_train");
    let (mean, variance): (Vec<f32>, Vec<f32>) = channel_moments(x, shape)
        .into_iter()
        .map(|(mean, variance)| (mean as f32, variance as f32))
        .unzip();
    let scale_shift = affine.scale_shift(&mean, &variance);
    // One arm per rectifier, each a constant, so that each loop's `apply` folds to its
    // arithmetic.
    let output = match affine.rectifier {
        Rectifier::None => affine_map(x, shape, &scale_shift, |y| Rectifier::None.apply(y)),
        Rectifier::Relu => affine_map(x, shape, &scale_shift, |y| Rectifier::Relu.apply(y)),
        Rectifier::Relu6 => affine_map(x, shape, &scale_shift, |y| Rectifier::Relu6.apply(y)),
    };
    BatchNormTrainOutput {
        output,
        mean,
        variance,
    }
}

/// `rectify(x * scale + shift)` with each channel's `(scale, shift)`. Generic in `rectify`, so
/// that each rectifier's loop is plain arithmetic (through a function pointer, it was a call
/// per element: a tenth of a MobileNetV2 training step).
fn affine_map(
    x: &[f32],
    shape: &NormShape,
    scale_shift: &[(f32, f32)],
    rectify: impl Fn(f32) -> f32 + Copy + Sync,
) -> Vec<f32> {
    map_planes(x, x, shape, |c| {
        let (scale, shift) = scale_shift[c];
        move |a, _| rectify(a * scale + shift)
    })
}

/// What the backward pass returns: the gradients w.r.t. the input, `gamma` and `beta`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormTrainGrads {
    /// `[batch, channels, spatial]`.
    pub x: Vec<f32>,
    /// `[channels]`.
    pub gamma: Vec<f32>,
    /// `[channels]`.
    pub beta: Vec<f32>,
}

/// The gradients of [`batch_norm_train`] (with the same `affine`), given the gradient
/// `output_grad` of its output and the statistics it returned.
pub fn batch_norm_train_backward(
    x: &[f32],
    affine: &NormAffine,
    mean: &[f32],
    variance: &[f32],
    output_grad: &[f32],
    shape: &NormShape,
) -> BatchNormTrainGrads {
    assert_eq!(x.len(), shape.len(), "batch_norm_train_backward: x");
    assert_eq!(
        output_grad.len(),
        shape.len(),
        "batch_norm_train_backward: output_grad"
    );
    affine.check(shape.channels, "batch_norm_train_backward");
    for (name, v) in [("mean", mean), ("variance", variance)] {
        assert_eq!(v.len(), shape.channels, "batch_norm_train_backward: {name}");
    }
    let backward = Backward {
        x,
        affine,
        mean,
        variance,
        output_grad,
        shape,
    };
    // One arm per rectifier, each a constant, so that each loop's `passes` folds to its
    // comparisons (and to nothing without a rectifier).
    match affine.rectifier {
        Rectifier::None => backward.gated(|y, dy| keep(Rectifier::None.passes(y), dy)),
        Rectifier::Relu => backward.gated(|y, dy| keep(Rectifier::Relu.passes(y), dy)),
        Rectifier::Relu6 => backward.gated(|y, dy| keep(Rectifier::Relu6.passes(y), dy)),
    }
}

/// What the backward pass reads: the forward pass's input, affine map and statistics, and the
/// output gradient.
struct Backward<'a> {
    x: &'a [f32],
    affine: &'a NormAffine<'a>,
    mean: &'a [f32],
    variance: &'a [f32],
    output_grad: &'a [f32],
    shape: &'a NormShape,
}

impl Backward<'_> {
    /// The batch norm's backward pass with the rectifier's mask `gate(y, dy)` applied to `dy`
    /// wherever it is read (`y = x * scale + shift` recomputed as the forward pass computed
    /// it): per-channel sums of `dy` and `dy * x_hat` in one read, then `dx` in a second. The
    /// mask was a pass of its own, with an output the other two read again.
    fn gated(&self, gate: impl Fn(f32, f32) -> f32 + Copy + Sync) -> BatchNormTrainGrads {
        let Self {
            x,
            affine,
            mean,
            variance,
            output_grad,
            shape,
        } = *self;
        let m = shape.per_channel();
        let scale_shift = affine.scale_shift(mean, variance);
        let inv_std: Vec<f32> = variance
            .iter()
            .map(|&v| (1.0 / (v as f64 + affine.epsilon).sqrt()) as f32)
            .collect();
        // [beta_grad, gamma_grad] = sums of dy and dy * x_hat.
        let sums = channel_sums(x, output_grad, shape, |c| {
            let (mean, inv_std, (scale, shift)) = (mean[c], inv_std[c], scale_shift[c]);
            move |x, dy| {
                let dy = gate(x * scale + shift, dy);
                [dy, dy * (x - mean) * inv_std]
            }
        });
        let x_grad = map_planes(x, output_grad, shape, |c| {
            // dx = k * (dy - mean_dy - (x - mean) * inv_std * mean_dy_xhat), k = gamma * inv_std
            let k = affine.gamma[c] * inv_std[c];
            let mean_dy = (sums[c][0] / m) as f32;
            let mean_dy_xhat = (sums[c][1] / m) as f32;
            let (mean, slope, (scale, shift)) =
                (mean[c], inv_std[c] * mean_dy_xhat, scale_shift[c]);
            move |x, dy| {
                let dy = gate(x * scale + shift, dy);
                k * (dy - mean_dy - (x - mean) * slope)
            }
        });
        BatchNormTrainGrads {
            x: x_grad,
            gamma: sums.iter().map(|s| s[1] as f32).collect(),
            beta: sums.iter().map(|s| s[0] as f32).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32, offset: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0 + offset
            })
            .collect()
    }

    /// Spatial sizes below, at and above the eight lanes.
    const SHAPES: [NormShape; 3] = [
        NormShape {
            batch: 3,
            channels: 2,
            spatial: 5,
        },
        NormShape {
            batch: 2,
            channels: 3,
            spatial: 8,
        },
        NormShape {
            batch: 4,
            channels: 5,
            spatial: 49,
        },
    ];

    /// Shapes whose channels span several groups of planes (the last one partial) and a plane
    /// larger than a group: their sums go through `f64` more than once.
    const GROUPED: [NormShape; 2] = [
        NormShape {
            batch: 10,
            channels: 4,
            spatial: 1000,
        },
        NormShape {
            batch: 3,
            channels: 4,
            spatial: FLUSH_EVERY + 3,
        },
    ];

    /// The statistics by their definition, in f64.
    fn reference_stats(x: &[f32], shape: &NormShape) -> (Vec<f64>, Vec<f64>) {
        let mut mean = vec![0.0; shape.channels];
        let mut var = vec![0.0; shape.channels];
        for c in 0..shape.channels {
            let values: Vec<f64> = (0..shape.batch)
                .flat_map(|n| shape.plane(x, n, c).iter().map(|&v| v as f64))
                .collect();
            mean[c] = values.iter().sum::<f64>() / values.len() as f64;
            var[c] =
                values.iter().map(|v| (v - mean[c]).powi(2)).sum::<f64>() / values.len() as f64;
        }
        (mean, var)
    }

    #[test]
    fn forward_normalises_each_channel_then_scales_and_shifts() {
        for (i, shape) in SHAPES.iter().enumerate() {
            // An offset far from zero: two-pass variance must not cancel.
            let x = values(shape.len(), i as u32, 30.0);
            let gamma = values(shape.channels, 10 + i as u32, 1.0);
            let beta = values(shape.channels, 20 + i as u32, 0.0);
            let affine = NormAffine {
                gamma: &gamma,
                beta: &beta,
                epsilon: 1e-5,
                rectifier: Rectifier::None,
            };
            let out = batch_norm_train(&x, &affine, shape);
            // With a rectifier fused, the same output clipped.
            for rectifier in [Rectifier::Relu, Rectifier::Relu6] {
                let rectified = batch_norm_train(
                    &x,
                    &NormAffine {
                        rectifier,
                        ..affine
                    },
                    shape,
                );
                assert_eq!(
                    (&rectified.mean, &rectified.variance),
                    (&out.mean, &out.variance)
                );
                for (r, y) in rectified.output.iter().zip(&out.output) {
                    assert_eq!(*r, rectifier.apply(*y), "{shape:?} {rectifier:?}");
                }
            }
            let (mean, var) = reference_stats(&x, shape);
            for c in 0..shape.channels {
                assert!(
                    (out.mean[c] as f64 - mean[c]).abs() < 1e-4,
                    "{shape:?} mean {c}"
                );
                assert!(
                    (out.variance[c] as f64 - var[c]).abs() < 1e-4,
                    "{shape:?} var {c}"
                );
                // The output of every channel has mean beta and standard deviation |gamma|.
                let (y_mean, y_var) = reference_stats(&out.output, shape);
                let expected_std = gamma[c] as f64 * (var[c] / (var[c] + 1e-5)).sqrt();
                assert!(
                    (y_mean[c] - beta[c] as f64).abs() < 1e-4,
                    "{shape:?} out mean {c}"
                );
                assert!(
                    (y_var[c].sqrt() - expected_std.abs()).abs() < 1e-3,
                    "{shape:?} out std {c}"
                );
            }
        }
    }

    /// The one-read moments merge their groups exactly: the mean and variance by definition,
    /// far from zero and with an outlier where a group starts (where `E[x^2] - E[x]^2`, or
    /// one pivot value, would cancel).
    #[test]
    fn moments_of_grouped_planes_match_the_definition() {
        for (i, shape) in SHAPES.iter().chain(&GROUPED).enumerate() {
            for offset in [0.0, 1000.0] {
                let mut x = values(shape.len(), 120 + i as u32, offset);
                x[0] = offset + 50.0;
                let (mean, var) = reference_stats(&x, shape);
                for (c, &(m, v)) in channel_moments(&x, shape).iter().enumerate() {
                    assert!(
                        (m - mean[c]).abs() <= 1e-6 * mean[c].abs().max(1.0),
                        "{shape:?} offset {offset} mean {c}: {m} vs {}",
                        mean[c]
                    );
                    assert!(
                        (v - var[c]).abs() <= 1e-4 * var[c],
                        "{shape:?} offset {offset} variance {c}: {v} vs {}",
                        var[c]
                    );
                }
            }
        }
    }

    /// The backward pass against central differences of `sum(output * r)` for a random `r`.
    #[test]
    fn gradients_match_finite_differences() {
        let rectifier = Rectifier::None;
        for (i, shape) in SHAPES.iter().enumerate() {
            let x = values(shape.len(), 40 + i as u32, 0.5);
            let gamma = values(shape.channels, 50 + i as u32, 1.0);
            let beta = values(shape.channels, 60 + i as u32, 0.0);
            let r = values(shape.len(), 70 + i as u32, 0.0);
            let eps = 1e-3;
            let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
                let affine = NormAffine {
                    gamma,
                    beta,
                    epsilon: eps,
                    rectifier,
                };
                let out = batch_norm_train(x, &affine, shape);
                out.output
                    .iter()
                    .zip(&r)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum()
            };
            let affine = NormAffine {
                gamma: &gamma,
                beta: &beta,
                epsilon: eps,
                rectifier,
            };
            let stats = batch_norm_train(&x, &affine, shape);
            let grads =
                batch_norm_train_backward(&x, &affine, &stats.mean, &stats.variance, &r, shape);
            let h = 1e-2f32;
            let numeric = |which: usize, index: usize| -> f64 {
                let mut args = [x.clone(), gamma.clone(), beta.clone()];
                args[which][index] += h;
                let up = loss(&args[0], &args[1], &args[2]);
                args[which][index] -= 2.0 * h;
                let down = loss(&args[0], &args[1], &args[2]);
                (up - down) / (2.0 * h as f64)
            };
            for index in [0, shape.len() / 2, shape.len() - 1] {
                let (a, b) = (grads.x[index] as f64, numeric(0, index));
                assert!(
                    (a - b).abs() < 2e-2 * (1.0 + b.abs()),
                    "{shape:?} dx[{index}]: {a} vs {b}"
                );
            }
            for c in 0..shape.channels {
                let (a, b) = (grads.gamma[c] as f64, numeric(1, c));
                assert!(
                    (a - b).abs() < 2e-2 * (1.0 + b.abs()),
                    "{shape:?} dgamma[{c}]: {a} vs {b}"
                );
                let (a, b) = (grads.beta[c] as f64, numeric(2, c));
                assert!(
                    (a - b).abs() < 2e-2 * (1.0 + b.abs()),
                    "{shape:?} dbeta[{c}]: {a} vs {b}"
                );
            }
        }
    }

    /// With a rectifier fused, the backward pass is the plain one applied to the output
    /// gradient zeroed where the rectifier cut (finite differences are unreliable here: the
    /// loss has kinks wherever an output crosses 0 or 6).
    #[test]
    fn fused_rectifier_gradients_are_the_plain_ones_of_the_masked_gradient() {
        for (i, shape) in SHAPES.iter().chain(&GROUPED).enumerate() {
            let x = values(shape.len(), 80 + i as u32, 0.2);
            let gamma = values(shape.channels, 90 + i as u32, 1.0);
            let beta = values(shape.channels, 100 + i as u32, 0.0);
            let r = values(shape.len(), 110 + i as u32, 0.0);
            // Gammas of 5, so that ReLU6 cuts at 6 too.
            let wide: Vec<f32> = gamma.iter().map(|g| g * 5.0).collect();
            for (rectifier, gamma) in [(Rectifier::Relu, &gamma), (Rectifier::Relu6, &wide)] {
                let plain = NormAffine {
                    gamma,
                    beta: &beta,
                    epsilon: 1e-5,
                    rectifier: Rectifier::None,
                };
                let rectified = NormAffine { rectifier, ..plain };
                let y = batch_norm_train(&x, &plain, shape);
                // Some outputs are cut and some pass, or the mask went untested.
                let (low, high) = (
                    y.output.iter().any(|&v| v < 0.0),
                    y.output.iter().any(|&v| v > 6.0),
                );
                assert!(low && (rectifier == Rectifier::Relu || high), "{shape:?}");
                assert!(y.output.iter().any(|&v| rectifier.passes(v)));
                let masked: Vec<f32> = r
                    .iter()
                    .zip(&y.output)
                    .map(|(&g, &v)| if rectifier.passes(v) { g } else { 0.0 })
                    .collect();
                let expected =
                    batch_norm_train_backward(&x, &plain, &y.mean, &y.variance, &masked, shape);
                let got =
                    batch_norm_train_backward(&x, &rectified, &y.mean, &y.variance, &r, shape);
                assert_eq!(got, expected, "{shape:?} {rectifier:?}");
            }
        }
    }
}
