//! Generate, build and run a small random model natively; compare with reference_forward.

use dnal_export::reference_forward;
use dnal_firmware::synth::{random_export, tiny_cnn_arch};
use dnal_firmware::{DeployRequest, deploy};

/// One target folder for every firmware the tests build: the dependencies build once.
fn shared_target_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dnal-firmware")
}

#[test]
fn host_firmware_matches_reference_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let export = random_export(tiny_cnn_arch("tiny-host"), 7).unwrap();
    let export_dir = tmp.path().join("export");
    export.write(&export_dir).unwrap();

    let images = dnal_firmware::deploy::synthetic_images(export.input_len(), 3);
    let mut req = DeployRequest::new(&export_dir, "host", tmp.path().join("fw"));
    req.run = true;
    req.images = images.clone();
    req.firmware_target_dir = Some(shared_target_dir());
    let report = deploy(&req).unwrap();
    let keep = std::env::var_os("DNAL_KEEP_FW").map(std::path::PathBuf::from);
    if let Some(dir) = keep {
        let _ = std::fs::remove_dir_all(&dir);
        std::process::Command::new("cp")
            .arg("-r")
            .arg(tmp.path().join("fw"))
            .arg(&dir)
            .status()
            .unwrap();
    }

    let parity = report.parity.as_ref().unwrap();
    assert_eq!(parity.reference, "reference_forward");
    assert_eq!(parity.images, 3);
    assert!(
        parity.max_abs_diff < 1e-4,
        "max abs diff {}",
        parity.max_abs_diff
    );
    assert_eq!(parity.top1_agreement, 1.0);
    for (got, image) in report.logits.iter().zip(&images) {
        let want = reference_forward(&export, image);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{g} vs {w}");
        }
    }
    let cost = report.cost.as_ref().unwrap();
    assert_eq!(cost.unit, "wall_ns");
    assert!(cost.per_inference > 0.0);
    assert!(report.stack_bytes.unwrap() > 0);
    assert!(report.flash_bytes > report.weights_bytes);
    assert!(report.arena_bytes >= report.arena_lower_bound_bytes);

    // deploy.json is written and reads back as the same report.
    let json = std::fs::read_to_string(tmp.path().join("fw/deploy.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "board",
        "flash_bytes",
        "ram_bytes",
        "stack_bytes",
        "cost",
        "parity",
    ] {
        assert!(value.get(key).is_some(), "deploy.json lacks {key}");
    }
    assert!(value["cost"]["unit"].is_string() && value["cost"]["per_inference"].is_number());
    for key in ["images", "max_abs_diff", "top1_agreement"] {
        assert!(value["parity"].get(key).is_some(), "parity lacks {key}");
    }
    // The generated model is readable: layers named with their shapes.
    let model = std::fs::read_to_string(tmp.path().join("fw/src/model.rs")).unwrap();
    assert!(model.contains("Layer 0, conv1: conv2d 3x3"), "{model}");
    assert!(model.contains("value 0 (3x12x12) -> 8x12x12"), "{model}");
}

/// Odd shapes through the whole generator: 1x1 images, one channel, kernels as large as
/// the padded input, a single layer that reads the image and writes the logits directly,
/// and an add that reads the image.
#[test]
fn odd_shapes_match_reference_forward() {
    use dnal_export::{Arch, Layer, Op};
    use dnal_firmware::synth::{add, conv, linear, pool};
    use dnal_kernels::{Activation::*, Shape3};

    let models = vec![
        Arch::new(
            "one-pixel",
            Shape3::new(1, 1, 1),
            2,
            vec![
                Layer::new("c", vec![0], conv(1, 3, 3, 1, 1, false, Relu)),
                Layer::new("fc", vec![1], linear(3, 2, None)),
            ],
        ),
        Arch::new(
            "single-layer",
            Shape3::new(2, 3, 3),
            5,
            vec![Layer::new("fc", vec![0], linear(18, 5, None))],
        ),
        Arch::new(
            "odd",
            Shape3::new(1, 5, 7),
            3,
            vec![
                Layer::new("wide", vec![0], conv(1, 1, 5, 1, 2, false, Relu6)),
                Layer::new("skip", vec![0, 1], add(None)),
                Layer::new("dw", vec![2], conv(1, 1, 3, 2, 1, true, None)),
                Layer::new("pool", vec![3], pool(true, 3, 2, 1)),
                Layer::new("avg", vec![4], pool(false, 2, 1, 1)),
                Layer::new("gap", vec![5], Op::GlobalAvgPool),
                Layer::new("fc", vec![6], linear(1, 3, None)),
            ],
        ),
    ];
    for arch in models {
        let name = arch.name.clone();
        let tmp = tempfile::tempdir().unwrap();
        let export = random_export(arch, 9).unwrap();
        export.write(tmp.path().join("export")).unwrap();
        let mut req = DeployRequest::new(tmp.path().join("export"), "host", tmp.path().join("fw"));
        req.run = true;
        req.images = dnal_firmware::deploy::synthetic_images(export.input_len(), 2);
        req.firmware_target_dir = Some(shared_target_dir());
        let report = deploy(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
        let parity = report.parity.unwrap();
        assert!(
            parity.max_abs_diff < 1e-4,
            "{name}: {}",
            parity.max_abs_diff
        );
        assert_eq!(report.logits.len(), 2);
        if name == "single-layer" {
            assert_eq!(
                report.arena_bytes, 0,
                "the image and the logits need no arena"
            );
        }
    }
}
