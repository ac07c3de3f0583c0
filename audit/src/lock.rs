//! One writer per log directory: an exclusive advisory lock on `<dir>/.lock`, held by the writer
//! thread for as long as it runs, so a second process (a desktop `--stdio` orchestrator pointed at the
//! daemon's directory, say) is refused instead of interleaving lines and breaking the chain.

use crate::AuditError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

pub(crate) const LOCK_FILE: &str = ".lock";

/// How long to wait for a previous writer of the directory to finish (a log just closed in this
/// process, or a daemon still flushing as it stops).
const WAIT: Duration = Duration::from_secs(5);

/// Creates the directory if needed and takes its lock, waiting up to [`WAIT`] for a previous writer;
/// after that, says who to stop. Blocks: call it off the async runtime.
pub(crate) fn acquire(dir: &Path) -> Result<File, AuditError> {
    std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir.to_path_buf(), e))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| AuditError::io(path.clone(), e))?;
    let deadline = Instant::now() + WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(TryLockError::WouldBlock) => return Err(AuditError::Locked(dir.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(AuditError::io(path, e)),
        }
    }
}
