//! The standby's lag at c=32: how long after the active node committed a record the standby has
//! applied it.
//!
//! Measured with the `Watch` stream of both nodes, opened by the bench before the load: the active
//! node sends a record to its watchers once it is durable (committed), the standby once it has
//! applied it (read from the table, its chain checked, `State::apply`). The bench notes when each
//! record's event reaches it from each node, on one clock, and the lag of a record is the
//! difference. Both streams take the same path (the same process, the same gRPC code), so what the
//! delivery costs falls out of the difference. `/metrics` `conductor_standby_lag_records` would
//! say how many records behind the standby is when it is scraped, not how long a record waits,
//! and at a scrape's resolution: it is not used.

use super::{CONCURRENCY, Cluster, SECTION};
use crate::load::{Connections, Route, round};
use crate::report::Report;
use crate::stats::median;
use crate::suite::Scale;
use anyhow::{Context, Result, bail};
use conductor_proto::v1::orchestrator_client::OrchestratorClient;
use conductor_proto::v1::{WatchRequest, watch_event};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the standby may take to show the active node's last record after a round.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);

/// The goal (issue 23): p99 ≤ 50 ms.
const GOAL_P99_MS: f64 = 50.0;

/// One node's `Watch` stream, read by a task of its own: when each record's event arrived.
struct Watching {
    arrivals: Arc<Mutex<HashMap<u64, Instant>>>,
    /// `Lagged` notices: the node found this watcher behind and caught it up from the store.
    lagged: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watching {
    /// Opens `Watch` on the node at `url` (new events only); returns once the node has answered,
    /// so nothing the load commits afterwards is missed.
    async fn open(url: &str) -> Result<Watching> {
        let mut client = OrchestratorClient::connect(url.to_owned())
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let mut stream = client
            .watch(WatchRequest {
                workflow_id: String::new(),
                from_seq: 0,
            })
            .await
            .with_context(|| format!("Watch on {url}"))?
            .into_inner();
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let lagged = Arc::new(AtomicU64::new(0));
        let (seen, behind) = (Arc::clone(&arrivals), Arc::clone(&lagged));
        let task = tokio::spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                let at = Instant::now();
                match event.body {
                    Some(watch_event::Body::Event(_)) => {
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(event.seq, at);
                    }
                    Some(watch_event::Body::Lagged(_)) => {
                        behind.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {}
                }
            }
        });
        Ok(Watching {
            arrivals,
            lagged,
            task,
        })
    }

    fn arrivals(&self) -> HashMap<u64, Instant> {
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn has(&self, seq: u64) -> bool {
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&seq)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One round's lags, in ms, sorted.
struct RoundLag {
    lags_ms: Vec<f64>,
    calls_per_s: f64,
    lagged: u64,
}

impl RoundLag {
    fn quantile(&self, q: f64) -> f64 {
        if self.lags_ms.is_empty() {
            return 0.0;
        }
        let rank = (q * self.lags_ms.len() as f64).ceil() as usize;
        self.lags_ms[rank.clamp(1, self.lags_ms.len()) - 1]
    }
}

/// The figure: c=32 gRPC load on the active node, each round watched on both nodes.
pub(super) async fn standby_lag(
    report: &mut Report,
    scale: &Scale,
    cluster: &Cluster<'_>,
) -> Result<()> {
    let c = CONCURRENCY;
    eprintln!("bench: 9. standby lag at c={c}");
    let active_index = cluster.active().await?;
    let (active, standby) = (&cluster.nodes[active_index], cluster.other(active_index)?);
    let connections = Connections::open(Route::Orchestrated, &active.url(0), c).await?;
    let calls = scale.throughput_calls / 8;
    round(&connections, c, calls / 4).await?;
    let mut rounds = Vec::with_capacity(scale.rounds);
    for _ in 0..scale.rounds {
        let on_active = Watching::open(&active.url(0)).await?;
        let on_standby = Watching::open(&standby.url(0)).await?;
        let load = round(&connections, c, calls).await?;
        let committed = on_active.arrivals();
        let Some(&last) = committed.keys().max() else {
            bail!("the active node's Watch showed none of the round's records");
        };
        let started = Instant::now();
        while !on_standby.has(last) {
            if started.elapsed() > CATCH_UP_DEADLINE {
                bail!(
                    "the standby had not applied seq {last} {CATCH_UP_DEADLINE:?} after the round; its log:\n{}",
                    standby.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let applied = on_standby.arrivals();
        let mut lags_ms: Vec<f64> = committed
            .iter()
            .filter_map(|(seq, at)| {
                let applied_at = applied.get(seq)?;
                Some(signed_ms(*at, *applied_at))
            })
            .collect();
        lags_ms.sort_by(f64::total_cmp);
        rounds.push(RoundLag {
            lags_ms,
            calls_per_s: load.summary.calls_per_s,
            lagged: on_active.lagged.load(Ordering::Relaxed)
                + on_standby.lagged.load(Ordering::Relaxed),
        });
    }
    let p50 = median(rounds.iter().map(|r| r.quantile(0.50)));
    let p99 = median(rounds.iter().map(|r| r.quantile(0.99)));
    let max = rounds
        .iter()
        .filter_map(|r| r.lags_ms.last().copied())
        .fold(f64::MIN, f64::max);
    report.info(
        SECTION,
        &format!("standby lag at c={c} (Watch on both nodes), p50"),
        p50,
        "ms",
    );
    report.goal(
        SECTION,
        &format!("standby lag at c={c}, p99"),
        p99,
        "ms",
        format!("≤ {GOAL_P99_MS:.0} ms"),
        p99 <= GOAL_P99_MS,
        false,
    );
    report.info(SECTION, "standby lag, max of every round", max, "ms");
    report.info(
        SECTION,
        &format!("gRPC calls/s on the active node during the lag rounds, c={c}"),
        median(rounds.iter().map(|r| r.calls_per_s)),
        "calls/s",
    );
    report.detail(
        "9_standby_lag",
        json!({
            "method": "Watch on the active node and on the standby, arrival times on the bench's clock",
            "rounds": rounds.iter().map(|r| json!({
                "records": r.lags_ms.len(),
                "p50_ms": r.quantile(0.50),
                "p99_ms": r.quantile(0.99),
                "max_ms": r.lags_ms.last(),
                "min_ms": r.lags_ms.first(),
                "calls_per_s": r.calls_per_s,
                "lagged_notices": r.lagged,
            })).collect::<Vec<_>>(),
        }),
    );
    Ok(())
}

/// `later − earlier` in ms, negative when `later` came first (the standby's event can reach the
/// bench before the active node's when the latter's watcher was slower).
fn signed_ms(earlier: Instant, later: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(earlier.duration_since(later).as_secs_f64() * 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_round() {
        let round = RoundLag {
            lags_ms: (1..=100).map(f64::from).collect(),
            calls_per_s: 0.0,
            lagged: 0,
        };
        assert_eq!(round.quantile(0.50), 50.0);
        assert_eq!(round.quantile(0.99), 99.0);
        assert_eq!(round.quantile(1.0), 100.0);
        let empty = RoundLag {
            lags_ms: Vec::new(),
            calls_per_s: 0.0,
            lagged: 0,
        };
        assert_eq!(empty.quantile(0.99), 0.0);
    }

    #[test]
    fn lags_are_signed() {
        let now = Instant::now();
        let later = now + Duration::from_millis(3);
        assert!((signed_ms(now, later) - 3.0).abs() < 1e-9);
        assert!((signed_ms(later, now) + 3.0).abs() < 1e-9);
    }
}
