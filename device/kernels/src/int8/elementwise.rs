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

/// Outputs from which a two-input add looks its inputs' rescaled values up in tables (not
/// on aarch64, whose NEON rescales eight at a time): building the two tables costs about as
/// much as 180 outputs.
#[cfg_attr(target_arch = "aarch64", allow(dead_code))]
pub const ADD_TABLE_MIN_LEN: usize = 512;

/// An add's input rescaled as [`add`] rescales it, for each of the 256 codes (code `c` at
/// `c + 128`): `rescale((c - zero) << left_shift)`.
#[inline(always)]
pub fn rescaled_codes(zero: i32, rescale: &Requantize, left_shift: u32) -> [i32; 256] {
    core::array::from_fn(|i| rescale.apply_at_most_half((i as i32 - 128 - zero) << left_shift))
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
        #[allow(unused_mut)]
        let mut done = 0;
        // On aarch64, eight outputs at a time with NEON (`apply4_neon`, the same results):
        // the rescales are at most one by construction, the output's below a half as a
        // layer's usually is.
        #[cfg(target_arch = "aarch64")]
        if stage.factors_below_half
            && [ra, rb]
                .iter()
                .all(|r| r.shift <= 0 && r.multiplier >= 1 << 30)
        {
            use super::requantize::apply4_neon;
            use core::arch::aarch64::*;
            // SAFETY: NEON is part of every aarch64 target; each load and store covers 8
            // codes at `8 q`, within `a`, `b` and `output` (chunks of 8 of the same length,
            // asserted above); the clamped lanes are codes, which the narrowing keeps.
            unsafe {
                let left = vdupq_n_s32(shift as i32);
                let (zero_a, zero_b) = (vdupq_n_s32(*za), vdupq_n_s32(*zb));
                let (ma, sa) = (vdupq_n_s32(ra.multiplier), vdupq_n_s32(ra.shift));
                let (mb, sb) = (vdupq_n_s32(rb.multiplier), vdupq_n_s32(rb.shift));
                let (mo, so) = (
                    vdupq_n_s32(output_rescale.multiplier),
                    vdupq_n_s32(output_rescale.shift),
                );
                // Four codes widened, less their zero point, shifted left.
                let lanes = |codes: int16x4_t, zero: int32x4_t| {
                    vshlq_s32(vsubq_s32(vmovl_s16(codes), zero), left)
                };
                let n = output.len() / 8 * 8;
                for q in (0..n).step_by(8) {
                    let xa = vmovl_s8(vld1_s8(a.as_ptr().add(q)));
                    let xb = vmovl_s8(vld1_s8(b.as_ptr().add(q)));
                    let half = |xa: int16x4_t, xb: int16x4_t| {
                        let sum = vaddq_s32(
                            apply4_neon(lanes(xa, zero_a), ma, sa),
                            apply4_neon(lanes(xb, zero_b), mb, sb),
                        );
                        vmovn_s32(stage.clamp4_neon(apply4_neon(sum, mo, so)))
                    };
                    let low = half(vget_low_s16(xa), vget_low_s16(xb));
                    let high = half(vget_high_s16(xa), vget_high_s16(xb));
                    vst1_s8(
                        output.as_mut_ptr().add(q),
                        vmovn_s16(vcombine_s16(low, high)),
                    );
                }
                done = n;
            }
        }
        // Elsewhere, a long add looks each input's rescaled value up in a table of its 256
        // codes, built once per call (2 KiB of stack): the two rescales cost about 40
        // instructions per output on Cortex-M, a table 256 of each.
        #[cfg(not(target_arch = "aarch64"))]
        if output.len() >= ADD_TABLE_MIN_LEN {
            let (ta, tb) = (
                rescaled_codes(*za, ra, shift),
                rescaled_codes(*zb, rb, shift),
            );
            for (o, (x, y)) in output.iter_mut().zip(a.iter().zip(b.iter())) {
                let sum = ta[(*x as i32 + 128) as usize] + tb[(*y as i32 + 128) as usize];
                *o = stage.requantize(&output_rescale, sum);
            }
            return;
        }
        for (o, (x, y)) in output[done..]
            .iter_mut()
            .zip(a[done..].iter().zip(b[done..].iter()))
        {
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
    use crate::int8::test_codes::Rng;

    #[test]
    fn a_two_input_add_equals_the_formula() {
        // On aarch64 (tests/aarch64_under_qemu.rs) the add takes NEON eight at a time.
        let mut rng = Rng(0x2545_f491);
        for len in [1, 7, 8, 9, 16, 23, ADD_TABLE_MIN_LEN, ADD_TABLE_MIN_LEN + 9] {
            // The larger scale's input at exactly a half (shift 0), the other below.
            let rescale = [
                Requantize::from_real(0.5).unwrap(),
                Requantize::from_real(0.5 * (rng.next() % 1000) as f64 / 1000.0 + 0.01).unwrap(),
            ];
            let output_rescale =
                Requantize::from_real((1 + rng.next() % 100) as f64 * 1e-8).unwrap();
            let zeros = [
                (rng.next() % 256) as i32 - 128,
                (rng.next() % 256) as i32 - 128,
            ];
            let zero_point = (rng.next() % 200) as i32 - 100;
            let stage = OutputStage {
                zero_point,
                min: zero_point as i8,
                max: 120,
                factors_below_half: false,
                factors_short: false,
            }
            .with_factors(&[output_rescale]);
            assert!(stage.factors_below_half);
            let (a, b) = (rng.codes(len), rng.codes(len));
            let mut got = std::vec![0i8; len];
            add(&[&a, &b], &zeros, &rescale, output_rescale, stage, &mut got);
            let shift = add_left_shift(2);
            for i in 0..len {
                let sum = rescale[0].apply((a[i] as i32 - zeros[0]) << shift)
                    + rescale[1].apply((b[i] as i32 - zeros[1]) << shift);
                let want = stage.requantize(&output_rescale, sum);
                assert_eq!(got[i], want, "{len} {i}");
            }
        }
    }

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
