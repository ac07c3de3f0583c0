//! Argument templates of workflow steps: `${input.x}` and `${steps.NAME.output.y}` references.
//!
//! A string that is exactly one reference is replaced by the referenced JSON value (numbers, objects and
//! arrays keep their type); a reference inside a longer string is replaced by the value's text. Paths are
//! dot-separated; a numeric segment indexes an array. This module is pure: it never runs a step.

use serde_json::{Map, Value};
use std::collections::HashSet;

mod inputs;

pub use inputs::{Input, InputType, check_input, example, json_kind};

/// Checks that every reference in `arguments` is well-formed and names an earlier step.
pub fn check_references(
    arguments: &Value,
    steps_so_far: &HashSet<&str>,
    current: &str,
    declared: Option<&[Input]>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    visit_strings(arguments, &mut |text| {
        for reference in references(text) {
            match parse(reference) {
                Ok(Source::Input(path)) => {
                    if let (Some(declared), Some(field)) = (declared, path.first())
                        && !declared.iter().any(|i| i.name == *field)
                    {
                        problems.push(format!(
                            "${{{reference}}} refers to {field:?}, which is not a declared input (inputs: {})",
                            declared.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
                Ok(Source::Step(name, _)) if name == current => {
                    problems.push(format!("${{{reference}}} refers to the step itself"))
                }
                Ok(Source::Step(name, _)) if !steps_so_far.contains(name) => problems.push(
                    format!("${{{reference}}} refers to {name:?}, which is not an earlier step"),
                ),
                Ok(Source::Step(..)) => {}
                Err(message) => problems.push(message),
            }
        }
    });
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Resolves every reference in `arguments` against the workflow input and earlier steps' outputs.
pub fn resolve(
    arguments: &Value,
    input: &Value,
    outputs: &Map<String, Value>,
) -> Result<Value, String> {
    match arguments {
        Value::String(text) => resolve_string(text, input, outputs),
        Value::Array(items) => items
            .iter()
            .map(|item| resolve(item, input, outputs))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve(v, input, outputs)?)))
            .collect::<Result<Map<_, _>, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

fn resolve_string(
    text: &str,
    input: &Value,
    outputs: &Map<String, Value>,
) -> Result<Value, String> {
    let refs: Vec<&str> = references(text).collect();
    if refs.is_empty() {
        return Ok(Value::String(text.to_owned()));
    }
    if refs.len() == 1 && text.len() == refs[0].len() + 3 {
        return lookup(refs[0], input, outputs).cloned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let reference = &rest[start + 2..start + 2 + len];
        match lookup(reference, input, outputs)? {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

enum Source<'a> {
    Input(Vec<&'a str>),
    Step(&'a str, Vec<&'a str>),
}

fn parse(reference: &str) -> Result<Source<'_>, String> {
    let mut parts = reference.trim().split('.');
    match parts.next() {
        Some("input") => Ok(Source::Input(parts.collect())),
        Some("steps") => {
            let name = parts.next().filter(|n| !n.is_empty());
            match (name, parts.next()) {
                (Some(name), Some("output")) => Ok(Source::Step(name, parts.collect())),
                _ => Err(format!(
                    "${{{reference}}} must look like ${{steps.NAME.output}} or ${{steps.NAME.output.field}}"
                )),
            }
        }
        _ => Err(format!("${{{reference}}} must start with input or steps")),
    }
}

fn lookup<'v>(
    reference: &str,
    input: &'v Value,
    outputs: &'v Map<String, Value>,
) -> Result<&'v Value, String> {
    let (root, path, what) = match parse(reference)? {
        Source::Input(path) => (input, path, "the workflow input".to_owned()),
        Source::Step(name, path) => {
            let output = outputs
                .get(name)
                .ok_or_else(|| format!("${{{reference}}}: step {name:?} has no output yet"))?;
            (output, path, format!("the output of step {name:?}"))
        }
    };
    let mut value = root;
    for segment in path {
        let next = match value {
            Value::Object(fields) => fields.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        value = next.ok_or_else(|| format!("${{{reference}}}: {what} has no field {segment:?}"))?;
    }
    Ok(value)
}

/// The `x` of every `${x}` in a string.
fn references(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let start = rest.find("${")?;
        let len = rest[start + 2..].find('}')?;
        let reference = &rest[start + 2..start + 2 + len];
        rest = &rest[start + 3 + len..];
        Some(reference)
    })
}

fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Value::Object(fields) => fields.values().for_each(|v| visit_strings(v, f)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outputs() -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "validate".into(),
            json!({"records": [{"id": 1}], "count": 1}),
        );
        m
    }

    #[test]
    fn whole_string_reference_keeps_the_type() {
        let args = json!({"records": "${steps.validate.output.records}", "n": "${input.n}"});
        let resolved = resolve(&args, &json!({"n": 7}), &outputs()).unwrap();
        assert_eq!(resolved, json!({"records": [{"id": 1}], "n": 7}));
    }

    #[test]
    fn embedded_reference_becomes_text() {
        let args = json!("onboarded ${steps.validate.output.count} customer(s) for ${input.who}");
        let resolved = resolve(&args, &json!({"who": "ops"}), &outputs()).unwrap();
        assert_eq!(resolved, json!("onboarded 1 customer(s) for ops"));
    }

    #[test]
    fn array_index_and_missing_fields() {
        let args = json!("${steps.validate.output.records.0.id}");
        assert_eq!(resolve(&args, &json!({}), &outputs()).unwrap(), json!(1));
        let err = resolve(&json!("${input.missing}"), &json!({}), &outputs()).unwrap_err();
        assert!(err.contains("no field \"missing\""), "{err}");
        let err = resolve(&json!("${steps.later.output}"), &json!({}), &outputs()).unwrap_err();
        assert!(err.contains("no output yet"), "{err}");
    }

    #[test]
    fn check_rejects_forward_self_and_malformed_references() {
        let seen: HashSet<&str> = ["a", "b"].into_iter().collect();
        assert!(check_references(&json!({"x": "${steps.a.output.y}"}), &seen, "b", None).is_ok());
        assert!(
            check_references(&json!("${steps.b.output}"), &seen, "b", None)
                .unwrap_err()
                .contains("itself")
        );
        assert!(
            check_references(&json!("${steps.c.output}"), &seen, "b", None)
                .unwrap_err()
                .contains("not an earlier")
        );
        assert!(
            check_references(&json!("${nothing}"), &seen, "b", None)
                .unwrap_err()
                .contains("must start")
        );
        assert!(
            check_references(&json!("${steps.a}"), &seen, "b", None)
                .unwrap_err()
                .contains("must look like")
        );
    }
}
