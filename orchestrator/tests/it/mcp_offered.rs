//! What an MCP server offers besides tools, through Conductorio (issue 28): resources, resource
//! templates, prompts, completions and log messages pass through from a real server (the official
//! Python SDK's, over stdio) to a real client (rmcp over Streamable HTTP); reading a resource and
//! getting a prompt are decided by the rules under `resources.SERVER` / `prompts.SERVER` and
//! recorded like tool calls; what a caller may not use is neither listed nor served.

use crate::mcp_support::{python, run_python, script};
use conductor_orchestrator::audit::{AuditEvent, DecisionKind, Outcome};
use conductor_orchestrator::testing;
use rmcp::model::{
    ArgumentInfo, CompleteRequestParams, GetPromptRequestParams, ReadResourceRequestParams,
    Reference, ResourceContents,
};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// A client that keeps the log messages it hears.
#[derive(Clone, Default)]
struct LogClient {
    heard: Arc<Mutex<Vec<Value>>>,
}

impl rmcp::ClientHandler for LogClient {
    #[allow(deprecated)]
    fn on_logging_message(
        &self,
        params: rmcp::model::LoggingMessageNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.heard
            .lock()
            .expect("log list")
            .push(serde_json::to_value(&params).expect("a log message is JSON"));
        std::future::ready(())
    }
}

fn config(clients: Value) -> String {
    json!({
        "servers": {
            "notes": {
                "mcp_stdio": { "command": python(), "args": [script("echo_server.py")] },
                "tools": ["echo", "chatty", "snapshot", "count", "ask_model", "nap"],
                "timeout": "10s"
            }
        },
        "clients": clients,
        "rules": [{
            "id": "echo-before-reading",
            "kind": "sequence",
            "tool": "resources.notes",
            "after": ["echo"]
        }]
    })
    .to_string()
}

async fn client_of(
    orchestrator: &testing::RunningOrchestrator,
    token: Option<&str>,
) -> RunningService<RoleClient, LogClient> {
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let mut config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", orchestrator.http_url()));
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    LogClient::default()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("the MCP client initializes")
}

