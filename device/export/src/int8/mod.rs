//! int8 exports (version 2, docs/export-format.md "int8 exports"): the same layer list as an
//! f32 export, with int8 weights (symmetric, one scale per output channel), int32 biases, one
//! scale and zero point per value, and the fixed-point requantisation of every layer.
//!
//! - [`Int8Export`]: a validated int8 export, loaded from a folder or built by [`quantize`];
//! - [`reference_forward`]: the integer reference, plain loops that define what the int8
//!   network computes; [`forward_with_kernels`] runs dnal-kernels' portable int8 kernels,
//!   which must agree with it bit for bit;
//! - [`quantize`]: post-training quantisation of an f32 export from the value ranges seen on
//!   calibration images ([`ValueRanges`]).

mod io;
mod quantize;
mod reference;

pub use quantize::{QuantizeError, ValueRanges, quantization_of_range, quantize};
pub use reference::{forward_with_kernels, reference_forward};

use std::path::Path;

use dnal_kernels::int8::{
    MAX_POOL_CELLS, OutputStage, Quantization, Requantize, add_left_shift, rescaled_codes,
};
use serde::{Deserialize, Serialize};

use crate::{Arch, ArchSummary, ExportError, Op, Precision};

/// The `quantization` block of an int8 export's `arch.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizationSpec {
    /// One per value: the input image (value 0), then every layer's output.
    pub values: Vec<ValueQuantization>,
    /// Free-form: how the scales were chosen (images, source export).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub calibration: serde_json::Value,
}

/// One value's quantisation as `arch.json` writes it: `real = scale * (q - zero_point)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueQuantization {
    pub scale: f32,
    pub zero_point: i32,
}

impl From<ValueQuantization> for Quantization {
    fn from(v: ValueQuantization) -> Self {
        Quantization {
            scale: v.scale,
            zero_point: v.zero_point,
        }
    }
}

impl From<Quantization> for ValueQuantization {
    fn from(q: Quantization) -> Self {
        ValueQuantization {
            scale: q.scale,
            zero_point: q.zero_point,
        }
    }
}

/// Scales an int8 export may hold (activations and weights): far beyond any real network's,
/// and small enough that every requantisation factor fits a [`Requantize`] when the layer is
/// sane.
pub const SCALES: std::ops::RangeInclusive<f32> = 1e-10..=1e10;

/// How far a stored requantisation may be from the ratio of the scales it stands for.
pub const REQUANTIZE_TOLERANCE: f64 = 1e-6;

/// The quantised data of one layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Int8Layer {
    /// A conv2d or linear layer.
    Weighted(Int8Weights),
    /// An add of two or more values.
    Add(AddRescale),
    /// A pooling layer: nothing to store (its output keeps its input's quantisation).
    Pool,
}

/// A conv2d or linear layer's weights and requantisation, per output channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Weights {
    /// The weight tensor's codes in `-127..=127`, in the f32 export's order.
    pub weight: Vec<i8>,
    /// In units of `input_scale * weight_scale[oc]`.
    pub bias: Vec<i32>,
    /// `weight[oc] ~= weight_scale[oc] * code`.
    pub weight_scale: Vec<f32>,
    /// `input_scale * weight_scale[oc] / output_scale`, fixed point.
    pub requantize: Vec<Requantize>,
}

/// An add's rescaling: each input to a common scale, then the sum to the output.
#[derive(Clone, Debug, PartialEq)]
pub struct AddRescale {
    /// `input_scale[i] / (2 * max_j input_scale[j])`, at most 0.5, one per input.
    pub inputs: Vec<Requantize>,
    /// `2 * max_j input_scale[j] / (2^add_left_shift(n) * output_scale)`.
    pub output: Requantize,
}

