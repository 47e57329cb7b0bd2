//! `latency.json`: the types, a writer that never leaves a half-written file, and a loader
//! that checks everything lookups rely on (docs/latency-format.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LatencyError;
use crate::board;
use dnal_export::FileError;
use dnal_export::kernel_serde;
use dnal_export::limits::{MAX_DIM, MAX_LAYER_INPUTS, MAX_LAYERS, MAX_VALUES};
use dnal_export::{Layer, LayerSummary, Op, Precision, check_name};
use dnal_kernels::{Activation, Shape3};

/// `format` of every latency table.
pub const FORMAT: &str = "dnal-latency";
/// The version this crate reads and writes.
pub const VERSION: u64 = 1;
/// The usual file name.
pub const TABLE_FILE: &str = "latency.json";
/// Largest `latency.json` read, in bytes.
pub const MAX_TABLE_BYTES: u64 = 16 << 20;
/// Most points on one channel axis of a grid.
pub const MAX_GRID_POINTS: usize = 4096;

/// A board's measured cost of every layer of one model, over a grid of channel counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    pub format: String,
    pub version: u64,
    /// The board name (`dnal deploy --board`).
    pub board: String,
    pub cpu: String,
    /// What the costs count: "instructions" (QEMU plugin) or "cycles" (DWT on a real board).
    pub unit: String,
    /// How the costs were measured, in a sentence.
    pub measured: String,
    /// How units become milliseconds.
    pub clock: Clock,
    /// The model (`arch.json`'s `name`) whose layers were profiled.
    pub model: String,
    /// The number format of the firmware measured: what the table predicts for. An int8
    /// table holds the int8 kernels' costs (absent in the file: f32).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// int8 on a board with the DSP extension: its 3x3 convolutions were measured by
    /// Winograd's F(2x2, 3x3) (`dnal profile --winograd`), and firmware deployed by it is
    /// what the table predicts for (absent in the file: directly).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub winograd: bool,
    /// The code that generated the measured firmware ([`crate::codegen::code_stamp`]): the
    /// table predicts exactly only firmware of the same code (absent in tables written
    /// before dnal recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The model's input (the image).
    #[serde(with = "kernel_serde::shape3")]
    pub input: Shape3,
    /// Cost of one inference outside the layers' own code (units): the parent model measured
    /// whole minus the table's layers at the parent's channel counts.
    pub overhead: f64,
    /// How `overhead` was found; `None` when the parent could not run on the board (then
    /// `overhead` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// The grid the profile was asked for.
    pub grid_options: super::GridOptions,
    pub layers: Vec<LayerLatency>,
    /// Where the table was read from (for messages); not part of its value.
    #[serde(skip)]
    pub(crate) origin: Origin,
}

/// The file a table was loaded from. Compares equal to any other origin: two tables with the
/// same contents are the same table wherever they were read.
#[derive(Clone, Debug, Default)]
pub(crate) struct Origin(pub Option<PathBuf>);

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The clock that turns the table's units into time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    /// Cycles per second.
    pub hz: f64,
    /// Cycles per unit: 1 for cycle counts; for instruction counts an assumption.
    pub cycles_per_unit: f64,
    /// Where `hz` and `cycles_per_unit` come from.
    pub assumption: String,
}

/// The parent network measured whole, to find the per-inference overhead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// One inference of the parent, as `dnal deploy` measures it (sum of its layers' spans).
    pub parent_measured: f64,
    /// The table's layer costs at the parent's channel counts, summed.
    pub parent_from_layers: f64,
}

/// One layer's costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerLatency {
    /// The layer's name in `arch.json`.
    pub name: String,
    /// What must match for the costs to apply.
    pub structure: LayerStructure,
    /// The channel counts measured and their costs.
    pub grid: Grid,
    /// The layer's cost inside the parent model (units), for comparison with the grid point
    /// at the parent's counts; `None` without calibration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_parent: Option<f64>,
}

