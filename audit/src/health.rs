//! What the writer publishes about itself, for admission control and health: whether records can
//! be written (and why not, since when), whether this node's store lease lets it admit intents,
//! how many records wait, and the counters. Read by every handle without taking the writer's lock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Why the log cannot be written, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritable {
    /// The error of the last failed attempt, naming the file and the OS error.
    pub reason: String,
    /// When the first attempt failed (ms since the Unix epoch).
    pub since_ms: i64,
}

/// State the writer publishes to the handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub last_seq: AtomicU64,
    pub batches: AtomicU64,
    /// Batches the keeper thread led (the rest were led by the callers waiting on them).
    pub keeper_batches: AtomicU64,
    /// Records enqueued and not yet written (the backlog included): the admission control's count.
    pub queued: AtomicUsize,
    /// Set while the log cannot be written; `unwritable` says why.
    pub failing: AtomicBool,
    pub unwritable: Mutex<Option<Unwritable>>,
    /// Set while this node may not admit intents because its store's lease is not renewed (or
    /// was lost): kept apart from `unwritable`, which a written backlog clears.
    pub lease_problem: Mutex<Option<Unwritable>>,
    lease_failing: AtomicBool,
    /// `true` while records are written: health checks follow it without polling (a stall is
    /// seen by asking, see [`Shared::unwritable`]).
    pub writable: tokio::sync::watch::Sender<bool>,
    /// When the write and sync in progress began (ms since the Unix epoch); 0 when none is.
    pub writing_since_ms: AtomicI64,
    /// How long a write and sync may take before the disk counts as stalled.
    stall_after: Duration,
    /// Test builds: the next writes fail as on a full disk while this is set.
    #[cfg(feature = "fault-injection")]
    pub inject_full_disk: AtomicBool,
    /// Test builds: the next writes hang while this is set.
    #[cfg(feature = "fault-injection")]
    pub inject_stall: AtomicBool,
}

impl Shared {
    pub fn new(stall_after: Duration) -> Self {
        Shared {
            last_seq: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            keeper_batches: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            unwritable: Mutex::new(None),
            lease_problem: Mutex::new(None),
            lease_failing: AtomicBool::new(false),
            writable: tokio::sync::watch::Sender::new(true),
            writing_since_ms: AtomicI64::new(0),
            stall_after,
            #[cfg(feature = "fault-injection")]
            inject_full_disk: AtomicBool::new(false),
            #[cfg(feature = "fault-injection")]
            inject_stall: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_unwritable(&self, reason: String) {
        let mut slot = self.unwritable.lock().unwrap_or_else(|e| e.into_inner());
        let since_ms = slot.as_ref().map_or_else(unix_ms, |u| u.since_ms);
        *slot = Some(Unwritable { reason, since_ms });
        self.failing.store(true, Ordering::Release);
        self.writable.send_replace(false);
    }

    pub(crate) fn set_writable(&self) {
        *self.unwritable.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.failing.store(false, Ordering::Release);
        if !self.lease_failing.load(Ordering::Acquire) {
            self.writable.send_replace(true);
        }
    }

    /// Records (with `Some`) or clears why this node's lease does not let it admit intents.
    pub fn set_lease_problem(&self, reason: Option<String>) {
        let mut slot = self.lease_problem.lock().unwrap_or_else(|e| e.into_inner());
        match reason {
            Some(reason) => {
                let since_ms = slot.as_ref().map_or_else(unix_ms, |u| u.since_ms);
                *slot = Some(Unwritable { reason, since_ms });
                self.lease_failing.store(true, Ordering::Release);
                self.writable.send_replace(false);
            }
            None => {
                *slot = None;
                self.lease_failing.store(false, Ordering::Release);
                if !self.failing.load(Ordering::Acquire) {
                    self.writable.send_replace(true);
                }
            }
        }
    }

    /// Why the log cannot be written now: the store's lease is not held, the last write failed,
    /// or the one in progress has not returned for longer than `stall_after` (a disk that hangs
    /// rather than fails).
    pub fn unwritable(&self) -> Option<Unwritable> {
        if self.lease_failing.load(Ordering::Acquire) {
            let problem = self
                .lease_problem
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if problem.is_some() {
                return problem;
            }
        }
        if self.failing.load(Ordering::Acquire) {
            return self
                .unwritable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
        }
        let since_ms = self.writing_since_ms.load(Ordering::Acquire);
        let waited_ms = unix_ms().saturating_sub(since_ms);
        let stall_ms = i64::try_from(self.stall_after.as_millis()).unwrap_or(i64::MAX);
        (since_ms != 0 && waited_ms >= stall_ms).then(|| Unwritable {
            reason: format!(
                "the audit disk has not finished a write and sync begun {:.1} s ago (a stalled disk); new calls are refused until it does",
                waited_ms as f64 / 1000.0
            ),
            since_ms,
        })
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
