//! Checkpoints after every epoch, written so that a kill at any moment leaves the last
//! complete one usable: each checkpoint is a folder written under a temporary name and renamed,
//! and `state.json` (which names the current folder) is replaced by rename last.
//!
//! A checkpoint is trusted only as far as its checksums: [`CheckpointDir::save`] returns the
//! SHA-256 of every file it wrote, the search records them in `state.json`, and every load
//! verifies them first, so a damaged or missing file is an error rather than a quietly
//! different network.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use dnal_models::GatedNet;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::SearchError;

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that
/// readers see the old file or the new one, never half of one. The temporary name is
/// dnal-export's ([`dnal_export::temporary_path`]), unique per call, so two writers never share
/// one; what a killed writer leaves is removed by the next run that locks the folder
/// ([`crate::lock::OutputLock`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SearchError> {
    let tmp = dnal_export::temporary_path(path);
    let fix = "check that the folder exists, is writable and has free space";
    fs::write(&tmp, bytes).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        SearchError::io(&tmp, "writing", fix)(e)
    })?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        SearchError::io(path, "renaming into place", fix)(e)
    })
}

/// The most a JSON file of a search may hold; larger ones are not ours.
const MAX_JSON_BYTES: u64 = 256 << 20;

/// Reads a regular file of at most `max` bytes (dnal-export's reader: FIFOs, devices and
/// folders are refused before they are read, the open does not block, the read is bounded).
pub fn read_regular_file(path: &Path, max: u64, fix: &'static str) -> Result<Vec<u8>, SearchError> {
    use dnal_export::FileError;
    dnal_export::read_regular_file(path, max, "such a file may hold").map_err(|e| match e {
        FileError::Io(source) => SearchError::io(path, "reading", fix)(source),
        FileError::NotAFile(kind) => SearchError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("is not a regular file but {kind}; {fix}"),
        },
        FileError::TooLarge { size, limit, .. } => SearchError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("holds {size} bytes, more than the {limit} such a file may; {fix}"),
        },
    })
}

/// The SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// File name -> SHA-256 of every file of one checkpoint.
pub type Checksums = BTreeMap<String, String>;

/// Serialises `value` as pretty JSON to `path`, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), SearchError> {
    let json = serde_json::to_vec_pretty(value).expect("our reports serialise");
    write_atomic(path, &json)
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, SearchError> {
    let bytes = read_regular_file(
        path,
        MAX_JSON_BYTES,
        "is this the folder a `dnal search` wrote?",
    )?;
    serde_json::from_slice(&bytes).map_err(|e| SearchError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("not a valid file of this dnal version ({e}); start a new search"),
    })
}

/// The checkpoint folder of a search: `OUT/checkpoint`.
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    root: PathBuf,
}

/// File names inside one checkpoint.
const MODEL_FILE: &str = "model.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// The state file.
pub const STATE_FILE: &str = "state.json";

impl CheckpointDir {
    /// The checkpoint folder under a search's output folder.
    pub fn new(out: &Path) -> Self {
        Self {
            root: out.join("checkpoint"),
        }
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The state file.
    pub fn state_path(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }

    /// Creates the folder.
    pub fn create(&self) -> Result<(), SearchError> {
        fs::create_dir_all(&self.root).map_err(SearchError::io(
            &self.root,
            "creating the checkpoint folder",
            "choose an --out folder you can write to",
        ))
    }

    /// Saves the model and the optimizer as checkpoint `tag` (a folder name), replacing one of
    /// the same tag; returns the checksums of its files, for `state.json`.
    pub fn save(
        &self,
        tag: &str,
        net: &GatedNet,
        optim: Option<&ModuleOptimizer>,
    ) -> Result<Checksums, SearchError> {
        let tmp = self.root.join(format!(".{tag}.tmp"));
        let fix = "check free space and permissions of the --out folder";
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(SearchError::io(&tmp, "clearing", fix))?;
        }
        fs::create_dir_all(&tmp).map_err(SearchError::io(&tmp, "creating", fix))?;
        let model = tmp.join(MODEL_FILE);
        net.clone()
            .save_file(&model)
            .map_err(|e| SearchError::Record {
                path: model.clone(),
                reason: format!("saving the model failed: {e:?}"),
            })?;
        if let Some(optim) = optim {
            let path = tmp.join(OPTIMIZER_FILE);
            optim.save(&path).map_err(|e| SearchError::Record {
                path: path.clone(),
                reason: format!("saving the optimizer failed: {e:?}"),
            })?;
        }
        let checksums = checksums_of(&tmp)?;
        let done = self.root.join(tag);
        if done.exists() {
            fs::remove_dir_all(&done).map_err(SearchError::io(&done, "replacing", fix))?;
        }
        fs::rename(&tmp, &done).map_err(SearchError::io(&done, "renaming into place", fix))?;
        Ok(checksums)
    }

