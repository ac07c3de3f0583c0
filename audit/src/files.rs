//! The default store: the log's records in local files, `audit-<first seq>.jsonl`.
//!
//! A batch is one write in place (`pwrite` at the end of the file's content, into zeros prepared
//! ahead: see the `prepare` module) and one `fdatasync`. A write that fails is cut back, so the file
//! never keeps part of a batch. Files roll over once full; the one left is sealed (cut to its
//! content) in the background. The directory's `.lock` is held for as long as the store is open.
//! This module never assigns a seq or hashes a line: the `writer` does, above the seam.

use crate::AuditError;
use crate::prepare::{MIN_SEGMENT, Preparer, Spare, next_capacity};
use crate::segment::{segment_file_name, sync_dir};
use crate::store::{Batch, Store};
use crate::writer::Shared;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[cfg(feature = "fault-injection")]
use std::sync::atomic::Ordering;

/// What the file store needs to know about its files.
#[derive(Debug)]
pub(crate) struct FileConfig {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
    pub fsync: bool,
    /// The directory's lock, held until the last record is written and synced (never read: holding
    /// it is the point), then let go so that another process may open the log.
    pub lock: Option<std::fs::File>,
}

/// The files of one log directory, written by one writer.
pub(crate) struct FileStore {
    config: FileConfig,
    /// `None` only after creating the next file failed; the next batch tries again.
    segment: Option<OpenSegment>,
    /// The length the current file must be cut back to before anything more is written: set when
    /// a failed write could not be undone at once.
    cut_to: Option<u64>,
    /// Prepares the next file and seals the ones left (see the `prepare` module).
    preparer: Preparer,
    /// Test builds: where the full-disk fault is switched on.
    #[cfg(feature = "fault-injection")]
    shared: Arc<Shared>,
}

impl FileStore {
    /// The store writing on at the end of `segment` (found by the start-up scan).
    pub fn start(
        config: FileConfig,
        segment: OpenSegment,
        #[cfg_attr(not(feature = "fault-injection"), allow(unused_variables))] shared: Arc<Shared>,
    ) -> Result<Self, AuditError> {
        let preparer = Preparer::start(&config.dir)?;
        Ok(FileStore {
            config,
            segment: Some(segment),
            cut_to: None,
            preparer,
            #[cfg(feature = "fault-injection")]
            shared,
        })
    }
}

impl Store for FileStore {
    /// One write in place (`pwrite` at the end of the content) and one `fdatasync`; on failure,
    /// cuts the file back to where it was.
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), AuditError> {
        if self.segment.is_none() {
            let next = self.next_segment(batch.first_seq())?;
            self.segment = Some(next);
        }
        let Some(segment) = &mut self.segment else {
            unreachable!("set just above")
        };
        if let Some(len) = self.cut_to {
            segment
                .file
                .set_len(len)
                .map_err(|e| AuditError::io(&segment.path, e))?;
            segment.len = len;
            segment.capacity = len;
            self.cut_to = None;
        }
        let before = segment.len;
        #[cfg(feature = "fault-injection")]
        if self.shared.inject_full_disk.load(Ordering::Acquire) {
            return Err(AuditError::io(
                &segment.path,
                std::io::Error::from_raw_os_error(28),
            ));
        }
        // Within a prepared file the write changes neither size nor extents: the sync is the
        // data's round trip alone.
        let result = segment
            .file
            .write_all_at(batch.text, before)
            .and_then(|()| {
                if self.config.fsync {
                    segment.file.sync_data()
                } else {
                    Ok(())
                }
            });
        match result.map_err(|e| AuditError::io(&segment.path, e)) {
            Ok(()) => match segment.still_named() {
                Ok(()) => {
                    segment.len += batch.text.len() as u64;
                    segment.capacity = segment.capacity.max(segment.len);
                    Ok(())
                }
                Err(lost) => {
                    // The batch (and whatever else that file held) is beyond reach: it is not
                    // acknowledged, and its retry goes to a new file named by its first seq. A
                    // file moved aside keeps what was acknowledged, not this batch twice.
                    let _ = segment.file.set_len(before);
                    self.segment = None;
                    self.cut_to = None;
                    Err(lost)
                }
            },
            Err(error) => {
                // Cut back (the zeros after it with it: the file grows from here on).
                match segment.file.set_len(before) {
                    Ok(()) => segment.capacity = before,
                    Err(cut) => {
                        tracing::error!(%cut, path = %segment.path.display(), "cannot cut a failed audit write back yet; nothing more is written until it can be");
                        self.cut_to = Some(before);
                    }
                }
                Err(error)
            }
        }
    }

    /// After a batch: asks for the next prepared file once the current one is half full, and
    /// moves to it once the current one is nearly full (or past `max_file_bytes`, where a plain
    /// file is started if no spare is ready). A file that was never prepared moves to the spare
    /// once it holds [`MIN_SEGMENT`]. The file left is sealed in the background.
    fn written(&mut self, next_seq: u64) {
        let Some(segment) = &self.segment else {
            return;
        };
        let (len, capacity) = (segment.len, segment.capacity.max(segment.len));
        let room = capacity - len;
        let over = len > self.config.max_file_bytes;
        if over || (len >= MIN_SEGMENT / 2 && room < capacity / 2) {
            self.preparer
                .ask(next_capacity(capacity, self.config.max_file_bytes));
        }
        let nearly_full = len >= MIN_SEGMENT && room < capacity / 8;
        if !over && !nearly_full {
            return;
        }
        let spare = self.preparer.take();
        if spare.is_none() && !over {
            return;
        }
        if let Some(old) = self.segment.take() {
            self.seal(old);
        }
        let next = match spare {
            Some(spare) => {
                let spare_path = self.preparer.spare_path();
                OpenSegment::from_spare(&self.config.dir, &spare_path, spare, next_seq)
                    .or_else(|_| OpenSegment::create(&self.config.dir, next_seq))
            }
            None => OpenSegment::create(&self.config.dir, next_seq),
        };
        match next {
            Ok(segment) => self.segment = Some(segment),
            Err(error) => {
                tracing::warn!(%error, "cannot start the next audit file; retrying with the next batch")
            }
        }
    }

    /// A full sync (even with `fsync` off), the file cut to its content, the lock let go.
    fn finish(&mut self) {
        // Sealed: cut to its content, so a closed log is plain JSONL.
        if let Some(segment) = &self.segment
            && let Err(error) = segment
                .file
                .set_len(segment.len)
                .and_then(|()| segment.file.sync_all())
        {
            tracing::error!(%error, path = %segment.path.display(), "final sync of the audit log failed");
        }
        self.segment = None;
        self.preparer.finish();
        self.config.lock = None;
    }
}

