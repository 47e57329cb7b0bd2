//! A generated firmware crate builds where it is moved, with nothing from the source tree dnal
//! was built from: it vendors the kernels and names no path outside itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use dnal_firmware::deploy::{DeployRequest, deploy, synthetic_images};
use dnal_firmware::synth::{random_export, tiny_cnn_arch};

/// Every regular file under `dir`, outside `target/` folders.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() && entry.file_name() != "target" {
            files(&path, out);
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

/// Copies `from` into `to` (created), `target/` folders left out as a commit would.
fn copy_tree(from: &Path, to: &Path) {
    let mut all = Vec::new();
    files(from, &mut all);
    for file in all {
        let dest = to.join(file.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&file, &dest).unwrap();
    }
}

#[test]
fn a_moved_firmware_crate_builds_without_the_source_tree() {
    let source_tree = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let source_tree = source_tree.to_str().unwrap();

    // Generate (and build once, as `dnal deploy` does) into one folder ...
    let made = tempfile::tempdir().unwrap();
    let export = random_export(tiny_cnn_arch("tiny-portable"), 13).unwrap();
    export.write(made.path().join("export")).unwrap();
    let fw = made.path().join("fw");
    let mut req = DeployRequest::new(made.path().join("export"), "host", &fw);
    req.images = synthetic_images(export.input_len(), 2);
    req.firmware_target_dir = Some(made.path().join("target"));
    deploy(&req).unwrap();

    // ... move it to another, and drop the first.
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("my-firmware");
    copy_tree(&fw, &moved);
    drop(made);

    let mut moved_files = Vec::new();
    files(&moved, &mut moved_files);
    assert!(
        moved_files
            .iter()
            .any(|f| f.ends_with("vendor/dnal-kernels/src/f32/arm/conv3x3_tile.s")),
        "the kernels are vendored: {moved_files:?}"
    );
    for file in &moved_files {
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(source_tree),
            "{} names the source tree {source_tree}",
            file.display()
        );
    }

    // Only cargo and the board's target: offline, a target folder of its own, no flags or
    // settings from this test's environment.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(&cargo)
        .current_dir(&moved)
        .args(["build", "--offline"])
        .env("CARGO_TARGET_DIR", elsewhere.path().join("target"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the moved crate does not build:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let package = std::fs::read_to_string(moved.join("Cargo.toml")).unwrap();
    let name = package
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string();
    let run = Command::new(elsewhere.path().join("target/debug").join(&name))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the moved firmware does not run:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("DNAL logits 1"));
}
