//! The files of a log directory: `audit-<first seq, 20 digits>.jsonl`, and reading their lines.
//!
//! Only names in exactly that form are log files; anything else in the directory (such as the
//! `.damaged-<ms>` copies that recovery leaves, or the prepared spare) is ignored. This module never
//! changes a file.

use crate::AuditError;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read as _};
use std::os::unix::fs::FileExt as _;
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
    /// Ends in `\n`. Only a line at the end of the content can lack it.
    pub complete: bool,
    /// Nothing follows it in the file (as read now) but zeros, if anything.
    pub last: bool,
}

/// How much of an unfinished line is read before it is looked at for the zeros that end a file's
/// content: a torn line in a prepared file is followed by megabytes of them.
const CHUNK: u64 = 64 * 1024;

/// Reads a file line by line with a large buffer, tracking offsets, holding one line at a time.
///
/// A file's content ends at the first NUL byte that starts a line, or that falls in a last line
/// without its `\n` (a prepared file is zero-filled past its content, see the `prepare` module);
/// [`LineReader::after_end`] then says whether anything but zeros follows. A line that ends in
/// `\n` is a line whatever its bytes, so a garbage last line is judged as it always was.
pub(crate) struct LineReader {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    /// Where the line in `line` starts.
    line_start: u64,
    number: u64,
    line: Vec<u8>,
    /// Where the content ended, once reached.
    end: Option<u64>,
    /// Once looked for: the offset of the first byte after `end` that is not zero.
    after_end: Option<Option<u64>>,
    /// The last line was lent in place from the reader's buffer: this many bytes of it are
    /// consumed before the reader moves on.
    lent: usize,
}