/// The stage of an add whose inputs have zero points `zeros`, `stage` as its output factor
/// alone gives it, and short ([`OutputStage::factors_short`]) also where
/// [`Requantize::to_i8_short`] gives the exact code for every pair of input codes (all
/// 65,536, summed as the kernel sums them). A two-input add's output factor is usually near
/// `2^-22`, just below the shifts that are short for any accumulator, and its sums stay far
/// from the `2^30` where the short way's doubling saturates (a test shows one that does not).
pub fn add_stage(stage: OutputStage, add: &AddRescale, zeros: &[i32]) -> OutputStage {
    let ([ra, rb], [za, zb]) = (add.inputs.as_slice(), zeros) else {
        return stage;
    };
    let out = add.output;
    if stage.factors_short || !out.below_half() {
        return stage;
    }
    // The kernel's own tables: the sums checked are the ones it forms.
    let shift = add_left_shift(2);
    let (ta, tb) = (
        rescaled_codes(*za, ra, shift),
        rescaled_codes(*zb, rb, shift),
    );
    let (zero, min, max) = (stage.zero_point, stage.min, stage.max);
    let exact = ta.iter().all(|a| {
        tb.iter()
            .all(|b| out.to_i8_short(a + b, zero, min, max) == out.to_i8(a + b, zero, min, max))
    });
    OutputStage {
        factors_short: exact,
        ..stage
    }
}

/// A validated int8 export.
#[derive(Clone, Debug)]
pub struct Int8Export {
    arch: Arch,
    summary: ArchSummary,
    values: Vec<Quantization>,
    layers: Vec<Int8Layer>,
    /// Each layer's output stage, worked out once ([`Int8Export::output_stage`]): an add's
    /// takes 65,536 requantisations to settle, and evaluations ask per image.
    stages: Vec<OutputStage>,
}

impl Int8Export {
    /// Validates `arch` (precision int8, with its quantization block) and the layers' data
    /// together, as [`Int8Export::load`] does for a folder.
    pub fn new(arch: Arch, layers: Vec<Int8Layer>) -> Result<Self, ExportError> {
        let summary = arch.summary()?;
        let path = Path::new(crate::WEIGHTS_FILE);
        arch.expect_precision(Path::new(crate::ARCH_FILE), Precision::Int8)?;
        let values = check_values(&arch)?;
        check_layers(path, &arch, &values, &layers)?;
        let mut export = Int8Export {
            arch,
            summary,
            values,
            layers,
            stages: Vec::new(),
        };
        export.stages = (0..export.layers.len())
            .map(|i| export.work_out_stage(i))
            .collect();
        Ok(export)
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    pub fn summary(&self) -> &ArchSummary {
        &self.summary
    }

    /// One entry per layer of `arch().layers`.
    pub fn layers(&self) -> &[Int8Layer] {
        &self.layers
    }

    /// The quantisation of value `v` (0 = the input, `i + 1` = layer `i`'s output).
    pub fn value(&self, v: usize) -> Quantization {
        self.values[v]
    }

    /// Layer `i`'s output stage: its output's zero point, its activation's clamp, whether
    /// every requantisation of the layer is below a half, and whether the short
    /// requantisation gives its exact codes ([`add_stage`] for a two-input add).
    pub fn output_stage(&self, i: usize) -> OutputStage {
        self.stages[i]
    }

    /// [`Int8Export::output_stage`] from the layer's data.
    fn work_out_stage(&self, i: usize) -> OutputStage {
        let out = self.values[i + 1];
        let stage = match &self.arch.layers[i].op {
            Op::Conv2d(c) => OutputStage::new(c.activation, out),
            Op::Linear(l) => OutputStage::new(l.activation, out),
            Op::Add(a) => OutputStage::new(a.activation, out),
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::GlobalAvgPool => {
                OutputStage::plain(out.zero_point)
            }
        };
        match &self.layers[i] {
            Int8Layer::Weighted(w) => stage.with_factors(&w.requantize),
            Int8Layer::Add(a) => {
                let zeros: Vec<i32> = (self.arch.layers[i].inputs.iter())
                    .map(|&v| self.values[v].zero_point)
                    .collect();
                add_stage(
                    stage.with_factors(std::slice::from_ref(&a.output)),
                    a,
                    &zeros,
                )
            }
            Int8Layer::Pool => stage,
        }
    }

    /// An image (CHW, normalised as `arch().normalization` says) as the network's int8 input.
    pub fn quantize_input(&self, image: &[f32]) -> Vec<i8> {
        let q = self.values[0];
        image.iter().map(|x| q.quantize(*x)).collect()
    }

    /// The logits' codes as real values.
    pub fn dequantize_output(&self, logits: &[i8]) -> Vec<f32> {
        let q = self.values[self.values.len() - 1];
        logits.iter().map(|c| q.dequantize(*c)).collect()
    }

    /// Input values per image.
    pub fn input_len(&self) -> usize {
        self.arch.input.len()
    }

    /// Logits per image.
    pub fn output_len(&self) -> usize {
        self.arch.num_classes
    }

    /// Bytes of the weights, biases and requantisation a firmware stores.
    pub fn weight_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| match l {
                Int8Layer::Weighted(w) => w.weight.len() as u64 + 12 * w.bias.len() as u64,
                Int8Layer::Add(a) => 8 * (a.inputs.len() as u64 + 1),
                Int8Layer::Pool => 0,
            })
            .sum()
    }
}

