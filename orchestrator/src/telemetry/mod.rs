//! Traces of calls over OpenTelemetry (OTLP/gRPC): the set-up ([`Telemetry::start`]), the spans a
//! call makes ([`spans`]), the trace context carried in and out ([`propagation`]) and the MCP
//! conventions' duration histograms ([`durations`]).
//!
//! The call path creates its spans through `tracing` with the target [`TARGET`]. Only the
//! OpenTelemetry layer listens to that target; the log never shows it. With no exporter configured
//! there is no such layer: every span of that target is disabled where it is created (one check of
//! its call site), and nothing is extracted, injected or exported.
//!
//! This module must never make a call wait for, or fail because of, the collector.

pub mod durations;
mod export;
mod grpc;
pub mod propagation;
pub mod spans;

use crate::config::TelemetrySettings;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use export::{QUEUE_SPANS, SpanCounts};
pub use grpc::GrpcTracing;

/// The `tracing` target of every span that is exported.
pub const TARGET: &str = "conductor::trace";

/// Where traces go and how many, once the configuration and the environment are read.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub endpoint: String,
    pub service_name: String,
    pub sampling_ratio: f64,
}

/// The configuration's `telemetry`, with the standard OpenTelemetry environment variables laid
/// over it (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
/// `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` with `OTEL_TRACES_SAMPLER_ARG`, `OTEL_SDK_DISABLED`);
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
    let sampling_ratio = match var("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
        None => settings.sampling_ratio,
        Some("always_on" | "parentbased_always_on") => 1.0,
        Some("always_off" | "parentbased_always_off") => 0.0,
        Some(kind @ ("traceidratio" | "parentbased_traceidratio")) => {
            match var("OTEL_TRACES_SAMPLER_ARG") {
                None => 1.0,
                Some(arg) => match arg.trim().parse::<f64>() {
                    Ok(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
                    _ => {
                        return Err(format!(
                            "OTEL_TRACES_SAMPLER_ARG: {arg:?} is not a ratio between 0.0 and 1.0 (for OTEL_TRACES_SAMPLER={kind})"
                        ));
                    }
                },
            }
        }
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER: {other:?} is not supported here; use parentbased_traceidratio (with OTEL_TRACES_SAMPLER_ARG), traceidratio, always_on or always_off (a caller's sampled flag is always followed)"
            ));
        }
    };
    Ok(Some(Resolved {
        endpoint,
        service_name,
        sampling_ratio,
    }))
}

/// The running exporter: its provider (kept alive for the process) and the handle that sends
/// what is queued at shutdown.
pub struct Telemetry {
    provider: SdkTracerProvider,
    flusher: export::Flusher,
    pub resolved: Resolved,
}

impl Telemetry {
    /// Builds the OTLP exporter (it connects lazily: a collector that is not up yet is no error)
    /// and the tracer provider, on the current tokio runtime.
    pub fn start(resolved: Resolved) -> Result<Self, String> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(resolved.endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| {
                format!(
                    "cannot build the OTLP exporter for {}: {e}",
                    resolved.endpoint
                )
            })?;
        let resource = Resource::builder()
            .with_service_name(resolved.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
        let (processor, flusher) = export::spawn(exporter);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                resolved.sampling_ratio,
            ))))
            .with_resource(resource)
            .build();
        Ok(Telemetry {
            provider,
            flusher,
            resolved,
        })
    }

    /// The `tracing` layer that turns the spans of [`TARGET`] (and only those) into
    /// OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer;
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("conductorio"))
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.target() == TARGET
            }))
    }

    /// Sends what is queued (at shutdown), waiting at most `within`.
    pub async fn flush(&self, within: Duration) {
        self.flusher.flush(within).await;
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self
            .provider
            .shutdown_with_timeout(Duration::from_millis(100));
    }
}

/// The directive that keeps the exported spans out of the log.
pub fn log_directive() -> tracing_subscriber::filter::Directive {
    format!("{TARGET}=off")
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::INFO.into())
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
            }
        );
        assert_eq!(
            resolve_with(&settings, &[("OTEL_SDK_DISABLED", "true")]),
            Ok(None)
        );
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
