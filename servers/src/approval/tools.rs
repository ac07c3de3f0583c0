//! The approval server's read-only tools: agents may read approvals, never decide them (and, through
//! the orchestrator, only agents that may read approvals: see `Config::reads_approvals`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Approval, Ledger};
use crate::error::ToolFailure;
use crate::tool::{CallContext, Tool, ToolSpec, object_schema};

/// The approval server's read-only tools.
pub fn tools(ledger: Arc<Ledger>) -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(GetApproval(Arc::clone(&ledger))),
        Box::new(ListApprovals(ledger)),
    ]
}

fn to_json(approval: &Approval) -> Result<Value, ToolFailure> {
    serde_json::to_value(approval).map_err(|e| ToolFailure::new("internal", e.to_string()))
}

struct GetApproval(Arc<Ledger>);

#[tonic::async_trait]
impl Tool for GetApproval {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "get_approval",
            description: "Reads one approval request and its decision, if any.",
            input_schema: object_schema(json!({"id": {"type": "string", "minLength": 1}}), &["id"]),
        }
    }

    async fn call(&self, args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let id = args.get("id").and_then(Value::as_str).unwrap_or_default();
        match self.0.get(id) {
            Ok(approval) => to_json(&approval),
            Err(error) => Err(ToolFailure::new("not_found", error.to_string())),
        }
    }
}

struct ListApprovals(Arc<Ledger>);

#[tonic::async_trait]
impl Tool for ListApprovals {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_approvals",
            description: "Lists approval requests in creation order, optionally only the pending ones.",
            input_schema: object_schema(
                json!({"pending_only": {"type": "boolean", "default": false}}),
                &[],
            ),
        }
    }

    async fn call(&self, args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let pending_only = args
            .get("pending_only")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let approvals = self
            .0
            .list(pending_only)
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(json!({"count": approvals.len(), "approvals": approvals}))
    }
}