fn text_of(contents: &[ResourceContents]) -> Option<&str> {
    contents.iter().find_map(|c| match c {
        ResourceContents::TextResourceContents { text, .. } => Some(text.as_str()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_prompts_completions_and_logs_pass_through_under_the_rules() {
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config(json!({})), None, audit.path())
        .await
        .expect("orchestrator starts");
    let client = client_of(&orchestrator, None).await;
    let info = client.peer_info().expect("the server's info");
    assert!(
        info.capabilities.resources.is_some() && info.capabilities.prompts.is_some(),
        "resources and prompts are offered: {:?}",
        info.capabilities
    );

    let resources = client.list_all_resources().await.expect("resources/list");
    let uris: Vec<&str> = resources.iter().map(|r| r.uri.as_str()).collect();
    assert!(
        uris.contains(&"notes://readme") && uris.contains(&"notes://pixel"),
        "{uris:?}"
    );
    let templates = client
        .list_all_resource_templates()
        .await
        .expect("resources/templates/list");
    assert!(
        templates
            .iter()
            .any(|t| t.uri_template == "notes://day/{day}"),
        "{templates:?}"
    );

    // The rule holds for a read as for a tool: refused, with the rule and what to do first.
    let refused = client
        .read_resource(ReadResourceRequestParams::new("notes://readme"))
        .await
        .expect_err("a read before echo is refused");
    let message = refused.to_string();
    assert!(
        message.contains("echo-before-reading") && message.contains("echo"),
        "the refusal names the rule and what to call first: {message}"
    );

    let mut echo = rmcp::model::CallToolRequestParams::new("echo");
    echo.arguments = json!({ "text": "hi" }).as_object().cloned();
    client.call_tool(echo).await.expect("echo");
    let readme = client
        .read_resource(ReadResourceRequestParams::new("notes://readme"))
        .await
        .expect("resources/read after echo");
    assert_eq!(text_of(&readme.contents), Some("Read me first."));
    let pixel = client
        .read_resource(ReadResourceRequestParams::new("notes://pixel"))
        .await
        .expect("a binary resource");
    assert!(
        pixel.contents.iter().any(|c| matches!(c,
            ResourceContents::BlobResourceContents { blob, mime_type, .. }
                if blob.starts_with("iVBORw0KGgo") && mime_type.as_deref() == Some("image/png"))),
        "the blob passes through as the server gave it: {pixel:?}"
    );
    let monday = client
        .read_resource(ReadResourceRequestParams::new("notes://day/monday"))
        .await
        .expect("a resource of a template");
    assert_eq!(text_of(&monday.contents), Some("Notes of monday."));
    // The server's own error passes through as it gave it: its code, not a gateway's internal one.
    match client
        .read_resource(ReadResourceRequestParams::new("notes://missing"))
        .await
    {
        Err(rmcp::service::ServiceError::McpError(error)) => {
            assert_ne!(
                error.code,
                rmcp::model::ErrorCode::INTERNAL_ERROR,
                "the server's code, not ours: {error:?}"
            );
            assert!(error.message.contains("notes://missing"), "{error:?}");
        }
        other => panic!("an unknown resource is the server's error: {other:?}"),
    }

    let prompts = client.list_all_prompts().await.expect("prompts/list");
    assert!(prompts.iter().any(|p| p.name == "greet"), "{prompts:?}");
    let mut arguments = serde_json::Map::new();
    arguments.insert("name".into(), json!("Ada"));
    let greeting = client
        .get_prompt(GetPromptRequestParams::new("greet").with_arguments(arguments))
        .await
        .expect("prompts/get");
    let said = serde_json::to_string(&greeting.messages).expect("messages");
    assert!(said.contains("Please greet Ada warmly."), "{said}");

    let completed = client
        .complete(CompleteRequestParams::new(
            Reference::for_prompt("greet"),
            ArgumentInfo::new("name", "a"),
        ))
        .await
        .expect("completion/complete");
    assert_eq!(completed.completion.values, ["ada", "alan"]);

    // Log messages from `info` up reach the client that asked for them; `debug` does not.
    #[allow(deprecated)]
    client
        .set_level(rmcp::model::SetLevelRequestParams::new(
            rmcp::model::LoggingLevel::Info,
        ))
        .await
        .expect("logging/setLevel");
    let chatty = client
        .call_tool(rmcp::model::CallToolRequestParams::new("chatty"))
        .await
        .expect("chatty");
    assert_eq!(chatty.is_error, Some(false), "{chatty:?}");
    let heard = client.service().heard.lock().expect("logs").clone();
    let data: Vec<&str> = heard.iter().filter_map(|m| m["data"].as_str()).collect();
    assert_eq!(
        data,
        ["chatty started", "chatty is almost done"],
        "info and warning, not debug, before the answer: {heard:?}"
    );

    let _ = client.cancel().await;
    let dir = orchestrator.gateway.audit().dir().to_path_buf();
    orchestrator.stop().await;
    let events: Vec<AuditEvent> = conductor_audit::read_from::<AuditEvent>(&dir, 1)
        .expect("the audit log reads")
        .map(|r| r.expect("every record reads").event)
        .collect();
    assert!(
        events.iter().any(|e| matches!(e,
            AuditEvent::CallDecided { tool, decision: DecisionKind::Deny, arguments, .. }
                if tool == "resources.notes" && arguments["uri"] == "notes://readme")),
        "the refused read is recorded with its URI"
    );
    let reads = events
        .iter()
        .filter(|e| matches!(e,
            AuditEvent::CallFinished { tool, outcome: Outcome::Succeeded, .. } if tool == "resources.notes"))
        .count();
    assert_eq!(reads, 3, "every read is recorded with its outcome");
    assert!(
        events.iter().any(|e| matches!(e,
            AuditEvent::CallFinished { tool, outcome: Outcome::Failed, .. } if tool == "resources.notes")),
        "the read the server refused is recorded as failed"
    );
    assert!(
        events.iter().any(|e| matches!(e,
            AuditEvent::CallDecided { tool, arguments, .. }
                if tool == "prompts.notes" && arguments["name"] == "greet" && arguments["arguments"]["name"] == "Ada")),
        "the prompt is recorded with its arguments"
    );
}

/// A caller whose allow-list does not name `resources.notes` sees no resources and cannot read
/// one; its prompts, which it may use, stay listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_list_filters_resources_and_prompts_as_tools() {
    let audit = tempfile::tempdir().expect("temp dir");
    let clients = json!({
        "agent": { "token": "agent-token-0123456789abcdef", "tools": ["echo", "prompts.notes"] }
    });
    let orchestrator = testing::spawn(&config(clients), None, audit.path())
        .await
        .expect("orchestrator starts");
    let client = client_of(&orchestrator, Some("agent-token-0123456789abcdef")).await;
    let resources = client.list_all_resources().await.expect("resources/list");
    assert!(resources.is_empty(), "{resources:?}");
    let refused = client
        .read_resource(ReadResourceRequestParams::new("notes://readme"))
        .await
        .expect_err("a read the allow-list does not admit");
    assert!(
        refused.to_string().contains("notes://readme"),
        "the refusal names the resource: {refused}"
    );
    let prompts = client.list_all_prompts().await.expect("prompts/list");
    assert!(prompts.iter().any(|p| p.name == "greet"), "{prompts:?}");
    let _ = client.cancel().await;
    orchestrator.stop().await;
}

/// The official Python SDK as the client (issue 28's tests): an image block and progress
/// notifications come through as the server sent them, a read a rule refuses is refused, and the
/// server's sampling request reaches the client's callback, whose reply reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_reads_images_progress_and_answers_sampling_through_conductorio() {
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config(json!({})), None, audit.path())
        .await
        .expect("orchestrator starts");
    let url = format!("{}/mcp", orchestrator.http_url());
    let summary = run_python(&[
        script("mcp_faithful.py").display().to_string(),
        "--url".into(),
        url,
    ])
    .await;
    assert_eq!(summary["snapshot"], json!(["text", "image"]), "{summary}");
    assert_eq!(summary["image_mime"], "image/png", "{summary}");
    assert_eq!(summary["count"], "counted to 3", "{summary}");
    assert_eq!(
        summary["progress"],
        json!(["step 1 of 3", "step 2 of 3", "step 3 of 3"]),
        "the server's progress, in order: {summary}"
    );
    let refused = summary["refused"].as_str().unwrap_or_default();
    assert!(
        refused.contains("echo-before-reading"),
        "the read is refused with the rule: {summary}"
    );
    assert_eq!(summary["ask_model_error"], false, "{summary}");
    assert_eq!(
        summary["ask_model"], "the model said: forty-two, to 'the answer?'",
        "the client's sampling reply reached the server: {summary}"
    );
    // Who asked what, and how it ended, is in the audit log (its record has no place for what was
    // asked or answered).
    let dir = orchestrator.gateway.audit().dir().to_path_buf();
    orchestrator.stop().await;
    let asked: Vec<AuditEvent> = conductor_audit::read_from::<AuditEvent>(&dir, 1)
        .expect("the audit log reads")
        .map(|r| r.expect("every record reads").event)
        .filter(|e| matches!(e, AuditEvent::ServerAsked { .. }))
        .collect();
    assert!(
        matches!(asked.as_slice(), [AuditEvent::ServerAsked { tool, server, method, outcome, error: None, .. }]
            if tool == "ask_model" && server == "notes" && method == "sampling/createMessage" && outcome == "answered"),
        "{asked:?}"
    );
}