/// Everything about a layer except its channel counts: a pruned network's layer may use the
/// costs only when all of it equals the profiled layer's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerStructure {
    /// `arch.json`'s op.
    pub op: String,
    /// How many values the layer reads.
    pub inputs: usize,
    /// Height and width of the (first) input.
    pub input_height: usize,
    pub input_width: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<[usize; 2]>,
    /// conv2d only: depthwise (`groups == channels`) or dense.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depthwise: Option<bool>,
    #[serde(
        default,
        with = "kernel_serde::option_activation",
        skip_serializing_if = "Option::is_none"
    )]
    pub activation: Option<Activation>,
}

impl LayerStructure {
    /// The structure of a validated layer.
    pub fn of(layer: &Layer, info: &LayerSummary) -> Self {
        let x0 = info.input_shapes[0];
        let mut s = LayerStructure {
            op: layer.op.name().to_string(),
            inputs: layer.inputs.len(),
            input_height: x0.height,
            input_width: x0.width,
            kernel: None,
            stride: None,
            padding: None,
            depthwise: None,
            activation: None,
        };
        match &layer.op {
            Op::Conv2d(c) => {
                s.kernel = Some(c.kernel);
                s.stride = Some(c.stride);
                s.padding = Some(c.padding);
                s.depthwise = Some(c.is_depthwise());
                s.activation = Some(c.activation);
            }
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                s.kernel = Some(p.kernel);
                s.stride = Some(p.stride);
                s.padding = Some(p.padding);
            }
            Op::GlobalAvgPool => {}
            Op::Add(a) => s.activation = Some(a.activation),
            Op::Linear(l) => s.activation = Some(l.activation),
        }
        s
    }

    /// The fields where `other` differs, as `field: table X, architecture Y`.
    pub fn differences(&self, other: &LayerStructure) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |field: &str, a: String, b: String| {
            if a != b {
                out.push(format!("{field}: latency table {a}, architecture {b}"));
            }
        };
        cmp("op", self.op.clone(), other.op.clone());
        cmp("inputs", self.inputs.to_string(), other.inputs.to_string());
        cmp(
            "input size",
            format!("{}x{}", self.input_height, self.input_width),
            format!("{}x{}", other.input_height, other.input_width),
        );
        let pair =
            |v: &Option<[usize; 2]>| v.map_or("none".to_string(), |a| format!("{}x{}", a[0], a[1]));
        cmp("kernel", pair(&self.kernel), pair(&other.kernel));
        cmp("stride", pair(&self.stride), pair(&other.stride));
        cmp("padding", pair(&self.padding), pair(&other.padding));
        let conv = |v: &Option<bool>| match v {
            Some(true) => "depthwise",
            Some(false) => "dense",
            None => "none",
        };
        cmp(
            "groups",
            conv(&self.depthwise).into(),
            conv(&other.depthwise).into(),
        );
        let act = |v: &Option<Activation>| match v {
            Some(Activation::None) => "none",
            Some(Activation::Relu) => "relu",
            Some(Activation::Relu6) => "relu6",
            None => "none",
        };
        cmp(
            "activation",
            act(&self.activation).into(),
            act(&other.activation).into(),
        );
        out
    }
}

/// The row of codes an int8 SIMD convolution reads for each output: `taps` (kernel height
/// times width) per input channel, padded to a multiple of `quantum` (4 for `SMLAD`,
/// [`dnal_kernels::int8::dsp_row_len`]; [`crate::board::Int8Simd::row_quantum`]). A 1x1
/// convolution of 5 to 8 inputs reads 8 codes under `SMLAD` and costs the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InRow {
    pub taps: usize,
    pub quantum: usize,
}

impl InRow {
    /// The padded row's length at `in_channels`.
    pub fn len(&self, in_channels: usize) -> usize {
        (in_channels * self.taps).div_ceil(self.quantum) * self.quantum
    }

