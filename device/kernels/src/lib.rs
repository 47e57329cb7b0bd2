//! dnal-kernels: the f32 and int8 inference kernels of dnal, for firmware.
//!
//! `#![no_std]`, no allocation, no dependencies: this is the crate a firmware links, whether
//! dnal generated that firmware or you wrote it yourself (see the crate's README.md). It
//! holds
//!
//! - [`params`]: shapes ([`Shape3`]), activations ([`Activation`]) and the layer parameters
//!   ([`Conv2dParams`], [`Pool2dParams`], [`LinearParams`]), validated when they are built,
//!   in `const` contexts too ([`const_params!`]);
//! - [`f32`](mod@f32): the kernels themselves (convolution, depthwise, pointwise, pooling, linear,
//!   elementwise), with hand-scheduled Thumb-2 tiles on Cortex-M4F/M7;
//! - [`int8`]: quantised inference: the arithmetic (requantisation, zero points, clamps) and
//!   portable kernels for every op, bit-exact with dnal-export's integer reference;
//! - [`arena`]: one static activation arena and safe access to disjoint parts of it;
//! - [`marker`]: the cost marker instruction the instruction-counting QEMU plugin of
//!   dnal-firmware counts between.
//!
//! The export format and the code generator live in dnal-export and dnal-firmware, which
//! need `std`; nothing here does.
#![no_std]

// The unit tests run on the host and use `std`'s `vec!`, `format!` and `Vec`.
#[cfg(test)]
#[macro_use]
extern crate std;

pub mod arena;
pub mod f32;
pub mod int8;
pub mod marker;
pub mod params;

pub use params::{
    Activation, Conv2dParams, LinearParams, Pool2dParams, Shape3, ShapeError, Window, max_f32,
    min_f32, output_dim,
};
