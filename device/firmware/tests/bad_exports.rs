//! Exports a reader cannot trust, and models that do not fit: clear errors, nothing
//! half-written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use dnal_export::{Export, ExportError, Layer, Op, Tensor};
use dnal_firmware::deploy::{DeployError, DeployRequest, deploy};
use dnal_firmware::synth::{conv, linear, random_export, tiny_cnn_arch};
use dnal_kernels::{Activation, Shape3};
use safetensors::{Dtype, tensor::TensorView};

fn good_export(dir: &Path) -> Export {
    let export = random_export(tiny_cnn_arch("tiny"), 3).unwrap();
    export.write(dir).unwrap();
    export
}

fn edit_arch(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("arch.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// Rewrites weights.safetensors from `tensors`, with one tensor optionally stored as f64.
fn write_weights(dir: &Path, tensors: &BTreeMap<String, Tensor>, as_f64: Option<&str>) {
    let raw: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            if Some(name.as_str()) == as_f64 {
                let bytes = t
                    .data
                    .iter()
                    .flat_map(|v| (*v as f64).to_le_bytes())
                    .collect();
                (name.clone(), t.shape.clone(), Dtype::F64, bytes)
            } else {
                let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), t.shape.clone(), Dtype::F32, bytes)
            }
        })
        .collect();
    let views: Vec<(String, TensorView)> = raw
        .iter()
        .map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    fs::write(
        dir.join("weights.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
}

fn load_err(dir: &Path) -> ExportError {
    match Export::load(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn round_trip_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let export = good_export(tmp.path());
    let back = Export::load(tmp.path()).unwrap();
    assert_eq!(back.arch(), export.arch());
    assert_eq!(back.tensors(), export.tensors());
    assert_eq!(back.summary().macs, export.arch().flops);
    // No temporary files are left behind by the writer.
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["arch.json", "weights.safetensors"]);
}

#[test]
fn missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    good_export(tmp.path());
    fs::remove_file(tmp.path().join("weights.safetensors")).unwrap();
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::MissingFile { path } if path.ends_with("weights.safetensors")),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("weights.safetensors: file is missing"),
        "{e}"
    );
    fs::remove_file(tmp.path().join("arch.json")).unwrap();
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::MissingFile { path } if path.ends_with("arch.json")),
        "{e}"
    );
}

