//! f32 kernels.
//!
//! Every kernel takes validated parameters (see [`crate`]), checks the lengths of its
//! slices once at entry, and then indexes without bounds checks in its inner loops. Kernels
//! that want their weights in a particular order have a `pack_*` function that the code
//! generator runs at generation time; the generated crate stores the packed weights.
//!
//! The entry points are `#[inline(always)]`: a generated model calls each with constant
//! parameters, so every layer gets code specialised for its shapes (constant trip counts,
//! immediate offsets). Out of line, with shapes read at run time, the same loops cost
//! far more instructions (BENCHMARKS.md, "Instructions per MAC, per kernel"). The price is
//! flash: one copy
//! of a kernel per layer, a few KiB each.

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod arm;
mod conv2d;
mod depthwise;
mod elementwise;
mod linear;
mod pointwise;
mod pool;

pub use conv2d::{conv2d, conv2d_fixed, pack_conv2d_weights};
pub use depthwise::{
    depthwise_conv2d, depthwise_conv2d_fixed, depthwise_conv2d_padded, depthwise_scratch_len,
};
pub use elementwise::{activate_in_place, add};
pub use linear::{linear, pack_linear_weights};
pub use pointwise::pointwise_conv;
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};

/// Output channels (or linear outputs) computed together by the blocked kernels; packed
/// weights interleave this many output channels.
pub const OUT_BLOCK: usize = 4;

/// The channel count of a per-channel loop, hidden from the optimiser. With the count a
/// constant (a generated model's shapes are), LLVM shapes the loop by its trip count: fully
/// unrolled for a few channels, differently unrolled for some counts (7x7 global average
/// pooling cost 1.8 times as much per channel at 65 channels as at 64 on Cortex-M7). A cost
/// that jumps between neighbouring counts is what a latency table, interpolating between a
/// few measured counts, cannot follow; the loop body stays specialised for its shapes.
#[inline(always)]
pub(crate) fn channel_count(channels: usize) -> usize {
    core::hint::black_box(channels)
}

/// `acc + a * b` in as few instructions as the target allows.
///
/// Cortex-M (thumbv7em-none-eabihf): plain Rust; LLVM emits one `vmla.f32` (a non-fused
/// multiply-accumulate, bit-identical to `vmul` + `vadd`) for the generic thumbv7em CPU and
/// for `-C target-cpu=cortex-m7`, but splits it into `vmul` + `vadd` under
/// `-C target-cpu=cortex-m4` (that model marks VMLA slow), so M4 firmware is built for the
/// generic CPU. (An inline-asm `vfma.f32` is not available: rustc gates the `sreg` class on
/// `vfp2`, which the single-precision FPU targets lack.)
///
/// AArch64: Rust never contracts `acc + a * b` and AArch64 has no non-fused multiply-add, so
/// this emits `fmadd` (fused: one rounding instead of two, well within the tests' 1e-4).
#[inline(always)]
pub(crate) fn mac(acc: f32, a: f32, b: f32) -> f32 {
    #[cfg(target_arch = "aarch64")]
    {
        let mut acc = acc;
        // SAFETY: a register-only instruction (no memory, no stack, no flags); every
        // aarch64 core has scalar FMADD.
        unsafe {
            core::arch::asm!(
                "fmadd {acc:s}, {a:s}, {b:s}, {acc:s}",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        acc + a * b
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Deterministic pseudo-random data and a comparison helper for the kernel tests.
    use std::vec::Vec;

    /// xorshift32 values in [-1, 1).
    pub struct Rng(u32);

    impl Rng {
        pub fn new(seed: u32) -> Self {
            Rng(seed.max(1))
        }

        pub fn next_f32(&mut self) -> f32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        }

        pub fn vec(&mut self, len: usize) -> Vec<f32> {
            (0..len).map(|_| self.next_f32()).collect()
        }
    }

    /// Asserts two slices agree within `tol` (absolute, scaled by magnitude above 1).
    pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let scale = w.abs().max(1.0);
            assert!(
                (g - w).abs() <= tol * scale,
                "{what}: index {i}: got {g}, want {w}"
            );
        }
    }
}
