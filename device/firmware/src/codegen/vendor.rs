//! The dnal-kernels sources, embedded in dnal-firmware and written into every firmware crate
//! it generates (`vendor/dnal-kernels/`).
//!
//! A firmware crate depends on the kernels by the relative path [`VENDOR_DIR`], never on the
//! source tree dnal was built from: it builds wherever it is copied, with only cargo and the
//! board's target, even after dnal's own sources are gone. The kernels have no dependencies,
//! so the vendored copy needs nothing from a registry either.

use std::path::Path;

use super::{CodegenError, write_file};

/// Where the vendored crate goes, relative to the firmware crate.
pub const VENDOR_DIR: &str = "vendor/dnal-kernels";

/// Every file under `device/kernels/src`, as `(path relative to src/, contents)`. A unit
/// test checks this list against the folder, so a new kernel file cannot be forgotten.
pub const KERNEL_SOURCES: &[(&str, &str)] = &[
    ("arena.rs", include_str!("../../../kernels/src/arena.rs")),
    (
        "f32/arm/conv3x3_tile.s",
        include_str!("../../../kernels/src/f32/arm/conv3x3_tile.s"),
    ),
    (
        "f32/arm/mod.rs",
        include_str!("../../../kernels/src/f32/arm/mod.rs"),
    ),
    (
        "f32/conv2d.rs",
        include_str!("../../../kernels/src/f32/conv2d.rs"),
    ),
    (
        "f32/depthwise.rs",
        include_str!("../../../kernels/src/f32/depthwise.rs"),
    ),
    (
        "f32/elementwise.rs",
        include_str!("../../../kernels/src/f32/elementwise.rs"),
    ),
    (
        "f32/linear.rs",
        include_str!("../../../kernels/src/f32/linear.rs"),
    ),
    (
        "f32/mod.rs",
        include_str!("../../../kernels/src/f32/mod.rs"),
    ),
    (
        "f32/pointwise.rs",
        include_str!("../../../kernels/src/f32/pointwise.rs"),
    ),
    (
        "f32/pool.rs",
        include_str!("../../../kernels/src/f32/pool.rs"),
    ),
    (
        "int8/arm/dot2x2.s",
        include_str!("../../../kernels/src/int8/arm/dot2x2.s"),
    ),
    (
        "int8/arm/dot2x2_i16.s",
        include_str!("../../../kernels/src/int8/arm/dot2x2_i16.s"),
    ),
    (
        "int8/arm/dw3x3.s",
        include_str!("../../../kernels/src/int8/arm/dw3x3.s"),
    ),
    (
        "int8/arm/mod.rs",
        include_str!("../../../kernels/src/int8/arm/mod.rs"),
    ),
    (
        "int8/arm/pw_sums.s",
        include_str!("../../../kernels/src/int8/arm/pw_sums.s"),
    ),
    (
        "int8/conv2d.rs",
        include_str!("../../../kernels/src/int8/conv2d.rs"),
    ),
    (
        "int8/depthwise_dsp.rs",
        include_str!("../../../kernels/src/int8/depthwise_dsp.rs"),
    ),
    (
        "int8/depthwise_padded.rs",
        include_str!("../../../kernels/src/int8/depthwise_padded.rs"),
    ),
    (
        "int8/dsp.rs",
        include_str!("../../../kernels/src/int8/dsp.rs"),
    ),
    (
        "int8/elementwise.rs",
        include_str!("../../../kernels/src/int8/elementwise.rs"),
    ),
    (
        "int8/linear.rs",
        include_str!("../../../kernels/src/int8/linear.rs"),
    ),
    (
        "int8/mod.rs",
        include_str!("../../../kernels/src/int8/mod.rs"),
    ),
    (
        "int8/pool.rs",
        include_str!("../../../kernels/src/int8/pool.rs"),
    ),
    (
        "int8/requantize.rs",
        include_str!("../../../kernels/src/int8/requantize.rs"),
    ),
    (
        "int8/sdot.rs",
        include_str!("../../../kernels/src/int8/sdot.rs"),
    ),
    (
        "int8/simd32.rs",
        include_str!("../../../kernels/src/int8/simd32.rs"),
    ),
    (
        "int8/stage.rs",
        include_str!("../../../kernels/src/int8/stage.rs"),
    ),
    (
        "int8/winograd.rs",
        include_str!("../../../kernels/src/int8/winograd.rs"),
    ),
    ("lib.rs", include_str!("../../../kernels/src/lib.rs")),
    ("marker.rs", include_str!("../../../kernels/src/marker.rs")),
    ("params.rs", include_str!("../../../kernels/src/params.rs")),
];

