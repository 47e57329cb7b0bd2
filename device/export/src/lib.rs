//! dnal-export: the export format of dnal (docs/export-format.md, version 1).
//!
//! An export is what a search hands to deployment: `arch.json` (the pruned network as a layer
//! list) and `weights.safetensors` (its f32 weights, batch norm folded). This crate holds the
//! types for `arch.json`, a loader that validates everything the format promises, a writer
//! that never leaves a half-written folder, the per-layer shapes, MACs and parameter counts of
//! a layer list ([`ArchSummary`]), and the naive [`reference`](mod@reference) forward pass that firmware is
//! checked against. It knows nothing of training (burn) or of firmware: the host writes
//! exports with it, dnal-firmware reads them.
//!
//! Shapes and activations are dnal-kernels' own [`Shape3`] and [`Activation`] (re-exported
//! here), so an export and the kernels that run it share one definition;
//! [`kernel_serde`] says how the format writes them.

pub mod int8;
mod io;
pub mod kernel_serde;
pub mod limits;
pub mod reference;
mod summary;

pub use io::{
    AnyExport, FileError, open_regular_file, read_regular_file, remove_stale_temporaries,
    temporary_path, write_atomically,
};
pub use limits::{NameError, check_name};
pub use reference::{reference_forward, reference_values};
pub use summary::{ArchSummary, LayerSummary};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use dnal_kernels::{Activation, Shape3};

/// `format` of every export.
pub const FORMAT: &str = "dnal-export";
/// The version of f32 exports, which this crate reads and writes.
pub const VERSION: u64 = 1;
/// The version of int8 exports (version 1 plus `precision` and `quantization`); an f32
/// export stays version 1, so readers of version 1 keep reading it.
pub const INT8_VERSION: u64 = 2;
/// File names inside an export folder.
pub const ARCH_FILE: &str = "arch.json";
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// `arch.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    pub format: String,
    pub version: u64,
    pub name: String,
    #[serde(default)]
    pub dataset: String,
    #[serde(with = "kernel_serde::shape3")]
    pub input: Shape3,
    pub num_classes: usize,
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<Normalization>,
    pub layers: Vec<Layer>,
    /// Multiply-accumulates of one forward pass (conv and linear).
    pub flops: u64,
    /// Stored weights and biases.
    pub params: u64,
    /// Free-form description of the search.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub search: serde_json::Value,
    /// The number format of weights and activations: f32 unless the export is version 2.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// How every value is quantised (int8 exports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<int8::QuantizationSpec>,
}

/// The number format of an export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 weights and activations (version 1).
    #[default]
    F32,
    /// int8 weights and activations, int32 biases (version 2, [`int8`]).
    Int8,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// The name used in `arch.json` and on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }

    /// The export version that holds this precision.
    pub fn version(&self) -> u64 {
        match self {
            Precision::F32 => VERSION,
            Precision::Int8 => INT8_VERSION,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Arch {
    /// An architecture with the format fields filled in; call [`Arch::complete`] to compute
    /// the layers' output shapes and the totals.
    pub fn new(
        name: impl Into<String>,
        input: Shape3,
        num_classes: usize,
        layers: Vec<Layer>,
    ) -> Self {
        Arch {
            format: FORMAT.to_string(),
            version: VERSION,
            name: name.into(),
            dataset: String::new(),
            input,
            num_classes,
            classes: Vec::new(),
            normalization: None,
            layers,
            flops: 0,
            params: 0,
            search: serde_json::Value::Null,
            precision: Precision::F32,
            quantization: None,
        }
    }
}

/// Per-channel input normalisation: `x = (pixel / 255 - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// One layer: reads the values `inputs` (0 = the image, `j` = layer `j-1`'s output) and
/// writes value `index + 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub name: String,
    pub inputs: Vec<usize>,
    #[serde(flatten)]
    pub op: Op,
    #[serde(with = "kernel_serde::shape3")]
    pub output: Shape3,
}

impl Layer {
    /// A layer whose output shape is still to be computed (see [`Arch::complete`]).
    pub fn new(name: impl Into<String>, inputs: Vec<usize>, op: Op) -> Self {
        Layer {
            name: name.into(),
            inputs,
            op,
            output: Shape3::new(0, 0, 0),
        }
    }
}

/// What a layer computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Conv2d(Conv2dSpec),
    MaxPool2d(PoolSpec),
    AvgPool2d(PoolSpec),
    GlobalAvgPool,
    Add(AddSpec),
    Linear(LinearSpec),
}

impl Op {
    /// The op's name in `arch.json`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Add(_) => "add",
            Op::Linear(_) => "linear",
        }
    }

    /// True for the ops that own a `.weight` and a `.bias` tensor.
    pub fn has_weights(&self) -> bool {
        matches!(self, Op::Conv2d(_) | Op::Linear(_))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2dSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    /// 1 (dense) or `in_channels == out_channels` (depthwise).
    pub groups: usize,
    #[serde(with = "kernel_serde::activation")]
    pub activation: Activation,
    /// Output channels of the unpruned parent layer that survived (informational).
    #[serde(default)]
    pub kept_channels: Vec<usize>,
}

