//! int8 exports: quantisation of random f32 networks, the integer reference against the
//! portable kernels (bit for bit), round trips through a folder, and the reader's refusals.

use std::collections::BTreeMap;

use dnal_export::int8::{
    Int8Export, Int8Layer, ValueRanges, forward_with_kernels, quantize, reference_forward,
};
use dnal_export::{
    Activation, AddSpec, Arch, Conv2dSpec, Export, ExportError, Layer, LinearSpec, Op, PoolSpec,
    Precision, Shape3, Tensor, reference_forward as f32_forward, reference_values,
};

/// xorshift32.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
    fn activation(&mut self) -> Activation {
        [Activation::None, Activation::Relu, Activation::Relu6][self.below(3)]
    }
}

fn conv(c_in: usize, c_out: usize, k: usize, s: usize, p: usize, dw: bool, a: Activation) -> Op {
    Op::Conv2d(Conv2dSpec {
        in_channels: c_in,
        out_channels: c_out,
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
        groups: if dw { c_in } else { 1 },
        activation: a,
        kept_channels: Vec::new(),
    })
}

fn pool(max: bool, k: usize, s: usize, p: usize) -> Op {
    let spec = PoolSpec {
        kernel: [k, k],
        stride: [s, s],
        padding: [p, p],
    };
    if max {
        Op::MaxPool2d(spec)
    } else {
        Op::AvgPool2d(spec)
    }
}

/// A network with every op, random odd channel counts, kernels, strides, paddings and
/// activations, and random weights.
fn random_export(seed: u32) -> Export {
    random_export_edited(seed, |_, _, _| {})
}

/// [`random_export`] with each weighted layer's weights and biases passed through `edit`
/// (its name, weights, biases) first.
fn random_export_edited(seed: u32, edit: impl Fn(&str, &mut [f32], &mut [f32])) -> Export {
    let mut rng = Rng(seed.wrapping_mul(2_654_435_761).max(1));
    let c1 = 3 + 2 * rng.below(4);
    let c2 = 1 + 2 * rng.below(5);
    let k1 = [1, 3, 5][rng.below(3)];
    let (s1, p1) = (1 + rng.below(2), rng.below(k1 / 2 + 1));
    let kd = [3, 5][rng.below(2)];
    let kp = 2 + rng.below(2);
    let side = 9 + rng.below(8);
    // Every third network wide enough that a row spans several of the kernels' row chunks.
    let width = if seed.is_multiple_of(3) {
        65 + rng.below(80)
    } else {
        side
    };
    let layers = vec![
        Layer::new(
            "conv1",
            vec![0],
            conv(3, c1, k1, s1, p1, false, rng.activation()),
        ),
        Layer::new(
            "dw",
            vec![1],
            conv(c1, c1, kd, 1, kd / 2, true, rng.activation()),
        ),
        Layer::new(
            "pw",
            vec![2],
            conv(c1, c1, 1, 1, 0, false, Activation::None),
        ),
        Layer::new(
            "res",
            vec![1, 3, 2],
            Op::Add(AddSpec {
                activation: rng.activation(),
            }),
        ),
        Layer::new(
            "pool",
            vec![4],
            pool(true, kp, 1 + rng.below(2), rng.below(kp / 2 + 1)),
        ),
        Layer::new(
            "conv2",
            vec![5],
            conv(c1, c2, 3, 2, 1, false, rng.activation()),
        ),
        Layer::new("avg", vec![6], pool(false, 3, 1, 1)),
        Layer::new("gap", vec![7], Op::GlobalAvgPool),
        Layer::new(
            "fc",
            vec![8],
            Op::Linear(LinearSpec {
                in_features: c2,
                out_features: 7,
                activation: Activation::None,
            }),
        ),
    ];
    let mut arch = Arch::new("random", Shape3::new(3, side, width), 7, layers);
    let summary = arch.complete().expect("a valid random network");
    let mut tensors = BTreeMap::new();
    for layer in &summary.layers {
        if let Some([w, b]) = &layer.tensor_shapes {
            let n: usize = w.iter().product();
            let fan_in = (n / b[0]) as f32;
            let scale = 1.5 / fan_in.sqrt();
            let mut weights: Vec<f32> = (0..n).map(|_| rng.unit() * scale).collect();
            let mut bias: Vec<f32> = (0..b[0]).map(|_| rng.unit() * 0.2).collect();
            edit(&layer.name, &mut weights, &mut bias);
            tensors.insert(
                format!("{}.weight", layer.name),
                Tensor::new(w.clone(), weights),
            );
            tensors.insert(format!("{}.bias", layer.name), Tensor::new(b.clone(), bias));
        }
    }
    Export::new(arch, tensors).expect("a valid random export")
}

fn images(rng: &mut Rng, export: &Export, n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| (0..export.input_len()).map(|_| rng.unit() * 2.0).collect())
        .collect()
}

