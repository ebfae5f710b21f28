//! The partitions this instance owns and their state's durability:
//! restoring on assignment, snapshot rounds (local files, then the
//! changelog), and letting go on revocation. Offsets are stored only once
//! a whole round is durable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::acker::Ack;
use super::handover::local_snapshots;
use super::restore::{self, Candidates, Choice};
use super::step::Step;
use crate::kafka::offsets::TopicPartition;
use crate::kafka::sink::Sink;
use crate::kafka::source::InputConsumer;
use crate::state::changelog::{self, Changes};
use crate::state::snapshot::{self, Owner, Snapshot};

/// How long a new owner reads a changelog partition at most before giving
/// up on it (and rebuilding the partition from its input instead).
const CHANGELOG_READ_LIMIT: Duration = Duration::from_secs(120);

/// The state changelog's writer and reader settings.
pub struct Changelog {
    /// `kafka.changelog_topic`.
    pub topic: String,
    /// Settings of a group-less reader.
    pub reader: rdkafka::ClientConfig,
    /// What each partition last sent.
    pub changes: Changes,
    /// Cancelled at shutdown: stops waiting for round acknowledgements.
    pub stop: CancellationToken,
    /// How long a restore reads a changelog partition (see [`read_limit`]).
    pub read_limit: Duration,
}

/// A restore holds the group consumer's poll while it reads (librdkafka
/// cannot be polled around a fresh assignment: see `pipeline::polling`),
/// so its changelog read stops at half of `max.poll.interval.ms` (and at
/// [`CHANGELOG_READ_LIMIT`]); a partition not read by then is rebuilt from
/// its input, which does not hold the poll.
pub fn read_limit(max_poll_interval: Duration) -> Duration {
    (max_poll_interval / 2).min(CHANGELOG_READ_LIMIT)
}

/// Where local snapshots live and whose they are.
#[derive(Debug, Clone)]
pub struct Local {
    /// `state.dir`.
    pub dir: PathBuf,
    /// This instance's cluster, group and topics: a file of anyone else's
    /// is refused.
    pub owner: Owner,
}

/// Whether a snapshot round also goes to the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Owned partitions, and revoked ones being handed over: local files
    /// and a changelog round.
    Changelog,
    /// Lost partitions: their next owner may already be writing the
    /// changelog, so only a local file (the next owner may be us).
    LocalOnly,
}

/// Assigned input partitions and what their restored or snapshotted state
/// covers. Owned by the engine task.
pub struct Partitions {
    /// Assigned partition numbers.
    numbers: BTreeSet<i32>,
    /// Last applied (released) offset per input partition.
    released: BTreeMap<TopicPartition, i64>,
    /// Next offset covered by a restored snapshot: older messages are in
    /// the restored state already and are skipped.
    restored_from: BTreeMap<TopicPartition, i64>,
    /// Rebuild starts not sought yet.
    seeks: BTreeMap<TopicPartition, rdkafka::Offset>,
    /// Sought since the last message was handled.
    fresh_seeks: BTreeSet<TopicPartition>,
    /// The last snapshot round written or restored; rounds only grow.
    last_round: u64,
    /// Local snapshots, if on.
    local: Option<Local>,
    /// The group's input topics.
    pub(super) input_topics: Vec<String>,
    pub(super) changelog: Option<Changelog>,
    /// The service's graceful stop: a barrier gives up waiting on it.
    pub(super) stopping: CancellationToken,
}

impl Partitions {
    /// Nothing assigned yet.
    pub fn new(
        stopping: CancellationToken,
        local: Option<Local>,
        input_topics: Vec<String>,
        changelog: Option<Changelog>,
    ) -> Self {
        Self {
            stopping,
            numbers: BTreeSet::new(),
            released: BTreeMap::new(),
            restored_from: BTreeMap::new(),
            seeks: BTreeMap::new(),
            fresh_seeks: BTreeSet::new(),
            last_round: 0,
            local,
            input_topics,
            changelog,
        }
    }

