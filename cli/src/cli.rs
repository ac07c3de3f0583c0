//! The command line's grammar: every command, flag and example, as clap derive types.
//!
//! Only parsing lives here; each command group's behaviour is in its own module. Every command carries
//! an example in `after_help`, so `--help` always shows one real invocation.

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// conductorctl: run, watch, approve and audit the workflows of a Conductorio orchestrator.
#[derive(Debug, Parser)]
#[command(name = "conductorctl", version, about, propagate_version = true)]
#[command(
    after_help = "Examples:\n  conductorctl run customer_onboarding --input config/examples/onboarding.json\n  conductorctl watch\n  conductorctl pending && conductorctl approve <approval-id> --reason \"looked at the list\"\n\nExit codes: 0 ok, 1 failure or denied, 2 usage, 3 cannot reach the orchestrator, 124 timed out\n(wait --timeout), 130 interrupted (Ctrl-C)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The whole grammar: `--help`, the completions and the man page all come from this one `Command`.
/// (`policy check` works offline; `crate::main` refuses the connection flags there.)
pub fn command() -> clap::Command {
    Cli::command()
}

/// Flags every command understands, listed apart from each command's own under "Global options".
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// The orchestrator's gRPC address: `127.0.0.1:50051`, `localhost:50051` or a URL [default: the
    /// context's, else http://127.0.0.1:50051].
    #[arg(
        long,
        global = true,
        value_name = "ADDRESS",
        hide_env_values = true,
        env = "CONDUCTOR_ORCHESTRATOR"
    )]
    pub orchestrator: Option<String>,
    /// A named orchestrator (address and token file) from the contexts file
    /// ($CONDUCTORCTL_CONFIG, else ~/.config/conductorctl/config.json) [default: its current_context].
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "CONDUCTOR_CONTEXT",
        hide_env_values = true
    )]
    pub context: Option<String>,
    /// Bearer token: the control token, or a client's token (who you are to the orchestrator).
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// A file holding the bearer token (used when no --token / CONDUCTOR_TOKEN is given).
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_TOKEN_FILE",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Machine-readable JSON output instead of tables and prose.
    #[arg(long, global = true)]
    pub json: bool,
    /// When to use colour; NO_COLOR in the environment turns it off whatever this says.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// TLS to the orchestrator (an `https://` address): whom to trust, and the client certificate a
