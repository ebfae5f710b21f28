//! The acker: confirms produced records in the order they were produced,
//! observes each alert's latency when the broker acknowledges it, and only
//! then stores the input offsets of the step, so a stored offset never runs
//! ahead of an alert.

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::kafka::offsets::TopicPartition;
use crate::kafka::sink::{Outgoing, Sink, SinkError};
use crate::kafka::source::InputConsumer;
use crate::metrics::Metrics;

/// What the engine task hands the acker.
pub enum Ack {
    /// Records produced in one step and the input offsets they make safe.
    Step {
        /// In production order.
        records: Vec<Outgoing>,
        /// Highest safe offset per partition (stored as is).
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// Answered once everything sent before it is acknowledged.
    Barrier(oneshot::Sender<()>),
}

impl Ack {
    /// Whether sending it would do nothing.
    pub fn is_empty(&self) -> bool {
        matches!(self, Ack::Step { records, offsets } if records.is_empty() && offsets.is_empty())
    }
}

/// Runs until the engine task drops its sender or `stop` is cancelled.
pub async fn run(
    consumer: Arc<InputConsumer>,
    sink: Sink,
    metrics: Metrics,
    mut rx: mpsc::Receiver<Ack>,
    stop: CancellationToken,
) {
    while let Some(ack) = rx.recv().await {
        let (records, offsets) = match ack {
            Ack::Barrier(done) => {
                // Everything before the barrier is confirmed; the waiter may
                // have given up, which changes nothing here.
                let _ = done.send(());
                continue;
            }
            Ack::Step { records, offsets } => (records, offsets),
        };
        tracing::trace!(
            records = records.len(),
            offsets = offsets.len(),
            "confirming"
        );
        for record in records {
            let since = record.since();
            match sink.confirm(record, &stop).await {
                Ok(_) => {
                    if let Some(since) = since {
                        metrics.alert_acknowledged(since.elapsed().as_secs_f64());
                    }
                }
                // Given up on (counted and logged by the sink) so it cannot
                // stall the instance.
                Err(SinkError::Refused { .. }) => {}
                Err(e @ SinkError::Cancelled { .. }) => {
                    tracing::warn!(error = %e, "stopping before all records were acknowledged");
                    return;
                }
            }
        }
        for ((topic, partition), offset) in offsets {
            // A revoked partition refuses the store; its new owner re-reads it.
            if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                tracing::debug!(topic, partition, offset, error = %e, "offset not stored");
            }
        }
    }
}
