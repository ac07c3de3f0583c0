//! The processing server: normalises, de-duplicates and aggregates batches of records.
//!
//! Owns the pure transformation [`process`]: same input, same output, byte for byte (groups sorted by
//! key, first occurrence kept). It does no I/O. A record that cannot be processed as asked (not an
//! object, missing the field to de-duplicate or group by) is the tool's `malformed_input` failure,
//! naming the record's index and the field.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::canonical;
use crate::error::ToolFailure;
use crate::tool::{CallContext, Tool, ToolSpec, object_schema};

/// What `process_data` should do to the records, as given in its arguments.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessOptions {
    #[serde(default = "yes")]
    pub normalize: bool,
    #[serde(default)]
    pub dedupe_by: Option<String>,
    #[serde(default)]
    pub aggregate: Option<Aggregation>,
}

fn yes() -> bool {
    true
}

/// Group the records by one field and total some numeric fields per group.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregation {
    pub group_by: String,
    #[serde(default)]
    pub sum: Vec<String>,
}

/// The processing server's tools.
pub fn tools() -> Vec<Box<dyn Tool>> {
    vec![Box::new(ProcessData)]
}

struct ProcessData;

#[tonic::async_trait]
impl Tool for ProcessData {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "process_data",
            description: "Transforms records: normalises strings (trim, collapse inner whitespace, lower-case \
                email fields), drops later duplicates by a field, and optionally totals numeric fields per \
                group. Fails with malformed_input if a record is not an object or lacks a needed field.",
            input_schema: object_schema(
                json!({
                    "records": {"type": "array", "description": "The records (JSON objects) to process."},
                    "normalize": {"type": "boolean", "default": true},
                    "dedupe_by": {"type": "string", "minLength": 1, "description": "Keep only the first record per value of this field."},
                    "aggregate": {
                        "type": "object",
                        "properties": {
                            "group_by": {"type": "string", "minLength": 1},
                            "sum": {"type": "array", "items": {"type": "string", "minLength": 1}}
                        },
                        "required": ["group_by"],
                        "additionalProperties": false
                    }
                }),
                &["records"],
            ),
        }
    }

    async fn call(&self, mut args: Value, _ctx: &CallContext) -> Result<Value, ToolFailure> {
        let records = match args.as_object_mut().and_then(|map| map.remove("records")) {
            Some(Value::Array(records)) => records,
            _ => {
                return Err(ToolFailure::new(
                    "malformed_input",
                    "records must be an array",
                ));
            }
        };
        let options: ProcessOptions = serde_json::from_value(args)
            .map_err(|e| ToolFailure::new("malformed_input", format!("bad options: {e}")))?;
        tokio::task::spawn_blocking(move || process(records, &options))
            .await
            .map_err(|e| ToolFailure::new("internal", format!("processing task failed: {e}")))?
    }
}

/// Runs the whole transformation and builds the tool's result.
pub fn process(records: Vec<Value>, options: &ProcessOptions) -> Result<Value, ToolFailure> {
    let mut objects = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        match record {
            Value::Object(mut map) => {
                if options.normalize {
                    normalize_object(&mut map);
                }
                objects.push((index, map));
            }
            other => {
                return Err(malformed(
                    index,
                    None,
                    &format!(
                        "is {}, not an object",
                        conductor_core::template::json_kind(&other)
                    ),
                ));
            }
        }
    }
    let before = objects.len();
    if let Some(field) = &options.dedupe_by {
        objects = dedupe(objects, field)?;
    }
    let duplicates_removed = before - objects.len();
    let mut result = json!({
        "count": objects.len(),
        "duplicates_removed": duplicates_removed,
    });
    if let Some(aggregation) = &options.aggregate {
        result["aggregates"] = aggregate(&objects, aggregation)?;
    }
    result["records"] = Value::Array(objects.into_iter().map(|(_, r)| Value::Object(r)).collect());
    Ok(result)
}

/// Normalises every string in the record, nested ones included.
pub fn normalize_object(map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        normalize_value(value, key.eq_ignore_ascii_case("email"));
    }
}

fn normalize_value(value: &mut Value, is_email: bool) {
    match value {
        Value::String(text) => *text = normalize_text(text, is_email),
        Value::Array(items) => items.iter_mut().for_each(|v| normalize_value(v, is_email)),
        Value::Object(map) => normalize_object(map),
        _ => {}
    }
}

/// Trims, collapses runs of whitespace to one space, and lower-cases e-mail addresses.
pub fn normalize_text(text: &str, lowercase: bool) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if lowercase {
        collapsed.to_lowercase()
    } else {
        collapsed
    }
}

/// A record with its index in the caller's batch, so failures name the index the caller sent.
pub type IndexedRecord = (usize, Map<String, Value>);

/// Keeps the first record for each value of `field` (values compared as canonical JSON).
pub fn dedupe(records: Vec<IndexedRecord>, field: &str) -> Result<Vec<IndexedRecord>, ToolFailure> {
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(records.len());
    for (index, record) in records {
        let value = record
            .get(field)
            .ok_or_else(|| malformed(index, Some(field), "is missing (needed by dedupe_by)"))?;
        if seen.insert(canonical::to_string(value)) {
            kept.push((index, record));
        }
    }
    Ok(kept)
}

/// A running total that stays an exact integer until a fraction or an overflow forces a float.
#[derive(Clone, Copy, Debug)]
enum Total {
    Int(i64),
    Float(f64),
}

impl Total {
    fn add(self, number: &serde_json::Number) -> Total {
        match (self, number.as_i64()) {
            (Total::Int(sum), Some(n)) => match sum.checked_add(n) {
                Some(total) => Total::Int(total),
                None => Total::Float(sum as f64 + n as f64),
            },
            (Total::Int(sum), None) => Total::Float(sum as f64 + number.as_f64().unwrap_or(0.0)),
            (Total::Float(sum), _) => Total::Float(sum + number.as_f64().unwrap_or(0.0)),
        }
    }

