//! Latency tables against measurement: profiles the host's `vgg-small` (unpruned) on a
//! board, then deploys random pruned variants (random weights; each conv layer's output
//! channels drawn uniformly from 1 to the parent's) and compares the table's prediction with
//! the cost the firmware measures.
//!
//! `cargo run --release -p dnal-bench --bin latency_accuracy
//! [-- BOARD [VARIANTS [SEED]]]` (default: cortex-m7-qemu, 20 variants, seed 1)
//!
//! Prints Markdown.

use std::collections::BTreeMap;
use std::time::Instant;

use dnal_firmware::deploy::{DeployRequest, deploy, synthetic_images};
use dnal_firmware::latency::{GridOptions, ProfileOptions, profile};
use dnal_firmware::synth::{random_export, vgg_small_arch, with_channels};

const CONVS: [(&str, usize); 5] = [
    ("conv1", 32),
    ("conv2", 32),
    ("conv3", 64),
    ("conv4", 64),
    ("conv5", 128),
];

fn main() {
    let mut args = std::env::args().skip(1);
    let board = args.next().unwrap_or_else(|| "cortex-m7-qemu".into());
    let variants: usize = args.next().map_or(20, |s| s.parse().expect("VARIANTS"));
    let mut state: u64 = args.next().map_or(1, |s| s.parse().expect("SEED"));
    let work = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/dnal-bench/latency")
        .join(&board);

    let parent = vgg_small_arch();
    let start = Instant::now();
    let table = profile(
        &parent,
        &board,
        &GridOptions::default(),
        &ProfileOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let profile_s = start.elapsed().as_secs_f64();
    table.write(work.join("latency.json")).unwrap();
    let configurations: usize = table.layers.iter().map(|l| l.grid.points()).sum();
    println!(
        "{board}: profiled vgg-small in {profile_s:.1} s ({configurations} configurations; \
         overhead {:.0} {}; {})\n",
        table.overhead, table.unit, table.measured
    );

    let mut next = move |max: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        1 + (state % max as u64) as usize
    };
    println!(
        "| variant | channels conv1-conv5 | MACs | predicted | measured | error | predicted ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let mut errors = Vec::new();
    for v in 0..variants {
        let counts: BTreeMap<String, usize> = CONVS
            .iter()
            .map(|&(name, max)| (name.to_string(), next(max)))
            .collect();
        let arch = with_channels(&parent, &counts).unwrap();
        let prediction = table.predict(&arch).unwrap();
        let macs = arch.flops;
        let export = random_export(arch, 100 + v as u64).unwrap();
        let dir = work.join(format!("v{v}"));
        export.write(dir.join("export")).unwrap();
        let mut req = DeployRequest::new(dir.join("export"), &board, dir.join("fw"));
        req.run = true;
        req.images = synthetic_images(export.input_len(), 1);
        // One target folder for every variant: the dependencies build once.
        req.firmware_target_dir = Some(work.join("target"));
        let measured = deploy(&req).unwrap().cost.unwrap().per_inference;
        let error = (prediction.total - measured) / measured;
        errors.push(error.abs());
        let channels: Vec<String> = CONVS.iter().map(|(n, _)| counts[*n].to_string()).collect();
        println!(
            "| {v} | {} | {macs} | {:.0} | {measured:.0} | {:+.2}% | {:.2} |",
            channels.join("-"),
            prediction.total,
            error * 100.0,
            prediction.ms
        );
    }
    let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
    let max = errors.iter().cloned().fold(0.0, f64::max);
    println!(
        "\n{board}: {} variants, |error| mean {:.2}%, max {:.2}%",
        errors.len(),
        mean * 100.0,
        max * 100.0
    );
}
