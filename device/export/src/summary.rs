//! Shapes, MACs and parameters of a layer list, and the checks of `arch.json` that need them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::limits::{
    MAX_ABS_MEAN, MAX_CLASS_NAME_LEN, MAX_DIM, MAX_LAYER_INPUTS, MAX_LAYERS, MAX_PARAMS, MAX_STD,
    MAX_VALUES, MIN_STD, NameError, check_name, check_text,
};
use super::{ARCH_FILE, Arch, ExportError, FORMAT, INT8_VERSION, Op, Precision, VERSION};
use dnal_kernels::{Conv2dParams, Pool2dParams, Shape3};

use crate::kernel_serde;

/// What one layer reads, writes and costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub name: String,
    pub op: String,
    pub inputs: Vec<usize>,
    #[serde(with = "kernel_serde::shapes3")]
    pub input_shapes: Vec<Shape3>,
    #[serde(with = "kernel_serde::shape3")]
    pub output: Shape3,
    /// Multiply-accumulates.
    pub macs: u64,
    /// Stored weights and biases.
    pub params: u64,
    /// `[shape of N.weight, shape of N.bias]` for conv2d and linear layers.
    pub tensor_shapes: Option<[Vec<usize>; 2]>,
}

/// Per-layer summaries and totals of an architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchSummary {
    #[serde(with = "kernel_serde::shape3")]
    pub input: Shape3,
    pub layers: Vec<LayerSummary>,
    pub macs: u64,
    pub params: u64,
}

impl Arch {
    /// Checks the layer list and computes every layer's output shape, MACs and parameters;
    /// also checks the declared output shapes and the `flops` and `params` totals.
    pub fn summary(&self) -> Result<ArchSummary, ExportError> {
        let summary = self.check_layers(Path::new(ARCH_FILE), true)?;
        let path = PathBuf::from(ARCH_FILE);
        if self.flops != summary.macs {
            return Err(ExportError::TotalMismatch {
                path,
                field: "flops",
                declared: self.flops,
                computed: summary.macs,
            });
        }
        if self.params != summary.params {
            return Err(ExportError::TotalMismatch {
                path,
                field: "params",
                declared: self.params,
                computed: summary.params,
            });
        }
        Ok(summary)
    }

    /// Refuses an export of another precision than `expected`, naming what reads it.
    pub fn expect_precision(&self, path: &Path, expected: Precision) -> Result<(), ExportError> {
        if self.precision == expected {
            return Ok(());
        }
        Err(ExportError::WrongPrecision {
            path: path.to_path_buf(),
            found: self.precision,
            expected,
            hint: match self.precision {
                Precision::Int8 => {
                    " (read it with dnal_export::int8::Int8Export; `dnal eval` and `dnal deploy` \
                     take either)"
                }
                Precision::F32 => " (read it with dnal_export::Export)",
            },
        })
    }

    /// For writers: computes and stores every layer's `output` and the `flops` and `params`
    /// totals, after checking everything else.
    pub fn complete(&mut self) -> Result<ArchSummary, ExportError> {
        let summary = self.check_layers(Path::new(ARCH_FILE), false)?;
        for (layer, s) in self.layers.iter_mut().zip(&summary.layers) {
            layer.output = s.output;
        }
        self.flops = summary.macs;
        self.params = summary.params;
        Ok(summary)
    }