    fn to_json(self) -> Value {
        match self {
            Total::Int(n) => json!(n),
            Total::Float(f) => json!(f),
        }
    }
}

struct Group<'a> {
    key: &'a Value,
    count: usize,
    totals: Vec<Total>,
}

/// Counts records per value of `group_by` and totals the `sum` fields (a missing or null field adds
/// nothing; any other non-number is malformed). Groups are sorted by their key's text.
pub fn aggregate(
    records: &[IndexedRecord],
    aggregation: &Aggregation,
) -> Result<Value, ToolFailure> {
    let group_by = aggregation.group_by.as_str();
    let mut groups: BTreeMap<String, Group<'_>> = BTreeMap::new();
    for (index, record) in records {
        let index = *index;
        let key = record
            .get(group_by)
            .ok_or_else(|| malformed(index, Some(group_by), "is missing (needed by group_by)"))?;
        let key_text = match key {
            Value::String(text) => text.clone(),
            other => canonical::to_string(other),
        };
        let group = groups.entry(key_text).or_insert_with(|| Group {
            key,
            count: 0,
            totals: vec![Total::Int(0); aggregation.sum.len()],
        });
        group.count += 1;
        for (slot, field) in aggregation.sum.iter().enumerate() {
            match record.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::Number(number)) => group.totals[slot] = group.totals[slot].add(number),
                Some(other) => {
                    let reason = format!(
                        "is {}, not a number (needed by sum)",
                        conductor_core::template::json_kind(other)
                    );
                    return Err(malformed(index, Some(field), &reason));
                }
            }
        }
    }
    let groups: Vec<Value> = groups
        .values()
        .map(|group| {
            let sums: Map<String, Value> = aggregation
                .sum
                .iter()
                .zip(&group.totals)
                .map(|(field, total)| (field.clone(), total.to_json()))
                .collect();
            json!({"key": group.key, "count": group.count, "sum": sums})
        })
        .collect();
    Ok(json!({"group_by": group_by, "groups": groups}))
}

fn malformed(index: usize, field: Option<&str>, problem: &str) -> ToolFailure {
    let message = match field {
        Some(field) => format!("record {index}: field \"{field}\" {problem}"),
        None => format!("record {index} {problem}"),
    };
    ToolFailure::new("malformed_input", message)
        .with_details(json!({"index": index, "field": field}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(value: Value) -> ProcessOptions {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn normalisation_trims_collapses_and_lowercases_email_only() {
        assert_eq!(
            normalize_text("  Ada   \t Lovelace \n", false),
            "Ada Lovelace"
        );
        assert_eq!(normalize_text(" Ada@Example.COM ", true), "ada@example.com");
        let mut record = json!({"email": " X@Y.Z ", "name": " A  B ", "tags": [" T  1 "], "n": 1});
        normalize_object(record.as_object_mut().unwrap());
        assert_eq!(
            record,
            json!({"email": "x@y.z", "name": "A B", "tags": ["T 1"], "n": 1})
        );
    }

    #[test]
    fn dedupe_keeps_first_and_aggregate_totals_per_group() {
        let records = vec![
            json!({"email": "A@x.io", "country": "uk", "amount": 10, "fee": 0.5}),
            json!({"email": " a@x.io", "country": "uk", "amount": 99}),
            json!({"email": "b@x.io", "country": "fr", "amount": 5, "fee": null}),
            json!({"email": "c@x.io", "country": "uk", "amount": 2.5}),
        ];
        let out = process(
            records,
            &options(json!({"dedupe_by": "email", "aggregate": {"group_by": "country", "sum": ["amount", "fee"]}})),
        )
        .unwrap();
        assert_eq!(out["count"], 3);
        assert_eq!(out["duplicates_removed"], 1);
        assert_eq!(out["records"][0]["amount"], 10);
        assert_eq!(
            out["aggregates"],
            json!({"group_by": "country", "groups": [
                {"key": "fr", "count": 1, "sum": {"amount": 5, "fee": 0}},
                {"key": "uk", "count": 2, "sum": {"amount": 12.5, "fee": 0.5}},
            ]})
        );
    }

    #[test]
    fn malformed_records_name_index_and_field() {
        let failure = process(vec![json!({}), json!(3)], &options(json!({}))).unwrap_err();
        assert_eq!(failure.code, "malformed_input");
        assert_eq!(failure.message, "record 1 is a number, not an object");
        let failure = process(
            vec![json!({"id": 1}), json!({"name": "x"})],
            &options(json!({"dedupe_by": "id"})),
        )
        .unwrap_err();
        assert_eq!(
            failure.message,
            "record 1: field \"id\" is missing (needed by dedupe_by)"
        );
        let failure = process(
            vec![
                json!({"g": 1, "n": 1}),
                json!({"g": 1, "n": 1}),
                json!({"g": 1, "n": "x"}),
            ],
            &options(json!({"dedupe_by": "n", "aggregate": {"group_by": "g", "sum": ["n"]}})),
        )
        .unwrap_err();
        assert!(
            failure
                .message
                .starts_with("record 2: field \"n\" is a string"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn integer_totals_fall_back_to_float_on_overflow() {
        let records = vec![
            (
                0,
                json!({"g": "a", "n": i64::MAX})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            (1, json!({"g": "a", "n": 1}).as_object().unwrap().clone()),
        ];
        let out = aggregate(
            &records,
            &Aggregation {
                group_by: "g".into(),
                sum: vec!["n".into()],
            },
        )
        .unwrap();
        assert!(out["groups"][0]["sum"]["n"].is_f64());
    }
}
