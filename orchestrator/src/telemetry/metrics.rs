//! The MCP conventions' duration histograms over OTLP: when traces are exported,
//! `mcp.server.operation.duration` and `mcp.client.operation.duration` also go to the collector
//! (beside `/metrics`), in seconds with the conventions' buckets, cumulative since the exporter
//! started, every `OTEL_METRIC_EXPORT_INTERVAL` and once more at shutdown.
//!
//! The process keeps one more copy of the histograms for this ([`super::durations`] records into
//! it only when it exists), and a task on the runtime sends it to the collector's
//! `MetricsService`. An export that fails is dropped and logged at debug level: it never holds up
//! a call.

use super::durations::OperationDurations;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// The histograms exported over OTLP, once an exporter is configured.
static EXPORTED: OnceLock<OperationDurations> = OnceLock::new();

/// The process's exported copy of the histograms, if metrics are exported.
pub(super) fn exported() -> Option<&'static OperationDurations> {
    EXPORTED.get()
}

/// A string attribute of OTLP.
pub(super) fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// Nanoseconds since the Unix epoch.
pub(super) fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The running metrics export: the way to ask for a last one.
pub(super) struct MetricsExport {
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

impl MetricsExport {
    /// Starts exporting to `endpoint` every `every` as `service_name`, each export carrying
    /// `headers` (it connects lazily: a collector that is not up yet is no error).
    pub(super) fn start(
        endpoint: &str,
        headers: tonic::metadata::MetadataMap,
        service_name: &str,
        every: Duration,
    ) -> Result<Self, String> {
        let channel = super::otlp::channel(endpoint, Duration::from_secs(5))
            .map_err(|e| format!("cannot export metrics: {e}"))?;
        let started = SystemTime::now();
        // One exporter a process: a second one would send the first one's histograms.
        let _ = EXPORTED.set(OperationDurations::default());
        let resource = Resource {
            attributes: vec![
                text("service.name", service_name),
                text("service.version", env!("CARGO_PKG_VERSION")),
            ],
            ..Resource::default()
        };
        let (flush, flushes) = mpsc::channel(1);
        tokio::spawn(run(
            MetricsServiceClient::new(channel),
            headers,
            resource,
            started,
            every,
            flushes,
        ));
        Ok(MetricsExport { flush })
    }

    /// Sends the histograms as they are now, waiting at most `within`.
    pub(super) async fn flush(&self, within: Duration) {
        let (done, flushed) = oneshot::channel();
        let asked = async {
            if self.flush.send(done).await.is_ok() {
                let _ = flushed.await;
            }
        };
        let _ = tokio::time::timeout(within, asked).await;
    }
}

/// Exports every `every`, and when asked; ends when the export is dropped.
async fn run(
    mut client: MetricsServiceClient<tonic::transport::Channel>,
    headers: tonic::metadata::MetadataMap,
    resource: Resource,
    started: SystemTime,
    every: Duration,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let done = tokio::select! {
            _ = ticks.tick() => None,
            asked = flushes.recv() => match asked {
                Some(done) => Some(done),
                None => return,
            },
        };
        let metrics = EXPORTED
            .get()
            .map(|durations| durations.to_otlp(unix_nanos(started), unix_nanos(SystemTime::now())))
            .unwrap_or_default();
        if !metrics.is_empty() {
            let request = ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    resource: Some(resource.clone()),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: "conductorio".to_owned(),
                            version: env!("CARGO_PKG_VERSION").to_owned(),
                            ..InstrumentationScope::default()
                        }),
                        metrics,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            let mut request = tonic::Request::new(request);
            *request.metadata_mut() = headers.clone();
            match tokio::time::timeout(Duration::from_secs(10), client.export(request)).await {
                Ok(Ok(_)) => {}
                Ok(Err(status)) => tracing::debug!(%status, "metrics not exported"),
                Err(_) => {
                    tracing::debug!("metrics not exported: the collector did not answer in time")
                }
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}