#[test]
fn unknown_version_and_format() {
    let tmp = tempfile::tempdir().unwrap();
    good_export(tmp.path());
    edit_arch(tmp.path(), |v| v["version"] = 3.into());
    let e = load_err(tmp.path());
    assert!(
        matches!(e, ExportError::UnknownVersion { found: 3, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("arch.json: unknown version 3"),
        "{e}"
    );
    // Version 2 is int8: an f32 export that claims it is refused for what it lacks.
    edit_arch(tmp.path(), |v| v["version"] = 2.into());
    let e = load_err(tmp.path());
    assert!(e.to_string().contains("version 2 is an int8 export"), "{e}");
    edit_arch(tmp.path(), |v| {
        v["version"] = 1.into();
        v["format"] = "onnx".into();
    });
    assert!(matches!(
        load_err(tmp.path()),
        ExportError::UnknownFormat { .. }
    ));
    edit_arch(tmp.path(), |v| v["layers"][0]["op"] = "conv3d".into());
    let e = load_err(tmp.path());
    assert!(matches!(e, ExportError::Json { .. }), "{e}");
    assert!(e.to_string().contains("conv3d"), "{e}");
}

#[test]
fn shapes_that_disagree() {
    let tmp = tempfile::tempdir().unwrap();
    good_export(tmp.path());
    // A declared output that the layer cannot produce.
    edit_arch(tmp.path(), |v| {
        v["layers"][0]["output"]["height"] = 11.into()
    });
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::OutputShape { index: 0, name, declared, computed, .. }
            if name == "conv1" && declared.height == 11 && computed.height == 12),
        "{e}"
    );
    assert!(e.to_string().contains("8x11x12"), "{e}");
    // in_channels that disagree with the input value.
    good_export(tmp.path());
    edit_arch(tmp.path(), |v| v["layers"][1]["in_channels"] = 4.into());
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::InvalidLayer { index: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("in_channels is 4"), "{e}");
    // A kernel larger than the padded input is refused at plan time, with the sizes.
    good_export(tmp.path());
    edit_arch(tmp.path(), |v| {
        v["layers"][5]["kernel"] = serde_json::json!([9, 9])
    });
    let e = load_err(tmp.path());
    assert!(
        e.to_string().contains("larger than the padded input"),
        "{e}"
    );
    // An input that refers forward.
    good_export(tmp.path());
    edit_arch(tmp.path(), |v| {
        v["layers"][2]["inputs"] = serde_json::json!([5])
    });
    let e = load_err(tmp.path());
    assert!(
        matches!(
            e,
            ExportError::ForwardInput {
                index: 2,
                input: 5,
                ..
            }
        ),
        "{e}"
    );
    // flops that disagree with the layer list.
    good_export(tmp.path());
    edit_arch(tmp.path(), |v| v["flops"] = 5.into());
    let e = load_err(tmp.path());
    assert!(
        matches!(
            e,
            ExportError::TotalMismatch {
                field: "flops",
                declared: 5,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn tensors_that_cannot_be_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let export = good_export(tmp.path());
    let tensors = export.tensors().clone();

    write_weights(tmp.path(), &tensors, Some("fc.weight"));
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::WrongDtype { name, .. } if name == "fc.weight"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("weights.safetensors: tensor \"fc.weight\" has dtype F64"),
        "{e}"
    );

    let mut nan = tensors.clone();
    nan.get_mut("dw.weight").unwrap().data[5] = f32::NAN;
    write_weights(tmp.path(), &nan, None);
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::NonFinite { name, index: 5, .. } if name == "dw.weight"),
        "{e}"
    );

    let mut inf = tensors.clone();
    inf.get_mut("fc.bias").unwrap().data[0] = f32::INFINITY;
    assert!(matches!(
        Export::new(export.arch().clone(), inf),
        Err(ExportError::NonFinite { .. })
    ));

    let mut missing = tensors.clone();
    missing.remove("pw.bias");
    write_weights(tmp.path(), &missing, None);
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::MissingTensor { name, .. } if name == "pw.bias"),
        "{e}"
    );

    let mut unknown = tensors.clone();
    unknown.insert("ghost.weight".into(), Tensor::new(vec![1], vec![0.0]));
    write_weights(tmp.path(), &unknown, None);
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::UnknownTensor { name, .. } if name == "ghost.weight"),
        "{e}"
    );

    let mut reshaped = tensors.clone();
    let t = reshaped.get_mut("conv1.weight").unwrap();
    t.shape = vec![8, 27];
    write_weights(tmp.path(), &reshaped, None);
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::TensorShape { name, .. } if name == "conv1.weight"),
        "{e}"
    );

    fs::write(
        tmp.path().join("weights.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    assert!(matches!(
        load_err(tmp.path()),
        ExportError::Safetensors { .. }
    ));
}

/// Entries of `dir` (to check that nothing half-written is left behind).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn deploy_refuses_bad_exports_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let export_dir = tmp.path().join("export");
    good_export(&export_dir);
    edit_arch(&export_dir, |v| {
        v["layers"][0]["output"]["channels"] = 9.into()
    });
    let out = tmp.path().join("fw");
    let e = deploy(&DeployRequest::new(&export_dir, "cortex-m4-qemu", &out)).unwrap_err();
    assert!(
        matches!(e, DeployError::Export(ExportError::OutputShape { .. })),
        "{e}"
    );
    assert!(!out.exists());
    assert_eq!(entries(tmp.path()), std::slice::from_ref(&export_dir));

    let e = deploy(&DeployRequest::new(&export_dir, "cortex-m99", &out)).unwrap_err();
    assert!(
        e.to_string().contains("unknown board \"cortex-m99\""),
        "{e}"
    );
    assert!(e.to_string().contains("cortex-m4-qemu"), "{e}");
}