/// The kernels' own manifest. It inherits from dnal's workspace, which a firmware crate does
/// not have, so the vendored manifest is written afresh ([`manifest`]); only its features
/// are copied, so that a feature added there reaches the firmware.
const KERNELS_MANIFEST: &str = include_str!("../../../kernels/Cargo.toml");

/// The kernels' edition (the workspace's, which the vendored manifest cannot inherit).
const KERNELS_EDITION: &str = "2024";

/// The standalone `Cargo.toml` of the vendored kernels: package fields spelled out (no
/// `workspace = true`), the features of the real manifest copied verbatim.
pub fn manifest() -> String {
    format!(
        "# dnal-kernels {version}, vendored by dnal-firmware: the kernels this firmware links.\n\
         # Regenerate the firmware rather than editing these files.\n\
         [package]\nname = \"dnal-kernels\"\nversion = \"{version}\"\nedition = \"{KERNELS_EDITION}\"\n\
         publish = false\n\n{features}",
        version = env!("CARGO_PKG_VERSION"),
        features = features_section(KERNELS_MANIFEST),
    )
}

/// The `[features]` table of a manifest, header and comments included, up to the next table.
fn features_section(manifest: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in manifest.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            inside = trimmed.starts_with("[features]");
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    // Comments just above the next table belong to it; a trailing blank line ends the table.
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// Writes the vendored kernel crate into `firmware_dir/`[`VENDOR_DIR`], replacing what an
/// earlier generation left there (a file the kernels no longer have must not linger).
pub fn write_vendored_kernels(firmware_dir: &Path) -> Result<(), CodegenError> {
    let dir = firmware_dir.join(VENDOR_DIR);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| CodegenError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    write_file(&dir, "Cargo.toml", &manifest())?;
    for (rel, text) in KERNEL_SOURCES {
        write_file(&dir, &format!("src/{rel}"), text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Every file under `dir`, as `/`-separated paths relative to `base`, sorted.
    fn files_under(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap();
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }

    #[test]
    fn every_kernel_source_file_is_vendored() {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernels/src");
        let mut on_disk = Vec::new();
        files_under(&src, &src, &mut on_disk);
        on_disk.sort();
        let mut listed: Vec<String> = KERNEL_SOURCES.iter().map(|(p, _)| p.to_string()).collect();
        listed.sort();
        assert_eq!(
            listed, on_disk,
            "codegen::vendor::KERNEL_SOURCES must list every file of device/kernels/src"
        );
    }

    #[test]
    fn the_vendored_manifest_stands_alone_and_keeps_the_features() {
        let m = manifest();
        assert!(!m.contains("workspace"), "{m}");
        assert!(!m.contains("[lints]"), "{m}");
        assert!(m.contains("name = \"dnal-kernels\""), "{m}");
        assert!(m.contains("\n[features]\n"), "{m}");
        assert!(m.contains("\nfpv5 = []\n"), "{m}");
        assert!(!m.contains("[dependencies]"), "{m}");
        let kernels_edition = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"),
        )
        .unwrap();
        assert!(
            kernels_edition.contains(&format!("edition = \"{KERNELS_EDITION}\"")),
            "the workspace's edition changed: update KERNELS_EDITION"
        );
    }
}
