//! The conformance fixture's catalogue: the tools, resources and prompts it offers and what they
//! hold, as the suite's reference "everything server" has them (the JSON it writes, so a field the
//! suite reads is spelt as the suite spells it). `fixture.rs` serves them; the tools' behaviour is
//! there and in `input_required.rs`.

use super::input_required;
use serde_json::{Value, json};

/// A 1x1 red PNG, the reference server's image.
pub const TEST_IMAGE_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A minimal WAV file, the reference server's audio.
pub const TEST_AUDIO_BASE64: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

/// The tools without arguments: name and description.
const PLAIN_TOOLS: &[(&str, &str)] = &[
    ("test_simple_text", "Tests simple text content response"),
    ("test_image_content", "Tests image content response"),
    ("test_audio_content", "Tests audio content response"),
    (
        "test_embedded_resource",
        "Tests embedded resource content response",
    ),
    (
        "test_multiple_content_types",
        "Tests response with multiple content types (text, image, resource)",
    ),
    (
        "test_tool_with_logging",
        "Tests tool that emits log messages during execution",
    ),
    (
        "test_tool_with_progress",
        "Tests tool that reports progress notifications",
    ),
    ("test_error_handling", "Tests error response handling"),
    (
        "test_reconnection",
        "Tests SSE stream disconnection and client reconnection (SEP-1699)",
    ),
    (
        "test_elicitation_sep1034_defaults",
        "Tests elicitation with default values per SEP-1034",
    ),
    (
        "test_elicitation_sep1330_enums",
        "Tests elicitation with enum schema improvements per SEP-1330",
    ),
    (
        "test_missing_capability",
        "Needs the client's sampling capability (SEP-2575)",
    ),
    (
        "test_logging_tool",
        "Logs only at the level the request names (SEP-2575)",
    ),
    (
        "test_trigger_tool_change",
        "Tells subscriptions/listen streams the tool list changed",
    ),
    (
        "test_trigger_prompt_change",
        "Tells subscriptions/listen streams the prompt list changed",
    ),
];

/// `tools/list`: every tool with its description and input schema.
pub fn tools() -> Value {
    let tool = |name: &str, description: &str, schema: Value| json!({ "name": name, "description": description, "inputSchema": schema });
    let one_string = |name: &str, description: &str| {
        json!({
            "type": "object",
            "properties": { name: { "type": "string", "description": description } },
            "required": [name]
        })
    };
    let mut listed: Vec<Value> = PLAIN_TOOLS
        .iter()
        .map(|(name, description)| {
            tool(
                name,
                description,
                json!({ "type": "object", "properties": {} }),
            )
        })
        .collect();
    listed.push(tool(
        "test_sampling",
        "Tests server-initiated sampling (LLM completion request)",
        one_string("prompt", "The prompt to send to the LLM"),
    ));
    listed.push(tool(
        "test_elicitation",
        "Tests server-initiated elicitation (user input request)",
        one_string("message", "The message to show the user"),
    ));
    // SEP-1613: the input schema exactly as written, with `$schema`, `$defs` and
    // `additionalProperties`, which a proxy must keep.
    listed.push(tool(
        "json_schema_2020_12_tool",
        "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": { "address": { "type": "object", "properties": {
                "street": { "type": "string" }, "city": { "type": "string" }
            } } },
            "properties": { "name": { "type": "string" }, "address": { "$ref": "#/$defs/address" } },
            "additionalProperties": false
        }),
    ));
    listed.extend(input_required::tools());
    json!({ "tools": listed })
}

/// The names of the fixture's tools: what a gateway in front of it must be told it offers.
pub fn tool_names() -> Vec<String> {
    tools()["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}

/// `resources/list`.
pub fn resources() -> Value {
    let resource = |uri: &str, name: &str, title: &str, description: &str, mime: &str| json!({ "uri": uri, "name": name, "title": title, "description": description, "mimeType": mime });
    json!({ "resources": [
        resource("test://static-text", "static-text", "Static Text Resource",
            "A static text resource for testing", "text/plain"),
        resource("test://static-binary", "static-binary", "Static Binary Resource",
            "A static binary resource (image) for testing", "image/png"),
        resource("test://watched-resource", "watched-resource", "Watched Resource",
            "A resource that auto-updates every 3 seconds", "text/plain"),
    ] })
}

/// `resources/templates/list`.
pub fn resource_templates() -> Value {
    json!({ "resourceTemplates": [{
        "uriTemplate": "test://template/{id}/data",
        "name": "template",
        "title": "Resource Template",
        "description": "A resource template with parameter substitution",
        "mimeType": "application/json"
    }] })
}

/// `prompts/list`.
pub fn prompts() -> Value {
    let argument = |name: &str, description: &str| json!({ "name": name, "description": description, "required": true });
    json!({ "prompts": [
        { "name": "test_simple_prompt", "title": "Simple Test Prompt",
          "description": "A simple prompt without arguments" },
        { "name": "test_prompt_with_arguments", "title": "Prompt With Arguments",
          "description": "A prompt with required arguments",
          "arguments": [argument("arg1", "First test argument"), argument("arg2", "Second test argument")] },
        { "name": "test_prompt_with_embedded_resource", "title": "Prompt With Embedded Resource",
          "description": "A prompt that includes an embedded resource",
          "arguments": [argument("resourceUri", "URI of the resource to embed")] },
        { "name": "test_prompt_with_image", "title": "Prompt With Image",
          "description": "A prompt that includes image content" },
        input_required::prompt_listing(),
    ] })
}

/// SEP-1034: a form with a default for every primitive type.
pub fn sep1034_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": { "type": "string", "description": "User name", "default": "John Doe" },
            "age": { "type": "integer", "description": "User age", "default": 30 },
            "score": { "type": "number", "description": "User score", "default": 95.5 },
            "status": {
                "type": "string",
                "description": "User status",
                "enum": ["active", "inactive", "pending"],
                "default": "active"
            },
            "verified": { "type": "boolean", "description": "Verification status", "default": true }
        },
        "required": []
    })
}

