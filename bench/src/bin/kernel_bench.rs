//! Kernel benchmark: instructions per MAC of each f32 (or int8) kernel on Cortex-M4 and
//! Cortex-M7 (QEMU instruction counts via the marker plugin), and the flash/RAM/arena of two
//! models.
//!
//! `cargo run --release -p dnal-bench --bin kernel_bench [-- [--int8] BOARD...]`
//!
//! `--int8`: the same networks quantised (calibrated on 8 synthetic images), deployed as
//! int8 firmware; parity is then against the integer reference and must be exact.
//!
//! Prints Markdown tables (the figures in BENCHMARKS.md come from here). Instruction counts
//! are not cycles: the limit they are compared with is one instruction per f32 MAC.

use dnal_export::int8::{ValueRanges, quantize};
use dnal_export::{Arch, Layer, Op};
use dnal_firmware::deploy::{DeployReport, DeployRequest, deploy, synthetic_images};
use dnal_firmware::synth::{add, conv, linear, pool, random_export};
use dnal_kernels::{Activation::*, Shape3};

/// One layer per kernel configuration, on shapes big enough that edges do not dominate.
fn kernel_arch() -> Arch {
    let layers = vec![
        Layer::new("conv3x3_s1", vec![0], conv(16, 16, 3, 1, 1, false, Relu)),
        Layer::new("depthwise3x3", vec![1], conv(16, 16, 3, 1, 1, true, Relu6)),
        Layer::new("pointwise", vec![2], conv(16, 32, 1, 1, 0, false, None)),
        Layer::new("conv3x3_s2", vec![3], conv(32, 32, 3, 2, 1, false, Relu)),
        Layer::new("conv5x5_s1", vec![4], conv(32, 16, 5, 1, 2, false, Relu)),
        Layer::new("max_pool2x2", vec![5], pool(true, 2, 2, 0)),
        Layer::new("avg_pool3x3", vec![6], pool(false, 3, 1, 1)),
        Layer::new("add_relu", vec![6, 7], add(Relu)),
        Layer::new("linear256x64", vec![8], linear(256, 64, Relu)),
        Layer::new("linear64x10", vec![9], linear(64, 10, None)),
    ];
    Arch::new("kernel-bench", Shape3::new(16, 16, 16), 10, layers)
}

/// A small VGG-style Fashion-MNIST network (what `dnal search` might keep).
fn vgg_arch() -> Arch {
    let layers = vec![
        Layer::new("conv1", vec![0], conv(1, 12, 3, 1, 1, false, Relu)),
        Layer::new("pool1", vec![1], pool(true, 2, 2, 0)),
        Layer::new("conv2", vec![2], conv(12, 24, 3, 1, 1, false, Relu)),
        Layer::new("pool2", vec![3], pool(true, 2, 2, 0)),
        Layer::new("conv3", vec![4], conv(24, 32, 3, 1, 1, false, Relu)),
        Layer::new("gap", vec![5], Op::GlobalAvgPool),
        Layer::new("fc", vec![6], linear(32, 10, None)),
    ];
    Arch::new("fmnist-vgg", Shape3::new(1, 28, 28), 10, layers)
}

/// A MobileNetV2-style block stack with residual adds (CIFAR-sized input).
fn mobile_arch() -> Arch {
    let layers = vec![
        Layer::new("stem", vec![0], conv(3, 16, 3, 2, 1, false, Relu6)),
        Layer::new("b1_expand", vec![1], conv(16, 32, 1, 1, 0, false, Relu6)),
        Layer::new("b1_dw", vec![2], conv(32, 32, 3, 1, 1, true, Relu6)),
        Layer::new("b1_project", vec![3], conv(32, 16, 1, 1, 0, false, None)),
        Layer::new("b1_add", vec![1, 4], add(None)),
        Layer::new("b2_expand", vec![5], conv(16, 48, 1, 1, 0, false, Relu6)),
        Layer::new("b2_dw", vec![6], conv(48, 48, 3, 2, 1, true, Relu6)),
        Layer::new("b2_project", vec![7], conv(48, 24, 1, 1, 0, false, None)),
        Layer::new("b3_expand", vec![8], conv(24, 48, 1, 1, 0, false, Relu6)),
        Layer::new("b3_dw", vec![9], conv(48, 48, 3, 1, 1, true, Relu6)),
        Layer::new("b3_project", vec![10], conv(48, 24, 1, 1, 0, false, None)),
        Layer::new("b3_add", vec![8, 11], add(None)),
        Layer::new("gap", vec![12], Op::GlobalAvgPool),
        Layer::new("fc", vec![13], linear(24, 10, None)),
    ];
    Arch::new("cifar-mobile", Shape3::new(3, 32, 32), 10, layers)
}

