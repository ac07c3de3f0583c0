//! The configuration file exactly as written: plain serde types, unknown fields rejected.
//!
//! Nothing outside `config` sees these types: `check` turns them into the checked `Config` that the rest of
//! the orchestrator trusts.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Downstream tool servers by name.
    pub servers: BTreeMap<String, RawServer>,
    /// The server that keeps the durable approval ledger (it must serve `ApprovalLedger`).
    #[serde(default)]
    pub approval_ledger: Option<String>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub templates: BTreeMap<String, RawTemplate>,
    #[serde(default)]
    pub control: RawControl,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub mcp: RawMcp,
    /// Known callers (MCP clients, gRPC services) by name, with their allow-lists and tokens.
    #[serde(default)]
    pub clients: BTreeMap<String, RawClient>,
    /// How callers prove who they are (bearer tokens, JWTs) and what the MCP front says about it.
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub workflows: RawWorkflows,
    /// Information-flow labels of tools by public tool name, e.g. `"read_inbox": ["private"]`.
    #[serde(default)]
    pub labels: BTreeMap<String, Vec<String>>,
    /// The labels a tool gets from its MCP annotations, where its server gives them.
    #[serde(default)]
    pub annotation_labels: RawAnnotationLabels,
    /// What flow labels follow: the agent's context (default), or its identity for a time.
    #[serde(default)]
    pub flow_scope: RawFlowScope,
    /// How large and deep a call's arguments (and a workflow's input) may be.
    #[serde(default)]
    pub arguments: RawArgumentLimits,
    /// Where the audit log is kept: local files unless `postgres` is given.
    #[serde(default)]
    pub store: super::store::RawStore,
    /// Where traces go (OTLP), under which name, sampled how.
    #[serde(default)]
    pub telemetry: super::telemetry::RawTelemetry,
}

/// `arguments` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArgumentLimits {
    /// The most bytes of JSON a call's arguments (or a workflow's input) may take.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// The deepest nesting of arrays and objects in them.
    #[serde(default)]
    pub max_depth: Option<u32>,
}

/// Labels from MCP tool annotations: `openWorldHint` and `destructiveHint`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnnotationLabels {
    /// Default `["untrusted"]`: a tool that reaches the open world returns text anyone wrote.
    #[serde(default)]
    pub open_world: Option<Vec<String>>,
    /// Default `["destructive"]`.
    #[serde(default)]
    pub destructive: Option<Vec<String>>,
}

/// Workflow housekeeping.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkflows {
    /// An ad-hoc workflow with no activity for this long ends by itself (default 30m).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// How many of each workflow's most recent calls stay in memory (default 1024); views read
    /// older ones from the audit log.
    #[serde(default)]
    pub calls_in_memory: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Refuse requests without a valid credential (401) instead of treating them as `anonymous`.
    #[serde(default)]
    pub required: bool,
    /// The MCP resource URL (e.g. `https://gw.example/mcp`): the audience JWTs must name, and the
    /// `resource` of the protected-resource metadata.
    #[serde(default)]
    pub resource: Option<String>,
    /// Authorization servers named in `/.well-known/oauth-protected-resource`.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// JWTs validated against a JWKS.
    #[serde(default)]
    pub jwt: Option<RawJwt>,
    /// The client whose identity an MCP session over stdio has (the process that started it).
    #[serde(default)]
    pub stdio_client: Option<String>,
    /// A bearer token a Prometheus scraper sends to read `/metrics` (open without one).
    #[serde(default)]
    pub metrics: Option<RawSecret>,
}

