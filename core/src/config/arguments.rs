//! How large and how deep the JSON a caller sends may be: a call's arguments and a workflow's input
//! (`arguments` in the file), checked on every front before any expensive work.
//!
//! Memory follows size: a parsed `serde_json::Value` takes several times the bytes of its text, and
//! a call holds more than one copy (its record, the text sent to the tool), so one large request
//! could take hundreds of megabytes. These limits bound that; a request past them is refused with a
//! message naming the limit and its value. The text checks ([`ArgumentLimits::check_text`]) read
//! the bytes once without allocating, so a front that has text checks before it parses.

use super::check::Checker;
use super::raw::RawArgumentLimits;
use serde_json::Value;

/// The largest arguments (bytes of JSON), unless configured: 1 MiB.
pub const DEFAULT_MAX_BYTES: usize = 1024 * 1024;
/// The deepest nesting of arrays and objects, unless configured.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// The deepest nesting that can be configured: `serde_json` refuses deeper text anyway (128), and
/// every walk of a value recurses.
const MOST_DEPTH: usize = 128;

/// The checked limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgumentLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for ArgumentLimits {
    fn default() -> Self {
        ArgumentLimits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

impl ArgumentLimits {
    /// Checks JSON text (`what` names it in the message, e.g. `arguments_json`) before it is parsed:
    /// its length, and the nesting of its arrays and objects (strings skipped).
    pub fn check_text(&self, what: &str, text: &str) -> Result<(), String> {
        self.size(what, text.len())?;
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for byte in text.bytes() {
            if in_string {
                match byte {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    self.depth(what, depth)?;
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks a parsed value (for a front whose protocol library parsed it): the length of its JSON
    /// text, counted without writing it, and its nesting.
    pub fn check_value(&self, what: &str, value: &Value) -> Result<(), String> {
        self.nesting(what, value, 1)?;
        let mut counter = Counter {
            bytes: 0,
            limit: self.max_bytes,
        };
        // The counter stops the serialisation with an error once past the limit.
        if serde_json::to_writer(&mut counter, value).is_err() || counter.bytes > self.max_bytes {
            return Err(self.too_large(what, None));
        }
        Ok(())
    }

    fn size(&self, what: &str, bytes: usize) -> Result<(), String> {
        if bytes > self.max_bytes {
            return Err(self.too_large(what, Some(bytes)));
        }
        Ok(())
    }

    /// The refusal of `bytes` of JSON (`None`: counted only up to the limit).
    fn too_large(&self, what: &str, bytes: Option<usize>) -> String {
        let max = self.max_bytes;
        let size = match bytes {
            Some(bytes) => format!("{bytes} bytes of JSON, over the limit of {max}"),
            None => format!("more than the limit of {max} bytes of JSON"),
        };
        format!("{what}: {size} (arguments.max_bytes); send less per call, e.g. in batches")
    }

    fn depth(&self, what: &str, depth: usize) -> Result<(), String> {
        if depth > self.max_depth {
            return Err(format!(
                "{what}: nested deeper than {} levels of arrays and objects (arguments.max_depth)",
                self.max_depth
            ));
        }
        Ok(())
    }

    fn nesting(&self, what: &str, value: &Value, depth: usize) -> Result<(), String> {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => return Ok(()),
        };
        self.depth(what, depth)?;
        for child in children {
            self.nesting(what, child, depth + 1)?;
        }
        Ok(())
    }
}

/// Counts the bytes written to it; refuses to take more once past `limit`.
struct Counter {
    bytes: usize,
    limit: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len();
        if self.bytes > self.limit {
            return Err(std::io::Error::other("past the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn check_argument_limits(c: &mut Checker, raw: &RawArgumentLimits) -> ArgumentLimits {
    let default = ArgumentLimits::default();
    let max_bytes = match raw.max_bytes {
        None => default.max_bytes,
        Some(0) => {
            c.problem("arguments.max_bytes", "must be at least 1");
            default.max_bytes
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let max_depth = match raw.max_depth {
        None => default.max_depth,
        Some(n) if n == 0 || n as usize > MOST_DEPTH => {
            c.problem(
                "arguments.max_depth",
                format!("must be between 1 and {MOST_DEPTH}"),
            );
            default.max_depth
        }
        Some(n) => n as usize,
    };
    ArgumentLimits {
        max_bytes,
        max_depth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn text_and_values_are_checked_alike() {
        let limits = ArgumentLimits {
            max_bytes: 100,
            max_depth: 3,
        };
        let fits = r#"{"a":[{"b":"[[[[{{{{"}]}"#;
        assert!(limits.check_text("x", fits).is_ok());
        let value: Value = serde_json::from_str(fits).expect("json");
        assert!(limits.check_value("x", &value).is_ok());
        for (text, field) in [
            (nested(4), "max_depth"),
            ("\"".to_owned() + &"a".repeat(100) + "\"", "max_bytes"),
        ] {
            let refused = limits.check_text("arguments_json", &text).unwrap_err();
            assert!(refused.contains(&format!("arguments.{field}")), "{refused}");
            let value: Value = serde_json::from_str(&text).expect("json");
            let refused = limits.check_value("arguments", &value).unwrap_err();
            assert!(refused.contains(&format!("arguments.{field}")), "{refused}");
        }
        let refused = limits
            .check_value("arguments", &json!({ "a": "x".repeat(10_000) }))
            .unwrap_err();
        assert!(
            refused.contains("more than the limit of 100 bytes"),
            "{refused}"
        );
        let refused = limits
            .check_text("arguments_json", &"1".repeat(150))
            .unwrap_err();
        assert!(
            refused.contains("150 bytes of JSON, over the limit of 100"),
            "{refused}"
        );
        assert!(limits.check_value("a", &json!([[[1]]])).is_ok());
        assert!(limits.check_value("a", &json!([[[[1]]]])).is_err());
        assert!(limits.check_value("a", &json!("[[[[[")).is_ok());
    }
}
