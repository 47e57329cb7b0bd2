//! dnal: DNAL search on burn, from data to an exported pruned network.
//!
//! - [`search`]: the stages (weights, gates, prune, finetune), checkpoints and resume;
//! - [`export`]: the pruned network as an export folder, and burn's forward of an export;
//! - [`sweep`]: one weight stage, many latency budgets, measured on the board, Pareto plot;
//! - [`data`]: a search's dataset, and the test images of an export's dataset;
//! - [`eval`]: `dnal eval`, which reproduces a search's reported accuracy from its export;
//! - [`deploy`]: `dnal deploy`, the export onto a board with test images and burn's logits;
//! - [`arch_cost`]: the `c_l` of the architecture loss (uniform or FLOPs-aware);
//! - [`budget`]: lambda_a steered to a cost target, and masks fitted to land under it;
//! - [`latency`]: board latency tables as a cost of the search, and measurement on the board;
//! - [`schedule`]: delta's growth and the learning rate;
//! - [`distill`]: the trained parent as teacher while the pruned network is finetuned;
//! - [`train`]: one epoch, one evaluation;
//! - [`lock`]: one writer per output folder;
//! - [`checkpoint`]: atomic writes, checkpoints verified by their checksums.

pub mod allocator;
pub mod arch_cost;
pub mod backend;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod deploy;
pub mod distill;
pub mod error;
pub mod eval;
pub mod export;
pub mod latency;
pub mod lock;
pub mod plot;
pub mod preset;
pub mod progress;
pub mod quantize;
pub mod report;
pub mod schedule;
pub mod search;
pub mod sweep;
pub mod train;

pub use error::SearchError;
