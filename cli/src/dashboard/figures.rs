//! What the dashboard shows: the snapshot's figures, the workflow the panel follows (the `--workflow`
//! focus, else the unfinished one active last), and the recent event lines with their emphasis.
//!
//! Pure state: no terminal, no I/O.

use crate::output::{Out, clock_ms};
use crate::present::{describe, durable_mark, is_finished, workflow_state};
use conductor_proto::v1 as pb;
use pb::audit_event::Event;
use std::collections::{HashMap, VecDeque};

/// How many recent events the dashboard keeps.
const RECENT: usize = 200;

/// Everything the dashboard shows.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub active: u32,
    pub completed_today: u32,
    pub failed_today: u32,
    pub violations: u64,
    pub pending_approvals: u32,
    /// The downstream servers' reachability, as the orchestrator last checked it.
    pub downstream: Vec<pb::DownstreamHealth>,
    pub current: Option<CurrentWorkflow>,
    /// `watch --workflow ID`: the panel stays on this workflow whatever else runs.
    pub focus: Option<String>,
    /// Each workflow's latest event seq: without a focus, the panel follows the one active last.
    pub activity: HashMap<String, u64>,
    /// Most recent last.
    pub events: VecDeque<EventLine>,
    pub connection: String,
    /// The requests waiting for a person, oldest first; Enter opens the selected one, `a`/`d` ask to
    /// confirm a decision on it.
    pub approvals: Vec<pb::ApprovalInfo>,
    pub selected: usize,
    /// The answer to the last key press (`approved ap-…`, or why it was refused).
    pub notice: Option<String>,
    /// Where the keys go: the list, a request's detail, or the confirmation asking for a reason.
    pub pane: super::keys::Pane,
    /// The local clock at the last refresh (ms since the Unix epoch): the time left of each request.
    pub now_ms: i64,
}

/// One line of the recent events, with what it means for its colour.
#[derive(Debug, Clone)]
pub struct EventLine {
    pub text: String,
    pub tone: Tone,
}

/// How an event line is emphasised: refusals and failures stand apart from allowed calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Bad,
    Waiting,
}

