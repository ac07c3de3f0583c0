//! The audit events: what the log records, one per line, tagged by `kind`.
//!
//! These events are the orchestrator's memory and the input of its one transition
//! ([`crate::state::State::apply`]): the state (workflows, histories, pending approvals, the
//! dashboard's figures) is what applying them in order gives, live and on replay alike, so every
//! fact the state needs is written here. Adding a field is safe (readers default it); renaming or
//! removing one breaks old logs.
//!
//! The JSON a call carries (arguments, a workflow's input, a result) is the type parameter `J`:
//! [`Value`] on the live path, [`Box<RawValue>`] at start-up, where it stays text until a call turns
//! out to need it. One schema, two representations of its payloads.

pub use crate::domain::{ApprovalVerdict, DecisionKind, Outcome, WorkflowEnd};
use crate::policy::{ConditionResult, LabelOrigin, Violation};
use crate::tagged::KindTagged;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// The JSON a call carries, as the live path holds it ([`Value`]) or as start-up reads it
/// ([`Box<RawValue>`], text parsed only when needed).
pub trait Payload: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// The payload as a value (a copy, or a parse of the text).
    fn to_value(&self) -> Value;
    /// JSON `null`, for records written before the field existed.
    fn null() -> Self;
}

impl Payload for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }

    fn null() -> Self {
        Value::Null
    }
}

impl Payload for Box<RawValue> {
    /// The text was parsed once already when the line was read, so it is valid JSON.
    fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }

    fn null() -> Self {
        RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
    }
}

fn null_payload<J: Payload>() -> J {
    J::null()
}

fn one() -> u64 {
    1
}

fn is_one(count: &u64) -> bool {
    *count == 1
}

/// What start-up reads: payloads kept as text.
pub type ReplayEvent = AuditEvent<Box<RawValue>>;

/// One event, written as a flat JSON object whose first field `kind` names the variant. serde's
/// `remote = "Self"` derives the plain representation as inherent functions, which
/// [`KindTagged`] turns into that object in one pass (serde's own `tag = "kind"` would read every
/// event twice; start-up reads them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    rename_all = "snake_case",
    bound(serialize = "J: Serialize", deserialize = "J: Payload")
)]
pub enum AuditEvent<J = Value> {
    /// The orchestrator started, or reloaded, with this configuration.
    ConfigLoaded {
        config_version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    WorkflowStarted {
        workflow_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<String>,
        #[serde(default = "null_payload")]
        input: J,
        caller: String,
        config_version: String,
        /// The flow labels the workflow starts with, each with the call (of another workflow) that
        /// brought it in: a workflow started from a session, a handle's workflow or an identity's
        /// current one carries their labels (SPEC §9.7: starting a new workflow sheds none).
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        labels: std::collections::BTreeMap<String, LabelOrigin>,
    },
    /// A call was asked for and the policy engine decided it (the request and the decision in one line).
    CallDecided {
        workflow_id: String,
        call_id: String,
        tool: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        arguments: J,
        caller: String,
        decision: DecisionKind,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        violations: Vec<Violation>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate: Option<String>,
        config_version: String,
        /// The called tool's labels: what the call brings into the workflow if it runs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        labels: Vec<String>,
        /// The labels the workflow had seen before this call.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        workflow_labels: Vec<String>,
        /// Each rule condition evaluated for this call, with its result.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        conditions: Vec<ConditionResult>,
        /// Why the call waits for approval, when a rule says more than its id (a condition, the
        /// earlier calls that brought a flow rule's labels in).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gate_reason: Option<String>,
        /// The OpenTelemetry trace and span the call was recorded in, when traces are exported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<TraceRef>,
    },
    ApprovalRequested {
        workflow_id: String,
        call_id: String,
        tool: String,
        approval_id: String,
        gate: String,
        arguments_digest: String,
        expires_at_ms: i64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        four_eyes: bool,
        /// The OpenTelemetry trace and span the call was recorded in, when traces are exported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<TraceRef>,
    },
    ApprovalDecided {
        workflow_id: String,
        call_id: String,
        approval_id: String,
        verdict: ApprovalVerdict,
        approver: String,
        #[serde(default)]
        reason: String,
        waited_ms: u64,
    },
    /// The call was sent to its server.
    CallStarted {
        workflow_id: String,
        call_id: String,
        tool: String,
        server: String,
        /// The OpenTelemetry trace and span the call was recorded in, when traces are exported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<TraceRef>,
    },
    CallFinished {
        workflow_id: String,
        call_id: String,
        tool: String,
        outcome: Outcome,
        duration_us: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The tool's result, kept so that template steps can use it after a restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<J>,
        /// The tool's own structured account of a failure (e.g. each invalid record with its
        /// field), so that `workflow`, `run` and `audit query` can show which and why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<J>,
        /// The OpenTelemetry trace and span the call was recorded in, when traces are exported.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<TraceRef>,
    },
    WorkflowFinished {
        workflow_id: String,
        state: WorkflowEnd,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        duration_ms: u64,
    },
    /// A control action (approve, deny, cancel, reload) was refused, e.g. for a missing token. Its
    /// strings are bounded, and repeated refusals from one source are aggregated: `count` is how
    /// many refusals the record stands for (1 when written as it happened; more in the summary of
    /// an interval, showing the latest of them).
    ControlRefused {
        action: String,
        target: String,
        reason: String,
        caller: String,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u64,
    },
    /// The log was opened with `--audit-recover` and a broken part was set aside: the chain goes on
    /// from the last good record, `cut_seq` being the first record that is no longer in it.
    Recovered {
        set_aside: Vec<String>,
        cut_seq: u64,
        reason: String,
    },
    /// An MCP server asked the client of a call something while the call ran (sampling,
    /// elicitation, roots), relayed to that client: who asked what, and how it ended; never what
    /// was asked or answered.
    ServerAsked {
        workflow_id: String,
        call_id: String,
        tool: String,
        server: String,
        method: String,
        /// `answered`, `refused` (the client could not or would not answer; `error` says why), or
        /// `asked` (put to a session-free client in an `input_required` result, SEP-2322; its
        /// answer is recorded with the call that retries it).
        outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A configuration reload was refused; the running configuration stays.
    ConfigRefused {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        problems: Vec<String>,
    },
}

impl<J: Serialize> Serialize for AuditEvent<J> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AuditEvent::<J>::serialize(self, KindTagged(serializer))
    }
}

