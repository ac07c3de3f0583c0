//! Start-up: verify the whole log, repair a torn last line, recover from a broken chain if asked,
//! and tell the writer where the chain continues.
//!
//! Runs on a blocking thread and streams records out as it reads them, so a large log never sits
//! in memory. It changes files only to cut off a torn line, to cut an earlier file a crash left
//! with zeros after its content, to give the live file back its name if a crash took that name
//! (`prepare::adopt_spare`), or, with `recover`, to move damage aside.

use crate::chain::{ChainState, WalkEnd, walk};
use crate::files::OpenSegment;
use crate::prepare::adopt_spare;
use crate::record::{ScannedLine, Verified, decode_record, decode_scanned, hex64_str, scan_line};
use crate::segment::{Segment, list_segments, sync_dir};
use crate::writer::unix_ms;
use crate::{AuditError, AuditOptions, VerifyFailure};
use serde::de::DeserializeOwned;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

/// What opening the log found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Valid records replayed.
    pub records: u64,
    /// The seq of the last valid record (0 for an empty log).
    pub last_seq: u64,
    /// Log files in the directory after opening.
    pub files: usize,
    /// What was cut off the end of the last file, if its last line was torn by a crash.
    pub torn_line_repaired: Option<String>,
    /// The broken chain that `recover` moved aside.
    pub recovered_from: Option<VerifyFailure>,
    /// The files `recover` set aside (copies of the damaged file, and every later file).
    pub set_aside: Vec<PathBuf>,
}

/// Where the writer continues (the last record's timestamp is the decoder's to tell).
pub(crate) struct Resume {
    pub chain: ChainState,
    pub segment: OpenSegment,
}

/// Lines handed from the verifying thread to the decoder at a time.
const CHUNK_LINES: usize = 1024;

/// Verified lines of one file, waiting to be decoded.
pub(crate) struct Chunk {
    path: PathBuf,
    first_seq: u64,
    bytes: Vec<u8>,
    lines: Vec<ChunkLine>,
}

/// One line of a [`Chunk`]. A line the scan split in the writer's layout keeps its seq and
/// timestamp here, and its event (as a JSON object), `prev` and `hash` (64 bytes each) in the
/// chunk's bytes: the decoder neither splits it again nor copies it once more. Any other line is
/// kept whole.
struct ChunkLine {
    /// Where its bytes end in [`Chunk::bytes`].
    end: usize,
    /// Its line number in the file.
    number: u64,
    /// Seq, timestamp, and where the event ends (`prev` and `hash` follow it).
    split: Option<(u64, i64, usize)>,
}

impl Chunk {
    /// Adds a verified line.
    fn push(&mut self, scanned: ScannedLine, line: &[u8], number: u64) {
        let split = match scanned {
            ScannedLine::Split(split) => {
                self.bytes.push(b'{');
                self.bytes
                    .extend_from_slice(line.get(split.fields).unwrap_or_default());
                self.bytes.push(b'}');
                let event_end = self.bytes.len();
                self.bytes.extend_from_slice(&split.prev);
                self.bytes.extend_from_slice(&split.hash);
                Some((split.seq, split.ts_ms, event_end))
            }
            ScannedLine::Parsed(_) => {
                self.bytes.extend_from_slice(line);
                None
            }
        };
        self.lines.push(ChunkLine {
            end: self.bytes.len(),
            number,
            split,
        });
    }

    /// A chunk for `segment`, reusing a decoded one's buffers when there is one: fresh
    /// half-megabyte buffers would cost a page fault per 4 KiB, a million lines over.
    fn new(segment: &Segment, reuse: Option<Chunk>) -> Self {
        let (mut bytes, mut lines) = match reuse {
            Some(chunk) => (chunk.bytes, chunk.lines),
            None => (
                Vec::with_capacity(CHUNK_LINES * 512),
                Vec::with_capacity(CHUNK_LINES),
            ),
        };
        bytes.clear();
        lines.clear();
        Chunk {
            path: segment.path.clone(),
            first_seq: segment.first_seq,
            bytes,
            lines,
        }
    }

    /// Decodes every line into a record for `sink`, in order; returns the last one's timestamp.
    /// The chunk is left empty, for [`scan`] to reuse.
    ///
    /// Runs on the thread that replays the records, so every allocation of a record is freed
    /// where it was made (an allocation freed on another thread costs several times as much).
    pub(crate) fn decode<E: DeserializeOwned, T: Verified<E>>(
        &mut self,
        scratch: &mut Vec<u8>,
        mut sink: impl FnMut(T),
    ) -> Result<Option<i64>, AuditError> {
        let mut last_ts_ms = None;
        let mut start = 0;
        for line in self.lines.drain(..) {
            let bytes = &self.bytes[start..line.end];
            let decoded = match line.split {
                Some((seq, ts_ms, event_end)) => {
                    let (event, chain) = bytes.split_at(event_end - start);
                    let (prev, hash) = chain.split_at(chain.len() / 2);
                    decode_scanned::<E, T>((seq, ts_ms), hex64_str(prev), hex64_str(hash), event)
                }
                None => {
                    decode_record::<E>(bytes, scratch).map(|(record, _)| T::from_record(record))
                }
            };
            start = line.end;
            let record = decoded.map_err(|message| AuditError::Decode {
                file: self.path.clone(),
                line: line.number,
                message,
            })?;
            last_ts_ms = Some(record.ts_ms());
            sink(record);
        }
        self.bytes.clear();
        Ok(last_ts_ms)
    }
}

