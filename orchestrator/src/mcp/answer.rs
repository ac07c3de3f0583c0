//! One request of a session, run through its handler, and the shape of its answer: one JSON body,
//! or an event stream when the handler sends something before its result (progress while a call
//! waits for approval).
//!
//! The handler runs in the SDK's one-request service (`serve_directly`, as the SDK itself serves a
//! session-free request), so the SDK's dispatch of methods, its errors and its `initialize`
//! negotiation apply unchanged; what lives only as long as the request (a task, a channel) ends
//! with it. Nothing here outlives the request.

use super::fast::{self, text};
use super::handler::ConductorMcp;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream};
use rmcp::RoleServer;
use rmcp::model::RequestId;
use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, GetExtensions, InitializeRequestParams, JsonRpcRequest,
    ServerJsonRpcMessage,
};
use rmcp::service::serve_directly_with_ct;
use rmcp::transport::Transport;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often an open event stream says it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What remains of an answer after its first message: the handler's further messages, and the
/// request's cancellation, fired if the client goes away before the end.
pub(super) struct Rest {
    receiver: mpsc::Receiver<ServerJsonRpcMessage>,
    _cancel: DropGuard,
}

/// Runs one request of a session through `handler` (the SDK's one-request service) and returns
/// its first message, with the rest when the first is not already the answer. Cancelling `cancel`
/// (the client's `notifications/cancelled`, or the client gone) stops the handler.
pub(super) async fn dispatch(
    handler: ConductorMcp,
    peer_info: Option<InitializeRequestParams>,
    mut request: JsonRpcRequest<ClientRequest>,
    parts: Parts,
    cancel: CancellationToken,
) -> Result<(ServerJsonRpcMessage, Option<Rest>), Response> {
    request.request.extensions_mut().insert(parts);
    let (transport, mut receiver) =
        RequestTransport::new(ClientJsonRpcMessage::Request(request), handler.shared());
    let running = serve_directly_with_ct(handler, transport, peer_info, cancel.clone());
    tokio::spawn(async move {
        let _ = running.waiting().await;
    });
    // Dropped with this future if the client goes away first: the handler stops.
    let guard = cancel.drop_guard();
    let Some(first) = receiver.recv().await else {
        return Err(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the MCP handler ended without an answer",
        ));
    };
    if is_answer(&first) {
        return Ok((first, None));
    }
    Ok((
        first,
        Some(Rest {
            receiver,
            _cancel: guard,
        }),
    ))
}

/// The transport of one request's handler: the request in; out, what the handler sends up to
/// its answer. A request the handler sends the client on the way (a server's sampling or
/// elicitation, relayed) goes out under an id of the session's, and the client's answer, which
/// arrives in a request of its own, comes back in here (`Session::answered`).
struct RequestTransport {
    first: Option<ClientJsonRpcMessage>,
    session: Arc<super::handler::Session>,
    answers: mpsc::Receiver<ClientJsonRpcMessage>,
    back: mpsc::Sender<ClientJsonRpcMessage>,
    out: mpsc::Sender<ServerJsonRpcMessage>,
    /// Set when the answer has gone out: the handler's service then ends.
    done: Arc<tokio::sync::Semaphore>,
    /// The ids the requests to the client went out under, forgotten with the transport.
    asked: Vec<RequestId>,
}

impl RequestTransport {
    fn new(
        first: ClientJsonRpcMessage,
        session: Arc<super::handler::Session>,
    ) -> (Self, mpsc::Receiver<ServerJsonRpcMessage>) {
        let (out, receiver) = mpsc::channel(16);
        let (back, answers) = mpsc::channel(4);
        let transport = RequestTransport {
            first: Some(first),
            session,
            answers,
            back,
            out,
            done: Arc::new(tokio::sync::Semaphore::new(0)),
            asked: Vec::new(),
        };
        (transport, receiver)
    }
}

impl Drop for RequestTransport {
    fn drop(&mut self) {
        self.session.forget_asked(&self.asked);
    }
}

impl Transport<RoleServer> for RequestTransport {
    type Error = mpsc::error::SendError<ServerJsonRpcMessage>;

    fn send(
        &mut self,
        mut item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        if let ServerJsonRpcMessage::Request(request) = &mut item {
            let original = std::mem::replace(&mut request.id, RequestId::Number(0));
            request.id = self.session.asking(original, self.back.clone());
            self.asked.push(request.id.clone());
        }
        let ends = is_answer(&item);
        let out = self.out.clone();
        let done = Arc::clone(&self.done);
        async move {
            out.send(item).await?;
            if ends {
                done.add_permits(1);
            }
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        tokio::select! {
            answer = self.answers.recv() => answer,
            _ = self.done.acquire() => None,
        }
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.first.take();
        std::future::ready(Ok(()))
    }
}

fn is_answer(message: &ServerJsonRpcMessage) -> bool {
    matches!(
        message,
        ServerJsonRpcMessage::Response(_) | ServerJsonRpcMessage::Error(_)
    )
}

/// The answer as one JSON body.
pub(super) fn json(message: &ServerJsonRpcMessage) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => fast::json_body(body),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the answer could not be encoded: {e}"),
        ),
    }
}

/// `first`, then the handler's further messages up to its answer, as an event stream; `hold` lives
/// as long as the stream.
pub(super) fn event_stream(
    first: ServerJsonRpcMessage,
    rest: Option<Rest>,
    hold: impl Send + Sync + 'static,
) -> Response {
    let messages = stream::unfold(
        (Some(first), rest, hold, false),
        |(first, mut rest, hold, done)| async move {
            if done {
                return None;
            }
            let message = match (first, &mut rest) {
                (Some(message), _) => message,
                (None, Some(rest)) => rest.receiver.recv().await?,
                (None, None) => return None,
            };
            let done = is_answer(&message);
            Some((event(&message), (None, rest, hold, done)))
        },
    );
    events(messages)
}

fn event(message: &ServerJsonRpcMessage) -> Result<Event, Infallible> {
    Ok(match serde_json::to_string(message) {
        Ok(data) => Event::default().data(data),
        Err(e) => {
            tracing::error!(error = %e, "an MCP message could not be encoded");
            Event::default().comment("a message could not be encoded")
        }
    })
}

/// `events` as an event stream that says it is alive while nothing else is sent.
pub(super) fn events(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}
