//! Spans as this process records them: each attribute, event and link is written in the OTLP wire
//! format as it is set, and at its end the span's remaining fields are written around them and the
//! bytes queued for the exporter ([`super::export`]).
//!
//! Why not the SDK's spans: each kept its attributes as `KeyValue`s until its end, was moved whole
//! (`SpanData`) to the exporter, which read every attribute twice to encode it (its length, then its
//! bytes) and then dropped them all. That was about half of what exporting added to a call (bench
//! figure 10). The SDK's sampler and id generator still decide which spans are recorded and what
//! their ids are, and the span lives in the OpenTelemetry [`Context`] as the SDK's would, so
//! propagation and children read it the same way.

use super::export::SpanQueue;
use super::otlp::{EndedSpan, put_attributes, put_event, put_link, put_span};
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample as _,
};
use std::borrow::Cow;
use std::cell::RefCell;
use std::time::SystemTime;

/// The most attributes, events and links a span keeps, and attributes an event or a link keeps
/// (the SDK's default limits); any more are counted as dropped.
const MOST_PER_SPAN: u32 = 128;

/// Starts spans: which are recorded (the sampler), their ids, and where they go when they end.
#[derive(Debug)]
pub struct Tracer {
    sampler: Sampler,
    ids: RandomIdGenerator,
    queue: SpanQueue,
}

impl Tracer {
    pub fn new(sampler: Sampler, queue: SpanQueue) -> Self {
        Tracer {
            sampler,
            ids: RandomIdGenerator::default(),
            queue,
        }
    }

    /// `parent` with `builder`'s span started in it: a [`Recording`] when the sampler samples it,
    /// else a span context that is carried (and propagated, unsampled) but records nothing.
    pub fn start(&'static self, builder: SpanBuilder, parent: &Context) -> Context {
        let parent_span = parent.span();
        let parent_context = parent_span.span_context();
        let (trace_id, parent_id, parent_is_remote) = if parent_context.is_valid() {
            (
                parent_context.trace_id(),
                parent_context.span_id(),
                parent_context.is_remote(),
            )
        } else {
            (self.ids.new_trace_id(), SpanId::INVALID, false)
        };
        let kind = builder.span_kind.unwrap_or(SpanKind::Internal);
        let mut attributes = builder.attributes.unwrap_or_default();
        let links = builder.links.unwrap_or_default();
        let sampled = self.sampler.should_sample(
            Some(parent),
            trace_id,
            &builder.name,
            &kind,
            &attributes,
            &links,
        );
        let recorded = matches!(sampled.decision, SamplingDecision::RecordAndSample);
        let context = SpanContext::new(
            trace_id,
            self.ids.new_span_id(),
            parent_context.trace_flags().with_sampled(recorded),
            false,
            sampled.trace_state,
        );
        if !recorded {
            return parent.with_remote_span_context(context);
        }
        attributes.extend(sampled.attributes);
        let mut span = Recording {
            tracer: self,
            context,
            parent: parent_id,
            parent_is_remote,
            kind,
            name: builder.name,
            start: builder.start_time.unwrap_or_else(SystemTime::now),
            attributes: Vec::with_capacity(512),
            counts: Counts::default(),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::Unset,
            ended: false,
        };
        for attribute in attributes {
            opentelemetry::trace::Span::set_attribute(&mut span, attribute);
        }
        for link in links {
            opentelemetry::trace::Span::add_link(&mut span, link.span_context, link.attributes);
        }
        parent.with_span(span)
    }
}

/// How many attributes, events and links a span holds, and how many it dropped past the limit.
#[derive(Debug, Default)]
struct Counts {
    attributes: u32,
    dropped_attributes: u32,
    events: u32,
    dropped_events: u32,
    links: u32,
    dropped_links: u32,
}

/// Whether one more may be kept: counts it as kept or as dropped.
fn admit(kept: &mut u32, dropped: &mut u32) -> bool {
    if *kept < MOST_PER_SPAN {
        *kept += 1;
        true
    } else {
        *dropped = dropped.saturating_add(1);
        false
    }
}

/// An event's or a link's attributes within the limit, and how many were dropped.
fn within_limit(attributes: &[KeyValue]) -> (&[KeyValue], u32) {
    let kept = attributes.len().min(MOST_PER_SPAN as usize);
    (
        &attributes[..kept],
        u32::try_from(attributes.len() - kept).unwrap_or(u32::MAX),
    )
}

