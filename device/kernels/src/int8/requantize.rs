//! Requantisation: an `i32` accumulator of int8 products scaled back to int8 by a real
//! multiplier held as a Q31 fixed-point number and a power-of-two shift, the scheme of
//! TFLite's reference kernels and CMSIS-NN (gemmlowp's `SaturatingRoundingDoublingHighMul`
//! and `RoundingDivideByPOT`), so that a network quantised here computes, bit for bit, what
//! those engines would.
//!
//! A layer's accumulator `acc = sum((x - x_zero) * w)` is in units of `x_scale * w_scale`;
//! its output in units of `y_scale` is `acc * (x_scale * w_scale / y_scale) + y_zero`. The
//! real factor is fixed when the network is quantised ([`Requantize::from_real`], on the
//! host); the board only multiplies, shifts and rounds ([`Requantize::apply`]).

/// A positive real multiplier `m` as `multiplier * 2^(shift - 31)`, with `multiplier` in
/// `[2^30, 2^31)` (Q31, so `multiplier / 2^31` is in `[0.5, 1)`).
/// `#[repr(C)]`: kernels load the pairs of several channels at once (multipliers, then
/// shifts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Requantize {
    /// The Q31 mantissa.
    pub multiplier: i32,
    /// The power of two: positive shifts left, negative right.
    pub shift: i32,
}

/// Shifts a [`Requantize`] may hold: a real factor between about `2^-31` and `2^31`.
pub const SHIFTS: core::ops::RangeInclusive<i32> = -31..=30;

/// Shifts of the factors [`Requantize::to_i8_short`] takes: below a half, and at least
/// `2^-22` (a layer's factor `x_scale * w_scale / y_scale` is usually near `2^-10`).
pub const SHORT_SHIFTS: core::ops::RangeInclusive<i32> = -21..=-1;

/// `round(a * b / 2^31)`, saturated: the high half of the doubled 64-bit product, rounded
/// (gemmlowp's `SaturatingRoundingDoublingHighMul`, whose rounding of ties follows its nudge:
/// up for positive products, towards zero for negative ones).
#[inline]
pub const fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    let nudge = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Division truncates towards zero, as C++'s does.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent`, rounded to nearest with ties away from zero (gemmlowp's
/// `RoundingDivideByPOT`); `exponent` in `0..=31`.
#[inline(always)]
pub const fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    // `1 << 31` wraps to `i32::MIN` in `u32`, and `- 1` then gives `i32::MAX`: the mask
    // of every exponent in 0..=31 without 64-bit shifts.
    let mask = (1u32 << exponent).wrapping_sub(1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + if x < 0 { 1 } else { 0 };
    (x >> exponent) + if remainder > threshold { 1 } else { 0 }
}

impl Requantize {
    /// The identity: `apply(x) == x`.
    pub const ONE: Requantize = Requantize {
        multiplier: 1 << 30,
        shift: 1,
    };

    /// The fixed-point form of `real`, or `None` if it is not a positive finite number within
    /// [`SHIFTS`]. Exact to half a unit of the 31-bit mantissa.
    pub fn from_real(real: f64) -> Option<Requantize> {
        if !(real.is_finite() && real > 0.0) {
            return None;
        }
        // Normalise into [0.5, 1): real = mantissa * 2^shift.
        let (mut mantissa, mut shift) = (real, 0i32);
        while mantissa >= 1.0 {
            mantissa /= 2.0;
            shift += 1;
            if shift > *SHIFTS.end() + 1 {
                return None;
            }
        }
        while mantissa < 0.5 {
            mantissa *= 2.0;
            shift -= 1;
            if shift < *SHIFTS.start() {
                return None;
            }
        }
        // Round half up: mantissa is positive (`core` has no `f64::round`).
        let mut q = (mantissa * (1u64 << 31) as f64 + 0.5) as i64;
        if q == 1i64 << 31 {
            q /= 2;
            shift += 1;
        }
        if !SHIFTS.contains(&shift) {
            return None;
        }
        Some(Requantize {
            multiplier: q as i32,
            shift,
        })
    }