    fn check_layers(&self, path: &Path, check_outputs: bool) -> Result<ArchSummary, ExportError> {
        let field = |field: &str, reason: String| ExportError::InvalidField {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let bad_name = |field: String, name: &str, reason: NameError| ExportError::BadName {
            path: path.to_path_buf(),
            field,
            name: name.to_string(),
            reason,
        };
        if self.format != FORMAT {
            return Err(ExportError::UnknownFormat {
                path: path.to_path_buf(),
                found: self.format.clone(),
            });
        }
        match (self.version, self.precision, self.quantization.is_some()) {
            (VERSION, Precision::F32, false) | (INT8_VERSION, Precision::Int8, true) => {}
            (VERSION | INT8_VERSION, precision, quantized) => {
                let expected = if self.version == VERSION {
                    "an f32 export without `quantization`"
                } else {
                    "an int8 export with `\"precision\": \"int8\"` and a `quantization` block"
                };
                return Err(field(
                    "version",
                    format!(
                        "is {} (version {} is {expected}), but precision is {precision} and \
                         `quantization` is {}",
                        self.version,
                        self.version,
                        if quantized { "present" } else { "absent" }
                    ),
                ));
            }
            _ => {
                return Err(ExportError::UnknownVersion {
                    path: path.to_path_buf(),
                    found: self.version,
                });
            }
        }
        check_name(&self.name).map_err(|e| bad_name("name".into(), &self.name, e))?;
        // The host writes "" when the data has no name.
        if !self.dataset.is_empty() {
            check_name(&self.dataset).map_err(|e| bad_name("dataset".into(), &self.dataset, e))?;
        }
        check_shape(&self.input).map_err(|reason| field("input", reason))?;
        // At most MAX_VALUES: it must equal the last layer's values (a profiling benchmark
        // of one conv layer has a whole activation as its output).
        if self.num_classes == 0 || self.num_classes > MAX_VALUES {
            return Err(field(
                "num_classes",
                format!("is {}, must be 1 to {MAX_VALUES}", self.num_classes),
            ));
        }
        if !self.classes.is_empty() && self.classes.len() != self.num_classes {
            return Err(field(
                "classes",
                format!(
                    "{} names for {} classes",
                    self.classes.len(),
                    self.num_classes
                ),
            ));
        }
        for (i, class) in self.classes.iter().enumerate() {
            check_text(class, MAX_CLASS_NAME_LEN)
                .map_err(|reason| field(&format!("classes[{i}]"), format!("{class:?} {reason}")))?;
        }
        if let Some(n) = &self.normalization {
            for (name, v) in [
                ("normalization.mean", &n.mean),
                ("normalization.std", &n.std),
            ] {
                if v.len() != self.input.channels {
                    return Err(field(
                        name,
                        format!(
                            "{} values for {} input channels",
                            v.len(),
                            self.input.channels
                        ),
                    ));
                }
            }
            // Finite and in a sane range: normalised inputs must stay finite f32 (an `inf`
            // image is not even valid Rust in a generated firmware).
            if let Some((c, m)) = n
                .mean
                .iter()
                .enumerate()
                .find(|(_, m)| !(m.is_finite() && m.abs() <= MAX_ABS_MEAN))
            {
                return Err(field(
                    &format!("normalization.mean[{c}]"),
                    format!("is {m}, must be finite with |mean| <= {MAX_ABS_MEAN:e}"),
                ));
            }
            if let Some((c, s)) = n
                .std
                .iter()
                .enumerate()
                .find(|(_, s)| !(s.is_finite() && (MIN_STD..=MAX_STD).contains(*s)))
            {
                return Err(field(
                    &format!("normalization.std[{c}]"),
                    format!("is {s}, must be finite, from {MIN_STD:e} to {MAX_STD:e}"),
                ));
            }
        }
        if self.layers.is_empty() {
            return Err(field("layers", "is empty".into()));
        }
        if self.layers.len() > MAX_LAYERS {
            return Err(field(
                "layers",
                format!(
                    "holds {} layers, at most {MAX_LAYERS} are supported",
                    self.layers.len()
                ),
            ));
        }

        let mut shapes = vec![self.input];
        let mut layers: Vec<LayerSummary> = Vec::with_capacity(self.layers.len());
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            // First, so that every later message may print the name as it is.
            check_name(&layer.name)
                .map_err(|e| bad_name(format!("layers[{index}].name"), &layer.name, e))?;
            let bad = |reason: String| ExportError::InvalidLayer {
                path: path.to_path_buf(),
                index,
                name: layer.name.clone(),
                reason,
            };
            if let Some(j) = seen.insert(&layer.name, index) {
                return Err(bad(format!("the name is already used by layer {j}")));
            }
            if layer.inputs.len() > MAX_LAYER_INPUTS {
                return Err(bad(format!(
                    "reads {} values, at most {MAX_LAYER_INPUTS} are supported",
                    layer.inputs.len()
                )));
            }
            if let Some(&input) = layer.inputs.iter().find(|&&v| v > index) {
                return Err(ExportError::ForwardInput {
                    path: path.to_path_buf(),
                    index,
                    name: layer.name.clone(),
                    input,
                });
            }
            check_op_limits(&layer.op).map_err(&bad)?;
            let input_shapes: Vec<Shape3> = layer.inputs.iter().map(|&v| shapes[v]).collect();
            let want_inputs = |n: usize| {
                if layer.inputs.len() == n {
                    Ok(input_shapes[0])
                } else {
                    Err(bad(format!(
                        "{} reads {n} value(s), inputs lists {}",
                        layer.op.name(),
                        layer.inputs.len()
                    )))
                }
            };
            // Every count below is checked: the limits keep them far from overflow, and a
            // failure here is a refusal, never a wrapped number.
            let overflow = || bad("its weights, MACs or parameters overflow".into());
            let (output, macs, params, tensor_shapes) = match &layer.op {
                Op::Conv2d(c) => {
                    let x = want_inputs(1)?;
                    if c.in_channels != x.channels {
                        return Err(bad(format!(
                            "in_channels is {}, but its input {} is {x}",
                            c.in_channels, layer.inputs[0]
                        )));
                    }
                    if c.groups != 1
                        && !(c.groups == c.in_channels && c.in_channels == c.out_channels)
                    {
                        return Err(bad(format!(
                            "groups is {}: only 1 (dense) or in_channels == out_channels \
                             (depthwise) are supported",
                            c.groups
                        )));
                    }
                    let p = Conv2dParams::new(
                        x,
                        c.out_channels,
                        c.kernel,
                        c.stride,
                        c.padding,
                        c.activation,
                    )
                    .map_err(|e| bad(e.to_string()))?;
                    let per_out = (c.in_channels / c.groups)
                        .checked_mul(c.kernel[0])
                        .and_then(|v| v.checked_mul(c.kernel[1]))
                        .ok_or_else(overflow)?;
                    let weights = c.out_channels.checked_mul(per_out).ok_or_else(overflow)?;
                    if weights > MAX_VALUES {
                        return Err(bad(format!(
                            "its weight tensor holds {weights} values, at most {MAX_VALUES}"
                        )));
                    }
                    let out = p.output();
                    let macs = (out.checked_len().ok_or_else(overflow)? as u64)
                        .checked_mul(per_out as u64)
                        .ok_or_else(overflow)?;
                    (
                        out,
                        macs,
                        (weights + c.out_channels) as u64,
                        Some([
                            vec![
                                c.out_channels,
                                c.in_channels / c.groups,
                                c.kernel[0],
                                c.kernel[1],
                            ],
                            vec![c.out_channels],
                        ]),
                    )
                }
                Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                    let x = want_inputs(1)?;
                    let params = Pool2dParams::new(x, p.kernel, p.stride, p.padding)
                        .map_err(|e| bad(e.to_string()))?;
                    (params.output(), 0, 0, None)
                }
                Op::GlobalAvgPool => {
                    let x = want_inputs(1)?;
                    (Shape3::new(x.channels, 1, 1), 0, 0, None)
                }
                Op::Add(_) => {
                    if layer.inputs.len() < 2 {
                        return Err(bad(format!(
                            "add needs two or more inputs, inputs lists {}",
                            layer.inputs.len()
                        )));
                    }
                    if let Some((v, s)) = layer
                        .inputs
                        .iter()
                        .zip(&input_shapes)
                        .find(|(_, s)| **s != input_shapes[0])
                    {
                        return Err(bad(format!(
                            "inputs disagree: value {} is {}, value {v} is {s}",
                            layer.inputs[0], input_shapes[0]
                        )));
                    }
                    (input_shapes[0], 0, 0, None)
                }
                Op::Linear(l) => {
                    let x = want_inputs(1)?;
                    if l.in_features != x.len() || l.in_features == 0 || l.out_features == 0 {
                        return Err(bad(format!(
                            "in_features is {}, but its input {} is {x} = {} values",
                            l.in_features,
                            layer.inputs[0],
                            x.len()
                        )));
                    }
                    let weights = l
                        .in_features
                        .checked_mul(l.out_features)
                        .ok_or_else(overflow)?;
                    if weights > MAX_VALUES {
                        return Err(bad(format!(
                            "its weight tensor holds {weights} values, at most {MAX_VALUES}"
                        )));
                    }
                    (
                        Shape3::new(l.out_features, 1, 1),
                        weights as u64,
                        (weights + l.out_features) as u64,
                        Some([vec![l.out_features, l.in_features], vec![l.out_features]]),
                    )
                }
            };
            check_shape(&output).map_err(|reason| bad(format!("its output {reason}")))?;
            if check_outputs && layer.output != output {
                return Err(ExportError::OutputShape {
                    path: path.to_path_buf(),
                    index,
                    name: layer.name.clone(),
                    declared: layer.output,
                    computed: output,
                });
            }
            shapes.push(output);
            layers.push(LayerSummary {
                name: layer.name.clone(),
                op: layer.op.name().to_string(),
                inputs: layer.inputs.clone(),
                input_shapes,
                output,
                macs,
                params,
                tensor_shapes,
            });
        }
        let last = shapes[shapes.len() - 1];
        if last.len() != self.num_classes {
            return Err(field(
                "num_classes",
                format!(
                    "is {}, but the last layer ({}) outputs {last}",
                    self.num_classes,
                    self.layers[self.layers.len() - 1].name
                ),
            ));
        }
        let macs = layers
            .iter()
            .try_fold(0u64, |sum, l| sum.checked_add(l.macs))
            .ok_or_else(|| field("layers", "their MACs overflow a 64-bit count".into()))?;
        let params = layers.iter().map(|l| l.params).sum::<u64>();
        if params > MAX_PARAMS {
            return Err(field(
                "layers",
                format!("hold {params} parameters, at most {MAX_PARAMS} are supported"),
            ));
        }
        Ok(ArchSummary {
            input: self.input,
            macs,
            params,
            layers,
        })
    }
}