/// SEP-1330: the five forms of enum a form may hold.
pub fn sep1330_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "untitledSingle": {
                "type": "string",
                "description": "Select one option",
                "enum": ["option1", "option2", "option3"]
            },
            "titledSingle": {
                "type": "string",
                "description": "Select one option with titles",
                "oneOf": [
                    { "const": "value1", "title": "First Option" },
                    { "const": "value2", "title": "Second Option" },
                    { "const": "value3", "title": "Third Option" }
                ]
            },
            "legacyEnum": {
                "type": "string",
                "description": "Select one option (legacy)",
                "enum": ["opt1", "opt2", "opt3"],
                "enumNames": ["Option One", "Option Two", "Option Three"]
            },
            "untitledMulti": {
                "type": "array",
                "description": "Select multiple options",
                "minItems": 1,
                "maxItems": 3,
                "items": { "type": "string", "enum": ["option1", "option2", "option3"] }
            },
            "titledMulti": {
                "type": "array",
                "description": "Select multiple options with titles",
                "minItems": 1,
                "maxItems": 3,
                "items": { "anyOf": [
                    { "const": "value1", "title": "First Choice" },
                    { "const": "value2", "title": "Second Choice" },
                    { "const": "value3", "title": "Third Choice" }
                ] }
            }
        },
        "required": []
    })
}

pub fn read(uri: &str) -> Option<Value> {
    let text = |mime: &str, text: String| json!({ "contents": [{ "uri": uri, "mimeType": mime, "text": text }] });
    match uri {
        "test://static-text" => Some(text(
            "text/plain",
            "This is the content of the static text resource.".into(),
        )),
        "test://static-binary" => Some(json!({ "contents": [
            { "uri": uri, "mimeType": "image/png", "blob": TEST_IMAGE_BASE64 }
        ] })),
        "test://watched-resource" => Some(text("text/plain", "Watched resource content".into())),
        _ => {
            let id = uri
                .strip_prefix("test://template/")?
                .strip_suffix("/data")?;
            let data =
                json!({ "id": id, "templateTest": true, "data": format!("Data for ID: {id}") });
            Some(text("application/json", data.to_string()))
        }
    }
}

pub fn prompt(name: &str, arguments: &serde_json::Map<String, Value>) -> Option<Value> {
    let argument = |key: &str| arguments.get(key).and_then(Value::as_str).unwrap_or("");
    let user = |content: Value| json!({ "role": "user", "content": content });
    let text = |text: String| json!({ "type": "text", "text": text });
    let messages = match name {
        "test_simple_prompt" => vec![user(text("This is a simple prompt for testing.".into()))],
        "test_prompt_with_arguments" => vec![user(text(format!(
            "Prompt with arguments: arg1='{}', arg2='{}'",
            argument("arg1"),
            argument("arg2")
        )))],
        "test_prompt_with_embedded_resource" => vec![
            user(json!({ "type": "resource", "resource": {
                "uri": argument("resourceUri"),
                "mimeType": "text/plain",
                "text": "Embedded resource content for testing."
            } })),
            user(text("Please process the embedded resource above.".into())),
        ],
        "test_prompt_with_image" => vec![
            user(json!({ "type": "image", "data": TEST_IMAGE_BASE64, "mimeType": "image/png" })),
            user(text("Please analyze the image above.".into())),
        ],
        _ => return None,
    };
    Some(json!({ "messages": messages }))
}

/// The JSON the fixture answers with fits rmcp's own types (a misspelt field fails here, naming the
/// answer, rather than as a puzzling failure of the suite).
#[test]
#[allow(deprecated)] // sampling, which the 2025 suite still tests
fn fixture_data_fits_rmcp_types() {
    fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> serde_json::Result<T> {
        serde_json::from_value(value)
    }
    from_json::<rmcp::model::ListToolsResult>(tools()).expect("tools");
    from_json::<rmcp::model::ListResourcesResult>(resources()).expect("resources");
    from_json::<rmcp::model::ListResourceTemplatesResult>(resource_templates()).expect("templates");
    from_json::<rmcp::model::ListPromptsResult>(prompts()).expect("prompts");
    from_json::<rmcp::model::CreateMessageRequestParams>(json!({
        "messages": [{ "role": "user", "content": { "type": "text", "text": "hi" } }],
        "maxTokens": 100
    }))
    .expect("sampling params");
    for uri in [
        "test://static-text",
        "test://static-binary",
        "test://template/123/data",
    ] {
        from_json::<rmcp::model::ReadResourceResult>(read(uri).expect(uri)).expect(uri);
    }
    for name in [
        "test_simple_prompt",
        "test_prompt_with_arguments",
        "test_prompt_with_embedded_resource",
        "test_prompt_with_image",
    ] {
        let result = prompt(name, &serde_json::Map::new()).expect(name);
        from_json::<rmcp::model::GetPromptResult>(result).expect(name);
    }
}
