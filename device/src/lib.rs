//! dnal-device: no_std inference kernels and the firmware generator.
#![cfg_attr(not(feature = "codegen"), no_std)]
