//! Named orchestrator contexts, as kubectl has: a small JSON file maps names to an address and a token
//! file, so `conductorctl --context prod status` needs neither flag nor secret on the command line.
//!
//! The file is `$CONDUCTORCTL_CONFIG`, else `$XDG_CONFIG_HOME/conductorctl/config.json`, else
//! `~/.config/conductorctl/config.json`; it is optional. Flags and environment variables always win over
//! the context. A token is read from its file, never stored in the contexts file.
//!
//! ```json
//! {"current_context": "local",
//!  "contexts": {"local": {"orchestrator": "127.0.0.1:50051", "token_file": "~/.conductor/token"},
//!               "prod": {"orchestrator": "https://conductor.internal:50051", "ca_file": "~/.conductor/ca.pem",
//!                        "cert_file": "~/.conductor/me.pem", "key_file": "~/.conductor/me.key"}}}
//! ```

use crate::cli::Global;
use crate::client::CliError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where conductorctl looks when neither a flag, the environment nor a context names an orchestrator.
pub const DEFAULT_ORCHESTRATOR: &str = "http://127.0.0.1:50051";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextsFile {
    #[serde(default)]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
    /// Where the file was read from, for messages.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub orchestrator: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// TLS: the CA bundle the orchestrator's certificate chains to, and a client certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The contexts file's path, if the environment gives one.
pub fn contexts_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CONDUCTORCTL_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))?;
    Some(base.join("conductorctl").join("config.json"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Reads the contexts file; a missing file is an empty one, a malformed one an error naming it.
pub fn load(path: &Path) -> Result<ContextsFile, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(|file| ContextsFile {
                path: path.to_owned(),
                ..file
            })
            .map_err(|e| {
                CliError::Failed(format!(
                    "the contexts file {} is not valid: {e}",
                    path.display()
                ))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ContextsFile {
            path: path.to_owned(),
            ..ContextsFile::default()
        }),
        Err(e) => Err(CliError::Failed(format!(
            "cannot read the contexts file {}: {e}",
            path.display()
        ))),
    }
}

/// Fills the address and token a command uses: flags and environment first, then the context named
/// by `--context` (which must exist) or the file's current one, then the defaults.
pub fn resolve(mut global: Global, file: &ContextsFile) -> Result<Global, CliError> {
    let named = global.context.clone();
    let chosen = match named.or_else(|| file.current_context.clone()) {
        None => None,
        Some(name) => match file.contexts.get(&name) {
            Some(context) => Some(context),
            None => {
                let known: Vec<&str> = file.contexts.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                let path = file.path.display();
                // A name on the command line is a usage error (exit 2); a stale current_context is
                // the file's, and using the default address instead would talk to the wrong place.
                return Err(if global.context.is_some() {
                    CliError::Usage(format!(
                        "no context {name:?} in the contexts file {path}; the contexts are: {known}\n  list them with `conductorctl config get-contexts`"
                    ))
                } else {
                    CliError::Failed(format!(
                        "the contexts file {path} names current_context {name:?}, which is not one of its contexts ({known})\n  choose one with `conductorctl config use-context NAME`, or pass --context NAME"
                    ))
                });
            }
        },
    };
    if let Some(context) = chosen {
        if global.orchestrator.is_none() {
            global.orchestrator = Some(context.orchestrator.clone());
        }
        let tls = &mut global.tls;
        if tls.ca_file.is_none() && tls.cert.is_none() && tls.key.is_none() {
            tls.ca_file = context.ca_file.as_deref().map(expand_home);
            tls.cert = context.cert_file.as_deref().map(expand_home);
            tls.key = context.key_file.as_deref().map(expand_home);
        }
        if global.token.is_none()
            && let Some(file) = &context.token_file
        {
            let path = expand_home(file);
            let token = std::fs::read_to_string(&path).map_err(|e| {
                CliError::Failed(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            global.token = Some(token.trim().to_owned());
        }
    }
    Ok(global)
}

/// The settings of this invocation, with the contexts file (if any) applied.
pub fn apply(global: Global) -> Result<Global, CliError> {
    let file = match contexts_path() {
        Some(path) => load(&path)?,
        None => ContextsFile::default(),
    };
    resolve(global, &file)
}

/// The contexts file's path, or why there is none.
fn required_path() -> Result<PathBuf, CliError> {
    contexts_path().ok_or_else(|| {
        CliError::Failed(
            "no contexts file: neither CONDUCTORCTL_CONFIG, XDG_CONFIG_HOME nor HOME is set\n  set CONDUCTORCTL_CONFIG to the file's path".into(),
        )
    })
}

/// `config get-contexts`: every context of the file, the current one marked, as kubectl lists them.
pub fn get_contexts(global: &Global) -> Result<(), CliError> {
    let out = crate::output::Out::new(global);
    let path = required_path()?;
    let file = load(&path)?;
    if out.json {
        crate::output::print_json(&serde_json::json!({
            "file": path.display().to_string(),
            "current_context": file.current_context,
            "contexts": file.contexts.iter().map(|(name, c)| serde_json::json!({
                "name": name, "orchestrator": c.orchestrator,
                "token_file": c.token_file.as_ref().map(|p| p.display().to_string()),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    if file.contexts.is_empty() {
        outln!(
            "no contexts in {}; add one, e.g.\n  {{\"current_context\": \"local\", \"contexts\": {{\"local\": {{\"orchestrator\": \"127.0.0.1:50051\"}}}}}}",
            path.display()
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = file
        .contexts
        .iter()
        .map(|(name, c)| {
            let current = file.current_context.as_deref() == Some(name.as_str());
            vec![
                if current { "*" } else { "" }.to_owned(),
                name.clone(),
                c.orchestrator.clone(),
                c.token_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    outln!(
        "{}",
        crate::output::table(
            &out,
            &["CURRENT", "NAME", "ORCHESTRATOR", "TOKEN FILE"],
            &rows
        )
    );
    Ok(())
}

/// `config use-context NAME`: makes NAME the file's current context, keeping the rest of the file.
pub fn use_context(name: &str) -> Result<(), CliError> {
    let path = required_path()?;
    let file = load(&path)?;
    if !file.contexts.contains_key(name) {
        let known: Vec<&str> = file.contexts.keys().map(String::as_str).collect();
        return Err(CliError::Usage(format!(
            "no context {name:?} in the contexts file {}; the contexts are: {}",
            path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Failed(format!("{} is not valid: {e}", path.display())))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("current_context".into(), name.into());
    }
    let text = serde_json::to_string_pretty(&value).unwrap_or_default() + "\n";
    std::fs::write(&path, text)
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
    outln!("current context is now {name:?} ({})", path.display());
    Ok(())
}

fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), home()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::ColorChoice;

    fn global(orchestrator: Option<&str>, context: Option<&str>) -> Global {
        Global {
            orchestrator: orchestrator.map(str::to_owned),
            context: context.map(str::to_owned),
            token: None,
            token_file: None,
            tls: Default::default(),
            json: false,
            color: ColorChoice::Never,
        }
    }

    fn file(token_file: Option<PathBuf>) -> ContextsFile {
        serde_json::from_value::<ContextsFile>(serde_json::json!({
            "current_context": "local",
            "contexts": {
                "local": {"orchestrator": "127.0.0.1:50051"},
                "prod": {"orchestrator": "conductor.internal:50051", "token_file": token_file},
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_context_fills_what_flags_leave_open() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let contexts = file(Some(token));

        let current = resolve(global(None, None), &contexts).unwrap();
        assert_eq!(current.orchestrator.as_deref(), Some("127.0.0.1:50051"));

        let prod = resolve(global(None, Some("prod")), &contexts).unwrap();
        assert_eq!(
            prod.orchestrator.as_deref(),
            Some("conductor.internal:50051")
        );
        assert_eq!(prod.token.as_deref(), Some("s3cret"));

        let flag = resolve(global(Some("10.0.0.1:1"), Some("prod")), &contexts).unwrap();
        assert_eq!(
            flag.orchestrator.as_deref(),
            Some("10.0.0.1:1"),
            "the flag wins"
        );

        let unknown = resolve(global(None, Some("staging")), &contexts).unwrap_err();
        assert!(unknown.to_string().contains("local, prod"), "{unknown}");
        assert!(
            matches!(unknown, CliError::Usage(_)),
            "--context nope is a usage error (exit 2): {unknown:?}"
        );

        let none = resolve(global(None, None), &ContextsFile::default()).unwrap();
        assert_eq!(none.orchestrator, None);
    }

    /// Issue 25 item 3: a current_context naming no context silently used the default address.
    #[test]
    fn a_current_context_that_names_no_context_is_an_error() {
        let mut contexts = file(None);
        contexts.current_context = Some("gone".into());
        let error = resolve(global(None, None), &contexts).unwrap_err();
        assert!(matches!(error, CliError::Failed(_)), "{error:?}");
        let text = error.to_string();
        assert!(
            text.contains("\"gone\"")
                && text.contains("local, prod")
                && text.contains("use-context"),
            "{text}"
        );
        // --context names one that exists: the stale current one does not matter.
        assert!(resolve(global(None, Some("local")), &contexts).is_ok());
    }

    #[test]
    fn a_malformed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"contexts": {"x": {"address": "y"}}}"#).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(
            error.contains("config.json") && error.contains("address"),
            "{error}"
        );
        assert!(load(&dir.path().join("missing.json")).is_ok());
    }
}