#[test]
fn over_budget_models_are_refused_before_building() {
    let tmp = tempfile::tempdir().unwrap();
    // Flash: a 4096 -> 80 classifier is 1.3 MB of weights; the M4 machine has 1 MiB.
    let layers = vec![Layer::new(
        "fc",
        vec![0],
        linear(4096, 80, Activation::None),
    )];
    let arch = dnal_export::Arch::new("big-fc", Shape3::new(1, 64, 64), 80, layers);
    let export_dir = tmp.path().join("big-fc");
    random_export(arch, 1).unwrap().write(&export_dir).unwrap();
    let out = tmp.path().join("fw-flash");
    let e = deploy(&DeployRequest::new(&export_dir, "cortex-m4-qemu", &out)).unwrap_err();
    match &e {
        DeployError::OverBudget {
            memory,
            needed,
            available,
            ..
        } => {
            assert_eq!(*memory, "flash");
            assert_eq!(*available, 1024 * 1024);
            assert!(*needed > 4096 * 80 * 4);
        }
        other => panic!("expected OverBudget, got {other}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("does not fit cortex-m4-qemu: flash needs"),
        "{text}"
    );
    assert!(!out.exists());

    // RAM: 16 x 128 x 128 activations are 1 MiB; the M4 machine has 256 KiB.
    let layers = vec![
        Layer::new(
            "conv",
            vec![0],
            conv(3, 16, 3, 1, 1, false, Activation::Relu),
        ),
        Layer::new("gap", vec![1], Op::GlobalAvgPool),
        Layer::new("fc", vec![2], linear(16, 10, Activation::None)),
    ];
    let arch = dnal_export::Arch::new("big-act", Shape3::new(3, 128, 128), 10, layers);
    let export_dir = tmp.path().join("big-act");
    random_export(arch, 2).unwrap().write(&export_dir).unwrap();
    let out = tmp.path().join("fw-ram");
    let e = deploy(&DeployRequest::new(&export_dir, "cortex-m4-qemu", &out)).unwrap_err();
    assert!(
        matches!(&e, DeployError::OverBudget { memory: "RAM", available, .. } if *available == 256 * 1024),
        "{e}"
    );
    assert!(!out.exists());
    // Nothing else appeared beside the exports (no temporary firmware folder).
    assert_eq!(
        entries(tmp.path()),
        [tmp.path().join("big-act"), tmp.path().join("big-fc")]
    );
}

#[test]
fn deploy_refuses_to_replace_a_foreign_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let export_dir = tmp.path().join("export");
    good_export(&export_dir);
    let out = tmp.path().join("precious");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("notes.txt"), "mine").unwrap();
    let e = deploy(&DeployRequest::new(&export_dir, "host", &out)).unwrap_err();
    assert!(matches!(e, DeployError::OutDir { .. }), "{e}");
    assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
}

/// Names that would inject code, TOML or terminal escapes if pasted anywhere.
const HOSTILE_NAMES: &[&str] = &[
    "x\nfn evil() {}",
    "a*/b",
    "say \"hi\"",
    "T-shirt/top",
    "tab\there",
    "\u{1b}[2J",
    "é",
    "line\u{2028}sep",
    "",
];

#[test]
fn hostile_names_are_refused_by_load_and_new() {
    let tmp = tempfile::tempdir().unwrap();
    let export = good_export(tmp.path());
    for &name in HOSTILE_NAMES {
        // A layer name (and the weights that follow it, so only the name is wrong).
        let mut arch = export.arch().clone();
        arch.layers[2].name = name.to_string();
        let mut tensors = export.tensors().clone();
        for part in ["weight", "bias"] {
            let t = tensors.remove(&format!("pw.{part}")).unwrap();
            tensors.insert(format!("{name}.{part}"), t);
        }
        let e = Export::new(arch.clone(), tensors).unwrap_err();
        assert!(
            matches!(&e, ExportError::BadName { field, name: n, .. }
                if field == "layers[2].name" && n == name),
            "{name:?}: {e}"
        );
        let text = e.to_string();
        assert!(text.contains("A-Z a-z 0-9 _ . + -"), "{text}");
        assert!(
            !text.contains('\n'),
            "the error prints the name escaped: {text}"
        );
        edit_arch(tmp.path(), |v| v["layers"][2]["name"] = name.into());
        let e = load_err(tmp.path());
        assert!(
            matches!(&e, ExportError::BadName { field, .. } if field == "layers[2].name"),
            "{name:?}: {e}"
        );
        assert!(e.to_string().contains("arch.json"), "{e}");
        good_export(tmp.path());

        // The model's name and dataset.
        for key in ["name", "dataset"] {
            if key == "dataset" && name.is_empty() {
                continue; // "" means no dataset named
            }
            edit_arch(tmp.path(), |v| v[key] = name.into());
            let e = load_err(tmp.path());
            assert!(
                matches!(&e, ExportError::BadName { field, .. } if field == key),
                "{key} {name:?}: {e}"
            );
            good_export(tmp.path());
        }
    }
    // The names the host writes pass.
    let mut arch = export.arch().clone();
    arch.name = "vgg-small".into();
    arch.dataset = "fashion-mnist".into();
    arch.layers[2].name = "s1b1.conv1".into();
    let mut tensors = export.tensors().clone();
    for part in ["weight", "bias"] {
        let t = tensors.remove(&format!("pw.{part}")).unwrap();
        tensors.insert(format!("s1b1.conv1.{part}"), t);
    }
    Export::new(arch, tensors).unwrap();
}

