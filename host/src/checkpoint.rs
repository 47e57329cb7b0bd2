//! Checkpoints after every epoch, written so that a kill at any moment leaves the last
//! complete one usable: each checkpoint is a folder written under a temporary name and renamed,
//! and `state.json` (which names the current folder) is replaced by rename last.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use dnal_models::GatedNet;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::SearchError;

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that
/// readers see the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SearchError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let fix = "check that the folder exists, is writable and has free space";
    fs::write(&tmp, bytes).map_err(SearchError::io(&tmp, "writing", fix))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        SearchError::io(path, "renaming into place", fix)(e)
    })
}

/// Serialises `value` as pretty JSON to `path`, atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), SearchError> {
    let json = serde_json::to_vec_pretty(value).expect("our reports serialise");
    write_atomic(path, &json)
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, SearchError> {
    let bytes = fs::read(path).map_err(SearchError::io(
        path,
        "reading",
        "is this the folder a `dnal search` wrote?",
    ))?;
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
    /// the same tag.
    pub fn save(
        &self,
        tag: &str,
        net: &GatedNet,
        optim: Option<&ModuleOptimizer>,
    ) -> Result<(), SearchError> {
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
        let done = self.root.join(tag);
        if done.exists() {
            fs::remove_dir_all(&done).map_err(SearchError::io(&done, "replacing", fix))?;
        }
        fs::rename(&tmp, &done).map_err(SearchError::io(&done, "renaming into place", fix))
    }

    /// Loads checkpoint `tag` into `net` (which must have the checkpoint's architecture).
    pub fn load_model(&self, tag: &str, net: GatedNet) -> Result<GatedNet, SearchError> {
        let path = self.root.join(tag).join(MODEL_FILE);
        net.try_load_file(&path).map_err(|e| SearchError::Checkpoint {
            path,
            reason: format!("the model does not load ({e:?}); the checkpoint is damaged or from another model"),
        })
    }

    /// Loads the optimizer state of checkpoint `tag` into `optim`, if it has one.
    pub fn load_optimizer(
        &self,
        tag: &str,
        optim: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, SearchError> {
        let path = self.root.join(tag).join(OPTIMIZER_FILE);
        if !path.exists() {
            return Ok(optim);
        }
        optim.load(&path).map_err(|e| SearchError::Checkpoint {
            path,
            reason: format!("the optimizer state does not load ({e:?})"),
        })
    }

    /// Copies checkpoint `tag` of another search's checkpoint folder into this one.
    pub fn copy_from(&self, other: &CheckpointDir, tag: &str) -> Result<(), SearchError> {
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
        fs::rename(&tmp, &to).map_err(SearchError::io(&to, "renaming into place", fix))
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

#[cfg(test)]
mod tests {
    use super::*;

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
