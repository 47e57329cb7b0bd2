//! The training batch norm's own time: for every conv layer of a model, its batch norm (with a
//! ReLU6 fused, as MobileNetV2's expansions and depthwise layers run it) forward and backward
//! on the conv's output shape, `dnal_train_kernels::batch_norm_fused` called on plain slices,
//! best of `--runs` calls each, then the sums over the layers. Prints one JSON line per layer
//! and one for the totals.
//!
//! ```text
//! cargo run --release -p dnal-bench --bin norm_passes -- --model mobilenetv2 --width 0.35
//! ```
//!
//! To compare two versions of the kernels, build this harness at both and alternate them: a
//! shared machine's noise moves single runs by more than most changes.

use std::time::Instant;

use dnal_models::{GatePosition, NetPlan, Op, Shape3, model_spec_at_width};
use dnal_train_kernels::batch_norm_fused::{
    NormAffine, NormShape, Rectifier, batch_norm_train, batch_norm_train_backward,
};

/// The fastest of `runs` calls of `f` in milliseconds, after one warm-up call.
fn best_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

/// `len` values in [-1, 1) + `offset`, from a seeded LCG (no allocation in the timed calls).
fn values(len: usize, seed: u32, offset: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0 + offset
        })
        .collect()
}

fn main() {
    let mut model = "mobilenetv2".to_string();
    let mut width = Some(0.35);
    let mut input = Shape3::new(1, 28, 28);
    let mut batch = 64;
    let mut runs = 21;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = value(),
            "--width" => width = Some(value().parse().unwrap()),
            "--no-width" => width = None,
            "--input" => {
                let v: Vec<usize> = value().split(',').map(|x| x.parse().unwrap()).collect();
                input = Shape3::new(v[0], v[1], v[2]);
            }
            "--batch" => batch = value().parse().unwrap(),
            "--runs" => runs = value().parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    dnal::allocator::keep_freed_memory();
    let spec = model_spec_at_width(&model, input, 10, width).expect("a known model");
    let plan = NetPlan::new(spec, GatePosition::AfterBn).expect("a valid model");
    let (mut forward_total, mut backward_total, mut values_total) = (0.0, 0.0, 0usize);
    for (index, node) in plan.spec.nodes.iter().enumerate() {
        let Op::Conv { out_channels, .. } = node.op else {
            continue;
        };
        let out = plan.shapes[index + 1];
        let shape = NormShape {
            batch,
            channels: out_channels,
            spatial: out.height * out.width,
        };
        let len = batch * out_channels * shape.spatial;
        let x = values(len, index as u32, 0.5);
        let dy = values(len, 1000 + index as u32, 0.0);
        let gamma = values(out_channels, 2000 + index as u32, 1.0);
        let beta = values(out_channels, 3000 + index as u32, 0.0);
        let affine = NormAffine {
            gamma: &gamma,
            beta: &beta,
            epsilon: 1e-5,
            rectifier: Rectifier::Relu6,
        };
        let forward = best_ms(runs, || {
            std::hint::black_box(batch_norm_train(&x, &affine, &shape));
        });
        let stats = batch_norm_train(&x, &affine, &shape);
        let backward = best_ms(runs, || {
            std::hint::black_box(batch_norm_train_backward(
                &x,
                &affine,
                &stats.mean,
                &stats.variance,
                &dy,
                &shape,
            ));
        });
        println!(
            "{{\"layer\": \"{}\", \"batch\": {batch}, \"channels\": {out_channels}, \"spatial\": {}, \"forward_ms\": {forward:.3}, \"backward_ms\": {backward:.3}}}",
            node.name, shape.spatial
        );
        forward_total += forward;
        backward_total += backward;
        values_total += len;
    }
    println!(
        "{{\"model\": \"{model}\", \"batch\": {batch}, \"values\": {values_total}, \"forward_ms\": {forward_total:.3}, \"backward_ms\": {backward_total:.3}}}"
    );
}
