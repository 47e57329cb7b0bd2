//! Pointwise (1x1, stride 1, no padding) convolution: a matrix product
//! `out[oc][pixel] = bias[oc] + sum_ic w[oc][ic] * in[ic][pixel]`.
//!
//! Weights are packed like [`super::conv2d`]'s (`[block][ic][4]`, see
//! [`super::pack_conv2d_weights`]). Pixels are contiguous across rows here, so the tile of
//! 4 output channels x 4 pixels runs over the flattened image with no row edges.

use super::{OUT_BLOCK, mac};
use crate::Conv2dParams;

const PIXEL_BLOCK: usize = 4;

/// Pointwise convolution; `params.is_pointwise()` must hold.
#[inline(always)]
pub fn pointwise_conv(
    params: &Conv2dParams,
    input: &[f32],
    packed_weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    assert!(
        params.is_pointwise(),
        "pointwise_conv needs a 1x1/stride 1/no padding conv"
    );
    let in_c = params.input().channels;
    let out_c = params.output().channels;
    let pixels = params.input().plane();
    assert_eq!(input.len(), in_c * pixels, "pointwise input length");
    assert_eq!(
        packed_weights.len(),
        in_c * out_c,
        "pointwise weight length"
    );
    assert_eq!(bias.len(), out_c, "pointwise bias length");
    assert_eq!(output.len(), out_c * pixels, "pointwise output length");

    // Hidden from the optimiser: with constant shapes LLVM would unroll the whole
    // input-channel loop and spill the accumulators.
    let in_c = core::hint::black_box(in_c);
    let full_blocks = out_c / OUT_BLOCK;
    for block in 0..full_blocks {
        let oc0 = block * OUT_BLOCK;
        let w = &packed_weights[oc0 * in_c..(oc0 + OUT_BLOCK) * in_c];
        channel_block::<OUT_BLOCK>(
            params,
            in_c,
            input,
            w,
            &bias[oc0..oc0 + OUT_BLOCK],
            oc0,
            output,
        );
    }
    for oc in full_blocks * OUT_BLOCK..out_c {
        let w = &packed_weights[oc * in_c..(oc + 1) * in_c];
        channel_block::<1>(params, in_c, input, w, &bias[oc..oc + 1], oc, output);
    }
}

#[inline(always)]
fn channel_block<const OC: usize>(
    params: &Conv2dParams,
    in_c: usize,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    oc0: usize,
    output: &mut [f32],
) {
    let pixels = params.input().plane();
    let mut p = 0;
    while p < pixels {
        if pixels >= PIXEL_BLOCK {
            // The last tile moves back to end at the last pixel (a few pixels computed twice,
            // identically) instead of taking the one-pixel path.
            let start = p.min(pixels - PIXEL_BLOCK);
            // SAFETY: pixels start..start+4 exist; lengths checked at entry.
            let acc = unsafe { tile::<OC, PIXEL_BLOCK>(params, in_c, input, weights, start) };
            store(params, &acc, bias, output, oc0, start);
            p = start + PIXEL_BLOCK;
        } else {
            // SAFETY: pixel p exists; lengths checked at entry.
            let acc = unsafe { tile::<OC, 1>(params, in_c, input, weights, p) };
            store(params, &acc, bias, output, oc0, p);
            p += 1;
        }
    }
}

#[inline(always)]
fn store<const OC: usize, const PX: usize>(
    params: &Conv2dParams,
    acc: &[[f32; PX]; OC],
    bias: &[f32],
    output: &mut [f32],
    oc0: usize,
    p: usize,
) {
    let pixels = params.input().plane();
    for (lane, acc_lane) in acc.iter().enumerate() {
        let start = (oc0 + lane) * pixels + p;
        for (d, a) in output[start..start + PX].iter_mut().zip(acc_lane) {
            *d = params.activation.apply(*a + bias[lane]);
        }
    }
}

/// # Safety
/// `in_c` is the input channel count, `input` holds `in_c * pixels` values, `weights`
/// `in_c * OC`, and `p + PX <= pixels`.
// SAFETY: unsafe because the caller must uphold the bounds listed under # Safety;
// inside, every pointer read relies on them.
#[inline(always)]
unsafe fn tile<const OC: usize, const PX: usize>(
    params: &Conv2dParams,
    in_c: usize,
    input: &[f32],
    weights: &[f32],
    p: usize,
) -> [[f32; PX]; OC] {
    let pixels = params.input().plane();
    let mut acc = [[0.0f32; PX]; OC];
    let xp = input.as_ptr();
    let wp = weights.as_ptr();
    for ic in 0..in_c {
        // SAFETY: in bounds by this function's contract (see # Safety).
        unsafe {
            let mut wv = [0.0f32; OC];
            for (lane, v) in wv.iter_mut().enumerate() {
                *v = *wp.add(ic * OC + lane);
            }
            let mut xv = [0.0f32; PX];
            for (i, v) in xv.iter_mut().enumerate() {
                *v = *xp.add(ic * pixels + p + i);
            }
            for lane in 0..OC {
                for i in 0..PX {
                    acc[lane][i] = mac(acc[lane][i], wv[lane], xv[i]);
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
    use crate::f32::pack_conv2d_weights;
    use crate::f32::test_util::{Rng, assert_close};
    use crate::{Activation, Shape3};

    #[test]
    fn matches_naive_reference_on_many_shapes() {
        let mut seed = 200;
        for &(c, h, w) in &[(1, 1, 1), (1, 3, 3), (3, 4, 5), (8, 2, 9), (16, 1, 7)] {
            for &oc in &[1, 2, 4, 7, 12] {
                seed += 1;
                let input = Shape3::new(c, h, w);
                let params =
                    Conv2dParams::new(input, oc, [1, 1], [1, 1], [0, 0], Activation::Relu).unwrap();
                let mut rng = Rng::new(seed);
                let x = rng.vec(input.len());
                let wt = rng.vec(params.dense_weight_len());
                let b = rng.vec(oc);
                let mut packed = vec![0.0; wt.len()];
                pack_conv2d_weights(&params, &wt, &mut packed);
                let mut got = vec![f32::NAN; params.output().len()];
                pointwise_conv(&params, &x, &packed, &b, &mut got);
                let want = naive_conv(&params, 1, &x, &wt, &b);
                assert_close(&got, &want, 1e-5, &format!("pointwise {input} -> {oc}"));
            }
        }
    }
}
