//! The open MCP sessions of the Streamable HTTP front: who owns each, what each keeps while it is
//! idle, how many there may be, and when each ends.
//!
//! A session is its id, its owner (the identity that opened it), its [`Session`] (the workflow
//! binding and the client's name) and its activity: no task, no channel, no buffer. Requests borrow
//! the session while they run (see `super::streamable`), so an idle session costs a few hundred
//! bytes. This table is the only record of which identity a session belongs to: the binding lives
//! and ends with the entry, so the two cannot disagree, and nothing but the session's own end
//! removes it — never another caller's activity.
//!
//! The table is bounded (`listen.http_limits`): at most `max_sessions` open, at most
//! `max_sessions_per_identity` held by one identity (all anonymous callers are one identity, keyed
//! by the identity's name), at most `max_streams_per_session` standalone `GET` event streams per
//! session and `max_streams_per_identity` across an identity's sessions. What would pass a limit is
//! refused at once with a [`Refusal`] naming it; nothing waits, and open sessions are untouched.
//!
//! A session ends with a `DELETE`, or when nobody has sent a request for `mcp.session_idle_timeout`
//! and none is in flight (a call waiting for a person keeps its session). Ending it frees its slot,
//! ends its event streams, and drops the table's hold on its [`Session`]; once the requests still
//! running finish, the session's ad-hoc workflows complete and their approvals expire. The table
//! never answers HTTP itself and never logs a session id.

use super::handler::Session;
use crate::auth::Identity;
use crate::config::HttpLimits;
use crate::gateway::Gateway;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A short keyed hash of an MCP session id: tells sessions apart in records without revealing the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTag(pub String);

/// The sessions this front opened, by id.
pub(super) struct Sessions {
    table: Mutex<Table>,
    gateway: Gateway,
    limits: HttpLimits,
    idle: Duration,
    epoch: Instant,
    /// A per-process random key, so tags cannot be traced back to ids by guessing offline.
    key: [u8; 16],
}

/// What the lock guards: the open sessions and what each identity holds, changed together.
#[derive(Default)]
struct Table {
    open: HashMap<Uuid, Slot>,
    /// `initialize`s admitted and still being answered: counted against the limits, not yet open.
    opening: usize,
    /// By identity name; an identity holding nothing has no entry.
    held: HashMap<String, Held>,
}

/// An open session and its standalone event streams.
struct Slot {
    entry: Arc<Entry>,
    streams: usize,
}

/// What one identity holds.
#[derive(Default)]
struct Held {
    /// Open sessions and admitted `initialize`s.
    sessions: usize,
    /// Standalone event streams, including those of its sessions that have just ended.
    streams: usize,
}

/// One open session.
pub(super) struct Entry {
    pub session: Arc<Session>,
    id: Uuid,
    owner: Identity,
    tag: SessionTag,
    /// Milliseconds since `Sessions::epoch` of the last request.
    last_active: AtomicU64,
    /// Requests in flight (a call waiting for a person keeps its session alive).
    busy: AtomicUsize,
    /// Fired when the session ends: its event streams end with it.
    ended: CancellationToken,
}

/// Why a request naming a session, or asking for one, is refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refusal {
    #[error("session not found: it has ended or never existed; initialize a new session")]
    NotFound,
    #[error("this MCP session belongs to another identity; open a session of your own")]
    Foreign,
    #[error(
        "the server holds its limit of {limit} open MCP sessions (listen.http_limits.max_sessions); end sessions you no longer use with DELETE /mcp, or retry once idle sessions have expired (after {idle} without a request)"
    )]
    Sessions { limit: usize, idle: String },
    #[error(
        "identity {identity:?} holds its limit of {limit} open MCP sessions (listen.http_limits.max_sessions_per_identity); end sessions you no longer use with DELETE /mcp, or retry once idle ones have expired (after {idle} without a request)"
    )]
    IdentitySessions {
        identity: String,
        limit: usize,
        idle: String,
    },
    #[error(
        "this MCP session already has {limit} open GET event streams (listen.http_limits.max_streams_per_session); the server sends nothing on a further one: keep using an open stream, or close one first"
    )]
    SessionStreams { limit: usize },
    #[error(
        "identity {identity:?} holds its limit of {limit} open GET event streams across its MCP sessions (listen.http_limits.max_streams_per_identity); close streams, or end sessions with DELETE /mcp, that you no longer use"
    )]
    IdentityStreams { identity: String, limit: usize },
}

