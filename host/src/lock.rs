//! One writer per output folder: every command that writes a folder (search, sweep, deploy,
//! profile) holds an exclusive lock on the folder itself for as long as it runs, so two runs
//! can never interleave their files in one folder.
//!
//! The lock is `flock` on the folder's own file descriptor (`File::try_lock`), not a lock
//! file: nothing is left in the folder, and a killed process releases it with its
//! descriptors. The holder is then the only writer, so the temporary files a killed run left
//! behind (`.NAME.tmp...`) can be removed safely.

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::SearchError;

/// An exclusive lock on an output folder, released when dropped.
#[derive(Debug)]
pub struct OutputLock {
    dir: PathBuf,
    // Held for its lock; closing it releases the lock.
    _handle: File,
}

impl OutputLock {
    /// Creates `dir` if needed and locks it, or fails at once if another process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, SearchError> {
        fs::create_dir_all(dir).map_err(SearchError::io(
            dir,
            "creating the output folder",
            "choose an --out folder you can write to",
        ))?;
        let handle = File::open(dir).map_err(SearchError::io(
            dir,
            "opening the output folder to lock it",
            "choose an --out folder you can read and write",
        ))?;
        match handle.try_lock() {
            Ok(()) => Ok(Self {
                dir: dir.to_path_buf(),
                _handle: handle,
            }),
            Err(TryLockError::WouldBlock) => Err(SearchError::Busy {
                path: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(SearchError::io(
                dir,
                "locking the output folder",
                "use a local folder that supports file locks",
            )(e)),
        }
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes what interrupted writers left in `dir` (inside the locked folder, or the
    /// folder itself): the temporary files of every atomic write of dnal
    /// ([`dnal_export::remove_stale_temporaries`]) and the entries staged under a fixed
    /// `.NAME.tmp` (a checkpoint folder being written). Returns how many were removed.
    pub fn remove_stale_temporaries(&self, dir: &Path) -> usize {
        debug_assert!(dir.starts_with(&self.dir), "only the locked folder is ours");
        // A leftover that cannot be removed costs only disk space: errors are not fatal.
        let mut removed = dnal_export::remove_stale_temporaries(dir).unwrap_or(0);
        let Ok(entries) = fs::read_dir(dir) else {
            return removed;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !is_staging_name(&name.to_string_lossy()) {
                continue;
            }
            let path = entry.path();
            let gone = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path).is_ok(),
                Ok(_) => fs::remove_file(&path).is_ok(),
                Err(_) => false,
            };
            removed += usize::from(gone);
        }
        removed
    }
}

/// `.NAME.tmp`: how dnal stages a file or folder under a fixed name (a checkpoint folder).
fn is_staging_name(name: &str) -> bool {
    name.len() > ".tmp".len() + 1 && name.starts_with('.') && name.ends_with(".tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folder_fails_until_the_first_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        let first = OutputLock::acquire(&dir).unwrap();
        let err = OutputLock::acquire(&dir).unwrap_err();
        assert!(matches!(err, SearchError::Busy { .. }), "{err}");
        assert!(err.to_string().contains("run"), "{err}");
        drop(first);
        OutputLock::acquire(&dir).unwrap();
        // The lock leaves nothing in the folder.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let lock = OutputLock::acquire(root.path()).unwrap();
        for name in [
            ".weights.safetensors.tmp-4242",
            ".report.json.tmp",
            "arch.json",
            ".hidden",
        ] {
            fs::write(root.path().join(name), b"x").unwrap();
        }
        fs::create_dir(root.path().join(".weights-final.tmp")).unwrap();
        assert_eq!(lock.remove_stale_temporaries(root.path()), 3);
        let mut left: Vec<String> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".hidden", "arch.json"]);
    }
}
