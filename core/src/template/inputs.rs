//! A template's declared inputs: what a run's input must hold, checked before anything runs, so
//! that a missing or mistyped field is refused at the start with an example, not found at step
//! three.

use serde_json::{Map, Value, json};

/// The JSON type an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputType {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
}

impl InputType {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "string" => InputType::String,
            "number" => InputType::Number,
            "integer" => InputType::Integer,
            "boolean" => InputType::Boolean,
            "array" => InputType::Array,
            "object" => InputType::Object,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Integer => "integer",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
            InputType::Object => "object",
        }
    }

    pub fn accepts(self, value: &Value) -> bool {
        match self {
            InputType::String => value.is_string(),
            InputType::Number => value.is_number(),
            InputType::Integer => value.is_i64() || value.is_u64(),
            InputType::Boolean => value.is_boolean(),
            InputType::Array => value.is_array(),
            InputType::Object => value.is_object(),
        }
    }

    /// A value of this type to show in an example when the template gives none.
    fn placeholder(self) -> Value {
        match self {
            InputType::String => json!("..."),
            InputType::Number | InputType::Integer => json!(0),
            InputType::Boolean => json!(false),
            InputType::Array => json!([]),
            InputType::Object => json!({}),
        }
    }
}

/// One declared input.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    pub kind: InputType,
    pub description: String,
    /// Filled in when the input leaves the field out.
    pub default: Option<Value>,
    /// A run may leave it out (it has a default, or is declared optional).
    pub required: bool,
    pub example: Option<Value>,
}

/// Checks a run's input against the declared inputs and fills in defaults. With no inputs
/// declared, any object passes unchanged. Every problem is reported at once.
pub fn check_input(declared: &[Input], input: &Value) -> Result<Value, Vec<String>> {
    if declared.is_empty() {
        return Ok(input.clone());
    }
    let given = match input {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(vec![format!(
                "the input must be a JSON object, not {}",
                json_kind(other)
            )]);
        }
    };
    let mut problems = Vec::new();
    let mut out = given.clone();
    for input in declared {
        match given.get(&input.name) {
            Some(value) if !input.kind.accepts(value) => problems.push(format!(
                "input {:?} must be {} {}, not {}",
                input.name,
                article(input.kind),
                input.kind.as_str(),
                json_kind(value)
            )),
            Some(_) => {}
            None => match &input.default {
                Some(default) => {
                    out.insert(input.name.clone(), default.clone());
                }
                None if input.required => problems.push(format!(
                    "input {:?} ({}) is missing{}",
                    input.name,
                    input.kind.as_str(),
                    if input.description.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", input.description)
                    }
                )),
                None => {}
            },
        }
    }
    for name in given.keys() {
        if !declared.iter().any(|i| &i.name == name) {
            problems.push(format!(
                "input {name:?} is not one of the template's inputs ({})",
                declared
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(problems)
    }
}

/// An input that passes: each field's example, default or a placeholder of its type.
pub fn example(declared: &[Input]) -> Value {
    Value::Object(
        declared
            .iter()
            .filter(|i| i.required || i.example.is_some())
            .map(|i| {
                let value = i
                    .example
                    .clone()
                    .or_else(|| i.default.clone())
                    .unwrap_or_else(|| i.kind.placeholder());
                (i.name.clone(), value)
            })
            .collect(),
    )
}

fn article(kind: InputType) -> &'static str {
    match kind {
        InputType::Integer | InputType::Array | InputType::Object => "an",
        _ => "a",
    }
}

/// "a string", "an array", "null": a JSON value's kind, for messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<Input> {
        vec![
            Input {
                name: "customers".into(),
                kind: InputType::Array,
                description: "the records to onboard".into(),
                default: None,
                required: true,
                example: Some(json!([{"id": "c-1"}])),
            },
            Input {
                name: "batch".into(),
                kind: InputType::String,
                description: String::new(),
                default: Some(json!("manual")),
                required: false,
                example: None,
            },
        ]
    }

    #[test]
    fn defaults_fill_in_and_a_good_input_passes() {
        let checked = check_input(&declared(), &json!({"customers": []})).unwrap();
        assert_eq!(checked, json!({"customers": [], "batch": "manual"}));
    }

    #[test]
    fn missing_mistyped_and_unknown_fields_are_all_reported() {
        let problems = check_input(&declared(), &json!({"batch": 3, "custmers": []})).unwrap_err();
        assert_eq!(
            problems,
            [
                "input \"customers\" (array) is missing: the records to onboard",
                "input \"batch\" must be a string, not a number",
                "input \"custmers\" is not one of the template's inputs (customers, batch)",
            ]
        );
        assert_eq!(
            check_input(&declared(), &json!([1])).unwrap_err(),
            ["the input must be a JSON object, not an array"]
        );
    }

    #[test]
    fn the_example_passes_the_check() {
        let example = example(&declared());
        assert_eq!(example, json!({"customers": [{"id": "c-1"}]}));
        assert!(check_input(&declared(), &example).is_ok());
        assert_eq!(check_input(&[], &json!({"x": 1})).unwrap(), json!({"x": 1}));
    }
}
