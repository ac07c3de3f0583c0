//! Turns the raw configuration into a checked [`Config`], collecting every problem with its JSON path.
//!
//! Checks: well-formed entries (via serde, with the path of the field), names that resolve (servers,
//! tools, templates), no duplicate names, no dependency cycles, and templates whose steps, run in order
//! and all succeeding, would not be denied by an ordering rule. It never stops at the first problem.

use super::raw::{RawClient, RawConfig, RawServer};
use super::rules::{check_cycles, check_rules};
use super::templates::check_templates;
use super::{
    AuditSettings, ClientConfig, Config, ListenSettings, McpSettings, RouteKind, ServerConfig,
    ToolRoute, Transport, parse_duration,
};
use crate::policy::{AllowList, Name};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

pub(super) const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One thing wrong with a configuration, at a JSON path such as `rules[2].after[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

pub(super) fn parse(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => "$".to_owned(),
            p => p,
        };
        ConfigError::Invalid {
            problems: vec![Problem {
                path,
                message: e.inner().to_string(),
            }],
        }
    })
}

/// Collects problems while building the checked configuration.
#[derive(Default)]
pub(super) struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    /// Whether a problem was found at `prefix` or under it (e.g. `rules`).
    pub(super) fn has_problem_under(&self, prefix: &str) -> bool {
        self.problems.iter().any(|p| p.path.starts_with(prefix))
    }

    pub(super) fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(
        &mut self,
        path: String,
        text: Option<&str>,
        default: Duration,
    ) -> Duration {
        match text.map(parse_duration) {
            None => default,
            Some(Ok(d)) if d.is_zero() => {
                self.problem(path, "must be longer than zero");
                default
            }
            Some(Ok(d)) => d,
            Some(Err(message)) => {
                self.problem(path, message);
                default
            }
        }
    }

    /// Resolves a tool name used at `path`; reports it when no server offers it.
    pub(super) fn tool(
        &mut self,
        tools: &BTreeMap<Name, ToolRoute>,
        path: String,
        name: &str,
    ) -> Option<Name> {
        match tools.get_key_value(name) {
            Some((key, _)) => Some(key.clone()),
            None => {
                let known = tools
                    .keys()
                    .map(|k| k.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.problem(
                    path,
                    format!("unknown tool {name:?}; the configured tools are: {known}"),
                );
                None
            }
        }
    }
}

pub(super) fn check(raw: RawConfig, version: String) -> Result<Config, ConfigError> {
    let mut c = Checker::default();
    let (servers, tools) = check_servers(&mut c, &raw.servers);
    if let Some(ledger) = &raw.approval_ledger {
        match servers.get(ledger) {
            None => c.problem("approval_ledger", format!("unknown server {ledger:?}")),
            Some(s) if !matches!(s.transport, Transport::Grpc { .. }) => c.problem(
                "approval_ledger",
                format!("server {ledger:?} must be a gRPC server"),
            ),
            Some(_) => {}
        }
    }
    let approval_timeout = c.duration(
        "control.approval_timeout".into(),
        raw.control.approval_timeout.as_deref(),
        DEFAULT_APPROVAL_TIMEOUT,
    );
    let labels = super::labels::check_labels(&mut c, &raw, &tools);
    let (mut policies, rules) = check_rules(
        &mut c,
        &raw.rules,
        &tools,
        approval_timeout,
        &labels.known(),
    );
    labels.apply(&mut policies);
    check_cycles(&mut c, &policies, &tools);
    let templates = check_templates(&mut c, &raw, &tools, &policies, approval_timeout);
    let control_token = super::auth::secret(
        &mut c,
        "control",
        raw.control.token.as_ref(),
        raw.control.token_env.as_ref(),
        raw.control.token_file.as_ref(),
    );
    let listen = ListenSettings {
        grpc: parse_addr(&mut c, "listen.grpc", raw.listen.grpc.as_deref()),
        http: parse_addr(&mut c, "listen.http", raw.listen.http.as_deref()),
        http_limits: super::listener::check_http_limits(&mut c, &raw.listen.http_limits),
        tls: super::tls::check_listen_tls(
            &mut c,
            raw.listen.tls.as_ref(),
            raw.listen.tls_terminated_in_front,
        ),
        tls_terminated_in_front: raw.listen.tls_terminated_in_front,
    };
    let clients = check_clients(&mut c, &raw.clients, &tools, control_token.as_ref());
    super::tls::check_tls_subjects(&mut c, &clients, listen.tls.as_ref());
    let auth = super::auth::check_auth(&mut c, &raw.auth, &clients, control_token.is_some());
    super::credentials::check_exchange_has_jwts(&mut c, &servers, auth.jwt.is_some());
    let arguments = super::arguments::check_argument_limits(&mut c, &raw.arguments);
    if raw.audit.max_file_bytes == Some(0) {
        c.problem("audit.max_file_bytes", "must be greater than zero");
    }
    let session_idle_timeout = c.duration(
        "mcp.session_idle_timeout".into(),
        raw.mcp.session_idle_timeout.as_deref(),
        super::DEFAULT_SESSION_IDLE,
    );
    let ad_hoc_idle_timeout = c.duration(
        "workflows.idle_timeout".into(),
        raw.workflows.idle_timeout.as_deref(),
        super::DEFAULT_AD_HOC_IDLE,
    );
    let calls_in_memory = check_calls_in_memory(&mut c, raw.workflows.calls_in_memory);
    let session_free_workflow = match raw.mcp.session_free_workflow.as_deref() {
        None | Some("identity") => super::SessionFreeWorkflow::Identity,
        Some("per_call") => super::SessionFreeWorkflow::PerCall,
        Some(other) => {
            c.problem(
                "mcp.session_free_workflow",
                format!(
                    "{other:?} is not a choice: use \"identity\" (the default) or \"per_call\""
                ),
            );
            super::SessionFreeWorkflow::Identity
        }
    };
    let flow_scope = match raw.flow_scope.follow.as_deref() {
        None | Some("context") => {
            if raw.flow_scope.window.is_some() {
                c.problem(
                    "flow_scope.window",
                    "a window applies only with \"follow\": \"caller\"",
                );
            }
            super::FlowScope::Context
        }
        Some("caller") => super::FlowScope::Caller {
            window: c.duration(
                "flow_scope.window".into(),
                raw.flow_scope.window.as_deref(),
                super::DEFAULT_FLOW_WINDOW,
            ),
        },
        Some(other) => {
            c.problem(
                "flow_scope.follow",
                format!("{other:?} is not a choice: use \"context\" (the default) or \"caller\""),
            );
            super::FlowScope::Context
        }
    };
    let store = super::store::check_store(&mut c, &raw.store);
    let telemetry = super::telemetry::check_telemetry(&mut c, &raw.telemetry);
    if !c.problems.is_empty() {
        return Err(ConfigError::Invalid {
            problems: c.problems,
        });
    }
    Ok(Config {
        version,
        servers,
        tools,
        policies,
        rules,
        templates,
        approval_ledger: raw.approval_ledger,
        control_token,
        approval_timeout,
        audit: AuditSettings {
            dir: raw.audit.dir.map(Into::into),
            max_file_bytes: raw.audit.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES),
        },
        listen,
        mcp: McpSettings {
            allowed_origins: raw.mcp.allowed_origins,
            allowed_hosts: raw.mcp.allowed_hosts,
            session_idle_timeout,
            session_free_workflow,
        },
        clients,
        auth,
        ad_hoc_idle_timeout,
        calls_in_memory,
        annotation_labels: labels.annotations,
        flow_scope,
        arguments,
        store,
        telemetry,
    })
}

/// `workflows.calls_in_memory`: at least one call (a workflow's latest is what its views show
/// first); the default when absent.
fn check_calls_in_memory(c: &mut Checker, raw: Option<u64>) -> usize {
    match raw {
        None => crate::workflow::DEFAULT_CALLS_IN_MEMORY,
        Some(0) => {
            c.problem(
                "workflows.calls_in_memory",
                "must be at least 1: it is how many of a workflow's most recent calls stay in memory (older ones are read from the audit log)",
            );
            crate::workflow::DEFAULT_CALLS_IN_MEMORY
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
    }
}

fn parse_addr(c: &mut Checker, path: &str, text: Option<&str>) -> Option<std::net::SocketAddr> {
    let text = text?;
    match text.parse() {
        Ok(addr) => Some(addr),
        Err(e) => {
            c.problem(
                path,
                format!("{text:?} is not an address like 127.0.0.1:50051 ({e})"),
            );
            None
        }
    }
}

fn check_servers(
    c: &mut Checker,
    raw: &BTreeMap<String, RawServer>,
) -> (BTreeMap<String, ServerConfig>, BTreeMap<Name, ToolRoute>) {
    let mut servers = BTreeMap::new();
    let mut tools: BTreeMap<Name, ToolRoute> = BTreeMap::new();
    if raw.is_empty() {
        c.problem("servers", "at least one server is needed");
    }
    for (name, server) in raw {
        let path = format!("servers.{name}");
        if !valid_name(name) {
            c.problem(
                &path,
                "a server name uses letters, digits, '_' and '-' only",
            );
        }
        let transport = match (&server.grpc, &server.mcp_stdio, &server.mcp_url) {
            (Some(url), None, None) => Transport::Grpc { url: url.clone() },
            (None, Some(stdio), None) => Transport::McpStdio {
                command: stdio.command.clone(),
                args: stdio.args.clone(),
                env: stdio.env.clone(),
            },
            (None, None, Some(url)) => Transport::McpHttp { url: url.clone() },
            _ => {
                c.problem(&path, "give exactly one of grpc, mcp_stdio or mcp_url");
                continue;
            }
        };
        if let Transport::Grpc { url } | Transport::McpHttp { url } = &transport
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            c.problem(
                format!("{path}.url"),
                format!("{url:?} must start with http:// or https://"),
            );
        }
        if server.tools.is_empty() {
            c.problem(format!("{path}.tools"), "list the tools this server offers");
        }
        let prefix = server.prefix.clone().unwrap_or_default();
        for (j, pattern) in server.exclude.iter().enumerate() {
            if !server.tools.iter().any(|t| glob_match(pattern, t)) {
                c.problem(
                    format!("{path}.exclude[{j}]"),
                    format!("{pattern:?} matches none of the server's tools"),
                );
            }
        }
        for from in server.rename.keys() {
            if !server.tools.contains(from) {
                c.problem(
                    format!("{path}.rename.{from}"),
                    format!("the server has no tool {from:?} to rename"),
                );
            }
        }
        for (i, tool) in server.tools.iter().enumerate() {
            if server.exclude.iter().any(|p| glob_match(p, tool)) {
                continue;
            }
            let public = server
                .rename
                .get(tool)
                .cloned()
                .unwrap_or_else(|| format!("{prefix}{tool}"));
            if !valid_name(&public) {
                c.problem(
                    format!("{path}.tools[{i}]"),
                    format!("{public:?} is not a valid tool name"),
                );
            }
            if let Some(existing) = tools.get(public.as_str()) {
                c.problem(
                    format!("{path}.tools[{i}]"),
                    format!(
                        "tool {public:?} is also offered by server {:?}; give one of them a \"prefix\"",
                        existing.server
                    ),
                );
                continue;
            }
            tools.insert(
                public.into(),
                ToolRoute {
                    server: name.clone(),
                    remote_name: tool.clone(),
                    kind: RouteKind::Tool,
                },
            );
        }
        // An MCP server's resources and prompts, each under one name of the server's, unless the
        // configuration withholds them.
        let mcp = !matches!(transport, Transport::Grpc { .. });
        for (offered, kind, public, field) in [
            (
                server.resources,
                RouteKind::ReadResource,
                super::resources_name(name),
                "resources",
            ),
            (
                server.prompts,
                RouteKind::GetPrompt,
                super::prompts_name(name),
                "prompts",
            ),
        ] {
            match (offered, mcp) {
                (Some(true), false) => c.problem(
                    format!("{path}.{field}"),
                    format!("only an MCP server has {field} to offer; this one is gRPC"),
                ),
                (Some(false), _) | (None, false) => {}
                (Some(true) | None, true) => {
                    if let Some(existing) = tools.get(public.as_str()) {
                        c.problem(
                            format!("{path}.{field}"),
                            format!(
                                "the name {public:?} of this server's {field} is taken by a tool of server {:?}; rename that tool or set \"{field}\": false",
                                existing.server
                            ),
                        );
                        continue;
                    }
                    tools.insert(
                        public.into(),
                        ToolRoute {
                            server: name.clone(),
                            remote_name: field.to_owned(),
                            kind,
                        },
                    );
                }
            }
        }
        let timeout = c.duration(
            format!("{path}.timeout"),
            server.timeout.as_deref(),
            DEFAULT_TOOL_TIMEOUT,
        );
        let url = match &transport {
            Transport::Grpc { url } | Transport::McpHttp { url } => Some(url.as_str()),
            Transport::McpStdio { .. } => None,
        };
        let tls = super::tls::check_server_tls(c, &path, url, server.tls.as_ref());
        let auth = server.auth.as_ref().and_then(|raw| {
            let url = match &transport {
                Transport::McpHttp { url } => Some(url.as_str()),
                _ => None,
            };
            super::credentials::check_credential(c, &path, raw, url)
        });
        servers.insert(
            name.clone(),
            ServerConfig {
                name: name.clone(),
                transport,
                tools: server.tools.clone(),
                timeout,
                tls,
                auth,
            },
        );
    }
    (servers, tools)
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    // Greedy matching with one remembered star: linear in practice, never exponential, whatever the
    // number of stars (a pattern is configuration: it must not be able to hang the loader).
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn check_clients(
    c: &mut Checker,
    raw: &BTreeMap<String, RawClient>,
    tools: &BTreeMap<Name, ToolRoute>,
    control_token: Option<&secrecy::SecretString>,
) -> BTreeMap<String, ClientConfig> {
    let mut clients = BTreeMap::new();
    for (name, client) in raw {
        let path = format!("clients.{name}");
        if !valid_name(name) {
            c.problem(
                &path,
                "a client name uses letters, digits, '_', '-' and '.' only",
            );
        }
        let allowed = if client.tools.iter().any(|t| t == "*") {
            None
        } else {
            let mut set = std::collections::BTreeSet::new();
            for (i, tool) in client.tools.iter().enumerate() {
                if let Some(name) = c.tool(tools, format!("{path}.tools[{i}]"), tool) {
                    set.insert(name);
                }
            }
            Some(AllowList {
                source: format!("allow-list of client {name}"),
                tools: set,
            })
        };
        let mut checked = ClientConfig {
            name: name.clone(),
            allowed,
            token: None,
            jwt_subjects: Vec::new(),
            act_for: Vec::new(),
            read: false,
            approve: false,
            tls_subject: client.tls_subject.clone(),
        };
        super::auth::client_identity(c, &path, name, client, &mut checked);
        clients.insert(name.clone(), checked);
    }
    super::auth::check_clients(c, &clients, control_token);
    clients
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.'))
}
