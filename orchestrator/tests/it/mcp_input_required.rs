//! A session-free (2026-07-28) client through Conductorio to a server that speaks that era too
//! (issue 28): the official Python SDK as the client, the conformance fixture (rmcp) as the server.
//! The server's input requests (SEP-2322) reach the client as `input_required` results and its
//! answers reach the server with the retry, the client's own capabilities reach the server, and
//! the audit log records who asked what and how it ended, never what was asked.

use crate::conformance::through_conductorio;
use crate::mcp_support::{params, run_python, script, text};
use conductor_orchestrator::audit::AuditEvent;
use conductor_orchestrator::testing;
use serde_json::json;

/// Every event of the orchestrator's audit log, once it has stopped.
async fn recorded(orchestrator: testing::RunningOrchestrator) -> Vec<AuditEvent> {
    let dir = orchestrator.gateway.audit().dir().to_path_buf();
    orchestrator.stop().await;
    conductor_audit::read_from::<AuditEvent>(&dir, 1)
        .expect("the audit log reads")
        .map(|r| r.expect("every record reads").event)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_free_client_answers_the_servers_input_requests_through_conductorio() {
    let (_fixture, orchestrator, _audit) = through_conductorio().await;
    let url = format!("{}/mcp", orchestrator.http_url());
    let summary = run_python(&[
        script("mcp_input_required.py").display().to_string(),
        "--url".into(),
        url,
    ])
    .await;
    assert_eq!(summary["protocol_version"], "2026-07-28", "{summary}");
    assert_eq!(summary["elicitation"], "Hello, Ada!", "{summary}");
    assert_eq!(
        summary["multi_round"], "Done in two rounds: the favourite colour is teal",
        "both rounds' answers reached the server: {summary}"
    );
    assert_eq!(
        summary["sampling"], "The model answered: Paris, said the python client",
        "{summary}"
    );
    assert_eq!(
        summary["roots"], "The client's roots: file:///python/root",
        "{summary}"
    );
    assert_eq!(
        summary["prompt"],
        json!(["Use this context: from the python client"]),
        "a prompts/get that needed input: {summary}"
    );
    assert_eq!(
        summary["declared"], "The client declared sampling",
        "the client's own capabilities reached the server: {summary}"
    );
    assert_eq!(
        summary["undeclared"], -32021,
        "the server's refusal of a client without sampling passes on as it gave it: {summary}"
    );
    assert_eq!(
        summary["listen_honored"],
        json!(["test://static-text"]),
        "subscriptions/listen is acknowledged with the subscription: {summary}"
    );

    let events = recorded(orchestrator).await;
    let asked = |wanted: &str, how: &str| {
        events
            .iter()
            .filter(|e| {
                matches!(e, AuditEvent::ServerAsked { server, method, outcome, .. }
                    if server == "conformance" && method == wanted && outcome == how)
            })
            .count()
    };
    for method in ["elicitation/create", "sampling/createMessage", "roots/list"] {
        assert!(asked(method, "asked") >= 1, "{method} asked: {events:?}");
        assert_eq!(
            asked(method, "asked"),
            asked(method, "answered"),
            "each {method} asked is answered: {events:?}"
        );
    }
    // elicitation, two rounds, the prompt's: four elicitations asked.
    assert_eq!(asked("elicitation/create", "asked"), 4, "{events:?}");
    assert!(
        events.iter().any(
            |e| matches!(e, AuditEvent::ServerAsked { tool, .. } if tool == "prompts.conformance")
        ),
        "the prompt's input request is recorded under its governed name: {events:?}"
    );
    // The round that needed input is recorded as the methods it asked, never what it asked.
    let first_round = json!({
        "resultType": "input_required",
        "inputRequests": { "user_name": "elicitation/create" }
    });
    assert!(
        events.iter().any(
            |e| matches!(e, AuditEvent::CallFinished { tool, result: Some(result), .. }
            if tool == "test_input_required_result_elicitation" && *result == first_round)
        ),
        "{events:?}"
    );
    let text = serde_json::to_string(&events).expect("events as JSON");
    assert!(
        !text.contains("What is your name?"),
        "what a server asks is not recorded"
    );
}

/// A client that can be asked nothing (the session era, no capability declared, so its call has
/// no stream): the server's sampling request is refused at once, and recorded as a relayed request
/// is, with why (issue 28: it used to show only in the call's outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_request_to_a_caller_without_a_stream_is_refused_and_recorded() {
    use rmcp::ServiceExt;
    let (_fixture, orchestrator, _audit) = through_conductorio().await;
    let client = ()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            format!("{}/mcp", orchestrator.http_url()),
        ))
        .await
        .expect("the MCP client initializes");
    let answer = client
        .call_tool(params("test_sampling", json!({ "prompt": "anyone?" })))
        .await
        .expect("tools/call");
    let said = text(&answer);
    assert!(
        said.contains("Sampling not supported or error") && said.contains("cannot answer"),
        "the server heard the refusal at once: {said}"
    );
    let _ = client.cancel().await;
    let events = recorded(orchestrator).await;
    assert!(
        events.iter().any(|e| matches!(e, AuditEvent::ServerAsked { tool, server, method, outcome, error: Some(why), .. }
            if tool == "test_sampling" && server == "conformance" && method == "sampling/createMessage"
                && outcome == "refused" && why.contains("did not declare the capability"))),
        "{events:?}"
    );
}