    /// The fewest input channels whose row needs no padding: a grid point there measures
    /// the kernel at a whole row.
    pub fn whole_rows(&self) -> usize {
        fn gcd(a: usize, b: usize) -> usize {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        self.quantum / gcd(self.quantum, self.taps)
    }
}

/// The channel counts a layer was measured at, and the cost at each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "axes", rename_all = "snake_case")]
pub enum Grid {
    /// The cost depends on the input and the output channel counts (dense conv, linear):
    /// `cost[i][j]` at `in_channels[i]`, `out_channels[j]`.
    InOut {
        in_channels: Vec<usize>,
        out_channels: Vec<usize>,
        /// The kernel computes this many output channels together (register blocking): a
        /// count is full blocks, interpolated between multiples of `out_block`, plus the
        /// channels left over, each costing what the points below `out_block` say.
        out_block: usize,
        /// How the kernel reads each output's inputs, where it pads them (the int8 SIMD
        /// kernels): the cost then follows the padded row's length, a staircase in the input
        /// channels, and the input axis is interpolated over that length. Absent in tables
        /// from before it was kept, and for kernels whose cost is linear in the channels.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_row: Option<InRow>,
        cost: Vec<Vec<f64>>,
    },
    /// The cost depends on one channel count, the layer's input and output alike (pools,
    /// depthwise conv, add): `cost[i]` at `channels[i]`.
    Channels {
        channels: Vec<usize>,
        cost: Vec<f64>,
    },
}

/// Why a table's (or its measurement log's) file at `path` could not be read.
pub(super) fn file_error(path: &Path, e: FileError) -> LatencyError {
    match e {
        FileError::Io(source) => LatencyError::Io {
            path: path.to_path_buf(),
            source,
        },
        FileError::NotAFile(kind) => LatencyError::NotAFile {
            path: path.to_path_buf(),
            kind,
        },
        FileError::TooLarge { size, limit, why } => LatencyError::FileTooLarge {
            path: path.to_path_buf(),
            size,
            limit,
            why,
        },
    }
}

impl LatencyTable {
    /// Reads and validates a table; errors name the file and the field at fault.
    pub fn load(path: impl AsRef<Path>) -> Result<LatencyTable, LatencyError> {
        let path = path.as_ref();
        let text =
            dnal_export::read_regular_file(path, MAX_TABLE_BYTES, "a latency table may hold")
                .map_err(|e| file_error(path, e))?;
        let mut table: LatencyTable =
            serde_json::from_slice(&text).map_err(|source| LatencyError::Json {
                path: path.to_path_buf(),
                source,
            })?;
        table.validate(path)?;
        table.origin = Origin(Some(path.to_path_buf()));
        Ok(table)
    }

