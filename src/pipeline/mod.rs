//! `churnwatch run`: the engine inside the Kafka adapters.
//!
//! Wiring and the cancellation tree live here; the parts have a file each:
//! [`step`] (decode → apply → flush → pending offsets), [`partitions`]
//! (assignment, restore, snapshot rounds), [`restore`] (the pure restore
//! choice) and [`acker`] (ordered confirmations, offsets, latency).
//!
//! The service goes through explicit phases ([`Phase`]): consuming until
//! the shutdown future completes or the acker fails; draining (webhook
//! queues finish, in-flight records are confirmed within
//! [`DRAIN_TIMEOUT`], a final snapshot round covers what was confirmed);
//! done (final commit, HTTP stopped). One [`CancellationToken`] hands child
//! tokens to the acker, the webhook workers, the changelog waits and the
//! HTTP server; a [`TaskTracker`] waits for them.

pub mod acker;
pub mod decoders;
pub mod partitions;
pub mod recovery;
pub mod repartition;
pub mod restore;
pub mod step;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::Engine;
use crate::engine::store::Store;
use crate::engine::watermark::Clock;
use crate::http::{ApiState, Readiness};
use crate::kafka::sink::Sink;
use crate::kafka::source::{self, InputConsumer, Rebalanced, SourceError};
use crate::metrics::Metrics;
use crate::state::snapshot::Owner;
use crate::webhook::WebhookError;
use acker::Ack;
use decoders::Decoders;
use partitions::{Changelog, Local, Partitions};
use repartition::Repartitioner;
use step::{Origin, Outputs, Step, Timing};

/// How long shutdown waits for in-flight records before giving up on them
/// (their input offsets then stay uncommitted and are consumed again).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the input topics' partition counts are checked against the
/// count at start.
const TOPOLOGY_CHECK: Duration = Duration::from_secs(30);

/// How long a round or handover runs before [`polling`] pauses
/// the input and polls the consumer beside it: far below any sensible
/// `max.poll.interval.ms` (default 300 s), and long enough that ordinary
/// rounds never pause (a resume refetches, which costs a fetch, and on
/// brokers that answer mid-batch fetches with the next batch, such as
/// tansu 0.6, would skip records).
/// Restores do not go through it: pausing a partition librdkafka has just
/// assigned, before its first fetch, left it paused for good after the
/// resume (seen on tansu); a restore's reads run off the engine task and
/// in parallel instead.
const POLL_GRACE: Duration = Duration::from_secs(1);

/// Readiness turns false when the engine loop has not reported for this
/// long (at least; 20 ticks if longer).
const READINESS_STALE: Duration = Duration::from_secs(5);

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// An `[[inputs]]` mapping did not compile (validation refuses it first).
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
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
    /// An input topic's partition count changed while running: a
    /// customer's new events would land on another partition than its
    /// state. Refused (see README "Scaling out").
    #[error(
        "input partition count changed from {was} to {counts} while running; churnwatch stopped so no customer is split between partitions (see README, Scaling out)"
    )]
    Repartitioned {
        /// The count at start.
        was: usize,
        /// The counts now.
        counts: String,
    },
    /// The HTTP listeners could not start.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

/// What the service shares with its surroundings: the store readers see,
/// the metrics registry, and optionally an already bound HTTP listener
/// (tests bind port 0; otherwise `http.bind` is used).
#[derive(Default)]
pub struct Wiring {
    /// The store the HTTP API reads (the engine writes it).
    pub store: Store,
    /// Where every metric is registered.
    pub registry: prometheus::Registry,
    /// Bound listeners (data, operations), else `http.bind` and
    /// `http.ops_bind`.
    pub http: Option<crate::http::Listeners>,
}

/// Totals of one `run`, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Events applied.
    pub applied: u64,
    /// Messages rejected (dead-lettered).
    pub rejected: u64,
    /// Alerts emitted.
    pub alerts: u64,
}

