//! Walking the hash chain across the files of a directory, and offline verification.
//!
//! The walk is shared by [`verify_dir`] and by start-up (`open`), so both judge a line the same way:
//! a bad final line of the last file is a torn write (a crash mid-batch, never acknowledged), a bad
//! line anywhere else is a broken chain. A file's content ends at the zeros a prepared file holds
//! after it; bytes other than zeros after them are reported at their offset, as a broken chain.
//! This module reads but never changes files.

use crate::record::{LineHeader, hash_hex, parse_line};
use crate::segment::{LineInfo, LineReader, Segment, list_segments};
use crate::{AuditError, GENESIS_PREV, VerifyFailure};
use std::path::Path;

/// The outcome of [`verify_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// No line was changed, removed, inserted or reordered (a torn last line does not count: it is
    /// what a crash leaves, and was never acknowledged).
    pub ok: bool,
    /// Records that verified, in order, before any failure or torn line.
    pub records: u64,
    /// Log files in the directory.
    pub files: usize,
    /// The first bad line, when `ok` is false.
    pub failure: Option<VerifyFailure>,
    /// A torn last line (incomplete or unparsable), which `open` would cut off.
    pub torn_last_line: Option<String>,
    /// The hash of the last record that verified (seq `records`); empty when none did. Kept
    /// elsewhere, it is what shows later that no records were cut off the end.
    pub last_hash: String,
    /// With an [`Anchor`]: why the log does not hold it (cut short, or rewritten).
    pub anchor_problem: Option<String>,
    /// The first record that is not as it should be: the chain's first bad line, else the anchored
    /// record (rewritten) or the first one missing (cut short).
    pub first_bad_seq: Option<u64>,
}

/// Verifies every file of `dir` offline. Needs only each line's chain fields and bytes, so it works
/// for any event type. `Err` only when the files cannot be read; a bad chain is a report with
/// `ok: false`. Removing the last records of the log cannot be detected from the log alone: see
/// [`verify_dir_against`].
pub fn verify_dir(dir: &Path) -> Result<VerifyReport, AuditError> {
    verify_dir_against(dir, None)
}

/// A record's seq and hash, kept somewhere else (`SEQ:HASH`, as `audit verify` prints them): the
/// log must still hold that record, unchanged, or it was cut short or rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub hash: String,
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{text:?} is not an anchor: expected SEQ:HASH (a seq and a sha256 hex hash, as `audit verify` prints them)"
            )
        };
        let (seq, hash) = text.trim().split_once(':').ok_or_else(bad)?;
        let seq = seq
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(bad)?;
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Anchor { seq, hash })
    }
}

/// [`verify_dir`], and when `anchor` is given, that the log still holds the anchored record with
/// its hash; `anchor_problem` says why not.
pub fn verify_dir_against(dir: &Path, anchor: Option<&Anchor>) -> Result<VerifyReport, AuditError> {
    let segments = list_segments(dir)?;
    let mut anchored = None;
    let walk = walk(&segments, parse_line, |line, _, _, _| {
        if let Some(anchor) = anchor
            && line.seq == anchor.seq
        {
            anchored = Some(line.hash == anchor.hash);
        }
        Ok(())
    })?;
    let (failure, torn_last_line) = match walk.end {
        WalkEnd::Clean => (None, None),
        WalkEnd::Torn { description, .. } => (None, Some(description)),
        WalkEnd::Broken { failure, .. } => (Some(failure), None),
    };
    Ok(report(
        walk.records,
        segments.len(),
        failure,
        torn_last_line,
        walk.chain.prev,
        anchor,
        anchored,
    ))
}

