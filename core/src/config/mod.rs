//! The orchestrator's configuration: parsed once, checked once, then trusted.
//!
//! `raw` holds the file's serde types; `check` turns them into [`Config`], reporting every problem with
//! its JSON path. Nothing here opens a connection: the same checks run offline in `conductorctl policy check`.

mod arguments;
mod auth;
mod check;
mod credentials;
mod labels;
mod listener;
mod raw;
mod rules;
mod store;
mod telemetry;
mod templates;
mod tls;

use crate::policy::{AllowList, ApprovalGate, Name, PolicySet, Scope};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use arguments::ArgumentLimits;
pub use auth::{
    ANONYMOUS, AuthSettings, JWT_IDENTITY_PREFIX, JwksSource, JwtSettings, OPERATOR, jwt_identity,
};
pub use check::{ConfigError, Problem};
pub use credentials::{
    ClientCredentials, Credential, CredentialSummary, SecretHeader, SecretPresence, SecretSlot,
    TokenExchange,
};
pub use listener::HttpLimits;
pub use store::{DEFAULT_LEASE_TTL, PostgresStore, StoreSettings};
pub use telemetry::{DEFAULT_SERVICE_NAME, TelemetrySettings, endpoint_problem};
pub use tls::{ClientCertMode, ClientTlsFiles, ListenTls};

/// The checked configuration. Cheap to share: workflows hold an `Arc<Config>` of the version they
/// started under.
#[derive(Debug)]
pub struct Config {
    /// The first 16 hex digits of the file's sha256: recorded with every decision.
    pub version: String,
    pub servers: BTreeMap<String, ServerConfig>,
    /// Every tool callable through the orchestrator, by its public name.
    pub tools: BTreeMap<Name, ToolRoute>,
    pub policies: PolicySet,
    /// The rules as configured, for listings and reports.
    pub rules: Vec<RuleSummary>,
    pub templates: BTreeMap<String, Arc<Template>>,
    pub approval_ledger: Option<String>,
    /// The shared control token; it proves the identity [`OPERATOR`].
    pub control_token: Option<SecretString>,
    pub approval_timeout: Duration,
    pub audit: AuditSettings,
    pub listen: ListenSettings,
    pub mcp: McpSettings,
    /// Known callers by name: their allow-lists and tokens.
    pub clients: BTreeMap<String, ClientConfig>,
    pub auth: AuthSettings,
    /// An ad-hoc workflow with no activity for this long ends by itself, recorded with the reason.
    pub ad_hoc_idle_timeout: Duration,
    /// How many of each workflow's most recent calls stay in memory (`workflows.calls_in_memory`):
    /// the rules never read older ones, and views read them from the audit log.
    pub calls_in_memory: usize,
    /// The labels tools get from their MCP annotations.
    pub annotation_labels: AnnotationLabels,
    /// How large and deep a call's arguments and a workflow's input may be (`arguments`).
    pub arguments: ArgumentLimits,
    /// What flow labels follow.
    pub flow_scope: FlowScope,
    /// Where the audit log's records are kept (`store`).
    pub store: StoreSettings,
    /// Where traces go (`telemetry`); read once at start-up.
    pub telemetry: TelemetrySettings,
}

/// What flow labels follow (SPEC §9.7): whatever the scope, a label follows the context that
/// brought it in (a session, a handle's workflow, and every workflow started from them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlowScope {
    /// Only the context.
    #[default]
    Context,
    /// Also every session and workflow of the same identity, for this long after the call that
    /// brought the label in.
    Caller { window: Duration },
}

/// How long a label follows its caller under `flow_scope` `caller`, unless configured.
pub const DEFAULT_FLOW_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Where a session-free client's call without a workflow handle goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SessionFreeWorkflow {
    /// Its identity's current open ad-hoc workflow (one per identity and client name).
    #[default]
    Identity,
    /// A new ad-hoc workflow for each call.
    PerCall,
}

/// What MCP tool annotations mean as labels (`annotation_labels` in the file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnotationLabels {
    /// For `openWorldHint: true` (default `untrusted`).
    pub open_world: Vec<Name>,
    /// For `destructiveHint: true` (default `destructive`).
    pub destructive: Vec<Name>,
}

/// The hints of an MCP tool's annotations that labels follow (`None`: the server did not say).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToolHints {
    pub open_world: Option<bool>,
    pub destructive: Option<bool>,
}

impl AnnotationLabels {
    /// The labels a tool with these hints carries beyond its configured ones.
    pub fn labels_for(&self, hints: ToolHints) -> Vec<Name> {
        let mut labels: Vec<Name> = Vec::new();
        let given = [
            (hints.open_world, &self.open_world),
            (hints.destructive, &self.destructive),
        ];
        for (hint, names) in given {
            if hint == Some(true) {
                for name in names {
                    if !labels.contains(name) {
                        labels.push(name.clone());
                    }
                }
            }
        }
        labels
    }
}

/// How long an ad-hoc workflow may sit idle before it ends by itself, unless configured.
pub const DEFAULT_AD_HOC_IDLE: Duration = Duration::from_secs(30 * 60);

