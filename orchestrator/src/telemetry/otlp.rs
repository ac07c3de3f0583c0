//! Spans over OTLP/gRPC: a batch of the SDK's `SpanData` encoded straight into the protobuf wire
//! format of `ExportTraceServiceRequest`, and sent with one plain tonic unary call.
//!
//! Why not `opentelemetry-otlp`'s span exporter: it cloned every batch (kept for its retries),
//! converted the clone into `opentelemetry-proto`'s message structs (a new `String` for every key and
//! every value, the keys through `Display`) and then encoded those, about half of what exporting cost
//! a call (bench figure 10). Here a batch is encoded once, into one buffer, and a retry sends the same
//! bytes again. The resource and the scope, the same for every batch, are encoded once, with
//! `opentelemetry-proto`'s own types; the tests hold the spans' bytes to that crate's conversion and
//! encoding, byte for byte.

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::trace::SpanData;
use prost::Message as _;
use prost::encoding::{WireType, encoded_len_varint, key_len};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Bytes;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// The collector's method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Attempts at one batch (a collector restarting, or asking to slow down), the same bytes each time.
const ATTEMPTS: u32 = 3;
/// The wait before the second attempt; doubled before each later one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The spans' destination: a lazily connected channel to the collector, the metadata every export
/// carries (`OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS`), and the encoded
/// `ResourceSpans` fields that come before the spans.
pub struct Exporter {
    channel: Channel,
    metadata: MetadataMap,
    encoder: BatchEncoder,
}

impl Exporter {
    /// An exporter to `endpoint` ([`channel`]), each call given `timeout` and carrying `metadata`
    /// (see [`parse_headers`]). It connects on first use: a collector that is not up yet is no
    /// error.
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        metadata: MetadataMap,
        resource: &opentelemetry_sdk::Resource,
        scope: &opentelemetry::InstrumentationScope,
    ) -> Result<Self, String> {
        Ok(Exporter {
            channel: channel(endpoint, timeout)?,
            metadata,
            encoder: BatchEncoder::new(resource, scope),
        })
    }

    /// Sends `spans` as one request, trying again on a failure the collector may get over. The
    /// batch is encoded once.
    pub async fn export(&self, spans: &[SpanData]) -> Result<(), tonic::Status> {
        let body = Bytes::from(self.encoder.encode(spans));
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.send(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(status) if attempt < ATTEMPTS && retryable(&status) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(status) => return Err(status),
            }
        }
    }

    async fn send(&self, body: Bytes) -> Result<(), tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("the collector: {e}")))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH);
        let response = grpc.unary(request, path, EncodedCodec).await?;
        if let Some(partial) = response.into_inner().partial_success
            && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
        {
            tracing::debug!(
                rejected = partial.rejected_spans,
                message = partial.error_message,
                "the collector rejected some spans"
            );
        }
        Ok(())
    }
}

/// A channel to the collector at `endpoint` (`http://`, or `https://` verified against the system's
/// roots), each call given `timeout`; it connects on first use.
pub fn channel(endpoint: &str, timeout: Duration) -> Result<Channel, String> {
    let mut channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| format!("the OTLP endpoint {endpoint:?} is not a URL: {e}"))?
        .timeout(timeout)
        .connect_timeout(timeout);
    if endpoint.starts_with("https://") {
        channel = channel
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(|e| format!("TLS to the OTLP endpoint {endpoint}: {e}"))?;
    }
    Ok(channel.connect_lazy())
}

/// The codes the OTLP specification calls retryable.
fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
            | Code::ResourceExhausted
    )
}

/// `OTEL_EXPORTER_OTLP_HEADERS` as gRPC metadata: `key=value` pairs separated by commas, values
/// percent-encoded (the OpenTelemetry specification's format). A pair that does not parse is an error
/// naming it.
pub fn parse_headers(headers: &str) -> Result<MetadataMap, String> {
    let mut metadata = MetadataMap::new();
    for pair in headers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("OTLP header {pair:?} is not key=value"));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = percent_decode(value.trim()).ok_or_else(|| {
            format!("OTLP header {key:?}: its value is not valid percent-encoding")
        })?;
        let name = MetadataKey::from_bytes(key.as_bytes())
            .map_err(|_| format!("OTLP header {key:?} is not a valid header name"))?;
        let value = MetadataValue::try_from(value.as_str())
            .map_err(|_| format!("OTLP header {key:?}: its value is not a valid header value"))?;
        metadata.append(name, value);
    }
    Ok(metadata)
}

