//! The orchestrator's audit log: the hash-chained, group-committed log of `conductor-audit`, carrying
//! the domain's [`AuditEvent`]s (defined in `conductor-core`, beside the transition that applies
//! them).

pub use conductor_core::events::{
    ApprovalVerdict, AuditEvent, DecisionKind, Outcome, Payload, ReplayEvent, WorkflowEnd,
};

/// The orchestrator's audit log: the generic hash-chained log of `conductor-audit`, carrying [`AuditEvent`]s.
pub type AuditLog = conductor_audit::AuditLog<AuditEvent>;
/// One line of the log: the event with its place in the chain.
pub type AuditRecord = conductor_audit::Record<AuditEvent>;