    /// Writes the table to `path` through a temporary file and a rename, so that a reader
    /// never sees half a table. Refuses a table that [`LatencyTable::load`] would refuse.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), LatencyError> {
        let path = path.as_ref();
        self.validate(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LatencyError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut json = serde_json::to_vec_pretty(self).map_err(|source| LatencyError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        json.push(b'\n');
        dnal_export::write_atomically(path, &json).map_err(|e| LatencyError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// The file the table was loaded from, if any.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.0.as_deref()
    }

    /// Why the table may not predict this dnal's firmware exactly: it was measured on
    /// firmware of other code than [`crate::codegen::code_stamp`]'s, or by a dnal that did
    /// not record its code. `None` when it is this code's.
    pub fn code_note(&self) -> Option<String> {
        let ours = crate::codegen::code_stamp();
        let theirs = match &self.code {
            Some(code) if code == ours => return None,
            Some(code) => format!("firmware of other code ({code})"),
            None => "a dnal that did not record its firmware code".to_string(),
        };
        let name = self.origin().map_or_else(
            || "the latency table".to_string(),
            |p| format!("latency table {}", p.display()),
        );
        Some(format!(
            "{name} was profiled with {theirs}; this dnal generates {ours}. A layer may cost \
             a little differently (a fraction of a percent), which the measurements kept beside \
             the table correct; `dnal profile --board {}` measures a table for this code",
            self.board
        ))
    }

    /// The layer named `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerLatency> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// Checks everything the lookups rely on; `path` names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<(), LatencyError> {
        let invalid = |field: String, reason: String| LatencyError::InvalidField {
            path: path.to_path_buf(),
            field,
            reason,
        };
        if self.format != FORMAT {
            return Err(invalid(
                "format".into(),
                format!("is {:?}, expected {FORMAT:?}", self.format),
            ));
        }
        if self.version != VERSION {
            return Err(LatencyError::UnknownVersion {
                path: path.to_path_buf(),
                found: self.version,
            });
        }
        let Some(board) = board::board(&self.board) else {
            return Err(invalid(
                "board".into(),
                format!(
                    "unknown board {:?}; boards: {}",
                    self.board,
                    board::board_names().join(", ")
                ),
            ));
        };
        if self.unit != board.cost_unit.name() {
            return Err(invalid(
                "unit".into(),
                format!(
                    "is {:?}, but board {} measures {:?}",
                    self.unit,
                    board.name,
                    board.cost_unit.name()
                ),
            ));
        }
        if self.winograd
            && let Some(reason) = board.winograd_refusal(self.precision)
        {
            return Err(invalid("winograd".into(), format!("is true, but {reason}")));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.clock.hz) {
            return Err(invalid(
                "clock.hz".into(),
                format!("is {}, must be a positive number", self.clock.hz),
            ));
        }
        if !positive(self.clock.cycles_per_unit) {
            return Err(invalid(
                "clock.cycles_per_unit".into(),
                format!(
                    "is {}, must be a positive number",
                    self.clock.cycles_per_unit
                ),
            ));
        }
        if !self.overhead.is_finite() {
            return Err(invalid(
                "overhead".into(),
                format!("is {}, must be finite", self.overhead),
            ));
        }
        // The model and layer names follow the export's name rule (they are the export's
        // names); checked first, so that messages may print them.
        check_name(&self.model)
            .map_err(|e| invalid("model".into(), format!("{:?} {e}", self.model)))?;
        let dims = [self.input.channels, self.input.height, self.input.width];
        if dims.iter().any(|&d| d == 0 || d > MAX_DIM)
            || self.input.checked_len().is_none_or(|n| n > MAX_VALUES)
        {
            return Err(invalid(
                "input".into(),
                format!(
                    "{} is outside the export limits (each dimension 1 to {MAX_DIM}, at most \
                     {MAX_VALUES} values)",
                    self.input
                ),
            ));
        }
        if self.layers.is_empty() {
            return Err(invalid("layers".into(), "is empty".into()));
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(invalid(
                "layers".into(),
                format!("holds {} layers, at most {MAX_LAYERS}", self.layers.len()),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, layer) in self.layers.iter().enumerate() {
            check_name(&layer.name).map_err(|e| {
                invalid(format!("layers[{i}].name"), format!("{:?} {e}", layer.name))
            })?;
            let at = |field: &str| format!("layers[{i}] ({}).{field}", layer.name);
            if !names.insert(layer.name.as_str()) {
                return Err(invalid(at("name"), "appears twice".into()));
            }
            layer
                .structure
                .check()
                .map_err(|(field, reason)| invalid(at(&field), reason))?;
            layer
                .grid
                .check()
                .map_err(|(field, reason)| invalid(at(&field), reason))?;
            if let Some(v) = layer.in_parent
                && !v.is_finite()
            {
                return Err(invalid(at("in_parent"), format!("is {v}, must be finite")));
            }
        }
        Ok(())
    }
}

impl LayerStructure {
    /// Checks the numbers against the export's limits (they describe an export's layer), so
    /// that nothing computed from them can overflow. Errors are `(field, reason)`.
    fn check(&self) -> Result<(), (String, String)> {
        let dim = |field: &str, v: usize| {
            if v > MAX_DIM {
                Err((
                    format!("structure.{field}"),
                    format!("is {v}, above {MAX_DIM}, the largest supported"),
                ))
            } else {
                Ok(())
            }
        };
        if self.inputs > MAX_LAYER_INPUTS {
            return Err((
                "structure.inputs".into(),
                format!("is {}, at most {MAX_LAYER_INPUTS}", self.inputs),
            ));
        }
        dim("input_height", self.input_height)?;
        dim("input_width", self.input_width)?;
        for (field, pair) in [
            ("kernel", self.kernel),
            ("stride", self.stride),
            ("padding", self.padding),
        ] {
            if let Some([a, b]) = pair {
                dim(&format!("{field}[0]"), a)?;
                dim(&format!("{field}[1]"), b)?;
            }
        }
        Ok(())
    }
}

impl Grid {
    /// How many channel configurations were measured.
    pub fn points(&self) -> usize {
        match self {
            Grid::InOut {
                in_channels,
                out_channels,
                ..
            } => in_channels.len() * out_channels.len(),
            Grid::Channels { channels, .. } => channels.len(),
        }
    }

    /// Checks the axes (non-empty, strictly increasing, at least 1), the cost array's shape
    /// and values, and that a blocked output axis holds the points below its block. Errors
    /// are `(field, reason)`.
    fn check(&self) -> Result<(), (String, String)> {
        fn axis(name: &str, values: &[usize]) -> Result<(), (String, String)> {
            if values.is_empty() {
                return Err((format!("grid.{name}"), "is empty".into()));
            }
            if values.len() > MAX_GRID_POINTS {
                return Err((
                    format!("grid.{name}"),
                    format!("has {} points, at most {MAX_GRID_POINTS}", values.len()),
                ));
            }
            if let Some(v) = values.iter().find(|&&v| v > MAX_DIM) {
                return Err((
                    format!("grid.{name}"),
                    format!("holds {v} channels, above {MAX_DIM}, the largest supported"),
                ));
            }
            if values[0] == 0 {
                return Err((
                    format!("grid.{name}"),
                    "starts at 0 channels (a layer has at least 1)".into(),
                ));
            }
            if let Some(w) = values.windows(2).find(|w| w[0] >= w[1]) {
                return Err((
                    format!("grid.{name}"),
                    format!("must increase strictly ({} then {})", w[0], w[1]),
                ));
            }
            Ok(())
        }
        fn costs(field: String, values: &[f64], len: usize) -> Result<(), (String, String)> {
            if values.len() != len {
                return Err((
                    field,
                    format!("has {} values, its axis {len}", values.len()),
                ));
            }
            if let Some((j, v)) = values
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite() || **v < 0.0)
            {
                return Err((
                    format!("{field}[{j}]"),
                    format!("is {v}, must be finite and >= 0"),
                ));
            }
            Ok(())
        }
        match self {
            Grid::InOut {
                in_channels,
                out_channels,
                out_block,
                in_row,
                cost,
            } => {
                axis("in_channels", in_channels)?;
                if let Some(row) = in_row {
                    for (name, v) in [("taps", row.taps), ("quantum", row.quantum)] {
                        if v == 0 || v > MAX_DIM {
                            return Err((
                                format!("grid.in_row.{name}"),
                                format!("is {v}, must be 1 to {MAX_DIM}"),
                            ));
                        }
                    }
                }
                axis("out_channels", out_channels)?;
                if *out_block == 0 || *out_block > MAX_DIM {
                    return Err((
                        "grid.out_block".into(),
                        format!("is {out_block}, must be 1 to {MAX_DIM}"),
                    ));
                }
                // A blocked axis needs the points below the block (they give the cost of the
                // channels left over after the last full block).
                if out_channels.len() > 1 {
                    let last = *out_channels.last().unwrap_or(&0);
                    // Bounded by the limits above; the axis increases strictly, so a binary
                    // search finds each count.
                    for tail in 1..(*out_block).min(last + 1) {
                        if out_channels.binary_search(&tail).is_err() {
                            return Err((
                                "grid.out_channels".into(),
                                format!(
                                    "lacks {tail}: with out_block {out_block}, the counts 1..{} \
                                     must be measured",
                                    out_block - 1
                                ),
                            ));
                        }
                    }
                }
                if cost.len() != in_channels.len() {
                    return Err((
                        "grid.cost".into(),
                        format!(
                            "has {} rows, in_channels has {} points",
                            cost.len(),
                            in_channels.len()
                        ),
                    ));
                }
                for (i, row) in cost.iter().enumerate() {
                    costs(format!("grid.cost[{i}]"), row, out_channels.len())?;
                }
            }
            Grid::Channels { channels, cost } => {
                axis("channels", channels)?;
                costs("grid.cost".into(), cost, channels.len())?;
            }
        }
        Ok(())
    }
}
