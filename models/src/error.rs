//! Errors of the model crate.

use thiserror::Error;

/// What can go wrong building, pruning or loading a network.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A spec that does not describe a valid network.
    #[error("model {model}: node {node} {reason}")]
    InvalidSpec {
        /// The model's name.
        model: String,
        /// The node at fault.
        node: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An unknown model name.
    #[error("unknown model {name:?}; known models: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// A model that does not suit the data.
    #[error("model {model} expects {expected}, but the data has {found}; {fix}")]
    Incompatible {
        /// The model's name.
        model: String,
        /// What the model expects.
        expected: String,
        /// What the data has.
        found: String,
        /// How to fix it.
        fix: String,
    },
    /// A channel mask of the wrong size or with no live channel.
    #[error("channel group {group} ({layers}): {reason}")]
    InvalidMask {
        /// The group's index.
        group: usize,
        /// The layers that produce the group.
        layers: String,
        /// What is wrong.
        reason: String,
    },
}
