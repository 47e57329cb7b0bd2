//! The Cortex-M DSP extension's packed 16-bit instructions the int8 kernels build on ("SIMD32"
//! in ARM's terms), one function each. On Cortex-M4/M7 each is the one instruction, as inline
//! assembly the register allocator schedules; elsewhere (the host's tests, aarch64) plain Rust
//! with the same results, so the kernels that use them run and are tested anywhere.
//!
//! A `u32` here holds two `i16` halves: bits 0-15 the bottom, 16-31 the top.

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod arm {
    use core::arch::asm;

    /// `acc + bottom(a) * bottom(b) + top(a) * top(b)` (`SMLAD`).
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let out: i32;
        // SAFETY: a register-only DSP instruction (Cortex-M4/M7, which this cfg selects); it
        // reads its three inputs and writes one output, no memory, stack or flags.
        unsafe {
            asm!("smlad {out}, {a}, {b}, {acc}", out = lateout(reg) out, a = in(reg) a,
                 b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack, preserves_flags));
        }
        out
    }

    /// `acc + bottom(a) * bottom(b)` (`SMLABB`).
    #[inline(always)]
    pub fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
        let out: i32;
        // SAFETY: as `smlad`.
        unsafe {
            asm!("smlabb {out}, {a}, {b}, {acc}", out = lateout(reg) out, a = in(reg) a,
                 b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack, preserves_flags));
        }
        out
    }

    /// `acc + top(a) * bottom(b)` (`SMLATB`).
    #[inline(always)]
    pub fn smlatb(a: u32, b: u32, acc: i32) -> i32 {
        let out: i32;
        // SAFETY: as `smlad`.
        unsafe {
            asm!("smlatb {out}, {a}, {b}, {acc}", out = lateout(reg) out, a = in(reg) a,
                 b = in(reg) b, acc = in(reg) acc, options(pure, nomem, nostack, preserves_flags));
        }
        out
    }

    /// Bytes 0 and 2 of `x`, sign-extended into the two halves (`SXTB16`).
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        let out: u32;
        // SAFETY: as `smlad`.
        unsafe {
            asm!("sxtb16 {out}, {x}", out = lateout(reg) out, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }

    /// `a` plus bytes 0 and 2 of `x`, sign-extended, half by half (`SXTAB16`).
    #[inline(always)]
    pub fn sxtab16(a: u32, x: u32) -> u32 {
        let out: u32;
        // SAFETY: as `smlad`.
        unsafe {
            asm!("sxtab16 {out}, {a}, {x}", out = lateout(reg) out, a = in(reg) a, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }

    /// `a` plus bytes 1 and 3 of `x`, sign-extended, half by half (`SXTAB16` with `ROR #8`).
    #[inline(always)]
    pub fn sxtab16_ror8(a: u32, x: u32) -> u32 {
        let out: u32;
        // SAFETY: as `smlad`.
        unsafe {
            asm!("sxtab16 {out}, {a}, {x}, ror #8", out = lateout(reg) out, a = in(reg) a,
                 x = in(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
        out
    }

    /// Bytes 1 and 3 of `x`, sign-extended into the two halves (`SXTB16` with `ROR #8`).
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        let out: u32;
        // SAFETY: as `smlad`.
        unsafe {
            asm!("sxtb16 {out}, {x}, ror #8", out = lateout(reg) out, x = in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }

    /// Half by half, wrapping: `a + b` (`SADD16`; it sets the GE flags, which nothing reads).
    #[inline(always)]
    pub fn sadd16(a: u32, b: u32) -> u32 {
        let out: u32;
        // SAFETY: a register-only DSP instruction (Cortex-M4/M7, which this cfg selects); it
        // reads two registers and writes one and the GE flags, no memory or stack.
        unsafe {
            asm!("sadd16 {out}, {a}, {b}", out = lateout(reg) out, a = in(reg) a, b = in(reg) b,
                 options(pure, nomem, nostack));
        }
        out
    }

    /// Half by half, wrapping: `a - b` (`SSUB16`).
    #[inline(always)]
    pub fn ssub16(a: u32, b: u32) -> u32 {
        let out: u32;
        // SAFETY: as `sadd16`.
        unsafe {
            asm!("ssub16 {out}, {a}, {b}", out = lateout(reg) out, a = in(reg) a, b = in(reg) b,
                 options(pure, nomem, nostack));
        }
        out
    }
}

#[cfg(any(test, not(all(target_arch = "arm", target_abi = "eabihf"))))]
mod portable {
    /// The signed bottom half.
    #[inline(always)]
    fn bottom(x: u32) -> i32 {
        x as u16 as i16 as i32
    }

    /// The signed top half.
    #[inline(always)]
    fn top(x: u32) -> i32 {
        (x >> 16) as u16 as i16 as i32
    }

    /// `acc + bottom(a) * bottom(b) + top(a) * top(b)` (`SMLAD`).
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(bottom(a) * bottom(b))
            .wrapping_add(top(a) * top(b))
    }

    /// `acc + bottom(a) * bottom(b)` (`SMLABB`).
    #[inline(always)]
    pub fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(bottom(a) * bottom(b))
    }

    /// `acc + top(a) * bottom(b)` (`SMLATB`).
    #[inline(always)]
    pub fn smlatb(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(top(a) * bottom(b))
    }

    /// Bytes 0 and 2 of `x`, sign-extended into the two halves (`SXTB16`).
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        (x as u8 as i8 as i16 as u16 as u32) | (((x >> 16) as u8 as i8 as i16 as u16 as u32) << 16)
    }

    /// Bytes 1 and 3 of `x`, sign-extended into the two halves (`SXTB16` with `ROR #8`).
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        sxtb16(x.rotate_right(8))
    }

    /// Half by half, wrapping: `a + b` (`SADD16`).
    #[inline(always)]
    pub fn sadd16(a: u32, b: u32) -> u32 {
        super::pack16(
            bottom(a).wrapping_add(bottom(b)),
            top(a).wrapping_add(top(b)),
        )
    }

    /// Half by half, wrapping: `a - b` (`SSUB16`).
    #[inline(always)]
    pub fn ssub16(a: u32, b: u32) -> u32 {
        super::pack16(
            bottom(a).wrapping_sub(bottom(b)),
            top(a).wrapping_sub(top(b)),
        )
    }

    /// `a` plus bytes 0 and 2 of `x`, sign-extended, half by half (`SXTAB16`).
    #[inline(always)]
    pub fn sxtab16(a: u32, x: u32) -> u32 {
        sadd16(a, sxtb16(x))
    }

    /// `a` plus bytes 1 and 3 of `x`, sign-extended, half by half (`SXTAB16` with `ROR #8`).
    #[inline(always)]
    pub fn sxtab16_ror8(a: u32, x: u32) -> u32 {
        sadd16(a, sxtb16_ror8(x))
    }
}

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
pub(crate) use arm::*;
#[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
pub(crate) use portable::*;

/// Two `i16` values as one `u32`: `bottom` in bits 0-15, `top` in 16-31.
#[inline(always)]
pub(crate) const fn pack16(bottom: i32, top: i32) -> u32 {
    (bottom as u16 as u32) | ((top as u16 as u32) << 16)
}

/// The bottom halves of `a` and `b`, as bottom and top (what LLVM makes `PKHBT` of).
#[inline(always)]
pub(crate) const fn bottoms(a: u32, b: u32) -> u32 {
    (a & 0xffff) | (b << 16)
}

/// The top halves of `a` and `b`, as bottom and top (`PKHTB`).
#[inline(always)]
pub(crate) const fn tops(a: u32, b: u32) -> u32 {
    (a >> 16) | (b & 0xffff_0000)
}

/// The four codes at `at` as one little-endian word (any alignment: Cortex-M4/M7 load
/// unaligned words in one instruction).
#[inline(always)]
pub(crate) fn load_word(codes: &[i8], at: usize) -> u32 {
    assert!(at + 4 <= codes.len());
    // SAFETY: `at + 4 <= codes.len()` (asserted; the optimiser folds it into the callers'
    // bounds), and `read_unaligned` takes any alignment.
    unsafe { codes.as_ptr().add(at).cast::<u32>().read_unaligned() }
}

/// `dst.copy_from_slice(src)`, a word at a time on 32-bit Arm: the library's `memcpy`
/// copies byte by byte when source and destination differ in alignment, as a padded row
/// (one code of padding in front) always does, about 4 instructions per code; a word copy
/// of any alignment is 2 per 4 codes on Cortex-M4/M7. Other targets call `memcpy`.
#[inline(always)]
pub(crate) fn copy_codes(dst: &mut [i8], src: &[i8]) {
    #[cfg(target_arch = "arm")]
    {
        assert_eq!(dst.len(), src.len(), "copy_codes lengths");
        let words = src.len() / 4;
        for i in 0..words {
            // SAFETY: `4 * i + 4 <= len` for both slices (equal lengths, asserted), and
            // unaligned reads and writes take any address.
            unsafe {
                let word = src.as_ptr().add(4 * i).cast::<u32>().read_unaligned();
                dst.as_mut_ptr()
                    .add(4 * i)
                    .cast::<u32>()
                    .write_unaligned(word);
            }
        }
        // At most three codes, without a loop (which LLVM would turn into a `memcpy` call).
        let tail = 4 * words;
        if tail < src.len() {
            dst[tail] = src[tail];
        }
        if tail + 1 < src.len() {
            dst[tail + 1] = src[tail + 1];
        }
        if tail + 2 < src.len() {
            dst[tail + 2] = src[tail + 2];
        }
    }
    #[cfg(not(target_arch = "arm"))]
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::portable;

    #[test]
    fn codes_are_copied_whatever_their_alignment_and_length() {
        let src: std::vec::Vec<i8> = (0..40).map(|i| (i * 7 - 100) as i8).collect();
        for offset in 0..4 {
            for len in 0..=33 {
                let mut dst = std::vec![0i8; 40];
                super::copy_codes(&mut dst[offset..offset + len], &src[3..3 + len]);
                assert_eq!(&dst[offset..offset + len], &src[3..3 + len]);
                assert!(
                    dst[..offset]
                        .iter()
                        .chain(&dst[offset + len..])
                        .all(|&c| c == 0)
                );
            }
        }
    }

    #[test]
    fn the_portable_instructions_compute_what_arm_documents() {
        let word = u32::from_le_bytes([1u8, 0xfe, 3, 0x80]);
        // Bytes 0 and 2: 1 and 3; bytes 1 and 3: -2 and -128.
        assert_eq!(portable::sxtb16(word), 1 | (3 << 16));
        assert_eq!(portable::sxtb16_ror8(word), 0xfffe | (0xff80 << 16));
        let (a, b) = (super::pack16(-2, 300), super::pack16(7, -5));
        assert_eq!(portable::smlad(a, b, 10), 10 - 14 - 1500);
        assert_eq!(portable::smlabb(a, b, 10), 10 - 14);
        assert_eq!(portable::smlatb(a, b, 10), 10 + 2100);
        // Halves wrap independently: -2 + 1 and 300 + 3; -128 - 2 and -32768 + (-128).
        assert_eq!(portable::sxtab16(a, word), super::pack16(-1, 303));
        let b = super::pack16(-2, -32768);
        assert_eq!(
            portable::sxtab16_ror8(b, word),
            super::pack16(-4, 32768 - 128)
        );
        assert_eq!(portable::sadd16(a, b), super::pack16(-4, 300 - 32768));
        assert_eq!(portable::ssub16(a, b), super::pack16(0, 300 - 32768));
        assert_eq!(super::bottoms(a, b), super::pack16(-2, -2));
        assert_eq!(super::tops(a, b), super::pack16(300, -32768));
    }
}
