//! Post-training quantisation: an f32 export and the ranges its values took on calibration
//! images become an int8 export.
//!
//! - Activations: per value, the observed `[min, max]` widened to hold 0, split into 255
//!   steps (`scale = (max - min) / 255`), with the zero point the code of real 0; pools keep
//!   their input's quantisation.
//! - Weights: per output channel, symmetric: `scale = max|w| / 127`. Where the bias would not
//!   fit its `i32` accumulator at that scale (a nearly dead channel with a large bias), the
//!   channel's scale grows until it does; where the requantisation would fall under what a
//!   [`Requantize`] holds (a dead channel: weight decay left a MobileNetV2 projection channel
//!   at weights of about 1e-11 after 80 finetuning epochs), it grows to the smallest that
//!   holds, and the weights round to 0, as they nearly are.
//! - Requantisation: the ratio of the scales as a [`Requantize`].

use dnal_kernels::int8::{Quantization, Requantize, add_left_shift, round_half_away};

use super::{
    AddRescale, Int8Export, Int8Layer, Int8Weights, QuantizationSpec, SCALES, ValueQuantization,
};
use crate::{Export, ExportError, INT8_VERSION, Op, Precision, reference_values};

/// The range each value of a network took over some images.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueRanges {
    min: Vec<f32>,
    max: Vec<f32>,
    images: usize,
}

impl ValueRanges {
    /// Ranges for `values` values (the input and one per layer), nothing observed yet.
    pub fn new(values: usize) -> Self {
        ValueRanges {
            min: vec![f32::INFINITY; values],
            max: vec![f32::NEG_INFINITY; values],
            images: 0,
        }
    }

    /// The ranges every value of `export` takes over `images`, by the f32 reference forward
    /// pass ([`reference_values`]): calibration without a training framework, as the
    /// firmware's tests, tables and benchmarks of random networks need it.
    ///
    /// Panics if an image has the wrong length for `export`.
    pub fn of_images<I>(export: &Export, images: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<[f32]>,
    {
        let mut ranges = ValueRanges::new(export.arch().layers.len() + 1);
        for image in images {
            ranges.observe(&reference_values(export, image.as_ref()));
        }
        ranges
    }

    /// Widens the ranges by one image's values (as [`reference_values`] returns them).
    pub fn observe(&mut self, values: &[Vec<f32>]) {
        assert_eq!(values.len(), self.min.len(), "one range per value");
        for ((lo, hi), v) in self.min.iter_mut().zip(&mut self.max).zip(values) {
            for x in v.iter().filter(|x| x.is_finite()) {
                *lo = lo.min(*x);
                *hi = hi.max(*x);
            }
        }
        self.images += 1;
    }

    /// Widens the ranges by the extremes `(min, max)` of every value over `images` images
    /// (what a batched forward pass reports).
    pub fn observe_extremes(&mut self, extremes: &[(f32, f32)], images: usize) {
        assert_eq!(extremes.len(), self.min.len(), "one range per value");
        for (v, (lo, hi)) in extremes.iter().enumerate() {
            if lo.is_finite() {
                self.min[v] = self.min[v].min(*lo);
            }
            if hi.is_finite() {
                self.max[v] = self.max[v].max(*hi);
            }
        }
        self.images += images;
    }

    /// Joins the ranges seen on other images (for calibration in parallel).
    pub fn merge(&mut self, other: &ValueRanges) {
        assert_eq!(other.min.len(), self.min.len(), "one range per value");
        for i in 0..self.min.len() {
            self.min[i] = self.min[i].min(other.min[i]);
            self.max[i] = self.max[i].max(other.max[i]);
        }
        self.images += other.images;
    }

    /// Images observed.
    pub fn images(&self) -> usize {
        self.images
    }

    /// `(min, max)` of value `v` (infinite ends if nothing was observed).
    pub fn range(&self, v: usize) -> (f32, f32) {
        (self.min[v], self.max[v])
    }
}

/// The quantisation of a value seen in `[min, max]`: the range widened to hold 0, 255 steps,
/// real 0 exactly representable. An empty or single-point range gets steps of 1/255.
pub fn quantization_of_range(min: f32, max: f32) -> Quantization {
    let lo = if min.is_finite() { min.min(0.0) } else { 0.0 };
    let hi = if max.is_finite() { max.max(0.0) } else { 0.0 };
    let span = hi - lo;
    let scale = if span > 0.0 && span.is_finite() {
        (span / 255.0).clamp(*SCALES.start(), *SCALES.end())
    } else {
        1.0 / 255.0
    };
    let zero_point = round_half_away(-128.0 - lo / scale).clamp(-128, 127);
    Quantization { scale, zero_point }
}

/// Why an f32 export could not be quantised.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("calibration observed {found} values per image, the export has {expected}")]
    Ranges { found: usize, expected: usize },
    #[error("calibration observed no image: give at least one calibration image")]
    NoImages,
    #[error(
        "layer {layer}: {what} is {real:e}, which no int8 requantisation (2^-31 .. 2^31) \
         can hold; the layer's weights or activations span too many orders of magnitude"
    )]
    Factor {
        layer: String,
        what: String,
        real: f64,
    },
    #[error(
        "layer {layer}: {terms} products per output could overflow the int8 kernels' i32 \
         accumulator (at most {max}); int8 cannot run this layer"
    )]
    TooManyTerms {
        layer: String,
        terms: usize,
        max: usize,
    },
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// Products one accumulator may sum and still leave room for a bias: `255 * 127` each.
const MAX_TERMS: usize = (i32::MAX as usize / 2) / (255 * 127);

