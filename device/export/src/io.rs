//! Reading and writing export folders.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::int8::Int8Export;
use super::limits::{MAX_ARCH_BYTES, MAX_PARAMS, MAX_WEIGHTS_HEADER_BYTES};
use super::{ARCH_FILE, Arch, ArchSummary, Export, ExportError, Precision, Tensor, WEIGHTS_FILE};

impl Export {
    /// Reads and validates an export folder (`arch.json` + `weights.safetensors`).
    pub fn load(dir: impl AsRef<Path>) -> Result<Export, ExportError> {
        let dir = dir.as_ref();
        let (arch, summary) = read_arch(dir)?;
        arch.expect_precision(&dir.join(ARCH_FILE), Precision::F32)?;
        Export::load_weights(dir, arch, summary)
    }

    /// The rest of [`Export::load`], once `arch.json` is read and checked.
    pub(crate) fn load_weights(
        dir: &Path,
        arch: Arch,
        summary: ArchSummary,
    ) -> Result<Export, ExportError> {
        let weights_path = dir.join(WEIGHTS_FILE);
        // The layer list says how much data the file holds; a file far larger is refused
        // before it is mapped (and a FIFO or device before it is opened).
        let limit = summary.params.min(MAX_PARAMS) * 4 + MAX_WEIGHTS_HEADER_BYTES;
        let why = format!(
            "the layer list's {} parameters and a header can take",
            summary.params
        );
        let expected = expected_tensors(&summary)
            .into_iter()
            .map(|(name, shape)| (name, (Dtype::F32, shape)))
            .collect();
        let mut tensors = BTreeMap::new();
        read_tensors(
            &weights_path,
            (limit, &why),
            &expected,
            |name, _, shape, raw| {
                let data = raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                tensors.insert(name, Tensor::new(shape.to_vec(), data));
            },
        )?;
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

        let tensors = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), Dtype::F32, t.shape.clone(), raw)
            })
            .collect();
        write_export_files(dir, &self.arch, tensors)
    }
}

/// Reads and checks `dir/arch.json`; its layer summary too.
pub(crate) fn read_arch(dir: &Path) -> Result<(Arch, ArchSummary), ExportError> {
    let arch_path = dir.join(ARCH_FILE);
    let text = read_regular_file(&arch_path, MAX_ARCH_BYTES, "an arch.json may hold")
        .map_err(|e| e.into_export_error(&arch_path))?;
    let arch: Arch = serde_json::from_slice(&text).map_err(|source| ExportError::Json {
        path: arch_path.clone(),
        source,
    })?;
    let summary = arch.summary().map_err(|e| with_path(e, &arch_path))?;
    Ok((arch, summary))
}

/// An export of either precision.
#[derive(Clone, Debug)]
pub enum AnyExport {
    F32(Export),
    Int8(Int8Export),
}

impl AnyExport {
    /// Reads and validates an export folder of either precision (`arch.json` is read once,
    /// and says which).
    pub fn load(dir: impl AsRef<Path>) -> Result<AnyExport, ExportError> {
        let dir = dir.as_ref();
        let (arch, summary) = read_arch(dir)?;
        Ok(match arch.precision {
            Precision::F32 => AnyExport::F32(Export::load_weights(dir, arch, summary)?),
            Precision::Int8 => AnyExport::Int8(Int8Export::load_weights(dir, arch, summary)?),
        })
    }

    pub fn arch(&self) -> &Arch {
        match self {
            AnyExport::F32(e) => e.arch(),
            AnyExport::Int8(e) => e.arch(),
        }
    }
}

/// The tensors an export's layer list needs: name, dtype and shape.
pub(crate) type ExpectedTensors = BTreeMap<String, (Dtype, Vec<usize>)>;

