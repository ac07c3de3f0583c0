//! `watch`: the live view of the orchestrator, and [`Follower`], the resilient event stream that `run`,
//! `demo` and `audit tail -f` follow too.
//!
//! A follower remembers the last sequence number it has seen; when the stream breaks (the orchestrator
//! restarted) it reconnects with backoff and resumes from the next one, so nothing is missed or repeated.

use crate::cli::{Global, WatchArgs};
use crate::client::{Answer, CliError, Client};
use crate::output::{Out, print_json_line};
use crate::present::{event_json, event_line, is_finished, workflow_json};
use conductor_proto::v1 as pb;
use std::io::IsTerminal;
use std::time::Duration;

const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the stream produced next.
pub enum Followed {
    Event(Box<pb::WatchEvent>),
    /// The stream broke; the follower is reconnecting.
    Lost(String),
    /// Connected again; events resume from this sequence number.
    Resumed(u64),
}

/// An event stream that survives orchestrator restarts.
pub struct Follower {
    global: Global,
    workflow: Option<String>,
    next_seq: u64,
    stream: Option<tonic::Streaming<pb::WatchEvent>>,
    backoff: Duration,
}

impl Follower {
    /// Starts following from `from`, or from the next event after now.
    pub async fn start(
        client: &Client,
        global: &Global,
        workflow: Option<String>,
        from: Option<u64>,
    ) -> Result<Follower, CliError> {
        let next_seq = match from {
            Some(seq) => seq.max(1),
            None => {
                client
                    .rpc()
                    .status(pb::StatusRequest {})
                    .await
                    .answer(client)?
                    .last_seq
                    + 1
            }
        };
        let stream = open(client, workflow.clone(), next_seq).await?;
        Ok(Follower {
            global: global.clone(),
            workflow,
            next_seq,
            stream: Some(stream),
            backoff: BACKOFF_FIRST,
        })
    }

    /// The next event to expect.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Waits for the next event, reconnecting as long as it takes.
    pub async fn next(&mut self) -> Followed {
        loop {
            if let Some(stream) = &mut self.stream {
                let message = stream.message().await;
                match message {
                    Ok(Some(event)) => {
                        if let Some(pb::watch_event::Body::Event(e)) = &event.body {
                            if e.seq < self.next_seq {
                                continue;
                            }
                            self.next_seq = e.seq + 1;
                        }
                        return Followed::Event(Box::new(event));
                    }
                    Ok(None) => {
                        self.stream = None;
                        return Followed::Lost("the orchestrator closed the stream".into());
                    }
                    Err(status) => {
                        self.stream = None;
                        return Followed::Lost(lost_reason(&status));
                    }
                }
            }
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            let Ok(client) = Client::connect(&self.global).await else {
                continue;
            };
            if let Ok(stream) = open(&client, self.workflow.clone(), self.next_seq).await {
                self.stream = Some(stream);
                self.backoff = BACKOFF_FIRST;
                return Followed::Resumed(self.next_seq);
            }
        }
    }
}

/// Why the stream broke, for a person: the orchestrator's own words up to any protocol advice (the
/// follower already resumes from the right sequence number by itself).
fn lost_reason(status: &tonic::Status) -> String {
    let reason = crate::client::status_reason(status);
    match reason.split_once("; reconnect") {
        Some((said, _)) => said.to_owned(),
        None => reason,
    }
}

/// What a follower says while it reconnects, the same in `watch`, `audit tail -f` and `run`.
pub fn lost_note(reason: &str) -> String {
    format!("lost the orchestrator ({reason}); reconnecting, no event will be missed…")
}

/// What a follower says when it is connected again.
pub fn resumed_note(seq: u64) -> String {
    format!("reconnected; carrying on from event #{seq}")
}

async fn open(
    client: &Client,
    workflow: Option<String>,
    from_seq: u64,
) -> Result<tonic::Streaming<pb::WatchEvent>, CliError> {
    let request = pb::WatchRequest {
        workflow_id: workflow.unwrap_or_default(),
        from_seq,
    };
    client.rpc().watch(request).await.answer(client)
}

/// `watch`: the dashboard on a terminal, lines or JSON lines otherwise.
pub async fn watch(global: &Global, args: WatchArgs) -> anyhow::Result<()> {
    let out = Out::new(global);
    let client = Client::connect(global).await?;
    if !global.json && std::io::stdout().is_terminal() && std::io::stdin().is_terminal() {
        return crate::dashboard::run(&client, global, &args, &out).await;
    }
    let mut follower = Follower::start(&client, global, args.workflow.clone(), args.from).await?;
    // A workflow that has already finished has nothing more to show from now: say how it ended, as
    // `wait` does. (With --from, its past events are replayed up to its end instead.)
    if let (Some(id), None) = (&args.workflow, args.from) {
        let workflow = client
            .rpc()
            .get_workflow(pb::GetWorkflowRequest {
                workflow_id: id.clone(),
            })
            .await
            .answer(&client)?;
        if is_finished(workflow.state) {
            return crate::wait::report_end(&out, &workflow);
        }
    }
    if !global.json {
        eprintln!(
            "watching {} from seq {} (Ctrl-C to stop)",
            client.url,
            follower.next_seq()
        );
    }
    loop {
        match follower.next().await {
            Followed::Event(event) => {
                print_event(&out, &event);
                if let Some(id) = &args.workflow
                    && crate::wait::finishes(&event, id)
                {
                    return ended(&event);
                }
            }
            Followed::Lost(reason) => eprintln!("{}", lost_note(&reason)),
            Followed::Resumed(seq) => eprintln!("{}", resumed_note(seq)),
        }
    }
}

/// One event as a line (or a JSON object with the workflow's state after it).
pub fn print_event(out: &Out, event: &pb::WatchEvent) {
    match &event.body {
        Some(pb::watch_event::Body::Event(e)) if out.json => {
            let mut value = event_json(e);
            if let (Some(map), Some(workflow)) = (value.as_object_mut(), &event.workflow) {
                map.insert("workflow".into(), workflow_json(workflow));
            }
            print_json_line(&value);
        }
        Some(pb::watch_event::Body::Event(e)) => outln!("{}", event_line(out, e)),
        Some(pb::watch_event::Body::Lagged(lagged)) if out.json => {
            print_json_line(
                &serde_json::json!({"lagged": {"missed": lagged.missed, "resume_from": lagged.resume_from}}),
            );
        }
        Some(pb::watch_event::Body::Lagged(lagged)) => {
            eprintln!(
                "(fell behind by {} events; catching up from seq {})",
                lagged.missed, lagged.resume_from
            );
        }
        None => {}
    }
}

/// The exit of `watch --workflow` at the workflow's end, as `wait`'s: 0 completed, 1 otherwise (the
/// event line already said how it ended).
fn ended(event: &pb::WatchEvent) -> anyhow::Result<()> {
    let completed = matches!(
        &event.body,
        Some(pb::watch_event::Body::Event(pb::AuditEvent {
            event: Some(pb::audit_event::Event::WorkflowFinished(finished)),
            ..
        })) if finished.state == pb::WorkflowState::Completed as i32
    );
    if completed {
        Ok(())
    } else {
        Err(CliError::Reported.into())
    }
}
