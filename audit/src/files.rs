//! The default store: the log's records in local files, `audit-<first seq>.jsonl`.
//!
//! A batch is one write in place (`pwrite` at the end of the file's content, into zeros prepared
//! ahead: see the `prepare` module) and one `fdatasync`. A write that fails is cut back, so the file
//! never keeps part of a batch. Files roll over once full: the prepared spare is linked under the
//! next file's name (one system call), and the rest (that name made durable, the file left sealed:
//! cut to its content) happens in the background. The directory's `.lock` is held for as long as
//! the store is open. This module never assigns a seq or hashes a line: the `writer` does, above
//! the seam.
//!
//! Nothing here asks for the live file's times: a `stat` that does marks them as seen, and the
//! kernel then stamps the next write with a fine-grained time, which dirties the inode, so that its
//! `fdatasync` writes the inode as well as the data (a second device write per batch; measured on
//! this kind of VM: 3 device writes per record instead of 2, p50 +60–130 µs). [`FileId`] asks
//! `statx` for the inode number and size only.

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
    /// Starting the next file failed after the last batch (said once per failing spell).
    next_failing: bool,
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
            next_failing: false,
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
        // The next file first: if it cannot be had, the records go on into this one (which grows
        // past its zeros), and the next batch tries again.
        let next = match spare {
            Some(spare) => self.take_spare(spare, next_seq),
            None => OpenSegment::create(&self.config.dir, next_seq),
        };
        match next {
            Ok(next) => {
                self.next_failing = false;
                if let Some(old) = self.segment.replace(next) {
                    self.seal(old);
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut self.next_failing, true) {
                    tracing::warn!(%error, "cannot start the next audit file; writing on in this one, and trying again after each batch");
                }
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
        match self.preparer.take() {
            Some(spare) => self.take_spare(spare, first_seq),
            None => OpenSegment::create(&self.config.dir, first_seq),
        }
    }

    /// The prepared `spare` as the file whose first record will be `first_seq` (a plain new file if
    /// it cannot be). Only the link is done here; the preparing thread makes the name durable and
    /// removes the spare's own name after it (see `Preparer::placed`).
    fn take_spare(&mut self, spare: Spare, first_seq: u64) -> Result<OpenSegment, AuditError> {
        let spare_path = self.preparer.spare_path();
        match OpenSegment::from_spare(&self.config.dir, &spare_path, spare, first_seq) {
            Ok(segment) => {
                self.preparer.placed();
                Ok(segment)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot take the prepared audit file; starting a plain one");
                OpenSegment::create(&self.config.dir, first_seq)
            }
        }
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
    /// `first_seq`. A link, not a rename, so that a file of that name is never replaced, and so that
    /// the spare's own name, durable since it was prepared, stays until the new one is durable too
    /// (the preparing thread syncs the directory, then removes it): a crash in between leaves the
    /// records under one name at least, and start-up gives them theirs (`prepare::adopt_spare`).
    /// No sync here: it is the leader's path.
    fn from_spare(
        dir: &Path,
        spare_path: &Path,
        spare: Spare,
        first_seq: u64,
    ) -> Result<Self, AuditError> {
        let path = dir.join(segment_file_name(first_seq));
        std::fs::hard_link(spare_path, &path).map_err(|e| AuditError::io(&path, e))?;
        match Self::from_file(path.clone(), spare.file, Some(0)) {
            Ok(mut segment) => {
                segment.capacity = segment.capacity.max(spare.capacity);
                Ok(segment)
            }
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                Err(error)
            }
        }
    }

    fn from_file(path: PathBuf, file: File, len: Option<u64>) -> Result<Self, AuditError> {
        let (id, size) = FileId::of_open(&file).map_err(|e| AuditError::io(&path, e))?;
        Ok(OpenSegment {
            len: len.unwrap_or(size),
            capacity: size,
            id,
            path,
            file,
        })
    }

    /// Whether the records just synced can be found: the file's name still leads to it. A file
    /// removed (or its directory) or replaced while open takes writes and syncs without an error,
    /// into an inode nobody will ever read, so a sync alone does not prove a record is kept.
    fn still_named(&self) -> Result<(), AuditError> {
        match FileId::named(&self.path) {
            Ok(now) if now == self.id => Ok(()),
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

/// A file's identity on its filesystem, asked for without the file's times (see the module's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

#[cfg(target_os = "linux")]
impl FileId {
    /// The file `path` names now.
    fn named(path: &Path) -> std::io::Result<Self> {
        use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
        Ok(Self::from_statx(&statx(
            CWD,
            path,
            AtFlags::empty(),
            StatxFlags::INO,
        )?))
    }

    /// An open file's identity and size.
    fn of_open(file: &File) -> std::io::Result<(Self, u64)> {
        use rustix::fs::{AtFlags, StatxFlags, statx};
        let stat = statx(
            file,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::INO | StatxFlags::SIZE,
        )?;
        Ok((Self::from_statx(&stat), stat.stx_size))
    }

    fn from_statx(stat: &rustix::fs::Statx) -> Self {
        FileId {
            dev: (u64::from(stat.stx_dev_major) << 32) | u64::from(stat.stx_dev_minor),
            ino: stat.stx_ino,
        }
    }
}

/// Elsewhere the std's `stat` (the times it reads cost nothing there that was measured).
#[cfg(not(target_os = "linux"))]
impl FileId {
    fn named(path: &Path) -> std::io::Result<Self> {
        std::fs::metadata(path).map(|m| Self::of(&m))
    }

    fn of_open(file: &File) -> std::io::Result<(Self, u64)> {
        file.metadata().map(|m| (Self::of(&m), m.len()))
    }

    fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}