/// Scans, repairs and prepares the directory; hands every valid line to `send` in order, in
/// chunks for [`Chunk::decode`] (`spare` gives back a decoded one to fill again, if any).
///
/// Reads, hashes and checks the chain (reading only the chain fields) on the calling thread; the
/// decoding is the receiver's, on its own thread, so start-up costs the slower of the two.
pub(crate) fn scan(
    options: &AuditOptions,
    mut send: impl FnMut(Chunk) -> Result<(), AuditError>,
    mut spare: impl FnMut() -> Option<Chunk>,
) -> Result<(OpenReport, Resume), AuditError> {
    let dir = &options.dir;
    fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
    adopt_spare(dir)?;
    let segments = list_segments(dir)?;
    let mut pending: Option<Chunk> = None;
    let walked = walk(&segments, scan_line, |scanned, line, segment, info| {
        if pending
            .as_ref()
            .is_some_and(|c| c.first_seq != segment.first_seq)
            && let Some(done) = pending.take()
        {
            send(done)?;
        }
        let chunk = pending.get_or_insert_with(|| Chunk::new(segment, spare()));
        chunk.push(scanned, line, info.number);
        if chunk.lines.len() == CHUNK_LINES
            && let Some(full) = pending.take()
        {
            send(full)?;
        }
        Ok(())
    });
    let walk = walked?;
    if let Some(last) = pending.take() {
        send(last)?;
    }
    let mut torn_line_repaired = None;
    let mut recovered_from = None;
    let mut set_aside = Vec::new();
    // How many files stay, and the content length of the last (zeros may follow it).
    let (kept, last_len) = match walk.end {
        WalkEnd::Clean => (segments.len(), walk.content_ends.last().copied()),
        WalkEnd::Torn {
            segment,
            start,
            description,
        } => {
            truncate(&segments[segment].path, start)?;
            tracing::warn!(%description, "cut off a torn last line of the audit log (an unacknowledged write)");
            torn_line_repaired = Some(description);
            (segments.len(), Some(start))
        }
        WalkEnd::Broken {
            segment,
            start,
            failure,
        } => {
            if !options.recover {
                return Err(AuditError::Broken(failure));
            }
            let (kept, aside) = move_damage_aside(dir, &segments, segment, start)?;
            set_aside = aside;
            tracing::warn!(%failure, "audit chain broken; damaged part moved aside, continuing from the last good record");
            recovered_from = Some(failure);
            let last_len = if kept > segment {
                Some(start)
            } else {
                kept.checked_sub(1)
                    .and_then(|i| walk.content_ends.get(i).copied())
            };
            (kept, last_len)
        }
    };
    seal_earlier(&segments[..kept], &walk.content_ends)?;
    let segment = current_segment(dir, &segments[..kept], last_len, walk.chain.next_seq)?;
    let report = OpenReport {
        records: walk.records,
        last_seq: walk.chain.next_seq.saturating_sub(1),
        files: list_segments(dir)?.len(),
        torn_line_repaired,
        recovered_from,
        set_aside,
    };
    let resume = Resume {
        chain: walk.chain,
        segment,
    };
    Ok((report, resume))
}

/// Keeps the valid prefix of `segments[damaged]` (a copy of the whole file goes aside) and moves
/// every later file aside. Returns how many files stay in place, and the files set aside.
fn move_damage_aside(
    dir: &Path,
    segments: &[Segment],
    damaged: usize,
    start: u64,
) -> Result<(usize, Vec<PathBuf>), AuditError> {
    let stamp = unix_ms();
    let path = &segments[damaged].path;
    let mut set_aside = vec![aside(path, stamp)];
    let kept = if start == 0 {
        rename(path, &set_aside[0])?;
        damaged
    } else {
        fs::copy(path, &set_aside[0]).map_err(|e| AuditError::io(&set_aside[0], e))?;
        truncate(path, start)?;
        damaged + 1
    };
    for later in &segments[damaged + 1..] {
        let to = aside(&later.path, stamp);
        rename(&later.path, &to)?;
        set_aside.push(to);
    }
    sync_dir(dir)?;
    Ok((kept, set_aside))
}

/// Cuts every kept file but the last to its content: a crash after the writer moved to a new
/// file, before it sealed the old one, leaves zeros after the old one's content.
fn seal_earlier(kept: &[Segment], content_ends: &[u64]) -> Result<(), AuditError> {
    let earlier = kept.len().saturating_sub(1);
    for (segment, &end) in kept[..earlier].iter().zip(content_ends) {
        let size = fs::metadata(&segment.path)
            .map_err(|e| AuditError::io(&segment.path, e))?
            .len();
        if size > end {
            truncate(&segment.path, end)?;
        }
    }
    Ok(())
}

