//! The approval server: the durable ledger of approval requests and their decisions.
//!
//! Owns `<data_dir>/approvals.jsonl` through [`Ledger`]; serves it as the `ApprovalLedger` gRPC service
//! ([`ApprovalLedgerService`], the only way to change it) and as read-only tools (`get_approval`,
//! `list_approvals`) so agents can read approvals but never decide one. A request shows another
//! caller's arguments and name: the orchestrator offers these tools only to callers that may read
//! approvals (the control token, a client with `read` or `approve`), as the server named
//! `approval_ledger`'s.

mod grpc;
mod ledger;
mod tools;

pub use grpc::ApprovalLedgerService;
pub use ledger::{Approval, ApprovalStatus, Ledger, NewApproval};
pub use tools::tools;
