//! Max pooling, average pooling and global average pooling.
//!
//! Pooling moves no weights and does one operation per input tap: plain loops over window
//! ranges clamped once per output row and column, with unchecked loads inside.

use super::channel_count;
use crate::{Pool2dParams, Shape3, max_f32};

/// Max pooling; padded cells are ignored (never win the max).
#[inline(always)]
pub fn max_pool2d(params: &Pool2dParams, input: &[f32], output: &mut [f32]) {
    pool::<true>(params, input, output);
}

/// Average pooling; divides by `kh * kw`, so padded cells count as zeros.
#[inline(always)]
pub fn avg_pool2d(params: &Pool2dParams, input: &[f32], output: &mut [f32]) {
    pool::<false>(params, input, output);
}

#[inline(always)]
fn pool<const MAX: bool>(params: &Pool2dParams, input: &[f32], output: &mut [f32]) {
    let w = &params.window;
    assert_eq!(input.len(), w.input.len(), "pool input length");
    assert_eq!(output.len(), w.output.len(), "pool output length");
    let (in_w, out_w) = (w.input.width, w.output.width);
    let (interior_lo, interior_hi) = w.interior_columns();
    let kw = w.kernel[1];
    let scale = 1.0 / (w.kernel[0] * kw) as f32;
    let (in_plane, out_plane) = (w.input.plane(), w.output.plane());
    for c in 0..channel_count(w.input.channels) {
        let x = &input[c * in_plane..(c + 1) * in_plane];
        let out = &mut output[c * out_plane..(c + 1) * out_plane];
        for oy in 0..w.output.height {
            let (ky0, ky1) = w.valid_taps(0, oy);
            let iy0 = oy * w.stride[0] + ky0 - w.padding[0];
            let out_row = &mut out[oy * out_w..(oy + 1) * out_w];
            for (ox, o) in out_row.iter_mut().enumerate() {
                let (kx0, kx1) = if ox >= interior_lo && ox < interior_hi {
                    (0, kw)
                } else {
                    w.valid_taps(1, ox)
                };
                let ix0 = ox * w.stride[1] + kx0 - w.padding[1];
                let mut acc = if MAX { f32::NEG_INFINITY } else { 0.0 };
                for iy in iy0..iy0 + (ky1 - ky0) {
                    let base = iy * in_w + ix0;
                    for c in 0..kx1 - kx0 {
                        // SAFETY: rows and columns are clamped to the input by
                        // `valid_taps` (or lie in the interior), and `input.len()` was checked.
                        let v = unsafe { *x.get_unchecked(base + c) };
                        acc = if MAX { max_f32(v, acc) } else { acc + v };
                    }
                }
                *o = if MAX { acc } else { acc * scale };
            }
        }
    }
}

/// Global average pooling: one mean per channel.
#[inline(always)]
pub fn global_avg_pool(input_shape: Shape3, input: &[f32], output: &mut [f32]) {
    assert_eq!(input.len(), input_shape.len(), "global pool input length");
    assert_eq!(
        output.len(),
        input_shape.channels,
        "global pool output length"
    );
    let plane = input_shape.plane();
    for c in 0..channel_count(input_shape.channels) {
        let (x, out) = (&input[c * plane..(c + 1) * plane], &mut output[c]);
        // Four partial sums: shorter dependency chains, and a little less rounding drift.
        let mut acc = [0.0f32; 4];
        let mut chunks = x.chunks_exact(4);
        for c in &mut chunks {
            for i in 0..4 {
                acc[i] += c[i];
            }
        }
        for v in chunks.remainder() {
            acc[0] += v;
        }
        *out = ((acc[0] + acc[1]) + (acc[2] + acc[3])) / plane as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::f32::test_util::{Rng, assert_close};
    use std::vec::Vec;

    fn naive(params: &Pool2dParams, x: &[f32], max: bool) -> Vec<f32> {
        let w = &params.window;
        let mut out = vec![0.0; w.output.len()];
        for c in 0..w.input.channels {
            for oy in 0..w.output.height {
                for ox in 0..w.output.width {
                    let mut m = f32::NEG_INFINITY;
                    let mut s = 0.0f64;
                    for ky in 0..w.kernel[0] {
                        for kx in 0..w.kernel[1] {
                            let y = (oy * w.stride[0] + ky) as isize - w.padding[0] as isize;
                            let xx = (ox * w.stride[1] + kx) as isize - w.padding[1] as isize;
                            if y < 0
                                || xx < 0
                                || y >= w.input.height as isize
                                || xx >= w.input.width as isize
                            {
                                continue;
                            }
                            let v =
                                x[(c * w.input.height + y as usize) * w.input.width + xx as usize];
                            m = m.max(v);
                            s += v as f64;
                        }
                    }
                    out[(c * w.output.height + oy) * w.output.width + ox] = if max {
                        m
                    } else {
                        (s / (w.kernel[0] * w.kernel[1]) as f64) as f32
                    };
                }
            }
        }
        out
    }

    #[test]
    fn max_and_avg_match_naive_reference() {
        let mut seed = 400;
        for &(c, h, w) in &[(1, 1, 1), (1, 4, 4), (3, 7, 5), (2, 9, 9)] {
            for &(k, s, p) in &[
                ([2, 2], [2, 2], [0, 0]),
                ([3, 3], [2, 2], [1, 1]),
                ([3, 3], [1, 1], [1, 1]),
                ([1, 1], [1, 1], [0, 0]),
                ([2, 3], [1, 2], [1, 1]),
            ] {
                let input = Shape3::new(c, h, w);
                let Ok(params) = Pool2dParams::new(input, k, s, p) else {
                    continue;
                };
                seed += 1;
                let x = Rng::new(seed).vec(input.len());
                let mut got = vec![f32::NAN; params.output().len()];
                max_pool2d(&params, &x, &mut got);
                assert_close(&got, &naive(&params, &x, true), 0.0, "max pool");
                avg_pool2d(&params, &x, &mut got);
                assert_close(&got, &naive(&params, &x, false), 1e-6, "avg pool");
            }
        }
    }

    #[test]
    fn global_average() {
        for &(c, h, w) in &[(1, 1, 1), (3, 5, 7), (8, 4, 4)] {
            let shape = Shape3::new(c, h, w);
            let x = Rng::new(c as u32 * 31 + h as u32).vec(shape.len());
            let mut got = vec![0.0; c];
            global_avg_pool(shape, &x, &mut got);
            let want: Vec<f32> = x
                .chunks(h * w)
                .map(|p| (p.iter().map(|v| *v as f64).sum::<f64>() / (h * w) as f64) as f32)
                .collect();
            assert_close(&got, &want, 1e-6, "global avg pool");
        }
    }
}
