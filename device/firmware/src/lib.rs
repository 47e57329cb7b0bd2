//! dnal-firmware: turns an export into firmware, runs it and measures it.
//!
//! It reads an export with dnal-export and writes a `no_std` Rust crate that links the
//! dnal-kernels sources (vendored into the crate, so it builds anywhere with cargo and the
//! board's target):
//!
//! - [`codegen`]: the code generator (memory plan, `model.rs`, `weights.rs`, the firmware
//!   crate around them);
//! - [`board`]: the boards dnal knows (QEMU machines, real boards through probe-rs, the host);
//! - [`deploy`](mod@deploy): builds and runs a firmware and reports sizes, cost and parity in
//!   `deploy.json`;
//! - [`latency`]: measures a model's layers over channel counts into a latency table and
//!   predicts what pruned networks cost;
//! - [`synth`]: random exports and small architectures for tests and benchmarks.
//!
//! It needs `std`, cargo and (per board) QEMU, probe-rs or a cross linker; the firmware
//! itself needs none of this crate.

pub mod board;
pub mod codegen;
pub mod deploy;
pub mod latency;
pub mod synth;

pub use deploy::{
    DeployError, DeployReport, DeployRequest, SHARED_TARGET_ENV, deploy, deploy_board,
    deploy_loaded,
};
