//! Hand-scheduled Thumb-2/VFP tiles for the hottest convolution shapes on Cortex-M4F/M7.
//!
//! LLVM loads every operand with its own `vldr`; these tiles load a whole row of inputs and
//! each tap's 4 weights with one `vldmia` each, which takes the 3x3 tile to fewer instructions
//! per MAC (BENCHMARKS.md, "Instructions per MAC, per kernel"; and `vldmia` of n registers
//! costs n + 1 cycles against 2
//! per `vldr`, so cycles drop too).

// `raw`: the file is plain assembly, its braces are register lists, not format arguments.
core::arch::global_asm!(include_str!("conv3x3_tile.s"), options(raw));

unsafe extern "C" {
    /// 4 output channels x 4 neighbouring output pixels of a 3x3, column stride 1
    /// convolution, all three kernel rows and columns inside the input; writes the 16 sums
    /// to `out` as `[channel][pixel]`.
    pub(crate) fn dnal_conv3x3_s1_tile4x4(
        out: *mut f32,
        weights: *const f32,
        input: *const f32,
        in_channels: usize,
        row_stride_bytes: usize,
        plane_stride_bytes: usize,
    );

    /// As [`dnal_conv3x3_s1_tile4x4`], for column stride 2.
    pub(crate) fn dnal_conv3x3_s2_tile4x4(
        out: *mut f32,
        weights: *const f32,
        input: *const f32,
        in_channels: usize,
        row_stride_bytes: usize,
        plane_stride_bytes: usize,
    );
}