/// The service's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Consuming input, ticking time, writing snapshot rounds.
    Consuming,
    /// No more input: webhook endpoints stop, in-flight records are confirmed
    /// (bounded by [`DRAIN_TIMEOUT`]), a final round is written.
    Draining,
    /// Offsets committed, HTTP stopped.
    Done,
}

/// The Kafka clients, owned by the engine task.
struct Clients {
    consumer: Arc<InputConsumer>,
    /// The group's input topics.
    topics: Vec<String>,
    /// The input topics' partition count at start.
    partitions: usize,
    roster: InputConsumer,
    sink: Sink,
}

/// Runs until `shutdown` completes.
pub async fn run(
    config: &Config,
    brokers: &str,
    wiring: Wiring,
    shutdown: impl Future<Output = ()>,
) -> Result<Report, PipelineError> {
    let topics = config.topics();
    let token = CancellationToken::new();
    let tracker = TaskTracker::new();
    let Wiring {
        store,
        registry,
        http,
    } = wiring;
    let names: Vec<String> = config.webhooks.iter().map(|w| w.name.clone()).collect();
    let metrics = Metrics::new(&registry, &names)?;
    let listeners = match http {
        Some(l) => l,
        None => crate::http::Listeners::bind(&config.http).await?,
    };
    let settings = config.engine_settings();
    // A loop that has not reported for this long is stalled.
    let ready = Arc::new(Readiness::new(
        (config.engine.tick_interval * 20).max(READINESS_STALE),
        config.http.liveness_timeout,
    ));
    let instance = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let inbox = Arc::new(crate::inbox::Inbox::default());
    let actions = Arc::new(
        crate::inbox::feed::Actions::new(&config.kafka, brokers, inbox.clone())
            .map_err(SourceError::from)?,
    );
    let peers: Vec<url::Url> = config
        .http
        .peers
        .iter()
        .filter_map(|p| crate::config::http_origin(p).ok())
        .collect();
    let instances = Arc::new(crate::inbox::instances::Instances::new(&peers));
    let untrusted = crate::metrics::untrusted_announcements(&registry)
        .inspect_err(|e| tracing::warn!(error = %e, "no churnwatch_inbox_untrusted_announcements_total metric"))
        .ok();
    let advertised = config.http.advertised_url.clone().unwrap_or_else(|| {
        let scheme = if config.http.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let addr = listeners
            .data
            .local_addr()
            .map_or(config.http.bind.clone(), |a| a.to_string());
        format!("{scheme}://{addr}")
    });
    let announcer = match config.kafka.instances_topic.is_empty() {
        true => None,
        false => Some(
            crate::inbox::feed::Announcer::new(&config.kafka, brokers, &instance, &advertised)
                .map_err(SourceError::from)?,
        ),
    };
    let api = ApiState::new(store.clone(), registry, ready.clone(), &settings).with_inbox(
        crate::http::inbox::InboxState {
            inbox: inbox.clone(),
            actions: actions.clone(),
            instances: instances.clone(),
            peers: Arc::new(crate::http::peers::Peers::new(&config.http)?),
            me: instance.clone(),
        },
    );
    let http_stop = token.child_token();
    let http_task = crate::http::start(
        listeners,
        api,
        &config.http,
        http_stop.clone().cancelled_owned(),
    )
    .await?;

    let (consumer, partitions) = source::input_consumer(&config.kafka, &topics, brokers).await?;
    let consumer = Arc::new(consumer);
    let (roster, roster_parts) =
        source::roster_consumer(&config.kafka, &topics, brokers, &instance)?;
    let readers = crate::inbox::feed::Readers::new(&config.kafka, brokers, &instance)?;

    let sink = Sink::new(
        source::producer(&config.kafka, brokers)?,
        &config.kafka,
        metrics.clone(),
    );
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(1024);
    tracker.spawn(acker::run(
        consumer.clone(),
        sink.clone(),
        metrics.clone(),
        ack_rx,
        token.child_token(),
    ));
    let mut step = Step::new(
        // Both clocks start on event time; the wall clock takes over once
        // caught up (see `Step::tick`).
        Engine::with_store(&settings, Clock::PartitionMinimum, store.clone()),
        Timing {
            clock: config.engine.clock,
            idle: config.engine.idle_timeout,
            max_held: config.engine.max_held_events,
        },
        Outputs {
            sink: sink.clone(),
            metrics,
            decoders: Decoders::new(config)?,
        },
    );
    for tp in roster_parts {
        step.progress.assign(tp, Instant::now(), false);
    }
    if !config.kafka.changelog_topic.is_empty() && !config.state.dir.as_os_str().is_empty() {
        // Snapshot rounds write the forgotten customers' tombstones.
        step.engine.track_forgotten();
    }
    let local = match config.state.dir.as_os_str().is_empty() {
        true => None,
        false => Some(Local {
            dir: config.state.dir.clone(),
            owner: Owner {
                cluster_id: cluster_id(&consumer).await,
                group_id: config.kafka.group_id.clone(),
                topics: topics.inputs.clone(),
            },
        }),
    };
    let stopping = CancellationToken::new();
    // The inbox feed stops with the input (the drain waits for it).
    let holder = store.clone();
    let owner = consumer.clone();
    tracker.spawn(crate::inbox::feed::run(
        crate::inbox::feed::Feed {
            inbox,
            actions,
            instances,
            announcer,
            untrusted,
            keep: config.inbox.keep,
        },
        readers,
        move |customer| holder.customer(customer).is_some(),
        move || {
            let mut p: Vec<i32> = owner
                .assignment()
                .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
                .unwrap_or_default();
            p.sort_unstable();
            p.dedup();
            p
        },
        stopping.clone(),
    ));
    if let Some(topic) = topics.repartition.clone() {
        let (consumer, producer) = source::repartitioner_clients(&config.kafka, &topics, brokers)?;
        let repartitioner = Repartitioner {
            consumer,
            decoders: Decoders::new(config)?,
            limits: step.engine.decode_limits(),
            sink: Sink::new(producer, &config.kafka, step.metrics().clone()),
            topic,
            metrics: step.metrics().clone(),
        };
        tracker.spawn(repartitioner.run(stopping.clone(), token.child_token()));
    }
    crate::webhook::start(
        &config.webhooks,
        &config.kafka,
        brokers,
        step.metrics(),
        &stopping,
        &tracker,
    )?;
    let mut parts = Partitions::new(
        stopping.clone(),
        local,
        topics.inputs.clone(),
        (!config.kafka.changelog_topic.is_empty()).then(|| Changelog {
            topic: config.kafka.changelog_topic.clone(),
            reader: source::changelog_reader(&config.kafka, brokers, &instance),
            changes: Default::default(),
            stop: token.child_token(),
            read_limit: partitions::read_limit(max_poll_interval(&config.kafka)),
        }),
    );
    let clients = Clients {
        consumer,
        topics: topics.inputs.clone(),
        partitions,
        roster,
        sink,
    };
    let mut ack_tx = Some(ack_tx);
    tracing::info!(brokers, group = %config.kafka.group_id, clock = ?config.engine.clock, "consuming");
    let phases = async {
        let mut phase = Phase::Consuming;
        let mut repartitioned = None;
        loop {
            match phase {
                Phase::Consuming => {
                    if let Some(tx) = &ack_tx {
                        let mut consuming = Consuming {
                            c: &clients,
                            ack_tx: tx,
                            step: &mut step,
                            parts: &mut parts,
                            ready: &ready,
                        };
                        repartitioned = consuming.run(config, &stopping).await;
                    }
                    phase = Phase::Draining;
                }
                Phase::Draining => {
                    ready.report(false);
                    // However consuming ended (shutdown, or a partition
                    // count that changed), the webhook endpoints and the
                    // inbox feed stop now, so the drain does not wait on them.
                    stopping.cancel();
                    // Dropping the sender lets the acker finish what it holds.
                    drop(ack_tx.take());
                    drain(&clients, &mut step, &mut parts, &tracker, &token).await;
                    phase = Phase::Done;
                }
                Phase::Done => break (step.report, repartitioned),
            }
        }
    };
    // The shutdown future becomes the one graceful signal every part
    // observes (a snapshot barrier waiting on an unreachable broker too).
    tokio::pin!(phases, shutdown);
    let (report, repartitioned) = tokio::select! {
        report = &mut phases => report,
        () = &mut shutdown => {
            stopping.cancel();
            phases.await
        }
    };
    source::commit_stored(clients.consumer.clone()).await;
    http_stop.cancel();
    if let Ok(Err(e)) = http_task.await {
        tracing::warn!(error = %e, "HTTP API stopped with an error");
    }
    tracing::info!(?report, "stopped");
    match repartitioned {
        Some(counts) => Err(PipelineError::Repartitioned {
            was: clients.partitions,
            counts,
        }),
        None => Ok(report),
    }
}

