//! Helpers shared by this crate's integration tests: calling a tool over real gRPC and reading its
//! outcome. Servers themselves come from `conductor_servers::testing`.

use conductor_proto::v1::call_tool_response::Outcome;
use conductor_proto::v1::{CallToolRequest, ToolError};
use conductor_servers::testing::RunningServer;
use serde_json::Value;
use tonic::Status;

/// What a tool call came back with: a result, the tool's own error, or a gRPC status.
#[derive(Debug)]
pub enum Called {
    Ok(Value),
    ToolError(ToolError),
    Status(Status),
}

impl Called {
    /// The result, or a panic naming what came back instead.
    pub fn ok(self) -> Value {
        match self {
            Called::Ok(value) => value,
            other => panic!("expected a result, got {other:?}"),
        }
    }

    /// The tool's error, or a panic naming what came back instead.
    pub fn tool_error(self) -> ToolError {
        match self {
            Called::ToolError(error) => error,
            other => panic!("expected a tool error, got {other:?}"),
        }
    }

    /// The gRPC status, or a panic naming what came back instead.
    pub fn status(self) -> Status {
        match self {
            Called::Status(status) => status,
            other => panic!("expected a gRPC error, got {other:?}"),
        }
    }
}

/// Calls `tool` with `args` (JSON) over a fresh connection.
pub async fn call(server: &RunningServer, tool: &str, args: Value) -> Called {
    call_raw(server, tool, &args.to_string()).await
}

/// Calls `tool` with arguments given as raw text (to test bad JSON).
pub async fn call_raw(server: &RunningServer, tool: &str, arguments_json: &str) -> Called {
    let mut client = server.tool_client().await;
    let request = CallToolRequest {
        tool: tool.to_owned(),
        arguments_json: arguments_json.to_owned(),
        workflow_id: "wf-test".to_owned(),
        call_id: "call-1".to_owned(),
    };
    match client.call_tool(request).await {
        Err(status) => Called::Status(status),
        Ok(response) => match response.into_inner().outcome {
            Some(Outcome::ResultJson(text)) => Called::Ok(serde_json::from_str(&text).unwrap()),
            Some(Outcome::Error(error)) => Called::ToolError(error),
            None => panic!("response without an outcome"),
        },
    }
}

/// Parses a tool error's details.
pub fn details(error: &ToolError) -> Value {
    serde_json::from_str(&error.details_json).unwrap()
}
