//! `churnwatch run`: the engine inside the Kafka adapters.
//!
//! One task owns the engine and the consumers (so the engine needs no
//! lock); an acker task confirms every produced record in order and only
//! then stores the input offsets they cover. Shutdown is one cancellation
//! signal: stop consuming, flush what is in flight (bounded), commit.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::BorrowedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::changelog::{self, Changes, Entry};
use crate::config::{Config, RunClock};
use crate::engine::alert::{Alert, Trigger};
use crate::engine::customer::Windows;
use crate::engine::event::{self, RejectReason, Ts};
use crate::engine::store::Store;
use crate::engine::{Applied, Engine};
use crate::http::{ApiState, Readiness};
use crate::kafka::offsets::{PendingOffsets, TopicPartition};
use crate::kafka::progress::Progress;
use crate::kafka::sink::{Outgoing, Sink, Source};
use crate::kafka::source::{self, InputConsumer, Rebalanced, SourceError};
use crate::metrics::Metrics;
use crate::snapshot::{self, Snapshot};
use crate::webhook::{Outboxes, WebhookError};

/// How long shutdown waits for in-flight records before giving up on them
/// (their input offsets then stay uncommitted and are consumed again).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Readiness turns false when the engine loop has not reported for this
/// long (at least; 20 ticks if longer).
const READINESS_STALE: Duration = Duration::from_secs(5);

/// Engine partition of roster events (never assigned, never evicted).
const ROSTER_PARTITION: u16 = u16::MAX;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The Kafka clients could not be set up (bad config, topics missing or
    /// not co-partitioned, brokers unreachable).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A webhook endpoint could not be set up.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// Metrics could not be registered (a name already taken in the registry).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP API could not bind its address.
    #[error("cannot bind the HTTP API to {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// What the service shares with its surroundings: the store readers see,
/// the metrics registry, and optionally an already bound HTTP listener
/// (tests bind port 0; otherwise `http.bind` is used).
#[derive(Default)]
pub struct Wiring {
    pub store: Store,
    pub registry: prometheus::Registry,
    pub http: Option<tokio::net::TcpListener>,
}

/// Totals of one `run`, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: u64,
    pub rejected: u64,
    pub alerts: u64,
}

