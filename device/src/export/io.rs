//! Reading and writing export folders.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{ARCH_FILE, Arch, ArchSummary, Export, ExportError, Tensor, WEIGHTS_FILE};

impl Export {
    /// Reads and validates an export folder (`arch.json` + `weights.safetensors`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Export, ExportError> {
        let dir = dir.as_ref();
        let arch_path = dir.join(ARCH_FILE);
        let text = read_file(&arch_path)?;
        let arch: Arch = serde_json::from_slice(&text).map_err(|source| ExportError::Json {
            path: arch_path.clone(),
            source,
        })?;
        let summary = arch.summary().map_err(|e| with_path(e, &arch_path))?;

        let weights_path = dir.join(WEIGHTS_FILE);
        let file = fs::File::open(&weights_path).map_err(|e| io_error(e, &weights_path))?;
        // NOTE(unsafe): the file is mapped read-only and copied out before the map is dropped;
        // the usual caveat of maps (another process truncating the file meanwhile) applies.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(e, &weights_path))?;
        let st = SafeTensors::deserialize(&map).map_err(|e| ExportError::Safetensors {
            path: weights_path.clone(),
            reason: e.to_string(),
        })?;
        let mut tensors = BTreeMap::new();
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        for name in names {
            let view = st.tensor(&name).map_err(|e| ExportError::Safetensors {
                path: weights_path.clone(),
                reason: e.to_string(),
            })?;
            if view.dtype() != Dtype::F32 {
                return Err(ExportError::WrongDtype {
                    path: weights_path,
                    name,
                    dtype: format!("{:?}", view.dtype()),
                });
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(name, Tensor::new(view.shape().to_vec(), data));
        }
        check_tensors(&weights_path, &summary, &tensors)?;
        Ok(Export {
            arch,
            tensors,
            summary,
        })
    }

    /// Writes the export into `dir` (created if needed): each file is written to a temporary
    /// name in `dir` and renamed into place, so a reader never sees a half-written file.
    /// `weights.safetensors` goes first: `arch.json` appearing means the folder is complete.
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<(), ExportError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| io_error(e, dir))?;

        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), t.shape.clone(), raw)
            })
            .collect();
        let weights_path = dir.join(WEIGHTS_FILE);
        let views = bytes
            .iter()
            .map(|(name, shape, raw)| {
                TensorView::new(Dtype::F32, shape.clone(), raw)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| ExportError::Safetensors {
                        path: weights_path.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let serialized =
            safetensors::serialize(views, None).map_err(|e| ExportError::Safetensors {
                path: weights_path.clone(),
                reason: e.to_string(),
            })?;
        write_atomically(&weights_path, &serialized)?;

        let arch_path = dir.join(ARCH_FILE);
        let mut json =
            serde_json::to_vec_pretty(&self.arch).map_err(|source| ExportError::Json {
                path: arch_path.clone(),
                source,
            })?;
        json.push(b'\n');
        write_atomically(&arch_path, &json)
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it to `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(e, path)
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, ExportError> {
    fs::read(path).map_err(|e| io_error(e, path))
}

fn io_error(e: std::io::Error, path: &Path) -> ExportError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ExportError::MissingFile {
            path: path.to_path_buf(),
        }
    } else {
        ExportError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

/// Re-homes an error about `arch.json` onto the file's full path.
fn with_path(e: ExportError, full: &Path) -> ExportError {
    use ExportError::*;
    let p = full.to_path_buf();
    match e {
        UnknownFormat { found, .. } => UnknownFormat { path: p, found },
        UnknownVersion { found, .. } => UnknownVersion { path: p, found },
        InvalidField { field, reason, .. } => InvalidField {
            path: p,
            field,
            reason,
        },
        InvalidLayer {
            index,
            name,
            reason,
            ..
        } => InvalidLayer {
            path: p,
            index,
            name,
            reason,
        },
        ForwardInput {
            index, name, input, ..
        } => ForwardInput {
            path: p,
            index,
            name,
            input,
        },
        OutputShape {
            index,
            name,
            declared,
            computed,
            ..
        } => OutputShape {
            path: p,
            index,
            name,
            declared,
            computed,
        },
        TotalMismatch {
            field,
            declared,
            computed,
            ..
        } => TotalMismatch {
            path: p,
            field,
            declared,
            computed,
        },
        other => other,
    }
}

/// Checks that the tensors are exactly those the layer list needs, with the right shapes and
/// finite values.
pub(crate) fn check_tensors(
    path: &Path,
    summary: &ArchSummary,
    tensors: &BTreeMap<String, Tensor>,
) -> Result<(), ExportError> {
    let path = PathBuf::from(path);
    let mut expected: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for layer in &summary.layers {
        if let Some([w, b]) = &layer.tensor_shapes {
            expected.insert(format!("{}.weight", layer.name), w.clone());
            expected.insert(format!("{}.bias", layer.name), b.clone());
        }
    }
    for name in tensors.keys() {
        if !expected.contains_key(name) {
            return Err(ExportError::UnknownTensor {
                path,
                name: name.clone(),
            });
        }
    }
    for (name, shape) in &expected {
        let Some(t) = tensors.get(name) else {
            return Err(ExportError::MissingTensor {
                path,
                name: name.clone(),
            });
        };
        if &t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
            return Err(ExportError::TensorShape {
                path,
                name: name.clone(),
                expected: shape.clone(),
                found: t.shape.clone(),
            });
        }
        if let Some((index, value)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ExportError::NonFinite {
                path,
                name: name.clone(),
                index,
                value: *value,
            });
        }
    }
    Ok(())
}