impl FileStore {
    /// The file for the next record: the prepared spare when it is ready, else a new plain one.
    fn next_segment(&mut self, first_seq: u64) -> Result<OpenSegment, AuditError> {
        if let Some(spare) = self.preparer.take() {
            let spare_path = self.preparer.spare_path();
            match OpenSegment::from_spare(&self.config.dir, &spare_path, spare, first_seq) {
                Ok(segment) => return Ok(segment),
                Err(error) => {
                    tracing::warn!(%error, "cannot take the prepared audit file; starting a plain one")
                }
            }
        }
        OpenSegment::create(&self.config.dir, first_seq)
    }

    /// Hands a file the writer is done with to be cut to its content, if zeros follow it.
    fn seal(&self, segment: OpenSegment) {
        if segment.capacity > segment.len {
            self.preparer.seal(segment.file, segment.path, segment.len);
        }
    }
}

/// The file being written: its content, then (when it was prepared) zeros up to its capacity.
#[derive(Debug)]
pub(crate) struct OpenSegment {
    pub path: PathBuf,
    file: File,
    /// The length of its content: where the next record is written.
    pub len: u64,
    /// Its size on disk: past `len` it holds zeros, written and synced before any record went in.
    capacity: u64,
    /// Which file this is (device and inode), to tell when `path` no longer names it.
    id: FileId,
}

impl OpenSegment {
    /// Opens an existing log file whose content is its first `len` bytes (zeros may follow).
    pub fn open_existing(path: &Path, len: u64) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| AuditError::io(path, e))?;
        Self::from_file(path.to_path_buf(), file, Some(len))
    }

    /// Creates the file whose first record will be `first_seq`, durably (directory synced). It
    /// is not prepared: it grows with each write.
    pub fn create(dir: &Path, first_seq: u64) -> Result<Self, AuditError> {
        let path = dir.join(segment_file_name(first_seq));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        sync_dir(dir)?;
        Self::from_file(path, file, None)
    }

    /// Gives the prepared `spare` (at `spare_path`) the name of the file whose first record will be
    /// `first_seq`, durably. A link, not a rename, so that a file of that name is never replaced.
    fn from_spare(
        dir: &Path,
        spare_path: &Path,
        spare: Spare,
        first_seq: u64,
    ) -> Result<Self, AuditError> {
        let path = dir.join(segment_file_name(first_seq));
        std::fs::hard_link(spare_path, &path).map_err(|e| AuditError::io(&path, e))?;
        let _ = std::fs::remove_file(spare_path);
        sync_dir(dir)?;
        let mut segment = Self::from_file(path, spare.file, Some(0))?;
        segment.capacity = segment.capacity.max(spare.capacity);
        Ok(segment)
    }

    fn from_file(path: PathBuf, file: File, len: Option<u64>) -> Result<Self, AuditError> {
        let metadata = file.metadata().map_err(|e| AuditError::io(&path, e))?;
        Ok(OpenSegment {
            len: len.unwrap_or(metadata.len()),
            capacity: metadata.len(),
            id: FileId::of(&metadata),
            path,
            file,
        })
    }

    /// Whether the records just synced can be found: the file's name still leads to it. A file
    /// removed (or its directory) or replaced while open takes writes and syncs without an error,
    /// into an inode nobody will ever read, so a sync alone does not prove a record is kept.
    fn still_named(&self) -> Result<(), AuditError> {
        match std::fs::metadata(&self.path) {
            Ok(now) if FileId::of(&now) == self.id => Ok(()),
            Ok(_) => Err(AuditError::io(
                &self.path,
                std::io::Error::other(
                    "the audit file was replaced while open; records go to a new file once it can be created",
                ),
            )),
            Err(e) => Err(AuditError::io(
                &self.path,
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "the audit file was removed while open ({e}); records go to a new file once its directory exists"
                    ),
                ),
            )),
        }
    }
}

/// A file's identity on its filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }

    /// Without inode numbers, a file that can still be found by its name counts as the same.
    #[cfg(not(unix))]
    fn of(_: &std::fs::Metadata) -> Self {
        FileId { dev: 0, ino: 0 }
    }
}