/// Records produced in one step and the input offsets they make safe.
struct Ack {
    records: Vec<Outgoing>,
    offsets: Vec<(TopicPartition, i64)>,
    /// Answered once everything sent before it is acknowledged.
    barrier: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Runs until `shutdown` completes.
pub async fn run(
    config: &Config,
    brokers: &str,
    wiring: Wiring,
    shutdown: impl Future<Output = ()>,
) -> Result<Report, ServiceError> {
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let Wiring {
        store,
        registry,
        http,
    } = wiring;
    let names: Vec<String> = config.webhooks.iter().map(|w| w.name.clone()).collect();
    let metrics = Metrics::new(&registry, &names)?;
    let listener = match http {
        Some(l) => l,
        None => tokio::net::TcpListener::bind(&config.http.bind)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: config.http.bind.clone(),
                source,
            })?,
    };
    // A loop that has not reported for this long is stalled.
    let ready = Arc::new(Readiness::new(
        (config.engine.tick_interval * 20).max(READINESS_STALE),
    ));
    let api = ApiState {
        store: store.clone(),
        registry,
        ready: ready.clone(),
        windows: Windows::new(&config.engine_settings()),
    };
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(crate::http::serve(
        listener,
        api,
        http_stop.clone().cancelled_owned(),
    ));
    let outboxes = Outboxes::start(
        &config.webhooks,
        metrics.clone(),
        token.child_token(),
        &tracker,
    )?;
    let consumer = Arc::new(source::input_consumer(&config.kafka, brokers)?);
    let instance = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let (roster, roster_parts) = source::roster_consumer(&config.kafka, brokers, &instance)?;
    let sink = Sink::new(
        source::producer(&config.kafka, brokers)?,
        config.kafka.alert_topic.clone(),
        config.kafka.dead_letter_topic.clone(),
    );
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(1024);
    tracker.spawn(acker(
        consumer.clone(),
        sink.clone(),
        ack_rx,
        token.child_token(),
    ));

    let clock = config.engine.clock.engine_clock();
    let mut state = Loop {
        engine: Engine::with_store(&config.engine_settings(), clock, store.clone()),
        clock: config.engine.clock,
        idle: config.engine.idle_timeout,
        alerts: Vec::new(),
        records: Vec::new(),
        offsets: PendingOffsets::default(),
        progress: Progress::default(),
        report: Report::default(),
        sink,
        metrics,
        outboxes: Some(outboxes),
        ready,
        snapshots: (!config.state.dir.as_os_str().is_empty()).then(|| config.state.dir.clone()),
        input_topics: config.kafka.input_topics.clone(),
        released: BTreeMap::new(),
        restored_from: BTreeMap::new(),
        changelog: (!config.kafka.changelog_topic.is_empty()).then(|| Changelog {
            topic: config.kafka.changelog_topic.clone(),
            reader: source::changelog_reader(&config.kafka, brokers, &instance),
            changes: Changes::default(),
            stop: token.child_token(),
        }),
        partitions: BTreeSet::new(),
        last_round: 0,
    };
    for tp in roster_parts {
        state.progress.assign(tp, Instant::now(), false);
    }
    let mut ticker = tokio::time::interval(config.engine.tick_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let every = config.state.snapshot_interval;
    let mut snapshot_ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    snapshot_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(brokers, group = %config.kafka.group_id, clock = ?config.engine.clock, "consuming");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.recv() => {
                // Rebalances surface inside `recv`: apply them before its message.
                for r in consumer.context().take_rebalances() {
                    state.rebalance(r, &ack_tx, &consumer).await;
                }
                match m {
                    Ok(m) => state.input(&m, false).await,
                    Err(e) => tracing::warn!(error = %e, "input consumer error"),
                }
            }
            m = roster.recv() => match m {
                Ok(m) => state.input(&m, true).await,
                Err(e) => tracing::warn!(error = %e, "roster consumer error"),
            },
            _ = ticker.tick() => state.tick(&consumer, &roster).await,
            _ = snapshot_ticker.tick() => {
                let all: Vec<i32> = state.partitions.iter().copied().collect();
                state.snapshot(&all, Some(&ack_tx), &consumer, true).await;
            }
        }
        for r in consumer.context().take_rebalances() {
            state.rebalance(r, &ack_tx, &consumer).await;
        }
        let ack = state.step_ack();
        if (!ack.records.is_empty() || !ack.offsets.is_empty()) && ack_tx.send(ack).await.is_err() {
            tracing::error!("acker stopped; ending");
            break;
        }
    }
    tracing::info!("draining");
    state.ready.report(false);
    drop(ack_tx);
    // Closing the outboxes lets each webhook worker finish its queue.
    drop(state.outboxes.take());
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight records not acknowledged in time; their input will be consumed again"
        );
        token.cancel();
        tracker.wait().await;
    } else {
        // Everything produced is acknowledged: a final snapshot covers it all.
        let all: Vec<i32> = state.partitions.iter().copied().collect();
        state.snapshot(&all, None, &consumer, true).await;
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit");
    }
    http_stop.cancel();
    if let Ok(Err(e)) = http_task.await {
        tracing::warn!(error = %e, "HTTP API stopped with an error");
    }
    tracing::info!(?state.report, "stopped");
    Ok(state.report)
}

/// The engine task's state between steps.
struct Loop {
    engine: Engine,
    clock: RunClock,
    idle: Duration,
    alerts: Vec<Alert>,
    records: Vec<Outgoing>,
    offsets: PendingOffsets,
    progress: Progress,
    report: Report,
    sink: Sink,
    metrics: Metrics,
    /// Taken (closed) at shutdown so the webhook workers finish their queues.
    outboxes: Option<Outboxes>,
    /// Shared with the HTTP API's `/readyz`.
    ready: Arc<Readiness>,
    /// Snapshot directory, if snapshots are on.
    snapshots: Option<std::path::PathBuf>,
    input_topics: Vec<String>,
    /// Last applied (released) offset per input partition.
    released: BTreeMap<TopicPartition, i64>,
    /// Next offset covered by a restored snapshot: older messages are in
    /// the restored state already and are skipped.
    restored_from: BTreeMap<TopicPartition, i64>,
    /// Assigned input partition numbers.
    partitions: BTreeSet<i32>,
    /// The last snapshot round written or restored; rounds only grow.
    last_round: u64,
    /// The state changelog, if on.
    changelog: Option<Changelog>,
}

/// The state changelog's writer and reader settings.
struct Changelog {
    topic: String,
    reader: rdkafka::ClientConfig,
    changes: Changes,
    stop: CancellationToken,
}

