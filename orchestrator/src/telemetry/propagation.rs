//! The W3C trace context (`traceparent`, `tracestate`) and `baggage`, read from what a caller sent
//! and written into what is sent downstream: MCP's `params._meta` (SEP-414), HTTP headers and gRPC
//! metadata.
//!
//! Every function here reads or writes only when spans are exported and the current context holds
//! one: an unexported span has no context to give and takes none.

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use serde_json::{Map, Value};
use std::sync::LazyLock;

static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});

/// `_meta` as a carrier: string values only.
struct MetaCarrier<'a>(&'a Map<String, Value>);

impl Extractor for MetaCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

struct MetaWriter<'a>(&'a mut Map<String, Value>);

impl Injector for MetaWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), Value::String(value));
    }
}

/// HTTP headers as a carrier.
pub struct HeaderCarrier<'a>(pub &'a axum::http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

struct MetadataCarrier<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for MetadataCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct MetadataWriter<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// The caller's context in `_meta`, if it carries a valid `traceparent`.
pub fn from_meta(meta: &Map<String, Value>) -> Option<opentelemetry::Context> {
    meta.get("traceparent")?;
    valid(PROPAGATOR.extract(&MetaCarrier(meta)))
}

/// The caller's context in HTTP headers, if they carry a valid `traceparent`.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<opentelemetry::Context> {
    headers.get("traceparent")?;
    valid(PROPAGATOR.extract(&HeaderCarrier(headers)))
}

/// The caller's context in gRPC metadata, if it carries a valid `traceparent`.
pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<opentelemetry::Context> {
    metadata.get("traceparent")?;
    valid(PROPAGATOR.extract(&MetadataCarrier(metadata)))
}

fn valid(cx: opentelemetry::Context) -> Option<opentelemetry::Context> {
    cx.span().span_context().is_valid().then_some(cx)
}

/// Runs `f` with the current context, if it holds an exported span (never without an exporter).
fn with_current<T>(f: impl FnOnce(&opentelemetry::Context) -> T) -> Option<T> {
    if !super::spans::enabled() {
        return None;
    }
    opentelemetry::Context::map_current(|cx| cx.span().span_context().is_valid().then(|| f(cx)))
}

/// Writes the current span's context into a request's `_meta` (for an MCP server).
pub fn inject_meta(meta: &mut Map<String, Value>) {
    with_current(|cx| PROPAGATOR.inject_context(cx, &mut MetaWriter(meta)));
}

/// Writes the current span's context into an SDK request's `_meta`, creating it when needed.
pub fn inject_request_meta(meta: &mut Option<rmcp::model::RequestMetaObject>) {
    with_current(|cx| {
        PROPAGATOR.inject_context(
            cx,
            &mut MetaWriter(&mut meta.get_or_insert_with(Default::default).0.0),
        )
    });
}

/// Writes the current span's context into the `_meta` of a request's params (a JSON object).
pub fn inject_params(params: &mut Value) {
    with_current(|cx| {
        if let Value::Object(params) = params
            && let Value::Object(meta) = params
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()))
        {
            PROPAGATOR.inject_context(cx, &mut MetaWriter(meta));
        }
    });
}

/// Writes the current span's context into a request's metadata (for a gRPC tool server).
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    with_current(|cx| PROPAGATOR.inject_context(cx, &mut MetadataWriter(metadata)));
}

/// Where a record made now sits in its trace, for the audit log (none when nothing is exported).
pub fn trace_ref() -> Option<conductor_core::events::TraceRef> {
    current_ids().map(|(trace_id, span_id)| conductor_core::events::TraceRef { trace_id, span_id })
}

/// The current span's trace id and span id (lowercase hex), when it is exported.
pub fn current_ids() -> Option<(String, String)> {
    with_current(|cx| {
        let span = cx.span();
        let context = span.span_context();
        (
            context.trace_id().to_string(),
            context.span_id().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_in_meta_is_read_and_a_bad_one_ignored() {
        let mut meta = Map::new();
        meta.insert(
            "traceparent".into(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        );
        meta.insert("baggage".into(), "tenant=acme".into());
        let cx = from_meta(&meta).expect("a valid context");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(cx.span().span_context().is_remote());
        use opentelemetry::baggage::BaggageExt;
        assert_eq!(
            cx.baggage().get("tenant").map(|v| v.to_string()),
            Some("acme".to_owned())
        );
        meta.insert("traceparent".into(), "00-zz-00f067aa0ba902b7-01".into());
        assert!(from_meta(&meta).is_none());
        assert!(from_meta(&Map::new()).is_none());
    }

    #[test]
    fn nothing_is_injected_without_an_exported_span() {
        let mut meta = Map::new();
        inject_meta(&mut meta);
        assert!(meta.is_empty());
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject_metadata(&mut metadata);
        assert!(metadata.is_empty());
        assert_eq!(current_ids(), None);
    }
}
