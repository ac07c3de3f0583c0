//! The dashboard's keys as a small state machine: the list of pending approvals, one request's detail
//! pane, and the confirmation that asks for a reason. A key goes in, what to do comes out.
//!
//! Pure: no terminal, no I/O. Nothing is approved or denied by one key press: `a`/`d` open the
//! confirmation (with the request's arguments, digest, why and who asked on screen), and only Enter on a
//! typed reason decides, for exactly the request and digest that were shown.

use super::figures::Figures;
use conductor_proto::v1 as pb;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// The longest reason the prompt takes (the audit log records it whole).
const REASON_MAX: usize = 500;

/// Where the keys go, and what the dashboard shows over its panels.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Pane {
    /// The figures and the list: ↑↓ select, Enter opens the selected request, `a`/`d` decide it.
    #[default]
    List,
    /// One request, whole: arguments, digest, why, who asked and the time left.
    Detail(Box<pb::ApprovalInfo>),
    /// The request's detail with a prompt for the reason; Enter decides, Esc goes back.
    Confirm {
        approval: Box<pb::ApprovalInfo>,
        approve: bool,
        reason: String,
    },
}

/// What a key press asks the live loop to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Quit,
    Decide(Decision),
}

/// A confirmed decision: the request as it was shown, and the reason typed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub approval_id: String,
    /// The digest the person saw: the orchestrator refuses the decision if the request changed.
    pub arguments_digest: String,
    pub approve: bool,
    pub reason: String,
}

impl Figures {
    /// Handles one key press; returns what the live loop must do (quit, or send a confirmed decision).
    pub fn on_key(&mut self, key: &KeyEvent) -> Option<Effect> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Some(Effect::Quit);
        }
        match std::mem::take(&mut self.pane) {
            Pane::List => self.on_list_key(key),
            Pane::Detail(approval) => {
                match key.code {
                    KeyCode::Esc | KeyCode::Char('q') => {}
                    KeyCode::Char('a') => self.confirm(approval, true),
                    KeyCode::Char('d') => self.confirm(approval, false),
                    _ => self.pane = Pane::Detail(approval),
                }
                None
            }
            Pane::Confirm {
                approval,
                approve,
                mut reason,
            } => match key.code {
                KeyCode::Esc => {
                    self.notice = None;
                    self.pane = Pane::Detail(approval);
                    None
                }
                KeyCode::Enter if reason.trim().is_empty() => {
                    self.notice = Some("type why first: a decision needs a reason".to_owned());
                    self.pane = Pane::Confirm {
                        approval,
                        approve,
                        reason,
                    };
                    None
                }
                KeyCode::Enter => {
                    self.notice = None;
                    Some(Effect::Decide(Decision {
                        approval_id: approval.id.clone(),
                        arguments_digest: approval.arguments_digest.clone(),
                        approve,
                        reason: reason.trim().to_owned(),
                    }))
                }
                code => {
                    match code {
                        KeyCode::Backspace => {
                            reason.pop();
                        }
                        KeyCode::Char(c)
                            if !key.modifiers.contains(KeyModifiers::CONTROL)
                                && reason.chars().count() < REASON_MAX =>
                        {
                            reason.push(c);
                        }
                        _ => {}
                    }
                    self.pane = Pane::Confirm {
                        approval,
                        approve,
                        reason,
                    };
                    None
                }
            },
        }
    }

    fn on_list_key(&mut self, key: &KeyEvent) -> Option<Effect> {
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Effect::Quit),
            KeyCode::Up | KeyCode::Char('k') => self.select(-1),
            KeyCode::Down | KeyCode::Char('j') => self.select(1),
            KeyCode::Enter | KeyCode::Char('a') | KeyCode::Char('d') => {
                let Some(approval) = self.selected_approval().cloned() else {
                    self.notice = Some("no approval is waiting".to_owned());
                    return None;
                };
                let approval = Box::new(approval);
                match key.code {
                    KeyCode::Char('a') => self.confirm(approval, true),
                    KeyCode::Char('d') => self.confirm(approval, false),
                    _ => self.pane = Pane::Detail(approval),
                }
            }
            _ => {}
        }
        None
    }

    fn confirm(&mut self, approval: Box<pb::ApprovalInfo>, approve: bool) {
        self.notice = None;
        self.pane = Pane::Confirm {
            approval,
            approve,
            reason: String::new(),
        };
    }

    /// The request the open pane shows, if one is open.
    pub fn open_approval(&self) -> Option<&pb::ApprovalInfo> {
        match &self.pane {
            Pane::List => None,
            Pane::Detail(approval) | Pane::Confirm { approval, .. } => Some(approval),
        }
    }

    /// True while the open request is still in the pending list (decided elsewhere or expired: no).
    pub fn open_approval_is_pending(&self) -> bool {
        self.open_approval()
            .is_some_and(|open| self.approvals.iter().any(|a| a.id == open.id))
    }
}