/// Reads `weights.safetensors` at `path` (refused unsized over `bound.0` bytes, `bound.1`
/// saying why), checks that it holds exactly the `expected` tensors (none other, none
/// missing, each of its dtype and shape; all checked before any data is copied), and hands
/// each to `take` as (name, dtype, shape, little-endian bytes) while the file is mapped.
pub(crate) fn read_tensors(
    path: &Path,
    bound: (u64, &str),
    expected: &ExpectedTensors,
    mut take: impl FnMut(String, Dtype, &[usize], &[u8]),
) -> Result<(), ExportError> {
    let (limit, why) = bound;
    let file = open_regular_file(path, limit, why).map_err(|e| e.into_export_error(path))?;
    // SAFETY: the file is mapped read-only and copied out before the map is dropped; the
    // usual caveat of maps (another process truncating the file meanwhile) applies.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(e, path))?;
    let safetensors = |e: safetensors::SafeTensorError| ExportError::Safetensors {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let st = SafeTensors::deserialize(&map).map_err(safetensors)?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let path = path.to_path_buf();
    for name in &names {
        let Some((dtype, shape)) = expected.get(name) else {
            return Err(ExportError::UnknownTensor {
                path,
                name: name.clone(),
            });
        };
        let view = st.tensor(name).map_err(safetensors)?;
        if view.dtype() != *dtype {
            return Err(ExportError::WrongDtype {
                path,
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
                expected: dtype_name(*dtype),
            });
        }
        if view.shape() != shape.as_slice() {
            return Err(ExportError::TensorShape {
                path,
                name: name.clone(),
                expected: shape.clone(),
                found: view.shape().to_vec(),
            });
        }
    }
    if let Some(name) = expected.keys().find(|n| !names.contains(n)) {
        return Err(ExportError::MissingTensor {
            path,
            name: name.clone(),
        });
    }
    for name in names {
        let view = st.tensor(&name).map_err(safetensors)?;
        take(name, view.dtype(), view.shape(), view.data());
    }
    Ok(())
}

/// How an error names a dtype the format uses.
fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::I8 => "I8",
        Dtype::I32 => "I32",
        _ => "F32",
    }
}