/// The file to write to: the last kept one (its content is its first `last_len` bytes), unless
/// it is empty and named for another seq (then it holds nothing and is replaced by one named for
/// `next_seq`). A file the last run left prepared is written on in place.
fn current_segment(
    dir: &Path,
    kept: &[Segment],
    last_len: Option<u64>,
    next_seq: u64,
) -> Result<OpenSegment, AuditError> {
    if let Some(last) = kept.last() {
        let len = match last_len {
            Some(len) => len,
            None => fs::metadata(&last.path)
                .map_err(|e| AuditError::io(&last.path, e))?
                .len(),
        };
        let segment = OpenSegment::open_existing(&last.path, len)?;
        if segment.len > 0 || last.first_seq == next_seq {
            return Ok(segment);
        }
        drop(segment);
        fs::remove_file(&last.path).map_err(|e| AuditError::io(&last.path, e))?;
    }
    OpenSegment::create(dir, next_seq)
}

fn aside(path: &Path, stamp: i64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{stamp}"));
    path.with_file_name(name)
}

fn rename(from: &Path, to: &Path) -> Result<(), AuditError> {
    fs::rename(from, to).map_err(|e| AuditError::io(from, e))
}

/// Cuts `path` to `len` bytes, durably.
fn truncate(path: &Path, len: u64) -> Result<(), AuditError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| AuditError::io(path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{line_hash, write_line};
    use crate::{GENESIS_PREV, Record, Replayed};
    use serde_json::{Value, json};

    /// A line in the writer's layout and one in another (its fields reordered, hashed again):
    /// the chunk gives each the record a full parse gives, and the last one's timestamp.
    #[test]
    fn a_chunk_decodes_split_and_parsed_lines_to_the_records_a_full_parse_gives() {
        let mut written = Vec::new();
        let hash = write_line(
            &mut written,
            1,
            42,
            GENESIS_PREV,
            br#"{"kind":"ping","n":7}"#,
        );
        let body = format!(r#"{{"ts_ms":-5,"kind":"pong","seq":2,"prev":"{hash}","n":8"#);
        let other = format!(r#"{body},"hash":"{}"}}"#, line_hash(body.as_bytes())) + "\n";
        let segment = Segment {
            first_seq: 1,
            path: PathBuf::from("audit-00000000000000000001.jsonl"),
        };
        let filled = |reuse: Option<Chunk>| {
            let mut chunk = Chunk::new(&segment, reuse);
            for (number, line) in [&written[..], other.as_bytes()].into_iter().enumerate() {
                let scanned = scan_line(line).unwrap();
                chunk.push(scanned, line, number as u64 + 1);
            }
            chunk
        };
        let mut chunk = filled(None);
        assert!(matches!(chunk.lines[0].split, Some((1, 42, _))));
        assert!(chunk.lines[1].split.is_none());

        let mut records: Vec<Record<Value>> = Vec::new();
        let last = chunk.decode(&mut Vec::new(), |r| records.push(r)).unwrap();
        assert_eq!(last, Some(-5));
        let parsed: Vec<Record<Value>> = [&written[..], other.as_bytes()]
            .into_iter()
            .map(|line| decode_record(line, &mut Vec::new()).unwrap().0)
            .collect();
        assert_eq!(records, parsed);
        assert_eq!(records[0].event, json!({"kind": "ping", "n": 7}));
        assert_eq!(
            (records[1].prev.as_str(), records[1].seq),
            (hash.as_str(), 2)
        );
        assert!(chunk.lines.is_empty() && chunk.bytes.is_empty());

        // Read for a replay, the same records without their chain fields.
        let mut chunk = filled(Some(chunk));
        let mut replayed: Vec<Replayed<Value>> = Vec::new();
        let last = chunk.decode(&mut Vec::new(), |r| replayed.push(r)).unwrap();
        assert_eq!(last, Some(-5));
        let expected: Vec<Replayed<Value>> = parsed
            .iter()
            .map(|r| Replayed {
                seq: r.seq,
                ts_ms: r.ts_ms,
                event: r.event.clone(),
            })
            .collect();
        assert_eq!(replayed, expected);

        // A line the decoder cannot read is an error naming its file and line.
        let mut chunk = Chunk::new(&segment, Some(chunk));
        let bad = format!(r#"{{"seq":1,"ts_ms":1,"prev":"{GENESIS_PREV}","n":"#);
        let bad = format!(r#"{bad},"hash":"{}"}}"#, line_hash(bad.as_bytes()));
        chunk.bytes.extend_from_slice(bad.as_bytes());
        chunk.lines.push(ChunkLine {
            end: chunk.bytes.len(),
            number: 9,
            split: None,
        });
        let err = chunk
            .decode::<Value, Record<Value>>(&mut Vec::new(), |_| panic!("nothing to replay"))
            .unwrap_err();
        assert!(
            matches!(&err, AuditError::Decode { line: 9, file, .. } if file == &segment.path),
            "{err}"
        );
    }
}