/// A known caller.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub name: String,
    /// `None`: every tool.
    pub allowed: Option<AllowList>,
    pub token: Option<SecretString>,
    /// Values of the JWT client claim that identify this client.
    pub jwt_subjects: Vec<String>,
    /// Clients in whose workflows this one may act.
    pub act_for: Vec<String>,
    /// May read workflows, approvals, the audit log and `Watch` when authentication is required.
    pub read: bool,
    /// May approve and deny.
    pub approve: bool,
    /// The common name of a verified client certificate that identifies this client.
    pub tls_subject: Option<String>,
}

/// How to reach one downstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Grpc {
        url: String,
    },
    McpStdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
    },
    McpHttp {
        url: String,
    },
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub transport: Transport,
    /// The tools the server offers, by their downstream names.
    pub tools: Vec<String>,
    pub timeout: Duration,
    /// TLS files for an `https://` server (`None`: the system roots, no client certificate).
    pub tls: Option<ClientTlsFiles>,
    /// The credential presented to it (`mcp_url` servers only).
    pub auth: Option<Credential>,
}

/// Where a public tool name goes.
#[derive(Debug, Clone)]
pub struct ToolRoute {
    pub server: String,
    /// The tool's name on its server (differs from the public name when the server has a prefix).
    pub remote_name: String,
    /// What a call of the name does on the server.
    pub kind: RouteKind,
}

/// What a call of a routed name does: call a tool, or (MCP servers) read one of the server's
/// resources or get one of its prompts. Reads and prompts are named per server
/// ([`resources_name`], [`prompts_name`]) so that rules, allow-lists and labels govern them as
/// they govern tools; they are never listed as tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Tool,
    /// `resources/read`; the call's arguments are the request's params (`uri`).
    ReadResource,
    /// `prompts/get`; the call's arguments are the request's params (`name`, `arguments`).
    GetPrompt,
}

/// The name under which rules and allow-lists see reads of `server`'s resources.
pub fn resources_name(server: &str) -> String {
    format!("resources.{server}")
}

/// The name under which rules and allow-lists see `server`'s prompts being got.
pub fn prompts_name(server: &str) -> String {
    format!("prompts.{server}")
}

impl ToolRoute {
    pub fn is_tool(&self) -> bool {
        self.kind == RouteKind::Tool
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleSummary {
    pub id: String,
    pub kind: &'static str,
    pub description: String,
}

/// A named, ordered list of steps.
#[derive(Debug)]
pub struct Template {
    pub name: String,
    pub description: String,
    /// What a run's input must hold; empty: anything (templates written before inputs were declared).
    pub inputs: Vec<crate::template::Input>,
    pub steps: Vec<Step>,
    /// The tools its steps use: a run (or a session bound to it) may call only these.
    pub allowed: AllowList,
}

#[derive(Debug)]
pub struct Step {
    pub name: String,
    pub tool: Name,
    /// JSON with `${input.x}` and `${steps.NAME.output.y}` references, resolved when the step runs.
    pub arguments: serde_json::Value,
    pub gate: Option<ApprovalGate>,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub dir: Option<PathBuf>,
    pub max_file_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ListenSettings {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub http_limits: HttpLimits,
    /// TLS on both listeners.
    pub tls: Option<ListenTls>,
    /// TLS ends in a proxy in front (the explicit opt-out for listening beyond loopback without TLS).
    pub tls_terminated_in_front: bool,
}

#[derive(Debug, Clone, Default)]
pub struct McpSettings {
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    /// An MCP session idle this long ends as a `DELETE` would.
    pub session_idle_timeout: Duration,
    /// Where a session-free client's call without a workflow handle goes.
    pub session_free_workflow: SessionFreeWorkflow,
}

/// How long an MCP session may sit idle before it ends, unless configured.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(30 * 60);

/// For messages and listings.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Workflow => "workflow",
            Scope::Global => "global",
        })
    }
}

