//! The integer reference: what an int8 export computes, in plain loops that follow
//! docs/export-format.md word for word. dnal-kernels' int8 kernels and the firmware built from
//! them must agree with it bit for bit; [`forward_with_kernels`] runs those kernels on the
//! host (what `dnal eval` uses on an int8 export).

use dnal_kernels::int8::{self as kernels, Requantize, add_left_shift};
use dnal_kernels::{Conv2dParams, LinearParams, Pool2dParams, Shape3};

use super::{Int8Export, Int8Layer};
use crate::Op;
use crate::reference::tap;

/// Runs one quantised image (CHW, `export.input_len()` codes) through the network, as the
/// format defines it; returns the logits' codes.
///
/// Panics if `input` has the wrong length.
pub fn reference_forward(export: &Int8Export, input: &[i8]) -> Vec<i8> {
    let arch = export.arch();
    assert_eq!(input.len(), arch.input.len(), "int8 reference input length");
    let mut values: Vec<Vec<i8>> = vec![input.to_vec()];
    let mut shapes: Vec<Shape3> = vec![arch.input];
    for (i, (layer, data)) in arch.layers.iter().zip(export.layers()).enumerate() {
        let (x, s, o) = (
            &values[layer.inputs[0]],
            shapes[layer.inputs[0]],
            layer.output,
        );
        let x_zero = export.value(layer.inputs[0]).zero_point;
        let stage = export.output_stage(i);
        let requantized =
            |r: Requantize, acc: i32| r.to_i8(acc, stage.zero_point, stage.min, stage.max);
        let out: Vec<i8> = match (&layer.op, data) {
            (Op::Conv2d(c), Int8Layer::Weighted(w)) => {
                let icg = c.in_channels / c.groups;
                let ocg = c.out_channels / c.groups;
                let [kh, kw] = c.kernel;
                let mut out = vec![0; o.len()];
                for oc in 0..o.channels {
                    let g = oc / ocg;
                    for oy in 0..o.height {
                        for ox in 0..o.width {
                            let mut acc = w.bias[oc];
                            for i in 0..icg {
                                let ic = g * icg + i;
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        // Padding is real zero: `x - x_zero` is 0 there.
                                        let Some((y, xx)) =
                                            tap(s, c.stride, c.padding, oy, ox, ky, kx)
                                        else {
                                            continue;
                                        };
                                        let code = x[(ic * s.height + y) * s.width + xx];
                                        let weight = w.weight[((oc * icg + i) * kh + ky) * kw + kx];
                                        acc += (code as i32 - x_zero) * weight as i32;
                                    }
                                }
                            }
                            out[(oc * o.height + oy) * o.width + ox] =
                                requantized(w.requantize[oc], acc);
                        }
                    }
                }
                out
            }
            (Op::Linear(l), Int8Layer::Weighted(w)) => (0..l.out_features)
                .map(|r| {
                    let row = &w.weight[r * l.in_features..(r + 1) * l.in_features];
                    let mut acc = w.bias[r];
                    for (code, weight) in x.iter().zip(row) {
                        acc += (*code as i32 - x_zero) * *weight as i32;
                    }
                    requantized(w.requantize[r], acc)
                })
                .collect(),
            (Op::MaxPool2d(p) | Op::AvgPool2d(p), Int8Layer::Pool) => {
                let max = matches!(layer.op, Op::MaxPool2d(_));
                let mut out = vec![0; o.len()];
                for c in 0..o.channels {
                    for oy in 0..o.height {
                        for ox in 0..o.width {
                            let mut m = i8::MIN;
                            let mut sum = 0i32;
                            for ky in 0..p.kernel[0] {
                                for kx in 0..p.kernel[1] {
                                    if let Some((y, xx)) =
                                        tap(s, p.stride, p.padding, oy, ox, ky, kx)
                                    {
                                        let v = x[(c * s.height + y) * s.width + xx];
                                        m = m.max(v);
                                        sum += v as i32 - x_zero;
                                    }
                                }
                            }
                            out[(c * o.height + oy) * o.width + ox] = if max {
                                m
                            } else {
                                mean(sum, (p.kernel[0] * p.kernel[1]) as i32, x_zero)
                            };
                        }
                    }
                }
                out
            }
            (Op::GlobalAvgPool, Int8Layer::Pool) => x
                .chunks(s.plane())
                .map(|p| {
                    let sum: i32 = p.iter().map(|v| *v as i32 - x_zero).sum();
                    mean(sum, s.plane() as i32, x_zero)
                })
                .collect(),
            (Op::Add(_), Int8Layer::Add(a)) => {
                let shift = add_left_shift(layer.inputs.len());
                (0..o.len())
                    .map(|e| {
                        let sum: i32 = layer
                            .inputs
                            .iter()
                            .zip(&a.inputs)
                            .map(|(v, r)| {
                                let z = export.value(*v).zero_point;
                                r.apply((values[*v][e] as i32 - z) * (1 << shift))
                            })
                            .sum();
                        requantized(a.output, sum)
                    })
                    .collect()
            }
            (op, _) => unreachable!("validated int8 data for {}", op.name()),
        };
        values.push(out);
        shapes.push(o);
    }
    values.pop().unwrap_or_default()
}

