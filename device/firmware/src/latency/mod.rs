//! Latency tables (`latency.json`, docs/latency-format.md): what every layer of a model
//! costs on a board as a function of its channel counts, measured by micro-benchmarks that
//! run the generated model's own code, and read back by interpolation.
//!
//! - [`profile`] measures a parent network on a board and returns a [`LatencyTable`];
//! - [`LatencyTable::write`] / [`LatencyTable::load`] store it (atomically) and read it back
//!   (validated);
//! - [`LatencyTable::lookup`], [`LatencyTable::predict`] and [`LatencyTable::marginal`] give
//!   one layer's cost, a pruned network's cost and the cost of one more channel;
//!   [`LatencyTable::to_ms`] turns units into milliseconds;
//! - [`MeasurementLog`] keeps every (predicted, measured) pair of a table's board beside the
//!   table and fits a [`Correction`] of its predictions.

mod bench;
mod grid;
mod learned;
mod lookup;
mod profile;
mod table;

use std::path::PathBuf;

pub use grid::GridOptions;
pub use learned::{
    Correction, LOG_FORMAT, LOG_VERSION, LayerCheck, MAX_MEASUREMENTS, Measurement, MeasurementLog,
    PredictionCheck, PredictionErrors, fingerprint,
};
pub use lookup::{LayerPrediction, Lookup, Marginal, Prediction};
pub(crate) use profile::modelled_table;
pub use profile::{ProfileOptions, profile};
pub use table::{
    Calibration, Clock, FORMAT, Grid, InRow, LatencyTable, LayerLatency, LayerStructure,
    TABLE_FILE, VERSION,
};

use crate::codegen::CodegenError;
use crate::deploy::DeployError;
use dnal_export::ExportError;
use dnal_kernels::Shape3;

/// Which table an error is about: its file (or "the latency table"), model and board, which
/// the fix (a new table of the model on the board) needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub table: String,
    pub model: String,
    pub board: String,
}

/// Why a latency table cannot be read, used or made.
#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: is {kind}, not a regular file", path = .path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{path}: is {size} bytes, more than the {limit} bytes {why}", path = .path.display())]
    FileTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        why: String,
    },
    #[error("{path}: invalid JSON: {source}", path = .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: unknown version {found} (this reader knows version {VERSION}); profile the \
         model again with this version",
        path = .path.display()
    )]
    UnknownVersion { path: PathBuf, found: u64 },
    #[error("{path}: {field}: {reason}", path = .path.display())]
    InvalidField {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error(
        "{table} was profiled for model {table_model}, not {model}; a table of model {model} on \
         board {board} is needed",
        table = .table.table, table_model = .table.model, board = .table.board
    )]
    ModelMismatch { table: Box<TableRef>, model: String },
    #[error(
        "{table} was profiled for model {model} with input {table_input}, the architecture \
         takes {arch_input}; profile model {model} on board {board} again for this input",
        table = .table.table, model = .table.model, board = .table.board
    )]
    InputMismatch {
        table: Box<TableRef>,
        table_input: Shape3,
        arch_input: Shape3,
    },
    #[error(
        "{table} does not cover layer {layer} (model {model}); profile model {model} on board {board} \
         again",
        table = .table.table, model = .table.model, board = .table.board
    )]
    NotCovered { table: Box<TableRef>, layer: String },
    #[error(
        "layer {layer} differs from the one profiled in {table}: {differences}; profile model \
         {model} on board {board} again",
        table = .table.table, model = .table.model, board = .table.board
    )]
    StructureMismatch {
        table: Box<TableRef>,
        layer: String,
        differences: String,
    },
    #[error(
        "layer {layer} was profiled at {profiled} {axis} channels only (a count that pruning \
         model {model} cannot change), asked for {requested}; a network with another count there \
         needs a table of its own, profiled on board {board} ({table})",
        table = .table.table, model = .table.model, board = .table.board
    )]
    FixedChannels {
        table: Box<TableRef>,
        layer: String,
        axis: &'static str,
        profiled: usize,
        requested: usize,
    },
    #[error(
        "layer {layer} keeps its channel count, so its input and output counts must be equal \
         (got {in_channels} and {out_channels})"
    )]
    ChannelsDiffer {
        layer: String,
        in_channels: usize,
        out_channels: usize,
    },
    #[error(
        "layer {layer}: {in_channels} input and {out_channels} output channels; a layer keeps at \
         least one of each"
    )]
    ZeroChannels {
        layer: String,
        in_channels: usize,
        out_channels: usize,
    },
    #[error("unknown board {name:?}; boards: {known}")]
    UnknownBoard { name: String, known: String },
    #[error("board {board} cannot make a latency table: {reason}")]
    CannotProfile { board: String, reason: String },
    #[error("{0}")]
    Options(String),
    #[error(
        "{what} does not fit {board}: {memory} needs {needed} bytes, the board has {available}"
    )]
    TooLarge {
        board: String,
        what: String,
        memory: &'static str,
        needed: u64,
        available: u64,
    },
    #[error("{path}: {reason}", path = .path.display())]
    WorkDir { path: PathBuf, reason: String },
    #[error(
        "board {board} is a real board: the benchmarks need probe-rs (`cargo install \
         probe-rs-tools`) and the board attached through a debug probe; the firmware is built, \
         run each image with `probe-rs run --chip {chip}`: {elfs}",
        elfs = .elfs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ProbeNeeded {
        board: String,
        chip: String,
        elfs: Vec<PathBuf>,
    },
    #[error("profiling: {0}")]
    Profile(String),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

impl LatencyError {
    /// The model and board of the table that would mend this error, when a new table would:
    /// the table given does not fit the network (another model, input, structure, or a
    /// channel count it cannot stretch to). A caller with a way to make tables names it.
    pub fn table_to_profile(&self) -> Option<(&str, &str)> {
        match self {
            LatencyError::ModelMismatch { table, model } => Some((model, &table.board)),
            LatencyError::InputMismatch { table, .. }
            | LatencyError::NotCovered { table, .. }
            | LatencyError::StructureMismatch { table, .. }
            | LatencyError::FixedChannels { table, .. } => Some((&table.model, &table.board)),
            _ => None,
        }
    }
}
