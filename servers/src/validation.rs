//! The validation server: checks batches of records against named or inline JSON Schemas.
//!
//! Owns the registry of named record schemas (built-in `customer` and `order`, plus any loaded from
//! `--schemas` at start-up, each compiled once). A record that fails its schema is a real finding about
//! the data, so it is reported as the tool's `validation_failed` failure listing every bad record; it
//! must never be turned into a gRPC error, which would mean the call itself was wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use jsonschema::error::ValidationErrorKind;
use serde_json::{Value, json};

use crate::error::{ServeError, ToolFailure};
use crate::tool::{CallContext, Tool, ToolSpec, object_schema, truncate};

/// At most this many invalid-field entries are returned in one failure's details.
const MAX_REPORTED_ERRORS: usize = 1000;

struct NamedSchema {
    schema: Value,
    builtin: bool,
    validator: jsonschema::Validator,
}

/// Named record schemas, compiled once and shared by the validation tools.
pub struct SchemaRegistry {
    schemas: BTreeMap<String, NamedSchema>,
}

/// The schemas every validation server knows, whatever its configuration.
fn builtin_schemas() -> [(&'static str, Value); 2] {
    [
        (
            "customer",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "name": {"type": "string", "minLength": 1, "pattern": "\\S"},
                    "email": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$"},
                    "age": {"type": "integer", "minimum": 0},
                    "country": {"type": "string"}
                },
                "required": ["id", "name", "email"]
            }),
        ),
        (
            "order",
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "customer_id": {"type": "string", "minLength": 1},
                    "amount": {"type": "number", "minimum": 0}
                },
                "required": ["id", "customer_id", "amount"]
            }),
        ),
    ]
}

impl SchemaRegistry {
    /// The built-in schemas plus those in `file` (a JSON object of name to schema); a file entry with
    /// a built-in's name replaces it. Any schema that does not compile stops start-up, naming it.
    pub fn load(file: Option<&Path>) -> Result<Self, ServeError> {
        let mut schemas = BTreeMap::new();
        for (name, schema) in builtin_schemas() {
            let validator =
                jsonschema::validator_for(&schema).map_err(|error| ServeError::ToolSchema {
                    tool: format!("validate_data (built-in schema {name})"),
                    reason: error.to_string(),
                })?;
            let named = NamedSchema {
                schema,
                builtin: true,
                validator,
            };
            schemas.insert(name.to_owned(), named);
        }
        if let Some(path) = file {
            let fail = |reason: String| ServeError::Schemas {
                path: path.to_owned(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            let parsed: Value =
                serde_json::from_str(&text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
            let Value::Object(entries) = parsed else {
                return Err(fail(
                    "expected a JSON object of schema name to JSON Schema".into(),
                ));
            };
            for (name, schema) in entries {
                if name.trim().is_empty() {
                    return Err(fail("a schema name is empty".into()));
                }
                let validator = jsonschema::validator_for(&schema).map_err(|e| {
                    fail(format!("schema \"{name}\" is not a valid JSON Schema: {e}"))
                })?;
                if schemas.contains_key(&name) {
                    tracing::info!(schema = %name, "configured schema replaces the built-in one");
                }
                let named = NamedSchema {
                    schema,
                    builtin: false,
                    validator,
                };
                schemas.insert(name, named);
            }
        }
        Ok(SchemaRegistry { schemas })
    }

    /// The known schema names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.schemas.keys().map(String::as_str).collect()
    }
}

/// The validation server's tools.
pub fn tools(registry: Arc<SchemaRegistry>) -> Vec<Box<dyn Tool>> {
    vec![
        Box::new(ValidateData(Arc::clone(&registry))),
        Box::new(ListSchemas(registry)),
    ]
}

struct ValidateData(Arc<SchemaRegistry>);

#[tonic::async_trait]
impl Tool for ValidateData {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "validate_data",
            description: "Checks every record against a schema (the name of a configured schema, or an \
                inline JSON Schema). All valid: returns the records. Otherwise fails with \
                validation_failed, listing each invalid record's index, field and reason.",
            input_schema: object_schema(
                json!({
                    "records": {
                        "type": "array",
                        "items": {"type": "object"},
                        "description": "The records to check."
                    },
                    "schema": {
                        "type": ["string", "object"],
                        "minLength": 1,
                        "description": "A configured schema's name (see list_schemas) or an inline JSON Schema."
                    }
                }),
                &["records", "schema"],
            ),
        }
    }

    async fn call(&self, args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let registry = Arc::clone(&self.0);
        // Checking a large batch is CPU work: keep it off the threads that serve other calls.
        tokio::task::spawn_blocking(move || validate_records(&registry, args))
            .await
            .map_err(|e| ToolFailure::new("internal", format!("validation task failed: {e}")))?
    }
}