    /// The real factor this stands for.
    pub fn real(&self) -> f64 {
        self.multiplier as f64 / (1u64 << 31) as f64 * pow2(self.shift)
    }

    /// `round(x * real)`, as TFLite's `MultiplyByQuantizedMultiplier`: shift left, take the
    /// rounded high half of the product with the mantissa, then divide by the right shift
    /// with rounding. The left shift saturates where TFLite's would overflow.
    #[inline]
    pub const fn apply(&self, x: i32) -> i32 {
        let (left, right) = if self.shift > 0 {
            (self.shift as u32, 0)
        } else {
            (0, (-self.shift) as u32)
        };
        let shifted = x.saturating_mul(1 << left);
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(shifted, self.multiplier),
            right,
        )
    }

    /// An int8 output from accumulator `acc`: `apply(acc) + zero_point`, clamped to
    /// `[min, max]` (the activation's range: -128..=127, or from the zero point up for a
    /// ReLU).
    ///
    /// A factor below a half ([`Requantize::below_half`], every convolution's and linear
    /// layer's usual case) takes the short way, [`Requantize::to_i8_below_half`].
    #[inline(always)]
    pub const fn to_i8(&self, acc: i32, zero_point: i32, min: i8, max: i8) -> i8 {
        if self.below_half() {
            self.to_i8_below_half(acc, zero_point, min, max)
        } else {
            clamp_code(self.apply(acc).saturating_add(zero_point), min, max)
        }
    }

    /// True for a factor below a half (`shift <= -1`) with a mantissa in `[2^30, 2^31)` (as
    /// [`Requantize::from_real`] makes and exports hold): what
    /// [`Requantize::apply_below_half`] needs.
    #[inline(always)]
    pub const fn below_half(&self) -> bool {
        self.shift <= -1 && self.shift >= *SHIFTS.start() && self.multiplier >= 1 << 30
    }

    /// [`Requantize::apply`] for a factor [`Requantize::below_half`], in one rounding of the
    /// 64-bit product instead of two, with the same results (tested over the whole `i32`
    /// range).
    ///
    /// With `t = acc * multiplier + 2^30` and `e = -shift >= 1`, gemmlowp's two steps are
    /// `h = floor(t / 2^31)` (the doubling high multiply; its nudge and truncation meet this
    /// floor, and no left shift is needed) and `floor((h + 2^(e-1) - [h < 0]) / 2^e)` (the
    /// rounding divide, ties away from zero). Nested floors of divisions by positive
    /// integers are one floor, so this is `floor((t + c * 2^31) / 2^(31+e))` with `c =
    /// 2^(e-1) - [t < 0]`: a multiply-accumulate, an add with carry into the high word, and
    /// a shift of the high word by `e - 1`; about 8 instructions on Cortex-M against 20.
    /// Nothing overflows: `|t| < 2^62`, and the high word stays within `2^30`.
    #[inline(always)]
    pub const fn apply_below_half(&self, acc: i32) -> i32 {
        debug_assert!(self.below_half());
        #[cfg(target_pointer_width = "64")]
        return self.below_half_64(acc);
        #[cfg(not(target_pointer_width = "64"))]
        return self.below_half_32(acc);
    }

    /// [`Requantize::apply_below_half`] on a 64-bit CPU: the two steps as they are, the high
    /// half in one 64-bit shift (measured on aarch64, 1% fewer instructions than one
    /// rounding there).
    #[cfg_attr(not(target_pointer_width = "64"), allow(dead_code))]
    #[inline(always)]
    const fn below_half_64(&self, acc: i32) -> i32 {
        let high = ((acc as i64 * self.multiplier as i64 + (1 << 30)) >> 31) as i32;
        rounding_divide_by_pot(high, (-self.shift) as u32)
    }

    /// [`Requantize::apply_below_half`] in 32-bit halves, so that a 32-bit CPU runs no 64-bit
    /// shift: `c < 2^30`, and `c * 2^31` adds `c & 1` to the low word's top bit and `c >> 1`
    /// to the high word.
    #[cfg_attr(target_pointer_width = "64", allow(dead_code))]
    #[inline(always)]
    const fn below_half_32(&self, acc: i32) -> i32 {
        let e1 = !self.shift as u32;
        let t = acc as i64 * self.multiplier as i64 + (1 << 30);
        let (high, low) = ((t >> 32) as i32, t as u32);
        let c = (1 << e1) - ((high as u32) >> 31) as i32;
        let (_, carry) = low.overflowing_add((c as u32) << 31);
        (high + (c >> 1) + carry as i32) >> e1
    }

    /// [`Requantize::apply`] for any factor, through [`Requantize::apply_below_half`] where it
    /// is below a half and gemmlowp's doubling high multiply alone (`floor((acc *
    /// multiplier + 2^30) / 2^31)`, no rounding divide) where it is a mantissa times `2^0`;
    /// the general way for the rest. An add's input rescales (at most a half) take the first
    /// two.
    #[inline(always)]
    pub const fn apply_at_most_half(&self, acc: i32) -> i32 {
        if self.below_half() {
            self.apply_below_half(acc)
        } else if self.shift == 0 && self.multiplier >= 1 << 30 {
            ((acc as i64 * self.multiplier as i64 + (1 << 30)) >> 31) as i32
        } else {
            self.apply(acc)
        }
    }

    /// True for a factor [`Requantize::to_i8_short`] takes: a shift in [`SHORT_SHIFTS`] and a
    /// mantissa in `[2^30, 2^31)`.
    #[inline(always)]
    pub const fn is_short(&self) -> bool {
        self.shift >= *SHORT_SHIFTS.start()
            && self.shift <= *SHORT_SHIFTS.end()
            && self.multiplier >= 1 << 30
    }

    /// [`Requantize::to_i8`] for a factor that [`Requantize::is_short`], in 32-bit steps that
    /// Cortex-M has single instructions for: the accumulator doubled with saturation
    /// (`QADD`), the rounded high word of its product with the mantissa (`SMMULR`), then the
    /// rounding divide by `2^e` (`e = -shift`) as `(h + 2^(e-1) - [h < 0]) >> e`. 8
    /// instructions an output with the store, against 11 for
    /// [`Requantize::to_i8_below_half`], with the same codes (tested over the whole `i32`
    /// range):
    /// - where `|acc| < 2^30`, `floor((2 acc * m + 2^31) / 2^32)` is gemmlowp's doubling high
    ///   multiply `floor((acc * m + 2^30) / 2^31)` (its nudge and truncation make that
    ///   floor), and the divide is gemmlowp's, ties away from zero;
    /// - where the doubling saturates, the high word is still at least `2^29 - 1` in size
    ///   (`m >= 2^30`), so for `e <= 21` the result is at least 256 in size, as the exact one
    ///   is: both clamp to the same code. (At `e = 22` they can differ: a test shows it.)
    #[inline(always)]
    pub const fn to_i8_short(&self, acc: i32, zero_point: i32, min: i8, max: i8) -> i8 {
        let doubled = acc.saturating_add(acc);
        let high = ((doubled as i64 * self.multiplier as i64 + (1 << 31)) >> 32) as i32;
        let e = (-self.shift) as u32;
        let y = (high + (1 << (e - 1)) - ((high as u32) >> 31) as i32) >> e;
        clamp_code(y.saturating_add(zero_point), min, max)
    }

    /// [`Requantize::to_i8`] for a factor [`Requantize::below_half`], without testing it (a
    /// kernel whose stage says every factor of its layer is below a half calls this).
    #[inline(always)]
    pub const fn to_i8_below_half(&self, acc: i32, zero_point: i32, min: i8, max: i8) -> i8 {
        // Saturating although |apply_below_half| <= 2^30: it compiles to one `QADD`, and the
        // clamp then to one `SSAT`.
        clamp_code(
            self.apply_below_half(acc).saturating_add(zero_point),
            min,
            max,
        )
    }
}