/// How long a new owner reads a changelog partition before giving up on it.
const CHANGELOG_READ_LIMIT: Duration = Duration::from_secs(120);

impl Loop {
    async fn input(&mut self, m: &BorrowedMessage<'_>, roster: bool) {
        let tp: TopicPartition = (m.topic().to_string(), m.partition());
        if self
            .restored_from
            .get(&tp)
            .is_some_and(|&next| m.offset() < next)
        {
            return;
        }
        let payload = m.payload().unwrap_or_default();
        let decoded = if m.payload().is_none() {
            Err(RejectReason::MissingField("type"))
        } else {
            event::decode(payload, self.engine.decode_limits())
        };
        // Roster events belong to no input partition: a rebalance must never
        // drop them (the roster is read once, from the beginning).
        let partition = if roster {
            ROSTER_PARTITION
        } else {
            u16::try_from(m.partition()).unwrap_or(ROSTER_PARTITION)
        };
        let mut ts = None;
        let mut kind = None;
        let started = Instant::now();
        let outcome = decoded.and_then(|ev| {
            ts = Some(ev.ts);
            kind = Some(ev.event_type());
            self.engine.apply(ev, partition, &mut self.alerts)
        });
        let applied_at = match (outcome, kind) {
            (Ok(applied), Some(kind)) => {
                self.report.applied += 1;
                self.metrics
                    .event_applied(kind, started.elapsed().as_secs_f64());
                ts.filter(|_| applied == Applied::Held)
            }
            (Ok(_), None) => None,
            (Err(reason), kind) => {
                ts = None;
                self.metrics.event_rejected(kind, &reason);
                self.report.rejected += 1;
                tracing::debug!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    reason = reason.code(),
                    "rejected"
                );
                let source = Source {
                    topic: m.topic(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key(),
                    payload,
                };
                let out = self.sink.dead_letter(&source, &reason).await;
                self.records.push(out);
                None
            }
        };
        self.progress.observe(&tp, m.offset(), ts, Instant::now());
        if !roster {
            self.offsets.push(tp, m.offset(), applied_at);
        }
        self.flush_alerts().await;
    }

    async fn tick(&mut self, consumer: &InputConsumer, roster: &InputConsumer) {
        let now_wall = Ts(chrono::Utc::now().timestamp_millis());
        match self.clock {
            RunClock::Wall => self.engine.advance_to(now_wall, &mut self.alerts),
            RunClock::Event => {
                self.engine.set_horizon(now_wall);
                let now = Instant::now();
                for tp in self.progress.idle(now, self.idle) {
                    let high = consumer
                        .context()
                        .high_watermark(&tp)
                        .or_else(|| roster.context().high_watermark(&tp));
                    if let Some(high) = high {
                        self.progress.high_watermark(&tp, high);
                    }
                    let lag = consumer
                        .context()
                        .lag(&tp)
                        .or_else(|| roster.context().lag(&tp));
                    if lag == Some(0) {
                        self.progress.caught_up(&tp);
                    }
                }
                if let Some(w) = self.progress.watermark(now, self.idle) {
                    self.engine.advance_to(w, &mut self.alerts);
                }
            }
        }
        // Ready: partitions assigned and a broker reachable to consume from.
        let ready = !self.partitions.is_empty() && consumer.context().brokers_up();
        self.ready.report(ready);
        let e = &self.engine;
        self.metrics.engine_state(
            e.tier_counts(),
            e.thresholds(),
            e.watermark(),
            e.stats().late_events,
            e.held_events(),
        );
        for ((topic, partition), lag) in consumer.context().lags() {
            self.metrics.consumer_lag(&topic, partition, lag);
        }
        self.flush_alerts().await;
    }