fn calibrated(export: &Export, seed: u32) -> Int8Export {
    let mut rng = Rng(seed | 1);
    let ranges = ValueRanges::of_images(export, images(&mut rng, export, 24));
    quantize(export, &ranges, serde_json::json!({"images": 24})).expect("quantisable")
}

#[test]
fn the_ranges_of_some_images_span_each_value_over_them() {
    let export = random_export(3);
    let images = images(&mut Rng(7), &export, 5);
    let ranges = ValueRanges::of_images(&export, &images);
    assert_eq!(ranges.images(), 5);
    let values: Vec<_> = images
        .iter()
        .map(|x| reference_values(&export, x))
        .collect();
    for v in 0..=export.arch().layers.len() {
        let (lo, hi) = values
            .iter()
            .flat_map(|image| image[v].iter().copied())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            });
        assert!(lo < hi, "value {v} varies over five random images");
        assert_eq!(ranges.range(v), (lo, hi), "value {v}");
    }
}

#[test]
fn the_kernels_agree_with_the_integer_reference_bit_for_bit() {
    let mut rng = Rng(99);
    for seed in 1..=24 {
        let export = random_export(seed);
        let int8 = calibrated(&export, seed);
        let n = int8.input_len();
        let mut inputs: Vec<Vec<i8>> = images(&mut rng, &export, 6)
            .iter()
            .map(|x| int8.quantize_input(x))
            .collect();
        // The saturation edges: every code at either end, and alternating ends.
        inputs.push(vec![i8::MIN; n]);
        inputs.push(vec![i8::MAX; n]);
        inputs.push(
            (0..n)
                .map(|i| if i % 2 == 0 { i8::MIN } else { i8::MAX })
                .collect(),
        );
        for (k, input) in inputs.iter().enumerate() {
            assert_eq!(
                forward_with_kernels(&int8, input),
                reference_forward(&int8, input),
                "seed {seed}, input {k}: {:?}",
                export.arch().layers
            );
        }
    }
}

/// The int8 network's largest logit error on `image` against the f32 one's, relative to the
/// f32 logits' largest magnitude.
fn logit_error(export: &Export, int8: &Int8Export, image: &[f32]) -> f32 {
    let want = f32_forward(export, image);
    let got = int8.dequantize_output(&reference_forward(int8, &int8.quantize_input(image)));
    let span = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
    want.iter()
        .zip(&got)
        .fold(0.0f32, |m, (w, g)| m.max((w - g).abs()))
        / span
}

#[test]
fn the_int8_network_follows_the_f32_one() {
    let (mut worst, mut sum, mut count) = (0.0f32, 0.0f32, 0);
    for seed in 1..=12 {
        let export = random_export(seed);
        let int8 = calibrated(&export, seed);
        let mut rng = Rng(seed * 7 + 1);
        for image in images(&mut rng, &export, 8) {
            let err = logit_error(&export, &int8, &image);
            worst = worst.max(err);
            sum += err;
            count += 1;
        }
    }
    // Eight layers of 8-bit rounding, calibrated on 24 images: a few percent of the logits'
    // size on average.
    let mean = sum / count as f32;
    eprintln!("relative logit error: mean {mean}, worst {worst}");
    assert!(mean < 0.04, "mean relative logit error {mean}");
    assert!(worst < 0.15, "worst relative logit error {worst}");
}

#[test]
fn a_dead_channel_quantises_to_its_bias() {
    // Weight decay leaves some channels' weights at about 1e-11 and their bias near 0: at
    // `max|w| / 127` their requantisation would be under 2^-31, which no int8 kernel holds.
    for seed in 1..=4 {
        let export = random_export_edited(seed, |name, weights, bias| {
            if name == "pw" {
                let per_output = weights.len() / bias.len();
                for w in &mut weights[..per_output] {
                    *w *= 1e-11;
                }
                bias[0] = 1e-4;
            }
        });
        let int8 = calibrated(&export, seed);
        let Int8Layer::Weighted(pw) = &int8.layers()[2] else {
            panic!("pw is weighted");
        };
        let per_output = pw.weight.len() / pw.bias.len();
        assert!(pw.weight[..per_output].iter().all(|&w| w == 0), "{pw:?}");
        // The network still follows the f32 one (the channel's output is its bias).
        let mut rng = Rng(seed * 5 + 3);
        for image in images(&mut rng, &export, 4) {
            let err = logit_error(&export, &int8, &image);
            assert!(err < 0.15, "seed {seed}: relative logit error {err}");
        }
    }
}