fn run(arch: Arch, board: &str, work: &std::path::Path, int8: bool) -> DeployReport {
    let name = arch.name.clone();
    let export = random_export(arch, 42).expect("valid bench model");
    let export_dir = work
        .join(&name)
        .join(if int8 { "export8" } else { "export" });
    if int8 {
        let ranges = ValueRanges::of_images(&export, synthetic_images(export.input_len(), 8));
        let quantized = quantize(&export, &ranges, serde_json::Value::Null).expect("quantises");
        quantized.write(&export_dir).expect("write int8 export");
    } else {
        export.write(&export_dir).expect("write export");
    }
    let fw = work
        .join(&name)
        .join(format!("{board}{}", if int8 { "-int8" } else { "" }));
    let mut req = DeployRequest::new(&export_dir, board, fw);
    req.run = true;
    req.runs = 2;
    req.images = synthetic_images(export.input_len(), 2);
    // One target folder for every firmware of the benchmark: the dependencies build once.
    req.firmware_target_dir = Some(work.join("target"));
    let report = deploy(&req).unwrap_or_else(|e| panic!("{name} on {board}: {e}"));
    let cost = report.cost.as_ref().expect("ran");
    assert_eq!(cost.repeat_runs_identical, Some(true), "counts must repeat");
    report
}

fn main() {
    let mut boards: Vec<String> = std::env::args().skip(1).collect();
    let int8 = boards.iter().any(|b| b == "--int8");
    boards.retain(|b| b != "--int8");
    if boards.is_empty() {
        boards = vec!["cortex-m4-qemu".into(), "cortex-m7-qemu".into()];
    }
    let work = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dnal-bench");
    std::fs::create_dir_all(&work).expect("bench folder");

    let reports: Vec<(String, DeployReport)> = boards
        .iter()
        .map(|b| (b.clone(), run(kernel_arch(), b, &work, int8)))
        .collect();
    println!(
        "### Instructions per MAC (kernel-bench model, {}, QEMU instruction counts)\n",
        if int8 { "int8" } else { "f32" }
    );
    print!("| layer | shape | MACs |");
    for (b, _) in &reports {
        print!(" {b} instr | {b} instr/MAC |");
    }
    println!();
    print!("|---|---|---:|");
    for _ in &reports {
        print!("---:|---:|");
    }
    println!();
    let export = random_export(kernel_arch(), 42).unwrap();
    for (j, layer) in export.summary().layers.iter().enumerate() {
        let shape = format!("{} -> {}", layer.input_shapes[0], layer.output);
        print!("| {} | {shape} | {} |", layer.name, layer.macs);
        for (_, r) in &reports {
            let c = &r.cost.as_ref().unwrap().per_layer[j];
            if layer.macs > 0 {
                print!(" {:.0} | {:.2} |", c.cost, c.cost / layer.macs as f64);
            } else {
                print!(
                    " {:.0} | {:.2} per output |",
                    c.cost,
                    c.cost / layer.output.len() as f64
                );
            }
        }
        println!();
    }
    for (b, r) in &reports {
        let c = r.cost.as_ref().unwrap();
        println!(
            "\n{b}: whole inference {:.0} instructions for {} MACs = {:.2} instructions/MAC",
            c.per_inference, r.macs, c.per_mac
        );
    }

    println!("\n### Models: flash, RAM, stack, arena\n");
    println!(
        "| model | board | MACs | params | flash B | RAM B | stack B | arena B | liveness lower bound B | instr/inference | instr/MAC | parity max abs diff |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for arch in [vgg_arch, mobile_arch] {
        for b in &boards {
            let r = run(arch(), b, &work, int8);
            let c = r.cost.as_ref().unwrap();
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2e} |",
                r.model,
                b,
                r.macs,
                r.params,
                r.flash_bytes,
                r.ram_bytes,
                r.stack_bytes.unwrap_or(0),
                r.arena_bytes,
                r.arena_lower_bound_bytes,
                c.per_inference,
                c.per_mac,
                r.parity.as_ref().unwrap().max_abs_diff
            );
        }
    }
}
