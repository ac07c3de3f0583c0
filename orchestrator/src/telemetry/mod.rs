//! Traces of calls over OpenTelemetry (OTLP/gRPC): the set-up ([`Telemetry::start`]), the spans a
//! call makes ([`spans`]), the trace context carried in and out ([`propagation`]) and the MCP
//! conventions' duration histograms ([`durations`]).
//!
//! The call path makes its spans with the OpenTelemetry SDK's tracer ([`spans`]), never through
//! `tracing`: the log does not see them. With no exporter configured there is no tracer: no span
//! is made (one check of a static where each would be), and nothing is extracted, injected or
//! exported.
//!
//! This module must never make a call wait for, or fail because of, the collector.

pub mod durations;
mod export;
mod grpc;
mod metrics;
mod otlp;
pub mod propagation;
pub mod spans;

use crate::config::TelemetrySettings;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use export::{QUEUE_SPANS, SpanCounts};
pub use grpc::GrpcTracing;

/// Where traces go and how many, once the configuration and the environment are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub endpoint: String,
    pub service_name: String,
    /// The share of new traces sampled (0.0 to 1.0).
    pub sampling_ratio: f64,
    /// Whether a caller's sampled flag decides instead, when the call continues its trace (the
    /// `parentbased_*` samplers, and the configuration's `sampling_ratio`).
    pub parent_based: bool,
    /// How often the duration histograms are exported (`OTEL_METRIC_EXPORT_INTERVAL`, 60 s).
    pub metric_interval: Duration,
    /// The metadata every span export carries (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else
    /// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,…`, values percent-encoded).
    pub headers: Option<String>,
}

/// How often metrics are exported when `OTEL_METRIC_EXPORT_INTERVAL` does not say (its default).
const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(60);

/// The configuration's `telemetry`, with the standard OpenTelemetry environment variables laid
/// over it (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`,
/// `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `OTEL_EXPORTER_OTLP_HEADERS`);
/// `None` when nothing is to be exported. An unusable variable is an error naming it.
pub fn resolve(
    settings: &TelemetrySettings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Resolved>, String> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    if var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none") {
        return Ok(None);
    }
    let endpoint = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", v))
        .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|v| ("OTEL_EXPORTER_OTLP_ENDPOINT", v)))
    {
        Some((name, value)) => {
            let value = value.trim().to_owned();
            if let Some(problem) = crate::config::endpoint_problem(&value) {
                return Err(format!("{name}: {problem}"));
            }
            value
        }
        None => match &settings.otlp_endpoint {
            Some(endpoint) => endpoint.clone(),
            None => return Ok(None),
        },
    };
    let service_name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| settings.service_name.clone());
    let sampler = var("OTEL_TRACES_SAMPLER");
    let (sampling_ratio, parent_based) = match sampler.as_deref().map(str::trim) {
        None => (settings.sampling_ratio, true),
        Some("always_on") => (1.0, false),
        Some("always_off") => (0.0, false),
        Some("parentbased_always_on") => (1.0, true),
        Some("parentbased_always_off") => (0.0, true),
        Some(kind @ ("traceidratio" | "parentbased_traceidratio")) => {
            let ratio = match var("OTEL_TRACES_SAMPLER_ARG") {
                None => 1.0,
                Some(arg) => match arg.trim().parse::<f64>() {
                    Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
                    _ => {
                        return Err(format!(
                            "OTEL_TRACES_SAMPLER_ARG: {arg:?} is not a ratio between 0.0 and 1.0 (for OTEL_TRACES_SAMPLER={kind})"
                        ));
                    }
                },
            };
            (ratio, kind == "parentbased_traceidratio")
        }
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER: {other:?} is not supported here; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio (the ratio in OTEL_TRACES_SAMPLER_ARG)"
            ));
        }
    };
    let metric_interval = match var("OTEL_METRIC_EXPORT_INTERVAL") {
        None => DEFAULT_METRIC_INTERVAL,
        Some(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                return Err(format!(
                    "OTEL_METRIC_EXPORT_INTERVAL: {ms:?} is not a positive number of milliseconds"
                ));
            }
        },
    };
    let headers = match var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .map(|v| ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", v))
        .or_else(|| var("OTEL_EXPORTER_OTLP_HEADERS").map(|v| ("OTEL_EXPORTER_OTLP_HEADERS", v)))
    {
        Some((name, value)) => {
            otlp::parse_headers(&value).map_err(|problem| format!("{name}: {problem}"))?;
            Some(value)
        }
        None => None,
    };
    Ok(Some(Resolved {
        endpoint,
        service_name,
        sampling_ratio,
        parent_based,
        metric_interval,
        headers,
    }))
}

