//! im2col + gemm against Winograd F(2x2, 3x3) on the 3x3 convolutions of vgg-small and vgg16
//! (batch 64, every thread rayon has): milliseconds per direction, the best of `--runs`
//! alternated calls, and the ratio. The figures behind `conv_winograd::pays_off`.
//!
//!     cargo run --release -p dnal-bench --bin conv_strategies [-- --runs 9] [--layer I]

use std::hint::black_box;
use std::time::Instant;

use dnal_train_kernels::conv_gemm::{self, ConvGeometry};
use dnal_train_kernels::conv_winograd;

/// `(model, in_channels, out_channels, size)` of each distinct 3x3 layer.
const LAYERS: &[(&str, usize, usize, usize)] = &[
    ("vgg-small", 32, 32, 28),
    ("vgg-small", 32, 64, 14),
    ("vgg-small", 64, 64, 14),
    ("vgg-small", 64, 128, 7),
    ("vgg16", 3, 64, 32),
    ("vgg16", 64, 64, 32),
    ("vgg16", 64, 128, 16),
    ("vgg16", 128, 128, 16),
    ("vgg16", 128, 256, 8),
    ("vgg16", 256, 256, 8),
    ("vgg16", 256, 512, 4),
    ("vgg16", 512, 512, 4),
    ("vgg16", 512, 512, 2),
];

fn millis(f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--runs takes a number"))
        .unwrap_or(9);
    // `--layer I` times only the I-th layer of the table (for a profiler).
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--layer")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--layer takes a number"));
    let batch = 64;
    println!(
        "{:<10} {:>5} {:>5} {:>4}   {:>17} {:>17} {:>17}",
        "model", "C", "O", "HxW", "fwd im2col/wino", "dX im2col/wino", "dW im2col/wino"
    );
    for (index, &(model, c, o, size)) in LAYERS.iter().enumerate() {
        if only.is_some_and(|i| i != index) {
            continue;
        }
        let g = ConvGeometry::new([batch, c, size, size], [o, c, 3, 3], [1, 1], [1, 1], [1, 1]);
        let x: Vec<f32> = (0..batch * c * size * size)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let w: Vec<f32> = (0..o * c * 9)
            .map(|i| ((i * 104_729) % 1000) as f32 / 5e4)
            .collect();
        let dy: Vec<f32> = (0..batch * o * size * size)
            .map(|i| ((i * 31) % 1000) as f32 / 1e3 - 0.5)
            .collect();
        let mut best = [f64::MAX; 6];
        for _ in 0..runs {
            let timings = [
                millis(&mut || {
                    black_box(conv_gemm::conv2d_forward(&x, &w, None, &g));
                }),
                millis(&mut || {
                    black_box(conv_winograd::conv2d_forward(&x, &w, &g));
                }),
                millis(&mut || {
                    black_box(conv_gemm::conv2d_input_grad(&dy, &w, &g));
                }),
                millis(&mut || {
                    black_box(conv_winograd::conv2d_input_grad(&dy, &w, &g));
                }),
                millis(&mut || {
                    black_box(conv_gemm::conv2d_weight_grad(&x, &dy, &g));
                }),
                millis(&mut || {
                    black_box(conv_winograd::conv2d_weight_grad(&x, &dy, &g));
                }),
            ];
            for (b, t) in best.iter_mut().zip(timings) {
                *b = b.min(t);
            }
        }
        let cell = |i: usize| {
            format!(
                "{:>6.2}/{:<6.2}{:>4.2}",
                best[i],
                best[i + 1],
                best[i] / best[i + 1]
            )
        };
        println!(
            "{model:<10} {c:>5} {o:>5} {size:>2}x{size:<2}  {} {} {}",
            cell(0),
            cell(2),
            cell(4)
        );
    }
}