/// [`Requantize::apply`] of four values by four factors of at most one (`shift <= 0`,
/// mantissas in `[2^30, 2^31)`), with NEON in the scheme of gemmlowp's NEON code: `SQRDMULH`
/// is the doubling high multiply (never saturating here: the mantissas are positive), and
/// `SRSHL` rounds the right shift half up, so negative values are first lowered by one
/// (`SQADD` of their sign) to round ties away from zero. The same results as `apply`
/// (tested under qemu-aarch64).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub(crate) fn apply4_neon(
    x: core::arch::aarch64::int32x4_t,
    multiplier: core::arch::aarch64::int32x4_t,
    shift: core::arch::aarch64::int32x4_t,
) -> core::arch::aarch64::int32x4_t {
    use core::arch::aarch64::*;
    // SAFETY: register-only NEON instructions; NEON is part of every aarch64 target Rust
    // supports.
    unsafe {
        let high = vqrdmulhq_s32(x, multiplier);
        // -1 where `high` is negative and the shift is not 0 (its sign bit is then set).
        let fixup = vshrq_n_s32::<31>(vandq_s32(high, shift));
        vrshlq_s32(vqaddq_s32(high, fixup), shift)
    }
}

/// `y` clamped to `[min, max]`.
#[inline(always)]
const fn clamp_code(y: i32, min: i8, max: i8) -> i8 {
    if y < min as i32 {
        min
    } else if y > max as i32 {
        max
    } else {
        y as i8
    }
}

