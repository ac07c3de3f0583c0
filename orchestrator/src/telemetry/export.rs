//! The span queue between the call path and the OTLP exporter: a call's span, once ended, is handed
//! to a bounded channel with `try_send` and never waited on; one task sends the queue's contents in
//! batches. A collector that is down, slow or refusing costs the call path nothing: the spans that
//! do not fit, or whose batch cannot be sent, are dropped and counted ([`SpanCounts`]).
//!
//! It must never block in `on_end` (a runtime worker runs it) nor grow without bound.

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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

enum Message {
    Span(Box<SpanData>),
    /// Send what is queued now, then answer.
    Flush(oneshot::Sender<()>),
}

/// The tracer provider's processor: queues ended spans for [`run`].
#[derive(Debug)]
pub struct QueueProcessor {
    queue: mpsc::Sender<Message>,
}

/// A handle that asks the exporter task to send what it holds (at shutdown).
#[derive(Clone)]
pub struct Flusher {
    queue: mpsc::Sender<Message>,
}

impl Flusher {
    /// Sends what is queued, waiting at most `within`.
    pub async fn flush(&self, within: Duration) {
        let (done, flushed) = oneshot::channel();
        let asked = async {
            if self.queue.send(Message::Flush(done)).await.is_ok() {
                let _ = flushed.await;
            }
        };
        let _ = tokio::time::timeout(within, asked).await;
    }
}

/// A processor and its exporter task, spawned on the current runtime.
pub fn spawn<E: SpanExporter + 'static>(exporter: E) -> (QueueProcessor, Flusher) {
    let (queue, spans) = mpsc::channel(QUEUE_SPANS);
    tokio::spawn(run(exporter, spans));
    (
        QueueProcessor {
            queue: queue.clone(),
        },
        Flusher { queue },
    )
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(Message::Span(Box::new(span))).is_err() {
            COUNTS.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Gathers spans into batches (full, or [`BATCH_DELAY`] after the first) and exports them one
/// batch at a time; ends when every sender is gone.
async fn run<E: SpanExporter>(exporter: E, mut spans: mpsc::Receiver<Message>) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH_SPANS);
    loop {
        let mut flushed = None;
        let first = match spans.recv().await {
            None => break,
            Some(Message::Flush(done)) => {
                let _ = done.send(());
                continue;
            }
            Some(Message::Span(span)) => span,
        };
        batch.push(*first);
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < BATCH_SPANS {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(Message::Span(span))) => batch.push(*span),
                Ok(Some(Message::Flush(done))) => {
                    flushed = Some(done);
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        export(&exporter, std::mem::take(&mut batch)).await;
        if let Some(done) = flushed {
            // What arrived before the flush was asked for is sent too.
            while let Ok(Message::Span(span)) = spans.try_recv() {
                batch.push(*span);
            }
            if !batch.is_empty() {
                export(&exporter, std::mem::take(&mut batch)).await;
            }
            let _ = done.send(());
        }
    }
    if !batch.is_empty() {
        export(&exporter, batch).await;
    }
}

async fn export<E: SpanExporter>(exporter: &E, batch: Vec<SpanData>) {
    let n = batch.len() as u64;
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
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