impl Refusal {
    /// The configuration field of the limit refused at, if it is one.
    pub fn limit(&self) -> Option<&'static str> {
        match self {
            Refusal::NotFound | Refusal::Foreign => None,
            Refusal::Sessions { .. } => Some("listen.http_limits.max_sessions"),
            Refusal::IdentitySessions { .. } => {
                Some("listen.http_limits.max_sessions_per_identity")
            }
            Refusal::SessionStreams { .. } => Some("listen.http_limits.max_streams_per_session"),
            Refusal::IdentityStreams { .. } => Some("listen.http_limits.max_streams_per_identity"),
        }
    }
}

/// Counts a request in flight for as long as it lives.
pub(super) struct Busy(Arc<Entry>);

impl Busy {
    pub fn session(&self) -> &Arc<Session> {
        &self.0.session
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Entry {
    /// Marks a request of this session in flight until the returned guard is dropped.
    pub fn busy(self: Arc<Entry>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self)
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn tag(&self) -> &SessionTag {
        &self.tag
    }
}

/// An admitted `initialize`: it counts against the limits until it opens its session, or is
/// dropped (the handshake failed) and gives its place back.
pub(super) struct Admission<'a> {
    sessions: &'a Sessions,
    owner: Identity,
    opened: bool,
}

impl Admission<'_> {
    /// Opens the session for `session` and returns its new id (random, so unguessable).
    pub fn open(mut self, session: Arc<Session>) -> Uuid {
        let id = Uuid::new_v4();
        let entry = Arc::new(Entry {
            session,
            id,
            tag: self.sessions.tag(&id),
            owner: self.owner.clone(),
            last_active: AtomicU64::new(self.sessions.now_ms()),
            busy: AtomicUsize::new(0),
            ended: CancellationToken::new(),
        });
        let mut table = self.sessions.lock();
        table.opening = table.opening.saturating_sub(1);
        table.open.insert(id, Slot { entry, streams: 0 });
        self.sessions
            .gateway
            .metrics()
            .set_mcp_sessions(table.open.len());
        self.opened = true;
        id
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.opened {
            let mut table = self.sessions.lock();
            table.opening = table.opening.saturating_sub(1);
            table.release(&self.owner.name, |held| {
                held.sessions = held.sessions.saturating_sub(1)
            });
        }
    }
}

/// A standalone event stream of a session, counted for as long as it lives.
pub(super) struct StreamSlot {
    sessions: Weak<Sessions>,
    id: Uuid,
    owner: String,
    ended: CancellationToken,
}

impl StreamSlot {
    /// Resolves when the stream's session ends.
    pub async fn session_ended(&self) {
        self.ended.cancelled().await;
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let Some(sessions) = self.sessions.upgrade() else {
            return;
        };
        let mut table = sessions.lock();
        if let Some(slot) = table.open.get_mut(&self.id) {
            slot.streams = slot.streams.saturating_sub(1);
        }
        table.release(&self.owner, |held| {
            held.streams = held.streams.saturating_sub(1)
        });
    }
}

impl Table {
    /// Applies `change` to what `name` holds, and forgets an identity that holds nothing.
    fn release(&mut self, name: &str, change: impl FnOnce(&mut Held)) {
        if let Some(held) = self.held.get_mut(name) {
            change(held);
            if held.sessions == 0 && held.streams == 0 {
                self.held.remove(name);
            }
        }
    }

    /// Takes session `id` out of the table and frees its owner's slot; its streams are told to end
    /// (each frees its own slot as it goes).
    fn remove(&mut self, id: &Uuid) -> Option<Arc<Entry>> {
        let slot = self.open.remove(id)?;
        slot.entry.ended.cancel();
        self.release(&slot.entry.owner.name, |held| {
            held.sessions = held.sessions.saturating_sub(1)
        });
        Some(slot.entry)
    }
}

