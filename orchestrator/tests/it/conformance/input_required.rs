//! The fixture's multi round-trip tools and prompt (SEP-2322, the 2026-07-28 revision): each asks
//! the client for input with an `InputRequiredResult` (elicitation, sampling, roots), and completes
//! when the client calls again with its `inputResponses` (and the `requestState` it was given), as
//! the suite's `input-required-result-*` scenarios expect of `test_input_required_result_*`.
//!
//! `requestState` is sealed with an HMAC, so a state the client altered is refused (-32602), never
//! trusted.

use hmac::{Hmac, KeyInit, Mac};
use rmcp::ErrorData;
use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, GetPromptRequestParams, InputResponses,
};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// What a multi round-trip request answers: a complete result's JSON, or the input it still needs.
pub enum Answer {
    Complete(Value),
    InputRequired(Value),
}

/// The fixture's own key for `requestState`; a test fixture needs no secret beyond its process.
const STATE_KEY: &[u8] = b"conductorio conformance fixture request state";

fn mac(payload: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(STATE_KEY)
        .expect("HMAC takes a key of any length");
    mac.update(payload.as_bytes());
    mac
}

/// `payload.TAG`, the tag an HMAC of the payload.
fn seal(payload: &str) -> String {
    format!(
        "{payload}.{}",
        hex::encode(mac(payload).finalize().into_bytes())
    )
}

/// The payload of a state this fixture sealed, or a refusal naming the integrity check.
fn open(state: &str) -> Result<String, ErrorData> {
    let refused = || ErrorData::invalid_params("requestState failed its integrity check", None);
    let (payload, tag) = state.rsplit_once('.').ok_or_else(refused)?;
    let tag = hex::decode(tag).map_err(|_| refused())?;
    mac(payload).verify_slice(&tag).map_err(|_| refused())?;
    Ok(payload.to_owned())
}

fn elicit(message: &str, field: &str, kind: &str) -> Value {
    json!({
        "method": "elicitation/create",
        "params": {
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": { field: { "type": kind } },
                "required": [field]
            }
        }
    })
}

fn sample(text: &str, max_tokens: u32) -> Value {
    json!({
        "method": "sampling/createMessage",
        "params": {
            "messages": [{ "role": "user", "content": { "type": "text", "text": text } }],
            "maxTokens": max_tokens
        }
    })
}

fn roots() -> Value {
    json!({ "method": "roots/list", "params": {} })
}

fn needs(requests: Value, state: Option<&str>) -> Answer {
    let mut result = json!({ "resultType": "input_required", "inputRequests": requests });
    if let Some(state) = state {
        result["requestState"] = json!(seal(state));
    }
    Answer::InputRequired(result)
}

fn text(text: String) -> Answer {
    Answer::Complete(json!({ "content": [{ "type": "text", "text": text }] }))
}

/// The client's answers to a previous round, each checked to be an object: a response of another
/// shape is a protocol error, not an answer.
fn responses(given: Option<&InputResponses>) -> Result<Map<String, Value>, ErrorData> {
    let responses: Map<String, Value> = given
        .into_iter()
        .flatten()
        .map(|(key, response)| (key.clone(), response.clone()))
        .collect();
    for (key, response) in &responses {
        if !response.is_object() {
            return Err(ErrorData::invalid_params(
                format!("inputResponses.{key} is not a result object"),
                None,
            ));
        }
    }
    Ok(responses)
}