    async fn rebalance(
        &mut self,
        r: Rebalanced,
        ack_tx: &mpsc::Sender<Ack>,
        consumer: &InputConsumer,
    ) {
        match r {
            Rebalanced::Assigned(tps) => {
                tracing::info!(partitions = ?tps, "assigned");
                // Ready once partitions are assigned (their state starts empty
                // until snapshots restore it; see README).
                let mut numbers: Vec<i32> = tps.iter().map(|tp| tp.1).collect();
                numbers.sort_unstable();
                numbers.dedup();
                for tp in tps {
                    self.progress.assign(tp, Instant::now(), true);
                }
                numbers.retain(|p| self.partitions.insert(*p));
                self.restore(&numbers, consumer).await;
                self.ready.report(!self.partitions.is_empty());
            }
            Rebalanced::Revoked(tps) => {
                tracing::info!(partitions = ?tps, "revoked");
                self.ready.report(false);
                let mut numbers: Vec<i32> = tps.iter().map(|tp| tp.1).collect();
                numbers.sort_unstable();
                numbers.dedup();
                // The next owner may be this machine again: leave a local
                // snapshot. Not a changelog round: the partitions are already
                // revoked and their next owner may be writing it.
                self.snapshot(&numbers, Some(ack_tx), consumer, false).await;
                for tp in &tps {
                    self.offsets.revoke(tp);
                    self.progress.revoke(tp);
                    self.released.remove(tp);
                    self.restored_from.remove(tp);
                }
                for p in numbers {
                    self.partitions.remove(&p);
                    let number = u16::try_from(p).unwrap_or(u16::MAX);
                    if let Some(c) = &mut self.changelog {
                        c.changes.forget(number);
                    }
                    let dropped = self.engine.evict_partition(number);
                    tracing::info!(
                        partition = p,
                        customers = dropped,
                        "state of revoked partition dropped"
                    );
                }
            }
        }
    }

    /// Hands this step's alerts to the alert topic and the webhook
    /// outboxes (which accept or dead-letter at once, never block).
    async fn flush_alerts(&mut self) {
        let now = Instant::now();
        let wall = chrono::Utc::now().timestamp_millis();
        for alert in std::mem::take(&mut self.alerts) {
            self.report.alerts += 1;
            self.metrics.alert_emitted(&alert);
            let body = Arc::new(serde_json::to_vec(&alert).unwrap_or_default());
            if let Some(outboxes) = &self.outboxes {
                outboxes.submit(&alert, &body);
            }
            // Under the wall clock a deadline is a wall time: latency counts
            // from it, not from the tick that noticed it.
            let overdue = match (self.clock, alert.trigger) {
                (RunClock::Wall, Trigger::Deadline) => {
                    Duration::from_millis(u64::try_from(wall - alert.at.0).unwrap_or(0))
                }
                _ => Duration::ZERO,
            };
            let since = now.checked_sub(overdue).unwrap_or(now);
            let out = self.sink.alert(&alert, &body, since).await;
            self.records.push(out);
        }
    }

    /// What this step produced and which offsets it made safe. With
    /// snapshots on, offsets are stored by the snapshot that covers them.
    fn step_ack(&mut self) -> Ack {
        let released = self.offsets.release(self.engine.watermark());
        for (tp, o) in &released {
            self.released.insert(tp.clone(), *o);
        }
        Ack {
            records: std::mem::take(&mut self.records),
            offsets: if self.snapshots.is_some() {
                Vec::new()
            } else {
                released
            },
            barrier: None,
        }
    }

    /// Restores the partitions assigned together. From local snapshots
    /// when one round of them covers every partition's committed offsets
    /// (the fast path of a restart on the same machine: one round, so the
    /// partitions agree on the engine clock even if a crash cut the last
    /// round short); else each from its newest local snapshot that covers
    /// them, from the state changelog (a hand-over), or from whatever local
    /// snapshot there is.
    async fn restore(&mut self, partitions: &[i32], consumer: &InputConsumer) {
        let Some(dir) = self.snapshots.clone() else {
            return;
        };
        let mut chosen = BTreeMap::new();
        let mut fallback = BTreeMap::new();
        for &p in partitions {
            let Ok(number) = u16::try_from(p) else {
                continue;
            };
            let committed = self.committed(p, consumer);
            let (covering, others): (Vec<_>, Vec<_>) = local_snapshots(&dir, number)
                .into_iter()
                .partition(|s| covers(&s.offsets, &committed));
            chosen.insert(p, covering);
            fallback.insert(p, others);
        }
        let common = common_round(&chosen);
        for (p, covering) in chosen {
            let newest = covering
                .into_iter()
                .filter(|s| common.is_none_or(|r| s.round == r))
                .max_by_key(|s| s.round);
            if let Some(snap) = &newest {
                self.last_round = self.last_round.max(snap.round);
            }
            let restored = match newest {
                Some(snap) => Some((snap.state, snap.offsets, "snapshot")),
                None => match self.changelog_state(p).await {
                    Some((state, offsets)) => Some((state, offsets, "changelog")),
                    None => fallback
                        .remove(&p)
                        .and_then(|f| f.into_iter().max_by_key(|s| s.round))
                        .map(|snap| (snap.state, snap.offsets, "snapshot")),
                },
            };
            if let Some((state, offsets, from)) = restored {
                let n = self.engine.restore_partition(state);
                for (topic, next) in offsets {
                    self.restored_from.insert((topic, p), next);
                }
                tracing::info!(partition = p, customers = n, from, "restored");
            }
        }
    }