impl LineReader {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(|e| AuditError::io(path, e))?;
        Ok(LineReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            offset: 0,
            line_start: 0,
            number: 0,
            line: Vec::with_capacity(1024),
            end: None,
            after_end: None,
            lent: 0,
        })
    }

    /// The next line (with its `\n`, if any), or `None` at the end of the content.
    pub fn next_line(&mut self) -> Result<Option<(LineInfo, &[u8])>, AuditError> {
        self.settle();
        if self.end.is_none()
            && let Some(len) = self.whole_line_in_buffer()
        {
            // The common case: the line and the byte after it are already buffered. It is lent in
            // place rather than copied (start-up reads every line of the log).
            let info = LineInfo {
                start: self.offset,
                number: self.number + 1,
                complete: true,
                last: self.reader.buffer().get(len) == Some(&0),
            };
            self.line_start = self.offset;
            self.offset += len as u64;
            self.number += 1;
            self.lent = len;
            return Ok(Some((info, &self.reader.buffer()[..len])));
        }
        self.read_line()
            .map_err(|e| AuditError::io(&self.path, e))?;
        if self.end.is_some() && self.line.is_empty() {
            return Ok(None);
        }
        let last =
            self.end.is_some() || self.at_end().map_err(|e| AuditError::io(&self.path, e))?;
        let info = LineInfo {
            start: self.line_start,
            number: self.number + 1,
            complete: self.line.last() == Some(&b'\n'),
            last,
        };
        self.number += 1;
        Ok(Some((info, &self.line)))
    }

    /// The length of the next line, `\n` included, when it and the byte after it (which says
    /// whether it is the last) are in the reader's buffer and it does not start at the end of the
    /// content. A line that ends in `\n` is a line whatever its bytes (see the type's header), so
    /// nothing else needs looking at; any other case is left to [`LineReader::read_line`].
    fn whole_line_in_buffer(&self) -> Option<usize> {
        let buf = self.reader.buffer();
        if buf.first().is_none_or(|&b| b == 0) {
            return None;
        }
        let len = memchr::memchr(b'\n', buf)? + 1;
        (len < buf.len()).then_some(len)
    }

    /// Consumes the line lent in place, if any.
    fn settle(&mut self) {
        self.reader.consume(std::mem::take(&mut self.lent));
    }

    /// Where the content of the file ends (valid once `next_line` returned `None`).
    pub fn content_end(&self) -> u64 {
        self.end.unwrap_or(self.offset)
    }

    /// The offset of the first byte other than zero after the end of the content, if any: what the
    /// writer never leaves there (a prepared file holds zeros past its last record). Reads the
    /// rest of the file; call it once `next_line` returned `None` or a last line.
    pub fn after_end(&mut self) -> Result<Option<u64>, AuditError> {
        self.settle();
        if let Some(found) = self.after_end {
            return Ok(found);
        }
        if self.end.is_none() {
            if !self.at_end().map_err(|e| AuditError::io(&self.path, e))? {
                return Ok(Some(self.offset));
            }
            self.end = Some(self.offset);
        }
        let end = self.end.unwrap_or(self.offset);
        let found = self
            .skip_zeros()
            .and_then(|found| self.unless_written_since(end, found))
            .map_err(|e| AuditError::io(&self.path, e))?;
        self.after_end = Some(found);
        Ok(found)
    }

    /// `found` (bytes after the zeros at `end`), unless the byte at `end` is no longer zero: the
    /// writer, which writes only at the end of the content, added records while this read the rest,
    /// and what was found is theirs, not something after the end.
    fn unless_written_since(&self, end: u64, found: Option<u64>) -> io::Result<Option<u64>> {
        if found.is_none() {
            return Ok(None);
        }
        let mut byte = [0u8];
        let read = self.reader.get_ref().read_at(&mut byte, end)?;
        Ok(found.filter(|_| read == 1 && byte[0] == 0))
    }

    /// Reads the next line into `self.line`, stopping at the end of the content.
    fn read_line(&mut self) -> io::Result<()> {
        self.line.clear();
        self.line_start = self.offset;
        if self.end.is_some() {
            return Ok(());
        }
        if self.at_end()? {
            self.end = Some(self.offset);
            return Ok(());
        }
        loop {
            let before = self.line.len();
            let read = (&mut self.reader)
                .take(CHUNK)
                .read_until(b'\n', &mut self.line)?;
            self.offset += read as u64;
            if self.line.last() == Some(&b'\n') {
                return Ok(());
            }
            if let Some(nul) = self.line[before..].iter().position(|&b| b == 0) {
                return self.cut_at_nul(before + nul);
            }
            if (read as u64) < CHUNK {
                return Ok(()); // the end of the file, without `\n` or NUL: a torn last line
            }
        }
    }

    /// A line without `\n` so far holds a NUL at `nul`: if only zeros follow to the end of the
    /// file, the content ended there (the line is torn); if something else follows and a `\n`
    /// after it, all of it is one (garbage) line; else the content ended at the NUL and what
    /// follows is reported by `after_end`.
    fn cut_at_nul(&mut self, nul: usize) -> io::Result<()> {
        let line_start = self.line_start;
        let nul_at = line_start + nul as u64;
        let tail_nonzero = self.line[nul..].iter().position(|&b| b != 0);
        let found = match tail_nonzero {
            Some(i) => Some(nul_at + i as u64),
            None => {
                let found = self.skip_zeros()?;
                self.unless_written_since(nul_at, found)?
            }
        };
        let Some(found) = found else {
            self.line.truncate(nul);
            self.end = Some(nul_at);
            self.after_end = Some(None);
            return Ok(());
        };
        // Something follows the zeros: read on to a `\n` (zeros skipped are put back).
        let skipped = (self.offset - line_start) as usize;
        self.line.resize(skipped, 0);
        loop {
            let read = self.reader.read_until(b'\n', &mut self.line)?;
            self.offset += read as u64;
            if read == 0 || self.line.last() == Some(&b'\n') {
                break;
            }
        }
        if self.line.last() != Some(&b'\n') {
            self.line.truncate(nul);
            self.end = Some(nul_at);
            self.after_end = Some(Some(found));
        }
        Ok(())
    }

    /// Skips zeros from the current position; returns the offset of the first other byte (not
    /// consumed), or `None` at the end of the file.
    fn skip_zeros(&mut self) -> io::Result<Option<u64>> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            // OR-ing a chunk is vectorised; only a chunk with something in it is searched.
            if buf.iter().fold(0u8, |acc, &b| acc | b) != 0
                && let Some(i) = buf.iter().position(|&b| b != 0)
            {
                self.reader.consume(i);
                self.offset += i as u64;
                return Ok(Some(self.offset));
            }
            let len = buf.len();
            self.reader.consume(len);
            self.offset += len as u64;
        }
    }

    /// At the end of the file, or at a NUL: the end of the content.
    fn at_end(&mut self) -> io::Result<bool> {
        let buf = self.reader.fill_buf()?;
        Ok(buf.first().is_none_or(|&b| b == 0))
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

    /// A line as read: start, complete, last, bytes.
    type Read = (u64, bool, bool, Vec<u8>);

    /// The lines of `bytes`, where the content ends, and what follows the end.
    fn read_all(bytes: &[u8]) -> (Vec<Read>, u64, Option<u64>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let mut reader = LineReader::open(&path).unwrap();
        let mut seen = Vec::new();
        while let Some((info, bytes)) = reader.next_line().unwrap() {
            seen.push((info.start, info.complete, info.last, bytes.to_vec()));
        }
        let after = reader.after_end().unwrap();
        (seen, reader.content_end(), after)
    }

    /// Lines lent in place from the reader's buffer and lines read across its end (and across a
    /// read's chunk, and with NULs inside) come out alike, with their offsets, over several
    /// buffers' worth of a prepared file.
    #[test]
    fn lines_across_the_buffer_read_as_lines_within_it() {
        let (mut content, mut expected) = (Vec::new(), Vec::new());
        let mut n = 0usize;
        while content.len() < 3 << 20 {
            let len = match n % 7 {
                0 => 200_000,
                3 => 70_000,
                _ => n * 37 % 900,
            };
            let mut line = vec![b'a' + (n % 26) as u8; len];
            if n % 11 == 5 && len > 2 {
                line[len / 2] = 0;
            }
            line.push(b'\n');
            expected.push((content.len() as u64, line.clone()));
            content.extend_from_slice(&line);
            n += 1;
        }
        // A short last line, lent in place with the zeros after it in the buffer.
        expected.push((content.len() as u64, b"end\n".to_vec()));
        content.extend_from_slice(b"end\n");
        let end = content.len() as u64;
        content.extend_from_slice(&[0; 100_000]);
        let (lines, content_end, after) = read_all(&content);
        assert_eq!(lines.len(), expected.len());
        for (i, (line, (start, bytes))) in lines.iter().zip(&expected).enumerate() {
            let last = i + 1 == expected.len();
            assert_eq!(line, &(*start, true, last, bytes.clone()), "line {i}");
        }
        assert_eq!((content_end, after), (end, None));
    }

    #[test]
    fn the_content_ends_at_the_zeros_and_what_follows_them_is_told() {
        let mut prepared = b"ab\ncd\n".to_vec();
        prepared.extend_from_slice(&[0; 200_000]);
        let (lines, end, after) = read_all(&prepared);
        assert_eq!(
            lines,
            vec![
                (0, true, false, b"ab\n".to_vec()),
                (3, true, true, b"cd\n".to_vec())
            ]
        );
        assert_eq!((end, after), (6, None));

        // A torn write: part of a line, then zeros (more than one read's worth).
        let mut torn = b"ab\npart".to_vec();
        torn.extend_from_slice(&[0; 200_000]);
        let (lines, end, after) = read_all(&torn);
        assert_eq!(lines[1], (3, false, true, b"part".to_vec()));
        assert_eq!((end, after), (7, None));

        // Something after the zeros, with or without a torn line before them.
        let mut hidden = b"ab\n".to_vec();
        hidden.extend_from_slice(&[0; 100_000]);
        hidden.extend_from_slice(b"x\n");
        let (lines, end, after) = read_all(&hidden);
        assert_eq!((lines.len(), end, after), (1, 3, Some(100_003)));
        let mut torn_hidden = b"ab\npart".to_vec();
        torn_hidden.extend_from_slice(&[0; 100_000]);
        torn_hidden.extend_from_slice(b"x");
        let (lines, end, after) = read_all(&torn_hidden);
        assert_eq!(lines[1], (3, false, true, b"part".to_vec()));
        assert_eq!((end, after), (7, Some(100_007)));

        // What the writer adds at the end while a reader looks past it is not "after the end".
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live");
        let mut live = b"ab\n".to_vec();
        live.extend_from_slice(&[0; 3 << 20]);
        std::fs::write(&path, &live).unwrap();
        let mut reader = LineReader::open(&path).unwrap();
        while reader.next_line().unwrap().is_some() {}
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"cd\n", 3).unwrap();
        file.write_all_at(b"ef\n", 2 << 20).unwrap();
        assert_eq!(
            (reader.content_end(), reader.after_end().unwrap()),
            (3, None)
        );

        // A line that ends in `\n` is a line, whatever it holds: a garbage last line.
        let (lines, end, after) = read_all(b"ab\ngar\x00bage\n");
        assert_eq!(lines[1], (3, true, true, b"gar\x00bage\n".to_vec()));
        assert_eq!((end, after), (12, None));
    }
}