impl Tone {
    /// What the event means for the person watching.
    pub fn of(e: &pb::AuditEvent) -> Tone {
        let failed = |outcome: i32| outcome != pb::CallOutcome::Succeeded as i32;
        match &e.event {
            Some(Event::CallDecided(c)) => {
                match c
                    .decision
                    .as_ref()
                    .map(|d| d.kind)
                    .and_then(|k| pb::DecisionKind::try_from(k).ok())
                {
                    Some(pb::DecisionKind::Deny) => Tone::Bad,
                    Some(pb::DecisionKind::NeedsApproval) => Tone::Waiting,
                    _ => Tone::Plain,
                }
            }
            Some(Event::ApprovalRequested(_)) => Tone::Waiting,
            Some(Event::ApprovalDecided(a)) if a.verdict == pb::ApprovalState::Approved as i32 => {
                Tone::Good
            }
            Some(Event::ApprovalDecided(_)) => Tone::Bad,
            Some(Event::CallFinished(c)) if failed(c.outcome) => Tone::Bad,
            Some(Event::CallFinished(_)) => Tone::Good,
            Some(Event::WorkflowFinished(w)) if w.state == pb::WorkflowState::Completed as i32 => {
                Tone::Good
            }
            Some(Event::WorkflowFinished(_))
            | Some(Event::ControlRefused(_))
            | Some(Event::ConfigRefused(_)) => Tone::Bad,
            Some(Event::Recovered(_)) => Tone::Waiting,
            _ => Tone::Plain,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CurrentWorkflow {
    pub id: String,
    pub name: String,
    pub state: String,
    pub steps_done: u32,
    pub steps_total: u32,
    pub duration_ms: u64,
    /// The next step, with its tool when known: `welcome (send_notification)`.
    pub next_step: String,
}

impl Figures {
    /// Takes the snapshot's figures; `tools_of_steps` maps `template/step` to its tool; `focused` is
    /// the focus workflow as asked for by id, when the snapshot's recent list no longer holds it.
    pub fn update(
        &mut self,
        status: &pb::StatusResponse,
        tools_of_steps: &HashMap<String, String>,
        focused: Option<&pb::WorkflowInfo>,
    ) {
        self.active = status.active_workflows;
        self.completed_today = status.completed_today;
        self.failed_today = status.failed_today;
        self.violations = status.policy_violations;
        self.pending_approvals = status.pending_approvals;
        self.downstream = status.downstream.clone();
        let shown = match &self.focus {
            Some(id) => status.workflows.iter().find(|w| &w.id == id).or(focused),
            None => self.most_active(&status.workflows),
        };
        self.current = shown.map(|w| {
            let name = if w.template.is_empty() {
                format!("ad-hoc {}", w.id)
            } else {
                w.template.clone()
            };
            let next_step = match tools_of_steps.get(&format!("{}/{}", w.template, w.next_step)) {
                Some(tool) if !w.next_step.is_empty() => format!("{} ({tool})", w.next_step),
                _ if w.next_step.is_empty() => "-".to_owned(),
                _ => w.next_step.clone(),
            };
            CurrentWorkflow {
                id: w.id.clone(),
                name,
                state: durable_mark(workflow_state(w.state), w.not_yet_durable),
                steps_done: w.steps_done,
                steps_total: w.steps_total,
                duration_ms: w.duration_ms,
                next_step,
            }
        });
    }

    /// Without a focus: the unfinished workflow with the latest event (ties: the snapshot's order,
    /// most recently active first); when none is unfinished, the one shown before, else the latest.
    fn most_active<'w>(&self, workflows: &'w [pb::WorkflowInfo]) -> Option<&'w pb::WorkflowInfo> {
        let last_seen = |w: &pb::WorkflowInfo| self.activity.get(&w.id).copied().unwrap_or(0);
        workflows
            .iter()
            .enumerate()
            .filter(|(_, w)| !is_finished(w.state))
            .max_by_key(|(i, w)| (last_seen(w), std::cmp::Reverse(*i)))
            .map(|(_, w)| w)
            .or_else(|| {
                let shown = self.current.as_ref()?;
                workflows.iter().find(|w| w.id == shown.id)
            })
            .or_else(|| workflows.first())
    }

    /// Takes the pending approvals, keeping the selection on the same request when it is still there.
    pub fn set_approvals(&mut self, approvals: Vec<pb::ApprovalInfo>) {
        let selected_id = self.selected_approval().map(|a| a.id.clone());
        self.approvals = approvals;
        self.selected = selected_id
            .and_then(|id| self.approvals.iter().position(|a| a.id == id))
            .unwrap_or(0)
            .min(self.approvals.len().saturating_sub(1));
    }

    /// Moves the selection by `step` (up is negative), staying on the list.
    pub fn select(&mut self, step: isize) {
        let last = self.approvals.len().saturating_sub(1);
        self.selected = self.selected.saturating_add_signed(step).min(last);
    }

    pub fn selected_approval(&self) -> Option<&pb::ApprovalInfo> {
        self.approvals.get(self.selected)
    }

    /// Adds an audit event to the recent lines and notes its workflow's activity.
    pub fn record(&mut self, e: &pb::AuditEvent) {
        if !e.workflow_id.is_empty() {
            self.activity.insert(e.workflow_id.clone(), e.seq);
        }
        let workflow = if e.workflow_id.is_empty() {
            "-"
        } else {
            &e.workflow_id
        };
        let mut text = format!(
            "#{} {} {workflow} {}",
            e.seq,
            clock_ms(e.timestamp_ms),
            describe(&Out::plain(), e)
        );
        // A traced call's records name their trace, to open it in the tracing system.
        if !e.trace_id.is_empty() {
            text.push_str(&format!(" · trace {}", e.trace_id));
        }
        self.push(EventLine {
            text,
            tone: Tone::of(e),
        });
    }

    /// `Downstream: 4 up, 1 DOWN (notification)`: whether calls can reach the tool servers.
    pub fn downstream_line(&self) -> Option<(String, bool)> {
        if self.downstream.is_empty() {
            return None;
        }
        let count = |state: pb::DownstreamState| {
            self.downstream
                .iter()
                .filter(|d| d.state == state as i32)
                .count()
        };
        let down: Vec<&str> = self
            .downstream
            .iter()
            .filter(|d| d.state == pb::DownstreamState::Down as i32)
            .map(|d| d.server.as_str())
            .collect();
        let mut text = format!("Downstream: {} up", count(pb::DownstreamState::Up));
        if !down.is_empty() {
            text.push_str(&format!(", {} DOWN ({})", down.len(), down.join(", ")));
        }
        let idle = count(pb::DownstreamState::NotStarted);
        if idle > 0 {
            text.push_str(&format!(", {idle} not started"));
        }
        Some((text, !down.is_empty()))
    }

    pub fn push(&mut self, line: EventLine) {
        self.events.push_back(line);
        while self.events.len() > RECENT {
            self.events.pop_front();
        }
    }
}
