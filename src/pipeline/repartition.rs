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
//! dead letter) is acknowledged, in order, and committed once per batch; so
//! a crash loses nothing. What was acknowledged but not yet committed is
//! recorded in `state.dir` ([`crate::state::rekeying`]), and a restart on
//! the same disk skips it rather than republishing it, as does this process
//! when a partition it had comes back after a rebalance; where that record
//! is missing (a partition taken over by another instance after a crash, a
//! lost disk) at most the batches in flight are republished again, and
//! de-duplication (`event_id`) absorbs them. Records the mapping rejects
//! are dead-lettered here, with their source's coordinates; skipped ones
//! are counted here. A record the broker refuses for good (larger than the
//! repartition topic takes) is counted in `churnwatch_produce_failures_total`
//! and logged, as an alert would be, so it cannot stall the topic.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

use super::decoders::Decoders;
use crate::engine::event::{DecodeLimits, RejectReason};
use crate::kafka::rebalance::Rebalanced;
use crate::kafka::republished;
use crate::kafka::sink::{Consumed, Outgoing, Sink};
use crate::kafka::source::InputConsumer;
use crate::mapping::Mapped;
use crate::metrics::Metrics;
use crate::state::rekeying::{self, Progress, Skip};

/// Records republished per round trip to the broker.
const BATCH: usize = 512;

/// How long the committed-offsets lookup after an assignment may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the read-back of the repartition topic after a restart may take.
const READ_BACK: Duration = Duration::from_secs(30);

/// Counted in `churnwatch_skipped_records_total` for a record republished
/// before a restart.
const ALREADY_REPUBLISHED: &str = "already_republished";

/// The re-keying task's parts.
pub struct Repartitioner {
    /// Subscribed to the re-keyed topics in `<group>-repartitioner`.
    pub consumer: Arc<InputConsumer>,
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
    /// `state.dir`, where the acknowledged offsets are recorded.
    pub state_dir: PathBuf,
    /// The re-keying group, which the record belongs to.
    pub group: String,
    /// Settings of a group-less reader of the repartition topic.
    pub reader: rdkafka::ClientConfig,
}

