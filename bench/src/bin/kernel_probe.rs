//! Instructions per MAC of each kernel alone: one single-layer model per kernel shape
//! (followed by a global pool so the logits stay small), built and run on one board.
//!
//! `cargo run --release -p dnal-bench --bin kernel_probe [-- BOARD]`
use dnal_export::{Arch, Layer, Op};
use dnal_firmware::deploy::{DeployRequest, deploy, synthetic_images};
use dnal_firmware::synth::{conv, linear, random_export};
use dnal_kernels::{Activation::*, Shape3};

fn main() {
    let board = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cortex-m4-qemu".into());
    let cases: Vec<(&str, Shape3, Op)> = vec![
        (
            "c3s1p0",
            Shape3::new(16, 18, 18),
            conv(16, 16, 3, 1, 0, false, Relu),
        ),
        (
            "c3s1p1",
            Shape3::new(16, 16, 16),
            conv(16, 16, 3, 1, 1, false, Relu),
        ),
        (
            "c3s1p1w32",
            Shape3::new(16, 32, 32),
            conv(16, 16, 3, 1, 1, false, Relu),
        ),
        (
            "c3s2p1",
            Shape3::new(32, 16, 16),
            conv(32, 32, 3, 2, 1, false, Relu),
        ),
        (
            "c5s1p2",
            Shape3::new(32, 8, 8),
            conv(32, 16, 5, 1, 2, false, Relu),
        ),
        (
            "dw3s1p1",
            Shape3::new(16, 16, 16),
            conv(16, 16, 3, 1, 1, true, Relu6),
        ),
        (
            "dw3s1p1w32",
            Shape3::new(16, 32, 32),
            conv(16, 16, 3, 1, 1, true, Relu6),
        ),
        (
            "pw",
            Shape3::new(16, 16, 16),
            conv(16, 32, 1, 1, 0, false, None),
        ),
        ("fc256", Shape3::new(256, 1, 1), linear(256, 64, Relu)),
    ];
    let work = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dnal-bench/probe");
    for (name, input, op) in cases {
        let layers = vec![
            Layer::new("k", vec![0], op),
            Layer::new("gap", vec![1], Op::GlobalAvgPool),
        ];
        let classes = match &layers[0].op {
            Op::Conv2d(c) => c.out_channels,
            Op::Linear(l) => l.out_features,
            _ => 1,
        };
        let arch = Arch::new(name, input, classes, layers);
        let export = random_export(arch, 1).unwrap();
        let dir = work.join(name);
        export.write(dir.join("export")).unwrap();
        let mut req = DeployRequest::new(dir.join("export"), &board, dir.join(&board));
        req.run = true;
        req.images = synthetic_images(export.input_len(), 1);
        // One target folder for every probe: the dependencies build once.
        req.firmware_target_dir = Some(work.join("target"));
        let r = deploy(&req).unwrap();
        let c = &r.cost.unwrap().per_layer[0];
        println!(
            "{name:12} {:>9} MACs {:>9} instr {:.3}/MAC",
            c.macs,
            c.cost,
            c.cost / c.macs as f64
        );
    }
}
