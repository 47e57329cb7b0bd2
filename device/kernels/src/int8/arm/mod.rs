//! The hand-written inner product of the int8 dense convolution on Cortex-M4/M7: LLVM, left to
//! itself, spills two of the four accumulators in this loop (30 instructions per 16 MACs
//! where the assembly takes 15). Two versions: weights widened in the loop (`dot2x2.s`), and
//! weights widened beforehand, once for several pixel pairs (`dot2x2_i16.s`, 10.75 per 16).
//! And the 3x3 depthwise convolution's row of pixel pairs at stride 1 (`dw3x3.s`: LLVM kept
//! part of its six weights on the stack, 33 instructions per pair against 25). And a
//! pointwise layer's sums for one channel over a run of pixel pairs, for rows of one or two
//! steps (`pw_sums.s`). And the 16 inner products of a Winograd tile pair
//! (`dnal_s8_winograd_products_<pairs>`, beside `dnal_s8_dot2x2_i16`, whose step they share).

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

/// The routines `dnal_s8_winograd_products_<pairs>` (`dot2x2_i16.s`), one per count of
/// input channel pairs, and [`winograd_products`], which picks one.
macro_rules! winograd_products {
    ($($pairs:literal $name:ident)*) => {
        unsafe extern "C" {
            $(
                /// `m[4 k..4 k + 4]` = [`dnal_s8_dot2x2_i16`]'s sums from zero for position
                /// `k` of a Winograd tile, over its `2 * pairs` words of `codes` and of
                /// `weights`, the 16 positions' one after another (word aligned; see
                /// `winograd.rs`).
                fn $name(m: *mut i32, codes: *const u32, weights: *const u32);
            )*
        }

        /// The routine for `pairs` pairs of input channels (2 to 48; a constant in
        /// generated code, so the match folds into one call).
        #[inline(always)]
        pub(crate) fn winograd_products(
            pairs: usize,
        ) -> unsafe extern "C" fn(*mut i32, *const u32, *const u32) {
            match pairs {
                $($pairs => $name,)*
                _ => panic!("no Winograd routine for this many channel pairs"),
            }
        }
    };
}

winograd_products! {
    2 dnal_s8_winograd_products_2 3 dnal_s8_winograd_products_3 4 dnal_s8_winograd_products_4
    5 dnal_s8_winograd_products_5 6 dnal_s8_winograd_products_6 7 dnal_s8_winograd_products_7
    8 dnal_s8_winograd_products_8 9 dnal_s8_winograd_products_9 10 dnal_s8_winograd_products_10
    11 dnal_s8_winograd_products_11 12 dnal_s8_winograd_products_12
    13 dnal_s8_winograd_products_13 14 dnal_s8_winograd_products_14
    15 dnal_s8_winograd_products_15 16 dnal_s8_winograd_products_16
    17 dnal_s8_winograd_products_17 18 dnal_s8_winograd_products_18
    19 dnal_s8_winograd_products_19 20 dnal_s8_winograd_products_20
    21 dnal_s8_winograd_products_21 22 dnal_s8_winograd_products_22
    23 dnal_s8_winograd_products_23 24 dnal_s8_winograd_products_24
    25 dnal_s8_winograd_products_25 26 dnal_s8_winograd_products_26
    27 dnal_s8_winograd_products_27 28 dnal_s8_winograd_products_28
    29 dnal_s8_winograd_products_29 30 dnal_s8_winograd_products_30
    31 dnal_s8_winograd_products_31 32 dnal_s8_winograd_products_32
    33 dnal_s8_winograd_products_33 34 dnal_s8_winograd_products_34
    35 dnal_s8_winograd_products_35 36 dnal_s8_winograd_products_36
    37 dnal_s8_winograd_products_37 38 dnal_s8_winograd_products_38
    39 dnal_s8_winograd_products_39 40 dnal_s8_winograd_products_40
    41 dnal_s8_winograd_products_41 42 dnal_s8_winograd_products_42
    43 dnal_s8_winograd_products_43 44 dnal_s8_winograd_products_44
    45 dnal_s8_winograd_products_45 46 dnal_s8_winograd_products_46
    47 dnal_s8_winograd_products_47 48 dnal_s8_winograd_products_48
}