impl Resolved {
    /// The SDK's sampler for these settings.
    pub fn sampler(&self) -> Sampler {
        let own = match self.sampling_ratio {
            r if r >= 1.0 => Sampler::AlwaysOn,
            r if r <= 0.0 => Sampler::AlwaysOff,
            r => Sampler::TraceIdRatioBased(r),
        };
        if self.parent_based {
            Sampler::ParentBased(Box::new(own))
        } else {
            own
        }
    }
}

/// How long one export call to the collector may take.
const EXPORT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The running exporter: its provider (kept alive for the process) and the handle that sends
/// what is queued at shutdown.
pub struct Telemetry {
    provider: SdkTracerProvider,
    flusher: export::Flusher,
    metrics: metrics::MetricsExport,
    pub resolved: Resolved,
}

impl Telemetry {
    /// Builds the OTLP exporter (it connects lazily: a collector that is not up yet is no error)
    /// and the tracer provider, on the current tokio runtime.
    pub fn start(resolved: Resolved) -> Result<Self, String> {
        let resource = Resource::builder()
            .with_service_name(resolved.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let scope = opentelemetry::InstrumentationScope::builder("conductorio")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        // Checked already by `resolve`; read once here for both exports.
        let headers = match resolved.headers.as_deref() {
            Some(headers) => otlp::parse_headers(headers)?,
            None => tonic::metadata::MetadataMap::new(),
        };
        let exporter = otlp::Exporter::new(
            &resolved.endpoint,
            EXPORT_CALL_TIMEOUT,
            headers.clone(),
            &resource,
            &scope,
        )
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let metrics = metrics::MetricsExport::start(
            &resolved.endpoint,
            headers,
            &resolved.service_name,
            resolved.metric_interval,
        )?;
        let (processor, flusher) = export::spawn(exporter);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(resolved.sampler())
            .with_resource(resource)
            .build();
        spans::install(provider.tracer_with_scope(scope))?;
        Ok(Telemetry {
            provider,
            flusher,
            metrics,
            resolved,
        })
    }

    /// Sends what is queued and the histograms as they are (at shutdown), waiting at most
    /// `within` for each.
    pub async fn flush(&self, within: Duration) {
        tokio::join!(self.flusher.flush(within), self.metrics.flush(within));
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self
            .provider
            .shutdown_with_timeout(Duration::from_millis(100));
    }
}

/// The exporter's counts (of this process) as Prometheus text.
pub fn render_prometheus(out: &mut String) {
    let counts = &export::COUNTS;
    let _ = writeln!(
        out,
        "# HELP conductor_trace_spans_exported_total Spans sent to the OTLP collector.\n# TYPE conductor_trace_spans_exported_total counter\nconductor_trace_spans_exported_total {}",
        counts.exported.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP conductor_trace_spans_dropped_total Spans not exported: the queue was full, or their batch could not be sent (a collector down or slow); calls never wait for it.\n# TYPE conductor_trace_spans_dropped_total counter\nconductor_trace_spans_dropped_total{{reason=\"queue_full\"}} {}\nconductor_trace_spans_dropped_total{{reason=\"export_failed\"}} {}",
        counts.dropped_queue_full.load(Ordering::Relaxed),
        counts.dropped_export_failed.load(Ordering::Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_with(
        settings: &TelemetrySettings,
        vars: &[(&str, &str)],
    ) -> Result<Option<Resolved>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        resolve(settings, |name| vars.get(name).cloned())
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(resolve_with(&TelemetrySettings::default(), &[]), Ok(None));
        assert_eq!(
            resolve_with(&TelemetrySettings::default(), &[("OTEL_SERVICE_NAME", "x")]),
            Ok(None)
        );
    }

    #[test]
    fn the_environment_overrides_the_configuration() {
        let settings = TelemetrySettings {
            otlp_endpoint: Some("http://collector:4317".into()),
            service_name: "from-file".into(),
            sampling_ratio: 0.5,
        };
        let from_file = resolve_with(&settings, &[]).unwrap().unwrap();
        assert_eq!(from_file.endpoint, "http://collector:4317");
        assert_eq!(from_file.service_name, "from-file");
        assert_eq!(from_file.sampling_ratio, 0.5);
        let from_env = resolve_with(
            &settings,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
                ("OTEL_SERVICE_NAME", "gateway-a"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            from_env,
            Resolved {
                endpoint: "http://127.0.0.1:4317".into(),
                service_name: "gateway-a".into(),
                sampling_ratio: 0.25,
                parent_based: true,
                metric_interval: DEFAULT_METRIC_INTERVAL,
                headers: None,
            }
        );
        assert_eq!(
            resolve_with(&settings, &[("OTEL_SDK_DISABLED", "true")]),
            Ok(None)
        );
    }

    /// Whether `sampler` samples a new span under a caller's context that was not sampled.
    fn samples_under_unsampled_caller(sampler: &Sampler) -> bool {
        use opentelemetry::trace::{
            SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
        };
        use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let caller = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            trace_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::default(),
            true,
            TraceState::default(),
        ));
        sampler
            .should_sample(Some(&caller), trace_id, "s", &SpanKind::Server, &[], &[])
            .decision
            == SamplingDecision::RecordAndSample
    }

    #[test]
    fn the_standard_samplers_are_followed() {
        let settings = TelemetrySettings {
            otlp_endpoint: Some("http://collector:4317".into()),
            ..TelemetrySettings::default()
        };
        let with = |sampler: &str, arg: Option<&str>| {
            let mut vars = vec![("OTEL_TRACES_SAMPLER", sampler)];
            vars.extend(arg.map(|a| ("OTEL_TRACES_SAMPLER_ARG", a)));
            resolve_with(&settings, &vars).unwrap().unwrap()
        };
        for (sampler, arg, ratio, parent_based) in [
            ("always_on", None, 1.0, false),
            ("always_off", None, 0.0, false),
            ("traceidratio", Some("0.5"), 0.5, false),
            ("traceidratio", None, 1.0, false),
            ("parentbased_always_on", None, 1.0, true),
            ("parentbased_always_off", None, 0.0, true),
            ("parentbased_traceidratio", Some("0.5"), 0.5, true),
        ] {
            let resolved = with(sampler, arg);
            assert_eq!(
                (resolved.sampling_ratio, resolved.parent_based),
                (ratio, parent_based),
                "{sampler}"
            );
        }
        // The configuration's ratio is parent-based.
        assert!(resolve_with(&settings, &[]).unwrap().unwrap().parent_based);
        // traceidratio and always_on decide by themselves: a caller that did not sample its
        // trace does not stop them; the parent-based ones follow the caller.
        assert!(samples_under_unsampled_caller(
            &with("traceidratio", Some("1.0")).sampler()
        ));
        assert!(samples_under_unsampled_caller(
            &with("always_on", None).sampler()
        ));
        assert!(!samples_under_unsampled_caller(
            &with("parentbased_traceidratio", Some("1.0")).sampler()
        ));
        assert!(!samples_under_unsampled_caller(
            &with("parentbased_always_on", None).sampler()
        ));
        assert!(!samples_under_unsampled_caller(
            &with("always_off", None).sampler()
        ));
    }

    #[test]
    fn bad_variables_are_named() {
        let settings = TelemetrySettings::default();
        let err = resolve_with(
            &settings,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
        )
        .unwrap_err();
        assert!(err.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT:"), "{err}");
        let err = resolve_with(
            &settings,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ],
        )
        .unwrap_err();
        assert!(err.starts_with("OTEL_TRACES_SAMPLER_ARG:"), "{err}");
        let err = resolve_with(
            &settings,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_SAMPLER", "jaeger_remote"),
            ],
        )
        .unwrap_err();
        assert!(err.starts_with("OTEL_TRACES_SAMPLER:"), "{err}");
    }
}
