//! The notification server: delivers notifications to a durable outbox and to the log.
//!
//! Owns `<data_dir>/outbox.jsonl`: one JSON line per notification, appended in a single write and synced
//! before the call answers, so a delivery id handed out is never lost. It keeps the most recent entries
//! in memory for `list_notifications`; it must never rewrite or reorder the outbox.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::error::{ServeError, ToolFailure};
use crate::journal::Journal;
use crate::tool::{CallContext, Tool, ToolSpec, object_schema};

/// How many recent notifications are kept in memory and can be listed.
const RECENT_CAPACITY: usize = 1000;
const DEFAULT_LIST_LIMIT: usize = 20;

/// The outbox file plus a bounded window of its latest entries.
#[derive(Debug)]
pub struct Outbox {
    journal: Journal,
    recent: Mutex<VecDeque<Value>>,
}

impl Outbox {
    /// Opens (or creates) `<data_dir>/outbox.jsonl`, loading its latest entries.
    pub fn open(data_dir: &Path) -> Result<Self, ServeError> {
        let path = data_dir.join("outbox.jsonl");
        let (journal, lines) = Journal::open(&path).map_err(|source| ServeError::Outbox {
            path: path.clone(),
            source,
        })?;
        let skip = lines.len().saturating_sub(RECENT_CAPACITY);
        let recent = lines
            .into_iter()
            .skip(skip)
            .filter_map(|line| match serde_json::from_str(&line.text) {
                Ok(value) => Some(value),
                Err(error) => {
                    tracing::warn!(line = line.number, %error, "skipping an unreadable outbox line");
                    None
                }
            })
            .collect();
        Ok(Outbox {
            journal,
            recent: Mutex::new(recent),
        })
    }

    /// Where the outbox lives.
    pub fn path(&self) -> &Path {
        self.journal.path()
    }

    /// Appends one entry durably, then makes it listable.
    async fn deliver(&self, entry: Value) -> Result<(), ToolFailure> {
        self.journal
            .append(&entry)
            .await
            .map_err(|e| ToolFailure::io("cannot write to the outbox", &e))?;
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_CAPACITY {
            recent.pop_front();
        }
        recent.push_back(entry);
        Ok(())
    }

    /// The last `limit` entries, oldest first.
    fn latest(&self, limit: usize) -> Vec<Value> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let skip = recent.len().saturating_sub(limit);
        recent.iter().skip(skip).cloned().collect()
    }
}

/// The notification server's tools, sharing one outbox.
pub fn tools(outbox: Arc<Outbox>) -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(SendNotification(Arc::clone(&outbox))),
        Box::new(ListNotifications(outbox)),
    ]
}

struct SendNotification(Arc<Outbox>);

#[tonic::async_trait]
impl Tool for SendNotification {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "send_notification",
            description: "Delivers a notification: appends it durably to the outbox and logs it. Returns \
                its delivery id.",
            input_schema: object_schema(
                json!({
                    "channel": {"enum": ["email", "slack", "sms", "webhook", "log"]},
                    "recipient": {"type": "string", "minLength": 1, "pattern": "\\S"},
                    "subject": {"type": "string"},
                    "body": {"type": "string"}
                }),
                &["channel", "recipient", "body"],
            ),
        }
    }

    async fn call(&self, args: Value, ctx: &CallContext) -> Result<Value, ToolFailure> {
        let text = |field: &str| args.get(field).and_then(Value::as_str).unwrap_or_default();
        let id = uuid::Uuid::new_v4().to_string();
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let entry = json!({
            "id": id,
            "at_ms": at_ms,
            "channel": text("channel"),
            "recipient": text("recipient"),
            "subject": args.get("subject").cloned().unwrap_or(Value::Null),
            "body": text("body"),
            "workflow_id": ctx.workflow_id,
        });
        self.0.deliver(entry).await?;
        tracing::info!(
            delivery_id = %id,
            channel = text("channel"),
            recipient = text("recipient"),
            subject = text("subject"),
            workflow_id = %ctx.workflow_id,
            "notification delivered to the outbox"
        );
        Ok(json!({"delivery_id": id, "channel": text("channel"), "recipient": text("recipient")}))
    }
}

struct ListNotifications(Arc<Outbox>);

#[tonic::async_trait]
impl Tool for ListNotifications {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_notifications",
            description: "Lists the most recent notifications in the outbox, oldest first.",
            input_schema: object_schema(
                json!({"limit": {"type": "integer", "minimum": 1, "maximum": RECENT_CAPACITY, "default": DEFAULT_LIST_LIMIT}}),
                &[],
            ),
        }
    }

    async fn call(&self, args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let limit = args
            .get("limit")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_LIST_LIMIT, |n| n as usize);
        let notifications = self.0.latest(limit);
        Ok(json!({"count": notifications.len(), "notifications": notifications}))
    }
}
