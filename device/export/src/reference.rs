//! A naive forward pass straight from the export (f64 accumulation, PyTorch weight order), as
//! the ground truth that kernels and generated firmware are tested against.

use dnal_kernels::Shape3;

use crate::{Export, Op};

/// Runs one image (CHW, `export.input_len()` values) through the network; returns the logits.
///
/// Panics if `input` has the wrong length.
pub fn reference_forward(export: &Export, input: &[f32]) -> Vec<f32> {
    reference_values(export, input).pop().unwrap_or_default()
}

/// Every value of one image's forward pass: the input (value 0), then each layer's output
/// (value `i + 1`); what int8 calibration observes.
///
/// Panics if `input` has the wrong length.
pub fn reference_values(export: &Export, input: &[f32]) -> Vec<Vec<f32>> {
    let arch = export.arch();
    assert_eq!(
        input.len(),
        arch.input.len(),
        "reference_forward input length"
    );
    let mut values: Vec<Vec<f32>> = vec![input.to_vec()];
    let mut shapes: Vec<Shape3> = vec![arch.input];
    for layer in &arch.layers {
        let x = &values[layer.inputs[0]];
        let s = shapes[layer.inputs[0]];
        let o = layer.output;
        let out: Vec<f32> = match &layer.op {
            Op::Conv2d(c) => {
                let (w, b) = export
                    .weight_and_bias(&layer.name)
                    .expect("validated export");
                let icg = c.in_channels / c.groups;
                let ocg = c.out_channels / c.groups;
                let [kh, kw] = c.kernel;
                let mut out = vec![0.0; o.len()];
                for oc in 0..o.channels {
                    let g = oc / ocg;
                    for oy in 0..o.height {
                        for ox in 0..o.width {
                            let mut acc = b.data[oc] as f64;
                            for i in 0..icg {
                                let ic = g * icg + i;
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let Some((y, xx)) =
                                            tap(s, c.stride, c.padding, oy, ox, ky, kx)
                                        else {
                                            continue;
                                        };
                                        acc += x[(ic * s.height + y) * s.width + xx] as f64
                                            * w.data[((oc * icg + i) * kh + ky) * kw + kx] as f64;
                                    }
                                }
                            }
                            out[(oc * o.height + oy) * o.width + ox] =
                                c.activation.apply(acc as f32);
                        }
                    }
                }
                out
            }
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                let max = matches!(layer.op, Op::MaxPool2d(_));
                let mut out = vec![0.0; o.len()];
                for c in 0..o.channels {
                    for oy in 0..o.height {
                        for ox in 0..o.width {
                            let mut m = f32::NEG_INFINITY;
                            let mut sum = 0.0f64;
                            for ky in 0..p.kernel[0] {
                                for kx in 0..p.kernel[1] {
                                    if let Some((y, xx)) =
                                        tap(s, p.stride, p.padding, oy, ox, ky, kx)
                                    {
                                        let v = x[(c * s.height + y) * s.width + xx];
                                        m = m.max(v);
                                        sum += v as f64;
                                    }
                                }
                            }
                            out[(c * o.height + oy) * o.width + ox] = if max {
                                m
                            } else {
                                (sum / (p.kernel[0] * p.kernel[1]) as f64) as f32
                            };
                        }
                    }
                }
                out
            }
            Op::GlobalAvgPool => x
                .chunks(s.plane())
                .map(|p| (p.iter().map(|v| *v as f64).sum::<f64>() / s.plane() as f64) as f32)
                .collect(),
            Op::Add(a) => (0..o.len())
                .map(|i| {
                    let sum: f64 = layer.inputs.iter().map(|&v| values[v][i] as f64).sum();
                    a.activation.apply(sum as f32)
                })
                .collect(),
            Op::Linear(l) => {
                let (w, b) = export
                    .weight_and_bias(&layer.name)
                    .expect("validated export");
                (0..l.out_features)
                    .map(|r| {
                        let row = &w.data[r * l.in_features..(r + 1) * l.in_features];
                        let acc: f64 = row.iter().zip(x).map(|(w, x)| *w as f64 * *x as f64).sum();
                        l.activation.apply((acc + b.data[r] as f64) as f32)
                    })
                    .collect()
            }
        };
        values.push(out);
        shapes.push(o);
    }
    values
}

/// The input coordinate of kernel tap `(ky, kx)` of output pixel `(oy, ox)`, if not padding.
pub(crate) fn tap(
    s: Shape3,
    stride: [usize; 2],
    padding: [usize; 2],
    oy: usize,
    ox: usize,
    ky: usize,
    kx: usize,
) -> Option<(usize, usize)> {
    let y = (oy * stride[0] + ky).checked_sub(padding[0])?;
    let x = (ox * stride[1] + kx).checked_sub(padding[1])?;
    (y < s.height && x < s.width).then_some((y, x))
}
