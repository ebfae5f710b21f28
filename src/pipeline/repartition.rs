//! Re-keying, as Kafka Streams' `selectKey` does it: a topic whose records
//! are not keyed by customer id (`keyed_by_customer = false`; Debezium keys
//! by primary key) is read by every instance in one extra group,
//! `<group>-repartitioner`, so each partition is read once. Each record is
//! mapped to find its customer and republished unchanged, keyed by
//! customer id and naming its source topic in a header, to
//! `<group>-repartition`, which the group consumes like any input
//! co-partitioned with the state.
//!
//! A source offset is stored only once its republished record (or its
//! dead letter) is acknowledged, in order: a crash republishes what was not
//! acknowledged, which de-duplication (`event_id`) absorbs, and loses
//! nothing. Records the mapping rejects are dead-lettered here, with their
//! source's coordinates; skipped ones are counted here. A record the broker
//! refuses for good (larger than the repartition topic takes) is counted in
//! `churnwatch_produce_failures_total` and logged, as an alert would be, so
//! it cannot stall the topic.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use super::decoders::Decoders;
use crate::engine::event::{DecodeLimits, RejectReason};
use crate::kafka::sink::{Outgoing, Rejected, Sink};
use crate::kafka::source::InputConsumer;
use crate::mapping::Mapped;
use crate::metrics::Metrics;

/// Records republished per round trip to the broker.
const BATCH: usize = 512;

/// The re-keying task's parts.
pub struct Repartitioner {
    /// Subscribed to the re-keyed topics in `<group>-repartitioner`.
    pub consumer: InputConsumer,
    /// Their mappings.
    pub decoders: Decoders,
    /// The engine's limits on a record.
    pub limits: DecodeLimits,
    /// The repartition topic's and the dead letters' producer (with
    /// `kafka.repartition_partitioner`).
    pub sink: Sink,
    /// `<group>-repartition`.
    pub topic: String,
    /// Rejects and skips are counted here.
    pub metrics: Metrics,
}

impl Repartitioner {
    /// Republishes until `stop`, then waits for what is in flight until
    /// `hard`; what was not acknowledged is read again at the next start.
    pub async fn run(self, stop: CancellationToken, hard: CancellationToken) {
        let mut batch = Vec::with_capacity(BATCH);
        'consume: loop {
            let first = tokio::select! {
                m = self.consumer.recv() => m,
                () = stop.cancelled() => break,
            };
            batch.push(first);
            while batch.len() < BATCH {
                match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut sent = Vec::with_capacity(batch.len());
            for m in batch.drain(..) {
                match m {
                    Ok(m) => {
                        let out = self.record(&m).await;
                        sent.push((m, out));
                    }
                    Err(e) => tracing::warn!(error = %e, "re-keyed topic consumer error"),
                }
            }
            for (m, out) in sent {
                if let Some(out) = out
                    && self.sink.confirm(out, &hard).await.is_err()
                    && hard.is_cancelled()
                {
                    break 'consume;
                }
                if let Err(e) = self.consumer.store_offset_from_message(&m) {
                    tracing::debug!(error = %e, "offset not stored (partition revoked)");
                }
            }
            // Committed per batch, not per auto-commit second: a crash then
            // republishes at most the batches in flight, few enough per
            // customer for de-duplication to absorb.
            if let Err(e) = self
                .consumer
                .commit_consumer_state(rdkafka::consumer::CommitMode::Async)
            {
                tracing::debug!(error = %e, "re-keyed offsets not committed yet");
            }
        }
        crate::kafka::source::commit_stored(std::sync::Arc::new(self.consumer)).await;
    }

    /// Sends `m` on: republished, dead-lettered, or (skipped) nothing.
    async fn record(&self, m: &BorrowedMessage<'_>) -> Option<Outgoing> {
        let reason = match self.decoders.decode(m, self.limits) {
            Ok(Mapped::Skipped(cause)) => {
                self.metrics.record_skipped(m.topic(), cause.as_str());
                return None;
            }
            Ok(Mapped::Event(event)) => match event.customer() {
                Some(customer) => {
                    return Some(
                        self.sink
                            .republish(
                                &self.topic,
                                customer.as_bytes(),
                                m.payload().unwrap_or_default(),
                                m.topic(),
                            )
                            .await,
                    );
                }
                None => RejectReason::WrongTopic {
                    kind: event.event_type().as_str(),
                },
            },
            Err(reason) => reason,
        };
        self.metrics.event_rejected(None, &reason);
        let rejected = Rejected {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload().unwrap_or_default(),
        };
        Some(self.sink.dead_letter(&rejected, &reason).await)
    }
}