/// Checks the quantization block against the layer list: one entry per value, scales in
/// [`SCALES`], zero points in int8, and pools keeping their input's quantisation.
fn check_values(arch: &Arch) -> Result<Vec<Quantization>, ExportError> {
    let path = Path::new(crate::ARCH_FILE);
    let field = |field: String, reason: String| ExportError::InvalidField {
        path: path.to_path_buf(),
        field,
        reason,
    };
    let Some(spec) = &arch.quantization else {
        return Err(field(
            "quantization".into(),
            "is missing (an int8 export quantises every value)".into(),
        ));
    };
    if spec.values.len() != arch.layers.len() + 1 {
        return Err(field(
            "quantization.values".into(),
            format!(
                "has {} entries; the input and {} layers need {}",
                spec.values.len(),
                arch.layers.len(),
                arch.layers.len() + 1
            ),
        ));
    }
    for (v, q) in spec.values.iter().enumerate() {
        if !SCALES.contains(&q.scale) {
            return Err(field(
                format!("quantization.values[{v}].scale"),
                format!(
                    "is {}, must be finite and within {:e}..={:e}",
                    q.scale,
                    SCALES.start(),
                    SCALES.end()
                ),
            ));
        }
        if !(-128..=127).contains(&q.zero_point) {
            return Err(field(
                format!("quantization.values[{v}].zero_point"),
                format!("is {}, must be in -128..=127", q.zero_point),
            ));
        }
    }
    for (i, layer) in arch.layers.iter().enumerate() {
        if matches!(
            layer.op,
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::GlobalAvgPool
        ) {
            let (input, output) = (spec.values[layer.inputs[0]], spec.values[i + 1]);
            if input != output {
                return Err(ExportError::InvalidLayer {
                    path: path.to_path_buf(),
                    index: i,
                    name: layer.name.clone(),
                    reason: format!(
                        "a pool's output must keep its input's quantisation \
                         ({input:?}), found {output:?}"
                    ),
                });
            }
        }
    }
    Ok(spec.values.iter().map(|v| Quantization::from(*v)).collect())
}