/// A client that keeps the resource updates it hears.
#[derive(Clone, Default)]
struct Subscriber {
    heard: std::sync::Arc<tokio::sync::Notify>,
    uris: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl rmcp::ClientHandler for Subscriber {
    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.uris.lock().expect("uris").push(params.uri);
        self.heard.notify_one();
    }
}

/// A session-era client that subscribes to a resource through Conductorio hears when the server
/// says it changed (issue 28: `notifications/resources/updated` was not relayed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)] // resources/subscribe is of the session eras
async fn a_subscribed_session_hears_that_its_resource_changed() {
    use rmcp::ServiceExt;
    let (_fixture, orchestrator, _audit) = through_conductorio().await;
    let subscriber = Subscriber::default();
    let client = subscriber
        .clone()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_uri(
            format!("{}/mcp", orchestrator.http_url()),
        ))
        .await
        .expect("the MCP client initializes");
    // The resources' owner is known from the list, as a client would have read it.
    client.list_all_resources().await.expect("resources/list");
    client
        .subscribe(rmcp::model::SubscribeRequestParams::new(
            "test://static-text",
        ))
        .await
        .expect("resources/subscribe");
    tokio::time::timeout(crate::mcp_support::DEADLINE, subscriber.heard.notified())
        .await
        .expect("the update reaches the subscribed session");
    assert_eq!(
        *subscriber.uris.lock().expect("uris"),
        ["test://static-text"]
    );
    let _ = client.cancel().await;
    orchestrator.stop().await;
}

/// A session-free `tools/call` of `tool` at `url` (the `/mcp` path) whose retry brings `answers`
/// (SEP-2322 `inputResponses`); the JSON-RPC answer.
async fn call_with_answers(url: &str, tool: &str, answers: serde_json::Value) -> serde_json::Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
    "name": tool, "arguments": {}, "inputResponses": answers, "requestState": "made-up",
    "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "attacker", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    }}});
    reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2026-07-28")
        .header("Mcp-Method", "tools/call")
        .header("Mcp-Name", tool)
        .json(&body)
        .send()
        .await
        .expect("the front answers")
        .json()
        .await
        .expect("a JSON-RPC answer")
}

/// A thousand made-up answers in one request (SPEC §9.6: what a caller without a credential can
/// make the log hold is bounded): sent to a gRPC tool, which asked nothing, none is recorded;
/// sent to an MCP server, at most `MAX_ASKS_RECORDED` are, and one record counts the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_client_makes_up_grow_the_log_by_a_bounded_number_of_records() {
    use conductor_orchestrator::downstream::MAX_ASKS_RECORDED;
    let answers: serde_json::Map<String, serde_json::Value> = (0..1000)
        .map(|i| (format!("k{i}"), json!({"action": "accept", "content": {}})))
        .collect();
    let answers = serde_json::Value::Object(answers);
    let server_asked = |events: &[AuditEvent]| -> Vec<(String, String, Option<String>)> {
        events
            .iter()
            .filter_map(|e| match e {
                AuditEvent::ServerAsked {
                    method,
                    outcome,
                    error,
                    ..
                } => Some((method.clone(), outcome.clone(), error.clone())),
                _ => None,
            })
            .collect()
    };

    // A gRPC tool server: no input was asked of anyone, so no answer is recorded.
    let servers = conductor_servers::testing::spawn_all().await;
    let config = crate::common::config_with(&servers, json!([]), json!({}));
    let h = crate::common::Harness::with_servers(servers, config).await;
    let reply = call_with_answers(
        &format!("{}/mcp", h.orchestrator.http_url()),
        "list_schemas",
        answers.clone(),
    )
    .await;
    assert!(
        reply["result"]["content"].is_array(),
        "the call ran: {reply}"
    );
    let events: Vec<AuditEvent> = h.audit_records().into_iter().map(|r| r.event).collect();
    assert_eq!(
        server_asked(&events),
        [],
        "nothing recorded of made-up answers"
    );

    // An MCP server of the session-free era: the first answers one by one, then one count.
    let (_fixture, orchestrator, _audit) = through_conductorio().await;
    let url = format!("{}/mcp", orchestrator.http_url());
    let reply = call_with_answers(&url, "test_simple_text", answers).await;
    assert!(
        reply["result"]["content"].is_array(),
        "the call ran: {reply}"
    );
    let recorded = server_asked(&recorded(orchestrator).await);
    assert_eq!(recorded.len(), MAX_ASKS_RECORDED + 1, "{recorded:?}");
    let (method, outcome, why) = recorded.last().unwrap();
    assert_eq!((method.as_str(), outcome.as_str()), ("unknown", "answered"));
    assert!(
        why.as_deref()
            .is_some_and(|w| w.starts_with(&format!("{} more", 1000 - MAX_ASKS_RECORDED))),
        "{why:?}"
    );
}