impl<'de, J: Payload> Deserialize<'de> for AuditEvent<J> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        AuditEvent::<J>::deserialize(KindTagged(deserializer))
    }
}

/// Where a record of a call sits in its OpenTelemetry trace: lowercase hex ids, as a tracing system
/// shows them, so a reader of the log can open the trace and a reader of the trace find the records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRef {
    pub trace_id: String,
    pub span_id: String,
}

impl<J> AuditEvent<J> {
    /// The trace the record of a call was made in, if traces are exported.
    pub fn trace(&self) -> Option<&TraceRef> {
        match self {
            AuditEvent::CallDecided { trace, .. }
            | AuditEvent::ApprovalRequested { trace, .. }
            | AuditEvent::CallStarted { trace, .. }
            | AuditEvent::CallFinished { trace, .. } => trace.as_ref(),
            _ => None,
        }
    }

    /// The `kind` tag as written in the log.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::ConfigLoaded { .. } => "config_loaded",
            AuditEvent::WorkflowStarted { .. } => "workflow_started",
            AuditEvent::CallDecided { .. } => "call_decided",
            AuditEvent::ApprovalRequested { .. } => "approval_requested",
            AuditEvent::ApprovalDecided { .. } => "approval_decided",
            AuditEvent::CallStarted { .. } => "call_started",
            AuditEvent::CallFinished { .. } => "call_finished",
            AuditEvent::WorkflowFinished { .. } => "workflow_finished",
            AuditEvent::ControlRefused { .. } => "control_refused",
            AuditEvent::Recovered { .. } => "recovered",
            AuditEvent::ConfigRefused { .. } => "config_refused",
            AuditEvent::ServerAsked { .. } => "server_asked",
        }
    }

    /// The workflow the event belongs to, if any.
    pub fn workflow_id(&self) -> Option<&str> {
        match self {
            AuditEvent::WorkflowStarted { workflow_id, .. }
            | AuditEvent::CallDecided { workflow_id, .. }
            | AuditEvent::ApprovalRequested { workflow_id, .. }
            | AuditEvent::ApprovalDecided { workflow_id, .. }
            | AuditEvent::CallStarted { workflow_id, .. }
            | AuditEvent::CallFinished { workflow_id, .. }
            | AuditEvent::ServerAsked { workflow_id, .. }
            | AuditEvent::WorkflowFinished { workflow_id, .. } => Some(workflow_id),
            AuditEvent::ConfigLoaded { .. }
            | AuditEvent::ControlRefused { .. }
            | AuditEvent::Recovered { .. }
            | AuditEvent::ConfigRefused { .. } => None,
        }
    }

    /// The tool the event is about, if any.
    pub fn tool(&self) -> Option<&str> {
        match self {
            AuditEvent::CallDecided { tool, .. }
            | AuditEvent::ApprovalRequested { tool, .. }
            | AuditEvent::CallStarted { tool, .. }
            | AuditEvent::CallFinished { tool, .. }
            | AuditEvent::ServerAsked { tool, .. } => Some(tool),
            _ => None,
        }
    }
}