#[test]
fn an_int8_export_round_trips_through_a_folder() {
    let export = random_export(5);
    let int8 = calibrated(&export, 5);
    let dir = tempfile::tempdir().unwrap();
    int8.write(dir.path()).unwrap();
    let back = Int8Export::load(dir.path()).unwrap();
    assert_eq!(back.arch(), int8.arch());
    assert_eq!(back.layers(), int8.layers());
    let arch: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("arch.json")).unwrap()).unwrap();
    assert_eq!(arch["version"], 2);
    assert_eq!(arch["precision"], "int8");
    assert_eq!(arch["quantization"]["values"].as_array().unwrap().len(), 10);
    // The f32 reader refuses it and says what reads it; the int8 reader refuses f32.
    let e = Export::load(dir.path()).unwrap_err();
    assert!(
        matches!(
            e,
            ExportError::WrongPrecision {
                found: Precision::Int8,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("Int8Export"), "{e}");
    let f32_dir = tempfile::tempdir().unwrap();
    export.write(f32_dir.path()).unwrap();
    let e = Int8Export::load(f32_dir.path()).unwrap_err();
    assert!(
        matches!(
            e,
            ExportError::WrongPrecision {
                found: Precision::F32,
                ..
            }
        ),
        "{e}"
    );
    // Weights take a quarter of the f32 bytes, plus the per-channel scales.
    assert!(
        int8.weight_bytes() < export.arch().params * 4,
        "{}",
        int8.weight_bytes()
    );
}

/// Writes `int8` to a folder, lets `edit` change its data, and returns the reader's error.
fn refused(int8: &Int8Export, edit: impl FnOnce(&mut Arch, &mut Vec<Int8Layer>)) -> ExportError {
    let (mut arch, mut layers) = (int8.arch().clone(), int8.layers().to_vec());
    edit(&mut arch, &mut layers);
    Int8Export::new(arch, layers).unwrap_err()
}

#[test]
fn the_reader_refuses_what_it_cannot_trust() {
    let int8 = calibrated(&random_export(3), 3);
    let weighted = |layers: &mut Vec<Int8Layer>| match &mut layers[0] {
        Int8Layer::Weighted(w) => w.clone(),
        _ => unreachable!(),
    };
    // A requantisation that disagrees with the scales.
    let e = refused(&int8, |_, layers| {
        let mut w = weighted(layers);
        w.requantize[1].multiplier = w.requantize[1].multiplier / 2 + (1 << 29);
        layers[0] = Int8Layer::Weighted(w);
    });
    assert!(e.to_string().contains("conv1.multiplier"), "{e}");
    // A weight code of -128 (weights are symmetric).
    let e = refused(&int8, |_, layers| {
        let mut w = weighted(layers);
        w.weight[2] = i8::MIN;
        layers[0] = Int8Layer::Weighted(w);
    });
    assert!(e.to_string().contains("-127..=127"), "{e}");
    // A bias whose accumulator could overflow.
    let e = refused(&int8, |_, layers| {
        let mut w = weighted(layers);
        w.bias[0] = i32::MAX - 10;
        layers[0] = Int8Layer::Weighted(w);
    });
    assert!(e.to_string().contains("beyond i32"), "{e}");
    // A zero point outside int8, a scale that is not positive, a pool that requantises.
    let e = refused(&int8, |arch, _| {
        arch.quantization.as_mut().unwrap().values[2].zero_point = 200;
    });
    assert!(e.to_string().contains("values[2].zero_point"), "{e}");
    let e = refused(&int8, |arch, _| {
        arch.quantization.as_mut().unwrap().values[1].scale = 0.0;
    });
    assert!(e.to_string().contains("values[1].scale"), "{e}");
    let e = refused(&int8, |arch, _| {
        arch.quantization.as_mut().unwrap().values[5].zero_point += 1;
    });
    assert!(
        e.to_string().contains("keep its input's quantisation"),
        "{e}"
    );
    // An add's input rescale above one half.
    let e = refused(&int8, |_, layers| {
        if let Int8Layer::Add(a) = &mut layers[3] {
            a.inputs[0].shift = 1;
        }
    });
    assert!(e.to_string().contains("above 0.5"), "{e}");
    // Version 2 that claims f32, and a missing quantization block.
    let e = refused(&int8, |arch, _| arch.precision = Precision::F32);
    assert!(e.to_string().contains("version"), "{e}");
    let e = refused(&int8, |arch, _| arch.quantization = None);
    assert!(e.to_string().contains("quantization"), "{e}");
}

#[test]
fn a_folder_with_a_wrong_tensor_is_refused_with_its_name() {
    let int8 = calibrated(&random_export(4), 4);
    let dir = tempfile::tempdir().unwrap();
    int8.write(dir.path()).unwrap();
    // Rewrite weights.safetensors with conv1.bias as f32.
    let path = dir.path().join("weights.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for t in &mut owned {
        if t.0 == "conv1.bias" {
            t.1 = safetensors::Dtype::F32;
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let e = Int8Export::load(dir.path()).unwrap_err();
    assert!(
        matches!(&e, ExportError::WrongDtype { name, expected: "I32", .. } if name == "conv1.bias"),
        "{e}"
    );
}
