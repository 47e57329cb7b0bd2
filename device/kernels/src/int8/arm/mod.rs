//! The hand-written inner product of the int8 dense convolution on Cortex-M4/M7: LLVM, left to
//! itself, spills two of the four accumulators in this loop (30 instructions per 16 MACs
//! where the assembly takes 15). Two versions: weights widened in the loop (`dot2x2.s`), and
//! weights widened beforehand, once for several pixel pairs (`dot2x2_i16.s`, 10.75 per 16).
//! And the 3x3 depthwise convolution's row of pixel pairs at stride 1 (`dw3x3.s`: LLVM kept
//! part of its six weights on the stack, 33 instructions per pair against 25). And a
//! pointwise layer's sums for one channel over a run of pixel pairs, for rows of one or two
//! steps (`pw_sums.s`).

// `raw`: the files are plain assembly, their braces are register lists, not format arguments.
core::arch::global_asm!(include_str!("dot2x2.s"), options(raw));
core::arch::global_asm!(include_str!("dot2x2_i16.s"), options(raw));
core::arch::global_asm!(include_str!("dw3x3.s"), options(raw));
core::arch::global_asm!(include_str!("pw_sums.s"), options(raw));

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

    /// The sums of `pairs` output pixel pairs of a 3x3 depthwise convolution at stride 1
    /// (`sums[2 p]` and `sums[2 p + 1]`, word aligned): pair `p`'s windows start at code
    /// `2 p` of `rows`, whose three rows are `wide` codes apart (each loaded a word at a
    /// time, up to 3 codes past a window); `weights` holds the rows' `(w0, w2)` pairs, then
    /// `(w1 of row 0, w1 of row 1)` and `w1 of row 2` as 16-bit halves (see
    /// `depthwise3x3_dsp`); every sum starts at `bias`.
    pub(crate) fn dnal_s8_dw3x3_pairs(
        sums: *mut i32,
        rows: *const i8,
        wide: usize,
        bias: i32,
        weights: *const u32,
        pairs: usize,
    );

    /// One output channel of a pointwise convolution over `pairs` gathered pixel pairs of
    /// one step of four codes each (`codes`: per pair pixel 0's two `i16` pairs, then pixel
    /// 1's; word aligned): `sums[2 p]`, `sums[2 p + 1]` = `bias` plus the products with
    /// `weights` (the step's two widened pairs, as `SXTB16` makes them).
    pub(crate) fn dnal_s8_pw_sums_1(
        sums: *mut i32,
        codes: *const u32,
        pairs: usize,
        bias: i32,
        weights: *const u32,
    );

    /// As [`dnal_s8_pw_sums_1`] for two steps per pair (8 words of codes, 4 of weights).
    pub(crate) fn dnal_s8_pw_sums_2(
        sums: *mut i32,
        codes: *const u32,
        pairs: usize,
        bias: i32,
        weights: *const u32,
    );
}
