//! Cost markers: a hint instruction that does nothing on the CPU but that the instruction
//! counting QEMU plugin of `dnal_firmware::deploy` recognises, so it can count the instructions
//! executed between two markers (one inference, one layer).
//!
//! Thumb: `0xbf70` (a reserved hint, executed as NOP); AArch64: `0xd5032bff` (HINT #95, a NOP).
//! Elsewhere [`cost_marker`] is empty.

/// The Thumb encoding of the marker.
pub const THUMB_MARKER: u16 = 0xbf70;
/// The AArch64 encoding of the marker.
pub const AARCH64_MARKER: u32 = 0xd503_2bff;

/// Emits one marker instruction.
///
/// No `nomem` option: the asm block acts as a compiler memory barrier, so a layer's stores
/// are not moved across the marker that closes it.
#[inline(always)]
pub fn cost_marker() {
    #[cfg(target_arch = "arm")]
    // SAFETY: a hint the CPU executes as NOP: no registers, memory or flags change.
    unsafe {
        core::arch::asm!(".inst.n 0xbf70", options(nostack, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: HINT #95 executes as NOP: no registers, memory or flags change.
    unsafe {
        core::arch::asm!(".inst 0xd5032bff", options(nostack, preserves_flags));
    }
}