impl Conv2dSpec {
    pub fn is_depthwise(&self) -> bool {
        self.groups != 1
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddSpec {
    #[serde(with = "kernel_serde::activation")]
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearSpec {
    pub in_features: usize,
    pub out_features: usize,
    #[serde(with = "kernel_serde::activation")]
    pub activation: Activation,
}

/// One f32 tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Tensor { shape, data }
    }
}

/// A validated export: the architecture, its weights, and the per-layer summary.
#[derive(Clone, Debug)]
pub struct Export {
    arch: Arch,
    tensors: BTreeMap<String, Tensor>,
    summary: ArchSummary,
}

impl Export {
    /// Validates `arch` and `tensors` together (as [`Export::load`] does for a folder).
    pub fn new(arch: Arch, tensors: BTreeMap<String, Tensor>) -> Result<Self, ExportError> {
        let summary = arch.summary()?;
        arch.expect_precision(Path::new(ARCH_FILE), Precision::F32)?;
        let weights_path = PathBuf::from(WEIGHTS_FILE);
        io::check_tensors(&weights_path, &summary, &tensors)?;
        Ok(Export {
            arch,
            tensors,
            summary,
        })
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    pub fn summary(&self) -> &ArchSummary {
        &self.summary
    }

    /// The weight and bias of a conv or linear layer.
    pub fn weight_and_bias(&self, layer_name: &str) -> Option<(&Tensor, &Tensor)> {
        Some((
            self.tensors.get(&format!("{layer_name}.weight"))?,
            self.tensors.get(&format!("{layer_name}.bias"))?,
        ))
    }

    /// Input values per image.
    pub fn input_len(&self) -> usize {
        self.arch.input.len()
    }

    /// Logits per image.
    pub fn output_len(&self) -> usize {
        self.arch.num_classes
    }
}

/// Why an export folder (or an export about to be written) cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: file is missing", path = .path.display())]
    MissingFile { path: PathBuf },
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: is {kind}, not a regular file; an export folder holds regular files only",
        path = .path.display()
    )]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error(
        "{path}: is {size} bytes, more than the {limit} bytes {why}",
        path = .path.display()
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
        why: String,
    },
    #[error("{path}: {field} {name:?} {reason}", path = .path.display())]
    BadName {
        path: PathBuf,
        /// Where the name is, e.g. `layers[3].name`.
        field: String,
        name: String,
        reason: NameError,
    },
    #[error("{path}: invalid JSON: {source}", path = .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: format is {found:?}, expected {FORMAT:?}", path = .path.display())]
    UnknownFormat { path: PathBuf, found: String },
    #[error(
        "{path}: unknown version {found} (this reader knows versions {VERSION} (f32) and \
         {INT8_VERSION} (int8))",
        path = .path.display()
    )]
    UnknownVersion { path: PathBuf, found: u64 },
    #[error(
        "{path}: is an {found} export, where {expected} was expected{hint}",
        path = .path.display()
    )]
    WrongPrecision {
        path: PathBuf,
        found: Precision,
        expected: Precision,
        /// What reads the export instead.
        hint: &'static str,
    },
    #[error("{path}: {field}: {reason}", path = .path.display())]
    InvalidField {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{path}: layer {index} ({name}): {reason}", path = .path.display())]
    InvalidLayer {
        path: PathBuf,
        index: usize,
        name: String,
        reason: String,
    },
    #[error(
        "{path}: layer {index} ({name}) reads value {input}, which does not exist yet \
         (layer {index} may read values 0..={index})",
        path = .path.display()
    )]
    ForwardInput {
        path: PathBuf,
        index: usize,
        name: String,
        input: usize,
    },
    #[error(
        "{path}: layer {index} ({name}) declares output {declared}, but its inputs and \
         parameters give {computed}",
        path = .path.display()
    )]
    OutputShape {
        path: PathBuf,
        index: usize,
        name: String,
        declared: Shape3,
        computed: Shape3,
    },
    #[error("{path}: {field} is {declared}, but the layer list gives {computed}", path = .path.display())]
    TotalMismatch {
        path: PathBuf,
        field: &'static str,
        declared: u64,
        computed: u64,
    },
    #[error("{path}: invalid safetensors file: {reason}", path = .path.display())]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: tensor {name:?} is missing", path = .path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name:?} belongs to no conv2d or linear layer", path = .path.display())]
    UnknownTensor { path: PathBuf, name: String },
    #[error("{path}: tensor {name:?} has dtype {dtype}, expected {expected}", path = .path.display())]
    WrongDtype {
        path: PathBuf,
        name: String,
        dtype: String,
        expected: &'static str,
    },
    #[error("{path}: tensor {name:?} has shape {found:?}, the layer list expects {expected:?}", path = .path.display())]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor {name:?}: {reason}", path = .path.display())]
    InvalidTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },
    #[error("{path}: tensor {name:?} holds {value} at index {index} (weights must be finite)", path = .path.display())]
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
        value: f32,
    },
}
