//! The architecture of a network as data: a list of nodes over numbered values.
//!
//! Every model family (VGG, ResNet, ...) is a function that returns a [`NetSpec`]; the gated burn
//! module ([`crate::GatedNet`]), channel groups, pruning and the cost model all work on this one
//! description, so a new family needs no pruning code of its own.
//!
//! Values are numbered as in the export format: value 0 is the input image and node `i` writes
//! value `i + 1`. The last node's value holds the logits.

use dnal_export::kernel_serde;
use serde::{Deserialize, Serialize};

/// The shape of a value and the activation of a node are the device kernels' own: one
/// definition from the search to the board.
pub use dnal_kernels::{Activation, Shape3};

use crate::error::ModelError;

/// What a node computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Conv (no bias) -> BatchNorm -> gate -> activation: the Conv-BN-SS-ReLU block.
    ///
    /// A depthwise conv keeps its input's channels (`out_channels` must equal them).
    Conv {
        /// Output channels of the unpruned layer.
        out_channels: usize,
        /// Square kernel size.
        kernel: usize,
        /// Stride in both directions.
        stride: usize,
        /// Zero padding on every side.
        padding: usize,
        /// One filter per input channel instead of a dense conv.
        depthwise: bool,
        /// Applied after the gate.
        #[serde(with = "kernel_serde::activation")]
        activation: Activation,
    },
    /// Max pooling without padding.
    MaxPool {
        /// Square window.
        kernel: usize,
        /// Stride in both directions.
        stride: usize,
    },
    /// Average pooling without padding.
    AvgPool {
        /// Square window.
        kernel: usize,
        /// Stride in both directions.
        stride: usize,
    },
    /// Mean over height and width: `[C, H, W] -> [C, 1, 1]`.
    GlobalAvgPool,
    /// Element-wise sum of its inputs (a residual join), then the activation.
    Add {
        /// Applied after the sum.
        #[serde(with = "kernel_serde::activation")]
        activation: Activation,
    },
    /// Flatten (CHW order) then a dense layer with bias.
    Linear {
        /// Output features.
        out_features: usize,
        /// Applied after the layer.
        #[serde(with = "kernel_serde::activation")]
        activation: Activation,
    },
}

/// One node: an op over earlier values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// A name unique in the network (used in logs, checkpoints and exports).
    pub name: String,
    /// What the node computes.
    #[serde(flatten)]
    pub op: Op,
    /// The values it reads (each `<=` the node's own index).
    pub inputs: Vec<usize>,
}

/// A whole network as data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetSpec {
    /// The model's name, e.g. `resnet20`.
    pub name: String,
    /// The shape of one input image.
    #[serde(with = "kernel_serde::shape3")]
    pub input: Shape3,
    /// The number of logits the last node produces.
    pub num_classes: usize,
    /// The nodes in execution order.
    pub nodes: Vec<Node>,
}

/// The largest size a spec may give any one dimension: channels, height, width, kernel,
/// stride, padding, features, classes. Far above any network dnal searches, far below where
/// products of a few of them could overflow.
pub const MAX_DIMENSION: usize = 1 << 16;

/// The most elements one value (an image, a feature map, the logits) may hold.
pub const MAX_VALUE_LEN: usize = 1 << 31;