impl Repartitioner {
    /// Republishes until `stop`, then waits for what is in flight until
    /// `hard`; what was not acknowledged is read again at the next start.
    pub async fn run(self, stop: CancellationToken, hard: CancellationToken) {
        let consumer = &self.consumer;
        // What the last process recorded, and where this one starts
        // republishing: recorded before the first republish, so that a
        // crash inside the first batch still leaves the restart a place
        // to read what landed back from.
        let previous = rekeying::read(&self.state_dir, &self.group);
        let mut landed = self.ends().await;
        landed.extend(previous.landed.iter().map(|(&p, &o)| (p, o)));
        let mut progress = Progress {
            acked: previous.acked.clone(),
            landed,
        };
        self.record_progress(&progress);
        // Where the last process may have left records unacknowledged: read
        // back when a partition it had is assigned before this one
        // acknowledged anything of it (no file: it republished nothing).
        let resumed = previous != Progress::default();
        let start = progress.landed.clone();
        // Per assigned partition: what was republished before a restart or
        // before the partition was last revoked.
        let mut skip: BTreeMap<(String, i32), Skip> = BTreeMap::new();
        let mut batch = Vec::with_capacity(BATCH);
        'consume: loop {
            let first = tokio::select! {
                m = consumer.recv() => m,
                () = stop.cancelled() => break,
            };
            batch.push(first);
            while batch.len() < BATCH {
                match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // An assignment's callback ran inside `recv`, before any of its
            // partitions' messages in this batch.
            for r in consumer.context().take_rebalances() {
                match r {
                    Rebalanced::Assigned(tps) => {
                        let back = resumed
                            && tps
                                .iter()
                                .any(|tp| progress.acked.get(tp) == previous.acked.get(tp));
                        let back = back.then(|| start.clone());
                        skip.extend(self.already_republished(tps, &progress, back).await)
                    }
                    Rebalanced::Revoked { partitions, .. } => {
                        partitions.iter().for_each(|tp| _ = skip.remove(tp))
                    }
                }
            }
            let mut sent = Vec::with_capacity(batch.len());
            for m in batch.drain(..) {
                match m {
                    Ok(m) => {
                        let done = skip
                            .get(&(m.topic().to_string(), m.partition()))
                            .is_some_and(|s| s.covers(m.offset(), m.payload()));
                        let out = match done {
                            true => {
                                self.metrics.record_skipped(m.topic(), ALREADY_REPUBLISHED);
                                None
                            }
                            false => self.record(&m).await,
                        };
                        sent.push((m, out));
                    }
                    Err(e) => tracing::warn!(error = %e, "re-keyed topic consumer error"),
                }
            }
            let before = progress.clone();
            for (m, out) in sent {
                if let Some((out, republished)) = out {
                    match self.sink.confirm(out, &hard).await {
                        Ok((p, o)) if republished => {
                            let next = progress.landed.entry(p).or_insert(0);
                            *next = (*next).max(o + 1);
                        }
                        Err(_) if hard.is_cancelled() => break 'consume,
                        _ => {}
                    }
                }
                // Acknowledged even where the partition was revoked in the
                // meantime: if it comes back, this is not republished again.
                progress
                    .acked
                    .insert((m.topic().to_string(), m.partition()), m.offset());
                if let Err(e) = consumer.store_offset_from_message(&m) {
                    tracing::debug!(error = %e, "offset not stored (partition revoked)");
                }
            }
            if progress != before {
                self.record_progress(&progress);
            }
            // Committed per batch, not per auto-commit second: a crash then
            // leaves at most the batches in flight uncommitted.
            if let Err(e) = consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Async) {
                tracing::debug!(error = %e, "re-keyed offsets not committed yet");
            }
        }
        crate::kafka::source::commit_stored(self.consumer.clone()).await;
    }

    /// Records `progress` in `state.dir`; a failure is logged (a restart
    /// then republishes more, which de-duplication absorbs).
    fn record_progress(&self, progress: &Progress) {
        if let Err(e) = rekeying::write(&self.state_dir, &self.group, progress) {
            tracing::warn!(dir = %self.state_dir.display(), error = %e, "re-keying progress not recorded (a restart republishes more)");
        }
    }

    /// The repartition topic's ends before this process republishes
    /// anything: nothing it republishes can land before them. Unknown
    /// (logged) leaves them out, which only narrows the next restart's
    /// read-back.
    async fn ends(&self) -> BTreeMap<i32, i64> {
        let (reader, topic) = (self.reader.clone(), self.topic.clone());
        match tokio::task::spawn_blocking(move || republished::ends(&reader, &topic)).await {
            Ok(Ok(ends)) => ends,
            Ok(Err(e)) => {
                tracing::warn!(topic = self.topic, error = %e, "repartition topic ends unknown");
                BTreeMap::new()
            }
            Err(e) => {
                tracing::warn!(topic = self.topic, error = %e, "repartition topic ends lookup failed");
                BTreeMap::new()
            }
        }
    }

    /// Of the partitions just assigned, what was republished beyond the
    /// group's committed offset: acknowledged (as `progress` holds, this
    /// process's and the last one's) or landed unacknowledged (read back
    /// from the repartition topic past `read_back`, the positions the last
    /// process recorded). A failed lookup skips nothing (more redeliveries,
    /// which de-duplication absorbs).
    async fn already_republished(
        &self,
        tps: Vec<(String, i32)>,
        progress: &Progress,
        read_back: Option<BTreeMap<i32, i64>>,
    ) -> BTreeMap<(String, i32), Skip> {
        let mut out = BTreeMap::new();
        if read_back.is_none() && !tps.iter().any(|tp| progress.acked.contains_key(tp)) {
            return out;
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (t, p) in &tps {
            tpl.add_partition(t, *p);
        }
        let consumer = self.consumer.clone();
        let (reader, topic) = (self.reader.clone(), self.topic.clone());
        let looked = tokio::task::spawn_blocking(move || {
            let committed = consumer.committed_offsets(tpl, COMMITTED_TIMEOUT)?;
            let found = match read_back {
                Some(from) => republished::last_republished(&reader, &topic, &from, READ_BACK)?,
                None => BTreeMap::new(),
            };
            Ok::<_, rdkafka::error::KafkaError>((committed, found))
        })
        .await;
        let (committed, found) = match looked {
            Ok(Ok(both)) => both,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "re-keying progress unknown; republishing from the committed offsets");
                return out;
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-keying progress lookup failed; republishing from the committed offsets");
                return out;
            }
        };
        for e in committed.elements() {
            let tp = (e.topic().to_string(), e.partition());
            let at = match e.offset() {
                rdkafka::Offset::Offset(o) => Some(o),
                _ => None,
            };
            if let Some(skip) = Skip::of(progress.acked.get(&tp).copied(), found.get(&tp), at) {
                tracing::info!(
                    topic = tp.0,
                    partition = tp.1,
                    from = at,
                    through = skip.through,
                    landed_after = skip.also.len(),
                    "resuming re-keying: records already republished are skipped"
                );
                out.insert(tp, skip);
            }
        }
        out
    }

    /// Sends `m` on: republished (true), dead-lettered (false), or
    /// (skipped) nothing.
    async fn record(&self, m: &BorrowedMessage<'_>) -> Option<(Outgoing, bool)> {
        let reason = match self.decoders.decode(m, self.limits) {
            Ok(Mapped::Skipped(cause)) => {
                self.metrics.record_skipped(m.topic(), cause.as_str());
                return None;
            }
            Ok(Mapped::Event(event)) => match event.customer() {
                Some(customer) => {
                    let out = self
                        .sink
                        .republish(&self.topic, customer.as_bytes(), &Consumed::of(m))
                        .await;
                    return Some((out, true));
                }
                None => RejectReason::WrongTopic {
                    kind: event.event_type().as_str(),
                },
            },
            Err(reason) => reason,
        };
        self.metrics.event_rejected(None, &reason);
        Some((
            self.sink.dead_letter(&Consumed::of(m), &reason).await,
            false,
        ))
    }
}
