//! Native inference of one export, batch 1: the code dnal-firmware generates (built for this
//! machine, `--board host`) against burn's CPU backend (flex) on the same network and the same
//! images, in one run. Prints the median wall time per image of each and their ratio.
//!
//! ```text
//! cargo run --release -p dnal-bench --bin native_inference -- runs/fmnist [IMAGES]
//! ```

use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use dnal::backend::Backend;
use dnal::export::ExportNet;
use dnal_export::Export;
use dnal_firmware::DeployRequest;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: native_inference EXPORT_DIR [IMAGES]");
    let count: usize = args
        .next()
        .map_or(64, |n| n.parse().expect("a number of images"));
    dnal::allocator::keep_freed_memory();
    let export = Export::load(&dir).expect("a valid export");
    let s = export.arch().input;
    // Deterministic pseudo-random normalised images.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let images: Vec<Vec<f32>> = (0..count)
        .map(|_| {
            (0..export.input_len())
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect()
        })
        .collect();

    let device = Backend::Cpu.device().unwrap();
    let net = ExportNet::new(&export, &device);
    let run_burn = |image: &[f32]| {
        let x = Tensor::<4>::from_data(
            TensorData::new(image.to_vec(), [1, s.channels, s.height, s.width]),
            &device,
        );
        net.forward(x).into_data().try_to_vec::<f32>().unwrap()
    };
    for image in images.iter().take(5) {
        run_burn(image);
    }
    let burn_ns: Vec<f64> = images
        .iter()
        .map(|image| {
            let start = Instant::now();
            std::hint::black_box(run_burn(image));
            start.elapsed().as_nanos() as f64
        })
        .collect();

    let fw = tempfile::tempdir().unwrap();
    let mut request = DeployRequest::new(&dir, "host", fw.path().join("host"));
    request.run = true;
    request.images = images.clone();
    request.reference_logits = Some(images.iter().map(|i| run_burn(i)).collect());
    let report = dnal_firmware::deploy(&request).expect("the host firmware builds and runs");
    let cost = report.cost.expect("a run measures cost");
    assert_eq!(cost.unit, "wall_ns");
    // The first image runs with cold caches; the median ignores it like burn's warm-up.
    let generated_ns: Vec<f64> = cost.per_image_runs[0].iter().map(|&n| n as f64).collect();
    let parity = report.parity.expect("parity");
    let (b, g) = (median(burn_ns), median(generated_ns));
    println!(
        "{{\"export\": \"{dir}\", \"macs\": {}, \"images\": {count}, \"burn_flex_median_us\": {:.2}, \"generated_median_us\": {:.2}, \"burn_over_generated\": {:.2}, \"max_abs_diff\": {:e}}}",
        export.arch().flops,
        b / 1e3,
        g / 1e3,
        b / g,
        parity.max_abs_diff
    );
}
