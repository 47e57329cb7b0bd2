//! Latency tables measured in QEMU: a small profile on Cortex-M4, and its predictions against
//! the measured cost of pruned variants deployed as firmware.
//!
//! Needs what deploy_qemu needs (qemu-system-arm, gcc for the plugin, the thumbv7em target);
//! the real-board test needs nothing but the build (probe-rs and a board to run).

use std::collections::BTreeMap;

use dnal_export::int8::{ValueRanges, quantize};
use dnal_export::{Arch, Layer, Op, Precision};
use dnal_firmware::deploy::{DeployRequest, deploy, synthetic_images};
use dnal_firmware::latency::{
    Grid, GridOptions, LatencyError, LatencyTable, ProfileOptions, profile,
};
use dnal_firmware::synth::{conv, linear, pool, random_export, with_channels};
use dnal_kernels::{Activation::*, Shape3};

/// One target folder for every firmware the tests build: the dependencies build once.
fn shared_target_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dnal-firmware")
}

/// A vgg-small in miniature: conv 1->8, conv 8->8, pool, conv 8->16, global pool, linear.
fn mini_vgg() -> Arch {
    let layers = vec![
        Layer::new("conv1", vec![0], conv(1, 8, 3, 1, 1, false, Relu)),
        Layer::new("conv2", vec![1], conv(8, 8, 3, 1, 1, false, Relu)),
        Layer::new("pool1", vec![2], pool(true, 2, 2, 0)),
        Layer::new("conv3", vec![3], conv(8, 16, 3, 1, 1, false, Relu)),
        Layer::new("gap", vec![4], Op::GlobalAvgPool),
        Layer::new("fc", vec![5], linear(16, 10, None)),
    ];
    let mut arch = Arch::new("mini-vgg", Shape3::new(1, 12, 12), 10, layers);
    arch.complete().unwrap();
    arch
}

/// Builds and runs a network on the board (random weights, one image): its measured cost.
fn measure(arch: Arch, board: &str, dir: &std::path::Path) -> f64 {
    let export = random_export(arch, 3).unwrap();
    export.write(dir.join("export")).unwrap();
    let mut req = DeployRequest::new(dir.join("export"), board, dir.join("fw"));
    req.run = true;
    req.images = synthetic_images(export.input_len(), 1);
    req.firmware_target_dir = Some(shared_target_dir());
    deploy(&req).unwrap().cost.unwrap().per_inference
}

/// The worst relative error of `table`'s predictions for variants of `parent` with the
/// counts `variants` in conv1-conv3, each built and measured by `measure`.
fn worst_error(
    table: &LatencyTable,
    parent: &Arch,
    variants: &[[usize; 3]],
    dir: &std::path::Path,
    measure: impl Fn(Arch, &std::path::Path) -> f64,
) -> f64 {
    let mut worst: f64 = 0.0;
    for (k, c) in variants.iter().enumerate() {
        let counts: BTreeMap<String, usize> = ["conv1", "conv2", "conv3"]
            .iter()
            .zip(c)
            .map(|(n, &c)| (n.to_string(), c))
            .collect();
        let arch = with_channels(parent, &counts).unwrap();
        let predicted = table.predict(&arch).unwrap().total;
        let measured = measure(arch, &dir.join(format!("v{k}")));
        let error = (predicted - measured).abs() / measured;
        eprintln!(
            "{} {c:?}: predicted {predicted:.0}, measured {measured:.0}, error {error:.4}",
            table.precision.name()
        );
        worst = worst.max(error);
    }
    worst
}