/// Output size of a sliding window, or `None` when the window does not fit (or its padded
/// size overflows).
pub fn window_out(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = size.checked_add(padding.checked_mul(2)?)?;
    if kernel == 0 || stride == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

impl NetSpec {
    /// The shapes of every value (index 0 is the input), checking the whole spec on the way:
    /// inputs refer backwards, windows fit, added values agree, the last node gives
    /// `num_classes` logits.
    pub fn value_shapes(&self) -> Result<Vec<Shape3>, ModelError> {
        let bad = |node: &Node, why: String| ModelError::InvalidSpec {
            model: self.name.clone(),
            node: node.name.clone(),
            reason: why,
        };
        if self.input.is_empty() {
            return Err(ModelError::InvalidSpec {
                model: self.name.clone(),
                node: "input".into(),
                reason: format!("input shape {:?} has a zero size", self.input),
            });
        }
        let too_large = |what: &str, value: usize| {
            format!("{what} is {value}, above the limit of {MAX_DIMENSION}")
        };
        let s = self.input;
        for (what, value) in [
            ("input channels", s.channels),
            ("input height", s.height),
            ("input width", s.width),
            ("num_classes", self.num_classes),
        ] {
            if value > MAX_DIMENSION {
                return Err(ModelError::InvalidSpec {
                    model: self.name.clone(),
                    node: "input".into(),
                    reason: too_large(what, value),
                });
            }
        }
        if s.checked_len().is_none_or(|n| n > MAX_VALUE_LEN) {
            return Err(ModelError::InvalidSpec {
                model: self.name.clone(),
                node: "input".into(),
                reason: format!("input shape {s:?} holds more than {MAX_VALUE_LEN} values"),
            });
        }
        let mut shapes = vec![self.input];
        for (index, node) in self.nodes.iter().enumerate() {
            if node.inputs.is_empty() {
                return Err(bad(node, "has no inputs".into()));
            }
            if let Some(&v) = node.inputs.iter().find(|&&v| v > index) {
                return Err(bad(
                    node,
                    format!("reads value {v}, which is not computed before it"),
                ));
            }
            let needs_one = !matches!(node.op, Op::Add { .. });
            if needs_one && node.inputs.len() != 1 {
                return Err(bad(
                    node,
                    format!("takes one input, got {}", node.inputs.len()),
                ));
            }
            let sizes: &[(&str, usize)] = match &node.op {
                Op::Conv {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    ..
                } => &[
                    ("out_channels", *out_channels),
                    ("kernel", *kernel),
                    ("stride", *stride),
                    ("padding", *padding),
                ],
                Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
                    &[("kernel", *kernel), ("stride", *stride)]
                }
                Op::Linear { out_features, .. } => &[("out_features", *out_features)],
                Op::GlobalAvgPool | Op::Add { .. } => &[],
            };
            if let Some((what, value)) = sizes.iter().find(|(_, v)| *v > MAX_DIMENSION) {
                return Err(bad(node, too_large(what, *value)));
            }
            let x = shapes[node.inputs[0]];
            let window = |kernel, stride, padding| -> Result<(usize, usize), ModelError> {
                match (
                    window_out(x.height, kernel, stride, padding),
                    window_out(x.width, kernel, stride, padding),
                ) {
                    (Some(h), Some(w)) => Ok((h, w)),
                    _ => Err(bad(
                        node,
                        format!(
                            "a {kernel}x{kernel} window (stride {stride}, padding {padding}) does not fit its {}x{} input",
                            x.height, x.width
                        ),
                    )),
                }
            };
            let out = match &node.op {
                Op::Conv {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    depthwise,
                    ..
                } => {
                    if *out_channels == 0 {
                        return Err(bad(node, "has zero output channels".into()));
                    }
                    if *depthwise && *out_channels != x.channels {
                        return Err(bad(
                            node,
                            format!(
                                "is depthwise but maps {} channels to {out_channels}",
                                x.channels
                            ),
                        ));
                    }
                    let (h, w) = window(*kernel, *stride, *padding)?;
                    Shape3::new(*out_channels, h, w)
                }
                Op::MaxPool { kernel, stride } | Op::AvgPool { kernel, stride } => {
                    let (h, w) = window(*kernel, *stride, 0)?;
                    Shape3::new(x.channels, h, w)
                }
                Op::GlobalAvgPool => Shape3::new(x.channels, 1, 1),
                Op::Add { .. } => {
                    if node.inputs.len() < 2 {
                        return Err(bad(node, "adds fewer than two values".into()));
                    }
                    if let Some(&v) = node.inputs.iter().find(|&&v| shapes[v] != x) {
                        return Err(bad(
                            node,
                            format!(
                                "adds values of different shapes: {:?} (value {}) and {:?} (value {v})",
                                x, node.inputs[0], shapes[v]
                            ),
                        ));
                    }
                    x
                }
                Op::Linear { out_features, .. } => {
                    if *out_features == 0 {
                        return Err(bad(node, "has zero output features".into()));
                    }
                    Shape3::new(*out_features, 1, 1)
                }
            };
            if out.checked_len().is_none_or(|n| n > MAX_VALUE_LEN) {
                return Err(bad(
                    node,
                    format!("its output {out:?} holds more than {MAX_VALUE_LEN} values"),
                ));
            }
            shapes.push(out);
        }
        let Some(last) = self.nodes.last() else {
            return Err(ModelError::InvalidSpec {
                model: self.name.clone(),
                node: "-".into(),
                reason: "has no nodes".into(),
            });
        };
        let logits = *shapes.last().expect("one shape per node");
        if logits.len() != self.num_classes {
            return Err(bad(
                last,
                format!(
                    "gives {} outputs ({logits:?}) but the model has {} classes",
                    logits.len(),
                    self.num_classes
                ),
            ));
        }
        Ok(shapes)
    }

    /// The index of the node with this name.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

/// Builds a [`NetSpec`] node by node; each call returns the value the new node writes.
#[derive(Debug)]
pub struct SpecBuilder {
    spec: NetSpec,
}

impl SpecBuilder {
    /// Starts a network over images of `input` shape.
    pub fn new(name: impl Into<String>, input: Shape3, num_classes: usize) -> Self {
        Self {
            spec: NetSpec {
                name: name.into(),
                input,
                num_classes,
                nodes: Vec::new(),
            },
        }
    }

    /// Adds a node and returns its value.
    pub fn push(&mut self, name: impl Into<String>, op: Op, inputs: Vec<usize>) -> usize {
        self.spec.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        self.spec.nodes.len()
    }

    /// A Conv-BN-gate-activation block with `same` padding for odd kernels.
    pub fn conv(
        &mut self,
        name: impl Into<String>,
        input: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        activation: Activation,
    ) -> usize {
        let op = Op::Conv {
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
            depthwise: false,
            activation,
        };
        self.push(name, op, vec![input])
    }

    /// The classifier every model ends with: a linear layer `fc` from `input` (flattened) to
    /// the classes' logits.
    pub fn classifier(&mut self, input: usize) -> usize {
        let num_classes = self.spec.num_classes;
        self.push(
            "fc",
            Op::Linear {
                out_features: num_classes,
                activation: Activation::None,
            },
            vec![input],
        )
    }

    /// Finishes the spec (it is checked when a network is built from it).
    pub fn finish(self) -> NetSpec {
        self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> NetSpec {
        let mut b = SpecBuilder::new("tiny", Shape3::new(1, 8, 8), 3);
        let c1 = b.conv("c1", 0, 4, 3, 1, Activation::Relu);
        let p = b.push(
            "pool",
            Op::MaxPool {
                kernel: 2,
                stride: 2,
            },
            vec![c1],
        );
        let c2 = b.conv("c2", p, 4, 3, 1, Activation::None);
        let add = b.push(
            "add",
            Op::Add {
                activation: Activation::Relu,
            },
            vec![p, c2],
        );
        let g = b.push("gap", Op::GlobalAvgPool, vec![add]);
        b.push(
            "fc",
            Op::Linear {
                out_features: 3,
                activation: Activation::None,
            },
            vec![g],
        );
        b.finish()
    }

    #[test]
    fn huge_and_wrapping_sizes_are_refused_not_wrapped() {
        let with_conv = |input: Shape3, out_channels, kernel, stride, padding| {
            let mut b = SpecBuilder::new("huge", input, 3);
            let c = b.push(
                "c",
                Op::Conv {
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    depthwise: false,
                    activation: Activation::None,
                },
                vec![0],
            );
            let g = b.push("gap", Op::GlobalAvgPool, vec![c]);
            b.push(
                "fc",
                Op::Linear {
                    out_features: 3,
                    activation: Activation::None,
                },
                vec![g],
            );
            b.finish().value_shapes()
        };
        let small = Shape3::new(1, 8, 8);
        for (input, out, kernel, stride, padding) in [
            // 2 * padding wraps to 0 in release builds: the window would "fit".
            (small, 4, 3, 1, 1usize << 63),
            (small, 4, 3, 1, usize::MAX),
            (small, (1usize << 63) + 1, 3, 1, 1),
            (small, 4, usize::MAX, 1, 1),
            (small, 4, 3, usize::MAX, 1),
            (Shape3::new((1 << 63) + 1, 8, 8), 4, 3, 1, 1),
            (Shape3::new(1 << 16, 1 << 16, 1 << 16), 4, 3, 1, 1),
            // Each size allowed, the output too big.
            (Shape3::new(1, 1 << 16, 1 << 16), 1 << 16, 1, 1, 0),
        ] {
            let err = with_conv(input, out, kernel, stride, padding).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("limit")
                    || text.contains("more than")
                    || text.contains("does not fit"),
                "{input:?} {out} {kernel} {stride} {padding}: {text}"
            );
        }
        with_conv(small, 4, 3, 1, 1).unwrap();
        assert_eq!(window_out(8, 3, 1, usize::MAX), None);
    }

    #[test]
    fn shapes_follow_the_nodes() {
        let shapes = tiny().value_shapes().unwrap();
        assert_eq!(shapes[1], Shape3::new(4, 8, 8));
        assert_eq!(shapes[2], Shape3::new(4, 4, 4));
        assert_eq!(shapes[4], Shape3::new(4, 4, 4));
        assert_eq!(shapes[5], Shape3::new(4, 1, 1));
        assert_eq!(shapes[6], Shape3::new(3, 1, 1));
    }

    #[test]
    fn forward_references_and_mismatched_adds_are_refused() {
        let mut spec = tiny();
        spec.nodes[0].inputs = vec![3];
        let err = spec.value_shapes().unwrap_err().to_string();
        assert!(err.contains("c1") && err.contains("value 3"), "{err}");

        let mut spec = tiny();
        spec.nodes[3].inputs = vec![1, 3];
        let err = spec.value_shapes().unwrap_err().to_string();
        assert!(err.contains("different shapes"), "{err}");
    }

    #[test]
    fn a_window_larger_than_its_input_is_refused() {
        let mut spec = tiny();
        spec.nodes[1].op = Op::MaxPool {
            kernel: 9,
            stride: 1,
        };
        let err = spec.value_shapes().unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }

    #[test]
    fn wrong_class_count_is_refused() {
        let mut spec = tiny();
        spec.num_classes = 10;
        let err = spec.value_shapes().unwrap_err().to_string();
        assert!(err.contains("10 classes"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = tiny();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"op\":\"conv\""));
        let back: NetSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}
