//! The approval digest: SHA-256 over the RFC 8785 (JCS) canonical form of a call's arguments.
//!
//! One function for everyone who computes or checks what an approval covers — the orchestrator that
//! asks, the approval server that keeps the ledger, and `conductorctl` that shows it — so that key
//! order, whitespace or number spelling can never change what a person approved. It lives in the
//! domain crate, below all three.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex SHA-256 of the JCS canonical text of `arguments`.
pub fn approval_digest(arguments: &Value) -> String {
    // A `Value` always has a canonical form (its numbers are finite and its keys strings), so the
    // fallback is never taken; it keeps the function total instead of panicking.
    let canonical = serde_jcs::to_string(arguments).unwrap_or_else(|_| arguments.to_string());
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// The digest of arguments given as JSON text; `None` when the text is not JSON.
pub fn approval_digest_of_text(arguments_json: &str) -> Option<String> {
    serde_json::from_str::<Value>(arguments_json)
        .ok()
        .map(|v| approval_digest(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
