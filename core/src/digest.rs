//! The approval digest: SHA-256 over the RFC 8785 (JCS) canonical form of a call's arguments, with
//! one exception that keeps it exact: integers are written as their exact decimal.
//!
//! One function for everyone who computes or checks what an approval covers — the orchestrator that
//! asks, the approval server that keeps the ledger, and `conductorctl` that shows it — so that key
//! order, whitespace or number spelling can never change what a person approved. It lives in the
//! domain crate, below all three.
//!
//! JCS writes every number as an IEEE double, so `9007199254740993` and `9007199254740992` would
//! share a digest while the tool receives the digits as sent: an approval shown one amount could
//! release another. Integers up to 2^53, where the double is exact, are written as JCS writes them,
//! so every other digest is the JCS one.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of the canonical text of `arguments`.
pub fn approval_digest(arguments: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(arguments, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The digest of arguments given as JSON text; `None` when the text is not JSON.
pub fn approval_digest_of_text(arguments_json: &str) -> Option<String> {
    serde_json::from_str::<Value>(arguments_json)
        .ok()
        .map(|v| approval_digest(&v))
}

/// JCS (RFC 8785): members sorted by their names' UTF-16 code units, no whitespace, JCS's string
/// escapes and number spelling; integers exact.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<_> = members.iter().collect();
            sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (name, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_jcs_scalar(&Value::String(name.clone()), out);
                out.push(':');
                write_canonical(member, out);
            }
            out.push('}');
        }
        Value::Number(n) if n.is_u64() || n.is_i64() => out.push_str(&n.to_string()),
        scalar => write_jcs_scalar(scalar, out),
    }
}

/// A string, a double, a boolean or null as JCS writes it.
fn write_jcs_scalar(scalar: &Value, out: &mut String) {
    // A scalar `Value` always has a JCS form (its doubles are finite), so the fallback is never
    // taken; it keeps the function total instead of panicking.
    match serde_jcs::to_string(scalar) {
        Ok(text) => out.push_str(&text),
        Err(_) => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn key_order_whitespace_and_number_spelling_do_not_change_the_digest() {
        let a = approval_digest_of_text(r#"{"b":1,"a":{"y":[1,{"d":2.0,"c":3}],"x":null}}"#);
        let b = approval_digest_of_text(
            r#"{ "a": { "x": null, "y": [1, {"c": 3, "d": 2}] }, "b": 1e0 }"#,
        );
        assert_eq!(a, b);
        assert_ne!(a, approval_digest_of_text(r#"{"b":2}"#));
        // RFC 8785's own example of canonical text (parsed from text, as a request's arguments are).
        let example: Value = serde_json::from_str(
            r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001], "literals": [null, true, false]}"#,
        )
        .expect("JSON");
        let text = serde_jcs::to_string(&example).expect("canonical");
        assert_eq!(
            text,
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]}"#
        );
    }

    #[test]
    fn integers_beyond_what_a_double_holds_keep_their_own_digest() {
        let digest = |amount: &str| {
            approval_digest_of_text(&format!(r#"{{"records":[{{"amount":{amount}}}]}}"#))
        };
        assert_ne!(digest("9007199254740993"), digest("9007199254740992"));
        assert_ne!(digest("-9007199254740993"), digest("-9007199254740992"));
        assert_ne!(
            digest("18446744073709551615"),
            digest("18446744073709551616")
        );
        // The same number spelled as a double is the same number.
        assert_eq!(digest("9007199254740992"), digest("9007199254740992.0"));
        assert_eq!(digest("12"), digest("1.2e1"));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        const SAFE: i64 = 1 << 53;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-SAFE..=SAFE).prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            "\\PC{0,8}".prop_map(Value::String),
            "[\\u{0}-\\u{1f}\\u{7f}\\u{e9}\\u{1f600}\\u{fffd}\"\\\\/]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    "\\PC{0,4}|[a\\u{e9}\\u{1f600}\\u{ff61}]{1,3}",
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Within the integers a double holds exactly, the digest is over JCS's own text, so
        /// anyone can recompute it with an RFC 8785 library.
        #[test]
        fn within_exact_integers_the_canonical_text_is_jcs(value in json_value()) {
            let mut ours = String::new();
            write_canonical(&value, &mut ours);
            prop_assert_eq!(ours, serde_jcs::to_string(&value).expect("JCS"));
        }
    }
}
