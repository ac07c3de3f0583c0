//! The open MCP sessions of the Streamable HTTP front: what each one keeps while it is idle, and when
//! it ends.
//!
//! A session is its id, its [`Session`] (the workflow binding and the client's name) and its
//! activity: no task, no channel, no buffer. Requests borrow the session while they run (see
//! `super::streamable`), so an idle session costs a few hundred bytes.
//!
//! A session ends with a `DELETE`, or when nobody has sent a request for `mcp.session_idle_timeout`
//! and none is in flight (a call waiting for a person keeps its session). Ending it drops the table's
//! hold on its [`Session`]; once the requests still running finish, the session's ad-hoc workflows
//! complete and their approvals expire. The table never answers HTTP itself.

use super::handler::Session;
use crate::auth::http::HttpAuth;
use crate::gateway::Gateway;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The sessions this front opened, by id.
pub(super) struct Sessions {
    map: Mutex<HashMap<Uuid, Arc<Entry>>>,
    gateway: Gateway,
    /// Where each session is bound to its identity; an ended session's binding is released too.
    auth: HttpAuth,
    idle: Duration,
    epoch: Instant,
}

/// One open session.
pub(super) struct Entry {
    pub session: Arc<Session>,
    /// Milliseconds since `Sessions::epoch` of the last request.
    last_active: AtomicU64,
    /// Requests in flight (a call waiting for a person keeps its session alive).
    busy: AtomicUsize,
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
}

impl Sessions {
    /// An empty table whose sessions end after `idle` without a request; reaped in the background
    /// for as long as the returned value lives.
    pub fn start(gateway: Gateway, auth: HttpAuth, idle: Duration) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions {
            map: Mutex::default(),
            gateway,
            auth,
            idle,
            epoch: Instant::now(),
        });
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        tokio::spawn(reap(Arc::downgrade(&sessions), tick));
        sessions
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Entry>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Opens a session for `session` and returns its new id (random, so unguessable).
    pub fn open(&self, session: Arc<Session>) -> Uuid {
        let id = Uuid::new_v4();
        let entry = Arc::new(Entry {
            session,
            last_active: AtomicU64::new(self.now_ms()),
            busy: AtomicUsize::new(0),
        });
        let mut map = self.lock();
        map.insert(id, entry);
        self.gateway.metrics().set_mcp_sessions(map.len());
        id
    }

    /// The open session `id`, marked active now.
    pub fn touch(&self, id: &Uuid) -> Option<Arc<Entry>> {
        let entry = self.lock().get(id).cloned()?;
        entry.last_active.store(self.now_ms(), Ordering::Relaxed);
        Some(entry)
    }

    pub fn is_open(&self, id: &Uuid) -> bool {
        self.lock().contains_key(id)
    }

    /// Ends session `id` (a `DELETE`); false when it was not open.
    pub fn close(&self, id: &Uuid) -> bool {
        let mut map = self.lock();
        let closed = map.remove(id).is_some();
        self.gateway.metrics().set_mcp_sessions(map.len());
        closed
    }

    /// Ends the sessions idle for longer than the time-out.
    fn reap(&self) {
        let now = self.now_ms();
        let idle_ms = u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX);
        let expired: Vec<(Uuid, Arc<Entry>)> = {
            let mut map = self.lock();
            let ids: Vec<Uuid> = map
                .iter()
                .filter(|(_, e)| {
                    e.busy.load(Ordering::Relaxed) == 0
                        && now.saturating_sub(e.last_active.load(Ordering::Relaxed)) > idle_ms
                })
                .map(|(id, _)| *id)
                .collect();
            let expired = ids
                .into_iter()
                .filter_map(|id| map.remove(&id).map(|entry| (id, entry)))
                .collect();
            self.gateway.metrics().set_mcp_sessions(map.len());
            expired
        };
        if !expired.is_empty() {
            tracing::debug!(sessions = expired.len(), "closing idle MCP sessions");
        }
        // Dropped outside the lock: ending a session ends its workflows.
        for (id, _entry) in expired {
            self.auth.forget_session(&id.to_string());
        }
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