/// An accepted elicitation's `content.FIELD`.
fn accepted(responses: &Map<String, Value>, key: &str, field: &str) -> Option<String> {
    let response = responses.get(key)?;
    (response["action"] == "accept").then(|| match &response["content"][field] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn sampled(responses: &Map<String, Value>, key: &str) -> Option<String> {
    responses
        .get(key)?
        .pointer("/content/text")?
        .as_str()
        .map(str::to_owned)
}

fn root_uris(responses: &Map<String, Value>, key: &str) -> Option<String> {
    let roots = responses.get(key)?.get("roots")?.as_array()?;
    Some(
        roots
            .iter()
            .filter_map(|r| r["uri"].as_str())
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// The tools of this module, as `tools/list` shows them.
pub fn tools() -> Vec<Value> {
    let none = json!({ "type": "object", "properties": {} });
    [
        ("test_input_required_result_elicitation", "Asks the client's user for a name (SEP-2322)"),
        ("test_input_required_result_sampling", "Asks the client's model a question (SEP-2322)"),
        ("test_input_required_result_list_roots", "Asks the client for its roots (SEP-2322)"),
        ("test_input_required_result_request_state", "Round-trips a sealed requestState (SEP-2322)"),
        ("test_input_required_result_multiple_inputs", "Asks for three inputs at once (SEP-2322)"),
        ("test_input_required_result_multi_round", "Asks in two rounds (SEP-2322)"),
        ("test_input_required_result_tampered_state", "Refuses an altered requestState (SEP-2322)"),
        ("test_input_required_result_capabilities", "Asks only what the client can answer (SEP-2322)"),
        ("test_streaming_elicitation", "Asks its user in the result, never as a request on the stream (SEP-2575)"),
    ]
    .into_iter()
    .map(|(name, description)| json!({ "name": name, "description": description, "inputSchema": none }))
    .collect()
}

/// Answers a `tools/call` of one of this module's tools (`None` for any other tool).
pub fn call(
    request: &CallToolRequestParams,
    capabilities: Option<ClientCapabilities>,
) -> Option<Result<Answer, ErrorData>> {
    tools()
        .iter()
        .any(|t| t["name"] == request.name.as_ref())
        .then(|| answer(request, capabilities))
}

fn answer(
    request: &CallToolRequestParams,
    capabilities: Option<ClientCapabilities>,
) -> Result<Answer, ErrorData> {
    let state = || request.request_state.as_deref().map(open).transpose();
    let given = responses(request.input_responses.as_ref())?;
    Ok(match request.name.as_ref() {
        "test_input_required_result_elicitation" => match accepted(&given, "user_name", "name") {
            Some(name) => text(format!("Hello, {name}!")),
            None => needs(
                json!({ "user_name": elicit("What is your name?", "name", "string") }),
                None,
            ),
        },
        "test_input_required_result_sampling" => match sampled(&given, "capital_question") {
            Some(answer) => text(format!("The model answered: {answer}")),
            None => needs(
                json!({ "capital_question": sample("What is the capital of France?", 100) }),
                None,
            ),
        },
        "test_input_required_result_list_roots" => match root_uris(&given, "client_roots") {
            Some(uris) => text(format!("The client's roots: {uris}")),
            None => needs(json!({ "client_roots": roots() }), None),
        },
        "test_input_required_result_request_state"
        | "test_input_required_result_tampered_state" => {
            let state = state()?;
            match (state.as_deref(), given.contains_key("confirm")) {
                (Some("confirm"), true) => {
                    text("state-ok: the requestState came back unaltered".into())
                }
                _ => needs(
                    json!({ "confirm": elicit("Please confirm", "ok", "boolean") }),
                    Some("confirm"),
                ),
            }
        }
        "test_input_required_result_multiple_inputs" => {
            let state = state()?;
            let all = ["user_name", "greeting", "client_roots"];
            if state.as_deref() == Some("all") && all.iter().all(|k| given.contains_key(*k)) {
                text(format!(
                    "Got every input: name {}, greeting {}, roots {}",
                    accepted(&given, "user_name", "name").unwrap_or_default(),
                    sampled(&given, "greeting").unwrap_or_default(),
                    root_uris(&given, "client_roots").unwrap_or_default()
                ))
            } else {
                needs(
                    json!({
                        "user_name": elicit("What is your name?", "name", "string"),
                        "greeting": sample("Generate a greeting", 50),
                        "client_roots": roots()
                    }),
                    Some("all"),
                )
            }
        }
        "test_input_required_result_multi_round" => {
            let state = state()?;
            match (state.as_deref(), &given) {
                (Some("round-2"), given) if given.contains_key("step2") => text(format!(
                    "Done in two rounds: the favourite colour is {}",
                    accepted(given, "step2", "color").unwrap_or_default()
                )),
                (Some("round-1"), given) if given.contains_key("step1") => needs(
                    json!({ "step2": elicit("Step 2: What is your favorite color?", "color", "string") }),
                    Some("round-2"),
                ),
                _ => needs(
                    json!({ "step1": elicit("Step 1: What is your name?", "name", "string") }),
                    Some("round-1"),
                ),
            }
        }
        "test_streaming_elicitation" => {
            if capabilities
                .as_ref()
                .is_none_or(|c| c.elicitation.is_none())
            {
                return Err(ErrorData::missing_required_client_capability(
                    ClientCapabilities::builder().enable_elicitation().build(),
                ));
            }
            match accepted(&given, "user_name", "name") {
                Some(name) => text(format!("Hello, {name}!")),
                None => needs(
                    json!({ "user_name": elicit("What is your name?", "name", "string") }),
                    None,
                ),
            }
        }
        "test_input_required_result_capabilities" => {
            let capabilities = capabilities.unwrap_or_default();
            let mut requests = Map::new();
            if capabilities.sampling.is_some() {
                requests.insert("question".into(), sample("What is 2 + 2?", 10));
            }
            if capabilities.elicitation.is_some() {
                requests.insert(
                    "user_name".into(),
                    elicit("What is your name?", "name", "string"),
                );
            }
            if requests.is_empty() || requests.keys().all(|k| given.contains_key(k)) {
                text("Asked only what the client declared it can answer".into())
            } else {
                needs(Value::Object(requests), None)
            }
        }
        _ => {
            return Err(ErrorData::invalid_params(
                "not a multi round-trip tool",
                None,
            ));
        }
    })
}

/// The multi round-trip prompt, as `prompts/list` shows it.
pub fn prompt_listing() -> Value {
    json!({ "name": "test_input_required_result_prompt", "title": "Prompt Needing Input",
            "description": "A prompt that asks the client's user for its context (SEP-2322)" })
}

/// Answers `prompts/get` of the multi round-trip prompt (`None` for any other prompt).
pub fn prompt(request: &GetPromptRequestParams) -> Option<Result<Answer, ErrorData>> {
    if request.name != "test_input_required_result_prompt" {
        return None;
    }
    Some(responses(request.input_responses.as_ref()).map(|given| {
        match accepted(&given, "user_context", "context") {
            Some(context) => Answer::Complete(json!({ "messages": [{ "role": "user", "content": {
                "type": "text", "text": format!("Use this context: {context}")
            } }] })),
            None => needs(
                json!({ "user_context": elicit("What context should the prompt use?", "context", "string") }),
                None,
            ),
        }
    }))
}

#[test]
fn a_sealed_state_opens_and_an_altered_one_is_refused() {
    let state = seal("round-1");
    assert_eq!(open(&state).expect("opens"), "round-1");
    assert!(open(&format!("{state}-TAMPERED")).is_err());
    assert!(open(&state.replacen("round-1", "round-2", 1)).is_err());
    assert!(open("round-1").is_err());
}