/// Checks every layer's data: lengths, code ranges, requantisations that agree with the
/// scales, and accumulators and pooling sums that cannot overflow `i32`.
fn check_layers(
    path: &Path,
    arch: &Arch,
    values: &[Quantization],
    layers: &[Int8Layer],
) -> Result<(), ExportError> {
    let bad = |name: String, reason: String| ExportError::InvalidTensor {
        path: path.to_path_buf(),
        name,
        reason,
    };
    if layers.len() != arch.layers.len() {
        return Err(bad(
            "*".into(),
            format!(
                "{} layers of int8 data for {} layers",
                layers.len(),
                arch.layers.len()
            ),
        ));
    }
    for (i, (layer, data)) in arch.layers.iter().zip(layers).enumerate() {
        let name = &layer.name;
        let in_shape = match layer.inputs[0] {
            0 => arch.input,
            v => arch.layers[v - 1].output,
        };
        match (&layer.op, data) {
            (Op::Conv2d(_) | Op::Linear(_), Int8Layer::Weighted(w)) => {
                let (outs, per_output) = match &layer.op {
                    Op::Conv2d(c) => (
                        c.out_channels,
                        c.in_channels / c.groups * c.kernel[0] * c.kernel[1],
                    ),
                    Op::Linear(l) => (l.out_features, l.in_features),
                    _ => unreachable!(),
                };
                let len = |t: &str, found: usize, want: usize| {
                    if found == want {
                        Ok(())
                    } else {
                        Err(bad(
                            format!("{name}.{t}"),
                            format!("holds {found} values, the layer needs {want}"),
                        ))
                    }
                };
                len("weight", w.weight.len(), outs * per_output)?;
                len("bias", w.bias.len(), outs)?;
                len("weight_scale", w.weight_scale.len(), outs)?;
                len("multiplier", w.requantize.len(), outs)?;
                if let Some(at) = w.weight.iter().position(|c| *c == i8::MIN) {
                    return Err(bad(
                        format!("{name}.weight"),
                        format!("holds -128 at index {at}; weights are symmetric, in -127..=127"),
                    ));
                }
                let (x, y) = (values[layer.inputs[0]], values[i + 1]);
                for oc in 0..outs {
                    let s = w.weight_scale[oc];
                    if !SCALES.contains(&s) {
                        return Err(bad(
                            format!("{name}.weight_scale"),
                            format!("holds {s} at index {oc}, outside {SCALES:?}"),
                        ));
                    }
                    let real = x.scale as f64 * s as f64 / y.scale as f64;
                    check_requantize(&bad, name, oc, w.requantize[oc], real)?;
                    let max_code = w.weight[oc * per_output..(oc + 1) * per_output]
                        .iter()
                        .map(|c| (*c as i64).abs())
                        .max()
                        .unwrap_or(0);
                    let worst = (w.bias[oc] as i64).abs() + per_output as i64 * 255 * max_code;
                    if worst > i32::MAX as i64 {
                        return Err(bad(
                            format!("{name}.bias"),
                            format!(
                                "output channel {oc}'s accumulator can reach {worst} \
                                 (bias {} plus {per_output} products of up to 255 x {max_code}), \
                                 beyond i32; quantise the layer with a larger weight scale",
                                w.bias[oc]
                            ),
                        ));
                    }
                }
            }
            (Op::Add(_), Int8Layer::Add(a)) => {
                let n = layer.inputs.len();
                if a.inputs.len() != n {
                    return Err(bad(
                        format!("{name}.multiplier"),
                        format!("holds {} rescales for {n} inputs", a.inputs.len()),
                    ));
                }
                let largest = layer
                    .inputs
                    .iter()
                    .map(|v| values[*v].scale as f64)
                    .fold(0.0, f64::max);
                for (k, v) in layer.inputs.iter().enumerate() {
                    let r = a.inputs[k];
                    // At most 0.5, so that the shifted sum cannot overflow.
                    if !(r.shift < 0 || (r.shift == 0 && r.multiplier == 1 << 30)) {
                        return Err(bad(
                            format!("{name}.multiplier"),
                            format!("input {k}'s rescale {} is above 0.5", r.real()),
                        ));
                    }
                    check_requantize(&bad, name, k, r, values[*v].scale as f64 / (2.0 * largest))?;
                }
                let shift = (1u64 << add_left_shift(n)) as f64;
                let real = 2.0 * largest / (shift * values[i + 1].scale as f64);
                check_requantize(&bad, name, n, a.output, real)?;
            }
            (Op::MaxPool2d(p) | Op::AvgPool2d(p), Int8Layer::Pool) => {
                if p.kernel[0] * p.kernel[1] > MAX_POOL_CELLS {
                    return Err(bad(
                        name.clone(),
                        format!("a pooling window of more than {MAX_POOL_CELLS} cells"),
                    ));
                }
            }
            (Op::GlobalAvgPool, Int8Layer::Pool) => {
                if in_shape.plane() > MAX_POOL_CELLS {
                    return Err(bad(
                        name.clone(),
                        format!("a global pool over more than {MAX_POOL_CELLS} cells"),
                    ));
                }
            }
            (op, _) => {
                return Err(bad(
                    name.clone(),
                    format!("layer {i} is {}, but its int8 data is not", op.name()),
                ));
            }
        }
    }
    Ok(())
}