#[test]
fn class_names_may_hold_text_but_no_control_characters() {
    let tmp = tempfile::tempdir().unwrap();
    good_export(tmp.path());
    let mut classes: Vec<String> = (0..10).map(|i| format!("class {i}")).collect();
    classes[0] = "T-shirt/top".into();
    classes[1] = "Ankle boot \"quoted\" */".into();
    edit_arch(tmp.path(), |v| v["classes"] = serde_json::json!(classes));
    Export::load(tmp.path()).unwrap();
    for bad in ["new\nline", "\u{1b}[31mred", &"x".repeat(257)] {
        let mut c = classes.clone();
        c[4] = bad.to_string();
        edit_arch(tmp.path(), |v| v["classes"] = serde_json::json!(c));
        let e = load_err(tmp.path());
        assert!(
            matches!(&e, ExportError::InvalidField { field, .. } if field == "classes[4]"),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[test]
fn wrapping_and_huge_integers_are_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    good_export(tmp.path());
    let half: u64 = 1 << 63;
    // Each: (layer, field, value, words the error must hold).
    let cases: &[(usize, &str, serde_json::Value, &str)] = &[
        // max pool padding 2^63: `2 * padding` wrapped to 0 and passed.
        (
            4,
            "padding",
            serde_json::json!([half, half]),
            "padding[0] is 9223372036854775808",
        ),
        (6, "padding", serde_json::json!([half, 0]), "above 65536"),
        (
            0,
            "padding",
            serde_json::json!([u64::MAX, 1]),
            "above 65536",
        ),
        (
            0,
            "kernel",
            serde_json::json!([u64::MAX, u64::MAX]),
            "above 65536",
        ),
        (0, "stride", serde_json::json!([1, half]), "above 65536"),
        (
            0,
            "out_channels",
            serde_json::json!(half + 1),
            "above 65536",
        ),
        (1, "in_channels", serde_json::json!(u64::MAX), "above 65536"),
        (1, "groups", serde_json::json!(half), "above 65536"),
        (
            8,
            "out_features",
            serde_json::json!(half + 1),
            "above 65536",
        ),
        (
            8,
            "in_features",
            serde_json::json!(u64::MAX),
            "above 2147483648",
        ),
        // Within the per-dimension limit, but the padded output is too wide.
        (
            0,
            "padding",
            serde_json::json!([65536, 65536]),
            "dimension above 65536",
        ),
    ];
    for (layer, key, value, words) in cases {
        good_export(tmp.path());
        edit_arch(tmp.path(), |v| v["layers"][*layer][*key] = value.clone());
        let e = load_err(tmp.path());
        assert!(
            matches!(&e, ExportError::InvalidLayer { index, .. } if index == layer),
            "{key} = {value}: {e}"
        );
        assert!(e.to_string().contains(words), "{key} = {value}: {e}");
    }
    // Input channels 2^63 + 1 (deploy panicked with exit 101) and other huge inputs.
    for input in [
        serde_json::json!({"channels": half + 1, "height": 12, "width": 12}),
        serde_json::json!({"channels": 3, "height": u64::MAX, "width": u64::MAX}),
        serde_json::json!({"channels": 65536, "height": 65536, "width": 2}),
        serde_json::json!({"channels": 0, "height": 12, "width": 12}),
    ] {
        good_export(tmp.path());
        edit_arch(tmp.path(), |v| v["input"] = input.clone());
        let e = load_err(tmp.path());
        assert!(
            matches!(&e, ExportError::InvalidField { field, .. } if field == "input"),
            "{input}: {e}"
        );
    }
    // Declared totals at the top of u64, a negative count, more than u64.
    for (key, value) in [
        ("flops", serde_json::json!(u64::MAX)),
        ("num_classes", serde_json::json!(half + 10)),
    ] {
        good_export(tmp.path());
        edit_arch(tmp.path(), |v| v[key] = value.clone());
        load_err(tmp.path());
    }
    for value in ["-1", "18446744073709551616", "1e400"] {
        good_export(tmp.path());
        let path = tmp.path().join("arch.json");
        let text = fs::read_to_string(&path).unwrap();
        let text = text.replacen(
            "\"num_classes\": 10",
            &format!("\"num_classes\": {value}"),
            1,
        );
        fs::write(&path, text).unwrap();
        assert!(matches!(load_err(tmp.path()), ExportError::Json { .. }));
    }
    // Too many layers, too many inputs to one layer.
    good_export(tmp.path());
    edit_arch(tmp.path(), |v| {
        v["layers"][3]["inputs"] = serde_json::json!(vec![1; 65]);
    });
    let e = load_err(tmp.path());
    assert!(e.to_string().contains("at most 64"), "{e}");
}

#[test]
fn absurd_normalisation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    good_export(tmp.path());
    let ok = serde_json::json!({"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.25, 1e-6]});
    edit_arch(tmp.path(), |v| v["normalization"] = ok.clone());
    Export::load(tmp.path()).unwrap();
    // JSON has no inf or NaN literal: 1e39 does not fit an f32, and the reader (serde_json with
    // float_roundtrip) refuses it as out of range at its line and column.
    for (key, values, field) in [
        ("std", "[0.25, 0.25, 1e39]", "normalization.std[2]"),
        ("std", "[0.25, 1e-30, 0.25]", "normalization.std[1]"),
        ("std", "[0.25, 0.0, 0.25]", "normalization.std[1]"),
        ("std", "[-0.25, 0.25, 0.25]", "normalization.std[0]"),
        ("std", "[0.25, 0.25, 1e7]", "normalization.std[2]"),
        ("mean", "[1e39, 0.4, 0.3]", "normalization.mean[0]"),
        ("mean", "[0.5, -1e7, 0.3]", "normalization.mean[1]"),
    ] {
        let path = tmp.path().join("arch.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        v["normalization"] = ok.clone();
        let text = serde_json::to_string_pretty(&v).unwrap();
        let original = if key == "std" {
            "[\n      0.25,\n      0.25,\n      1e-6\n    ]"
        } else {
            "[\n      0.5,\n      0.4,\n      0.3\n    ]"
        };
        assert!(text.contains(original), "{text}");
        fs::write(&path, text.replacen(original, values, 1)).unwrap();
        let e = load_err(tmp.path());
        let out_of_range = values.contains("1e39")
            && matches!(&e, ExportError::Json { .. })
            && e.to_string().contains("out of range");
        assert!(
            out_of_range || matches!(&e, ExportError::InvalidField { field: f, .. } if f == field),
            "{values}: {e}"
        );
    }
}

#[cfg(unix)]
#[test]
fn fifos_folders_devices_and_huge_files_are_refused_before_reading() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let export = good_export(tmp.path());
    let start = Instant::now();
    for file in ["arch.json", "weights.safetensors"] {
        // A FIFO: reading it would block forever with no writer.
        good_export(tmp.path());
        let path = tmp.path().join(file);
        fs::remove_file(&path).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let e = load_err(tmp.path());
        assert!(
            matches!(&e, ExportError::NotAFile { kind: "a FIFO", path: p } if p.ends_with(file)),
            "{e}"
        );
        // A folder.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let e = load_err(tmp.path());
        assert!(
            matches!(
                &e,
                ExportError::NotAFile {
                    kind: "a folder",
                    ..
                }
            ),
            "{e}"
        );
        fs::remove_dir(&path).unwrap();
        // A device, through a symlink.
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let e = load_err(tmp.path());
        assert!(
            matches!(
                &e,
                ExportError::NotAFile {
                    kind: "a device",
                    ..
                }
            ),
            "{e}"
        );
        fs::remove_file(&path).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(10));

    // A sparse 100 MiB arch.json: refused from its size, without reading it.
    good_export(tmp.path());
    let arch = fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("arch.json"))
        .unwrap();
    arch.set_len(100 << 20).unwrap();
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::TooLarge { size, limit, .. }
            if *size == 100 << 20 && *limit == 16 << 20),
        "{e}"
    );
    // Weights far larger than the layer list needs (a few KiB of parameters).
    good_export(tmp.path());
    let weights = fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("weights.safetensors"))
        .unwrap();
    weights.set_len(64 << 20).unwrap();
    let e = load_err(tmp.path());
    assert!(
        matches!(&e, ExportError::TooLarge { limit, .. }
            if *limit == export.summary().params * 4 + (16 << 20)),
        "{e}"
    );
    assert!(e.to_string().contains("parameters"), "{e}");
}