/// A tensor as `weights.safetensors` stores it: name, dtype, shape, little-endian bytes.
pub(crate) type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// Writes `weights.safetensors` and then `arch.json` into `dir`, each through a temporary
/// file and a rename, so that `arch.json` appearing means the folder is complete (what every
/// export writer does).
pub(crate) fn write_export_files(
    dir: &Path,
    arch: &Arch,
    tensors: Vec<RawTensor>,
) -> Result<(), ExportError> {
    let weights_path = dir.join(WEIGHTS_FILE);
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, raw)| {
            TensorView::new(*dtype, shape.clone(), raw)
                .map(|v| (name.clone(), v))
                .map_err(|e| ExportError::Safetensors {
                    path: weights_path.clone(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let serialized = safetensors::serialize(views, None).map_err(|e| ExportError::Safetensors {
        path: weights_path.clone(),
        reason: e.to_string(),
    })?;
    write_atomically(&weights_path, &serialized)?;

    let arch_path = dir.join(ARCH_FILE);
    let mut json = serde_json::to_vec_pretty(arch).map_err(|source| ExportError::Json {
        path: arch_path.clone(),
        source,
    })?;
    json.push(b'\n');
    write_atomically(&arch_path, &json)
}

/// Where a temporary file's name starts its unique part: `.NAME.tmp-PID-SERIAL-NANOS`.
const TMP_MARK: &str = ".tmp-";

/// A temporary name beside `path`, unique to this process and call: the pid, a process-wide
/// counter (two writers in one process never collide) and the clock's nanoseconds (a later
/// process that reuses the pid does not meet a leftover of the earlier one).
pub fn temporary_path(path: &Path) -> PathBuf {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{file_name}{TMP_MARK}{}-{serial}-{nanos}",
        std::process::id()
    ))
}

/// True for a name [`temporary_path`] makes (`.NAME.tmp-PID-SERIAL-NANOS`), or that earlier
/// versions made (`.NAME.tmp-PID`, `.NAME.tmp-PID-SERIAL`).
fn is_temporary_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some(at) = rest.rfind(TMP_MARK) else {
        return false;
    };
    let (stem, tail) = (&rest[..at], &rest[at + TMP_MARK.len()..]);
    let parts: Vec<&str> = tail.split('-').collect();
    !stem.is_empty()
        && (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Deletes the temporary files that an interrupted [`Export::write`] (or any other atomic
/// write of dnal: `deploy.json`, `latency.json`) left in `dir`: regular files named
/// `.NAME.tmp-PID-SERIAL-NANOS` (and the older `.NAME.tmp-PID`). Folders and other files are
/// left alone. Returns how many files were removed.
///
/// It cannot tell a leftover from a write in progress: call it only while no other process
/// writes into `dir` (the host calls it holding the folder's exclusive lock).
pub fn remove_stale_temporaries(dir: impl AsRef<Path>) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir.as_ref())? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // file_type() does not follow symlinks: a link is neither followed nor removed.
        if is_temporary_name(name) && entry.file_type()?.is_file() {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// Writes `bytes` to a new temporary file beside `path`, syncs it and renames it to `path`;
/// on any error the temporary file is removed. dnal-firmware writes `deploy.json` and
/// `latency.json` with it too, so one sweep ([`remove_stale_temporaries`]) cleans up after
/// every writer.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let tmp = temporary_path(path);
    let result = (|| {
        // create_new: never writes through a file or link that is already there.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error(e, path)
    })
}

/// Why [`read_regular_file`] or [`open_regular_file`] refused a file.
#[derive(Debug)]
pub enum FileError {
    /// The file could not be inspected, opened or read.
    Io(std::io::Error),
    /// The path is not a regular file; the payload says what it is ("a FIFO", "a folder").
    NotAFile(&'static str),
    /// The file holds more than `limit` bytes; `why` completes "more than LIMIT bytes ...".
    TooLarge { size: u64, limit: u64, why: String },
}

impl FileError {
    /// The error as the export reader reports it, naming `path`.
    pub fn into_export_error(self, path: &Path) -> ExportError {
        match self {
            FileError::Io(e) => io_error(e, path),
            FileError::NotAFile(kind) => ExportError::NotAFile {
                path: path.to_path_buf(),
                kind,
            },
            FileError::TooLarge { size, limit, why } => ExportError::TooLarge {
                path: path.to_path_buf(),
                size,
                limit,
                why,
            },
        }
    }
}

fn kind_of(t: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() { "a folder" } else { "not a file" }
}

/// Opens `path` for reading if it is a regular file (symlinks followed) of at most `limit`
/// bytes; `why` completes "more than the LIMIT bytes ..." in the error. The type is checked
/// before opening (opening a FIFO blocks until a writer comes) and again on the open file.
pub fn open_regular_file(path: &Path, limit: u64, why: &str) -> Result<fs::File, FileError> {
    let check = |meta: fs::Metadata| {
        if !meta.is_file() {
            return Err(FileError::NotAFile(kind_of(meta.file_type())));
        }
        if meta.len() > limit {
            return Err(FileError::TooLarge {
                size: meta.len(),
                limit,
                why: why.to_string(),
            });
        }
        Ok(())
    };
    check(fs::metadata(path).map_err(FileError::Io)?)?;
    let mut options = fs::OpenOptions::new();
    options.read(true);
    // Non-blocking, so that a FIFO swapped in after the check cannot hang the open; the check
    // of the open file then refuses it. A regular file reads the same either way.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(FileError::Io)?;
    check(file.metadata().map_err(FileError::Io)?)?;
    Ok(file)
}

/// Reads a regular file of at most `limit` bytes (see [`open_regular_file`]); the read itself
/// is bounded too, in case the file grows meanwhile.
pub fn read_regular_file(path: &Path, limit: u64, why: &str) -> Result<Vec<u8>, FileError> {
    let file = open_regular_file(path, limit, why)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(size.min(limit) as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            size: bytes.len() as u64,
            limit,
            why: why.to_string(),
        });
    }
    Ok(bytes)
}

pub(crate) fn io_error(e: std::io::Error, path: &Path) -> ExportError {
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
pub(crate) fn with_path(e: ExportError, full: &Path) -> ExportError {
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
        BadName {
            field,
            name,
            reason,
            ..
        } => BadName {
            path: p,
            field,
            name,
            reason,
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
    let expected = expected_tensors(summary);
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

/// The tensors a layer list needs, by name, with their shapes.
fn expected_tensors(summary: &ArchSummary) -> BTreeMap<String, Vec<usize>> {
    let mut expected = BTreeMap::new();
    for layer in &summary.layers {
        if let Some([w, b]) = &layer.tensor_shapes {
            expected.insert(format!("{}.weight", layer.name), w.clone());
            expected.insert(format!("{}.bias", layer.name), b.clone());
        }
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_unique_and_recognised() {
        let a = temporary_path(Path::new("/x/weights.safetensors"));
        let b = temporary_path(Path::new("/x/weights.safetensors"));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".weights.safetensors.tmp-"), "{name}");
        assert!(is_temporary_name(name), "{name}");
        for legacy in [".arch.json.tmp-123", ".deploy.json.tmp-1-2"] {
            assert!(is_temporary_name(legacy), "{legacy}");
        }
        for other in [
            "arch.json",
            ".arch.json",
            ".tmp-1",
            ".x.tmp-",
            ".x.tmp-1-2-3-4",
            ".x.tmp-12a",
            "x.tmp-1",
        ] {
            assert!(!is_temporary_name(other), "{other}");
        }
    }
}
