//! One writer per log directory: an exclusive advisory lock on `<dir>/.lock`, held by the writer
//! thread for as long as it runs, so a second process (a desktop `--stdio` orchestrator pointed at the
//! daemon's directory, say) is refused instead of interleaving lines and breaking the chain.

use crate::AuditError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

pub(crate) const LOCK_FILE: &str = ".lock";

/// Creates the directory if needed and takes its lock, or says who to stop.
pub(crate) fn acquire(dir: &Path) -> Result<File, AuditError> {
    std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir.to_path_buf(), e))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::io(path.clone(), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(AuditError::Locked(dir.to_path_buf())),
        Err(TryLockError::Error(e)) => Err(AuditError::io(path, e)),
    }
}
