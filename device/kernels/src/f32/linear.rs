//! Fully connected layer: `out[o] = activation(bias[o] + sum_i w[o][i] * x[i])`.
//!
//! Weights are packed by [`pack_linear_weights`]: rows (outputs) [`OUT_BLOCK`] at a time,
//! `[block][in][4]`, so that each input value is loaded once per 4 outputs and the weights
//! stream in order; leftover rows keep their plain order and run as dot products with 4
//! independent accumulators (to break the dependency chain of the additions).

use super::conv2d::pack_blocked;
use super::{OUT_BLOCK, mac};
use crate::LinearParams;

/// Re-lays out `[out][in]` weights (PyTorch order) into the order [`linear`] reads.
pub fn pack_linear_weights(params: &LinearParams, rows: &[f32], packed: &mut [f32]) {
    let len = params.weight_len();
    assert!(
        rows.len() == len && packed.len() == len,
        "linear weight length"
    );
    pack_blocked(rows, packed, params.out_features, params.in_features);
}

/// Fully connected layer; `input` is flattened (CHW order) to `in_features` values.
#[inline(always)]
pub fn linear(
    params: &LinearParams,
    input: &[f32],
    packed_weights: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    let (n_in, n_out) = (params.in_features, params.out_features);
    assert_eq!(input.len(), n_in, "linear input length");
    assert_eq!(packed_weights.len(), n_in * n_out, "linear weight length");
    assert_eq!(bias.len(), n_out, "linear bias length");
    assert_eq!(output.len(), n_out, "linear output length");

    let full_blocks = n_out / OUT_BLOCK;
    for (block, weights) in packed_weights[..full_blocks * OUT_BLOCK * n_in]
        .chunks_exact(OUT_BLOCK * n_in)
        .enumerate()
    {
        let mut acc = [0.0f32; OUT_BLOCK];
        for (x, w) in input.iter().zip(weights.chunks_exact(OUT_BLOCK)) {
            for lane in 0..OUT_BLOCK {
                acc[lane] = mac(acc[lane], w[lane], *x);
            }
        }
        let o0 = block * OUT_BLOCK;
        for lane in 0..OUT_BLOCK {
            output[o0 + lane] = params.activation.apply(acc[lane] + bias[o0 + lane]);
        }
    }
    let tail = full_blocks * OUT_BLOCK;
    for (o, row) in packed_weights[tail * n_in..].chunks_exact(n_in).enumerate() {
        let mut acc = [0.0f32; 4];
        let mut xs = input.chunks_exact(4);
        let mut ws = row.chunks_exact(4);
        for (x4, w4) in (&mut xs).zip(&mut ws) {
            for i in 0..4 {
                acc[i] = mac(acc[i], w4[i], x4[i]);
            }
        }
        for (x, w) in xs.remainder().iter().zip(ws.remainder()) {
            acc[0] = mac(acc[0], *w, *x);
        }
        let sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        output[tail + o] = params.activation.apply(sum + bias[tail + o]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Activation;
    use crate::f32::test_util::{Rng, assert_close};
    use std::vec::Vec;

    #[test]
    fn matches_naive_reference() {
        let mut seed = 300;
        for &n_in in &[1, 3, 4, 17, 64] {
            for &n_out in &[1, 2, 4, 5, 10, 13] {
                for act in [Activation::None, Activation::Relu, Activation::Relu6] {
                    seed += 1;
                    let params = LinearParams::new(n_in, n_out, act).unwrap();
                    let mut rng = Rng::new(seed);
                    let x: Vec<f32> = rng.vec(n_in).iter().map(|v| v * 4.0).collect();
                    let w = rng.vec(n_in * n_out);
                    let b = rng.vec(n_out);
                    let mut packed = vec![0.0; w.len()];
                    pack_linear_weights(&params, &w, &mut packed);
                    let mut got = vec![f32::NAN; n_out];
                    linear(&params, &x, &packed, &b, &mut got);
                    let want: Vec<f32> = (0..n_out)
                        .map(|o| {
                            let s: f64 = (0..n_in)
                                .map(|i| w[o * n_in + i] as f64 * x[i] as f64)
                                .sum::<f64>()
                                + b[o] as f64;
                            act.apply(s as f32)
                        })
                        .collect();
                    assert_close(&got, &want, 1e-5, &format!("linear {n_in} -> {n_out}"));
                }
            }
        }
    }
}
