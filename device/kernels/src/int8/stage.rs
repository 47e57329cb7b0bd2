//! How a real tensor is held in int8 and how a layer's output stage clamps it.
//!
//! A value `q` of a tensor with `scale` and `zero_point` stands for `scale * (q - zero_point)`
//! (TFLite's asymmetric scheme). Weights are symmetric (`zero_point` 0, per output channel), so
//! only activations carry zero points; their scales are folded into each layer's
//! [`Requantize`](super::Requantize) multipliers on the host, and a kernel sees only zero points
//! and clamps.

use super::Requantize;
#[cfg(target_arch = "aarch64")]
use super::requantize::apply4_neon;
use crate::Activation;

/// The quantisation of one activation tensor: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quantization {
    /// A positive, finite step.
    pub scale: f32,
    /// The int8 code of real zero, in `-128..=127`.
    pub zero_point: i32,
}

impl Quantization {
    /// The int8 code nearest `x` (ties away from zero), saturated to `-128..=127`: how an image
    /// enters an int8 network. NaN reads as zero.
    #[inline]
    pub fn quantize(&self, x: f32) -> i8 {
        let steps = round_half_away(x / self.scale);
        steps
            .saturating_add(self.zero_point)
            .clamp(i8::MIN as i32, i8::MAX as i32) as i8
    }

    /// The real value `q` stands for.
    #[inline]
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (q as i32 - self.zero_point) as f32
    }
}

/// `x` rounded to the nearest integer, ties away from zero, saturated to `i32` (`core` has no
/// `f32::round`); NaN gives 0.
#[inline]
pub fn round_half_away(x: f32) -> i32 {
    // `as` saturates and maps NaN to 0.
    if x >= 0.0 {
        (x + 0.5) as i32
    } else {
        -((-x + 0.5) as i32)
    }
}

/// The end of an int8 layer: the output's zero point and the clamp its activation leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputStage {
    /// The output tensor's zero point.
    pub zero_point: i32,
    /// The smallest code the activation lets through.
    pub min: i8,
    /// The largest.
    pub max: i8,
    /// Every requantisation of the layer is [`Requantize::below_half`]: its kernel then
    /// takes the short way without testing each factor. Generated code states it as a
    /// constant, which also keeps a layer's code independent of its factors' values (a
    /// latency table measures layers with stand-in values).
    pub factors_below_half: bool,
    /// [`Requantize::to_i8_short`] gives the layer's exact codes: every requantisation of
    /// the layer [`Requantize::is_short`] (exact for any accumulator), or, for a two-input
    /// add, checked over every pair of input codes (dnal-export's `add_stage`). On 32-bit
    /// targets (Cortex-M) its kernel then takes the short way, 8 instructions an output
    /// instead of 11. Stated as a constant by generated code, as the flag above.
    pub factors_short: bool,
}

impl OutputStage {
    /// The stage of an output quantised as `output` after `activation`: a ReLU clamps at the
    /// code of 0 (the zero point), a ReLU6 also at the code of 6 (`zero_point + round(6 /
    /// scale)`), no activation only to int8.
    pub fn new(activation: Activation, output: Quantization) -> OutputStage {
        let zero = output.zero_point.clamp(i8::MIN as i32, i8::MAX as i32) as i8;
        let (min, max) = match activation {
            Activation::None => (i8::MIN, i8::MAX),
            Activation::Relu => (zero, i8::MAX),
            Activation::Relu6 => {
                let six = output
                    .zero_point
                    .saturating_add(round_half_away(6.0 / output.scale))
                    .clamp(zero as i32, i8::MAX as i32) as i8;
                (zero, six)
            }
        };
        OutputStage {
            zero_point: output.zero_point,
            min,
            max,
            factors_below_half: false,
            factors_short: false,
        }
    }

    /// This stage, knowing whether all of `factors` are [`Requantize::below_half`] and
    /// whether all are [`Requantize::is_short`].
    pub fn with_factors(self, factors: &[Requantize]) -> OutputStage {
        OutputStage {
            factors_below_half: factors.iter().all(Requantize::below_half),
            factors_short: factors.iter().all(Requantize::is_short),
            ..self
        }
    }

    /// The int8 output of accumulator `acc` requantised by `factor` (one of the layer's).
    #[inline(always)]
    pub const fn requantize(&self, factor: &Requantize, acc: i32) -> i8 {
        // On 64-bit targets the short factors go the below-half way, a 64-bit product and
        // shift there (every short factor is below a half).
        #[cfg(not(target_pointer_width = "64"))]
        if self.factors_short {
            return factor.to_i8_short(acc, self.zero_point, self.min, self.max);
        }
        if self.factors_below_half {
            factor.to_i8_below_half(acc, self.zero_point, self.min, self.max)
        } else {
            factor.to_i8(acc, self.zero_point, self.min, self.max)
        }
    }

