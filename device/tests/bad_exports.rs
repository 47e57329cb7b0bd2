//! Exports a reader cannot trust, and models that do not fit: clear errors, nothing
//! half-written.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use dnal_device::deploy::{DeployError, DeployRequest, deploy};
use dnal_device::export::{Export, ExportError, Layer, Op, Tensor};
use dnal_device::kernels::{Activation, Shape3};
use dnal_device::synth::{conv, linear, random_export, tiny_cnn_arch};
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
    edit_arch(tmp.path(), |v| v["version"] = 2.into());
    let e = load_err(tmp.path());
    assert!(
        matches!(e, ExportError::UnknownVersion { found: 2, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("arch.json: unknown version 2"),
        "{e}"
    );
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
    let arch = dnal_device::export::Arch::new("big-fc", Shape3::new(1, 64, 64), 80, layers);
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
    let arch = dnal_device::export::Arch::new("big-act", Shape3::new(3, 128, 128), 10, layers);
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