/// The report of a walk that verified `records` (the last one's hash `last_prev`) and stopped at
/// `failure`, if any; `anchored` says whether the anchor's seq was found with its hash. Shared by
/// the files and the PostgreSQL store, so both judge an anchor alike.
pub(crate) fn report(
    records: u64,
    files: usize,
    failure: Option<VerifyFailure>,
    torn_last_line: Option<String>,
    last_prev: String,
    anchor: Option<&Anchor>,
    anchored: Option<bool>,
) -> VerifyReport {
    let anchor_problem = match (anchor, anchored) {
        (None, _) | (Some(_), Some(true)) => None,
        // A broken chain is reported as such; the anchor adds nothing to it.
        (Some(_), None) if failure.is_some() => None,
        (Some(anchor), None) => Some(format!(
            "the log ends at seq {}, before the anchor's seq {}: records were cut off its end (or this is another log)",
            records, anchor.seq
        )),
        (Some(anchor), Some(false)) => Some(format!(
            "seq {} does not have the anchor's hash {}: the log was rewritten from there (or this is another log)",
            anchor.seq, anchor.hash
        )),
    };
    let first_bad_seq = failure.as_ref().map(|f| f.seq).or_else(|| {
        anchor
            .filter(|_| anchor_problem.is_some())
            .map(|a| a.seq.min(records + 1))
    });
    VerifyReport {
        ok: failure.is_none() && anchor_problem.is_none(),
        anchor_problem,
        first_bad_seq,
        records,
        files,
        failure,
        torn_last_line,
        last_hash: if records == 0 {
            String::new()
        } else {
            last_prev
        },
    }
}

/// The chain fields of a decoded line, whatever the decoder produced.
pub(crate) trait ChainLine {
    fn seq(&self) -> u64;
    fn prev(&self) -> &str;
    fn hash(&self) -> &str;
    fn body_end(&self) -> usize;
}

impl ChainLine for LineHeader {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn prev(&self) -> &str {
        &self.prev
    }
    fn hash(&self) -> &str {
        &self.hash
    }
    fn body_end(&self) -> usize {
        self.body_end
    }
}

impl ChainLine for crate::record::ScannedLine {
    fn seq(&self) -> u64 {
        match self {
            Self::Split(split) => split.seq,
            Self::Parsed(header) => header.seq,
        }
    }
    fn prev(&self) -> &str {
        match self {
            Self::Split(split) => crate::record::hex64_str(&split.prev),
            Self::Parsed(header) => &header.prev,
        }
    }
    fn hash(&self) -> &str {
        match self {
            Self::Split(split) => crate::record::hex64_str(&split.hash),
            Self::Parsed(header) => &header.hash,
        }
    }
    fn body_end(&self) -> usize {
        match self {
            Self::Split(split) => split.body_end,
            Self::Parsed(header) => header.body_end,
        }
    }
}

/// Where the chain stands: the seq and `prev` the next line must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainState {
    pub next_seq: u64,
    pub prev: String,
}

impl ChainState {
    pub fn genesis() -> Self {
        ChainState {
            next_seq: 1,
            prev: GENESIS_PREV.to_string(),
        }
    }

    /// Checks one line against the chain; the message says what is wrong.
    pub(crate) fn check(&self, line: &[u8], decoded: &impl ChainLine) -> Result<(), String> {
        let prefix = line.get(..decoded.body_end()).unwrap_or(line);
        if hash_hex(prefix) != decoded.hash().as_bytes() {
            return Err("hash mismatch: line changed".into());
        }
        let (seq, expected) = (decoded.seq(), self.next_seq);
        if seq != expected {
            let before = expected.saturating_sub(1);
            return Err(if expected == 1 {
                format!("the first record has seq {seq}, expected 1: records missing at the start")
            } else if seq > expected {
                let missing = seq - expected;
                format!("seq {seq} follows seq {before}: {missing} record(s) missing or moved")
            } else {
                format!("seq {seq} follows seq {before}: line duplicated or out of order")
            });
        }
        if decoded.prev() != self.prev {
            return Err("prev does not match the previous line's hash".into());
        }
        Ok(())
    }

    pub(crate) fn advance(&mut self, decoded: &impl ChainLine) {
        self.next_seq = decoded.seq().saturating_add(1);
        self.prev.clear();
        self.prev.push_str(decoded.hash());
    }
}

/// How a walk ended.
#[derive(Debug)]
pub(crate) enum WalkEnd {
    /// Every line verified.
    Clean,
    /// The last line of the last file is incomplete or unparsable; it starts at byte `start`.
    Torn {
        segment: usize,
        start: u64,
        description: String,
    },
    /// The first bad line starts at byte `start` of `segments[segment]`.
    Broken {
        segment: usize,
        start: u64,
        failure: VerifyFailure,
    },
}

