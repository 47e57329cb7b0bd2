//! dnal-models: gated CNNs for DNAL.
//!
//! A network is data ([`NetSpec`]): nodes over numbered values. [`GatedNet`] runs any spec as
//! a burn module with one scaled-sigmoid [`Gate`] per prunable [`ChannelGroup`](groups::ChannelGroup);
//! [`prune_channels`] turns channel masks into a dense, smaller network; [`CostModel`] counts
//! FLOPs and parameters of any (pruned) network. Model families ([`zoo`]) are functions that
//! return specs.
//!
//! On burn's flex CPU backend, `GatedNet` trains its convolutions, batch norms and max pools
//! with dnal's own kernels (the `dnal-train-kernels` crate, added to burn as backend
//! extensions); every other backend runs burn's.

pub mod cost;
pub mod error;
pub mod gate;
pub mod groups;
pub mod net;
pub mod prune;
pub mod spec;
pub mod zoo;

pub use cost::{CostKind, CostModel};
pub use error::ModelError;
pub use gate::{Gate, GateConfig, GateMode};
pub use groups::{Branch, BranchSet, ChannelGroups};
pub use net::{ConvBn, GatePosition, GatedNet, GatedNetConfig, NetPlan, explicit_conv_options};
pub use prune::{ChannelMasks, prune_channels};
pub use spec::{Activation, NetSpec, Node, Op, Shape3, SpecBuilder};
pub use zoo::{DEFAULT_MODEL, MODELS, WIDTH_MODELS, model_spec, model_spec_at_width};