    /// `out[i]` = the code of `acc[i]` requantised by `factor` ([`OutputStage::requantize`]
    /// for each): a run of outputs of one channel. On aarch64, four at a time with NEON
    /// where the factor is at most one, in the scheme of gemmlowp's NEON code
    /// (`SQRDMULH` is the doubling high multiply; `SRSHL` rounds the right shift half up,
    /// so negative values are first lowered by one to round ties away from zero): the same
    /// codes, about a quarter of the instructions.
    #[inline(always)]
    pub fn requantize_run(&self, factor: &Requantize, acc: &[i32], out: &mut [i8]) {
        assert_eq!(acc.len(), out.len(), "requantize_run lengths");
        // By value: a byte store may alias anything, so through the reference the factor
        // would be loaded again, and its constants recomputed, for every output.
        let factor = &{ *factor };
        #[allow(unused_mut)]
        let mut done = 0;
        // NEON takes any factor of at most one (`apply4_neon`), whatever the layer's others;
        // the stage's flag (a constant in generated code) spares the test where it can.
        #[cfg(target_arch = "aarch64")]
        if self.factors_below_half || (factor.shift <= 0 && factor.multiplier >= 1 << 30) {
            use core::arch::aarch64::*;
            // SAFETY: NEON is part of every aarch64 target Rust supports; each load and
            // store covers 4 values at `4 q < acc.len() = out.len()` (chunks of 4), and the
            // byte stores take the low byte of each lane (a clamped code).
            unsafe {
                let multiplier = vdupq_n_s32(factor.multiplier);
                let shift = vdupq_n_s32(factor.shift);
                for (a, o) in acc.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
                    let y = apply4_neon(vld1q_s32(a.as_ptr()), multiplier, shift);
                    let bytes = vreinterpretq_s8_s32(self.clamp4_neon(y));
                    o[0] = vgetq_lane_s8::<0>(bytes);
                    o[1] = vgetq_lane_s8::<4>(bytes);
                    o[2] = vgetq_lane_s8::<8>(bytes);
                    o[3] = vgetq_lane_s8::<12>(bytes);
                }
            }
            done = acc.len() / 4 * 4;
        }
        for (a, o) in acc[done..].iter().zip(&mut out[done..]) {
            *o = self.requantize(factor, *a);
        }
    }

    /// Four requantised values (`apply`'s) plus the zero point, clamped: codes in `i32`
    /// lanes.
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    pub(crate) fn clamp4_neon(
        &self,
        y: core::arch::aarch64::int32x4_t,
    ) -> core::arch::aarch64::int32x4_t {
        use core::arch::aarch64::*;
        // SAFETY: register-only NEON instructions, part of every aarch64 target. The values
        // are within 2^30 (below-one factors), so adding a zero point cannot overflow.
        unsafe {
            let y = vaddq_s32(y, vdupq_n_s32(self.zero_point));
            vminq_s32(
                vmaxq_s32(y, vdupq_n_s32(self.min as i32)),
                vdupq_n_s32(self.max as i32),
            )
        }
    }

    /// No clamp beyond int8, zero point `zero_point`.
    pub const fn plain(zero_point: i32) -> OutputStage {
        OutputStage {
            zero_point,
            min: i8::MIN,
            max: i8::MAX,
            factors_below_half: false,
            factors_short: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::test_codes::Rng;

    #[test]
    fn quantize_rounds_ties_away_from_zero_and_saturates() {
        let q = Quantization {
            scale: 0.5,
            zero_point: -3,
        };
        assert_eq!(q.quantize(0.0), -3);
        assert_eq!(q.quantize(0.25), -2);
        assert_eq!(q.quantize(-0.25), -4);
        assert_eq!(q.quantize(1000.0), 127);
        assert_eq!(q.quantize(-1000.0), -128);
        assert_eq!(q.quantize(f32::NAN), -3);
        assert_eq!(q.dequantize(-3), 0.0);
        assert_eq!(q.dequantize(1), 2.0);
        assert_eq!(round_half_away(2.5), 3);
        assert_eq!(round_half_away(-2.5), -3);
        assert_eq!(round_half_away(f32::INFINITY), i32::MAX);
    }

    #[test]
    fn a_run_requantises_as_each_output_alone() {
        // On aarch64 (tests/aarch64_under_qemu.rs) the run takes NEON four at a time.
        let mut rng = Rng(0x9e37_79b9);
        for shift in -31..=1 {
            for multiplier in [1 << 30, (1 << 30) + 7, i32::MAX] {
                let factor = Requantize { multiplier, shift };
                let zero_point = (rng.next() % 256) as i32 - 128;
                // Factors of a half to two: the layer's stage cannot say "below a half".
                let stage = OutputStage {
                    zero_point,
                    min: zero_point as i8,
                    max: 127,
                    factors_below_half: shift <= -1,
                    factors_short: factor.is_short(),
                };
                // Lengths around the four-lane chunks; accumulators over the whole range,
                // small ones (ties) included.
                for len in [1, 4, 7, 9] {
                    let acc: std::vec::Vec<i32> = (0..len)
                        .map(|i| match i % 3 {
                            0 => rng.next() as i32,
                            1 => (rng.next() as i32) >> (rng.next() % 31),
                            _ => [i32::MIN, i32::MAX, -1, 0, 1][(rng.next() % 5) as usize],
                        })
                        .collect();
                    let mut out = std::vec![0i8; len];
                    stage.requantize_run(&factor, &acc, &mut out);
                    for (a, o) in acc.iter().zip(&out) {
                        assert_eq!(*o, stage.requantize(&factor, *a), "{a} {factor:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn activations_clamp_at_the_codes_of_zero_and_six() {
        let q = Quantization {
            scale: 0.05,
            zero_point: -100,
        };
        assert_eq!(
            OutputStage::new(Activation::None, q),
            OutputStage::plain(-100)
        );
        let relu = OutputStage::new(Activation::Relu, q);
        assert_eq!((relu.min, relu.max), (-100, 127));
        let relu6 = OutputStage::new(Activation::Relu6, q);
        assert_eq!((relu6.min, relu6.max), (-100, 20));
        // Six beyond the range: int8's end.
        let wide = OutputStage::new(
            Activation::Relu6,
            Quantization {
                scale: 0.01,
                zero_point: -128,
            },
        );
        assert_eq!((wide.min, wide.max), (-128, 127));
    }
}
