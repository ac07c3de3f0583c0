//! What a refused control request (approve, deny, cancel, reload) leaves in the audit log: bounded,
//! so that no caller, least of all one without a credential, can grow the log or this table faster
//! than a fixed rate (SPEC §9.6).
//!
//! Three bounds. Each caller-supplied string of the record is cut to a fixed length (and the fronts
//! refuse a malformed id before anything is recorded: [`check_id`]). Refusals are aggregated by
//! their source (the identity, or the peer's address for a caller without one), action and reason:
//! the first of a key in an interval of [`WINDOW`] is recorded at once; later ones are counted, and
//! one summary record with the count is written when the interval ends (or at the next refusal
//! after it, or at shutdown). And the table of keys holds at most [`MAX_KEYS`]: a refusal whose key
//! finds no room is aggregated under one shared key for every other source. So at most
//! `2 × (MAX_KEYS + 1)` records of bounded size per interval, whatever the callers do. `/metrics`
//! counts every refusal, aggregated or not.
//!
//! This module never awaits under its lock and never records anything itself: it says what to
//! record, and the gateway commits it through the one commit path.

use crate::audit::AuditEvent;
use crate::error::Error;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The interval over which the refusals of one key are aggregated into one summary.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The most keys aggregated separately; beyond, refusals share the key of [`OTHER_SOURCES`].
pub const MAX_KEYS: usize = 64;
/// The source of the refusals of keys that found no room in the table.
pub const OTHER_SOURCES: &str = "other sources (the refusal table was full)";
/// The longest id a control request may name (ids the orchestrator makes are far shorter).
pub const MAX_ID_CHARS: usize = 64;
/// How long each caller-supplied string of a refusal's record may be, in characters.
const MAX_ACTION_CHARS: usize = 32;
const MAX_TARGET_CHARS: usize = MAX_ID_CHARS;
const MAX_REASON_CHARS: usize = 512;
const MAX_CALLER_CHARS: usize = 200;

/// Refuses an id (approval, workflow) that no id the orchestrator makes could be, before anything
/// about it is recorded: at most [`MAX_ID_CHARS`] letters, digits, `-`, `_`, `.` and `:`. The answer
/// names the field and the rule, not the id.
pub fn check_id(field: &str, id: &str) -> Result<(), Error> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")));
    }
    if id.len() > MAX_ID_CHARS || !id.chars().all(fits) {
        return Err(Error::InvalidArgument(format!(
            "{field} is not an id: ids are at most {MAX_ID_CHARS} letters, digits, '-', '_', '.' and ':' (this one is {} bytes)",
            id.len()
        )));
    }
    Ok(())
}

/// A refused control request, as the fronts report it.
#[derive(Debug, Clone)]
pub struct Refusal<'a> {
    pub action: &'a str,
    pub target: &'a str,
    /// The refusal's message, as its caller hears it.
    pub reason: &'a str,
    /// The caller string to record.
    pub caller: &'a str,
    /// Whom refusals are aggregated by: the identity, or the peer's address without one.
    pub source: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: String,
    action: String,
    reason: String,
}

/// One key's interval: when it began, and the refusals counted since its first one was recorded.
struct Interval {
    began: Instant,
    counted: u64,
    /// The latest counted refusal, bounded: what its summary record shows.
    latest: Option<AuditEvent>,
}

/// What to do with a refusal: the records to commit, in order (summaries of ended intervals, then
/// the refusal itself when it opens an interval), and whether a summary is now pending.
pub struct Verdict {
    pub records: Vec<AuditEvent>,
    pub counted: bool,
}

#[derive(Default)]
struct Table {
    intervals: HashMap<Key, Interval>,
    /// Whether a task waits to write the summaries of counted refusals.
    flush_scheduled: bool,
}

/// The aggregation table (see the module header). Cheap to hold; its lock is held only for short,
/// synchronous sections.
#[derive(Default)]
pub struct Refusals {
    table: Mutex<Table>,
}

impl Refusals {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one refusal at `now`.
    pub fn admit(&self, refusal: &Refusal<'_>, now: Instant) -> Verdict {
        let event = bounded(refusal, 1);
        let mut table = self.table();
        let mut records = ended(&mut table, now, false);
        let mut key = Key {
            source: cut(refusal.source, MAX_CALLER_CHARS),
            action: cut(refusal.action, MAX_ACTION_CHARS),
            reason: cut(refusal.reason, MAX_REASON_CHARS),
        };
        if !table.intervals.contains_key(&key) && table.intervals.len() >= MAX_KEYS {
            key.source = OTHER_SOURCES.to_owned();
        }
        let counted = match table.intervals.get_mut(&key) {
            Some(interval) => {
                interval.counted += 1;
                interval.latest = Some(event);
                true
            }
            None => {
                table.intervals.insert(
                    key,
                    Interval {
                        began: now,
                        counted: 0,
                        latest: None,
                    },
                );
                records.push(event);
                false
            }
        };
        Verdict { records, counted }
    }

    /// The summaries of the intervals ended by `now` (all of them with `all`, at shutdown), which
    /// leave the table; whether some counted refusals still wait for theirs.
    pub fn flush(&self, now: Instant, all: bool) -> (Vec<AuditEvent>, bool) {
        let mut table = self.table();
        let records = ended(&mut table, now, all);
        let waiting = table.intervals.values().any(|i| i.counted > 0);
        table.flush_scheduled = waiting;
        (records, waiting)
    }

