//! The span queue between the call path and the OTLP exporter: a call's span, once ended, is pushed
//! onto a bounded queue (a lock held for the push) and never waited on; one task sends the queue's
//! contents in batches, woken by a batch's first span, a full batch or a flush, not by every span. A collector that is down, slow or refusing costs the call path nothing: the spans that
//! do not fit, or whose batch cannot be sent, are dropped and counted ([`SpanCounts`]).
//!
//! It must never block in `on_end` (a runtime worker runs it) nor grow without bound.

use super::otlp::Exporter;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// How many ended spans wait for the exporter at most.
pub const QUEUE_SPANS: usize = 4096;
/// The most spans one export carries.
const BATCH_SPANS: usize = 512;
/// How long a span waits for companions before its batch goes.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// How long one export may take before its batch is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of the spans handed to the exporter, for `/metrics`.
#[derive(Debug, Default)]
pub struct SpanCounts {
    pub exported: AtomicU64,
    /// Dropped because the queue was full (the exporter falls behind, e.g. a collector that is down).
    pub dropped_queue_full: AtomicU64,
    /// Dropped because their batch could not be sent (refused, unreachable, timed out).
    pub dropped_export_failed: AtomicU64,
}

/// The counts of the running process (one tracer provider a process).
pub static COUNTS: SpanCounts = SpanCounts {
    exported: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    dropped_export_failed: AtomicU64::new(0),
};

/// The ended spans waiting for the export task, and what it has been asked.
#[derive(Debug, Default)]
struct Queue {
    waiting: Mutex<Waiting>,
    /// Wakes the export task: a batch's first span (its delay starts), a full batch, a flush, the
    /// end. Not every span: a wake-up a span would cost more than the span.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Waiting {
    spans: Vec<SpanData>,
    /// Answered once everything queued before the ask is sent.
    flushes: Vec<oneshot::Sender<()>>,
    /// The tracer provider is gone: send what is left, then stop.
    closed: bool,
    /// The export task has stopped: nothing is left to flush.
    finished: bool,
}

impl Queue {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // A panic elsewhere while holding it leaves plain data behind: still usable.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The tracer provider's processor: queues ended spans for [`run`].
#[derive(Debug)]
pub struct QueueProcessor {
    queue: Arc<Queue>,
}

/// A handle that asks the exporter task to send what it holds (at shutdown).
#[derive(Clone)]
pub struct Flusher {
    queue: Arc<Queue>,
}

impl Flusher {
    /// Sends what is queued, waiting at most `within`.
    pub async fn flush(&self, within: Duration) {
        let (done, flushed) = oneshot::channel();
        {
            let mut waiting = self.queue.waiting();
            if waiting.finished {
                return;
            }
            waiting.flushes.push(done);
        }
        self.queue.wake.notify_one();
        let _ = tokio::time::timeout(within, flushed).await;
    }
}

/// A processor and its exporter task, spawned on the current runtime.
pub fn spawn(exporter: Exporter) -> (QueueProcessor, Flusher) {
    let queue = Arc::new(Queue::default());
    tokio::spawn(run(exporter, Arc::clone(&queue)));
    (
        QueueProcessor {
            queue: Arc::clone(&queue),
        },
        Flusher { queue },
    )
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        let queued = {
            let mut waiting = self.queue.waiting();
            if waiting.spans.len() >= QUEUE_SPANS {
                None
            } else {
                waiting.spans.push(span);
                Some(waiting.spans.len())
            }
        };
        match queued {
            None => {
                COUNTS.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Some(1 | BATCH_SPANS) => self.queue.wake.notify_one(),
            Some(_) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.queue.waiting().closed = true;
        self.queue.wake.notify_one();
        Ok(())
    }
}

impl Drop for QueueProcessor {
    fn drop(&mut self) {
        let _ = self.shutdown_with_timeout(Duration::ZERO);
    }
}

/// Sends the queue's spans in batches: a batch goes when it is full, [`BATCH_DELAY`] after its
/// first span, or at once when a flush is asked or the provider is gone; ends after the last.
async fn run(exporter: Exporter, queue: Arc<Queue>) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH_SPANS);
    loop {
        queue.wake.notified().await;
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        loop {
            let taken = {
                let mut waiting = queue.waiting();
                let taken = waiting.spans.len() >= BATCH_SPANS
                    || !waiting.flushes.is_empty()
                    || waiting.closed
                    || (tokio::time::Instant::now() >= deadline && !waiting.spans.is_empty());
                if taken {
                    let n = waiting.spans.len().min(BATCH_SPANS);
                    batch.extend(waiting.spans.drain(..n));
                }
                if waiting.spans.is_empty() && batch.is_empty() {
                    for done in waiting.flushes.drain(..) {
                        let _ = done.send(());
                    }
                    if waiting.closed {
                        waiting.finished = true;
                        return;
                    }
                    break;
                }
                taken
            };
            if taken {
                export(&exporter, &mut batch).await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = queue.wake.notified() => {}
            }
        }
    }
}

