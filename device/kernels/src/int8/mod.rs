//! int8 inference arithmetic: what quantised kernels share. So far the requantisation of an
//! `i32` accumulator back to int8 ([`Requantize`]), bit-exact with TFLite's reference kernels
//! and CMSIS-NN.

pub mod requantize;

pub use requantize::{
    Requantize, SHIFTS, rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
};
