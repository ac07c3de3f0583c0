//! `mcp.server.operation.duration` and `mcp.client.operation.duration`: histograms in seconds with
//! the MCP conventions' bucket boundaries, by method, tool and `error.type`, rendered on
//! `/metrics` as `mcp_server_operation_duration_seconds` and `mcp_client_operation_duration_seconds`,
//! and over OTLP when traces are exported ([`super::metrics`]).
//!
//! Recording is one short critical section that never allocates once a series exists (two when
//! the histograms are also exported).

use crate::metrics::escape;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// The MCP semantic conventions' `ExplicitBucketBoundaries` for both histograms, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Which side of an MCP exchange a duration was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// A request this orchestrator served (the MCP front).
    Server,
    /// A request this orchestrator sent to an MCP server.
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    side: Side,
    method: String,
    tool: String,
    error_type: String,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Counts per bucket (not cumulative), the last for values above every boundary.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

/// The histograms of one orchestrator (kept with its other figures, `crate::metrics::Metrics`).
#[derive(Debug, Default)]
pub struct OperationDurations {
    series: Mutex<BTreeMap<Series, Histogram>>,
}

impl OperationDurations {
    /// Records one operation.
    pub fn record(
        &self,
        side: Side,
        method: &str,
        tool: Option<&str>,
        error_type: Option<&str>,
        took: Duration,
    ) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUCKETS.len());
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let found = series.iter_mut().find(|(s, _)| {
            s.side == side
                && s.method == method
                && s.tool == tool.unwrap_or("")
                && s.error_type == error_type.unwrap_or("")
        });
        let histogram = match found {
            Some((_, histogram)) => histogram,
            None => series
                .entry(Series {
                    side,
                    method: method.to_owned(),
                    tool: tool.unwrap_or("").to_owned(),
                    error_type: error_type.unwrap_or("").to_owned(),
                })
                .or_default(),
        };
        histogram.counts[bucket] += 1;
        histogram.sum += seconds;
        drop(series);
        if let Some(exported) = super::metrics::exported()
            && !std::ptr::eq(exported, self)
        {
            exported.record(side, method, tool, error_type, took);
        }
    }

    /// Both histograms as OTLP metrics (cumulative from `start` to `now`, Unix nanoseconds); none
    /// when nothing was recorded.
    pub(super) fn to_otlp(
        &self,
        start: u64,
        now: u64,
    ) -> Vec<opentelemetry_proto::tonic::metrics::v1::Metric> {
        use opentelemetry_proto::tonic::metrics::v1::{
            AggregationTemporality, Histogram as OtlpHistogram, HistogramDataPoint, Metric,
            metric::Data,
        };
        let series = self
            .series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut metrics = Vec::new();
        for (side, name, description) in [
            (
                Side::Server,
                "mcp.server.operation.duration",
                "MCP requests served, from receipt to answer.",
            ),
            (
                Side::Client,
                "mcp.client.operation.duration",
                "MCP requests sent to MCP servers, from sending to answer.",
            ),
        ] {
            let data_points: Vec<HistogramDataPoint> = series
                .iter()
                .filter(|(s, _)| s.side == side)
                .map(|(s, histogram)| {
                    let mut attributes = vec![super::metrics::text("mcp.method.name", &s.method)];
                    if !s.tool.is_empty() {
                        attributes.push(super::metrics::text("gen_ai.tool.name", &s.tool));
                    }
                    if !s.error_type.is_empty() {
                        attributes.push(super::metrics::text("error.type", &s.error_type));
                    }
                    HistogramDataPoint {
                        attributes,
                        start_time_unix_nano: start,
                        time_unix_nano: now,
                        count: histogram.counts.iter().sum(),
                        sum: Some(histogram.sum),
                        bucket_counts: histogram.counts.to_vec(),
                        explicit_bounds: BUCKETS.to_vec(),
                        ..HistogramDataPoint::default()
                    }
                })
                .collect();
            if data_points.is_empty() {
                continue;
            }
            metrics.push(Metric {
                name: name.to_owned(),
                description: description.to_owned(),
                unit: "s".to_owned(),
                data: Some(Data::Histogram(OtlpHistogram {
                    data_points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Metric::default()
            });
        }
        metrics
    }

    /// Both histograms in the Prometheus text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let series = self
            .series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (side, name, help) in [
            (
                Side::Server,
                "mcp_server_operation_duration_seconds",
                "mcp.server.operation.duration: MCP requests served, from receipt to answer.",
            ),
            (
                Side::Client,
                "mcp_client_operation_duration_seconds",
                "mcp.client.operation.duration: MCP requests sent to MCP servers, from sending to answer.",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (s, histogram) in series.iter().filter(|(s, _)| s.side == side) {
                let mut labels = format!("mcp_method_name=\"{}\"", escape(&s.method));
                if !s.tool.is_empty() {
                    let _ = write!(labels, ",gen_ai_tool_name=\"{}\"", escape(&s.tool));
                }
                if !s.error_type.is_empty() {
                    let _ = write!(labels, ",error_type=\"{}\"", escape(&s.error_type));
                }
                let mut cumulative = 0;
                for (bound, count) in BUCKETS.iter().zip(histogram.counts) {
                    cumulative += count;
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                cumulative += histogram.counts[BUCKETS.len()];
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", histogram.sum);
                let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_into_the_conventions_buckets() {
        let durations = OperationDurations::default();
        durations.record(
            Side::Client,
            "unit/test",
            Some("t\"1"),
            None,
            Duration::from_millis(15),
        );
        durations.record(
            Side::Client,
            "unit/test",
            Some("t\"1"),
            None,
            Duration::from_secs(400),
        );
        durations.record(
            Side::Client,
            "unit/test",
            Some("t\"1"),
            Some("tool_error"),
            Duration::from_millis(5),
        );
        let mut out = String::new();
        durations.render_prometheus(&mut out);
        let series = "mcp_client_operation_duration_seconds_bucket{mcp_method_name=\"unit/test\",gen_ai_tool_name=\"t\\\"1\"";
        assert!(out.contains(&format!("{series},le=\"0.01\"}} 0")), "{out}");
        assert!(out.contains(&format!("{series},le=\"0.02\"}} 1")), "{out}");
        assert!(out.contains(&format!("{series},le=\"300\"}} 1")), "{out}");
        assert!(out.contains(&format!("{series},le=\"+Inf\"}} 2")), "{out}");
        assert!(out.contains("mcp_client_operation_duration_seconds_count{mcp_method_name=\"unit/test\",gen_ai_tool_name=\"t\\\"1\",error_type=\"tool_error\"} 1"), "{out}");
    }
}
