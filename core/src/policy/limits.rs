//! Per-tool limits: concurrency and token-bucket rates (per tool and per workflow), decided from the
//! state passed in. Pure arithmetic on the time given: nothing here reads a clock.

use super::{CallRequest, Name, PolicySet, RuleKind, RunningCalls, Violation};
use std::collections::HashMap;
use std::time::Duration;

/// At most `calls` calls per `per`, with bursts of up to `calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub calls: u32,
    pub per: Duration,
}

/// A token bucket: pure arithmetic on the time passed in, so the engine never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    updated_ms: i64,
}

impl TokenBucket {
    pub fn full(limit: RateLimit, now_ms: i64) -> Self {
        TokenBucket {
            tokens: f64::from(limit.calls),
            updated_ms: now_ms,
        }
    }

    fn refill_per_ms(limit: RateLimit) -> f64 {
        f64::from(limit.calls) / (limit.per.as_millis().max(1) as f64)
    }

    /// Tokens available at `now_ms`.
    pub fn available(&self, limit: RateLimit, now_ms: i64) -> f64 {
        let elapsed = now_ms.saturating_sub(self.updated_ms).max(0) as f64;
        (self.tokens + elapsed * Self::refill_per_ms(limit)).min(f64::from(limit.calls))
    }

    /// Milliseconds until one token is available (0 when one is).
    pub fn retry_after_ms(&self, limit: RateLimit, now_ms: i64) -> u64 {
        let missing = 1.0 - self.available(limit, now_ms);
        if missing <= 0.0 {
            0
        } else {
            (missing / Self::refill_per_ms(limit)).ceil() as u64
        }
    }

    pub fn take(&mut self, limit: RateLimit, now_ms: i64) {
        self.tokens = (self.available(limit, now_ms) - 1.0).max(0.0);
        self.updated_ms = now_ms.max(self.updated_ms);
    }
}

/// Token buckets by tool: one set for the whole orchestrator, one per workflow.
#[derive(Debug, Clone, Default)]
pub struct Buckets {
    by_tool: HashMap<Name, TokenBucket>,
}

impl Buckets {
    fn retry_after_ms(&self, tool: &str, limit: RateLimit, now_ms: i64) -> u64 {
        self.by_tool
            .get(tool)
            .map_or(0, |b| b.retry_after_ms(limit, now_ms))
    }

    fn take(&mut self, tool: &Name, limit: RateLimit, now_ms: i64) {
        self.by_tool
            .entry(tool.clone())
            .or_insert_with(|| TokenBucket::full(limit, now_ms))
            .take(limit, now_ms);
    }
}

/// Limits of one tool: concurrency and rates, each from a named rule.
#[derive(Debug, Clone, Default)]
pub struct ToolLimits {
    pub rule_id: Option<Name>,
    pub max_concurrent: Option<u32>,
    pub rate: Option<RateLimit>,
    pub rate_per_workflow: Option<RateLimit>,
    /// Per-call time-out, overriding the server's.
    pub timeout: Option<Duration>,
}

/// The rate-limit state a decision reads: the orchestrator's buckets and the workflow's.
#[derive(Debug, Clone, Copy)]
pub struct RateState<'a> {
    pub global: &'a Buckets,
    pub workflow: &'a Buckets,
}

/// Takes a token from every bucket that limits an allowed call.
pub fn consume(
    policies: &PolicySet,
    tool: &Name,
    global: &mut Buckets,
    workflow: &mut Buckets,
    now_ms: i64,
) {
    let Some(limits) = policies.tool(tool).map(|p| &p.limits) else {
        return;
    };
    if let Some(limit) = limits.rate {
        global.take(tool, limit, now_ms);
    }
    if let Some(limit) = limits.rate_per_workflow {
        workflow.take(tool, limit, now_ms);
    }
}

pub(super) fn limit_violations(
    limits: &ToolLimits,
    running: &RunningCalls,
    rates: RateState<'_>,
    call: &CallRequest<'_>,
    out: &mut Vec<Violation>,
) {
    let rule_id = limits.rule_id.as_deref().unwrap_or("limits").to_owned();
    if let Some(max) = limits.max_concurrent {
        let now_running = running.count(call.tool);
        if now_running >= max as usize {
            out.push(Violation {
                rule_id: rule_id.clone(),
                rule_kind: RuleKind::Concurrency,
                tool: call.tool.to_owned(),
                message: format!(
                    "{} allows at most {max} call(s) at a time and {now_running} are running",
                    call.tool
                ),
                unblock_hint: format!("wait: retry when a running {} call has finished", call.tool),
                required_tools: Vec::new(),
                retry_after_ms: None,
            });
        }
    }
    let buckets = [
        (limits.rate, rates.global, "across the orchestrator"),
        (limits.rate_per_workflow, rates.workflow, "in this workflow"),
    ];
    for (limit, buckets, scope) in buckets {
        let Some(limit) = limit else { continue };
        let retry = buckets.retry_after_ms(call.tool, limit, call.now_ms);
        if retry > 0 {
            out.push(Violation {
                rule_id: rule_id.clone(),
                rule_kind: RuleKind::RateLimit,
                tool: call.tool.to_owned(),
                message: format!(
                    "{} is limited to {} call(s) per {} {scope}, and the limit is reached",
                    call.tool,
                    limit.calls,
                    humantime::format_duration(limit.per)
                ),
                unblock_hint: format!(
                    "retry in {}",
                    humantime::format_duration(Duration::from_millis(retry))
                ),
                required_tools: Vec::new(),
                retry_after_ms: Some(retry),
            });
        }
    }
}
