//! Per-tool and per-rule figures: counts, success rate, latency percentiles (HDR histograms), violations.
//!
//! Rendered as Prometheus text for `/metrics` and as plain values for the status snapshot. Recording is a
//! short critical section on the hot path; it never allocates once a tool has been seen.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Latencies are recorded in microseconds, up to an hour, with 3 significant digits.
const MAX_LATENCY_US: u64 = 3_600_000_000;

#[derive(Debug, Clone)]
pub struct ToolStats {
    pub calls: u64,
    pub successes: u64,
    pub failures: u64,
    pub denials: u64,
    latency_us: Histogram<u64>,
}

impl ToolStats {
    fn new() -> Self {
        ToolStats {
            calls: 0,
            successes: 0,
            failures: 0,
            denials: 0,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    pub fn success_rate(&self) -> f64 {
        let finished = self.successes + self.failures;
        if finished == 0 {
            0.0
        } else {
            self.successes as f64 / finished as f64
        }
    }

    pub fn percentile_us(&self, q: f64) -> u64 {
        if self.latency_us.is_empty() {
            0
        } else {
            self.latency_us.value_at_quantile(q)
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RuleStats {
    pub kind: String,
    pub violations: u64,
}

#[derive(Default)]
struct Figures {
    tools: BTreeMap<String, ToolStats>,
    rules: BTreeMap<String, RuleStats>,
    workflows_started: u64,
    workflows_completed: u64,
    workflows_failed: u64,
    workflows_cancelled: u64,
    /// Refused control requests by action, each counted (the log aggregates them).
    control_refused: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Metrics {
    figures: Mutex<Figures>,
    /// Streamable HTTP sessions open on the MCP front.
    mcp_sessions: std::sync::atomic::AtomicUsize,
    /// `mcp.server.operation.duration` and `mcp.client.operation.duration`.
    pub operation_durations: crate::telemetry::durations::OperationDurations,
}

/// How a finished call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Success,
    Failure,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Figures) -> R) -> R {
        f(&mut self.figures.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The number of MCP sessions open on the HTTP front, as the front counts them.
    pub fn set_mcp_sessions(&self, open: usize) {
        self.mcp_sessions
            .store(open, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn mcp_sessions(&self) -> usize {
        self.mcp_sessions.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn call_finished(&self, tool: &str, counted: Counted, duration_us: u64) {
        self.with(|f| {
            let stats = tool_entry(&mut f.tools, tool);
            stats.calls += 1;
            match counted {
                Counted::Success => stats.successes += 1,
                Counted::Failure => stats.failures += 1,
            }
            let _ = stats
                .latency_us
                .record(duration_us.clamp(1, MAX_LATENCY_US));
        });
    }

    /// A denied call: counted for the tool and once for each rule that blocked it.
    pub fn call_denied<'a>(&self, tool: &str, rules: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.with(|f| {
            tool_entry(&mut f.tools, tool).denials += 1;
            for (id, kind) in rules {
                let rule = f.rules.entry(id.to_owned()).or_default();
                rule.kind = kind.to_owned();
                rule.violations += 1;
            }
        });
    }

    /// A refused control request (approve, deny, cancel, reload): every one is counted here, also
    /// those the audit log aggregates into one summary record.
    pub fn control_refused(&self, action: &str) {
        self.with(|f| {
            if let Some(n) = f.control_refused.get_mut(action) {
                *n += 1;
            } else {
                f.control_refused.insert(action.to_owned(), 1);
            }
        });
    }

    pub fn workflow_started(&self) {
        self.with(|f| f.workflows_started += 1);
    }

    pub fn workflow_finished(&self, state: crate::workflow::WorkflowState) {
        use crate::workflow::WorkflowState;
        self.with(|f| match state {
            WorkflowState::Completed => f.workflows_completed += 1,
            WorkflowState::Failed => f.workflows_failed += 1,
            WorkflowState::Cancelled => f.workflows_cancelled += 1,
            WorkflowState::Running | WorkflowState::WaitingApproval => {}
        });
    }

    pub fn tools(&self) -> BTreeMap<String, ToolStats> {
        self.with(|f| f.tools.clone())
    }

    pub fn rules(&self) -> BTreeMap<String, RuleStats> {
        self.with(|f| f.rules.clone())
    }

    pub fn total_violations(&self) -> u64 {
        self.with(|f| f.rules.values().map(|r| r.violations).sum())
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, extra: &[(&str, &str, f64)]) -> String {
        self.with(|f| {
            let mut out = String::new();
            family(&mut out, "conductor_tool_calls_total", "counter", "Finished calls per tool and outcome.");
            for (tool, s) in &f.tools {
                let tool = escape(tool);
                let _ = writeln!(out, "conductor_tool_calls_total{{tool=\"{tool}\",outcome=\"success\"}} {}", s.successes);
                let _ = writeln!(out, "conductor_tool_calls_total{{tool=\"{tool}\",outcome=\"failure\"}} {}", s.failures);
            }
            family(&mut out, "conductor_tool_denials_total", "counter", "Calls denied by policy, per tool.");
            for (tool, s) in &f.tools {
                let _ = writeln!(out, "conductor_tool_denials_total{{tool=\"{}\"}} {}", escape(tool), s.denials);
            }
            family(&mut out, "conductor_tool_success_ratio", "gauge", "Successful share of finished calls, per tool.");
            for (tool, s) in &f.tools {
                let _ = writeln!(out, "conductor_tool_success_ratio{{tool=\"{}\"}} {}", escape(tool), s.success_rate());
            }
            family(&mut out, "conductor_tool_latency_seconds", "summary", "Call latency per tool, through the orchestrator.");
            for (tool, s) in &f.tools {
                let tool = escape(tool);
                for q in [0.5, 0.95, 0.99] {
                    let seconds = s.percentile_us(q) as f64 / 1e6;
                    let _ = writeln!(out, "conductor_tool_latency_seconds{{tool=\"{tool}\",quantile=\"{q}\"}} {seconds}");
                }
                let sum = s.latency_us.mean() * s.latency_us.len() as f64 / 1e6;
                let _ = writeln!(out, "conductor_tool_latency_seconds_sum{{tool=\"{tool}\"}} {sum}");
                let _ = writeln!(out, "conductor_tool_latency_seconds_count{{tool=\"{tool}\"}} {}", s.latency_us.len());
            }
            family(&mut out, "conductor_rule_violations_total", "counter", "Denials per policy rule.");
            for (id, r) in &f.rules {
                let _ = writeln!(out, "conductor_rule_violations_total{{rule=\"{}\",kind=\"{}\"}} {}", escape(id), escape(&r.kind), r.violations);
            }
            family(&mut out, "conductor_workflows_total", "counter", "Workflows by how they ended (started counts all).");
            for (state, n) in [
                ("started", f.workflows_started),
                ("completed", f.workflows_completed),
                ("failed", f.workflows_failed),
                ("cancelled", f.workflows_cancelled),
            ] {
                let _ = writeln!(out, "conductor_workflows_total{{state=\"{state}\"}} {n}");
            }
            family(&mut out, "conductor_control_refused_total", "counter", "Refused control requests (approve, deny, cancel, reload) per action; the audit log aggregates repeated ones.");
            for (action, n) in &f.control_refused {
                let _ = writeln!(out, "conductor_control_refused_total{{action=\"{}\"}} {n}", escape(action));
            }
            for (name, help, value) in extra {
                family(&mut out, name, "gauge", help);
                let _ = writeln!(out, "{name} {value}");
            }
            out
        })
    }
}

/// The downstream servers' reachability in the Prometheus text format: `conductor_downstream_up` is
/// 1 for a server that answered its last check, 0 for one that did not; a child process no call has
/// started yet is left out (nothing to say of it).
pub fn render_downstream(health: &[crate::downstream::health::ServerHealth]) -> String {
    use crate::downstream::health::Reachability;
    let mut out = String::new();
    family(
        &mut out,
        "conductor_downstream_up",
        "gauge",
        "1 when the downstream server answered its last background check (gRPC health, or an MCP ping), 0 when it did not.",
    );
    for h in health {
        let up = match h.state {
            Reachability::Up => 1,
            Reachability::Down => 0,
            Reachability::NotStarted => continue,
        };
        let _ = writeln!(
            out,
            "conductor_downstream_up{{server=\"{}\",transport=\"{}\"}} {up}",
            escape(&h.server),
            h.transport
        );
    }
    out
}

fn tool_entry<'a>(tools: &'a mut BTreeMap<String, ToolStats>, tool: &str) -> &'a mut ToolStats {
    if !tools.contains_key(tool) {
        tools.insert(tool.to_owned(), ToolStats::new());
    }
    tools.get_mut(tool).expect("inserted above")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escape backslash, double quote and newline.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates() {
        let m = Metrics::default();
        for us in 1..=100 {
            m.call_finished(
                "t",
                if us % 10 == 0 {
                    Counted::Failure
                } else {
                    Counted::Success
                },
                us * 10,
            );
        }
        let tools = m.tools();
        let t = &tools["t"];
        assert_eq!((t.calls, t.successes, t.failures), (100, 90, 10));
        assert!((t.success_rate() - 0.9).abs() < 1e-9);
        let p50 = t.percentile_us(0.5);
        assert!((495..=505).contains(&p50), "p50 {p50}");
        assert!(t.percentile_us(0.99) >= 985);
    }

    #[test]
    fn prometheus_text_escapes_labels() {
        let m = Metrics::default();
        m.call_denied("a\"b", [("r\\1", "sequence")]);
        let text = m.render_prometheus(&[]);
        assert!(
            text.contains("conductor_tool_denials_total{tool=\"a\\\"b\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("conductor_rule_violations_total{rule=\"r\\\\1\",kind=\"sequence\"} 1"),
            "{text}"
        );
    }
}