/// `zero + sum / count`, the quotient rounded half away from zero, clamped to int8.
fn mean(sum: i32, count: i32, zero: i32) -> i8 {
    let (sum, count) = (sum as i64, count as i64);
    let q = (sum.abs() * 2 + count) / (2 * count);
    (sum.signum() * q + zero as i64).clamp(-128, 127) as i8
}

/// Runs one quantised image through dnal-kernels' portable int8 kernels, one call per layer;
/// returns the logits' codes. Bit-exact with [`reference_forward`], and much faster.
///
/// Panics if `input` has the wrong length.
pub fn forward_with_kernels(export: &Int8Export, input: &[i8]) -> Vec<i8> {
    let arch = export.arch();
    assert_eq!(input.len(), arch.input.len(), "int8 kernels input length");
    let mut values: Vec<Vec<i8>> = vec![input.to_vec()];
    let mut shapes: Vec<Shape3> = vec![arch.input];
    for (i, (layer, data)) in arch.layers.iter().zip(export.layers()).enumerate() {
        let (x, s) = (&values[layer.inputs[0]], shapes[layer.inputs[0]]);
        let x_zero = export.value(layer.inputs[0]).zero_point;
        let stage = export.output_stage(i);
        let mut out = vec![0i8; layer.output.len()];
        match (&layer.op, data) {
            (Op::Conv2d(c), Int8Layer::Weighted(w)) => {
                let params = Conv2dParams::new(
                    s,
                    c.out_channels,
                    c.kernel,
                    c.stride,
                    c.padding,
                    c.activation,
                )
                .expect("validated conv");
                let run = if c.is_depthwise() {
                    kernels::depthwise_conv2d
                } else {
                    kernels::conv2d
                };
                run(
                    &params,
                    x_zero,
                    &w.weight,
                    &w.bias,
                    &w.requantize,
                    stage,
                    x,
                    &mut out,
                );
            }
            (Op::Linear(l), Int8Layer::Weighted(w)) => {
                let params = LinearParams::new(l.in_features, l.out_features, l.activation)
                    .expect("validated linear");
                kernels::linear(
                    &params,
                    x_zero,
                    &w.weight,
                    &w.bias,
                    &w.requantize,
                    stage,
                    x,
                    &mut out,
                );
            }
            (Op::MaxPool2d(p), Int8Layer::Pool) => {
                let params =
                    Pool2dParams::new(s, p.kernel, p.stride, p.padding).expect("validated pool");
                kernels::max_pool2d(&params, x, &mut out);
            }
            (Op::AvgPool2d(p), Int8Layer::Pool) => {
                let params =
                    Pool2dParams::new(s, p.kernel, p.stride, p.padding).expect("validated pool");
                kernels::avg_pool2d(&params, x_zero, x, &mut out);
            }
            (Op::GlobalAvgPool, Int8Layer::Pool) => {
                kernels::global_avg_pool(s, x_zero, x, &mut out);
            }
            (Op::Add(_), Int8Layer::Add(a)) => {
                let inputs: Vec<&[i8]> = layer.inputs.iter().map(|v| &values[*v][..]).collect();
                let zeros: Vec<i32> = layer
                    .inputs
                    .iter()
                    .map(|v| export.value(*v).zero_point)
                    .collect();
                kernels::add(&inputs, &zeros, &a.inputs, a.output, stage, &mut out);
            }
            (op, _) => unreachable!("validated int8 data for {}", op.name()),
        }
        values.push(out);
        shapes.push(layer.output);
    }
    values.pop().unwrap_or_default()
}
