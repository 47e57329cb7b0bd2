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

use dnal_bench::{LayerBenchArgs, best_ms};
use dnal_models::{Op, Shape3};
use dnal_train_kernels::batch_norm_fused::{
    NormAffine, NormShape, Rectifier, batch_norm_train, batch_norm_train_backward,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `len` values uniform in [-1, 1) + `offset` (made before the timed calls).
fn values(rng: &mut StdRng, len: usize, offset: f32) -> Vec<f32> {
    (0..len)
        .map(|_| rng.random_range(-1.0f32..1.0) + offset)
        .collect()
}

fn main() {
    let args = LayerBenchArgs {
        model: "mobilenetv2".into(),
        width: Some(0.35),
        input: Shape3::new(1, 28, 28),
        batch: 64,
        runs: 21,
    }
    .parse(|_, _| false);
    let (model, batch, runs) = (args.model.clone(), args.batch, args.runs);
    dnal::allocator::keep_freed_memory();
    let plan = args.plan();
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
        let mut rng = StdRng::seed_from_u64(index as u64);
        let x = values(&mut rng, len, 0.5);
        let dy = values(&mut rng, len, 0.0);
        let gamma = values(&mut rng, out_channels, 1.0);
        let beta = values(&mut rng, out_channels, 0.0);
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