/// The result of [`walk`]: the chain state after the last good line, and how it ended.
#[derive(Debug)]
pub(crate) struct Walk {
    pub records: u64,
    pub chain: ChainState,
    /// Where the content of each file read in full ends (a prepared file holds zeros after it).
    pub content_ends: Vec<u64>,
    pub end: WalkEnd,
}

/// Reads `segments` in order, decodes each line with `decode` (an `Err` means malformed), checks
/// it against the chain and hands each good line (decoded and raw) to `accept`, stopping at the first bad line.
/// `Err` only for I/O errors or when `accept` fails.
pub(crate) fn walk<L: ChainLine>(
    segments: &[Segment],
    mut decode: impl FnMut(&[u8]) -> Result<L, String>,
    mut accept: impl FnMut(L, &[u8], &Segment, &LineInfo) -> Result<(), AuditError>,
) -> Result<Walk, AuditError> {
    let mut chain = ChainState::genesis();
    let mut records = 0;
    let mut content_ends = Vec::with_capacity(segments.len());
    for (index, segment) in segments.iter().enumerate() {
        let last_segment = index + 1 == segments.len();
        let mut reader = LineReader::open(&segment.path)?;
        let mut lines = 0;
        while let Some((info, line)) = reader.next_line()? {
            lines = info.number;
            let torn_possible = last_segment && info.last;
            let verdict = if info.complete {
                decode(line)
            } else {
                Err("incomplete line (no newline at the end of the file)".to_string())
            };
            let decoded = match verdict {
                Ok(decoded) => decoded,
                Err(description) if torn_possible => {
                    let end = match reader.after_end()? {
                        Some(at) => {
                            past_the_end(index, segment, &info, &chain, at, reader.content_end())
                        }
                        None => WalkEnd::Torn {
                            segment: index,
                            start: info.start,
                            description: format!(
                                "{}:{}: {description}",
                                segment.path.display(),
                                info.number
                            ),
                        },
                    };
                    return Ok(Walk {
                        records,
                        chain,
                        content_ends,
                        end,
                    });
                }
                Err(message) => {
                    let end = broken(index, segment, &info, &chain, message);
                    return Ok(Walk {
                        records,
                        chain,
                        content_ends,
                        end,
                    });
                }
            };
            let mut verdict = chain.check(line, &decoded);
            if verdict.is_ok() && info.number == 1 && decoded.seq() != segment.first_seq {
                verdict = Err(format!(
                    "the file name says it starts at seq {}, but its first line has seq {}",
                    segment.first_seq,
                    decoded.seq()
                ));
            }
            if let Err(message) = verdict {
                let end = broken(index, segment, &info, &chain, message);
                return Ok(Walk {
                    records,
                    chain,
                    content_ends,
                    end,
                });
            }
            chain.advance(&decoded);
            records += 1;
            accept(decoded, line, segment, &info)?;
        }
        if let Some(at) = reader.after_end()? {
            let end_of_content = reader.content_end();
            let info = LineInfo {
                start: end_of_content,
                number: lines + 1,
                complete: false,
                last: true,
            };
            let end = past_the_end(index, segment, &info, &chain, at, end_of_content);
            return Ok(Walk {
                records,
                chain,
                content_ends,
                end,
            });
        }
        content_ends.push(reader.content_end());
    }
    Ok(Walk {
        records,
        chain,
        content_ends,
        end: WalkEnd::Clean,
    })
}

/// Bytes other than zeros after the end of a file's content: the writer leaves only zeros there
/// (a prepared file), so something else wrote them. Said at their offset; a power loss in the middle
/// of an unacknowledged batch can leave the same (a page of it on disk, an earlier one not).
fn past_the_end(
    index: usize,
    segment: &Segment,
    info: &LineInfo,
    chain: &ChainState,
    at: u64,
    end_of_content: u64,
) -> WalkEnd {
    let message = format!(
        "bytes other than zeros at byte {at}, after the end of the content at byte {end_of_content}: written by something other than the log's writer (or a batch torn by a power loss)"
    );
    broken(index, segment, info, chain, message)
}

fn broken(
    index: usize,
    segment: &Segment,
    info: &LineInfo,
    chain: &ChainState,
    message: String,
) -> WalkEnd {
    WalkEnd::Broken {
        segment: index,
        start: info.start,
        failure: VerifyFailure {
            file: segment.path.clone(),
            line: info.number,
            seq: chain.next_seq,
            message,
        },
    }
}
