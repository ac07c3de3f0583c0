//! The connection to the orchestrator: the channel, the metadata every request carries (caller identity,
//! control token), and the one mapping from gRPC failures to what the user reads and the exit code.
//!
//! Nothing else in the crate looks at a `tonic::Status`: handlers use [`Answer::answer`] and `?`.

use crate::cli::Global;
use conductor_proto::v1 as pb;
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use prost::Message;
use std::process::ExitCode;
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

/// The metadata key naming who calls; the orchestrator records it with every decision.
pub const CALLER_HEADER: &str = "x-conductor-caller";

/// How long to wait for the orchestrator to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The generated client with our metadata on every request.
pub type Rpc = OrchestratorClient<InterceptedService<Channel, Metadata>>;

/// Failures with a meaning for the exit code. Anything else is a plain failure (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot reach the orchestrator at {url}: {reason}\n  start it with `./run.sh --keep` (all daemons) or `orchestrator --config config/config.json`,\n  or point --orchestrator / CONDUCTOR_ORCHESTRATOR at the right address"
    )]
    Unreachable { url: String, reason: String },
    /// The TLS handshake failed: the orchestrator's certificate is not trusted, or it refused ours.
    #[error("TLS with the orchestrator at {url} failed: {reason}\n  {hint}")]
    Tls {
        url: String,
        reason: String,
        hint: &'static str,
    },
    /// Something answers at the address, but it is not an orchestrator (a tool server, or the
    /// orchestrator's HTTP port).
    #[error(
        "{url} is not a Conductorio orchestrator: {reason}\n  point --orchestrator (or CONDUCTOR_ORCHESTRATOR, or the context) at the orchestrator's gRPC address\n  (its --listen, 127.0.0.1:50051 by default), not at a tool server or the orchestrator's HTTP port (/mcp, /metrics)"
    )]
    NotAnOrchestrator { url: String, reason: String },
    /// A policy (or a person) refused a call; the decision says which rules and what to do first.
    #[error("{message}")]
    Denied {
        message: String,
        decision: Box<pb::Decision>,
    },
    /// The orchestrator refused a control action for want of the right token.
    #[error(
        "{0}\n  set CONDUCTOR_TOKEN (or --token, or --token-file) to the control token or your client's token"
    )]
    Unauthorized(String),
    #[error("{0}")]
    Failed(String),
    /// What the user asked for cannot be done as asked (e.g. a template's input is missing a
    /// field): nothing ran; exit 2, as for a usage error.
    #[error("{0}")]
    Usage(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// `wait --timeout` passed before the workflow finished (it keeps running); exit 124, as
    /// `timeout(1)` does.
    #[error("{0}")]
    TimedOut(String),
    /// The command has already told the user what went wrong; exit 1 quietly.
    #[error("failed")]
    Reported,
    /// Ctrl-C: the command has said what keeps running and how to follow it; exit 130 as shells do.
    #[error("interrupted")]
    Interrupted,
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Unreachable { .. }
            | CliError::NotAnOrchestrator { .. }
            | CliError::Tls { .. } => ExitCode::from(3),
            CliError::Usage(_) => ExitCode::from(2),
            CliError::TimedOut(_) => ExitCode::from(124),
            CliError::Interrupted => ExitCode::from(130),
            _ => ExitCode::from(1),
        }
    }
}

/// The exit code and message of any error a command returns.
pub fn report_error(error: &anyhow::Error) -> ExitCode {
    match error.downcast_ref::<CliError>() {
        Some(quiet @ (CliError::Reported | CliError::Interrupted)) => quiet.exit_code(),
        Some(known) => {
            eprintln!("error: {known}");
            known.exit_code()
        }
        None => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Metadata added to every request.
#[derive(Clone)]
pub struct Metadata {
    caller: AsciiMetadataValue,
    authorization: Option<AsciiMetadataValue>,
}

impl tonic::service::Interceptor for Metadata {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(CALLER_HEADER, self.caller.clone());
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        Ok(request)
    }
}

/// The person at the keyboard: their login name, or "conductorctl".
pub fn login_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|key| std::env::var(key).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty() && name.is_ascii())
        .unwrap_or_else(|| "conductorctl".to_owned())
}

/// A connected orchestrator client.
#[derive(Clone)]
pub struct Client {
    rpc: Rpc,
    pub url: String,
    /// Whether a client certificate is presented (a dropped connection may be its refusal).
    presented: bool,
}

