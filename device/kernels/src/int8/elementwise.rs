//! int8 residual add of two or more tensors with their own scales.
//!
//! As TFLite's add: every input `q_i - zero_i` is shifted left by [`add_left_shift`] bits and
//! rescaled by `scale_i / (2 * max_j scale_j)` (a [`Requantize`] of at most 0.5, so that
//! nothing is lost to a common scale and nothing overflows), the sum is requantised to the
//! output by `2 * max_j scale_j / (2^left_shift * output_scale)`.

use super::{OutputStage, Requantize};

/// Bits every input of an `n`-input add is shifted left by: `min(23, 24 - ceil(log2(n)))`,
/// the most that keeps each shifted input and the sum of `n` rescaled ones within `i32`.
pub const fn add_left_shift(inputs: usize) -> u32 {
    let ceil_log2 = if inputs <= 1 {
        0
    } else {
        usize::BITS - (inputs - 1).leading_zeros()
    };
    let shift = 24u32.saturating_sub(ceil_log2);
    if shift > 23 { 23 } else { shift }
}

/// `output = stage(rescale_out(sum_i rescale_i((inputs[i] - zeros[i]) << left_shift)))`.
///
/// # Shapes
/// - `inputs`: two or more slices of `output.len()` values
/// - `zeros`, `rescale`: one per input (`rescale` each at most 0.5)
#[inline(always)]
pub fn add(
    inputs: &[&[i8]],
    zeros: &[i32],
    rescale: &[Requantize],
    output_rescale: Requantize,
    stage: OutputStage,
    output: &mut [i8],
) {
    assert!(!inputs.is_empty(), "int8 add needs an input");
    assert_eq!(zeros.len(), inputs.len(), "int8 add zero points");
    assert_eq!(rescale.len(), inputs.len(), "int8 add rescales");
    for x in inputs {
        assert_eq!(x.len(), output.len(), "int8 add input length");
    }
    let shift = add_left_shift(inputs.len());
    // The rescales are at most a half: one rounding of the 64-bit product, not two
    // (`Requantize::apply_at_most_half`, the same results). A residual add of two inputs,
    // the usual case, gets a loop of its own, without the loop over inputs.
    if let ([a, b], [za, zb], [ra, rb]) = (inputs, zeros, rescale) {
        for (o, (x, y)) in output.iter_mut().zip(a.iter().zip(b.iter())) {
            let sum = ra.apply_at_most_half((*x as i32 - za) << shift)
                + rb.apply_at_most_half((*y as i32 - zb) << shift);
            *o = stage.requantize(&output_rescale, sum);
        }
        return;
    }
    for (i, o) in output.iter_mut().enumerate() {
        let mut sum = 0i32;
        for ((x, z), r) in inputs.iter().zip(zeros).zip(rescale) {
            sum += r.apply_at_most_half((x[i] as i32 - z) << shift);
        }
        *o = stage.requantize(&output_rescale, sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_left_shift_leaves_room_for_every_input() {
        assert_eq!(add_left_shift(1), 23);
        assert_eq!(add_left_shift(2), 23);
        assert_eq!(add_left_shift(3), 22);
        assert_eq!(add_left_shift(4), 22);
        assert_eq!(add_left_shift(64), 18);
        for n in 1..=64usize {
            let shift = add_left_shift(n);
            // One shifted input, and n rescaled ones at their largest.
            assert!(255i64 << shift <= i32::MAX as i64);
            assert!(
                n as i64 * ((255i64 << shift) / 2 + 1) <= i32::MAX as i64,
                "{n}"
            );
        }
    }
}
