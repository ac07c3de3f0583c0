//! A real OTLP/gRPC receiver for tests: the collector's `TraceService` and `MetricsService` on
//! `127.0.0.1:0`, keeping every span and every histogram point it is sent (with its resource's
//! `service.name`) for the test to read.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// One span as received, with its ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    /// 1 internal, 2 server, 3 client (the OTLP `SpanKind`).
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: Vec<(String, String)>,
    /// Links as (trace id, span id).
    pub links: Vec<(String, String)>,
    /// 2 is an error (the OTLP `StatusCode`).
    pub status_code: i32,
    pub duration: Duration,
    /// The span's events, in order.
    pub events: Vec<ReceivedEvent>,
}

/// One event of a span as received.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub name: String,
    pub attributes: Vec<(String, String)>,
}

impl ReceivedEvent {
    /// An attribute's value as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl ReceivedSpan {
    /// An attribute's value as text (arrays joined with `,`).
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One point of a histogram as received.
#[derive(Debug, Clone)]
pub struct ReceivedHistogram {
    pub service: String,
    /// The metric's name and unit.
    pub name: String,
    pub unit: String,
    pub attributes: Vec<(String, String)>,
    pub count: u64,
    pub bounds: Vec<f64>,
}

impl ReceivedHistogram {
    /// An attribute's value as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    pub url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    batches: Arc<Mutex<Vec<usize>>>,
    histograms: Arc<Mutex<Vec<ReceivedHistogram>>>,
    _stop: oneshot::Sender<()>,
}

struct MetricsCollector(Arc<Mutex<Vec<ReceivedHistogram>>>);

#[tonic::async_trait]
impl MetricsService for MetricsCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for metric in resource_metrics
                .scope_metrics
                .into_iter()
                .flat_map(|scope| scope.metrics)
            {
                let Some(Data::Histogram(histogram)) = metric.data else {
                    continue;
                };
                for point in histogram.data_points {
                    received.push(ReceivedHistogram {
                        service: service.clone(),
                        name: metric.name.clone(),
                        unit: metric.unit.clone(),
                        attributes: point
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(a)))
                            .collect(),
                        count: point.count,
                        bounds: point.explicit_bounds,
                    });
                }
            }
        }
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(received);
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The spans received, and how many each request carried.
struct Collector(Arc<Mutex<Vec<ReceivedSpan>>>, Arc<Mutex<Vec<usize>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(a)))
                            .collect(),
                        links: span
                            .links
                            .iter()
                            .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                            .collect(),
                        status_code: span.status.map_or(0, |s| s.code),
                        events: span
                            .events
                            .iter()
                            .map(|e| ReceivedEvent {
                                name: e.name.clone(),
                                attributes: e
                                    .attributes
                                    .iter()
                                    .map(|a| (a.key.clone(), text(a)))
                                    .collect(),
                            })
                            .collect(),
                        duration: Duration::from_nanos(
                            span.end_time_unix_nano
                                .saturating_sub(span.start_time_unix_nano),
                        ),
                    });
                }
            }
        }
        self.1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(received.len());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The `service.name` of a resource ("" without one).
fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .map(text)
        .unwrap_or_default()
}

fn text(attribute: &KeyValue) -> String {
    fn value(v: Option<&AnyValue>) -> String {
        match v {
            Some(AnyValue::StringValue(s)) => s.clone(),
            Some(AnyValue::BoolValue(b)) => b.to_string(),
            Some(AnyValue::IntValue(i)) => i.to_string(),
            Some(AnyValue::DoubleValue(d)) => d.to_string(),
            Some(AnyValue::ArrayValue(a)) => a
                .values
                .iter()
                .map(|v| value(v.value.as_ref()))
                .collect::<Vec<_>>()
                .join(","),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        }
    }
    value(attribute.value.as_ref().and_then(|v| v.value.as_ref()))
}

impl OtlpReceiver {
    /// Starts a receiver on `127.0.0.1:0` in the current runtime.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let batches = Arc::new(Mutex::new(Vec::new()));
        let histograms = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(Collector(spans.clone(), batches.clone()));
        let metrics = MetricsServiceServer::new(MetricsCollector(histograms.clone()));
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(metrics)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        OtlpReceiver {
            url,
            spans,
            batches,
            histograms,
            _stop: stop,
        }
    }

    /// Every histogram point received so far (each export of a cumulative histogram adds its
    /// points again).
    pub fn histograms(&self) -> Vec<ReceivedHistogram> {
        self.histograms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many spans each trace export request carried, in the order they came.
    pub fn batches(&self) -> Vec<usize> {
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits (up to 30 s) until `done` holds for the spans received, and returns them.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() > deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ({}) trace {} parent {}",
                            s.name, s.service, s.trace_id, s.parent_span_id
                        )
                    })
                    .collect();
                panic!("the OTLP receiver never got {what}; it got: {names:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