/// A secret from exactly one of: the file's value, an environment variable, a file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must name; defaults to `auth.resource`.
    #[serde(default)]
    pub audience: Option<String>,
    /// A JWKS file.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// A JWKS URL (`http`; this build has no TLS), cached and fetched again when a token names an
    /// unknown `kid`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The claim whose value names the client (default `sub`; e.g. `azp`).
    #[serde(default)]
    pub client_claim: Option<String>,
    /// A client whose allow-list (tools only) each JWT subject no client lists gets, as its own
    /// identity `jwt:SUB`. Unset: such subjects get an empty allow-list, or 401 with `auth.required`.
    #[serde(default)]
    pub default_client: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// The tools this client may call ("*" for all).
    #[serde(default)]
    pub tools: Vec<String>,
    /// A bearer token that identifies this client. Prefer `token_env`.
    #[serde(default)]
    pub token: Option<String>,
    /// Name of an environment variable holding the client's bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the client's bearer token (surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<String>,
    /// Values of the JWT client claim (`auth.jwt.client_claim`) that identify this client.
    #[serde(default)]
    pub jwt_subjects: Vec<String>,
    /// Clients in whose workflows this one may act.
    #[serde(default)]
    pub act_for: Vec<String>,
    /// May read workflows, pending approvals, the audit log and `Watch` when authentication is required.
    #[serde(default)]
    pub read: bool,
    /// May approve and deny approval requests.
    #[serde(default)]
    pub approve: bool,
    /// The common name (CN) of a client certificate, verified by the listeners, that identifies
    /// this client (`listen.tls.client_certs`).
    #[serde(default)]
    pub tls_subject: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// gRPC `ToolService` address, e.g. `http://127.0.0.1:50061`.
    #[serde(default)]
    pub grpc: Option<String>,
    /// A downstream MCP server started as a child process speaking MCP over stdio.
    #[serde(default)]
    pub mcp_stdio: Option<RawMcpStdio>,
    /// A downstream MCP server reached over Streamable HTTP.
    #[serde(default)]
    pub mcp_url: Option<String>,
    /// The tools this server offers (checked against the server's own list when it is reached).
    pub tools: Vec<String>,
    /// Prefix added to this server's tool names, to resolve collisions between servers.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Per-call time-out, e.g. "30s".
    #[serde(default)]
    pub timeout: Option<String>,
    /// Tools of the server not to publish (`*` matches any run of characters).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Publish tools under other names: server name -> public name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Labels every tool of this server carries (on top of its own).
    #[serde(default)]
    pub labels: Vec<String>,
    /// TLS to an `https://` server: a CA bundle instead of the system roots, a client certificate.
    #[serde(default)]
    pub tls: Option<RawClientTls>,
    /// The credential presented to an `mcp_url` server (see `config::credentials`).
    #[serde(default)]
    pub auth: Option<RawServerAuth>,
    /// Whether an MCP server's resources are offered (as `resources.SERVER`); default yes.
    #[serde(default)]
    pub resources: Option<bool>,
    /// Whether an MCP server's prompts are offered (as `prompts.SERVER`); default yes.
    #[serde(default)]
    pub prompts: Option<bool>,
}

