//! An append-only JSON-lines file whose appends are durable before they are acknowledged.
//!
//! Owns the file handle and the order of writes: appends are serialised by one async lock, each line
//! goes out in a single `write` followed by `sync_data`, so lines never interleave and a crash can at
//! worst leave one torn last line, which [`Journal::open`] cuts off (with a warning) before appending.
//! It must never hold a lock while blocking a runtime thread: the blocking I/O runs on the blocking pool.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

/// A durable JSON-lines log (the notification outbox, the approval ledger).
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: Arc<File>,
    append_lock: tokio::sync::Mutex<()>,
}

/// One complete line read back at open time.
#[derive(Debug)]
pub(crate) struct Line {
    /// 1-based line number, for error messages.
    pub number: usize,
    /// Where the line starts in the file, to cut the file back to it.
    pub offset: u64,
    pub text: String,
}

impl Journal {
    /// Opens (creating if missing) the journal, cuts off a torn last line, and returns the complete
    /// lines already in it so the owner can replay them.
    pub(crate) fn open(path: &Path) -> io::Result<(Journal, Vec<Line>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                torn_bytes = bytes.len() - complete,
                "cutting off a torn last line (an append interrupted by a crash)"
            );
            file.set_len(complete as u64)?;
            file.sync_data()?;
            file.seek(SeekFrom::End(0))?;
        }
        let mut lines = Vec::new();
        let mut offset = 0u64;
        for (i, raw) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
            let text = String::from_utf8_lossy(raw);
            if !text.trim().is_empty() {
                lines.push(Line {
                    number: i + 1,
                    offset,
                    text: text.into_owned(),
                });
            }
            offset += raw.len() as u64 + 1;
        }
        let journal = Journal {
            path: path.to_owned(),
            file: Arc::new(file),
            append_lock: tokio::sync::Mutex::new(()),
        };
        Ok((journal, lines))
    }

    /// Cuts the file back to `offset` bytes, at start-up, before any append: for an owner that finds
    /// the last complete line unusable and must not let later lines follow it.
    pub(crate) fn truncate_at(&self, offset: u64) -> io::Result<()> {
        self.file.set_len(offset)?;
        self.file.sync_data()
    }

    /// Where the journal lives, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as a line and returns once it is on disk. If the write or the sync fails,
    /// the file is cut back to where it was, so a line the caller was told failed never reappears.
    pub(crate) async fn append(&self, record: &Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        let _serialised = self.append_lock.lock().await;
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || {
            let before = file.metadata()?.len();
            let written = (&*file).write_all(&line).and_then(|()| file.sync_data());
            if written.is_err() {
                let _ = file.set_len(before);
            }
            written
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn appends_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let (journal, lines) = Journal::open(&path).unwrap();
        assert!(lines.is_empty());
        journal.append(&json!({"n": 1})).await.unwrap();
        journal.append(&json!({"n": 2})).await.unwrap();
        drop(journal);
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(br#"{"n": 3, "torn"#).unwrap();
        drop(raw);

        let (journal, lines) = Journal::open(&path).unwrap();
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, [r#"{"n":1}"#, r#"{"n":2}"#]);
        journal.append(&json!({"n": 4})).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"n\":1}\n{\"n\":2}\n{\"n\":4}\n");
    }
}
