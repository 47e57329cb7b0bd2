//! Fake quantisation: f32 tensors rounded to the int8 grid the board will compute on, with
//! straight-through gradients, so that training sees int8's rounding and clipping.
//!
//! The grids are the ones `dnal_export::int8::quantize` writes: a value keeps the scale and
//! zero point calibration gave it; weights are symmetric per output channel,
//! `scale = max|w| / 127`. What the forward pass leaves out is the requantisation's own
//! rounding (a fixed-point multiplier instead of the exact ratio of scales) and the int32
//! rounding of the biases: both are far below one step of the output's grid.

use burn::tensor::Tensor;
use dnal_export::int8::{SCALES, ValueQuantization};

/// Rounds `x` to the int8 codes of `q` and back: `(clamp(round(x / s) + z, -128, 127) - z) * s`.
///
/// The gradient is the identity inside the range the codes can hold and 0 outside it (the
/// clipped straight-through estimator): rounding has no useful gradient of its own, clipping
/// has, since the board saturates there.
///
/// # Shapes
/// - `x` and output: any
pub fn fake_quantize_value<const D: usize>(x: Tensor<D>, q: ValueQuantization) -> Tensor<D> {
    let scale = q.scale as f64;
    let zero = q.zero_point as f64;
    let clipped = x.clamp((-128.0 - zero) * scale, (127.0 - zero) * scale);
    let rounded = clipped.clone().div_scalar(scale).round().mul_scalar(scale);
    clipped.clone() + (rounded - clipped).detach()
}

/// Rounds weights to int8 per output channel, symmetric (`scale = max|w| / 127`, codes in
/// `-127..=127`), as `dnal_export::int8::quantize` does; the gradient passes straight
/// through (no weight is ever clipped: the largest sets the scale).
///
/// # Shapes
/// - `w`: `[rows, cols]`; output channels along `channel_dim` (0 for a conv's weights
///   reshaped to `[out, in * kh * kw]`, 1 for burn's linear weights `[in, out]`)
/// - output: as `w`
pub fn fake_quantize_weights(w: Tensor<2>, channel_dim: usize) -> Tensor<2> {
    let scale = w
        .clone()
        .detach()
        .abs()
        .max_dim(1 - channel_dim)
        .div_scalar(127.0)
        .clamp_min(*SCALES.start());
    let rounded = (w.clone().detach() / scale.clone())
        .round()
        .clamp(-127.0, 127.0)
        * scale;
    w.clone() + (rounded - w).detach()
}

/// [`fake_quantize_weights`] for a conv's weights.
///
/// # Shapes
/// - `w` and output: `[out, in / groups, kh, kw]`
pub fn fake_quantize_conv_weights(w: Tensor<4>) -> Tensor<4> {
    let shape = w.dims();
    let [out, a, b, c] = shape;
    fake_quantize_weights(w.reshape([out, a * b * c]), 0).reshape(shape)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, TensorData};
    use dnal_export::int8::quantization_of_range;

    use super::*;

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn gradient<const D: usize>(x: &Tensor<D>, grads: &burn::tensor::Gradients) -> Vec<f32> {
        x.grad(grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn values_land_on_the_codes_the_board_computes() {
        let device = Device::flex();
        let q = quantization_of_range(-1.3, 4.1);
        let xs: Vec<f32> = (0..400).map(|i| -2.0 + i as f32 * 0.0173).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [20, 20]), &device);
        let fake = values(fake_quantize_value(x, q.into()));
        for (x, y) in xs.iter().zip(fake) {
            let code = q.quantize(*x);
            let expected = (code as i32 - q.zero_point) as f32 * q.scale;
            // burn rounds ties to even, the board away from zero.
            if ((x / q.scale).fract().abs() - 0.5).abs() < 1e-3 {
                continue;
            }
            assert!(
                (y - expected).abs() < 1e-5,
                "{x} -> {y}, the board's code {code} means {expected}"
            );
        }
    }

    #[test]
    fn the_gradient_passes_inside_the_range_and_stops_outside() {
        let device = Device::flex().autodiff();
        let q: ValueQuantization = quantization_of_range(-1.0, 1.0).into();
        let x = Tensor::<1>::from_data(
            TensorData::new(vec![-3.0f32, -0.4, 0.3, 0.9, 2.5], [5]),
            &device,
        )
        .require_grad();
        let grads = fake_quantize_value(x.clone(), q)
            .mul_scalar(2.0)
            .sum()
            .backward();
        assert_eq!(gradient(&x, &grads), vec![0.0, 2.0, 2.0, 2.0, 0.0]);
    }

    #[test]
    fn weights_round_per_output_channel_with_a_straight_through_gradient() {
        let device = Device::flex().autodiff();
        // Two output channels as columns (burn's linear layout): scales 1/127 and 100/127.
        let w = vec![1.0f32, 100.0, 0.5, -3.0, -0.25, 40.0];
        let x = Tensor::<2>::from_data(TensorData::new(w.clone(), [3, 2]), &device).require_grad();
        let fake = fake_quantize_weights(x.clone(), 1);
        let grads = fake.clone().sum().backward();
        let fake = values(fake.detach());
        for (i, (w, f)) in w.iter().zip(&fake).enumerate() {
            let scale = if i % 2 == 0 {
                1.0 / 127.0
            } else {
                100.0 / 127.0
            };
            let code = (w / scale).round();
            assert!((f - code * scale).abs() < 1e-5, "weight {w}: {f}");
        }
        // The largest weight of each channel is exact: it sets the scale.
        assert!((fake[0] - 1.0).abs() < 1e-6 && (fake[1] - 100.0).abs() < 1e-4);
        assert_eq!(gradient(&x, &grads), vec![1.0; 6]);
    }
}