/// Checks one activation shape against the limits: every dimension 1 to [`MAX_DIM`], at
/// most [`MAX_VALUES`] values.
fn check_shape(shape: &Shape3) -> Result<(), String> {
    let dims = [shape.channels, shape.height, shape.width];
    if dims.contains(&0) {
        return Err(format!("{shape} holds no value"));
    }
    if dims.iter().any(|&d| d > MAX_DIM) {
        return Err(format!(
            "{shape} has a dimension above {MAX_DIM}, the largest supported"
        ));
    }
    match shape.checked_len() {
        Some(n) if n <= MAX_VALUES => Ok(()),
        _ => Err(format!(
            "{shape} holds more than {MAX_VALUES} values, the most supported"
        )),
    }
}

/// Checks an op's own numbers against the limits, before any arithmetic on them.
fn check_op_limits(op: &Op) -> Result<(), String> {
    let dim = |what: &str, v: usize| {
        if v > MAX_DIM {
            Err(format!(
                "{what} is {v}, above {MAX_DIM}, the largest supported"
            ))
        } else {
            Ok(())
        }
    };
    let pair = |what: &str, v: [usize; 2]| {
        dim(&format!("{what}[0]"), v[0])?;
        dim(&format!("{what}[1]"), v[1])
    };
    match op {
        Op::Conv2d(c) => {
            dim("in_channels", c.in_channels)?;
            dim("out_channels", c.out_channels)?;
            dim("groups", c.groups)?;
            pair("kernel", c.kernel)?;
            pair("stride", c.stride)?;
            pair("padding", c.padding)?;
            if c.kept_channels.len() > MAX_DIM {
                return Err(format!(
                    "kept_channels lists {} channels, above {MAX_DIM}",
                    c.kept_channels.len()
                ));
            }
            Ok(())
        }
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
            pair("kernel", p.kernel)?;
            pair("stride", p.stride)?;
            pair("padding", p.padding)
        }
        Op::GlobalAvgPool | Op::Add(_) => Ok(()),
        Op::Linear(l) => {
            if l.in_features > MAX_VALUES {
                return Err(format!(
                    "in_features is {}, above {MAX_VALUES}, the most supported",
                    l.in_features
                ));
            }
            dim("out_features", l.out_features)
        }
    }
}