/// Checks `args.records` against `args.schema` and builds the tool's answer.
fn validate_records(registry: &SchemaRegistry, mut args: Value) -> Result<Value, ToolFailure> {
    let records = match args.get_mut("records").map(Value::take) {
        Some(Value::Array(records)) => records,
        _ => {
            return Err(ToolFailure::new(
                "malformed_input",
                "records must be an array",
            ));
        }
    };
    let inline;
    let validator = match args.get("schema") {
        Some(Value::String(name)) => match registry.schemas.get(name) {
            Some(named) => &named.validator,
            None => {
                return Err(ToolFailure::new(
                    "unknown_schema",
                    format!(
                        "no schema named \"{name}\"; known schemas: {}",
                        registry.names().join(", ")
                    ),
                )
                .with_details(json!({"known": registry.names()})));
            }
        },
        Some(schema @ Value::Object(_)) => {
            inline = jsonschema::validator_for(schema).map_err(|e| {
                ToolFailure::new(
                    "invalid_schema",
                    format!("the inline schema is not valid: {e}"),
                )
            })?;
            &inline
        }
        _ => {
            return Err(ToolFailure::new(
                "invalid_schema",
                "schema must be a name or an object",
            ));
        }
    };

    let mut invalid = Vec::new();
    let mut invalid_records = 0usize;
    let mut omitted = 0usize;
    for (index, record) in records.iter().enumerate() {
        let mut record_invalid = false;
        for error in validator.iter_errors(record) {
            record_invalid = true;
            if invalid.len() >= MAX_REPORTED_ERRORS {
                omitted += 1;
                continue;
            }
            let mut field = error.instance_path().as_str().to_owned();
            if let ValidationErrorKind::Required { property } = error.kind() {
                field.push('/');
                field.push_str(property.as_str().unwrap_or_default());
            }
            let reason = truncate(&error.to_string(), 300);
            invalid.push(json!({"index": index, "field": field, "reason": reason}));
        }
        invalid_records += usize::from(record_invalid);
    }
    if invalid_records > 0 {
        let mut details = json!({"invalid": invalid});
        if omitted > 0 {
            details["omitted"] = json!(omitted);
        }
        return Err(ToolFailure::new(
            "validation_failed",
            format!("{invalid_records} of {} records are invalid", records.len()),
        )
        .with_details(details));
    }
    Ok(json!({"valid": true, "count": records.len(), "records": records}))
}

struct ListSchemas(Arc<SchemaRegistry>);

#[tonic::async_trait]
impl Tool for ListSchemas {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_schemas",
            description: "Lists the named record schemas validate_data accepts, with their JSON Schemas.",
            input_schema: object_schema(json!({}), &[]),
        }
    }

    async fn call(&self, _args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let schemas: Vec<Value> = self
            .0
            .schemas
            .iter()
            .map(|(name, s)| json!({"name": name, "builtin": s.builtin, "schema": s.schema}))
            .collect();
        Ok(json!({"schemas": schemas}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> SchemaRegistry {
        SchemaRegistry::load(None).unwrap()
    }

    #[test]
    fn customer_schema_reports_every_bad_field() {
        let args = json!({"schema": "customer", "records": [
            {"id": "1", "name": "Ada", "email": "ada@example.com", "age": 36},
            {"id": "2", "name": "", "email": "not-an-email"},
            {"id": "3", "email": "c@example.com", "age": -1},
        ]});
        let failure = validate_records(&registry(), args).unwrap_err();
        assert_eq!(failure.code, "validation_failed");
        assert_eq!(failure.message, "2 of 3 records are invalid");
        let invalid = failure.details.unwrap()["invalid"]
            .as_array()
            .unwrap()
            .clone();
        let fields: Vec<(u64, &str)> = invalid
            .iter()
            .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
            .collect();
        for expected in [(1, "/name"), (1, "/email"), (2, "/name"), (2, "/age")] {
            assert!(
                fields.contains(&expected),
                "{expected:?} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn inline_schema_and_unknown_name() {
        let ok = validate_records(
            &registry(),
            json!({"schema": {"type": "object", "required": ["x"]}, "records": [{"x": 1}]}),
        )
        .unwrap();
        assert_eq!(ok["count"], 1);
        let failure =
            validate_records(&registry(), json!({"schema": "nope", "records": []})).unwrap_err();
        assert_eq!(failure.code, "unknown_schema");
        assert!(
            failure.message.contains("customer, order"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn schemas_file_adds_and_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"{"ticket": {"type": "object", "required": ["id"]}}"#,
        )
        .unwrap();
        let loaded = SchemaRegistry::load(Some(&good)).unwrap();
        assert_eq!(loaded.names(), ["customer", "order", "ticket"]);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"broken": {"type": 12}}"#).unwrap();
        let error = SchemaRegistry::load(Some(&bad)).err().unwrap().to_string();
        assert!(error.contains("\"broken\""), "{error}");
    }
}
