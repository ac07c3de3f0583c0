//! The durable ledger of approval requests: an append-only event log plus an in-memory view.
//!
//! Owns `<data_dir>/approvals.jsonl` (one line per create or decide), synced before a change is
//! acknowledged and replayed at start-up, so pending approvals survive restarts and a decision once
//! acknowledged is never forgotten. Only a pending request can be decided, and every decision names who
//! made it. It knows nothing of gRPC.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{ServeError, ServiceError};
use crate::journal::Journal;

/// Where an approval request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalStatus {
    /// The name used in messages, matching the proto enum's suffix.
    pub const fn name(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "PENDING",
            ApprovalStatus::Approved => "APPROVED",
            ApprovalStatus::Denied => "DENIED",
            ApprovalStatus::Expired => "EXPIRED",
        }
    }
}

/// One approval request and, once decided, its decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub workflow_id: String,
    pub tool: String,
    pub arguments_json: String,
    pub arguments_digest: String,
    pub gate: String,
    pub requested_by: String,
    pub requested_at_ms: i64,
    pub expires_at_ms: i64,
    pub call_id: String,
    pub state: ApprovalStatus,
    pub decided_by: String,
    pub reason: String,
    pub decided_at_ms: i64,
}

/// One line of the ledger file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum LedgerEvent {
    Created {
        approval: Approval,
    },
    Decided {
        id: String,
        state: ApprovalStatus,
        decided_by: String,
        reason: String,
        decided_at_ms: i64,
    },
}

/// The approvals in creation order, with an index by id.
#[derive(Debug, Default)]
struct Approvals {
    in_order: Vec<Approval>,
    by_id: HashMap<String, usize>,
}

impl Approvals {
    fn get(&self, id: &str) -> Option<&Approval> {
        self.by_id.get(id).map(|&i| &self.in_order[i])
    }

    /// Applies one event; an event that does not fit (decision of an unknown id) is reported.
    fn apply(&mut self, event: LedgerEvent) -> Result<(), String> {
        match event {
            LedgerEvent::Created { approval } => {
                if !self.by_id.contains_key(&approval.id) {
                    self.by_id.insert(approval.id.clone(), self.in_order.len());
                    self.in_order.push(approval);
                }
            }
            LedgerEvent::Decided {
                id,
                state,
                decided_by,
                reason,
                decided_at_ms,
            } => {
                let index = *self
                    .by_id
                    .get(&id)
                    .ok_or_else(|| format!("decision for unknown approval {id:?}"))?;
                let approval = &mut self.in_order[index];
                approval.state = state;
                approval.decided_by = decided_by;
                approval.reason = reason;
                approval.decided_at_ms = decided_at_ms;
            }
        }
        Ok(())
    }
}