/// Checks that a stored requantisation is well formed and stands for `real`.
fn check_requantize(
    bad: &impl Fn(String, String) -> ExportError,
    layer: &str,
    index: usize,
    r: Requantize,
    real: f64,
) -> Result<(), ExportError> {
    if r.multiplier < 1 << 30 || !dnal_kernels::int8::SHIFTS.contains(&r.shift) {
        return Err(bad(
            format!("{layer}.multiplier"),
            format!(
                "entry {index} ({} with shift {}) is not a Q31 mantissa in [2^30, 2^31) \
                 with a shift in {:?}",
                r.multiplier,
                r.shift,
                dnal_kernels::int8::SHIFTS
            ),
        ));
    }
    let rel = (r.real() - real).abs() / real;
    if rel.is_nan() || rel > REQUANTIZE_TOLERANCE {
        return Err(bad(
            format!("{layer}.multiplier"),
            format!(
                "entry {index} stands for {}, but the scales give {real} (relative error \
                 {rel:.2e} > {REQUANTIZE_TOLERANCE:e})",
                r.real()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnal_kernels::Activation;

    fn add(scales: [f64; 2], output_scale: f64) -> AddRescale {
        let max = scales[0].max(scales[1]);
        let shift = add_left_shift(2);
        AddRescale {
            inputs: scales
                .map(|s| Requantize::from_real(s / (2.0 * max)).unwrap())
                .to_vec(),
            output: Requantize::from_real(2.0 * max / ((1u64 << shift) as f64 * output_scale))
                .unwrap(),
        }
    }

    #[test]
    fn an_add_is_short_where_every_pair_of_codes_agrees() {
        let stage = |zero_point| {
            OutputStage::new(
                Activation::None,
                Quantization {
                    scale: 1.0,
                    zero_point,
                },
            )
        };
        // A residual add of inputs centred on 0: its output factor (about 0.83 * 2^-22) is
        // past the shifts short for any accumulator, but its sums stay within 2^30.
        let usual = add([0.05, 0.03], 0.06);
        assert_eq!(usual.output.shift, -22);
        let base = stage(-5).with_factors(std::slice::from_ref(&usual.output));
        assert!(base.factors_below_half && !base.factors_short);
        assert!(add_stage(base, &usual, &[0, 3]).factors_short);
        // Equal scales and inputs at zero point -128: two codes of 127 sum to 255 * 2^23,
        // where doubling saturates; at a factor of 2^-23 the exact code is 255 - 128 = 127,
        // the short way's 0. Not short.
        let edge = AddRescale {
            inputs: vec![Requantize::from_real(0.5).unwrap(); 2],
            output: Requantize {
                multiplier: 1 << 30,
                shift: -22,
            },
        };
        let base = stage(-128).with_factors(std::slice::from_ref(&edge.output));
        assert!(!add_stage(base, &edge, &[-128, -128]).factors_short);
        assert!(add_stage(base, &edge, &[0, 0]).factors_short);
        // Three inputs are not checked.
        let three = AddRescale {
            inputs: vec![Requantize::from_real(0.5).unwrap(); 3],
            output: usual.output,
        };
        assert!(!add_stage(base, &three, &[0, 0, 0]).factors_short);
    }
}
