//! The files of a log directory: `audit-<first seq, 20 digits>.jsonl`, and reading their lines.
//!
//! Only names in exactly that form are log files; anything else in the directory (such as the
//! `.damaged-<ms>` copies that recovery leaves) is ignored. This module never changes a file.

use crate::AuditError;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

/// One file of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    /// The seq of its first record, from its name.
    pub first_seq: u64,
    pub path: PathBuf,
}

/// The name of the file whose first record has `first_seq`.
pub(crate) fn segment_file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files in `dir`, oldest first. Errors if `dir` cannot be read.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<Segment>, AuditError> {
    let entries = std::fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io(dir, e))?;
        let Some(first_seq) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        segments.push(Segment {
            first_seq,
            path: entry.path(),
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Makes a file's creation, rename or removal in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io(dir, e))
}

/// One line read by [`LineReader`]; the bytes are in the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineInfo {
    /// Byte offset of the line's start in the file: where to cut it off.
    pub start: u64,
    /// 1-based line number.
    pub number: u64,
    /// Ends in `\n`. Only a line at the end of the file can lack it.
    pub complete: bool,
    /// Nothing follows it in the file (as read now).
    pub last: bool,
}

/// Reads a file line by line with a large buffer, tracking offsets, holding one line at a time.
pub(crate) struct LineReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    number: u64,
    line: Vec<u8>,
}

impl LineReader {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
        Ok(LineReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            offset: 0,
            number: 0,
            line: Vec::with_capacity(1024),
        })
    }

    /// The next line (with its `\n`, if any), or `None` at the end of the file.
    pub fn next_line(&mut self) -> Result<Option<(LineInfo, &[u8])>, AuditError> {
        self.line.clear();
        let read = self
            .reader
            .read_until(b'\n', &mut self.line)
            .map_err(|e| AuditError::io(&self.path, e))?;
        if read == 0 {
            return Ok(None);
        }
        let last = self.at_eof().map_err(|e| AuditError::io(&self.path, e))?;
        let info = LineInfo {
            start: self.offset,
            number: self.number + 1,
            complete: self.line.last() == Some(&b'\n'),
            last,
        };
        self.offset += read as u64;
        self.number += 1;
        Ok(Some((info, &self.line)))
    }

    fn at_eof(&mut self) -> io::Result<bool> {
        Ok(self.reader.fill_buf()?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let name = segment_file_name(42);
        assert_eq!(name, "audit-00000000000000000042.jsonl");
        assert_eq!(parse_segment_name(&name), Some(42));
        assert_eq!(parse_segment_name(&format!("{name}.damaged-17")), None);
        assert_eq!(parse_segment_name("audit-42.jsonl"), None);
        assert_eq!(parse_segment_name("audit-99999999999999999999.jsonl"), None);
        assert_eq!(
            parse_segment_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
    }

    #[test]
    fn lines_carry_offsets_and_completeness() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"ab\ncd\nef").unwrap();
        let mut reader = LineReader::open(&path).unwrap();
        let mut seen = Vec::new();
        while let Some((info, bytes)) = reader.next_line().unwrap() {
            seen.push((
                info.start,
                info.number,
                info.complete,
                info.last,
                bytes.to_vec(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (0, 1, true, false, b"ab\n".to_vec()),
                (3, 2, true, false, b"cd\n".to_vec()),
                (6, 3, false, true, b"ef".to_vec()),
            ]
        );
    }
}
