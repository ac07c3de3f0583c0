//! Files prepared ahead of need, and files sealed after it, on a thread of their own.
//!
//! A record is written in place (`pwrite`) into a file already full of zeros and synced, so the
//! write changes neither the file's size nor its extent map, and its `fdatasync` is one round trip
//! to the device instead of three (data, inode, flush). The writer asks for the next such file
//! (the *spare*, `.next-segment.prepared`, a name no reader lists) while the live one still has
//! room, and takes it when the live one is full: it links the spare under the next file's name,
//! and this thread then makes that name durable (a directory sync) before it removes the spare's
//! own name ([`Preparer::placed`]). A file the writer leaves is *sealed* here: cut to its content,
//! so that closed files stay plain JSONL. Preparing, naming and sealing never happen on a caller's
//! path: when no spare is ready, the writer goes on appending to the file it has.
//!
//! Records can therefore be, after a crash, in a spare whose new name never reached the disk:
//! start-up gives it that name first ([`adopt_spare`]).
//!
//! This thread never syncs the live file, so one sync at most is ever in flight per file (the
//! writeback-error rule: Linux reports a lost page to one `fsync` of a file description only).

use crate::AuditError;
use crate::record::{fast_header, parse_line};
use crate::segment::{LineReader, segment_file_name, sync_dir};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The spare's name while it waits: not `audit-<seq>.jsonl`, so no reader lists it (and hidden).
pub(crate) const SPARE_NAME: &str = ".next-segment.prepared";

/// The size of the first prepared file; each next one is twice the last, up to [`MAX_CAPACITY`]
/// (and the log's `max_file_bytes`), so a short log never writes megabytes of zeros.
pub(crate) const FIRST_CAPACITY: u64 = 1 << 20;

/// The largest prepared file.
pub(crate) const MAX_CAPACITY: u64 = 64 << 20;

/// A file that was not prepared (the first of a log, or the one a restart continues) is left for a
/// spare only once it holds this much: a log that stays short stays in one plain file.
pub(crate) const MIN_SEGMENT: u64 = 64 << 10;

/// How long after a failed preparation (a full disk) the next one is tried.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Zeros are written a page at a time. The kernel sizes the page cache's folios by the writes that
/// fill it: written a megabyte at a time, the file sat in megabyte folios, and each record written
/// in place later cost a pass over the whole folio's blocks, in its `pwrite` and again in its
/// `fdatasync` (measured here: `pwrite` 7 µs instead of 3.5, the durable write 10–20 µs slower).
const ZEROS: usize = 4096;

/// A file full of zeros and synced, waiting under [`SPARE_NAME`].
pub(crate) struct Spare {
    pub file: File,
    pub capacity: u64,
}

/// The size of the file prepared after one of `capacity` bytes, for a log whose files are closed
/// past `max_file_bytes`.
pub(crate) fn next_capacity(capacity: u64, max_file_bytes: u64) -> u64 {
    let largest = max_file_bytes
        .saturating_add(4095)
        .clamp(4096, MAX_CAPACITY)
        & !4095;
    capacity.saturating_mul(2).max(FIRST_CAPACITY).min(largest)
}

enum Job {
    Prepare(u64),
    /// The spare was linked under a log file's name: make that durable, then drop the spare's name.
    Placed,
    Seal {
        file: File,
        path: PathBuf,
        len: u64,
    },
}

enum Slot {
    Empty,
    Ready(Spare),
    Failed,
}

/// The writer's side of the preparing thread.
pub(crate) struct Preparer {
    dir: PathBuf,
    jobs: Option<mpsc::Sender<Job>>,
    slot: Arc<Mutex<Slot>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// A spare was asked for and not taken yet.
    asked: bool,
    /// After a failed preparation: not before then.
    retry_at: Option<Instant>,
}