    /// The assigned partition numbers.
    pub fn owned(&self) -> &BTreeSet<i32> {
        &self.numbers
    }

    /// Whether any partition is assigned.
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
    }

    /// Whether snapshots are on (then they store the offsets, not the acker).
    pub fn snapshots_on(&self) -> bool {
        self.local.is_some()
    }

    /// Whether a consumed message is to be applied: not when the restored
    /// state already contains it, nor when it was fetched before a seek
    /// its partition still waits for or just made. Asked of every message:
    /// a scan of the few assigned topic-partitions instead of building an
    /// owned key per message.
    pub fn admit(&self, topic: &str, partition: i32, offset: i64) -> bool {
        let is = |(t, p): &TopicPartition| *p == partition && t == topic;
        // A message fetched before its partition was revoked is the next
        // owner's.
        self.numbers.contains(&partition)
            && !(self
                .restored_from
                .iter()
                .any(|(tp, &next)| is(tp) && offset < next)
                || self.seeks.keys().any(is)
                || self.fresh_seeks.iter().any(is))
    }

    /// Notes the offsets a step released.
    pub fn released(&mut self, offsets: Vec<(TopicPartition, i64)>) {
        self.released.extend(offsets);
    }

    /// Takes newly assigned partitions and restores their state.
    pub async fn assigned(
        &mut self,
        step: &mut Step,
        tps: Vec<TopicPartition>,
        consumer: &Arc<InputConsumer>,
        sink: &Sink,
    ) {
        tracing::info!(partitions = ?tps, "assigned");
        let mut numbers = partition_numbers(&tps);
        for tp in tps {
            step.progress.assign(tp, Instant::now(), true);
        }
        numbers.retain(|p| self.numbers.insert(*p));
        step.metrics().partitions_owned(self.numbers.len());
        let started = Instant::now();
        self.restore(step, &numbers, consumer, sink).await;
        step.metrics().restore_took(started.elapsed());
    }

    /// Lets revoked partitions go: with `handover` a full round (snapshot
    /// and changelog, offsets stored) so the next owner starts where this
    /// one stopped and nothing is emitted twice; lost partitions get a
    /// local snapshot only (another member may own them already). Then
    /// their state is dropped.
    pub async fn revoked(
        &mut self,
        step: &mut Step,
        tps: Vec<TopicPartition>,
        handover: bool,
        ack_tx: &mpsc::Sender<Ack>,
        consumer: &InputConsumer,
        sink: &Sink,
    ) {
        tracing::info!(partitions = ?tps, handover, "revoked");
        let numbers = partition_numbers(&tps);
        if self.barrier(step, ack_tx).await {
            let kind = match handover {
                true => Handover::Changelog,
                false => Handover::LocalOnly,
            };
            self.write_round(step, &numbers, consumer, sink, kind).await;
        }
        for tp in &tps {
            step.revoke(tp);
            self.released.remove(tp);
            self.restored_from.remove(tp);
            self.seeks.remove(tp);
        }
        for p in numbers {
            self.numbers.remove(&p);
            let number = u16::try_from(p).unwrap_or(u16::MAX);
            if let Some(c) = &mut self.changelog {
                c.changes.forget(number);
            }
            let dropped = step.engine.evict_partition(number);
            tracing::info!(
                partition = p,
                customers = dropped,
                "state of revoked partition dropped"
            );
        }
        step.metrics().partitions_owned(self.numbers.len());
        if self.numbers.is_empty() {
            // Nothing owned: the next assignment starts from its restored
            // clock, as a restart would, not from where this one had got.
            step.engine.reset_clock();
        }
    }

    /// A snapshot round of every owned partition, after everything
    /// produced so far is acknowledged (a snapshot never covers an
    /// unacknowledged alert).
    pub async fn snapshot_owned(
        &mut self,
        step: &mut Step,
        ack_tx: &mpsc::Sender<Ack>,
        consumer: &InputConsumer,
        sink: &Sink,
    ) {
        if self.barrier(step, ack_tx).await {
            self.snapshot_all(step, consumer, sink).await;
        }
    }

    /// A round of every owned partition without waiting for the acker: at
    /// shutdown once it has confirmed everything, or after a barrier.
    pub async fn snapshot_all(&mut self, step: &mut Step, consumer: &InputConsumer, sink: &Sink) {
        let all: Vec<i32> = self.numbers.iter().copied().collect();
        self.write_round(step, &all, consumer, sink, Handover::Changelog)
            .await;
    }

    /// Hands the pending step to the acker and waits until it and
    /// everything before it are acknowledged; false if the acker is gone
    /// or the service is stopping (an unreachable broker must not hold
    /// shutdown).
    async fn barrier(&mut self, step: &mut Step, ack_tx: &mpsc::Sender<Ack>) -> bool {
        if !self.snapshots_on() {
            return false;
        }
        let (ack, released) = step.take_ack(false);
        self.released(released);
        let (tx, rx) = oneshot::channel();
        let sent = ack_tx.send(ack).await.is_ok() && ack_tx.send(Ack::Barrier(tx)).await.is_ok();
        sent && tokio::select! {
            r = rx => r.is_ok(),
            _ = self.stopping.cancelled() => false,
        }
    }

    /// Writes the snapshots of `partitions` and then stores the offsets they
    /// cover; `Handover::Changelog` also appends a changelog round for each,
    /// acknowledged before its offsets are stored.
    async fn write_round(
        &mut self,
        step: &mut Step,
        partitions: &[i32],
        consumer: &InputConsumer,
        sink: &Sink,
        handover: Handover,
    ) {
        let Some(local) = self.local.clone() else {
            return;
        };
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let round = now_ms.max(self.last_round + 1);
        self.last_round = round;
        let numbers: Vec<u16> = partitions
            .iter()
            .filter_map(|&p| u16::try_from(p).ok())
            .collect();
        // Offsets are stored only once the whole round is on disk, so the
        // committed offsets never run ahead of a round every partition has.
        let mut safe = Vec::new();
        // A partition still being rebuilt has partial state: no round for it.
        let numbers: Vec<u16> = numbers
            .into_iter()
            .filter(|&n| !step.recovery.rebuilding(n))
            .collect();
        for state in step.engine.partition_states(&numbers) {
            let p = i32::from(state.partition);
            let snap = Snapshot {
                round,
                offsets: self.covered(p),
                owner: local.owner.clone(),
                state,
            };
            tracing::debug!(partition = p, customers = snap.state.customers.len(), offsets = ?snap.offsets, watermark = ?snap.state.clock.watermark, "writing snapshot");
            let records = match (&mut self.changelog, handover) {
                (Some(c), Handover::Changelog) => match c.changes.round(
                    &snap.state,
                    &step.engine.take_forgotten(snap.state.partition),
                    &snap.offsets,
                ) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        step.metrics().encode_failed("changelog");
                        tracing::error!(partition = p, error = %e, "changelog round not encodable; offsets stay where they were");
                        continue;
                    }
                },
                _ => None,
            };
            let dir = local.dir.clone();
            let written = tokio::task::spawn_blocking(move || {
                snapshot::write(&dir, &snap).map(|_| snap.offsets)
            })
            .await;
            if let Some(records) = records
                && !self.send_round(p, records, sink).await
            {
                continue;
            }
            match written {
                Ok(Ok(offsets)) => safe.push((p, offsets)),
                Ok(Err(e)) => {
                    tracing::warn!(partition = p, error = %e, "snapshot failed; offsets stay where they were")
                }
                Err(e) => tracing::warn!(partition = p, error = %e, "snapshot task failed"),
            }
        }
        for (p, offsets) in safe {
            for (topic, next) in offsets {
                // Legacy store semantics: librdkafka commits offset + 1.
                if let Err(e) = consumer.store_offset(&topic, p, next - 1) {
                    tracing::debug!(topic, partition = p, error = %e, "offset not stored");
                }
            }
        }
    }

    /// Per input topic of partition `p`: the next offset the state covers.
    fn covered(&self, p: i32) -> Vec<(String, i64)> {
        self.input_topics
            .iter()
            .filter_map(|t| {
                let tp = (t.clone(), p);
                let next = self
                    .released
                    .get(&tp)
                    .map(|o| o + 1)
                    .or_else(|| self.restored_from.get(&tp).copied());
                next.map(|n| (t.clone(), n))
            })
            .collect()
    }

    /// What a wait on the broker gives up on: the graceful stop while
    /// consuming (an outage must not hold shutdown), the hard stop in the
    /// final round, which runs after the graceful one.
    pub(super) fn give_up<'a>(&'a self, hard: &'a CancellationToken) -> &'a CancellationToken {
        if self.stopping.is_cancelled() {
            hard
        } else {
            &self.stopping
        }
    }

    /// Appends one changelog round for partition `p` and waits until the
    /// broker has it all; false if it could not (offsets then stay put).
    async fn send_round(&self, p: i32, round: Vec<changelog::Record>, sink: &Sink) -> bool {
        let Some(c) = &self.changelog else {
            return true;
        };
        let mut queued = Vec::with_capacity(round.len());
        for (key, value) in round {
            queued.push(sink.to_partition(&c.topic, p, key, value).await);
        }
        for out in queued {
            if let Err(e) = sink.confirm(out, self.give_up(&c.stop)).await {
                tracing::warn!(partition = p, error = %e, "changelog round not acknowledged; offsets stay where they were");
                return false;
            }
        }
        true
    }

    /// Restores the partitions assigned together (see [`restore`]); a
    /// partition with nothing covering its committed offsets is rebuilt
    /// from its input (see [`super::recovery`]), and every restored
    /// partition's tail is noted.
    async fn restore(
        &mut self,
        step: &mut Step,
        partitions: &[i32],
        consumer: &Arc<InputConsumer>,
        sink: &Sink,
    ) {
        let Some(mut committed) = self.committed(partitions, consumer).await else {
            return;
        };
        let mut watermarks = self.watermarks(partitions, consumer).await;
        let mut candidates = BTreeMap::new();
        let mut marks = BTreeMap::new();
        for &p in partitions {
            let Ok(number) = u16::try_from(p) else {
                continue;
            };
            let committed = committed.remove(&p).unwrap_or_default();
            let watermarks = watermarks.remove(&p).unwrap_or_default();
            let snapshots = self
                .local
                .as_ref()
                .map(|l| local_snapshots(l, number))
                .unwrap_or_default();
            let high = watermarks.iter().map(|(t, _, h)| (t.clone(), *h)).collect();
            candidates.insert(
                p,
                Candidates {
                    snapshots,
                    committed: committed.clone(),
                    high,
                },
            );
            marks.insert(p, (committed, watermarks));
        }
        let choices = restore::choose(candidates);
        let from_changelog: Vec<i32> = choices
            .iter()
            .filter(|(_, c)| matches!(c, Choice::Changelog { .. }))
            .map(|(p, _)| *p)
            .collect();
        let mut changelog_states = self.changelog_states(&from_changelog, sink).await;
        for (p, choice) in choices {
            let restored = match choice {
                Choice::Snapshot(snap) => Some((snap.round, snap.state, snap.offsets, "snapshot")),
                Choice::Changelog { fallback } => match changelog_states.remove(&p) {
                    Some((state, offsets)) => Some((0, state, offsets, "changelog")),
                    None => fallback.map(|s| (s.round, s.state, s.offsets, "snapshot")),
                },
            };
            let (committed, watermarks) = marks.remove(&p).unwrap_or_default();
            let from_scratch = restored.is_none();
            let mut from = BTreeMap::new();
            if let Some((round, state, offsets, source)) = restored {
                self.last_round = self.last_round.max(round);
                let n = step.engine.restore_partition(state);
                for (topic, next) in offsets {
                    from.insert(topic.clone(), next);
                    self.restored_from.insert((topic, p), next);
                }
                step.metrics().restored(source);
                tracing::info!(partition = p, customers = n, from = source, "restored");
            }
            self.rebuild(step, p, &committed, &from, &watermarks, from_scratch);
            for (topic, _, high) in watermarks {
                let tp = (topic, p);
                let start = from.get(&tp.0).copied().or_else(|| {
                    committed
                        .iter()
                        .find(|(t, c)| *t == tp.0 && *c >= 0)
                        .map(|(_, c)| *c)
                });
                let rebuilding = u16::try_from(p).is_ok_and(|n| step.recovery.rebuilding(n));
                if let Some(start) = start.filter(|_| !rebuilding) {
                    step.progress.starts_at(&tp, start);
                }
                // Nothing to re-apply: no tail to wait for.
                if start.is_none_or(|s| s < high) {
                    step.recovery.tail(tp, high);
                }
            }
        }
    }

    /// Re-reads what lies between the restored state (`from`, else the log
    /// start) and the committed offsets of partition `p`, without emitting.
    fn rebuild(
        &mut self,
        step: &mut Step,
        p: i32,
        committed: &[(String, i64)],
        from: &BTreeMap<String, i64>,
        watermarks: &[(String, i64, i64)],
        from_scratch: bool,
    ) {
        let Ok(number) = u16::try_from(p) else {
            return;
        };
        let mut pending = Vec::new();
        for (topic, c) in committed {
            let low = watermarks
                .iter()
                .find(|(t, _, _)| t == topic)
                .map_or(0, |(_, low, _)| *low);
            let start = from.get(topic).copied().unwrap_or(low).max(low);
            if start >= *c {
                if !from.contains_key(topic) && *c > 0 {
                    tracing::warn!(
                        topic,
                        partition = p,
                        committed = c,
                        "input before the committed offset is no longer retained; its customers start empty"
                    );
                }
                continue;
            }
            let offset = match from.get(topic) {
                Some(&next) if next > low => rdkafka::Offset::Offset(next),
                _ => rdkafka::Offset::Beginning,
            };
            self.seeks.insert((topic.clone(), p), offset);
            pending.push((topic.clone(), *c));
        }
        if pending.is_empty() {
            return;
        }
        tracing::info!(partition = p, up_to = ?pending, from_scratch, "rebuilding from the input without emitting");
        if from_scratch {
            step.metrics().restored("rebuild");
        }
        step.recovery.rebuild(number, pending);
    }

    /// Seeks the partitions a rebuild starts on; one that cannot be sought
    /// yet (librdkafka refuses before its fetcher started) is tried again
    /// on the next call, and its messages are dropped meanwhile.
    pub fn seek(&mut self, consumer: &InputConsumer) {
        let seeks = std::mem::take(&mut self.seeks);
        for ((topic, p), offset) in seeks {
            match consumer.seek(&topic, p, offset, Duration::from_millis(500)) {
                Ok(()) => {
                    self.fresh_seeks.insert((topic, p));
                }
                Err(e) => {
                    tracing::debug!(topic, partition = p, error = %e, "seek not possible yet; trying again");
                    self.seeks.insert((topic, p), offset);
                }
            }
        }
    }

    /// Seeks owned partitions back to messages received but not applied
    /// (see [`super::polling`]), unless a seek is already pending there.
    pub fn seek_back(&mut self, first: BTreeMap<TopicPartition, i64>) {
        for ((topic, p), offset) in first {
            if self.numbers.contains(&p) {
                self.seeks
                    .entry((topic, p))
                    .or_insert(rdkafka::Offset::Offset(offset));
            }
        }
    }

    /// Ends the loop iteration: messages received from now on were fetched
    /// after every seek made so far.
    pub fn seeks_settled(&mut self) {
        self.fresh_seeks.clear();
    }
}

/// The distinct partition numbers of `tps`, in order (every input topic
/// has the same numbers).
fn partition_numbers(tps: &[TopicPartition]) -> Vec<i32> {
    let mut numbers: Vec<i32> = tps.iter().map(|tp| tp.1).collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}
