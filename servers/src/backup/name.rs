//! Snapshot-name safety: the one check every path built from a caller's name goes through.
//!
//! It must refuse anything that could name a file outside the backup directory (separators, `..`, NUL,
//! absolute paths) even if the argument schema were loosened.

use std::path::Path;

use crate::error::ToolFailure;

/// The pattern a snapshot name must match (also enforced by the argument schema).
pub(crate) const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$";

/// Refuses any name that could leave the backup directory or is not a plain snapshot name, whatever
/// the argument schema let through.
pub fn check_name(name: &str) -> Result<(), ToolFailure> {
    let unsafe_name = |why: &str| {
        ToolFailure::new(
            "unsafe_name",
            format!("snapshot name {name:?} is refused: {why}"),
        )
    };
    if name.is_empty() || name.len() > 128 {
        return Err(unsafe_name("it must be 1 to 128 characters long"));
    }
    if name.contains(['/', '\\', '\0']) || Path::new(name).is_absolute() {
        return Err(unsafe_name("it must not contain '/', '\\' or NUL"));
    }
    if name.contains("..") {
        return Err(unsafe_name("it must not contain \"..\""));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok {
        return Err(unsafe_name(&format!("it must match {NAME_PATTERN}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for name in ["snap-1", "a.b_c", "X", &"a".repeat(128)] {
            assert!(check_name(name).is_ok(), "{name}");
        }
        let refused = [
            "",
            "..",
            "../x",
            "a/../b",
            "a..b",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "a\0b",
            ".hidden",
            "-x",
            "a b",
            "é",
        ];
        for name in refused
            .into_iter()
            .map(str::to_owned)
            .chain(["a".repeat(129)])
        {
            let failure = check_name(&name).unwrap_err();
            assert_eq!(failure.code, "unsafe_name", "{name:?}");
        }
    }
}