#[test]
fn interrupted_writes_leave_temporaries_that_can_be_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let export = good_export(tmp.path());
    // What a kill mid-write leaves: this version's names and the older `.NAME.tmp-PID`.
    let leftovers = [
        ".weights.safetensors.tmp-4242-0-123456789",
        ".arch.json.tmp-4242-7-1",
        ".weights.safetensors.tmp-99",
    ];
    for name in leftovers {
        fs::write(tmp.path().join(name), b"half").unwrap();
    }
    // Not ours: kept.
    let keep = [".hidden", "notes.tmp-1", ".x.tmp-1-2-3-4", ".dir.tmp-5"];
    for name in &keep[..3] {
        fs::write(tmp.path().join(name), b"keep").unwrap();
    }
    fs::create_dir(tmp.path().join(keep[3])).unwrap();
    // Writers in one process, at once, into one folder: no collision, nothing left over.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| export.write(tmp.path()).unwrap());
        }
    });
    Export::load(tmp.path()).unwrap();
    let removed = dnal_export::remove_stale_temporaries(tmp.path()).unwrap();
    assert_eq!(removed, leftovers.len());
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = ["arch.json", "weights.safetensors"]
        .iter()
        .chain(&keep)
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        dnal_export::remove_stale_temporaries(tmp.path()).unwrap(),
        0
    );
}