/// `%XX` escapes decoded (UTF-8); `None` for a broken escape.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits, no more: `from_str_radix` alone would also take a sign (`%+1`).
            let hex = text.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Sends an already encoded request; reads the collector's answer with prost.
#[derive(Clone, Copy)]
struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        prost::bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl Decoder for EncodedCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("the collector's answer: {e}")))
    }
}

/// What a batch's request looks like around its spans: one `ResourceSpans` (the process's resource)
/// holding one `ScopeSpans` (the tracer's scope).
struct BatchEncoder {
    /// `ResourceSpans.resource`, encoded with its key.
    resource: Vec<u8>,
    /// `ScopeSpans.scope`, encoded with its key.
    scope: Vec<u8>,
    /// `ResourceSpans.schema_url` and `ScopeSpans.schema_url`, encoded with their keys (empty when
    /// there is none).
    resource_schema: Vec<u8>,
    scope_schema: Vec<u8>,
}

impl BatchEncoder {
    fn new(
        resource: &opentelemetry_sdk::Resource,
        scope: &opentelemetry::InstrumentationScope,
    ) -> Self {
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        let with_schema = ResourceAttributesWithSchema::from(resource);
        let proto_resource = opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: with_schema.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: vec![],
        };
        let proto_scope =
            opentelemetry_proto::tonic::common::v1::InstrumentationScope::from((scope, None));
        let message = |tag: u32, body: Vec<u8>| {
            let mut out = Vec::with_capacity(body.len() + 6);
            put_len(&mut out, tag, body.len());
            out.extend_from_slice(&body);
            out
        };
        let string = |tag: u32, text: &str| {
            let mut out = Vec::new();
            put_bytes(&mut out, tag, text.as_bytes());
            out
        };
        BatchEncoder {
            resource: message(1, proto_resource.encode_to_vec()),
            scope: message(1, proto_scope.encode_to_vec()),
            resource_schema: string(3, with_schema.schema_url.as_deref().unwrap_or_default()),
            scope_schema: string(3, scope.schema_url().unwrap_or_default()),
        }
    }

    /// The `ExportTraceServiceRequest` of `spans`.
    fn encode(&self, spans: &[SpanData]) -> Vec<u8> {
        let span_lens: Vec<usize> = spans.iter().map(span_len).collect();
        let scope_spans = self.scope.len()
            + span_lens
                .iter()
                .map(|&n| len_delimited(2, n))
                .sum::<usize>()
            + self.scope_schema.len();
        let resource_spans =
            self.resource.len() + len_delimited(2, scope_spans) + self.resource_schema.len();
        let mut out = Vec::with_capacity(len_delimited(1, resource_spans));
        put_len(&mut out, 1, resource_spans);
        out.extend_from_slice(&self.resource);
        put_len(&mut out, 2, scope_spans);
        out.extend_from_slice(&self.scope);
        for (span, &n) in spans.iter().zip(&span_lens) {
            put_len(&mut out, 2, n);
            put_span(&mut out, span);
        }
        out.extend_from_slice(&self.scope_schema);
        out.extend_from_slice(&self.resource_schema);
        out
    }
}

// Field numbers and rules: opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto.
// Fields are written in the order of their numbers (prost's order), and the proto3 defaults (0,
// empty) of plain fields are left out, as prost leaves them.

fn len_delimited(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn bytes_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { len_delimited(tag, len) }
}

fn fixed64_len(tag: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 8 }
}

fn fixed32_len(tag: u32, value: u32) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 4 }
}

fn uint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// A varint (prost's writes byte by byte through `BufMut`; most of ours are one byte).
fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A field's key: its number and wire type.
fn encode_key(tag: u32, wire_type: WireType, out: &mut Vec<u8>) {
    encode_varint((u64::from(tag) << 3) | wire_type as u64, out);
}

