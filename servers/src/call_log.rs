//! The optional call log (`--call-log FILE`): one JSON line per call as it ends, with when it
//! started and ended and how, written by the tool server itself. It is the server's own account of
//! what it ran and when, to hold against the orchestrator's audit: that an exclusive group never
//! ran twice at once, say, seen from the side that did the work.
//!
//! A line: `{"tool", "workflow_id", "call_id", "started_us", "ended_us", "outcome"}`, times in
//! microseconds since the Unix epoch by this server's clock; `outcome` is `ok`, `tool_error:CODE`,
//! `rejected` (unknown tool, arguments that do not match its schema) or `abandoned` (the caller
//! went away first: its connection closed or the call was cancelled; work a tool had already handed
//! to a thread of its own may end later than `ended_us` says). Lines are appended with one `write`
//! each and not synced: an access log, not a record the orchestrator's durability rests on.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::error::ServeError;
use crate::tool::CallContext;

/// An open call log.
#[derive(Debug)]
pub struct CallLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl CallLog {
    /// Opens `path` for appending, creating it if missing.
    pub fn open(path: &Path) -> Result<Arc<Self>, ServeError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| ServeError::CallLog {
                path: path.to_owned(),
                source,
            })?;
        Ok(Arc::new(CallLog {
            path: path.to_owned(),
            file: Mutex::new(file),
        }))
    }

    /// A call of `tool` starts now; its line is written when the returned entry ends or is dropped.
    pub(crate) fn begin(self: &Arc<Self>, tool: &str, ctx: &CallContext) -> CallEntry {
        CallEntry {
            log: Arc::clone(self),
            tool: tool.to_owned(),
            workflow_id: ctx.workflow_id.clone(),
            call_id: ctx.call_id.clone(),
            started_us: now_us(),
            outcome: None,
        }
    }

    fn write(&self, line: &[u8]) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = file.write_all(line) {
            tracing::warn!(path = %self.path.display(), %error, "cannot append to the call log");
        }
    }
}

/// One call in progress; writes its line when ended, or as `abandoned` when dropped unended.
pub(crate) struct CallEntry {
    log: Arc<CallLog>,
    tool: String,
    workflow_id: String,
    call_id: String,
    started_us: u64,
    outcome: Option<String>,
}

impl CallEntry {
    /// The call ended with `outcome`.
    pub fn end(mut self, outcome: String) {
        self.outcome = Some(outcome);
    }
}

impl Drop for CallEntry {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| "abandoned".into());
        let mut line = json!({
            "tool": self.tool,
            "workflow_id": self.workflow_id,
            "call_id": self.call_id,
            "started_us": self.started_us,
            "ended_us": now_us(),
            "outcome": outcome,
        })
        .to_string();
        line.push('\n');
        self.log.write(line.as_bytes());
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_call_is_logged_as_it_ends_and_one_dropped_unended_as_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.jsonl");
        let log = CallLog::open(&path).unwrap();
        let ctx = CallContext {
            workflow_id: "wf-1".into(),
            call_id: "call-1".into(),
        };
        log.begin("create_backup", &ctx).end("ok".into());
        drop(log.begin("restore_backup", &CallContext::default()));
        let lines = lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["tool"], "create_backup");
        assert_eq!(lines[0]["call_id"], "call-1");
        assert_eq!(lines[0]["outcome"], "ok");
        assert!(lines[0]["started_us"].as_u64() <= lines[0]["ended_us"].as_u64());
        assert_eq!(lines[1]["tool"], "restore_backup");
        assert_eq!(lines[1]["outcome"], "abandoned");

        // Opened again, it appends.
        CallLog::open(&path)
            .unwrap()
            .begin("list_backups", &ctx)
            .end("tool_error:not_found".into());
        assert_eq!(lines_len(&path), 3);
    }

    fn lines_len(path: &Path) -> usize {
        lines(path).len()
    }

    #[test]
    fn a_log_that_cannot_be_opened_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/calls.jsonl");
        let error = CallLog::open(&path).unwrap_err().to_string();
        assert!(error.contains("missing/calls.jsonl"), "{error}");
    }
}
