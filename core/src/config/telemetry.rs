//! `telemetry`: where the orchestrator sends its traces (OTLP over gRPC), under which service name,
//! and which share of the traces it starts it keeps. Absent, nothing is exported and nothing beyond
//! the log is done per call.
//!
//! Checked here: the shape, the endpoint's scheme, the ratio's range. The standard environment
//! variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER(_ARG)`)
//! override these at start-up: that is the orchestrator's to read, not the configuration's.

use super::check::Checker;
use serde::Deserialize;

/// `telemetry` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// The OTLP/gRPC endpoint, e.g. "http://127.0.0.1:4317".
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans (default "conductorio").
    #[serde(default)]
    pub service_name: Option<String>,
    /// The share of new traces kept, 0.0 to 1.0 (default 1.0); a caller's sampled flag is followed.
    #[serde(default)]
    pub sampling_ratio: Option<f64>,
}

/// The checked `telemetry`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    pub sampling_ratio: f64,
}

/// The `service.name` unless configured.
pub const DEFAULT_SERVICE_NAME: &str = "conductorio";

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            sampling_ratio: 1.0,
        }
    }
}

/// Whether `endpoint` is an address an OTLP/gRPC exporter can dial.
pub fn endpoint_problem(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    match rest {
        None => Some(format!(
            "{endpoint:?} is not an http:// or https:// URL (e.g. \"http://127.0.0.1:4317\")"
        )),
        Some(rest) if rest.trim_end_matches('/').is_empty() => {
            Some(format!("{endpoint:?} names no host"))
        }
        Some(_) => None,
    }
}

pub(super) fn check_telemetry(c: &mut Checker, raw: &RawTelemetry) -> TelemetrySettings {
    let mut settings = TelemetrySettings::default();
    if let Some(endpoint) = &raw.otlp_endpoint {
        match endpoint_problem(endpoint) {
            Some(problem) => c.problem("telemetry.otlp_endpoint", problem),
            None => settings.otlp_endpoint = Some(endpoint.clone()),
        }
    }
    if let Some(name) = &raw.service_name {
        if name.trim().is_empty() {
            c.problem("telemetry.service_name", "must not be empty");
        } else {
            settings.service_name = name.clone();
        }
    }
    if let Some(ratio) = raw.sampling_ratio {
        if (0.0..=1.0).contains(&ratio) {
            settings.sampling_ratio = ratio;
        } else {
            c.problem(
                "telemetry.sampling_ratio",
                format!("{ratio} is not between 0.0 and 1.0"),
            );
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_need_a_scheme_and_a_host() {
        assert_eq!(endpoint_problem("http://127.0.0.1:4317"), None);
        assert_eq!(endpoint_problem("https://otel.example:4317/"), None);
        assert!(endpoint_problem("127.0.0.1:4317").is_some_and(|p| p.contains("not an http")));
        assert!(endpoint_problem("http://").is_some_and(|p| p.contains("no host")));
    }
}