fn put_len(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len(out, tag, bytes.len());
        out.extend_from_slice(bytes);
    }
}

fn put_fixed64(out: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn put_fixed32(out: &mut Vec<u8>, tag: u32, value: u32) {
    if value != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

fn put_uint(out: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Span.flags`: the trace flags, and whether the parent was remote (with the bit saying that
/// this is known).
fn span_flags(trace_flags: u8, parent_is_remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(trace_flags) | HAS_IS_REMOTE | if parent_is_remote { IS_REMOTE } else { 0 }
}

fn status_fields(status: &Status) -> (&str, u64) {
    match status {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (description, 2),
    }
}

fn status_len(status: &Status) -> usize {
    let (message, code) = status_fields(status);
    bytes_len(2, message.len()) + uint_len(3, code)
}

/// One element of an array attribute, or the value of a scalar one.
enum Scalar<'a> {
    Bool(bool),
    Int(i64),
    Double(f64),
    Text(&'a str),
}

fn scalar_len(value: &Scalar<'_>) -> usize {
    match value {
        Scalar::Bool(_) => key_len(2) + 1,
        Scalar::Int(i) => key_len(3) + encoded_len_varint(*i as u64),
        Scalar::Double(_) => key_len(4) + 8,
        Scalar::Text(s) => len_delimited(1, s.len()),
    }
}

fn put_scalar(out: &mut Vec<u8>, value: &Scalar<'_>) {
    // A oneof member is written even when it holds its type's default.
    match value {
        Scalar::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            encode_varint(u64::from(*b), out);
        }
        Scalar::Int(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        Scalar::Double(d) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&d.to_bits().to_le_bytes());
        }
        Scalar::Text(s) => {
            put_len(out, 1, s.len());
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Calls `each` with every element of `array` (an `ArrayValue`'s values).
fn for_each_element(array: &Array, mut each: impl FnMut(Scalar<'_>)) {
    match array {
        Array::Bool(values) => values.iter().for_each(|&b| each(Scalar::Bool(b))),
        Array::I64(values) => values.iter().for_each(|&i| each(Scalar::Int(i))),
        Array::F64(values) => values.iter().for_each(|&d| each(Scalar::Double(d))),
        Array::String(values) => values
            .iter()
            .for_each(|s: &StringValue| each(Scalar::Text(s.as_str()))),
        // A kind of array this version does not know: written empty.
        _ => {}
    }
}

fn array_len(array: &Array) -> usize {
    let mut len = 0;
    for_each_element(array, |element| {
        len += len_delimited(1, scalar_len(&element))
    });
    len
}

/// The body of an `AnyValue`.
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(b) => scalar_len(&Scalar::Bool(*b)),
        Value::I64(i) => scalar_len(&Scalar::Int(*i)),
        Value::F64(d) => scalar_len(&Scalar::Double(*d)),
        Value::String(s) => scalar_len(&Scalar::Text(s.as_str())),
        Value::Array(array) => len_delimited(5, array_len(array)),
        // A kind of value this version does not know: an empty `AnyValue`.
        _ => 0,
    }
}

fn put_any_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => put_scalar(out, &Scalar::Bool(*b)),
        Value::I64(i) => put_scalar(out, &Scalar::Int(*i)),
        Value::F64(d) => put_scalar(out, &Scalar::Double(*d)),
        Value::String(s) => put_scalar(out, &Scalar::Text(s.as_str())),
        Value::Array(array) => {
            put_len(out, 5, array_len(array));
            for_each_element(array, |element| {
                put_len(out, 1, scalar_len(&element));
                put_scalar(out, &element);
            });
        }
        _ => {}
    }
}

/// The body of a `KeyValue`.
fn key_value_len(kv: &KeyValue) -> usize {
    bytes_len(1, kv.key.as_str().len()) + len_delimited(2, any_value_len(&kv.value))
}

fn attributes_len(tag: u32, attributes: &[KeyValue]) -> usize {
    attributes
        .iter()
        .map(|kv| len_delimited(tag, key_value_len(kv)))
        .sum()
}

fn put_attributes(out: &mut Vec<u8>, tag: u32, attributes: &[KeyValue]) {
    for kv in attributes {
        let key = kv.key.as_str();
        let value = any_value_len(&kv.value);
        put_len(out, tag, bytes_len(1, key.len()) + len_delimited(2, value));
        put_bytes(out, 1, key.as_bytes());
        put_len(out, 2, value);
        put_any_value(out, &kv.value);
    }
}

fn event_len(event: &opentelemetry::trace::Event) -> usize {
    fixed64_len(1, nanos(event.timestamp))
        + bytes_len(2, event.name.len())
        + attributes_len(3, &event.attributes)
        + uint_len(4, u64::from(event.dropped_attributes_count))
}

fn link_len(link: &opentelemetry::trace::Link, trace_state: &str) -> usize {
    let context = &link.span_context;
    len_delimited(1, 16)
        + len_delimited(2, 8)
        + bytes_len(3, trace_state.len())
        + attributes_len(4, &link.attributes)
        + uint_len(5, u64::from(link.dropped_attributes_count))
        + fixed32_len(
            6,
            span_flags(context.trace_flags().to_u8(), context.is_remote()),
        )
}

/// The body of a `Span`.
fn span_len(span: &SpanData) -> usize {
    let context = &span.span_context;
    let parent = span.parent_span_id != opentelemetry::trace::SpanId::INVALID;
    len_delimited(1, 16)
        + len_delimited(2, 8)
        + bytes_len(3, trace_state_len(context.trace_state()))
        + if parent { len_delimited(4, 8) } else { 0 }
        + fixed32_len(
            16,
            span_flags(context.trace_flags().to_u8(), span.parent_span_is_remote),
        )
        + bytes_len(5, span.name.len())
        + uint_len(6, kind(&span.span_kind))
        + fixed64_len(7, nanos(span.start_time))
        + fixed64_len(8, nanos(span.end_time))
        + attributes_len(9, &span.attributes)
        + uint_len(10, u64::from(span.dropped_attributes_count))
        + span
            .events
            .iter()
            .map(|event| len_delimited(11, event_len(event)))
            .sum::<usize>()
        + uint_len(12, u64::from(span.events.dropped_count))
        + span
            .links
            .iter()
            .map(|link| {
                let state = link.span_context.trace_state().header();
                len_delimited(13, link_len(link, &state))
            })
            .sum::<usize>()
        + uint_len(14, u64::from(span.links.dropped_count))
        + len_delimited(15, status_len(&span.status))
}

/// The length of a trace state's header, without building it when it is empty (the usual case).
fn trace_state_len(state: &opentelemetry::trace::TraceState) -> usize {
    if *state == opentelemetry::trace::TraceState::NONE {
        0
    } else {
        state.header().len()
    }
}

fn put_trace_state(out: &mut Vec<u8>, tag: u32, state: &opentelemetry::trace::TraceState) {
    if *state != opentelemetry::trace::TraceState::NONE {
        put_bytes(out, tag, state.header().as_bytes());
    }
}

fn put_span(out: &mut Vec<u8>, span: &SpanData) {
    let context = &span.span_context;
    put_bytes(out, 1, &context.trace_id().to_bytes());
    put_bytes(out, 2, &context.span_id().to_bytes());
    put_trace_state(out, 3, context.trace_state());
    if span.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        put_bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    put_bytes(out, 5, span.name.as_bytes());
    put_uint(out, 6, kind(&span.span_kind));
    put_fixed64(out, 7, nanos(span.start_time));
    put_fixed64(out, 8, nanos(span.end_time));
    put_attributes(out, 9, &span.attributes);
    put_uint(out, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        put_len(out, 11, event_len(event));
        put_fixed64(out, 1, nanos(event.timestamp));
        put_bytes(out, 2, event.name.as_bytes());
        put_attributes(out, 3, &event.attributes);
        put_uint(out, 4, u64::from(event.dropped_attributes_count));
    }
    put_uint(out, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        let context = &link.span_context;
        let state = context.trace_state().header();
        put_len(out, 13, link_len(link, &state));
        put_bytes(out, 1, &context.trace_id().to_bytes());
        put_bytes(out, 2, &context.span_id().to_bytes());
        put_bytes(out, 3, state.as_bytes());
        put_attributes(out, 4, &link.attributes);
        put_uint(out, 5, u64::from(link.dropped_attributes_count));
        put_fixed32(
            out,
            6,
            span_flags(context.trace_flags().to_u8(), context.is_remote()),
        );
    }
    put_uint(out, 14, u64::from(span.links.dropped_count));
    put_len(out, 15, status_len(&span.status));
    let (message, code) = status_fields(&span.status);
    put_bytes(out, 2, message.as_bytes());
    put_uint(out, 3, code);
    put_fixed32(
        out,
        16,
        span_flags(context.trace_flags().to_u8(), span.parent_span_is_remote),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::borrow::Cow;
    use std::sync::Arc;

    fn context(trace: &str, span: &str, remote: bool, state: TraceState) -> SpanContext {
        SpanContext::new(
            TraceId::from_hex(trace).unwrap(),
            SpanId::from_hex(span).unwrap(),
            TraceFlags::SAMPLED,
            remote,
            state,
        )
    }

    fn scope() -> opentelemetry::InstrumentationScope {
        opentelemetry::InstrumentationScope::builder("conductorio")
            .with_version("1.2.3")
            .with_attributes([KeyValue::new("scope.key", "v")])
            .build()
    }

    /// Spans with every kind of field and value, defaults and edge values included.
    fn spans() -> Vec<SpanData> {
        let at = |n: u64| UNIX_EPOCH + Duration::from_nanos(n);
        let attributes = vec![
            KeyValue::new("text", "value"),
            KeyValue::new("empty.text", ""),
            KeyValue::new("int", -42_i64),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("big", i64::MAX),
            KeyValue::new("float", 1.5_f64),
            KeyValue::new("true", true),
            KeyValue::new("false", false),
            KeyValue::new(
                "texts",
                Value::Array(Array::String(vec!["a".into(), "".into(), "ünï".into()])),
            ),
            KeyValue::new("no.texts", Value::Array(Array::String(vec![]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, -1, 300]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![0.0, -2.25]))),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
        ];
        let server = SpanData {
            span_context: context(
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "00f067aa0ba902b7",
                false,
                TraceState::from_key_value([("vendor", "x1")]).unwrap(),
            ),
            parent_span_id: SpanId::from_hex("1111111111111111").unwrap(),
            parent_span_is_remote: true,
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("tools/call validate"),
            start_time: at(1_700_000_000_000_000_000),
            end_time: at(1_700_000_000_123_456_789),
            attributes,
            dropped_attributes_count: 3,
            events: {
                let mut events = SpanEvents::default();
                events.events.push(Event::new(
                    "audit commit decision",
                    at(1_700_000_000_000_500_000),
                    vec![KeyValue::new("conductor.audit.seq", 7_i64)],
                    1,
                ));
                events
                    .events
                    .push(Event::new("bare", UNIX_EPOCH, vec![], 0));
                events.dropped_count = 2;
                events
            },
            links: {
                let mut links = SpanLinks::default();
                links.links.push(Link::new(
                    context(
                        "0af7651916cd43dd8448eb211c80319c",
                        "b7ad6b7169203331",
                        true,
                        TraceState::NONE,
                    ),
                    vec![KeyValue::new("link.key", "v")],
                    0,
                ));
                links.dropped_count = 1;
                links
            },
            status: Status::error("denied by policy"),
            instrumentation_scope: scope(),
        };
        let root = SpanData {
            span_context: context(
                "0af7651916cd43dd8448eb211c80319c",
                "b7ad6b7169203331",
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Owned(String::new()),
            start_time: at(5),
            end_time: at(6),
            attributes: vec![],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope(),
        };
        let client = SpanData {
            span_kind: SpanKind::Client,
            status: Status::Ok,
            name: Cow::Borrowed("conductor.v1.ToolService/CallTool"),
            ..root.clone()
        };
        vec![server, root, client]
    }

    fn resource() -> opentelemetry_sdk::Resource {
        opentelemetry_sdk::Resource::builder_empty()
            .with_service_name("gateway")
            .with_attribute(KeyValue::new("service.version", "0.1.0"))
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build()
    }

    #[test]
    fn a_batch_is_encoded_byte_for_byte_as_opentelemetry_proto_encodes_it() {
        let resource = resource();
        let encoder = BatchEncoder::new(&resource, &scope());
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        }
        .encode_to_vec();
        let ours = encoder.encode(&spans());
        assert_eq!(
            ExportTraceServiceRequest::decode(ours.as_slice()).unwrap(),
            ExportTraceServiceRequest::decode(expected.as_slice()).unwrap()
        );
        assert_eq!(ours, expected);
    }

    #[test]
    fn an_empty_batch_and_a_lone_span_are_well_formed() {
        let resource = resource();
        let encoder = BatchEncoder::new(&resource, &scope());
        let with_schema = ResourceAttributesWithSchema::from(&resource);
        for batch in [vec![], spans()[1..2].to_vec()] {
            let decoded = ExportTraceServiceRequest::decode(encoder.encode(&batch).as_slice())
                .expect("a well-formed request");
            let spans = &decoded.resource_spans[0].scope_spans[0].spans;
            assert_eq!(spans.len(), batch.len());
            if batch.is_empty() {
                assert_eq!(
                    decoded.resource_spans[0].schema_url,
                    with_schema.schema_url.clone().unwrap()
                );
            }
        }
    }

    #[test]
    fn headers_are_read_in_the_specification_format() {
        let metadata = parse_headers("api-key=secret%20one, X-Tenant = acme ,,").unwrap();
        assert_eq!(metadata.get("api-key").unwrap(), "secret one");
        assert_eq!(metadata.get("x-tenant").unwrap(), "acme");
        assert!(
            parse_headers("novalue")
                .unwrap_err()
                .contains("\"novalue\" is not key=value")
        );
        assert!(parse_headers("k=%zz").unwrap_err().contains("percent"));
        assert!(parse_headers("k=%+1").unwrap_err().contains("percent"));
        assert!(parse_headers("k=%é").unwrap_err().contains("percent"));
        assert!(parse_headers("k=50%").unwrap_err().contains("percent"));
        assert!(
            parse_headers("bad key=v")
                .unwrap_err()
                .contains("not a valid header name")
        );
    }

    /// A collector that refuses its first `refusals` requests with `code`, and notes the
    /// `api-key` each request carried.
    #[derive(Clone)]
    struct Refusing {
        refusals: usize,
        code: tonic::Code,
        keys: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    }

    #[tonic::async_trait]
    impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
        for Refusing
    {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let key = request
                .metadata()
                .get("api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut keys = self.keys.lock().unwrap();
            keys.push(key);
            if keys.len() <= self.refusals {
                return Err(tonic::Status::new(self.code, "not now"));
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    /// Exports one batch to a [`Refusing`] collector: the result and the keys it saw.
    async fn export_to(
        refusals: usize,
        code: tonic::Code,
    ) -> (Result<(), tonic::Status>, Vec<Option<String>>) {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let collector = Refusing {
            refusals,
            code,
            keys: Arc::default(),
        };
        let keys = Arc::clone(&collector.keys);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let exporter = Exporter::new(
            &url,
            Duration::from_secs(5),
            parse_headers("api-key=secret%20one").unwrap(),
            &resource(),
            &scope(),
        )
        .unwrap();
        let result = exporter.export(&spans()).await;
        server.abort();
        let seen = keys.lock().unwrap().clone();
        (result, seen)
    }

    #[tokio::test]
    async fn a_batch_refused_for_now_is_sent_again_with_its_headers() {
        let (result, keys) = export_to(2, tonic::Code::Unavailable).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(keys, vec![Some("secret one".to_owned()); 3]);
    }

    #[tokio::test]
    async fn a_batch_refused_for_good_is_not_sent_again() {
        let (result, keys) = export_to(usize::MAX, tonic::Code::PermissionDenied).await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(keys.len(), 1);
        let (result, keys) = export_to(usize::MAX, tonic::Code::Unavailable).await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
        assert_eq!(
            keys.len(),
            ATTEMPTS as usize,
            "tried {ATTEMPTS} times, then gave up"
        );
    }
}