/// `servers.NAME.auth`: how the orchestrator authenticates to a downstream MCP server over HTTP.
/// Each secret is a [`RawSecret`]: `{"token_env": ..}`, `{"token_file": ..}` or `{"token": ..}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawServerAuth {
    /// `Authorization: Bearer TOKEN` on every request.
    Bearer { token: RawSecret },
    /// Named headers on every request, e.g. `{"X-Api-Key": {"token_env": "KEY"}}`.
    Headers {
        headers: BTreeMap<String, RawSecret>,
    },
    /// OAuth 2.1 client credentials: a token for the orchestrator itself from `token_url`.
    OauthClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: RawSecret,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        audience: Option<String>,
    },
    /// RFC 8693 token exchange: the caller's own token exchanged at `token_url` for the one sent on.
    TokenExchange {
        token_url: String,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        client_secret: Option<RawSecret>,
        #[serde(default)]
        audience: Option<String>,
        #[serde(default)]
        scope: Option<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpStdio {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawRule {
    /// `tool` may be called only after each of `after` has been called (finished, any outcome).
    Sequence {
        id: String,
        tool: String,
        after: Vec<String>,
        #[serde(default)]
        when: Option<String>,
    },
    /// `tool` may be called only after each of `requires_success` has succeeded.
    Conditional {
        id: String,
        tool: String,
        requires_success: Vec<String>,
        #[serde(default)]
        when: Option<String>,
    },
    /// The tools never run at the same time, within one workflow or across the orchestrator.
    Exclusive {
        id: String,
        tools: Vec<String>,
        #[serde(default)]
        scope: RawScope,
        #[serde(default)]
        when: Option<String>,
    },
    /// A call of `tool` waits for a person's decision.
    Approval {
        id: String,
        tool: String,
        #[serde(default)]
        timeout: Option<String>,
        /// The approver must differ from the caller who started the workflow.
        #[serde(default)]
        four_eyes: bool,
        #[serde(default)]
        when: Option<String>,
    },
    /// Per-tool limits: a call time-out, concurrent calls, and rates (token buckets).
    Limit {
        id: String,
        tool: String,
        #[serde(default)]
        timeout: Option<String>,
        #[serde(default)]
        max_concurrent: Option<u32>,
        #[serde(default)]
        rate: Option<RawRate>,
        #[serde(default)]
        rate_per_workflow: Option<RawRate>,
        #[serde(default)]
        when: Option<String>,
    },
    /// A call of `tool` is refused outright (when `when` holds), with `message`.
    Deny {
        id: String,
        tool: String,
        #[serde(default)]
        when: Option<String>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Once every label of `from` has entered a workflow, calls of tools labelled `to` are denied
    /// or wait for approval (`action`).
    Flow {
        id: String,
        from: Vec<String>,
        to: String,
        action: RawFlowAction,
        #[serde(default)]
        timeout: Option<String>,
        #[serde(default)]
        four_eyes: bool,
        #[serde(default)]
        when: Option<String>,
    },
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawFlowAction {
    Deny,
    Approval,
}

/// `calls` per `per` (e.g. 10 per "1s"), bursts of up to `calls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRate {
    pub calls: u32,
    pub per: String,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawScope {
    #[default]
    Workflow,
    Global,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    #[serde(default)]
    pub description: String,
    /// What a run's input must hold, by field name.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, RawInput>,
    pub steps: Vec<RawStep>,
}

/// One declared input of a template.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    /// string, number, integer, boolean, array or object.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub description: String,
    /// Used when the input leaves the field out (the field is then optional).
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// Optional without a default (a step may still need it).
    #[serde(default)]
    pub optional: bool,
    /// What a value looks like, shown in help and in the error for a missing field.
    #[serde(default)]
    pub example: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub name: String,
    pub tool: String,
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
    /// Gate this step behind a person's approval (in addition to any approval rule of its tool).
    #[serde(default)]
    pub approval: bool,
    /// Time-out of this step's approval gate, e.g. "10m".
    #[serde(default)]
    pub approval_timeout: Option<String>,
    /// The step's approver must differ from the caller who started the workflow.
    #[serde(default)]
    pub four_eyes: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    /// Bearer token required by approve, deny, cancel and reload. Prefer `token_env`.
    #[serde(default)]
    pub token: Option<String>,
    /// Name of an environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the bearer token.
    #[serde(default)]
    pub token_file: Option<String>,
    /// Default time-out of approval gates, e.g. "5m".
    #[serde(default)]
    pub approval_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    #[serde(default)]
    pub dir: Option<String>,
    /// Rotate the current file when it passes this many bytes.
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    #[serde(default)]
    pub grpc: Option<String>,
    #[serde(default)]
    pub http: Option<String>,
    /// Time-outs and the connection limit of the HTTP listener.
    #[serde(default)]
    pub http_limits: RawHttpLimits,
    /// TLS on both listeners (gRPC and HTTP).
    #[serde(default)]
    pub tls: Option<RawListenTls>,
    /// TLS ends in a proxy in front: listening beyond loopback without `tls` is then allowed.
    #[serde(default)]
    pub tls_terminated_in_front: bool,
}

/// `listen.tls`: PEM files, read again when they change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    /// The CA bundle client certificates must chain to.
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// `"none"`, `"optional"` (the default with a `client_ca_file`) or `"required"`.
    #[serde(default)]
    pub client_certs: Option<String>,
}

/// `servers.NAME.tls`: PEM files.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    /// The CA bundle the server's certificate must chain to (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// A client certificate, for servers that require mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpLimits {
    /// Time a client has to send a request's headers, e.g. "10s".
    #[serde(default)]
    pub header_timeout: Option<String>,
    /// Time a client has to send a request's body.
    #[serde(default)]
    pub body_timeout: Option<String>,
    /// A connection that neither sends nor receives a byte for this long is closed.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Connections served at once; more wait to be accepted.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// MCP sessions open at once; a further `initialize` is refused (503).
    #[serde(default)]
    pub max_sessions: Option<u32>,
    /// MCP sessions one identity (anonymous is one) may hold at once; its further `initialize` is
    /// refused (429).
    #[serde(default)]
    pub max_sessions_per_identity: Option<u32>,
    /// Standalone `GET /mcp` event streams one MCP session may hold; further ones are refused (409).
    #[serde(default)]
    pub max_streams_per_session: Option<u32>,
    /// Standalone `GET /mcp` event streams one identity may hold across its sessions; further ones
    /// are refused (429).
    #[serde(default)]
    pub max_streams_per_identity: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    /// Extra `Origin` values accepted by the MCP HTTP front (loopback origins are always accepted).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Extra `Host` values accepted by the MCP HTTP front.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// An MCP session with no message either way for this long ends as a `DELETE` would (its
    /// ad-hoc workflow completes, its approvals expire); default 30m.
    #[serde(default)]
    pub session_idle_timeout: Option<String>,
    /// Where a session-free (2026-07-28) client's call goes when it passes no workflow handle:
    /// `"identity"` (default: its identity's current ad-hoc workflow, one per identity and client
    /// name) or `"per_call"` (a new workflow for each such call).
    #[serde(default)]
    pub session_free_workflow: Option<String>,
}

/// What flow labels follow (`flow_scope`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlowScope {
    /// `"context"` (default: the session, the handle's workflow, and every workflow started from
    /// them) or `"caller"` (also every session and workflow of the same identity, for `window`).
    #[serde(default)]
    pub follow: Option<String>,
    /// With `caller`: how long a label follows its identity (default 24h).
    #[serde(default)]
    pub window: Option<String>,
}
