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

/// Reads `traceparent`, `tracestate` and `baggage` (writing is [`inject`]).
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
        let key = match key {
            "traceparent" => Ok(tonic::metadata::MetadataKey::from_static("traceparent")),
            other => tonic::metadata::MetadataKey::from_bytes(other.as_bytes()),
        };
        if let (Ok(key), Ok(mut value)) = (key, tonic::metadata::MetadataValue::try_from(value)) {
            // Never indexed by HPACK: a trace context differs on every call, so indexing it would
            // only search the table and evict the headers that do repeat.
            value.set_sensitive(true);
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
    with_current(|cx| inject(cx, &mut MetaWriter(meta)));
}

/// Writes the current span's context into an SDK request's `_meta`, creating it when needed.
pub fn inject_request_meta(meta: &mut Option<rmcp::model::RequestMetaObject>) {
    with_current(|cx| {
        inject(
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
            inject(cx, &mut MetaWriter(meta));
        }
    });
}

/// Writes the current span's context into a request's metadata (for a gRPC tool server).
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    with_current(|cx| inject(cx, &mut MetadataWriter(metadata)));
}

/// Writes `cx`'s span as `traceparent` (and `tracestate` when it has one) and its baggage when
/// there is any: what `TraceContextPropagator` and `BaggagePropagator` write, the `traceparent`
/// without their formatting machinery (every forwarded call writes one; bench figure 10).
fn inject(cx: &opentelemetry::Context, injector: &mut dyn Injector) {
    let span = cx.span();
    let context = span.span_context();
    let mut traceparent = [0u8; 55];
    traceparent[..3].copy_from_slice(b"00-");
    let ids = hex::encode_to_slice(context.trace_id().to_bytes(), &mut traceparent[3..35])
        .and_then(|()| hex::encode_to_slice(context.span_id().to_bytes(), &mut traceparent[36..52]))
        .and_then(|()| {
            let sampled = context.trace_flags() & opentelemetry::trace::TraceFlags::SAMPLED;
            hex::encode_to_slice([sampled.to_u8()], &mut traceparent[53..55])
        });
    traceparent[35] = b'-';
    traceparent[52] = b'-';
    if ids.is_err() {
        return;
    }
    // Hex digits and dashes are ASCII.
    injector.set(
        "traceparent",
        String::from_utf8(traceparent.to_vec()).unwrap_or_default(),
    );
    if *context.trace_state() != opentelemetry::trace::TraceState::NONE {
        injector.set("tracestate", context.trace_state().header());
    }
    use opentelemetry::baggage::BaggageExt;
    if !cx.baggage().is_empty() {
        BaggagePropagator::new().inject_context(cx, injector);
    }
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
            lower_hex(&context.trace_id().to_bytes()),
            lower_hex(&context.span_id().to_bytes()),
        )
    })
}

/// `bytes` as lowercase hex, written into one buffer (`hex::encode` goes through an iterator of
/// `char`s, and pushing `char`s checks capacity and encodes each one: every record of a traced call
/// needs two of these; bench figure 10).
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = vec![0u8; bytes.len() * 2];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    // Hex digits are ASCII.
    String::from_utf8(out).unwrap_or_default()
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
    fn what_is_injected_is_what_the_standard_propagators_read() {
        use opentelemetry::baggage::BaggageExt;
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let context = |flags: TraceFlags, state: TraceState| {
            SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                false,
                state,
            )
        };
        let plain = opentelemetry::Context::new()
            .with_remote_span_context(context(TraceFlags::SAMPLED, TraceState::NONE));
        let mut meta = Map::new();
        inject(&plain, &mut MetaWriter(&mut meta));
        assert_eq!(
            meta.get("traceparent").and_then(Value::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(meta.len(), 1, "no empty tracestate, no baggage: {meta:?}");
        // Into gRPC metadata, the same text, kept out of HPACK's table.
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&plain, &mut MetadataWriter(&mut metadata));
        let traceparent = metadata.get("traceparent").expect("a traceparent");
        assert_eq!(
            traceparent.to_str().ok(),
            meta.get("traceparent").and_then(Value::as_str)
        );
        assert!(traceparent.is_sensitive());

        let state = TraceState::from_key_value([("vendor", "x1")]).unwrap();
        let full = opentelemetry::Context::new()
            .with_remote_span_context(context(TraceFlags::default(), state))
            .with_baggage([opentelemetry::KeyValue::new("tenant", "acme corp")]);
        let mut meta = Map::new();
        inject(&full, &mut MetaWriter(&mut meta));
        assert_eq!(
            meta.get("traceparent").and_then(Value::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        );
        let read = from_meta(&meta).expect("a valid context");
        let span = read.span();
        assert_eq!(span.span_context().trace_state().header(), "vendor=x1");
        assert!(!span.span_context().is_sampled());
        assert_eq!(
            read.baggage().get("tenant").map(|v| v.to_string()),
            Some("acme corp".to_owned())
        );
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
        assert_eq!(lower_hex(&[0x00, 0xab, 0x9f, 0x10]), "00ab9f10");
    }
}
