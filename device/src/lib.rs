//! dnal-device: no_std inference kernels, the export format and the firmware generator.
//!
//! Without features the crate is `#![no_std]` and allocation-free: [`kernels`], the static
//! activation [`arena`] and the cost [`marker`] are what a generated firmware crate uses. The
//! `codegen` feature (std) adds the export reader and writer ([`export`]), the naive
//! [`reference`] forward pass, the code generator ([`codegen`]), the [`board`] list,
//! [`deploy`], which builds and runs a firmware and measures it, and [`latency`], which
//! measures a model's layers over channel counts into a latency table and predicts what
//! pruned networks cost.
#![cfg_attr(not(any(feature = "codegen", test)), no_std)]

pub mod arena;
pub mod kernels;
pub mod marker;

#[cfg(feature = "codegen")]
pub mod export;
#[cfg(feature = "codegen")]
pub mod reference;
#[cfg(feature = "codegen")]
pub use reference::reference_forward;
#[cfg(feature = "codegen")]
pub mod board;
#[cfg(feature = "codegen")]
pub mod codegen;
#[cfg(feature = "codegen")]
pub mod deploy;
#[cfg(feature = "codegen")]
pub mod latency;
#[cfg(feature = "codegen")]
pub use deploy::{DeployError, DeployReport, DeployRequest, deploy};
#[cfg(feature = "codegen")]
pub mod synth;