#[test]
fn m4_profile_predicts_pruned_variants() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = mini_vgg();
    let options = ProfileOptions {
        work_dir: Some(tmp.path().join("profile")),
        firmware_target_dir: Some(shared_target_dir()),
        ..Default::default()
    };
    let table = profile(&parent, "cortex-m4-qemu", &GridOptions::default(), &options)
        .unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(table.board, "cortex-m4-qemu");
    assert_eq!(table.unit, "instructions");
    assert_eq!(table.model, "mini-vgg");
    assert_eq!(table.clock.hz, 168e6);
    assert!(table.measured.contains("mps2-an386"), "{}", table.measured);
    // The code that measured it, so that firmware of other code is noted.
    assert_eq!(
        table.code.as_deref(),
        Some(dnal_firmware::codegen::code_stamp())
    );
    assert!(table.code_note().is_none(), "{:?}", table.code_note());
    assert_eq!(table.layers.len(), parent.layers.len());
    // Every grid holds the parent's own counts, the counts below a register block, and
    // positive costs; counts that cannot change (the image's, the logits') have one point.
    match &table.layer("conv2").unwrap().grid {
        Grid::InOut {
            in_channels,
            out_channels,
            out_block,
            in_row,
            cost,
        } => {
            assert_eq!(in_channels, &vec![1, 5, 8]);
            // The f32 kernels read their inputs as they are: no padded rows.
            assert!(in_row.is_none(), "{in_row:?}");
            assert_eq!(out_channels, &vec![1, 2, 3, 4, 5, 6, 7, 8]);
            assert_eq!(*out_block, 4);
            assert!(cost.iter().flatten().all(|&c| c > 0.0));
            // Register blocking, as the grid assumes: 3 leftover channels cost more than a
            // full block of 4.
            assert!(cost[2][2] > cost[2][3], "{cost:?}");
        }
        g => panic!("conv2: {g:?}"),
    }
    match &table.layer("conv1").unwrap().grid {
        Grid::InOut { in_channels, .. } => assert_eq!(in_channels, &vec![1]),
        g => panic!("conv1: {g:?}"),
    }
    match &table.layer("fc").unwrap().grid {
        Grid::InOut { out_channels, .. } => assert_eq!(out_channels, &vec![10]),
        g => panic!("fc: {g:?}"),
    }
    assert!(matches!(
        table.layer("pool1").unwrap().grid,
        Grid::Channels { .. }
    ));

    // The parent's prediction is its calibration run, exactly.
    let calibration = table.calibration.clone().unwrap();
    let parent_prediction = table.predict(&parent).unwrap();
    assert_eq!(parent_prediction.total, calibration.parent_measured);
    assert!(!parent_prediction.extrapolated);

    // The measured table survives a round trip.
    let path = tmp.path().join("latency.json");
    table.write(&path).unwrap();
    assert_eq!(LatencyTable::load(&path).unwrap(), table);

    // Pruned variants (leftover channels, single channels, interpolated counts), deployed
    // and measured as firmware, against the table.
    let variants = [[5, 3, 13], [8, 1, 7], [2, 6, 16], [7, 7, 10]];
    let worst = worst_error(&table, &parent, &variants, tmp.path(), |arch, dir| {
        measure(arch, "cortex-m4-qemu", dir)
    });
    // The contract is 10%; the table measured within 0.2% (BENCHMARKS.md), so 2% catches a
    // regression such as layers compiled differently in a model than alone (3-9% seen).
    assert!(worst < 0.10, "worst error {worst}");
    assert!(worst < 0.02, "worst error {worst}");
}

/// As [`measure`], for the int8 network: random weights quantised on the ranges of one
/// synthetic image.
fn measure_int8(arch: Arch, board: &str, dir: &std::path::Path) -> f64 {
    measure_int8_by(arch, board, dir, false)
}

/// [`measure_int8`], with 3x3 convolutions by Winograd where `winograd`.
fn measure_int8_by(arch: Arch, board: &str, dir: &std::path::Path, winograd: bool) -> f64 {
    let export = random_export(arch, 3).unwrap();
    let image = &synthetic_images(export.input_len(), 1)[0];
    let ranges = ValueRanges::of_images(&export, [image]);
    let int8 = quantize(&export, &ranges, serde_json::Value::Null).unwrap();
    int8.write(dir.join("export8")).unwrap();
    let mut req = DeployRequest::new(dir.join("export8"), board, dir.join("fw8"));
    req.run = true;
    req.images = vec![image.clone()];
    req.firmware_target_dir = Some(shared_target_dir());
    req.winograd = winograd;
    let report = deploy(&req).unwrap();
    assert_eq!(report.winograd, winograd);
    report.cost.unwrap().per_inference
}