/// A client that cannot answer sampling gets the server's failure at once, naming why, instead of
/// the server waiting out its time-out; the server's own JSON-RPC error passes on as it gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_asking_a_client_that_cannot_answer_is_refused_at_once() {
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config(json!({})), None, audit.path())
        .await
        .expect("orchestrator starts");
    let client = client_of(&orchestrator, None).await;
    let mut ask = rmcp::model::CallToolRequestParams::new("ask_model");
    ask.arguments = json!({ "question": "anyone?" }).as_object().cloned();
    let refused = client
        .call_tool(ask)
        .await
        .expect_err("the server's JSON-RPC error passes on as one");
    let text = refused.to_string();
    assert!(
        text.contains("cannot answer sampling/createMessage"),
        "the failure says the client cannot answer: {text}"
    );
    assert!(!text.contains("time-out"), "refused, not timed out: {text}");
    let _ = client.cancel().await;
    orchestrator.stop().await;
}

/// A call the client cancels while it runs is withdrawn at its server (`notifications/cancelled`)
/// and recorded as cancelled, not left to run out its time-out (issue 28).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_client_cancels_is_withdrawn_at_its_server_and_recorded() {
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config(json!({})), None, audit.path())
        .await
        .expect("orchestrator starts");
    let client = client_of(&orchestrator, None).await;
    let mut nap = rmcp::model::CallToolRequestParams::new("nap");
    nap.arguments = json!({ "seconds": 600 }).as_object().cloned();
    let handle = client
        .send_request_with_option(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(nap)),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .expect("the call is sent");
    // Once the call has gone to the server, the client withdraws it.
    let dir = orchestrator.gateway.audit().dir().to_path_buf();
    let started = || {
        conductor_audit::read_from::<AuditEvent>(&dir, 1)
            .expect("the audit log reads")
            .map(|r| r.expect("every record reads").event)
            .any(|e| matches!(e, AuditEvent::CallStarted { tool, .. } if tool == "nap"))
    };
    for _ in 0..400 {
        if started() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(started(), "the nap has started");
    handle
        .cancel(Some("changed my mind".into()))
        .await
        .expect("notifications/cancelled is sent");
    let mut ended = None;
    for _ in 0..400 {
        ended = conductor_audit::read_from::<AuditEvent>(&dir, 1)
            .expect("the audit log reads")
            .map(|r| r.expect("every record reads").event)
            .find_map(|e| match e {
                AuditEvent::CallFinished {
                    tool,
                    outcome,
                    error,
                    ..
                } if tool == "nap" => Some((outcome, error)),
                _ => None,
            });
        if ended.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (outcome, error) = ended.expect("the cancelled call is recorded to its end");
    assert_eq!(outcome, Outcome::Failed);
    let error = error.unwrap_or_default();
    assert!(
        error.contains("cancelled") && !error.contains("time-out"),
        "recorded as cancelled, not timed out: {error}"
    );
    let _ = client.cancel().await;
    orchestrator.stop().await;
}

/// A raw request of MCP's own whose params are wrong is answered `-32602` naming the method and
/// what it takes, not "method not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_params_are_named_not_taken_for_an_unknown_method() {
    use crate::mcp_support::{open_session_as, raw_post};
    let audit = tempfile::tempdir().expect("temp dir");
    let orchestrator = testing::spawn(&config(json!({})), None, audit.path())
        .await
        .expect("orchestrator starts");
    let addr = orchestrator.http_addr;
    let session = open_session_as(addr, None).await;
    let headers = [
        ("Mcp-Session-Id", session.as_str()),
        ("MCP-Protocol-Version", "2025-11-25"),
    ];
    for (method, params, takes) in [
        ("resources/read", "null", "uri"),
        ("logging/setLevel", r#"{"level":"loud"}"#, "level"),
        (
            "completion/complete",
            r#"{"ref":{"type":"ref/other"},"argument":{"name":"a","value":"b"}}"#,
            "ref/prompt",
        ),
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{method}","params":{params}}}"#);
        let reply = raw_post(addr, &headers, &body).await;
        assert!(
            reply.body.contains("-32602")
                && reply.body.contains(method)
                && reply.body.contains(takes),
            "{method}: {reply:?}"
        );
    }
    // An answer to nothing this session asked is taken and dropped.
    let stray = raw_post(addr, &headers, r#"{"jsonrpc":"2.0","id":999,"result":{}}"#).await;
    assert_eq!(stray.status, 202, "{stray:?}");
    orchestrator.stop().await;
}
