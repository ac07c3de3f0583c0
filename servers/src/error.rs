//! The servers' error types and the one place that turns them into gRPC statuses.
//!
//! Three kinds of failure, kept apart on purpose: [`ServeError`] stops a server from starting or
//! serving; [`ServiceError`] means a call could not be made (bad arguments, unknown tool or approval)
//! and becomes a `tonic::Status`; [`ToolFailure`] is a tool's own answer "no" (invalid records, nothing
//! to restore) and travels back as a normal `ToolError` response. Handlers never build a `Status` by
//! hand: they return a `ServiceError` and `?` does the rest.

use std::path::PathBuf;

use serde_json::Value;
use tonic::Status;

/// Why a server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load schemas from {}: {reason}", path.display())]
    Schemas { path: PathBuf, reason: String },
    #[error("tool {tool} has an invalid argument schema: {reason}")]
    ToolSchema { tool: String, reason: String },
    #[error("cannot open the approval ledger {}: {reason}", path.display())]
    Ledger { path: PathBuf, reason: String },
    #[error("cannot open the notification outbox {}: {source}", path.display())]
    Outbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the call log {}: {source}", path.display())]
    CallLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve TLS: {0}")]
    Tls(#[from] conductor_proto::tls::TlsError),
    #[error("cannot read the listener's address: {0}")]
    Listener(#[source] std::io::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A call that could not be made; each variant maps to exactly one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("arguments are not valid JSON: {reason}")]
    ArgumentsNotJson { reason: String },
    #[error("invalid arguments for {tool}: {}", problems.join("; "))]
    InvalidArguments { tool: String, problems: Vec<String> },
    #[error("unknown tool \"{tool}\"; this server offers: {}", available.join(", "))]
    UnknownTool {
        tool: String,
        available: Vec<String>,
    },
    #[error("{field} is required")]
    MissingField { field: &'static str },
    #[error("decision must be APPROVED, DENIED or EXPIRED, not {decision}")]
    InvalidDecision { decision: String },
    #[error("no approval with id \"{id}\"")]
    ApprovalNotFound { id: String },
    #[error(
        "approval \"{id}\" is already {state} (decided by {decided_by}); only a PENDING approval can be decided"
    )]
    AlreadyDecided {
        id: String,
        state: &'static str,
        decided_by: String,
    },
    #[error("could not record the change durably, nothing was changed: {0}")]
    Storage(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Status {
        let message = error.to_string();
        match error {
            ServiceError::ArgumentsNotJson { .. }
            | ServiceError::InvalidArguments { .. }
            | ServiceError::MissingField { .. }
            | ServiceError::InvalidDecision { .. } => Status::invalid_argument(message),
            ServiceError::UnknownTool { .. } | ServiceError::ApprovalNotFound { .. } => {
                Status::not_found(message)
            }
            ServiceError::AlreadyDecided { .. } => Status::failed_precondition(message),
            ServiceError::Storage(_) => Status::unavailable(message),
            ServiceError::Internal(_) => Status::internal(message),
        }
    }
}

/// A tool's own failure: the call was made and the tool answered with a machine-readable `code`
/// (e.g. `validation_failed`, `not_found`), a sentence for people and optional structured details.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ToolFailure {
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ToolFailure {
    /// A failure without details.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ToolFailure {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds structured details (e.g. every invalid record), sent as `details_json`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A file-system failure while doing the tool's work, reported as the tool's own `io_error`.
    pub(crate) fn io(what: &str, error: &std::io::Error) -> Self {
        ToolFailure::new("io_error", format!("{what}: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_service_error_has_the_intended_code() {
        let cases = [
            (
                ServiceError::ArgumentsNotJson { reason: "x".into() },
                Code::InvalidArgument,
            ),
            (
                ServiceError::UnknownTool {
                    tool: "t".into(),
                    available: vec!["a".into()],
                },
                Code::NotFound,
            ),
            (
                ServiceError::AlreadyDecided {
                    id: "a1".into(),
                    state: "APPROVED",
                    decided_by: "alice".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                ServiceError::MissingField {
                    field: "decided_by",
                },
                Code::InvalidArgument,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }
}