    /// When the earliest interval with counted refusals ends, if a flush is to be scheduled now
    /// (none is yet); marks it scheduled.
    pub fn schedule(&self) -> Option<Instant> {
        let mut table = self.table();
        if table.flush_scheduled {
            return None;
        }
        let next = table
            .intervals
            .values()
            .filter(|i| i.counted > 0)
            .map(|i| i.began + WINDOW)
            .min()?;
        table.flush_scheduled = true;
        Some(next)
    }

    /// How many keys the table holds (for tests of its bound).
    #[cfg(test)]
    pub fn keys(&self) -> usize {
        self.table().intervals.len()
    }
}

/// Takes the intervals ended by `now` (or all) out of the table; returns the summaries of those
/// that counted refusals.
fn ended(table: &mut Table, now: Instant, all: bool) -> Vec<AuditEvent> {
    let mut summaries = Vec::new();
    table.intervals.retain(|_, interval| {
        if !all && now.duration_since(interval.began) < WINDOW {
            return true;
        }
        if let Some(AuditEvent::ControlRefused {
            action,
            target,
            reason,
            caller,
            ..
        }) = interval.latest.take()
            && interval.counted > 0
        {
            summaries.push(AuditEvent::ControlRefused {
                action,
                target,
                reason,
                caller,
                count: interval.counted,
            });
        }
        false
    });
    summaries
}

/// The record of `count` refusals like `refusal`, every string cut to its bound.
fn bounded(refusal: &Refusal<'_>, count: u64) -> AuditEvent {
    AuditEvent::ControlRefused {
        action: cut(refusal.action, MAX_ACTION_CHARS),
        target: cut(refusal.target, MAX_TARGET_CHARS),
        reason: cut(refusal.reason, MAX_REASON_CHARS),
        caller: cut(refusal.caller, MAX_CALLER_CHARS),
        count,
    }
}

/// `text` without control characters, cut to `max` characters; a cut one ends with `…` and says
/// how long it was. Reads at most `max + 1` characters, whatever the text's length.
fn cut(text: &str, max: usize) -> String {
    let mut clean = text.chars().filter(|c| !c.is_control());
    let mut out: String = clean.by_ref().take(max).collect();
    if clean.next().is_some() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal<'a>(source: &'a str, target: &'a str) -> Refusal<'a> {
        Refusal {
            action: "approve",
            target,
            reason: "approve needs the control token",
            caller: source,
            source,
        }
    }

    fn count(records: &[AuditEvent]) -> u64 {
        records
            .iter()
            .map(|r| match r {
                AuditEvent::ControlRefused { count, .. } => *count,
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn one_record_per_key_and_interval_then_a_summary_with_the_count() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        let first = refusals.admit(&refusal("10.0.0.1", "ap-1"), t0);
        assert_eq!((first.records.len(), first.counted), (1, false));
        let mut written = first.records;
        for i in 0..999 {
            let later = refusals.admit(&refusal("10.0.0.1", "ap-2"), t0 + Duration::from_millis(i));
            assert!(later.records.is_empty() && later.counted);
        }
        assert!(refusals.schedule().is_some());
        assert!(refusals.schedule().is_none(), "scheduled once");
        let (early, waiting) = refusals.flush(t0 + WINDOW / 2, false);
        assert!(early.is_empty() && waiting);
        let (summary, waiting) = refusals.flush(t0 + WINDOW, false);
        assert_eq!(summary.len(), 1);
        assert!(!waiting);
        written.extend(summary);
        assert_eq!(count(&written), 1000, "every refusal is counted once");
        assert_eq!(refusals.keys(), 0);
    }

    #[test]
    fn the_table_and_the_records_are_bounded_whatever_the_sources() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        let mut written = Vec::new();
        let huge = "x".repeat(120_000);
        for i in 0..10_000u32 {
            let source = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            written.extend(refusals.admit(&refusal(&source, &huge), t0).records);
            assert!(refusals.keys() <= MAX_KEYS + 1);
        }
        written.extend(refusals.flush(t0, true).0);
        assert!(written.len() <= 2 * (MAX_KEYS + 1), "{}", written.len());
        assert_eq!(count(&written), 10_000);
        for record in &written {
            let line = serde_json::to_string(record).expect("json");
            assert!(line.len() < 1200, "{} bytes", line.len());
        }
    }

    #[test]
    fn ids_are_checked_before_anything_is_recorded() {
        assert!(check_id("approval_id", "ap-0123456789ab").is_ok());
        assert!(check_id("workflow_id", "wf-0123456789ab").is_ok());
        let refused = check_id("approval_id", &"a".repeat(120_000)).unwrap_err();
        assert!(refused.to_string().len() < 200, "{refused}");
        assert!(check_id("approval_id", "ap 1").is_err());
        assert!(check_id("approval_id", "").is_err());
        assert_eq!(cut("ab\u{7}c", 10), "abc");
        assert!(cut(&"é".repeat(100), 10).starts_with(&"é".repeat(10)));
    }
}