/// The smallest requantisation a channel gets: `2^-31`, within what [`Requantize`] holds
/// (down to `2^-32`). At it, a weight under half a step moves the output by under
/// `255 * 2^-32` of an output step.
const MIN_REQUANTIZE: f64 = 1.0 / (1u64 << 31) as f64;

/// Quantises `export` with the value ranges of `ranges`; `calibration` is recorded in
/// `arch.json` as is.
pub fn quantize(
    export: &Export,
    ranges: &ValueRanges,
    calibration: serde_json::Value,
) -> Result<Int8Export, QuantizeError> {
    let arch = export.arch();
    if ranges.min.len() != arch.layers.len() + 1 {
        return Err(QuantizeError::Ranges {
            found: ranges.min.len(),
            expected: arch.layers.len() + 1,
        });
    }
    if ranges.images == 0 {
        return Err(QuantizeError::NoImages);
    }
    let mut values: Vec<Quantization> = vec![{
        let (lo, hi) = ranges.range(0);
        quantization_of_range(lo, hi)
    }];
    let mut layers = Vec::with_capacity(arch.layers.len());
    for (i, layer) in arch.layers.iter().enumerate() {
        let x = values[layer.inputs[0]];
        let (lo, hi) = ranges.range(i + 1);
        let y = match layer.op {
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::GlobalAvgPool => x,
            _ => quantization_of_range(lo, hi),
        };
        let factor = |what: String, real: f64| {
            Requantize::from_real(real).ok_or_else(|| QuantizeError::Factor {
                layer: layer.name.clone(),
                what,
                real,
            })
        };
        let data = match &layer.op {
            Op::Conv2d(_) | Op::Linear(_) => {
                let (w, b) = export
                    .weight_and_bias(&layer.name)
                    .expect("validated export");
                let outs = b.data.len();
                let per_output = w.data.len() / outs;
                if per_output > MAX_TERMS {
                    return Err(QuantizeError::TooManyTerms {
                        layer: layer.name.clone(),
                        terms: per_output,
                        max: MAX_TERMS,
                    });
                }
                // What the bias may use of the accumulator: the products take the rest.
                let bias_room = (i32::MAX as i64 - per_output as i64 * 255 * 127) as f64;
                let mut q = Int8Weights {
                    weight: Vec::with_capacity(w.data.len()),
                    bias: Vec::with_capacity(outs),
                    weight_scale: Vec::with_capacity(outs),
                    requantize: Vec::with_capacity(outs),
                };
                for oc in 0..outs {
                    let row = &w.data[oc * per_output..(oc + 1) * per_output];
                    let max_abs = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let for_bias = b.data[oc].abs() as f64 / (x.scale as f64 * bias_room);
                    let for_requantize = MIN_REQUANTIZE * y.scale as f64 / x.scale as f64;
                    let scale = (max_abs as f64 / 127.0)
                        .max(for_bias)
                        .max(for_requantize)
                        .clamp(*SCALES.start() as f64, *SCALES.end() as f64)
                        as f32;
                    // The bound must hold for the scale as stored (f32).
                    let scale = if (b.data[oc].abs() as f64 / (x.scale as f64 * scale as f64))
                        > bias_room
                    {
                        scale * (1.0 + f32::EPSILON * 4.0)
                    } else {
                        scale
                    };
                    q.weight.extend(
                        row.iter()
                            .map(|v| round_half_away(v / scale).clamp(-127, 127) as i8),
                    );
                    let bias = (b.data[oc] as f64 / (x.scale as f64 * scale as f64)).round();
                    q.bias.push(bias.clamp(-bias_room, bias_room) as i32);
                    q.weight_scale.push(scale);
                    q.requantize.push(factor(
                        format!("output channel {oc}'s requantisation"),
                        x.scale as f64 * scale as f64 / y.scale as f64,
                    )?);
                }
                Int8Layer::Weighted(q)
            }
            Op::Add(_) => {
                let scales: Vec<f64> = layer
                    .inputs
                    .iter()
                    .map(|v| values[*v].scale as f64)
                    .collect();
                let largest = scales.iter().copied().fold(0.0, f64::max);
                let inputs = scales
                    .iter()
                    .enumerate()
                    .map(|(k, s)| factor(format!("input {k}'s rescale"), s / (2.0 * largest)))
                    .collect::<Result<Vec<_>, _>>()?;
                let shift = (1u64 << add_left_shift(layer.inputs.len())) as f64;
                let output = factor(
                    "the output's rescale".into(),
                    2.0 * largest / (shift * y.scale as f64),
                )?;
                Int8Layer::Add(AddRescale { inputs, output })
            }
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::GlobalAvgPool => Int8Layer::Pool,
        };
        layers.push(data);
        values.push(y);
    }
    let mut arch8 = arch.clone();
    arch8.version = INT8_VERSION;
    arch8.precision = Precision::Int8;
    arch8.quantization = Some(QuantizationSpec {
        values: values.iter().map(|q| ValueQuantization::from(*q)).collect(),
        calibration,
    });
    Ok(Int8Export::new(arch8, layers)?)
}