/// listener that asks for one maps to a client.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM CA bundle the orchestrator's certificate must chain to (default: the system's roots);
    /// implies https.
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_CA_FILE",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate for mutual TLS (with --key); implies https.
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_CERT",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert.
    #[arg(
        long,
        global = true,
        env = "CONDUCTOR_KEY",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal only.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow template and follow its steps live.
    #[command(
        after_help = "Examples:\n  conductorctl run order_summary --input config/examples/orders.json\n  conductorctl run customer_onboarding --input config/examples/onboarding.json --set batch=nov-2\n  conductorctl run order_summary --input orders.json --detach"
    )]
    Run(RunArgs),
    /// Follow the orchestrator live: a dashboard on a terminal, one line (or JSON object) per event otherwise.
    #[command(
        after_help = "Examples:\n  conductorctl watch\n  conductorctl watch --workflow wf-1a2b3c4d5e6f --from 1 --json\n\nDashboard keys: ↑/↓ (or k/j) select a pending approval, Enter shows it whole (arguments, digest,\nwhy, who asked, time left), a approves and d denies it (each asks to confirm, with a reason), Esc\ngoes back, q quits.\nWithout --workflow the panel follows the running workflow with the latest activity."
    )]
    Watch(WatchArgs),
    /// Approve a pending approval request: the waiting call runs.
    #[command(
        after_help = "Example:\n  conductorctl approve ap-1a2b3c --reason \"checked the recipients\""
    )]
    Approve(DecideArgs),
    /// Deny a pending approval request: the waiting call does not run.
    #[command(after_help = "Example:\n  conductorctl deny ap-1a2b3c --reason \"wrong snapshot\"")]
    Deny(DecideArgs),
    /// List the approval requests that wait for a person, with the arguments they would release.
    #[command(after_help = "Example:\n  conductorctl pending --json")]
    Pending,
    /// The dashboard's figures: workflows, violations, per-tool metrics.
    #[command(after_help = "Example:\n  conductorctl status")]
    Status,
    /// A cluster of orchestrators on one PostgreSQL store: its nodes, which is active, each lag.
    #[command(
        subcommand,
        after_help = "Examples:\n  conductorctl cluster status\n  conductorctl cluster status --json --orchestrator 127.0.0.1:50052"
    )]
    Cluster(ClusterCommand),
    /// List the workflow templates: their inputs, their steps, which steps wait for approval.
    #[command(
        after_help = "Examples:\n  conductorctl templates\n  conductorctl templates customer_onboarding"
    )]
    Templates(TemplatesArgs),
    /// List every tool of every downstream server.
    #[command(after_help = "Example:\n  conductorctl tools --json")]
    Tools,
    /// List workflows (active ones unless --all).
    #[command(
        after_help = "Examples:\n  conductorctl workflows\n  conductorctl workflows --all --limit 50"
    )]
    Workflows(WorkflowsArgs),
    /// Show one workflow with its history: each call's decision, reason and duration.
    #[command(after_help = "Example:\n  conductorctl workflow wf-1a2b3c4d5e6f")]
    Workflow(WorkflowArgs),
    /// Call one tool through the policy engine (in a new ad-hoc workflow unless --workflow).
    #[command(
        after_help = "Examples:\n  conductorctl call validate_data --args '{\"records\":[{\"id\":\"o-1\",\"customer_id\":\"c-1\",\"amount\":3}],\"schema\":\"order\"}'\n  conductorctl call process_data --workflow wf-1a2b3c4d5e6f --args '{\"records\":[]}'"
    )]
    Call(CallArgs),
    /// Wait until a workflow finishes; the exit code says how it ended (for scripts).
    #[command(
        after_help = "Examples:\n  conductorctl wait wf-1a2b3c4d5e6f\n  conductorctl run order_summary --input orders.json --detach | xargs conductorctl wait --timeout 10m\n\nExit codes: 0 completed, 1 failed or cancelled, 124 not finished when --timeout passed (it keeps\nrunning), 3 cannot reach the orchestrator."
    )]
    Wait(WaitArgs),
    /// Cancel a running workflow.
    #[command(
        after_help = "Example:\n  conductorctl cancel wf-1a2b3c4d5e6f --reason \"started by mistake\""
    )]
    Cancel(CancelArgs),
    /// Manage the orchestrator's configuration, and conductorctl's contexts.
    #[command(
        subcommand,
        after_help = "Examples:\n  conductorctl config reload\n  conductorctl config get-contexts\n  conductorctl config use-context prod"
    )]
    Config(ConfigCommand),
    /// Read, query, verify and report on the audit log.
    #[command(
        subcommand,
        after_help = "Examples:\n  conductorctl audit tail -f\n  conductorctl audit verify audit_logs"
    )]
    Audit(AuditCommand),
    /// Check configuration files offline.
    #[command(
        subcommand,
        after_help = "Example:\n  conductorctl policy check config/config.json"
    )]
    Policy(PolicyCommand),
    /// Narrated demonstrations of the policies against the running daemons.
    #[command(
        after_help = "Examples:\n  conductorctl demo\n  conductorctl demo violation\n  conductorctl demo approval --manual"
    )]
    Demo(DemoArgs),
    /// A prompt to start a workflow and call tools one at a time, seeing each decision.
    #[command(
        after_help = "Example:\n  conductorctl interactive\n  conductor> start\n  conductor> call process_data {\"records\": []}"
    )]
    Interactive(InteractiveArgs),
    /// Print a shell completion script for bash, zsh, fish, elvish or PowerShell.
    #[command(
        after_help = "Examples:\n  source <(COMPLETE=bash conductorctl)    # also completes template names, workflow and approval ids\n  conductorctl completions bash > ~/.local/share/bash-completion/completions/conductorctl\n  conductorctl completions zsh > \"${fpath[1]}/_conductorctl\"\n  conductorctl completions fish > ~/.config/fish/completions/conductorctl.fish"
    )]
    Completions(CompletionsArgs),
    /// Print the manual page (roff).
    #[command(after_help = "Example:\n  conductorctl man > conductorctl.1 && man ./conductorctl.1")]
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The template to run (see `conductorctl templates`).
    #[arg(add = crate::complete::templates())]
    pub template: String,
    /// A JSON file with the workflow input (an object).
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Set one input field (`key=value`; dotted keys nest; the value is JSON when it parses, else text).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Start the run, print its workflow id and return without following it.
    #[arg(long, short)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this workflow's events; outside the dashboard the command ends when it finishes, with
    /// `wait`'s exit code (0 completed, 1 failed or cancelled), at once if it already has.
    #[arg(long, short, add = crate::complete::workflows())]
    pub workflow: Option<String>,
    /// Replay from this audit sequence number first (default: only new events).
    #[arg(long)]
    pub from: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The approval request's id (see `conductorctl pending`).
    #[arg(add = crate::complete::approvals())]
    pub id: String,
    /// Why: recorded in the audit log with the decision.
    #[arg(long, short)]
    pub reason: Option<String>,
    /// A name recorded beside your identity (default: your login name). Who decides is the identity
    /// your token proves (--token, CONDUCTOR_TOKEN or --token-file), never this name.
    #[arg(long = "as", value_name = "NAME")]
    pub approver: Option<String>,
    /// Refuse the decision unless the request's arguments digest is this one (the sha256 that
    /// `conductorctl pending` shows): you release exactly the call you looked at.
    #[arg(long, value_name = "SHA256")]
    pub digest: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkflowsArgs {
    /// Include finished workflows.
    #[arg(long, short)]
    pub all: bool,
    /// At most this many workflows, the most recently active first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct WorkflowArgs {
    /// The workflow's id (see `conductorctl workflows`).
    #[arg(add = crate::complete::workflows())]
    pub id: String,
    /// Print this step's output whole (pretty JSON) instead of the workflow.
    #[arg(long, value_name = "STEP")]
    pub output: Option<String>,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The tool to call (see `conductorctl tools`).
    pub tool: String,
    /// The arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// Call inside this workflow instead of a new ad-hoc one.
    #[arg(long, short, add = crate::complete::workflows())]
    pub workflow: Option<String>,
    /// Keep the new ad-hoc workflow open for more calls (`--workflow ID`); without it, a call
    /// outside any workflow ends its one-call workflow when the call ends.
    #[arg(long, conflicts_with = "workflow")]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The workflow's id (see `conductorctl workflows`).
    #[arg(add = crate::complete::workflows())]
    pub id: String,
    /// Give up after this long (`30s`, `10m`): exit 124, the workflow keeps running.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The workflow's id (see `conductorctl workflows`).
    #[arg(add = crate::complete::workflows())]
    pub id: String,
    /// Why: recorded in the audit log and shown as the workflow's error.
    #[arg(long, short)]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Re-read and re-check the orchestrator's configuration file and swap it in; a bad file is refused.
    #[command(after_help = "Example:\n  CONDUCTOR_TOKEN=secret conductorctl config reload")]
    Reload,
    /// List the contexts of the contexts file ($CONDUCTORCTL_CONFIG, else
    /// ~/.config/conductorctl/config.json), the current one marked.
    #[command(after_help = "Example:\n  conductorctl config get-contexts")]
    GetContexts,
    /// Make NAME the contexts file's current context (the orchestrator commands use by default).
    #[command(after_help = "Example:\n  conductorctl config use-context prod")]
    UseContext(UseContextArgs),
}

