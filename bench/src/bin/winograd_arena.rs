//! What an arena cap costs Winograd's F(2x2, 3x3): each 3x3 layer of the 4.0x vgg-small of
//! BENCHMARKS.md (channels 11-14-30-33-122) as one int8 layer on a Cortex-M board, directly
//! and by Winograd, whole and in the smaller pieces a capped arena would leave room for:
//! a band of two rows of tiles (a plane of 4 rows) or a block of two output channel pairs.
//! With the scratch each takes ([`winograd_scratch_len`]).
//!
//! `cargo run --release -p dnal-bench --bin winograd_arena [-- BOARD]` (default
//! cortex-m7-qemu).
//!
//! Each layer follows a 1x1 convolution, so its input has the zero point of a ReLU output
//! (as in the network) and the model input's quantisation is not counted in it.

use dnal_export::int8::{ValueRanges, quantize};
use dnal_export::{Arch, Layer, Op};
use dnal_firmware::deploy::{DeployRequest, deploy, synthetic_images};
use dnal_firmware::synth::{conv, random_export};
use dnal_kernels::int8::{winograd_pays, winograd_scratch_len};
use dnal_kernels::{Activation::*, Conv2dParams, Shape3};

/// A layer of the network (its input and output channels, its plane) and the piece of it
/// measured.
struct Case {
    layer: &'static str,
    piece: &'static str,
    input: Shape3,
    out_channels: usize,
}

fn cases() -> Vec<Case> {
    let case = |layer, piece, (c, h, w), out_channels| Case {
        layer,
        piece,
        input: Shape3::new(c, h, w),
        out_channels,
    };
    vec![
        case("conv2", "whole", (11, 28, 28), 14),
        case("conv2", "2 output channel pairs", (11, 28, 28), 4),
        case("conv3", "whole", (14, 14, 14), 30),
        case("conv4", "whole", (30, 14, 14), 33),
        case("conv4", "band of 2 tile rows", (30, 4, 14), 33),
        case("conv5", "whole", (33, 7, 7), 122),
        case("conv5", "band of 2 tile rows", (33, 4, 7), 122),
    ]
}

/// Instructions of the measured layer, and its MACs, on `board`.
fn measure(case: &Case, board: &str, winograd: bool, work: &std::path::Path) -> (f64, u64) {
    let c = case.input.channels;
    let layers = vec![
        Layer::new("lead", vec![0], conv(c, c, 1, 1, 0, false, Relu)),
        Layer::new(
            "k",
            vec![1],
            conv(c, case.out_channels, 3, 1, 1, false, Relu),
        ),
        Layer::new("gap", vec![2], Op::GlobalAvgPool),
    ];
    let name = format!(
        "{}x{}x{}-{}",
        c, case.input.height, case.input.width, case.out_channels
    );
    let arch = Arch::new(&name, case.input, case.out_channels, layers);
    let export = random_export(arch, 7).expect("valid layer");
    let ranges = ValueRanges::of_images(&export, synthetic_images(export.input_len(), 4));
    let int8 = quantize(&export, &ranges, serde_json::Value::Null).expect("quantises");
    let dir = work.join(&name);
    int8.write(dir.join("export8")).expect("write int8 export");
    let fw = dir.join(format!("{board}{}", if winograd { "-w" } else { "" }));
    let mut req = DeployRequest::new(dir.join("export8"), board, fw);
    req.run = true;
    req.winograd = winograd;
    req.images = synthetic_images(export.input_len(), 1);
    // One target folder for every firmware: the dependencies build once.
    req.firmware_target_dir = Some(work.join("target"));
    let report = deploy(&req).unwrap_or_else(|e| panic!("{name} on {board}: {e}"));
    let cost = &report.cost.expect("ran").per_layer[1];
    (cost.cost, cost.macs)
}

fn main() {
    let board = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cortex-m7-qemu".into());
    let work =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dnal-bench/winograd");
    println!("### Winograd in pieces ({board}, QEMU instruction counts)\n");
    println!(
        "| layer | piece | MACs | direct instr/MAC | Winograd instr/MAC | Winograd scratch, bytes |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for case in cases() {
        let params = Conv2dParams::new(case.input, case.out_channels, [3, 3], [1, 1], [1, 1], Relu)
            .expect("a valid layer");
        assert!(
            winograd_pays(&params),
            "{} {}: runs directly",
            case.layer,
            case.piece
        );
        let (direct, macs) = measure(&case, &board, false, &work);
        let (winograd, _) = measure(&case, &board, true, &work);
        println!(
            "| {} | {} | {macs} | {:.3} | {:.3} | {} |",
            case.layer,
            case.piece,
            direct / macs as f64,
            winograd / macs as f64,
            winograd_scratch_len(&params)
        );
    }
}
