//! [`read_from`]: streaming records from a given seq, for Watch replay and queries.
//!
//! Reads only; it does not verify the chain (that is [`verify_dir`](crate::verify_dir)'s job) and
//! can run beside the writer: a line still being written looks torn and ends the stream, and so do
//! the zeros after the live file's content.

use crate::record::{decode_record, leading_seq};
use crate::segment::{LineReader, Segment, list_segments};
use crate::{AuditError, Record};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::path::Path;

/// Reads the records with `seq >= from_seq` in order, skipping whole files that end before it.
/// Stops (without an error) at a torn last line; an undecodable line elsewhere is an error, after
/// which the iterator ends. Sees the files present when called.
pub fn read_from<E: DeserializeOwned>(
    dir: &Path,
    from_seq: u64,
) -> Result<impl Iterator<Item = Result<Record<E>, AuditError>> + use<E>, AuditError> {
    let mut segments = list_segments(dir)?;
    let first = segments
        .partition_point(|s| s.first_seq <= from_seq)
        .saturating_sub(1);
    segments.drain(..first);
    segments.reverse();
    Ok(Records {
        segments,
        current: None,
        from_seq,
        scratch: Vec::new(),
        _event: PhantomData,
    })
}

struct Records<E> {
    /// Files still to read, the next one last.
    segments: Vec<Segment>,
    current: Option<(Segment, LineReader)>,
    from_seq: u64,
    scratch: Vec<u8>,
    _event: PhantomData<fn() -> E>,
}

impl<E: DeserializeOwned> Records<E> {
    fn next_record(&mut self) -> Result<Option<Record<E>>, AuditError> {
        loop {
            let (segment, reader) = match &mut self.current {
                Some(current) => (&current.0, &mut current.1),
                None => match self.segments.pop() {
                    Some(segment) => {
                        let reader = LineReader::open(&segment.path)?;
                        let current = self.current.insert((segment, reader));
                        (&current.0, &mut current.1)
                    }
                    None => return Ok(None),
                },
            };
            let last_segment = self.segments.is_empty();
            let Some((info, line)) = reader.next_line()? else {
                self.current = None;
                continue;
            };
            let torn_possible = last_segment && info.last;
            if !info.complete && torn_possible {
                return Ok(None);
            }
            if leading_seq(line).is_some_and(|seq| seq < self.from_seq) {
                continue;
            }
            let decoded = if info.complete {
                decode_record::<E>(line, &mut self.scratch)
            } else {
                Err("incomplete line (no newline) at the end of a file that is not the last".into())
            };
            match decoded {
                Ok((record, _)) if record.seq < self.from_seq => continue,
                Ok((record, _)) => return Ok(Some(record)),
                Err(_) if torn_possible => return Ok(None),
                Err(message) => {
                    return Err(AuditError::Decode {
                        file: segment.path.clone(),
                        line: info.number,
                        message,
                    });
                }
            }
        }
    }
}

impl<E: DeserializeOwned> Iterator for Records<E> {
    type Item = Result<Record<E>, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.next_record().transpose();
        if matches!(item, Some(Err(_)) | None) {
            self.segments.clear();
            self.current = None;
        }
        item
    }
}