/// `2^e` for the shifts a [`Requantize`] holds.
fn pow2(e: i32) -> f64 {
    if e >= 0 {
        (1u64 << e) as f64
    } else {
        1.0 / (1u64 << -e) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{vec, vec::Vec};

    /// The reference formula in `i128`, with the ties rounded as gemmlowp's two steps round
    /// them.
    fn reference(x: i32, r: Requantize) -> i32 {
        let left = r.shift.max(0);
        let right = (-r.shift).max(0) as u32;
        let shifted = (x as i64 * (1i64 << left)).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        rounding_divide_by_pot(
            saturating_rounding_doubling_high_mul(shifted, r.multiplier),
            right,
        )
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 11
        }
        fn unit(&mut self) -> f64 {
            self.next() as f64 / (1u64 << 53) as f64
        }
        /// An accumulator over the whole `i32` range, small ones more often (where the
        /// roundings decide).
        fn accumulator(&mut self) -> i32 {
            let wide = self.next() as u32 as i32;
            if self.next().is_multiple_of(2) {
                wide
            } else {
                wide >> (self.next() % 31)
            }
        }
    }

    #[test]
    fn a_real_factor_round_trips_to_half_a_unit_of_its_mantissa() {
        let mut rng = Lcg(7);
        for _ in 0..10_000 {
            // Factors from 2^-30 to 2^8, log-uniform: what layers' scale ratios are.
            let real = pow2(-30) * (38.0 * core::f64::consts::LN_2 * rng.unit()).exp();
            let r = Requantize::from_real(real).unwrap();
            assert!((1 << 30..=i32::MAX).contains(&r.multiplier), "{r:?}");
            let rel = (r.real() - real).abs() / real;
            assert!(rel <= 0.5 / (1u64 << 30) as f64, "{real} -> {r:?}: {rel}");
        }
        assert_eq!(Requantize::from_real(1.0), Some(Requantize::ONE));
        assert_eq!(Requantize::from_real(0.5).unwrap().real(), 0.5);
        // A mantissa that rounds up to 1 moves to the next power of two.
        let r = Requantize::from_real(1.0 - 1e-12).unwrap();
        assert_eq!(r, Requantize::ONE);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-12, 1e12] {
            assert_eq!(Requantize::from_real(bad), None, "{bad}");
        }
    }

    #[test]
    fn apply_rounds_the_product_to_within_one_and_matches_the_reference_formula() {
        let mut rng = Lcg(11);
        for _ in 0..20_000 {
            let real = pow2(-24) * (28.0 * core::f64::consts::LN_2 * rng.unit()).exp();
            let r = Requantize::from_real(real).unwrap();
            let x = (rng.next() as i64 % (1 << 24) - (1 << 23)) as i32;
            let y = r.apply(x);
            assert_eq!(y, reference(x, r));
            let exact = x as f64 * r.real();
            // Two roundings (the high half, then the right shift): never a whole unit off.
            assert!(
                (y as f64 - exact).abs() < 1.0,
                "{x} * {real}: {y} vs {exact}"
            );
        }
        // The identity, and halving with its ties.
        assert_eq!(Requantize::ONE.apply(12345), 12345);
        assert_eq!(Requantize::ONE.apply(-7), -7);
        let half = Requantize::from_real(0.5).unwrap();
        assert_eq!(half.apply(4), 2);
        assert_eq!(half.apply(3), 2);
        assert_eq!(half.apply(-4), -2);
    }

    #[test]
    fn the_short_way_to_int8_equals_apply() {
        let mut rng = Lcg(5);
        let clamp = |v: i32, zero: i32, r: &Requantize| {
            r.apply(v).saturating_add(zero).clamp(-128, 127) as i8
        };
        for _ in 0..200_000 {
            // Factors from 2^-31 to 1 and accumulators over the whole i32 range, small ones
            // more often (where the roundings decide).
            let real = pow2(-31) * (31.0 * core::f64::consts::LN_2 * rng.unit()).exp();
            let Some(r) = Requantize::from_real(real.min(0.999_999)) else {
                continue;
            };
            let acc = rng.accumulator();
            let zero = (rng.next() % 256) as i32 - 128;
            assert_eq!(
                r.to_i8(acc, zero, -128, 127),
                clamp(acc, zero, &r),
                "{acc} {r:?}"
            );
        }
        for acc in [i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX] {
            for shift in [0, -1, -15, -30, -31] {
                let r = Requantize {
                    multiplier: i32::MAX,
                    shift,
                };
                assert_eq!(r.to_i8(acc, 3, -128, 127), clamp(acc, 3, &r), "{acc} {r:?}");
                let r = Requantize {
                    multiplier: 1 << 30,
                    shift,
                };
                assert_eq!(
                    r.to_i8(acc, -3, -128, 127),
                    clamp(acc, -3, &r),
                    "{acc} {r:?}"
                );
            }
        }
    }

    #[test]
    fn the_doubled_high_word_equals_apply_for_short_factors() {
        let mut rng = Lcg(11);
        let exact = |v: i32, zero: i32, min: i8, r: &Requantize| {
            r.apply(v).saturating_add(zero).clamp(min as i32, 127) as i8
        };
        let mut short = 0;
        for _ in 0..400_000 {
            // Factors from 2^-24 to 1, accumulators over the whole i32 range, small ones more
            // often (where the roundings decide), and both clamps (int8, and a ReLU's).
            let real = pow2(-24) * (24.0 * core::f64::consts::LN_2 * rng.unit()).exp();
            let Some(r) = Requantize::from_real(real.min(0.999_999)) else {
                continue;
            };
            if !r.is_short() {
                continue;
            }
            short += 1;
            let acc = rng.accumulator();
            let zero = (rng.next() % 256) as i32 - 128;
            let min = if rng.next().is_multiple_of(2) {
                -128
            } else {
                zero as i8
            };
            assert_eq!(
                r.to_i8_short(acc, zero, min, 127),
                exact(acc, zero, min, &r),
                "{acc} {r:?} {zero} {min}"
            );
        }
        assert!(short > 300_000, "{short}");
        // The edges: where doubling saturates (2^30 and beyond), at the ends of the range of
        // shifts and mantissas.
        let edges = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30) - 1,
            -(1 << 30),
            -(1 << 30) + 1,
            -1,
            0,
            1,
            (1 << 30) - 1,
            1 << 30,
            i32::MAX,
        ];
        for acc in edges {
            for shift in SHORT_SHIFTS {
                for multiplier in [1 << 30, (1 << 30) + 1, i32::MAX - 1, i32::MAX] {
                    let r = Requantize { multiplier, shift };
                    for zero in [-128, -3, 0, 127] {
                        let got = r.to_i8_short(acc, zero, -128, 127);
                        assert_eq!(got, exact(acc, zero, -128, &r), "{acc} {r:?} {zero}");
                    }
                }
            }
        }
        // One step below the range the doubling's saturation shows: the exact code clamps at
        // 127, the short way's halved accumulator does not.
        let r = Requantize {
            multiplier: 1 << 30,
            shift: -22,
        };
        assert!(!r.is_short());
        assert_eq!(exact(i32::MAX, -128, -128, &r), 127);
        assert_eq!(r.to_i8_short(i32::MAX, -128, -128, 127), 0);
    }

    #[test]
    fn one_rounding_below_a_half_equals_two() {
        let mut rng = Lcg(3);
        // Every shift with the extreme mantissas and random ones, against accumulators over
        // the whole i32 range (the extremes, small values where ties decide, random ones).
        let mut accs: Vec<i32> = vec![i32::MIN, i32::MIN + 1, -2, -1, 0, 1, 2, i32::MAX];
        for _ in 0..2_000 {
            let wide = rng.next() as u32 as i32;
            accs.push(wide);
            accs.push(wide >> (rng.next() % 31));
        }
        for shift in -31..=-1 {
            let mut multipliers = vec![1 << 30, (1 << 30) + 1, i32::MAX - 1, i32::MAX];
            multipliers.extend((0..8).map(|_| (1 << 30) + (rng.next() % (1 << 30)) as i32));
            for multiplier in multipliers {
                let r = Requantize { multiplier, shift };
                assert!(r.below_half());
                for &acc in &accs {
                    let want = r.apply(acc);
                    assert_eq!(r.below_half_64(acc), want, "{acc} {r:?}");
                    assert_eq!(r.below_half_32(acc), want, "{acc} {r:?}");
                }
            }
        }
        // Ties at every exponent, both signs: `acc * multiplier` exactly `(k + 1/2) * 2^31e`.
        for e in 1..=20 {
            let r = Requantize {
                multiplier: 1 << 30,
                shift: -e,
            };
            for k in -5i32..5 {
                let acc = (2 * k + 1) << e;
                assert_eq!(r.below_half_64(acc), r.apply(acc), "{acc} {r:?}");
                assert_eq!(r.below_half_32(acc), r.apply(acc), "{acc} {r:?}");
            }
        }
        for r in [Requantize::ONE, Requantize::from_real(0.75).unwrap()] {
            assert!(!r.below_half(), "{r:?}");
        }
        // Every factor, each way `apply_at_most_half` takes (below a half, a mantissa times
        // 2^0, above): the same as `apply`.
        for shift in -3..=3 {
            for multiplier in [1 << 30, (1 << 30) + 12345, i32::MAX] {
                let r = Requantize { multiplier, shift };
                for &acc in &accs {
                    assert_eq!(r.apply_at_most_half(acc), r.apply(acc), "{acc} {r:?}");
                }
            }
        }
    }

    #[test]
    fn the_edges_saturate_instead_of_wrapping() {
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX),
            i32::MAX - 1
        );
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(-4, 0), -4);
        // A large factor on a large accumulator saturates, and the output clamps to int8.
        let big = Requantize::from_real(1000.0).unwrap();
        assert_eq!(
            big.apply(i32::MAX / 4),
            saturating_rounding_doubling_high_mul(i32::MAX, big.multiplier)
        );
        assert_eq!(
            big.apply(i32::MIN / 4),
            saturating_rounding_doubling_high_mul(i32::MIN, big.multiplier)
        );
        assert_eq!(big.to_i8(1 << 20, 0, -128, 127), 127);
        assert_eq!(big.to_i8(-(1 << 20), 0, -128, 127), -128);
        // A ReLU's range starts at the zero point.
        let r = Requantize::from_real(0.25).unwrap();
        assert_eq!(r.to_i8(-400, -5, -5, 127), -5);
        assert_eq!(r.to_i8(400, -5, -5, 127), 95);
    }
}