/// A sampled span being recorded. It ends at `end`, or when dropped.
#[derive(Debug)]
pub struct Recording {
    tracer: &'static Tracer,
    context: SpanContext,
    parent: SpanId,
    parent_is_remote: bool,
    kind: SpanKind,
    name: Cow<'static, str>,
    start: SystemTime,
    /// Written as they are set: `Span.attributes` (field 9), `events` (11), `links` (13).
    attributes: Vec<u8>,
    counts: Counts,
    events: Vec<u8>,
    links: Vec<u8>,
    status: Status,
    ended: bool,
}

thread_local! {
    /// Where a span's bytes are put together at its end, before they are copied into the queue.
    static ENDED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Recording {
    /// Writes the whole span, ended at `end`, into `out` (as one `ScopeSpans.spans` entry).
    fn write(&self, end: SystemTime, out: &mut Vec<u8>) {
        put_span(
            out,
            &EndedSpan {
                context: &self.context,
                parent: self.parent,
                parent_is_remote: self.parent_is_remote,
                kind: &self.kind,
                name: &self.name,
                start: self.start,
                end,
                attributes: &self.attributes,
                dropped_attributes: self.counts.dropped_attributes,
                events: &self.events,
                dropped_events: self.counts.dropped_events,
                links: &self.links,
                dropped_links: self.counts.dropped_links,
                status: &self.status,
            },
        );
    }
}

impl opentelemetry::trace::Span for Recording {
    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        if self.ended || !admit(&mut self.counts.events, &mut self.counts.dropped_events) {
            return;
        }
        let (kept, dropped) = within_limit(&attributes);
        put_event(&mut self.events, &name.into(), timestamp, kept, dropped);
    }

    fn span_context(&self) -> &SpanContext {
        &self.context
    }

    fn is_recording(&self) -> bool {
        !self.ended
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        if self.ended
            || !admit(
                &mut self.counts.attributes,
                &mut self.counts.dropped_attributes,
            )
        {
            return;
        }
        put_attributes(&mut self.attributes, 9, std::slice::from_ref(&attribute));
    }

    fn set_status(&mut self, status: Status) {
        // A total order, as the SDK keeps it: Ok > Error > Unset.
        if !self.ended && status > self.status {
            self.status = status;
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if !self.ended {
            self.name = new_name.into();
        }
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        if self.ended
            || !span_context.is_valid()
            || !admit(&mut self.counts.links, &mut self.counts.dropped_links)
        {
            return;
        }
        let (kept, dropped) = within_limit(&attributes);
        put_link(&mut self.links, &span_context, kept, dropped);
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        ENDED.with_borrow_mut(|out| {
            out.clear();
            self.write(timestamp, out);
            self.tracer.queue.push(out);
        });
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        opentelemetry::trace::Span::end(self);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::SpanData;
    use prost::Message as _;

    /// A tracer for tests, its spans kept in a queue nobody sends.
    fn tracer(sampler: Sampler) -> &'static Tracer {
        Box::leak(Box::new(Tracer::new(sampler, SpanQueue::unsent())))
    }

    /// `span` recorded as the call path records one (attributes at the start, then events, links
    /// and the status as they come), ended and written.
    pub(crate) fn written(span: &SpanData) -> Vec<u8> {
        let mut recording = Recording {
            tracer: tracer(Sampler::AlwaysOn),
            context: span.span_context.clone(),
            parent: span.parent_span_id,
            parent_is_remote: span.parent_span_is_remote,
            kind: span.span_kind.clone(),
            name: span.name.clone(),
            start: span.start_time,
            attributes: Vec::new(),
            counts: Counts::default(),
            events: Vec::new(),
            links: Vec::new(),
            status: Status::Unset,
            ended: false,
        };
        recording.set_attributes(span.attributes.iter().cloned());
        recording.counts.dropped_attributes += span.dropped_attributes_count;
        for event in span.events.iter() {
            recording.counts.events += 1;
            put_event(
                &mut recording.events,
                &event.name,
                event.timestamp,
                &event.attributes,
                event.dropped_attributes_count,
            );
        }
        recording.counts.dropped_events += span.events.dropped_count;
        for link in span.links.iter() {
            recording.counts.links += 1;
            put_link(
                &mut recording.links,
                &link.span_context,
                &link.attributes,
                link.dropped_attributes_count,
            );
        }
        recording.counts.dropped_links += span.links.dropped_count;
        recording.set_status(span.status.clone());
        let mut out = Vec::new();
        recording.write(span.end_time, &mut out);
        recording.ended = true;
        out
    }

    fn remote(sampled: bool) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
            SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
            TraceFlags::default().with_sampled(sampled),
            true,
            TraceState::NONE,
        ))
    }

    #[test]
    fn a_sampled_span_continues_its_parent_and_is_queued_once_at_its_end() {
        let tracer = tracer(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
        let parent = remote(true);
        let cx = tracer.start(
            SpanBuilder::from_name("tools/call t")
                .with_kind(SpanKind::Server)
                .with_attributes([KeyValue::new("k", "v")]),
            &parent,
        );
        let span = cx.span();
        let context = span.span_context().clone();
        assert!(span.is_recording() && context.is_sampled() && !context.is_remote());
        assert_eq!(context.trace_id(), parent.span().span_context().trace_id());
        assert_ne!(context.span_id(), parent.span().span_context().span_id());
        span.add_event("audit commit decision", vec![KeyValue::new("seq", 7_i64)]);
        span.set_status(Status::error("denied"));
        span.end();
        span.set_attribute(KeyValue::new("late", true));
        span.end();
        drop(cx);

        let (bytes, n) = tracer.queue.queued();
        assert_eq!(n, 1, "ended once, not again when dropped");
        let scope = opentelemetry_proto::tonic::trace::v1::ScopeSpans::decode(bytes.as_slice())
            .expect("a ScopeSpans entry");
        let decoded = &scope.spans[0];
        assert_eq!(decoded.name, "tools/call t");
        assert_eq!(decoded.trace_id, context.trace_id().to_bytes());
        assert_eq!(decoded.span_id, context.span_id().to_bytes());
        assert_eq!(
            decoded.parent_span_id,
            0x00f0_67aa_0ba9_02b7_u64.to_be_bytes()
        );
        assert_eq!(decoded.flags, 0x301, "sampled, parent known to be remote");
        assert_eq!(decoded.attributes.len(), 1, "nothing set after the end");
        assert_eq!(decoded.events[0].name, "audit commit decision");
        assert_eq!(decoded.status.as_ref().map(|s| s.code), Some(2));
        assert!(decoded.end_time_unix_nano >= decoded.start_time_unix_nano);
    }

    #[test]
    fn an_unsampled_span_is_carried_but_never_recorded() {
        for (tracer, parent) in [
            (tracer(Sampler::AlwaysOff), Context::new()),
            (
                tracer(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
                remote(false),
            ),
        ] {
            let cx = tracer.start(SpanBuilder::from_name("t"), &parent);
            let span = cx.span();
            assert!(span.span_context().is_valid());
            assert!(!span.span_context().is_sampled());
            assert!(!span.is_recording());
            span.end();
            drop(cx);
            assert_eq!(tracer.queue.queued().1, 0);
        }
    }

    #[test]
    fn past_the_limits_attributes_events_and_links_are_counted_as_dropped() {
        let tracer = tracer(Sampler::AlwaysOn);
        let cx = tracer.start(SpanBuilder::from_name("t"), &Context::new());
        let span = cx.span();
        let link = remote(true).span().span_context().clone();
        for n in 0..(MOST_PER_SPAN as i64 + 3) {
            span.set_attribute(KeyValue::new("n", n));
            span.add_event("e", vec![]);
            span.add_link(link.clone(), vec![]);
        }
        span.end();
        let (bytes, _) = tracer.queue.queued();
        let scope =
            opentelemetry_proto::tonic::trace::v1::ScopeSpans::decode(bytes.as_slice()).unwrap();
        let decoded = &scope.spans[0];
        assert_eq!(decoded.attributes.len(), MOST_PER_SPAN as usize);
        assert_eq!(decoded.dropped_attributes_count, 3);
        assert_eq!(decoded.events.len(), MOST_PER_SPAN as usize);
        assert_eq!(decoded.dropped_events_count, 3);
        assert_eq!(decoded.links.len(), MOST_PER_SPAN as usize);
        assert_eq!(decoded.dropped_links_count, 3);
    }
}