#[derive(Debug, Args)]
pub struct UseContextArgs {
    /// The context's name (see `conductorctl config get-contexts`).
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The nodes (active, standby, fenced or gone), the lease's epoch and how long it is valid by
    /// the database's clock, each standby's lag and last report; any node answers. A node alone on
    /// files says there is no cluster (exit 0).
    #[command(
        after_help = "Examples:\n  conductorctl cluster status\n  conductorctl cluster status --json"
    )]
    Status,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The last events of the audit log; with -f, keep following new ones.
    #[command(
        after_help = "Examples:\n  conductorctl audit tail -n 50\n  conductorctl audit tail -f --json"
    )]
    Tail(TailArgs),
    /// Search the audit log.
    #[command(
        after_help = "Examples:\n  conductorctl audit query --decision deny --since 1h\n  conductorctl audit query --workflow wf-1a2b3c4d5e6f --kind call_finished"
    )]
    Query(QueryArgs),
    /// Check the hash chain: offline on DIR, or by the orchestrator on its own log.
    #[command(
        after_help = "Examples:\n  conductorctl audit verify\n  conductorctl audit verify audit_logs"
    )]
    Verify(VerifyArgs),
    /// Compliance report: which calls ran, which were blocked and why, who approved what.
    #[command(
        after_help = "Examples:\n  conductorctl audit report --since 24h\n  conductorctl audit report --workflow wf-1a2b3c4d5e6f --json"
    )]
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Keep following new events.
    #[arg(long, short)]
    pub follow: bool,
    /// How many past events to show.
    #[arg(
        short = 'n',
        long = "limit",
        visible_alias = "lines",
        default_value_t = 20
    )]
    pub count: u64,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Only this workflow's events.
    #[arg(long, short)]
    pub workflow: Option<String>,
    /// Only events about this tool.
    #[arg(long)]
    pub tool: Option<String>,
    /// Only events of this kind.
    #[arg(long, value_enum)]
    pub kind: Option<EventKind>,
    /// Only decisions of this kind.
    #[arg(long, value_enum)]
    pub decision: Option<DecisionFilter>,
    /// Only the records of calls made in this OpenTelemetry trace (its 32-hex-digit trace id, as a
    /// tracing system shows it).
    #[arg(long, value_name = "TRACE_ID")]
    pub trace: Option<String>,
    /// A duration back from now (`1h`, `30m`) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// A duration back from now or an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many events, the newest (how many more matched is said on stderr).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