#[test]
fn m7_int8_profile_predicts_pruned_int8_variants() {
    let tmp = tempfile::tempdir().unwrap();
    // conv3 reads 64 channels: 576 taps, more than the SMLAD kernel's 512, so the parent's
    // conv3 runs the portable kernel and counts up to 56 run SMLAD.
    let wide: BTreeMap<String, usize> = [("conv2".to_string(), 64)].into();
    let parent = with_channels(&mini_vgg(), &wide).unwrap();
    let options = ProfileOptions {
        work_dir: Some(tmp.path().join("profile")),
        firmware_target_dir: Some(shared_target_dir()),
        precision: Precision::Int8,
        ..Default::default()
    };
    let table = profile(&parent, "cortex-m7-qemu", &GridOptions::default(), &options)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(table.precision, Precision::Int8);
    assert!(table.calibration.is_some(), "the int8 parent ran whole");
    let path = tmp.path().join("latency8.json");
    table.write(&path).unwrap();
    let loaded = LatencyTable::load(&path).unwrap();
    assert_eq!(loaded.precision, Precision::Int8);

    // The int8 table predicts int8 firmware.
    // Both sides of the kernel switch (56 | 57), the parent, and counts between grid points.
    let variants = [
        [8, 64, 16],
        [8, 56, 16],
        [5, 57, 13],
        [8, 45, 16],
        [2, 30, 10],
    ];
    let worst = worst_error(&table, &parent, &variants, tmp.path(), |arch, dir| {
        measure_int8(arch, "cortex-m7-qemu", dir)
    });
    // The contract is 10%; the table measured within 4% (the parent itself, whose portable
    // conv3 compiles 7% cheaper in the model than alone), so 5% catches a layer compiled
    // differently in a model than alone (8-14% off while the kernels tested each
    // requantisation factor at run time, a test LLVM folded in a model, whose factors it
    // could see, and not in a benchmark; up to 18% while that parent's difference was
    // taken for a negative overhead of every network).
    assert!(worst < 0.10, "worst error {worst}");
    assert!(worst < 0.05, "worst error {worst}");
}

/// An int8 table measured with 3x3 convolutions by Winograd predicts firmware deployed so,
/// across the switch to the direct kernel below 8 input channels, which the grid holds.
#[test]
fn m4_int8_winograd_profile_predicts_pruned_variants() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = mini_vgg();
    let options = ProfileOptions {
        work_dir: Some(tmp.path().join("profile")),
        firmware_target_dir: Some(shared_target_dir()),
        precision: Precision::Int8,
        winograd: true,
        ..Default::default()
    };
    let table = profile(&parent, "cortex-m4-qemu", &GridOptions::default(), &options)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(table.winograd);
    let path = tmp.path().join("latency8w.json");
    table.write(&path).unwrap();
    assert_eq!(LatencyTable::load(&path).unwrap(), table);
    match &table.layer("conv3").unwrap().grid {
        Grid::InOut { in_channels, .. } => {
            assert!(
                in_channels.windows(2).any(|w| w == [7, 8]),
                "{in_channels:?}"
            )
        }
        g => panic!("conv3: {g:?}"),
    }
    // conv2 and conv3 run Winograd's kernel from 8 channels, the direct one below.
    let variants = [[8, 8, 16], [5, 3, 13], [8, 7, 9], [7, 8, 12]];
    let worst = worst_error(&table, &parent, &variants, tmp.path(), |arch, dir| {
        measure_int8_by(arch, "cortex-m4-qemu", dir, true)
    });
    // The contract is 10%; measured within 0.6%, so 5% catches a layer compiled differently
    // alone and in a model.
    assert!(worst < 0.10, "worst error {worst}");
    assert!(worst < 0.05, "worst error {worst}");
}

#[test]
fn real_board_profile_builds_and_needs_a_probe() {
    if dnal_firmware::deploy::which("probe-rs").is_some() {
        return; // With probe-rs the profile would try to run on a board.
    }
    let tmp = tempfile::tempdir().unwrap();
    let options = ProfileOptions {
        work_dir: Some(tmp.path().join("profile")),
        firmware_target_dir: Some(shared_target_dir()),
        ..Default::default()
    };
    let e = profile(
        &mini_vgg(),
        "stm32f746zg",
        &GridOptions::default(),
        &options,
    )
    .unwrap_err();
    let LatencyError::ProbeNeeded { elfs, chip, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(chip, "STM32F746ZGTx");
    assert!(
        elfs.len() >= 2 && elfs.iter().all(|p| p.exists()),
        "{elfs:?}"
    );
    assert!(e.to_string().contains("need probe-rs"), "{e}");
    let config =
        std::fs::read_to_string(tmp.path().join("profile").join(".cargo/config.toml")).unwrap();
    assert!(config.contains("-Tdefmt.x"), "{config}");
}