impl Config {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_slice(&bytes)
    }

    /// Parses and checks configuration text; the version is the hash of exactly these bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Config, ConfigError> {
        let version = hex::encode(&Sha256::digest(bytes)[..8]);
        let raw = check::parse(bytes)?;
        check::check(raw, version)
    }

    pub fn template(&self, name: &str) -> Option<&Arc<Template>> {
        self.templates.get(name)
    }

    /// The client a caller identity belongs to, if it is a known one. The identity is the first word of
    /// the caller string, which only the fronts write, from a credential (see `crate::auth`); what a
    /// caller says about itself follows in parentheses and is never looked up.
    pub fn client_of(&self, caller: &str) -> Option<&ClientConfig> {
        self.clients.get(caller_name(caller))
    }

    /// What a workflow of `caller` (optionally running `template`) may call: the intersection of the
    /// template's tools and the client's allow-list; `None` when unrestricted. A JWT subject no client
    /// lists (`jwt:SUB`) gets the allow-list of `auth.jwt.default_client`, empty unless configured.
    /// When any client is configured, another caller that is not one of them gets the `anonymous`
    /// client's allow-list, which is empty unless configured; the control token's identity
    /// (`operator`) is unrestricted.
    pub fn allowed_for(&self, caller: &str, template: Option<&Template>) -> Option<AllowList> {
        let anonymous = AllowList {
            source: "the anonymous allow-list (no credential, or one that names no client)".into(),
            tools: Default::default(),
        };
        let name = caller_name(caller);
        let client = match self.client_of(caller) {
            Some(client) => client.allowed.clone(),
            None if name.starts_with(JWT_IDENTITY_PREFIX) => self.unlisted_subjects_allowed(),
            None if self.clients.is_empty() || name == OPERATOR => None,
            None => Some(anonymous),
        };
        let allowed = match (template.map(|t| &t.allowed), client.as_ref()) {
            (None, None) => None,
            (Some(only), None) | (None, Some(only)) => Some(only.clone()),
            (Some(t), Some(c)) => Some(AllowList {
                source: format!("{} and {}", t.source, c.source),
                tools: t.tools.intersection(&c.tools).cloned().collect(),
            }),
        };
        self.without_approval_reads(caller, allowed)
    }

    /// Whether calling `tool` reads approval requests: the tools of the server named
    /// `approval_ledger`. A request shows another caller's arguments, digest and name, so these
    /// tools are for callers that may read approvals ([`Config::may_read_approvals`]) only.
    pub fn reads_approvals(&self, tool: &str) -> bool {
        self.approval_ledger.as_deref().is_some_and(|ledger| {
            self.tools
                .get(tool)
                .is_some_and(|route| route.server == ledger)
        })
    }

    /// Whether `caller` may read approval requests through a tool: the control token's identity,
    /// or a client with `read` or `approve`. Only a single-user setup (no clients, authentication
    /// not required) leaves it open to all: where clients are configured, an agent's allow-list
    /// (even `"*"`) never includes others' pending requests.
    pub fn may_read_approvals(&self, caller: &str) -> bool {
        let name = caller_name(caller);
        name == OPERATOR
            || self.clients.get(name).is_some_and(|c| c.read || c.approve)
            || self.single_user()
    }

    /// A single-user setup: no clients configured and authentication not required (as shipped),
    /// so whoever calls is the one user.
    pub fn single_user(&self) -> bool {
        self.clients.is_empty() && !self.auth.required
    }

    /// Whether identity `name` is one agent's: any authenticated identity, and `anonymous` only in
    /// a single-user setup. Elsewhere every caller without a credential is `anonymous`, so nothing
    /// that identity carries (a current workflow, labels that follow it) may pass between them.
    pub fn tells_apart(&self, name: &str) -> bool {
        name != ANONYMOUS || self.single_user()
    }

    /// `allowed` without the tools that read approvals when `caller` may not read them: they are
    /// neither listed to it nor called by its workflows.
    fn without_approval_reads(
        &self,
        caller: &str,
        allowed: Option<AllowList>,
    ) -> Option<AllowList> {
        if self.may_read_approvals(caller) || !self.tools.keys().any(|t| self.reads_approvals(t)) {
            return allowed;
        }
        let mut allowed = allowed.unwrap_or_else(|| AllowList {
            source: "every tool but the approval ledger's (reading approvals needs \"read\" or \"approve\")".into(),
            tools: self.tools.keys().cloned().collect(),
        });
        allowed.tools.retain(|tool| !self.reads_approvals(tool));
        Some(allowed)
    }
}

impl Config {
    /// The allow-list of a JWT subject no client lists: `auth.jwt.default_client`'s (`None`, every
    /// tool, when that client has `"*"`), else an empty one.
    fn unlisted_subjects_allowed(&self) -> Option<AllowList> {
        let default = self
            .auth
            .jwt
            .as_ref()
            .and_then(|jwt| jwt.default_client.as_ref())
            .and_then(|name| self.clients.get(name));
        match default {
            Some(client) => client.allowed.as_ref().map(|list| AllowList {
                source: format!(
                    "the allow-list of client {} (auth.jwt.default_client, for JWT subjects no client lists)",
                    client.name
                ),
                tools: list.tools.clone(),
            }),
            None => Some(AllowList {
                source: "the allow-list of JWT subjects no client lists (empty unless auth.jwt.default_client names a client)".to_owned(),
                tools: Default::default(),
            }),
        }
    }
}

/// The name in a caller identity: identities look like `NAME`, `NAME/SESSION`, `mcp:NAME (session ..)`
/// or `grpc:ADDR`; allow-lists and four-eyes checks compare names.
pub fn caller_name(caller: &str) -> &str {
    let caller = caller
        .strip_prefix("mcp:")
        .or_else(|| caller.strip_prefix("grpc:"))
        .unwrap_or(caller);
    let end = caller.find([' ', '/', '(']).unwrap_or(caller.len());
    &caller[..end]
}

/// Parses a human duration ("30s", "5m", "1h 30m") for configuration fields.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. \"30s\" or \"5m\""))
}

#[cfg(test)]
mod tests;