impl Sessions {
    /// An empty table within `limits` whose sessions end after `idle` without a request; reaped in
    /// the background for as long as the returned value lives.
    pub fn start(gateway: Gateway, limits: HttpLimits, idle: Duration) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions {
            table: Mutex::default(),
            gateway,
            limits,
            idle,
            epoch: Instant::now(),
            key: *Uuid::new_v4().as_bytes(),
        });
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(reap(Arc::downgrade(&sessions), tick));
        sessions
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tag(&self, id: &Uuid) -> SessionTag {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(id.as_bytes());
        SessionTag(hex::encode(&hasher.finalize()[..4]))
    }

    fn idle_text(&self) -> String {
        humantime::format_duration(self.idle).to_string()
    }

    /// Admits an `initialize` by `owner` if the limits leave room for one more session.
    pub fn admit(&self, owner: &Identity) -> Result<Admission<'_>, Refusal> {
        let mut table = self.lock();
        if table.open.len() + table.opening >= self.limits.max_sessions {
            return Err(Refusal::Sessions {
                limit: self.limits.max_sessions,
                idle: self.idle_text(),
            });
        }
        let held = table.held.get(&owner.name).map_or(0, |h| h.sessions);
        if held >= self.limits.max_sessions_per_identity {
            return Err(Refusal::IdentitySessions {
                identity: owner.name.clone(),
                limit: self.limits.max_sessions_per_identity,
                idle: self.idle_text(),
            });
        }
        table.opening += 1;
        table.held.entry(owner.name.clone()).or_default().sessions += 1;
        Ok(Admission {
            sessions: self,
            owner: owner.clone(),
            opened: false,
        })
    }

    /// The open session `id` if `caller` owns it; not marked active.
    pub fn owned(&self, id: &Uuid, caller: &Identity) -> Result<Arc<Entry>, Refusal> {
        let entry = self
            .lock()
            .open
            .get(id)
            .map(|slot| Arc::clone(&slot.entry))
            .ok_or(Refusal::NotFound)?;
        if entry.owner != *caller {
            return Err(Refusal::Foreign);
        }
        Ok(entry)
    }

    /// Marks `entry` active now.
    pub fn touch(&self, entry: &Entry) {
        entry.last_active.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Counts a new standalone event stream of `entry`'s session if the limits leave room for it.
    pub fn open_stream(self: &Arc<Self>, entry: &Entry) -> Result<StreamSlot, Refusal> {
        let mut table = self.lock();
        let owner = &entry.owner.name;
        let held = table.held.get(owner).map_or(0, |h| h.streams);
        let Some(slot) = table.open.get_mut(&entry.id) else {
            return Err(Refusal::NotFound);
        };
        if slot.streams >= self.limits.max_streams_per_session {
            return Err(Refusal::SessionStreams {
                limit: self.limits.max_streams_per_session,
            });
        }
        if held >= self.limits.max_streams_per_identity {
            return Err(Refusal::IdentityStreams {
                identity: owner.clone(),
                limit: self.limits.max_streams_per_identity,
            });
        }
        slot.streams += 1;
        table.held.entry(owner.clone()).or_default().streams += 1;
        Ok(StreamSlot {
            sessions: Arc::downgrade(self),
            id: entry.id,
            owner: owner.clone(),
            ended: entry.ended.clone(),
        })
    }

    /// Ends session `id` (a `DELETE`); false when it was not open.
    pub fn close(&self, id: &Uuid) -> bool {
        let removed = {
            let mut table = self.lock();
            let removed = table.remove(id);
            self.gateway.metrics().set_mcp_sessions(table.open.len());
            removed
        };
        // Dropped outside the lock: ending a session ends its workflows.
        removed.is_some()
    }

    /// Ends the sessions idle for longer than the time-out.
    fn reap(&self) {
        let now = self.now_ms();
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let expired: Vec<Arc<Entry>> = {
            let mut table = self.lock();
            let ids: Vec<Uuid> = table
                .open
                .iter()
                .filter(|(_, slot)| {
                    let e = &slot.entry;
                    e.busy.load(Ordering::Relaxed) == 0
                        && now.saturating_sub(e.last_active.load(Ordering::Relaxed)) > idle_ms
                })
                .map(|(id, _)| *id)
                .collect();
            let expired = ids.iter().filter_map(|id| table.remove(id)).collect();
            self.gateway.metrics().set_mcp_sessions(table.open.len());
            expired
        };
        if !expired.is_empty() {
            tracing::debug!(sessions = expired.len(), "closing idle MCP sessions");
        }
        // Dropped outside the lock: ending a session ends its workflows.
        drop(expired);
    }
}

async fn reap(sessions: Weak<Sessions>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        let Some(sessions) = sessions.upgrade() else {
            return;
        };
        sessions.reap();
    }
}