    /// The group's committed input offsets of partition `p` (none known:
    /// empty, and any local snapshot is taken).
    fn committed(&self, p: i32, consumer: &InputConsumer) -> Vec<(String, i64)> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in &self.input_topics {
            tpl.add_partition(t, p);
        }
        match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
            Ok(c) => c
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => Some((e.topic().to_string(), o)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "committed offsets unknown");
                Vec::new()
            }
        }
    }

    /// Partition `p`'s state as of its last complete changelog round.
    async fn changelog_state(
        &mut self,
        p: i32,
    ) -> Option<(crate::engine::PartitionState, Vec<(String, i64)>)> {
        let c = self.changelog.as_ref()?;
        let number = u16::try_from(p).ok()?;
        let nonce: u128 = rand::random();
        let fence = self
            .sink
            .to_partition(
                &c.topic,
                p,
                changelog::FENCE_KEY.to_vec(),
                Entry::Fence(nonce).encode(),
            )
            .await;
        if let Err(e) = self.sink.confirm(fence, &c.stop).await {
            tracing::warn!(partition = p, error = %e, "changelog fence not written");
            return None;
        }
        let (reader, topic) = (c.reader.clone(), c.topic.clone());
        let read = tokio::task::spawn_blocking(move || {
            changelog::read_to_fence(&reader, &topic, p, nonce, CHANGELOG_READ_LIMIT)
        })
        .await;
        match read {
            Ok(Ok(entries)) => changelog::fold(number, entries),
            Ok(Err(e)) => {
                tracing::warn!(partition = p, error = %e, "changelog unreadable; rebuilding from Kafka");
                None
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "changelog reader failed");
                None
            }
        }
    }

    /// Writes the snapshots of `partitions` and then stores the offsets they
    /// cover. With `barrier`, first waits until everything produced so far
    /// is acknowledged, so a snapshot never covers an unacknowledged alert.
    /// Partitions still `owned` also get a changelog round, acknowledged
    /// before their offsets are stored.
    async fn snapshot(
        &mut self,
        partitions: &[i32],
        barrier: Option<&mpsc::Sender<Ack>>,
        consumer: &InputConsumer,
        owned: bool,
    ) {
        let Some(dir) = self.snapshots.clone() else {
            return;
        };
        if let Some(ack_tx) = barrier {
            let step = self.step_ack();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = ack_tx.send(step).await.is_ok()
                && ack_tx
                    .send(Ack {
                        records: Vec::new(),
                        offsets: Vec::new(),
                        barrier: Some(tx),
                    })
                    .await
                    .is_ok();
            if !sent || rx.await.is_err() {
                return;
            }
        }
        let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        let round = now_ms.max(self.last_round + 1);
        self.last_round = round;
        // Offsets are stored only once the whole round is on disk, so the
        // committed offsets never run ahead of a round every partition has.
        let mut safe = Vec::new();
        for &p in partitions {
            let Ok(number) = u16::try_from(p) else {
                continue;
            };
            let offsets: Vec<(String, i64)> = self
                .input_topics
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
                .collect();
            let snap = Snapshot {
                round,
                offsets,
                state: self.engine.partition_state(number),
            };
            tracing::debug!(partition = p, customers = snap.state.customers.len(), offsets = ?snap.offsets, watermark = ?snap.state.clock.watermark, "writing snapshot");
            let round = self
                .changelog
                .as_mut()
                .filter(|_| owned)
                .map(|c| c.changes.round(&snap.state, &snap.offsets));
            let dir = dir.clone();
            let written = tokio::task::spawn_blocking(move || {
                snapshot::write(&dir, &snap).map(|_| snap.offsets)
            })
            .await;
            if let Some(round) = round
                && !self.send_round(p, round).await
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
}

impl Loop {
    /// Appends one changelog round for partition `p` and waits until the
    /// broker has it all; false if it could not (offsets then stay put).
    async fn send_round(&mut self, p: i32, round: Vec<(Vec<u8>, Vec<u8>)>) -> bool {
        let Some(c) = &self.changelog else {
            return true;
        };
        let mut queued = Vec::with_capacity(round.len());
        for (key, value) in round {
            queued.push(self.sink.to_partition(&c.topic, p, key, value).await);
        }
        for out in queued {
            if let Err(e) = self.sink.confirm(out, &c.stop).await {
                tracing::warn!(partition = p, error = %e, "changelog round not acknowledged; offsets stay where they were");
                return false;
            }
        }
        true
    }
}

/// Confirms records in the order they were produced, then stores the
/// offsets of the step, so a stored offset never runs ahead of an alert.
async fn acker(
    consumer: Arc<InputConsumer>,
    sink: Sink,
    mut rx: mpsc::Receiver<Ack>,
    stop: CancellationToken,
) {
    while let Some(ack) = rx.recv().await {
        if let Some(done) = ack.barrier {
            // Everything before the barrier is confirmed: say so.
            let _ = done.send(());
            continue;
        }
        tracing::trace!(
            records = ack.records.len(),
            offsets = ack.offsets.len(),
            "confirming"
        );
        for record in ack.records {
            if let Err(e) = sink.confirm(record, &stop).await {
                tracing::warn!(error = %e, "stopping before all records were acknowledged");
                return;
            }
        }
        for ((topic, partition), offset) in ack.offsets {
            // A revoked partition refuses the store; its new owner re-reads it.
            if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                tracing::debug!(topic, partition, offset, error = %e, "offset not stored");
            }
        }
    }
}

