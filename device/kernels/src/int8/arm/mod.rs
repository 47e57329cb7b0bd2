//! The hand-written inner product of the int8 dense convolution on Cortex-M4/M7: LLVM, left to
//! itself, spills two of the four accumulators in this loop (30 instructions per 16 MACs
//! where the assembly takes 15).

// `raw`: the file is plain assembly, its braces are register lists, not format arguments.
core::arch::global_asm!(include_str!("dot2x2.s"), options(raw));

unsafe extern "C" {
    /// `acc[c * 2 + p] += sum_k w[c][k] * x[p][k]` for two channels `c` and two pixels `p`,
    /// over `steps` steps of four codes: `codes` holds per step pixel 0's four `i16` then
    /// pixel 1's (word aligned), `weights` per step channel 0's four packed codes then
    /// channel 1's (see `pack_conv2d_dsp`).
    pub(crate) fn dnal_s8_dot2x2(
        acc: *mut i32,
        codes: *const i16,
        weights: *const i8,
        steps: usize,
    );
}