impl Client {
    /// Connects at once, so an orchestrator that is not there is reported before any work starts.
    pub async fn connect(global: &Global) -> Result<Client, CliError> {
        let address = global
            .orchestrator
            .as_deref()
            .unwrap_or(crate::context::DEFAULT_ORCHESTRATOR);
        let url = crate::tls::url_for(address, &global.tls)?;
        let presented = global.tls.cert.is_some();
        let unreachable = |reason: String| {
            crate::tls::failure(&url, &reason, presented).unwrap_or_else(|| CliError::Unreachable {
                url: url.clone(),
                reason,
            })
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| CliError::Failed(format!("--orchestrator {url:?} is not a URL: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let endpoint = crate::tls::secure(endpoint, &url, &global.tls)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let caller = MetadataValue::try_from(login_name())
            .unwrap_or_else(|_| MetadataValue::from_static("conductorctl"));
        let from_file = match (&global.token, &global.token_file) {
            (None, Some(path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                CliError::Failed(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?),
            _ => None,
        };
        let authorization = match global
            .token
            .as_deref()
            .or(from_file.as_deref())
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(token) => Some(
                MetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| CliError::Failed("the token must be printable ASCII".into()))?,
            ),
            None => None,
        };
        let rpc = OrchestratorClient::with_interceptor(
            channel,
            Metadata {
                caller,
                authorization,
            },
        )
        .max_decoding_message_size(64 * 1024 * 1024);
        Ok(Client {
            rpc,
            url,
            presented,
        })
    }

    /// A handle for one or more calls (cheap: it shares the channel).
    pub fn rpc(&self) -> Rpc {
        self.rpc.clone()
    }

    /// Turns a failed call into the error the user should read.
    pub fn error(&self, status: Status) -> CliError {
        classify(&self.url, status, self.presented)
    }
}

/// The error the user should read for a failed call to the orchestrator at `url`.
fn classify(url: &str, status: Status, presented: bool) -> CliError {
    match status.code() {
        Code::Unavailable | Code::Unknown if is_transport(&status) => {
            let reason = status_reason(&status);
            crate::tls::failure(url, &reason, presented).unwrap_or_else(|| CliError::Unreachable {
                url: url.to_owned(),
                reason,
            })
        }
        // hyper's words when the peer drops an HTTP/2 connection it cannot speak (an HTTP/1 port);
        // an orchestrator's own answer never reads so. [`not_an_orchestrator`] looks closer.
        // Over TLS with a client certificate, the orchestrator dropping the connection is most
        // likely its refusal of that certificate.
        _ if status.message() == "operation was canceled" => {
            let reason = "the connection closed without an answer".to_owned();
            crate::tls::failure(url, &reason, presented).unwrap_or_else(|| CliError::Unreachable {
                url: url.to_owned(),
                reason,
            })
        }
        Code::Unimplemented => CliError::NotAnOrchestrator {
            url: url.to_owned(),
            reason: "it answers gRPC but has no Orchestrator service (a tool server?)".to_owned(),
        },
        Code::FailedPrecondition => match decision_of(&status) {
            Some(decision) => CliError::Denied {
                message: status.message().to_owned(),
                decision: Box::new(decision),
            },
            None => CliError::Failed(status.message().to_owned()),
        },
        Code::Unauthenticated => CliError::Unauthorized(status.message().to_owned()),
        // The credential was good, and the orchestrator says what is missing (a permission, four
        // eyes): advice about setting a token would mislead.
        Code::PermissionDenied => CliError::Failed(status.message().to_owned()),
        Code::Unavailable => CliError::Failed(format!("unavailable: {}", status.message())),
        Code::DeadlineExceeded => CliError::Failed(format!("timed out: {}", status.message())),
        _ => CliError::Failed(status.message().to_owned()),
    }
}

/// The `Decision` a policy denial carries in its status details.
pub fn decision_of(status: &Status) -> Option<pb::Decision> {
    pb::Decision::decode(status.details())
        .ok()
        .filter(|d| d.kind != 0)
}

/// Refines an "unreachable" whose TCP connection did succeed: when what listens there answers
/// HTTP/1.1 (the orchestrator's /mcp and /metrics port, any web server), it is no orchestrator, and
/// "start it" would be the wrong advice. Any other error is returned as it is.
pub async fn not_an_orchestrator(error: anyhow::Error) -> anyhow::Error {
    let Some(CliError::Unreachable { url, reason }) = error.downcast_ref::<CliError>() else {
        return error;
    };
    if reason.contains("tcp connect error") || !speaks_http1(url).await {
        return error;
    }
    CliError::NotAnOrchestrator {
        url: url.clone(),
        reason:
            "it answers HTTP/1.1, not gRPC (the orchestrator's HTTP port for /mcp and /metrics?)"
                .to_owned(),
    }
    .into()
}

/// True when the server at `url` answers a plain HTTP/1.1 request as HTTP/1.1 (a gRPC server
/// answers with HTTP/2 frames, or not at all). Bounded: one second in all.
async fn speaks_http1(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let request = format!("HEAD / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1."))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A status's message with its transport cause, each said once.
pub fn status_reason(status: &Status) -> String {
    use std::error::Error as _;
    let mut text = status.message().to_owned();
    let mut source = status.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A transport failure (nothing listening, connection dropped) rather than an answer of the
/// orchestrator: tonic keeps the transport's error as the status's source, and a status the
/// orchestrator sent (an unwritable audit log, a tool server down) has none.
fn is_transport(status: &Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// The `--orchestrator` value as a URL: `127.0.0.1:50051` (the form the orchestrator's `--listen`
/// takes) and `localhost:50051` mean `http://` that address; a URL with a scheme is kept as it is.
pub fn orchestrator_url(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// An error and its causes, each said once: transport errors repeat their cause in their own message
/// (`tcp connect error: tcp connect error: ...`), so a cause already in the text is skipped.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !cause_text.is_empty() && !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `rpc.status(..).await.answer(&client)?`: the response body, or the mapped error.
pub trait Answer<T> {
    fn answer(self, client: &Client) -> Result<T, CliError>;
}

impl<T> Answer<T> for Result<Response<T>, Status> {
    fn answer(self, client: &Client) -> Result<T, CliError> {
        self.map(Response::into_inner)
            .map_err(|status| client.error(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_the_forms_people_type() {
        assert_eq!(
            orchestrator_url("127.0.0.1:52051"),
            "http://127.0.0.1:52051"
        );
        assert_eq!(
            orchestrator_url("localhost:52051"),
            "http://localhost:52051"
        );
        assert_eq!(
            orchestrator_url(" http://127.0.0.1:52051/ "),
            "http://127.0.0.1:52051"
        );
        assert_eq!(
            orchestrator_url("https://conductor.example:443"),
            "https://conductor.example:443"
        );
    }

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn only_a_transport_failure_is_unreachable_and_an_answer_says_what_the_orchestrator_said() {
        let url = "http://127.0.0.1:50051";
        let refused = Status::from_error(Box::new(Layer(
            "transport error",
            Some(Box::new(Layer(
                "tcp connect error: Connection refused",
                None,
            ))),
        )));
        assert!(
            matches!(classify(url, refused, false), CliError::Unreachable { .. }),
            "nothing listening"
        );
        let full = Status::unavailable(
            "audit log I/O error on audit_logs/audit-1.jsonl: No space left on device (os error 28); the call was not run or not acknowledged",
        );
        match classify(url, full, false) {
            CliError::Failed(message) => {
                assert!(message.contains("No space left on device"), "{message}")
            }
            other => panic!("an unwritable audit log is not an unreachable orchestrator: {other}"),
        }
        let four_eyes = Status::permission_denied(
            "four eyes: bob asked for this restore_backup call and cannot approve it too; ask someone else",
        );
        match classify(url, four_eyes, false) {
            CliError::Failed(message) => assert!(message.starts_with("four eyes"), "{message}"),
            other => panic!("a refusal to a good credential gives no token advice: {other}"),
        }
        let server_down =
            Status::unavailable("server notification is unavailable: connection refused");
        assert!(matches!(
            classify(url, server_down, false),
            CliError::Failed(_)
        ));
    }

    #[test]
    fn an_error_chain_says_each_cause_once() {
        let error = Layer(
            "transport error",
            Some(Box::new(Layer(
                "tcp connect error: Connection refused",
                Some(Box::new(Layer("Connection refused", None))),
            ))),
        );
        assert_eq!(
            error_chain(&error),
            "transport error: tcp connect error: Connection refused"
        );
    }
}
