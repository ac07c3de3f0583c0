//! The closed loops of the MCP figures, one session per worker, `tools/call` after `tools/call` —
//! against Conductorio's `/mcp` or a peer gateway. The load comes from the lean generator
//! ([`crate::mcp_lean`]); the official Rust SDK (`rmcp`) checks first that the endpoint answers
//! the same call correctly, untimed.

use crate::load::{CallOnce, Round, run_workers};
use anyhow::{Context, Result, bail};
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

/// What an MCP worker calls: the measured tool, and an optional prerequisite called once per session.
#[derive(Debug, Clone)]
pub struct McpCall {
    pub tool: String,
    pub arguments: JsonObject,
    pub prerequisite: Option<(String, JsonObject)>,
}

impl McpCall {
    pub fn new(tool: &str, arguments_json: &str) -> Result<McpCall> {
        Ok(McpCall {
            tool: tool.into(),
            arguments: object(arguments_json)?,
            prerequisite: None,
        })
    }

    pub fn after(mut self, tool: &str, arguments_json: &str) -> Result<McpCall> {
        self.prerequisite = Some((tool.into(), object(arguments_json)?));
        Ok(self)
    }
}

fn object(json: &str) -> Result<JsonObject> {
    match serde_json::from_str(json)? {
        Value::Object(map) => Ok(map),
        other => bail!("arguments must be a JSON object, not {other}"),
    }
}

/// Whether an MCP endpoint answers at all (a POST without a session gets some HTTP status).
pub async fn available(url: &str) -> bool {
    let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
    match tokio::time::timeout(std::time::Duration::from_secs(5), ().serve(transport)).await {
        Ok(Ok(client)) => {
            let _ = client.cancel().await;
            true
        }
        _ => false,
    }
}

/// One MCP session.
pub struct McpWorker {
    client: RunningService<RoleClient, ()>,
    call: McpCall,
}

impl McpWorker {
    /// Opens a session (the `initialize` handshake) and calls the prerequisite once; untimed.
    pub async fn connect(url: &str, call: &McpCall) -> Result<McpWorker> {
        let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
        let client = ().serve(transport).await.with_context(|| format!("MCP initialize at {url}"))?;
        let worker = McpWorker {
            client,
            call: call.clone(),
        };
        if let Some((tool, arguments)) = &worker.call.prerequisite {
            worker.tools_call(tool, arguments).await?;
        }
        Ok(worker)
    }

    async fn tools_call(&self, tool: &str, arguments: &JsonObject) -> Result<CallToolResult> {
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = Some(arguments.clone());
        let result = self
            .client
            .call_tool(params)
            .await
            .with_context(|| format!("MCP tools/call {tool}"))?;
        if result.is_error == Some(true) {
            bail!(
                "MCP tools/call {tool} returned an error: {:?}",
                result.content
            );
        }
        Ok(result)
    }
}

impl CallOnce for McpWorker {
    async fn call_once(&mut self) -> Result<()> {
        self.tools_call(&self.call.tool, &self.call.arguments)
            .await
            .map(drop)
    }

    async fn finish(self) {
        let _ = self.client.cancel().await;
    }
}

/// One round of `calls` measured `tools/call`s over `concurrency` lean sessions opened first, after
/// one untimed call through the official SDK's client as a correctness check.
pub async fn round(url: &str, call: &McpCall, concurrency: usize, calls: u64) -> Result<Round> {
    let mut check = McpWorker::connect(url, call).await?;
    check.call_once().await?;
    check.finish().await;
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        workers.push(crate::mcp_lean::LeanWorker::connect(url, call).await?);
    }
    run_workers(workers, calls).await
}