/// Partition `p`'s valid local snapshots (current and previous); a refused
/// file is logged and skipped, so the partition is rebuilt another way.
fn local_snapshots(dir: &std::path::Path, p: u16) -> Vec<Snapshot> {
    [snapshot::read(dir, p), snapshot::read_previous(dir, p)]
        .into_iter()
        .filter_map(|r| match r {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "snapshot refused; restoring from the changelog or rebuilding from Kafka");
                None
            }
        })
        .collect()
}

/// The newest snapshot round that every partition has.
fn common_round(snapshots: &BTreeMap<i32, Vec<Snapshot>>) -> Option<u64> {
    let rounds: BTreeSet<u64> = snapshots.values().flatten().map(|s| s.round).collect();
    rounds
        .into_iter()
        .rev()
        .find(|r| snapshots.values().all(|c| c.iter().any(|s| s.round == *r)))
}

/// Whether a snapshot's offsets reach the group's committed ones (none
/// known: any snapshot does).
fn covers(offsets: &[(String, i64)], committed: &[(String, i64)]) -> bool {
    committed
        .iter()
        .all(|(topic, c)| offsets.iter().any(|(t, next)| t == topic && next >= c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn snap(partition: u16, round: u64) -> Snapshot {
        let engine = Engine::new(
            &Config::default().engine_settings(),
            crate::engine::watermark::Clock::PartitionMinimum,
        );
        Snapshot {
            round,
            offsets: vec![("purchases".into(), round as i64)],
            state: engine.partition_state(partition),
        }
    }

    #[test]
    fn a_round_cut_short_restores_every_partition_from_the_round_before() {
        // A crash after partition 0 of round 7 was written: partition 0 has
        // rounds 7 and 6, partition 1 rounds 6 and 5.
        let cut = BTreeMap::from([
            (0, vec![snap(0, 7), snap(0, 6)]),
            (1, vec![snap(1, 6), snap(1, 5)]),
        ]);
        assert_eq!(common_round(&cut), Some(6));
        let complete = BTreeMap::from([
            (0, vec![snap(0, 7), snap(0, 6)]),
            (1, vec![snap(1, 7), snap(1, 6)]),
        ]);
        assert_eq!(common_round(&complete), Some(7));
        let disjoint = BTreeMap::from([(0, vec![snap(0, 9)]), (1, vec![snap(1, 4)])]);
        assert_eq!(common_round(&disjoint), None);
    }

    #[test]
    fn a_snapshot_covers_the_committed_offsets_it_reaches() {
        let offsets = vec![("purchases".to_string(), 10), ("calls".to_string(), 4)];
        assert!(covers(&offsets, &[]));
        assert!(covers(
            &offsets,
            &[("purchases".into(), 10), ("calls".into(), 3)]
        ));
        assert!(!covers(&offsets, &[("purchases".into(), 11)]));
        assert!(!covers(&offsets, &[("tickets".into(), 1)]));
    }
}
