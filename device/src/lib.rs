//! dnal-device: no_std inference kernels, the export format and the firmware generator.
//!
//! Without features the crate is `#![no_std]` and allocation-free: [`kernels`], the static
//! activation [`arena`] and the cost [`marker`] are what a generated firmware crate uses. The
//! `codegen` feature (std) adds the export reader and writer ([`export`]), the naive
//! [`reference`] forward pass, the code generator ([`codegen`]), the [`board`] list and
//! [`deploy`], which builds and runs a firmware and measures it.
#![cfg_attr(not(any(feature = "codegen", test)), no_std)]

pub mod arena;
pub mod kernels;
pub mod marker;