/// The input topics' partition counts (`topic=n, ...`) if any differs from
/// `expected`; asked off the async threads, a failed lookup says nothing.
async fn repartitioned(
    consumer: &Arc<InputConsumer>,
    topics: &[String],
    expected: usize,
) -> Option<String> {
    let (consumer, topics) = (consumer.clone(), topics.to_vec());
    let counts = tokio::task::spawn_blocking(move || {
        topics
            .iter()
            // A topic that is gone counts as no partitions: a change too.
            .map(|t| {
                let (n, _) = source::partition_count(&*consumer, t).ok()?;
                Some((t.clone(), n.unwrap_or(0)))
            })
            .collect::<Option<Vec<_>>>()
    })
    .await
    .ok()
    .flatten()?;
    changed(&counts, expected)
}

/// `topic=n, ...` if any count differs from `expected`.
fn changed(counts: &[(String, usize)], expected: usize) -> Option<String> {
    counts.iter().any(|(_, n)| *n != expected).then(|| {
        counts
            .iter()
            .map(|(t, n)| format!("{t}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// The cluster's id, asked of the broker off the async threads; "" when
/// it reports none (snapshots then still carry group and topics).
async fn cluster_id(consumer: &Arc<InputConsumer>) -> String {
    let consumer = consumer.clone();
    let id = tokio::task::spawn_blocking(move || {
        consumer.client().fetch_cluster_id(Duration::from_secs(10))
    })
    .await;
    match id {
        Ok(Some(id)) => id,
        _ => {
            tracing::warn!(
                "the cluster reports no id; snapshots are checked by group and topics only"
            );
            String::new()
        }
    }
}

/// The consuming phase's borrowed state.
struct Consuming<'a> {
    c: &'a Clients,
    ack_tx: &'a mpsc::Sender<Ack>,
    step: &'a mut Step,
    parts: &'a mut Partitions,
    ready: &'a Readiness,
}

impl Consuming<'_> {
    /// Returns when `stopping` is cancelled or the acker is gone, or with
    /// the new partition counts when an input topic's count changed.
    async fn run(&mut self, config: &Config, stopping: &CancellationToken) -> Option<String> {
        let _handing_over = source::SourceContext::defer_revokes(&self.c.consumer);
        let mut ticker = tokio::time::interval(config.engine.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let every = config.state.snapshot_interval;
        let mut snapshot_ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        snapshot_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let c = self.c;
        let mut batch = Vec::with_capacity(BATCH);
        let mut topology =
            tokio::time::interval_at(tokio::time::Instant::now() + TOPOLOGY_CHECK, TOPOLOGY_CHECK);
        loop {
            tokio::select! {
                _ = stopping.cancelled() => return None,
                m = c.consumer.recv() => {
                    let arrived = Instant::now();
                    // Rebalances surface inside `recv`: apply them before its message.
                    self.rebalance().await;
                    let mut next = Some(m);
                    while let Some(m) = next {
                        next = fill(&c.consumer, self.parts, m, &mut batch);
                        self.step.input(&batch, Origin::Input, arrived).await;
                        batch.clear();
                        if next.is_some() {
                            self.rebalance().await;
                        }
                    }
                }
                m = c.roster.recv() => match m {
                    Ok(m) => self.step.input(std::slice::from_ref(&m), Origin::Roster, Instant::now()).await,
                    Err(e) => tracing::warn!(error = %e, "roster consumer error"),
                },
                _ = ticker.tick() => {
                    self.step.tick(&c.consumer, &c.roster).await;
                    // Ready: partitions assigned and restored, and a broker
                    // reachable to consume from.
                    self.ready.report(
                        !self.parts.is_empty()
                            && !self.step.recovery.rebuilding_any()
                            && c.consumer.context().brokers_up(),
                    );
                }
                _ = snapshot_ticker.tick() => {
                    let held = self.step.paused().to_vec();
                    let ((), back) = polling(
                        &c.consumer,
                        &held,
                        self.parts.snapshot_owned(self.step, self.ack_tx, &c.consumer, &c.sink),
                    )
                    .await;
                    self.parts.seek_back(back);
                }
                _ = topology.tick() => {
                    if let Some(counts) = repartitioned(&c.consumer, &c.topics, c.partitions).await {
                        tracing::error!(was = c.partitions, now = %counts, "an input topic's partition count changed: customers would be split between partitions; stopping");
                        return Some(counts);
                    }
                }
            }
            self.parts.seeks_settled();
            self.rebalance().await;
            self.step.back_pressure(&c.consumer);
            let (ack, released) = self.step.take_ack(!self.parts.snapshots_on());
            self.parts.released(released);
            if !ack.is_empty() && self.ack_tx.send(ack).await.is_err() {
                tracing::error!("acker stopped; ending");
                return None;
            }
        }
    }

    /// Applies the rebalances the consumer has seen since the last call,
    /// then the seeks rebuilds wait for.
    async fn rebalance(&mut self) {
        let c = self.c;
        for r in c.consumer.context().take_rebalances() {
            match r {
                Rebalanced::Assigned(tps) => {
                    self.step.metrics().rebalanced("assigned");
                    self.parts
                        .assigned(self.step, tps, &c.consumer, &c.sink)
                        .await;
                    self.ready
                        .report(!self.parts.is_empty() && !self.step.recovery.rebuilding_any());
                }
                Rebalanced::Revoked {
                    partitions,
                    handover,
                } => {
                    self.step
                        .metrics()
                        .rebalanced(if handover { "revoked" } else { "lost" });
                    self.ready.report(false);
                    let held = self.step.paused().to_vec();
                    let ((), back) = polling(
                        &c.consumer,
                        &held,
                        self.parts.revoked(
                            self.step,
                            partitions,
                            handover,
                            self.ack_tx,
                            &c.consumer,
                            &c.sink,
                        ),
                    )
                    .await;
                    self.parts.seek_back(back);
                    if handover {
                        source::commit_stored(c.consumer.clone()).await;
                        c.consumer.context().release(c.consumer.as_ref());
                    }
                }
            }
        }
        self.parts.seek(&c.consumer);
    }
}

/// Messages applied as one batch (see [`Step::input`]), as in replay.
const BATCH: usize = 32;

/// Fills `batch` with `first` and what the consumer already holds, up to
/// [`BATCH`], never waiting for more. Errors are logged and messages of
/// partitions no longer ours dropped, as one at a time. A message whose
/// fetch surfaced a rebalance is returned instead: it is applied after
/// the rebalance, like any first message.
fn fill<'c>(
    consumer: &'c InputConsumer,
    parts: &Partitions,
    first: rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'c>>,
    batch: &mut Vec<rdkafka::message::BorrowedMessage<'c>>,
) -> Option<rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'c>>> {
    let mut m = first;
    loop {
        match m {
            Ok(m) if !parts.admit(m.topic(), m.partition(), m.offset()) => {}
            Ok(m) => batch.push(m),
            Err(e) => tracing::warn!(error = %e, "input consumer error"),
        }
        if batch.len() >= BATCH {
            return None;
        }
        // One poll without waiting: a message already fetched, or nothing.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let recv = std::pin::pin!(consumer.recv());
        match recv.poll(&mut cx) {
            std::task::Poll::Ready(next) if consumer.context().rebalance_pending() => {
                return Some(next);
            }
            std::task::Poll::Ready(next) => m = next,
            std::task::Poll::Pending => return None,
        }
    }
}

/// Runs `work` (a snapshot round or a handover: each may wait on the
/// broker for long) while still polling the group consumer, so the
/// wait never exceeds `max.poll.interval.ms` (librdkafka would leave the
/// group and the partitions would be lost and restored again). Work done
/// within [`POLL_GRACE`] (the usual case) touches nothing; past it the
/// input is paused (`held`: already paused for back-pressure, left as it
/// is), so nothing is consumed ahead and lags stay true, and polled until
/// the work is done; a message that was already on its way is not
/// applied, and the first offset per partition is returned for
/// [`Partitions::seek_back`].
async fn polling<T>(
    consumer: &InputConsumer,
    held: &[(String, i32)],
    work: impl Future<Output = T>,
) -> (T, std::collections::BTreeMap<(String, i32), i64>) {
    tokio::pin!(work);
    let mut first = std::collections::BTreeMap::new();
    tokio::select! {
        biased;
        out = &mut work => return (out, first),
        () = tokio::time::sleep(POLL_GRACE) => {}
    }
    let mut paused = rdkafka::TopicPartitionList::new();
    if let Ok(assigned) = consumer.assignment() {
        for e in assigned.elements() {
            if !held
                .iter()
                .any(|(t, p)| t == e.topic() && *p == e.partition())
            {
                paused.add_partition(e.topic(), e.partition());
            }
        }
    }
    if let Err(e) = consumer.pause(&paused) {
        tracing::debug!(error = %e, "input not paused for the wait");
    }
    let out = loop {
        tokio::select! {
            biased;
            out = &mut work => break out,
            m = consumer.recv() => if let Ok(m) = m {
                first.entry((m.topic().to_string(), m.partition())).or_insert(m.offset());
            }
        }
    };
    // Partitions revoked meanwhile are refused here; nothing to undo.
    let _ = consumer.resume(&paused);
    (out, first)
}

/// The group consumer's `max.poll.interval.ms` (librdkafka's default,
/// 300 s, unless passed through).
fn max_poll_interval(kafka: &crate::config::KafkaConfig) -> Duration {
    let ms = kafka
        .consumer
        .get("max.poll.interval.ms")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(300_000);
    Duration::from_millis(ms)
}

/// The draining phase: wait (bounded) for every task,
/// then a final round if all was confirmed.
async fn drain(
    c: &Clients,
    step: &mut Step,
    parts: &mut Partitions,
    tracker: &TaskTracker,
    token: &CancellationToken,
) {
    tracing::info!("draining");
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
        parts.snapshot_all(step, &c.consumer, &c.sink).await;
    }
}

#[cfg(test)]
mod tests {
    use super::changed;

    #[test]
    fn a_changed_partition_count_is_named_with_every_count() {
        let counts = |n: usize| vec![("purchases".to_string(), n), ("calls".to_string(), 3)];
        assert_eq!(changed(&counts(3), 3), None);
        assert_eq!(
            changed(&counts(4), 3).as_deref(),
            Some("purchases=4, calls=3")
        );
    }
}