/// The kinds of audit events, as the log names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum EventKind {
    ConfigLoaded,
    ConfigRefused,
    Recovered,
    WorkflowStarted,
    CallDecided,
    ApprovalRequested,
    ApprovalDecided,
    CallStarted,
    CallFinished,
    ServerAsked,
    WorkflowFinished,
    ControlRefused,
}

impl EventKind {
    /// The name the audit log (and the query filter) uses.
    pub fn log_name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DecisionFilter {
    Allow,
    Deny,
    NeedsApproval,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// An audit log directory to verify offline (default: ask the orchestrator to verify its own).
    pub dir: Option<PathBuf>,
    /// A PostgreSQL audit store to verify offline, by its connection string (e.g.
    /// postgresql://conductor@db/conductor), instead of a directory.
    #[arg(long, value_name = "URL", conflicts_with = "dir")]
    pub store: Option<String>,
    /// `SEQ:HASH` of a record kept elsewhere, as an earlier `audit verify` printed the last one:
    /// the log must still hold it unchanged, so records cut off its end are found.
    #[arg(long, value_name = "SEQ:HASH")]
    pub anchor: Option<conductor_audit::Anchor>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Report on this workflow.
    #[arg(long, short, conflicts_with = "since")]
    pub workflow: Option<String>,
    /// A duration back from now (`24h`) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// The end of the range: a duration back from now or an RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run the orchestrator's configuration checks offline; every problem with its JSON path.
    #[command(after_help = "Example:\n  conductorctl policy check config/config.json")]
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file to check (JSON, as the orchestrator's --config takes).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// One scenario (default: all of them, one after the other).
    #[arg(value_enum)]
    pub scenario: Option<Scenario>,
    /// Wait for a person's `conductorctl approve` at approval gates instead of approving them.
    #[arg(long)]
    pub manual: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// validate → process → backup → notify, all allowed.
    Success,
    /// An out-of-order call is blocked with its reason; then the right order works.
    Dependency,
    /// A conditional rule after a failed validation, and the parallel restriction.
    Violation,
    /// A gated call waits for a decision.
    Approval,
    /// Template runs with live progress.
    Templates,
    /// Labels and conditions: after private and untrusted data, a notification out waits for
    /// approval naming the calls that brought them; a large order is gated by its amount.
    Flow,
}

#[derive(Debug, Args)]
pub struct TemplatesArgs {
    /// Only this template, with each input's description, default and example.
    #[arg(add = crate::complete::templates())]
    pub name: Option<String>,
}

#[derive(Debug, Args)]
pub struct InteractiveArgs {
    /// Keep the ad-hoc workflows this session started open when it ends (they end by themselves
    /// once idle); without it they end with the session.
    #[arg(long)]
    pub keep: bool,
}