impl Preparer {
    /// Starts the thread; a spare left by an earlier run is removed first.
    pub fn start(dir: &Path) -> Result<Self, AuditError> {
        remove_spare(dir);
        let (jobs, queue) = mpsc::channel();
        let slot = Arc::new(Mutex::new(Slot::Empty));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (at, slot, stop) = (dir.to_path_buf(), Arc::clone(&slot), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("audit-prepare".into())
                .spawn(move || work(&at, &queue, &slot, &stop))
                .map_err(|e| AuditError::io(dir, e))?
        };
        Ok(Preparer {
            dir: dir.to_path_buf(),
            jobs: Some(jobs),
            slot,
            stop,
            thread: Some(thread),
            asked: false,
            retry_at: None,
        })
    }

    /// Asks for a spare of `capacity` bytes, unless one is on its way (or a failure is recent).
    pub fn ask(&mut self, capacity: u64) {
        if self.asked || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        if let Some(jobs) = &self.jobs
            && jobs.send(Job::Prepare(capacity)).is_ok()
        {
            self.asked = true;
        }
    }

    /// The spare, if it is ready; never waits for it.
    pub fn take(&mut self) -> Option<Spare> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *slot, Slot::Empty) {
            Slot::Empty => None,
            Slot::Ready(spare) => {
                self.asked = false;
                Some(spare)
            }
            Slot::Failed => {
                self.asked = false;
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                None
            }
        }
    }

    /// Where the spare waits.
    pub fn spare_path(&self) -> PathBuf {
        self.dir.join(SPARE_NAME)
    }

    /// The spare just taken was linked under a log file's name: in the background, the directory
    /// is synced (the new name durable) and only then the spare's own name removed, so that a
    /// crash leaves its records under at least one name.
    pub fn placed(&self) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Placed);
        }
    }

    /// Cuts a file the writer has left to its content (`len`) and syncs it, in the background.
    pub fn seal(&self, file: File, path: PathBuf, len: u64) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job::Seal { file, path, len });
        }
    }

    /// Seals what was handed over, stops preparing (a spare half written is given up) and removes
    /// the spare: a closed log is its plain files only.
    pub fn finish(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Slot::Empty;
        // A name the writer gave the spare is durable before the spare's own name goes (the
        // thread made it so, unless its sync failed).
        let spare = self.spare_path();
        if spare.exists()
            && let Err(error) = sync_dir(&self.dir)
        {
            tracing::warn!(%error, "cannot sync the audit log's directory on close; its spare is left for the next start");
            return;
        }
        remove_spare(&self.dir);
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

fn remove_spare(dir: &Path) {
    match std::fs::remove_file(dir.join(SPARE_NAME)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(%error, "cannot remove the audit log's spare file"),
    }
}

/// The thread: seals and prepares in the order asked, until the writer lets go.
fn work(dir: &Path, queue: &mpsc::Receiver<Job>, slot: &Mutex<Slot>, stop: &AtomicBool) {
    // Said once per failing spell (a full disk would otherwise say it every retry).
    let mut failing = false;
    for job in queue {
        match job {
            Job::Placed => match sync_dir(dir) {
                Ok(()) => remove_spare(dir),
                // The spare's name stays (the records are under it if the new name is lost); the
                // next preparation syncs the directory before it removes it.
                Err(error) => {
                    tracing::warn!(%error, "cannot sync the audit log's directory after naming its next file")
                }
            },
            Job::Seal { file, path, len } => {
                if let Err(error) = file.set_len(len).and_then(|()| file.sync_all()) {
                    // Readers stop at the zeros anyway; the next start seals it.
                    tracing::warn!(%error, path = %path.display(), "cannot cut a finished audit file to its content");
                }
            }
            Job::Prepare(capacity) => {
                let prepared = prepare(dir, capacity, stop);
                let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
                *slot = match prepared {
                    Ok(spare) => {
                        failing = false;
                        Slot::Ready(spare)
                    }
                    Err(error) => {
                        if !failing && !stop.load(Ordering::Acquire) {
                            tracing::warn!(%error, "cannot prepare the next audit file; records go on being written to the current one");
                        }
                        failing = true;
                        remove_spare(dir);
                        Slot::Failed
                    }
                };
            }
        }
    }
}

/// Writes the spare full of zeros and syncs it (its size and blocks with it). A new file always:
/// whatever held the name before (a spare the writer linked under a log file's name, if removing
/// the spare's name failed) is unlinked, never truncated.
fn prepare(dir: &Path, capacity: u64, stop: &AtomicBool) -> std::io::Result<Spare> {
    let path = dir.join(SPARE_NAME);
    if path.exists() {
        // It may be the live file's only durable name yet (see `Job::Placed`).
        File::open(dir)?.sync_all()?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let zeros = [0u8; ZEROS];
    let mut left = capacity;
    while left > 0 {
        if stop.load(Ordering::Acquire) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the log is closing",
            ));
        }
        let n = left.min(ZEROS as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    // The spare's name durable before the writer links it elsewhere: until that link is, this
    // name is where a crash leaves the records written into it.
    File::open(dir)?.sync_all()?;
    Ok(Spare { file, capacity })
}

/// At start-up, before the files are read: a spare that holds records was the live file when the
/// last run stopped, and the name the writer gave it (its first record's seq) may not have reached
/// the disk (see [`Preparer::placed`]). Gives it that name again, unless the name is there; a spare
/// without a whole record held nothing acknowledged and is left for [`Preparer::start`] to remove.
/// Something else under the spare's name (a first line that is no record, or a log file of that
/// name that is another file) is set aside as `<spare>.damaged-<ms>` for a person to look at.
/// Returns the file a spare became, if one did.
pub(crate) fn adopt_spare(dir: &Path) -> Result<Option<PathBuf>, AuditError> {
    let spare = dir.join(SPARE_NAME);
    if !spare.exists() {
        return Ok(None);
    }
    let mut reader = LineReader::open(&spare)?;
    let first = match reader.next_line()? {
        Some((info, line)) if info.complete => {
            Some(fast_header(line).map_or_else(|| parse_line(line), Ok))
        }
        _ => None,
    };
    drop(reader);
    let aside = |why: String| -> Result<Option<PathBuf>, AuditError> {
        let to = dir.join(format!("{SPARE_NAME}.damaged-{}", crate::writer::unix_ms()));
        std::fs::rename(&spare, &to).map_err(|e| AuditError::io(&spare, e))?;
        sync_dir(dir)?;
        tracing::error!(path = %to.display(), "{why}; set aside");
        Ok(None)
    };
    let seq = match first {
        None => return Ok(None),
        Some(Ok(header)) => header.seq,
        Some(Err(message)) => {
            return aside(format!(
                "the audit log's spare file starts with something that is not a record ({message})"
            ));
        }
    };
    let named = dir.join(segment_file_name(seq));
    match same_file(&spare, &named) {
        Ok(true) => {
            remove_spare(dir);
            Ok(None)
        }
        Ok(false) => aside(format!(
            "the audit log's spare file holds records from seq {seq}, but {} is another file",
            named.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::rename(&spare, &named).map_err(|e| AuditError::io(&spare, e))?;
            sync_dir(dir)?;
            tracing::warn!(path = %named.display(), "the audit file the last run was writing had not been given its name on disk; named it");
            Ok(Some(named))
        }
        Err(e) => Err(AuditError::io(&named, e)),
    }
}

/// Whether two paths name the same file (`NotFound` when `b` names none).
fn same_file(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt as _;
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok((a.dev(), a.ino()) == (b.dev(), b.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_double_up_to_the_file_limit() {
        assert_eq!(next_capacity(0, u64::MAX), FIRST_CAPACITY);
        assert_eq!(next_capacity(FIRST_CAPACITY, u64::MAX), 2 * FIRST_CAPACITY);
        assert_eq!(next_capacity(MAX_CAPACITY, u64::MAX), MAX_CAPACITY);
        assert_eq!(next_capacity(0, 1000), 4096);
        assert_eq!(next_capacity(0, 3 << 20), FIRST_CAPACITY);
        assert_eq!(next_capacity(2 << 20, 3 << 20), 3 << 20);
    }
}