/// The durable ledger: an in-memory view for reads, and one writer at a time for changes.
#[derive(Debug)]
pub struct Ledger {
    journal: Journal,
    approvals: Mutex<Approvals>,
    /// Held from the check of a change to its application, so two racing creates or decisions of the
    /// same id cannot both pass the check. The index lock is only ever taken briefly inside it.
    changes: tokio::sync::Mutex<()>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a caller supplies to request an approval.
#[derive(Clone, Debug, Default)]
pub struct NewApproval {
    pub id: String,
    pub workflow_id: String,
    pub tool: String,
    pub arguments_json: String,
    pub arguments_digest: String,
    pub gate: String,
    pub requested_by: String,
    pub expires_at_ms: i64,
    pub call_id: String,
}

impl Ledger {
    /// Opens `<data_dir>/approvals.jsonl` and replays it. A torn last line is cut off; an unreadable
    /// line anywhere else stops start-up, since silently dropping a decision would be worse.
    pub fn open(data_dir: &Path) -> Result<Self, ServeError> {
        let path = data_dir.join("approvals.jsonl");
        let fail = |reason: String| ServeError::Ledger {
            path: path.clone(),
            reason,
        };
        let (journal, lines) = Journal::open(&path).map_err(|e| fail(e.to_string()))?;
        let mut approvals = Approvals::default();
        let last = lines.len();
        for (position, line) in lines.into_iter().enumerate() {
            let applied = serde_json::from_str::<LedgerEvent>(&line.text)
                .map_err(|e| e.to_string())
                .and_then(|event| approvals.apply(event));
            match applied {
                Ok(()) => {}
                Err(reason) if position + 1 == last => {
                    tracing::warn!(path = %path.display(), line = line.number, %reason, "cutting off an unreadable last ledger line");
                    journal
                        .truncate_at(line.offset)
                        .map_err(|e| fail(e.to_string()))?;
                }
                Err(reason) => return Err(fail(format!("line {}: {reason}", line.number))),
            }
        }
        Ok(Ledger {
            journal,
            approvals: Mutex::new(approvals),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    fn approvals(&self) -> MutexGuard<'_, Approvals> {
        self.approvals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the event durably, then applies it to the in-memory view.
    async fn record(&self, event: LedgerEvent) -> Result<(), ServiceError> {
        let line =
            serde_json::to_value(&event).map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.journal
            .append(&line)
            .await
            .map_err(ServiceError::Storage)?;
        self.approvals()
            .apply(event)
            .map_err(ServiceError::Internal)
    }

    /// Records a new pending request; a request whose id is already known returns the existing record
    /// unchanged, so a retried create is harmless.
    pub async fn create(&self, new: NewApproval) -> Result<Approval, ServiceError> {
        if new.id.trim().is_empty() {
            return Err(ServiceError::MissingField { field: "id" });
        }
        let digest = conductor_core::digest::approval_digest_of_text(&new.arguments_json)
            .ok_or_else(|| ServiceError::ArgumentsNotJson {
                reason: "the request's arguments_json is not JSON".into(),
            })?;
        if digest != new.arguments_digest {
            return Err(ServiceError::InvalidArguments {
                tool: new.tool,
                problems: vec![format!(
                    "arguments_digest {} is not the RFC 8785 digest of the arguments ({digest})",
                    new.arguments_digest
                )],
            });
        }
        let _change = self.changes.lock().await;
        if let Some(existing) = self.approvals().get(&new.id) {
            return Ok(existing.clone());
        }
        let approval = Approval {
            id: new.id,
            workflow_id: new.workflow_id,
            tool: new.tool,
            arguments_json: new.arguments_json,
            arguments_digest: new.arguments_digest,
            gate: new.gate,
            requested_by: new.requested_by,
            requested_at_ms: now_ms(),
            expires_at_ms: new.expires_at_ms,
            call_id: new.call_id,
            state: ApprovalStatus::Pending,
            decided_by: String::new(),
            reason: String::new(),
            decided_at_ms: 0,
        };
        self.record(LedgerEvent::Created {
            approval: approval.clone(),
        })
        .await?;
        Ok(approval)
    }

    /// Decides a pending request. Only a pending one can be decided, and the decider must be named.
    pub async fn decide(
        &self,
        id: &str,
        state: ApprovalStatus,
        decided_by: &str,
        reason: &str,
    ) -> Result<Approval, ServiceError> {
        if state == ApprovalStatus::Pending {
            return Err(ServiceError::InvalidDecision {
                decision: state.name().to_owned(),
            });
        }
        if decided_by.trim().is_empty() {
            return Err(ServiceError::MissingField {
                field: "decided_by",
            });
        }
        let _change = self.changes.lock().await;
        let current = self.get(id)?;
        if current.state != ApprovalStatus::Pending {
            return Err(ServiceError::AlreadyDecided {
                id: id.to_owned(),
                state: current.state.name(),
                decided_by: current.decided_by,
            });
        }
        self.record(LedgerEvent::Decided {
            id: id.to_owned(),
            state,
            decided_by: decided_by.to_owned(),
            reason: reason.to_owned(),
            decided_at_ms: now_ms(),
        })
        .await?;
        self.get(id)
    }

    /// One request by id.
    pub fn get(&self, id: &str) -> Result<Approval, ServiceError> {
        self.approvals()
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::ApprovalNotFound { id: id.to_owned() })
    }

    /// All requests (or only pending ones) in the order they were created.
    pub fn list(&self, pending_only: bool) -> Vec<Approval> {
        self.approvals()
            .in_order
            .iter()
            .filter(|a| !pending_only || a.state == ApprovalStatus::Pending)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replay_refuses_a_damaged_middle_line_but_not_a_damaged_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let new = |id: &str| NewApproval {
            id: id.into(),
            arguments_json: "{}".into(),
            arguments_digest: conductor_core::digest::approval_digest(&serde_json::json!({})),
            ..NewApproval::default()
        };
        ledger.create(new("a")).await.unwrap();
        ledger
            .decide("a", ApprovalStatus::Approved, "alice", "")
            .await
            .unwrap();
        drop(ledger);
        let path = dir.path().join("approvals.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();

        std::fs::write(&path, format!("{text}{{\"event\":\"nonsense\"}}\n")).unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.get("a").unwrap().decided_by, "alice");
        ledger.create(new("b")).await.unwrap();
        drop(ledger);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.list(true).len(), 1);
        drop(ledger);

        std::fs::write(&path, format!("garbage\n{text}")).unwrap();
        let error = Ledger::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("line 1"), "{error}");
    }
}
