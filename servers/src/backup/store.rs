//! The snapshot directory: atomic writes, checksummed reads, and no way out of it.
//!
//! Owns `<data_dir>/backups`. A snapshot is written to a temporary file in the same directory, synced,
//! renamed into place and the directory synced, so a reader sees the old snapshot or the new one, never
//! half of one. It must never follow a symlink or touch a path whose parent is not the canonical backup
//! directory itself.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::check_name;
use crate::canonical;
use crate::error::{ServeError, ToolFailure};

const SUFFIX: &str = ".json";

/// A snapshot file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    name: String,
    created_at_ms: i64,
    sha256: String,
    data: Value,
}

/// The backup directory, canonicalised once at start-up.
#[derive(Debug)]
pub struct BackupStore {
    dir: PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl BackupStore {
    /// Creates `<data_dir>/backups` if needed and remembers its canonical path.
    pub fn open(data_dir: &Path) -> Result<Self, ServeError> {
        let dir = data_dir.join("backups");
        let fail = |source| ServeError::DataDir {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(fail)?;
        let dir = dir.canonicalize().map_err(fail)?;
        Ok(BackupStore { dir })
    }

    /// The canonical backup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot file for `name`, after every safety check that does not touch the file itself.
    fn snapshot_path(&self, name: &str) -> Result<PathBuf, ToolFailure> {
        check_name(name)?;
        let path = self.dir.join(format!("{name}{SUFFIX}"));
        if path.parent() != Some(self.dir.as_path()) {
            return Err(ToolFailure::new(
                "unsafe_name",
                format!("snapshot name {name:?} does not stay in the backup directory"),
            ));
        }
        Ok(path)
    }

    /// Checks what is at `path` without following a symlink: `Some(metadata)` for a regular file,
    /// `None` if nothing is there, a failure for a symlink or anything else.
    fn existing_file(&self, name: &str, path: &Path) -> Result<Option<fs::Metadata>, ToolFailure> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => Err(ToolFailure::new(
                "unsafe_name",
                format!("snapshot {name:?} is a symbolic link; refusing to follow it"),
            )),
            Ok(meta) if !meta.is_file() => Err(ToolFailure::new(
                "unsafe_name",
                format!("snapshot {name:?} is not a regular file"),
            )),
            Ok(meta) => Ok(Some(meta)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(ToolFailure::io("cannot inspect the snapshot", &error)),
        }
    }

    /// Writes a snapshot atomically; refuses to replace an existing one unless `overwrite`.
    pub fn create(&self, name: &str, data: Value, overwrite: bool) -> Result<Value, ToolFailure> {
        let path = self.snapshot_path(name)?;
        if self.existing_file(name, &path)?.is_some() && !overwrite {
            return Err(already_exists(name));
        }
        let snapshot = Snapshot {
            name: name.to_owned(),
            created_at_ms: now_ms(),
            sha256: canonical::sha256_hex(&data),
            data,
        };
        let mut bytes = serde_json::to_vec(&snapshot)
            .map_err(|e| ToolFailure::new("internal", format!("cannot encode snapshot: {e}")))?;
        bytes.push(b'\n');

        let write_failed = |e: io::Error| ToolFailure::io("cannot write the snapshot", &e);
        let mut temp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)
            .map_err(write_failed)?;
        temp.write_all(&bytes).map_err(write_failed)?;
        temp.as_file().sync_all().map_err(write_failed)?;
        // rename(2) replaces a symlink planted after the check above instead of following it.
        let persisted = if overwrite {
            temp.persist(&path)
        } else {
            temp.persist_noclobber(&path)
        };
        match persisted {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {
                return Err(already_exists(name));
            }
            Err(e) => return Err(write_failed(e.error)),
        }
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write_failed)?;
        Ok(json!({
            "name": name,
            "path": path.display().to_string(),
            "sha256": snapshot.sha256,
            "bytes": bytes.len(),
            "created_at_ms": snapshot.created_at_ms,
        }))
    }

    /// Reads a snapshot without following symlinks and checks its checksum.
    pub fn restore(&self, name: &str) -> Result<Value, ToolFailure> {
        let path = self.snapshot_path(name)?;
        let Some(before) = self.existing_file(name, &path)? else {
            return Err(ToolFailure::new(
                "not_found",
                format!("no snapshot named {name:?}"),
            ));
        };
        let (snapshot, _) = self.read_snapshot(name, &path, &before)?;
        let actual = canonical::sha256_hex(&snapshot.data);
        if actual != snapshot.sha256 {
            return Err(ToolFailure::new(
                "checksum_mismatch",
                format!("snapshot {name:?} is damaged: its data no longer matches its checksum"),
            )
            .with_details(json!({"expected": snapshot.sha256, "actual": actual})));
        }
        Ok(json!({"name": name, "sha256": snapshot.sha256, "data": snapshot.data}))
    }

    /// Opens and parses a snapshot, making sure the file opened is the one inspected (a symlink
    /// swapped in between the check and the open is detected by its different inode).
    fn read_snapshot(
        &self,
        name: &str,
        path: &Path,
        inspected: &fs::Metadata,
    ) -> Result<(Snapshot, u64), ToolFailure> {
        let read_failed = |e: io::Error| ToolFailure::io("cannot read the snapshot", &e);
        let mut file = File::open(path).map_err(read_failed)?;
        let opened = file.metadata().map_err(read_failed)?;
        if (opened.dev(), opened.ino()) != (inspected.dev(), inspected.ino()) {
            return Err(ToolFailure::new(
                "unsafe_name",
                format!("snapshot {name:?} changed while being opened; refusing it"),
            ));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read_failed)?;
        let snapshot = serde_json::from_slice(&bytes).map_err(|e| {
            ToolFailure::new(
                "corrupt_snapshot",
                format!("snapshot {name:?} is not a valid snapshot file: {e}"),
            )
        })?;
        Ok((snapshot, bytes.len() as u64))
    }

    /// Every readable snapshot, sorted by name; unreadable files are skipped with a warning.
    pub fn list(&self) -> Result<Value, ToolFailure> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| ToolFailure::io("cannot list the backup directory", &e))?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter_map(|file| file.strip_suffix(SUFFIX).map(str::to_owned))
            .filter(|name| check_name(name).is_ok())
            .collect();
        names.sort();
        let mut backups = Vec::with_capacity(names.len());
        for name in names {
            let listed = self.snapshot_path(&name).and_then(|path| {
                let meta = self.existing_file(&name, &path)?;
                meta.map(|meta| self.read_snapshot(&name, &path, &meta))
                    .transpose()
            });
            match listed {
                Ok(Some((snapshot, bytes))) => backups.push(json!({
                    "name": name,
                    "sha256": snapshot.sha256,
                    "bytes": bytes,
                    "created_at_ms": snapshot.created_at_ms,
                })),
                Ok(None) => {}
                Err(failure) => {
                    tracing::warn!(%name, %failure, "skipping a snapshot in the listing")
                }
            }
        }
        Ok(json!({"count": backups.len(), "backups": backups}))
    }
}

fn already_exists(name: &str) -> ToolFailure {
    ToolFailure::new(
        "already_exists",
        format!("snapshot {name:?} already exists; pass \"overwrite\": true to replace it"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_restore_and_refuse_overwrite() {
        let data_dir = tempfile::tempdir().unwrap();
        let store = BackupStore::open(data_dir.path()).unwrap();
        let created = store
            .create("s1", json!({"b": 1, "a": [1, 2]}), false)
            .unwrap();
        assert_eq!(
            created["sha256"],
            canonical::sha256_hex(&json!({"a": [1, 2], "b": 1}))
        );
        let failure = store.create("s1", json!(2), false).unwrap_err();
        assert_eq!(failure.code, "already_exists");
        store.create("s1", json!(2), true).unwrap();
        assert_eq!(store.restore("s1").unwrap()["data"], json!(2));
        assert_eq!(store.restore("nope").unwrap_err().code, "not_found");
        let leftovers: Vec<_> = fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["s1.json"], "temporary files must not remain");
    }
}
