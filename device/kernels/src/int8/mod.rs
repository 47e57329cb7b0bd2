//! int8 inference: the arithmetic quantised kernels share ([`Requantize`], [`Quantization`],
//! [`OutputStage`]) and portable kernels for every op of the export format, bit-exact with
//! dnal-export's integer reference (`dnal_export::int8::reference_forward`).
//!
//! As the f32 kernels, the entry points are `#[inline(always)]`: a generated model calls each
//! with constant parameters, so every layer gets code specialised for its shapes.
//!
//! The scheme is TFLite's and CMSIS-NN's: activations per-tensor asymmetric, weights
//! per-output-channel symmetric, `i32` biases and accumulators, requantisation by a Q31
//! multiplier and a shift. docs/export-format.md ("int8 exports") is the specification.

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod arm;
mod conv2d;
mod depthwise_dsp;
mod depthwise_padded;
mod dsp;
mod elementwise;
mod linear;
mod pool;
pub mod requantize;
mod sdot;
mod simd32;
mod stage;
mod winograd;

pub use conv2d::{conv2d, depthwise_conv2d};
pub use depthwise_dsp::{depthwise3x3_dsp, depthwise3x3_dsp_fits, depthwise3x3_dsp_scratch_len};
pub use depthwise_padded::depthwise3x3_padded;
pub use dsp::{
    DSP_STACK_WORDS, MAX_DSP_ROW, WordAligned, conv2d_dsp, dsp_block_words, dsp_row_len,
    dsp_scratch_len, dsp_weights_len, pack_conv2d_dsp,
};
pub use elementwise::{ADD_TABLE_MIN_LEN, add, add_left_shift, rescaled_codes};
pub use linear::linear;
pub use pool::{MAX_POOL_CELLS, avg_pool2d, global_avg_pool, max_pool2d, mean_code};
pub use requantize::{
    Requantize, SHIFTS, SHORT_SHIFTS, rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
};
pub use sdot::{
    MAX_SDOT_ROW, conv2d_sdot, fold_zero_point, pack_conv2d_sdot, sdot_row_len, sdot_scratch_len,
    sdot_weights_len,
};
pub use stage::{OutputStage, Quantization, round_half_away};
pub use winograd::{
    MAX_WINOGRAD_PAIRS, MIN_WINOGRAD_CHANNELS, WINOGRAD_PAYS_FROM, conv2d_winograd, winograd_fits,
    winograd_pair_words, winograd_pays, winograd_scratch_len, winograd_weights_whole,
};

/// Random codes for the kernels' tests: xorshift32, so that each test's inputs are fixed.
#[cfg(test)]
pub(crate) mod test_codes {
    pub(crate) struct Rng(pub u32);

    impl Rng {
        pub(crate) fn next(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            self.0
        }

        pub(crate) fn code(&mut self) -> i8 {
            (self.next() >> 24) as u8 as i8
        }

        /// `n` codes, the whole int8 range.
        pub(crate) fn codes(&mut self, n: usize) -> std::vec::Vec<i8> {
            (0..n).map(|_| self.code()).collect()
        }

        /// `n` weight codes: symmetric, so -127..=127.
        pub(crate) fn weights(&mut self, n: usize) -> std::vec::Vec<i8> {
            (0..n).map(|_| self.code().max(-127)).collect()
        }

        /// `n` biases in -10,000..10,000.
        pub(crate) fn biases(&mut self, n: usize) -> std::vec::Vec<i32> {
            (0..n)
                .map(|_| (self.next() % 20_000) as i32 - 10_000)
                .collect()
        }
    }
}