#[test]
fn a_huge_input_is_refused_by_the_budget_before_any_image_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    // 3x4096x4096: two synthetic images alone would be 400 MB.
    let layers = vec![
        Layer::new("gap", vec![0], Op::GlobalAvgPool),
        Layer::new("fc", vec![1], linear(3, 10, Activation::None)),
    ];
    let arch = dnal_export::Arch::new("huge-in", Shape3::new(3, 4096, 4096), 10, layers);
    let export_dir = tmp.path().join("huge-in");
    random_export(arch, 1).unwrap().write(&export_dir).unwrap();
    let out = tmp.path().join("fw");
    let start = std::time::Instant::now();
    let e = deploy(&DeployRequest::new(&export_dir, "cortex-m4-qemu", &out)).unwrap_err();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    match &e {
        DeployError::OverBudget {
            board,
            memory,
            needed,
            ..
        } => {
            assert_eq!(board, "cortex-m4-qemu");
            assert_eq!(*memory, "flash");
            assert!(*needed >= 2 * 3 * 4096 * 4096 * 4);
        }
        other => panic!("expected OverBudget, got {other}"),
    }
    assert!(
        e.to_string().contains("2 test images of 3x4096x4096"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn non_finite_images_are_refused_before_generating_code() {
    let tmp = tempfile::tempdir().unwrap();
    let export_dir = tmp.path().join("export");
    let export = good_export(&export_dir);
    let mut req = DeployRequest::new(&export_dir, "host", tmp.path().join("fw"));
    let mut image = vec![0.5; export.input_len()];
    image[17] = f32::INFINITY;
    req.images = vec![image];
    let e = deploy(&req).unwrap_err();
    assert!(
        matches!(&e, DeployError::Images(why) if why.contains("image 0 holds inf at value 17")),
        "{e}"
    );
}
