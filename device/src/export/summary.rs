//! Shapes, MACs and parameters of a layer list, and the checks of `arch.json` that need them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ARCH_FILE, Arch, ExportError, FORMAT, Op, VERSION};
use crate::kernels::{Conv2dParams, Pool2dParams, Shape3};

/// What one layer reads, writes and costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub name: String,
    pub op: String,
    pub inputs: Vec<usize>,
    pub input_shapes: Vec<Shape3>,
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
        if self.format != FORMAT {
            return Err(ExportError::UnknownFormat {
                path: path.to_path_buf(),
                found: self.format.clone(),
            });
        }
        if self.version != VERSION {
            return Err(ExportError::UnknownVersion {
                path: path.to_path_buf(),
                found: self.version,
            });
        }
        if self.input.is_empty() {
            return Err(field("input", format!("{} holds no value", self.input)));
        }
        if self.num_classes == 0 {
            return Err(field("num_classes", "is 0".into()));
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
            if let Some(s) = n.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
                return Err(field("normalization.std", format!("holds {s}")));
            }
        }
        if self.layers.is_empty() {
            return Err(field("layers", "is empty".into()));
        }

        let mut shapes = vec![self.input];
        let mut layers: Vec<LayerSummary> = Vec::with_capacity(self.layers.len());
        for (index, layer) in self.layers.iter().enumerate() {
            let bad = |reason: String| ExportError::InvalidLayer {
                path: path.to_path_buf(),
                index,
                name: layer.name.clone(),
                reason,
            };
            if layer.name.is_empty() {
                return Err(bad("the name is empty".into()));
            }
            if let Some(j) = self.layers[..index]
                .iter()
                .position(|l| l.name == layer.name)
            {
                return Err(bad(format!("the name is already used by layer {j}")));
            }
            if let Some(&input) = layer.inputs.iter().find(|&&v| v > index) {
                return Err(ExportError::ForwardInput {
                    path: path.to_path_buf(),
                    index,
                    name: layer.name.clone(),
                    input,
                });
            }
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
                    let per_out = (c.in_channels / c.groups) * c.kernel[0] * c.kernel[1];
                    let out = p.output();
                    (
                        out,
                        (out.len() * per_out) as u64,
                        (c.out_channels * per_out + c.out_channels) as u64,
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
                    (
                        Shape3::new(l.out_features, 1, 1),
                        (l.in_features * l.out_features) as u64,
                        (l.in_features * l.out_features + l.out_features) as u64,
                        Some([vec![l.out_features, l.in_features], vec![l.out_features]]),
                    )
                }
            };
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
        Ok(ArchSummary {
            input: self.input,
            macs: layers.iter().map(|l| l.macs).sum(),
            params: layers.iter().map(|l| l.params).sum(),
            layers,
        })
    }
}
