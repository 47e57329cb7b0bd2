//! The hand-written inner product of the int8 dense convolution on Cortex-M4/M7: LLVM, left to
//! itself, spills two of the four accumulators in this loop (30 instructions per 16 MACs
//! where the assembly takes 15). Two versions: weights widened in the loop (`dot2x2.s`), and
//! weights widened beforehand, once for several pixel pairs (`dot2x2_i16.s`, 10.75 per 16).

// `raw`: the files are plain assembly, their braces are register lists, not format arguments.
core::arch::global_asm!(include_str!("dot2x2.s"), options(raw));
core::arch::global_asm!(include_str!("dot2x2_i16.s"), options(raw));

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

    /// As [`dnal_s8_dot2x2`], with `weights` already widened: per step channel 0's two
    /// `i16` pairs then channel 1's (`4 * steps` words, word aligned; see `widen_pair`).
    /// A channel pair's packed weights (`8 * steps` codes, word aligned) widened for
    /// [`dnal_s8_dot2x2_i16`] into `wide` (`4 * steps` words, word aligned); see `widen_pair`.
    pub(crate) fn dnal_s8_widen_pair(wide: *mut u32, weights: *const i8, steps: usize);

    pub(crate) fn dnal_s8_dot2x2_i16(
        acc: *mut i32,
        codes: *const i16,
        weights: *const u32,
        steps: usize,
    );
}
