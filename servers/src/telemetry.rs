//! Traces of the tool servers: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, each `CallTool` is a SERVER
//! span (the gRPC conventions' `conductor.v1.ToolService/CallTool`) continuing the trace whose
//! context the orchestrator put in the request's metadata, exported over OTLP/gRPC in batches.
//!
//! One set-up for the five servers. Without the variable nothing is exported and the spans are
//! disabled where they are created. Export never holds up a call.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of the exported spans.
pub const TARGET: &str = "conductor::trace";

/// The exporter of a server process, from the standard environment variables
/// (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`,
/// `OTEL_SDK_DISABLED`); `None` when none is set. Must be called on the tokio runtime.
pub fn from_env(default_service: &str) -> Result<Option<SdkTracerProvider>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let Some(endpoint) =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.trim())
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT {endpoint:?}: {e}"))?;
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned());
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build(),
    ))
}

/// The layer that exports the spans of [`TARGET`] (and only those) through `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("conductorio-servers"))
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.target() == TARGET
        }))
}

struct MetadataCarrier<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// The SERVER span of one `CallTool`, continuing the caller's trace from the request's metadata.
pub fn call_span(server: &str, tool: &str, metadata: &tonic::metadata::MetadataMap) -> Span {
    let span = tracing::info_span!(
        target: "conductor::trace",
        "conductor.v1.ToolService/CallTool",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "conductor.v1.ToolService",
        rpc.method = "CallTool",
        gen_ai.tool.name = tool,
        conductor.server = server,
    );
    if span.is_disabled() {
        return span;
    }
    if metadata.get("traceparent").is_some() {
        let parent = TraceContextPropagator::new().extract(&MetadataCarrier(metadata));
        let _ = span.set_parent(parent);
    }
    span
}

/// Marks a call's span failed: `error.type` is the tool's error code, or the gRPC refusal.
pub fn failed(span: &Span, error_type: &str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("error.type", error_type.to_owned());
    span.set_status(opentelemetry::trace::Status::error(error_type.to_owned()));
}
