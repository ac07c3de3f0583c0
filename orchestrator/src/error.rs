//! The orchestrator's errors, and the one place that maps them to gRPC status codes.

use crate::config::ConfigError;
use conductor_audit::AuditError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("workflow {0:?} not found; list workflows with `conductorctl workflows`")]
    WorkflowNotFound(String),
    #[error("workflow {id} has already {state}; start a new workflow to call more tools")]
    WorkflowFinished { id: String, state: &'static str },
    #[error("unknown tool {tool:?}; the tools are: {known}")]
    UnknownTool { tool: String, known: String },
    #[error("unknown template {name:?}; the templates are: {known}")]
    UnknownTemplate { name: String, known: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("server {server:?} is unavailable: {message}")]
    Unavailable { server: String, message: String },
    /// The call was sent: the server may still carry it out, so its effect is unknown.
    #[error(
        "tool {tool} did not answer within its time-out of {limit}; the orchestrator stopped waiting, and the server may still carry the call out (its effect is unknown)"
    )]
    DeadlineExceeded { tool: String, limit: String },
    /// An MCP server answered with a JSON-RPC error: passed on as it gave it.
    #[error("{}", server_error(server, method, *code, message))]
    ServerError {
        server: String,
        method: String,
        code: i32,
        message: String,
        data: Option<Box<serde_json::Value>>,
    },
    #[error("server {server:?} failed the call of {tool}: {message}")]
    Downstream {
        server: String,
        tool: String,
        message: String,
    },
    #[error("approval {0:?} not found; list pending approvals with `conductorctl pending`")]
    ApprovalNotFound(String),
    #[error("approval {id} is already {state}")]
    ApprovalDecided { id: String, state: String },
    #[error("{0}")]
    ApprovalMismatch(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}; the call was not run or not acknowledged")]
    Audit(#[from] AuditError),
    /// A broken invariant: a bug, reported rather than panicking.
    #[error("internal error (a bug): {0}")]
    Internal(String),
    #[error("the orchestrator is shutting down")]
    ShuttingDown,
    /// The caller withdrew the call while it ran: the server was told, and its effect is unknown.
    #[error(
        "the caller cancelled the call of {tool} while it ran; server {server:?} was told to stop, and its effect is unknown"
    )]
    Cancelled { server: String, tool: String },
}

/// A server's JSON-RPC error in words: refused arguments read as such.
fn server_error(server: &str, method: &str, code: i32, message: &str) -> String {
    if code == -32602 {
        format!("server {server:?} refused the arguments of {method}: {message}")
    } else {
        format!("server {server:?} answered {method} with error {code}: {message}")
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        use tonic::Code;
        let code = match &error {
            Error::WorkflowNotFound(_)
            | Error::UnknownTool { .. }
            | Error::UnknownTemplate { .. } => Code::NotFound,
            Error::ApprovalNotFound(_) => Code::NotFound,
            Error::WorkflowFinished { .. }
            | Error::ApprovalDecided { .. }
            | Error::ApprovalMismatch(_) => Code::FailedPrecondition,
            Error::InvalidArgument(_) | Error::Config(_) => Code::InvalidArgument,
            // The audit log cannot take the record now: retry later (the orchestrator recovers by
            // itself when the disk does).
            Error::Unavailable { .. } | Error::ShuttingDown | Error::Audit(_) => Code::Unavailable,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Cancelled { .. } => Code::Cancelled,
            Error::Downstream { .. } | Error::Internal(_) => Code::Internal,
            Error::ServerError { code, .. } => match *code {
                -32602 => Code::InvalidArgument,
                -32002 => Code::NotFound,
                _ => Code::Internal,
            },
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
        };
        tonic::Status::new(code, error.to_string())
    }
}