/// Sends `batch` and empties it (its allocation is kept for the next one).
async fn export(exporter: &Exporter, batch: &mut Vec<SpanData>) {
    let n = batch.len() as u64;
    let sent = tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await;
    batch.clear();
    match sent {
        Ok(Ok(())) => {
            COUNTS.exported.fetch_add(n, Ordering::Relaxed);
        }
        Ok(Err(error)) => {
            COUNTS.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(%error, spans = n, "spans not exported");
        }
        Err(_) => {
            COUNTS.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(
                spans = n,
                "spans not exported: the collector did not answer in time"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conductor_servers::otlp_receiver::OtlpReceiver;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};

    fn processor(url: &str) -> (QueueProcessor, Flusher) {
        let resource = opentelemetry_sdk::Resource::builder_empty().build();
        let scope = opentelemetry::InstrumentationScope::builder("test").build();
        let exporter = Exporter::new(
            url,
            Duration::from_secs(5),
            tonic::metadata::MetadataMap::new(),
            &resource,
            &scope,
        )
        .unwrap();
        spawn(exporter)
    }

    fn span(n: u64) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(u128::from(n) + 1),
                SpanId::from(n + 1),
                TraceFlags::SAMPLED,
                false,
                Default::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "tools/call t".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: vec![opentelemetry::KeyValue::new("n", n as i64)],
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[tokio::test]
    async fn full_batches_go_at_once_and_a_flush_sends_the_rest() {
        let collector = OtlpReceiver::start().await;
        let (processor, flusher) = processor(&collector.url);
        for n in 0..1200 {
            processor.on_end(span(n));
        }
        flusher.flush(Duration::from_secs(10)).await;
        assert_eq!(collector.batches(), vec![512, 512, 176]);
    }

    #[tokio::test]
    async fn a_lone_span_goes_after_the_batch_delay_without_a_flush() {
        let collector = OtlpReceiver::start().await;
        let (processor, _flusher) = processor(&collector.url);
        processor.on_end(span(1));
        collector
            .wait_for("the lone span", |spans| !spans.is_empty())
            .await;
        assert_eq!(collector.batches(), vec![1]);
    }

    #[tokio::test]
    async fn spans_beyond_the_queue_are_dropped_and_counted_and_the_end_sends_the_rest() {
        let collector = OtlpReceiver::start().await;
        let (processor, flusher) = processor(&collector.url);
        let dropped = COUNTS.dropped_queue_full.load(Ordering::Relaxed);
        // Pushed faster than the task runs (it gets no turn on this thread meanwhile).
        for n in 0..(QUEUE_SPANS as u64 + 10) {
            processor.on_end(span(n));
        }
        assert!(COUNTS.dropped_queue_full.load(Ordering::Relaxed) - dropped >= 10);
        drop(processor);
        flusher.flush(Duration::from_secs(10)).await;
        assert_eq!(collector.batches().iter().sum::<usize>(), QUEUE_SPANS);
    }

    #[tokio::test]
    async fn a_collector_that_never_answers_holds_up_no_span_and_no_flush_beyond_its_bound() {
        // Accepts connections and never says a word: neither the HTTP/2 handshake nor an answer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let (processor, flusher) = processor(&url);
        processor.on_end(span(0));
        // The flush gives up at its bound; the export task is still waiting on the collector.
        flusher.flush(Duration::from_millis(300)).await;
        let dropped = COUNTS.dropped_queue_full.load(Ordering::Relaxed);
        for n in 0..(QUEUE_SPANS as u64 + 5) {
            processor.on_end(span(n));
        }
        assert!(COUNTS.dropped_queue_full.load(Ordering::Relaxed) - dropped >= 5);
        held.abort();
    }
}
