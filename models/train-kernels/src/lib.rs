//! dnal-train-kernels: the CPU kernels dnal trains with, beside burn the way tract-linalg sits
//! beside tract.
//!
//! Two layers:
//! - plain kernels on `&[f32]` that know nothing of burn: [`conv_gemm`] (im2col + gemm in all
//!   three directions of a convolution), [`conv_winograd`] (Winograd F(2x2, 3x3) for the 3x3
//!   layers where it pays off), [`batch_norm_fused`] (batch norm statistics, normalisation and
//!   its ReLU in few passes) and [`kernel_buffers`] (scratch and outputs that are not zeroed
//!   when a kernel overwrites them);
//! - burn backend extensions on top, for burn's flex CPU backend, with their autodiff steps:
//!   [`conv_op`], [`batch_norm_op`] and [`max_pool_op`] (whose plane loops live beside it).
//!   Every other backend runs burn's own kernels through the same functions.
//!
//! `dnal-models` trains its networks through the extensions; the benchmarks of the kernels are
//! this crate's examples (`conv_strategies`, `gemm_peak`), their figures in BENCHMARKS.md.

pub mod batch_norm_fused;
pub mod batch_norm_op;
pub mod conv_depthwise;
pub mod conv_gemm;
pub mod conv_op;
pub mod conv_winograd;
mod flex_slices;
pub mod kernel_buffers;
pub mod max_pool_op;