    /// Checks every file of checkpoint `tag` against the checksums `state.json` recorded for
    /// it: each must exist and match.
    pub fn verify(&self, tag: &str, recorded: Option<&Checksums>) -> Result<(), SearchError> {
        let dir = self.root.join(tag);
        let Some(recorded) = recorded.filter(|r| !r.is_empty()) else {
            return Err(SearchError::Checkpoint {
                path: dir,
                reason: format!(
                    "{STATE_FILE} records no checksums for this checkpoint, so it cannot be trusted; start a new search"
                ),
            });
        };
        for (name, want) in recorded {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(SearchError::Checkpoint {
                    path,
                    reason: format!(
                        "missing (a regular file that {STATE_FILE} records); the checkpoint is incomplete: restore the file or start a new search"
                    ),
                });
            }
            let got = sha256_file(&path).map_err(SearchError::io(
                &path,
                "reading",
                "check the file's permissions",
            ))?;
            if &got != want {
                return Err(SearchError::Checkpoint {
                    path,
                    reason: format!(
                        "damaged: its SHA-256 is {got}, but {STATE_FILE} recorded {want}; restore the file or start a new search"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Loads checkpoint `tag` into `net` (which must have the checkpoint's architecture).
    /// Verify the checkpoint first ([`CheckpointDir::verify`]).
    pub fn load_model(&self, tag: &str, net: GatedNet) -> Result<GatedNet, SearchError> {
        let path = self.root.join(tag).join(MODEL_FILE);
        net.try_load_file(&path).map_err(|e| SearchError::Checkpoint {
            path,
            reason: format!("the model does not load ({e:?}); the checkpoint is damaged or from another model"),
        })
    }

    /// Loads the optimizer state of checkpoint `tag` into `optim`; an epoch checkpoint
    /// without one is damaged.
    pub fn load_optimizer(
        &self,
        tag: &str,
        optim: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, SearchError> {
        let path = self.root.join(tag).join(OPTIMIZER_FILE);
        if !path.is_file() {
            return Err(SearchError::Checkpoint {
                path,
                reason: "missing: an epoch checkpoint holds the optimizer state (momentum) its epoch ended with; restore the file or start a new search".into(),
            });
        }
        optim.load(&path).map_err(|e| SearchError::Checkpoint {
            path,
            reason: format!("the optimizer state does not load ({e:?})"),
        })
    }

    /// Copies checkpoint `tag` of another search's checkpoint folder into this one, checking
    /// the copies against the checksums recorded for the original.
    pub fn copy_from(
        &self,
        other: &CheckpointDir,
        tag: &str,
        recorded: Option<&Checksums>,
    ) -> Result<(), SearchError> {
        other.verify(tag, recorded)?;
        let from = other.root.join(tag);
        let tmp = self.root.join(format!(".{tag}.tmp"));
        let to = self.root.join(tag);
        let fix = "check free space and permissions of the --out folder";
        fs::create_dir_all(&tmp).map_err(SearchError::io(&tmp, "creating", fix))?;
        let entries = fs::read_dir(&from).map_err(SearchError::io(
            &from,
            "reading the checkpoint",
            "is the weight stage's folder complete?",
        ))?;
        for entry in entries {
            let entry = entry.map_err(SearchError::io(&from, "reading", fix))?;
            let target = tmp.join(entry.file_name());
            fs::copy(entry.path(), &target).map_err(SearchError::io(&target, "copying", fix))?;
        }
        fs::rename(&tmp, &to).map_err(SearchError::io(&to, "renaming into place", fix))?;
        self.verify(tag, recorded)
    }

    /// Removes every epoch checkpoint but `keep` and the stage-final ones (`*-final`).
    pub fn prune_old(&self, keep: &str) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && name != keep && !name.ends_with("-final") && !name.starts_with('.') {
                // A leftover is harmless: it is only disk space, so failures are ignored.
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The checksums of every file in a folder.
fn checksums_of(dir: &Path) -> Result<Checksums, SearchError> {
    let fix = "check free space and permissions of the --out folder";
    let mut sums = Checksums::new();
    for entry in fs::read_dir(dir).map_err(SearchError::io(dir, "reading", fix))? {
        let entry = entry.map_err(SearchError::io(dir, "reading", fix))?;
        let path = entry.path();
        let sum = sha256_file(&path).map_err(SearchError::io(&path, "reading back", fix))?;
        sums.insert(entry.file_name().to_string_lossy().into_owned(), sum);
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_floats_read_back_bit_for_bit() {
        // Accuracies are hits over images; without serde_json's float_roundtrip some come back
        // one ulp off (89/90 among them), and `dnal eval` or a resumed history would differ.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fractions.json");
        let fractions: Vec<f64> = (1..=1000u32)
            .flat_map(|n| (0..=n).step_by(7).map(move |k| f64::from(k) / f64::from(n)))
            .chain([89.0 / 90.0, 0.1 + 0.2, 1e-300, f64::MAX])
            .collect();
        write_json(&path, &fractions).unwrap();
        let back: Vec<f64> = read_json(&path).unwrap();
        for (a, b) in fractions.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} came back as {b}");
        }
    }

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verify_refuses_missing_damaged_and_unrecorded_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::new(root.path());
        let tag_dir = dir.path().join("weights-001");
        fs::create_dir_all(&tag_dir).unwrap();
        fs::write(tag_dir.join(MODEL_FILE), b"model bytes").unwrap();
        fs::write(tag_dir.join(OPTIMIZER_FILE), b"optimizer bytes").unwrap();
        let sums = checksums_of(&tag_dir).unwrap();
        dir.verify("weights-001", Some(&sums)).unwrap();

        let err = dir.verify("weights-001", None).unwrap_err().to_string();
        assert!(err.contains("no checksums"), "{err}");

        fs::write(tag_dir.join(MODEL_FILE), b"model bytez").unwrap();
        let err = dir
            .verify("weights-001", Some(&sums))
            .unwrap_err()
            .to_string();
        assert!(err.contains("damaged") && err.contains(MODEL_FILE), "{err}");

        fs::write(tag_dir.join(MODEL_FILE), b"model bytes").unwrap();
        fs::remove_file(tag_dir.join(OPTIMIZER_FILE)).unwrap();
        let err = dir
            .verify("weights-001", Some(&sums))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing") && err.contains(OPTIMIZER_FILE),
            "{err}"
        );
    }

    #[test]
    fn fifos_and_huge_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("state.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Would block forever if it were opened for reading.
        let err = read_json::<serde_json::Value>(&fifo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");

        let big = dir.path().join("report.json");
        fs::File::create(&big)
            .unwrap()
            .set_len(MAX_JSON_BYTES + 1)
            .unwrap();
        let err = read_json::<serde_json::Value>(&big)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn atomic_writes_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write_json(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json(&path, &serde_json::json!({"a": 2})).unwrap();
        let back: serde_json::Value = read_json(&path).unwrap();
        assert_eq!(back["a"], 2);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_missing_folder_names_the_path() {
        let err = write_atomic(Path::new("/nonexistent/dir/x.json"), b"{}").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir"), "{err}");
    }
}
