//! Peak stack measurement by painting: fill the free RAM between the static data and the
//! stack pointer with a pattern at start, and later find the lowest word that changed.

const PAINT: u32 = 0x5a5a_5a5a;
/// Bytes below the current stack pointer left unpainted (this function's own frame).
const GAP: usize = 64;

// SAFETY: symbols defined by cortex-m-rt's linker script; only their addresses are
// taken, never their contents.
unsafe extern "C" {
    /// End of the static data (cortex-m-rt's link.x).
    static __sheap: u32;
    /// Top of the stack (cortex-m-rt's link.x).
    static _stack_start: u32;
}

/// Paints the free stack; returns the lowest painted address.
#[inline(always)]
pub fn paint() -> usize {
    let bottom = core::ptr::addr_of!(__sheap) as usize;
    let top = cortex_m::register::msp::read() as usize - GAP;
    let mut p = bottom;
    while p < top {
        // SAFETY: [bottom, top) lies between the end of the static data and below the
        // live stack: no Rust object lives there (no heap is used).
        unsafe { (p as *mut u32).write_volatile(PAINT) };
        p += 4;
    }
    bottom
}

/// Bytes of stack used since [`paint`]: from the top of the stack down to the lowest
/// changed word.
pub fn used(bottom: usize) -> usize {
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut p = bottom;
    // SAFETY: reads words between the static data and the live stack, all in RAM.
    while p < top && unsafe { (p as *const u32).read_volatile() } == PAINT {
        p += 4;
    }
    top - p
}
