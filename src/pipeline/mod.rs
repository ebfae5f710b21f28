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
mod consuming;
pub mod decoders;
pub mod group_tiers;
mod handover;
pub mod partitions;
pub mod recovery;
pub mod reload;
pub mod repartition;
pub mod restore;
pub mod step;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::kafka::source::{self, InputConsumer, SourceError};
use crate::metrics::Metrics;
use crate::state::snapshot::Owner;
use crate::webhook::WebhookError;
use acker::Ack;
use consuming::Consuming;
use decoders::Decoders;
use partitions::{Changelog, Local, Partitions};
use repartition::Repartitioner;
use step::{Outputs, Step, Timing};

/// How long shutdown waits for in-flight records before giving up on them
/// (their input offsets then stay uncommitted and are consumed again).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The file the config came from: reloaded on SIGHUP and when it
    /// changes (see [`reload`]); `None`: no reloads.
    pub config_path: Option<std::path::PathBuf>,
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
    /// The reader of `kafka.tiers_topic`, if on.
    tiers: Option<InputConsumer>,
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
        config_path,
    } = wiring;
    source::wait_for_brokers(&config.kafka, brokers, source::BROKER_WAIT).await?;
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
    // One producer for alerts, dead letters, changelog rounds, tier
    // summaries, inbox actions and announcements: each librdkafka producer
    // has its own poll thread and broker connections.
    let producer = source::producer(&config.kafka, brokers)?;
    let actions = Arc::new(crate::inbox::actions::Actions::new(
        producer.clone(),
        &config.kafka,
        inbox.clone(),
    ));
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
        false => Some(crate::inbox::feed::Announcer::new(
            producer.clone(),
            &config.kafka,
            &instance,
            &advertised,
        )),
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
    let (http_task, access) = crate::http::start(
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
    let (tiers_reader, mut group_tiers) = match config.kafka.tiers_topic.as_str() {
        "" => (None, None),
        topic => {
            let topics = [topic.to_string()];
            let (reader, _) =
                source::whole_topic_reader(&config.kafka, brokers, &topics, "tiers", &instance)?;
            let state = group_tiers::GroupTiers::new(
                (topic.to_string(), config.kafka.group_id.clone()),
                partitions,
                config.tiers.a_percent,
                config.tiers.b_percent,
            );
            (Some(reader), Some(state))
        }
    };

    let sink = Sink::new(producer, &config.kafka, metrics.clone());
    let (ack_tx, ack_rx) = mpsc::channel::<Ack>(1024);
    tracker.spawn(acker::run(
        consumer.clone(),
        sink.clone(),
        metrics.clone(),
        ack_rx,
        token.child_token(),
    ));
    // Both clocks start on event time; the wall clock takes over once
    // caught up (see `Step::tick`).
    let engine = Engine::with_store(&settings, Clock::PartitionMinimum, store.clone());
    metrics.segments(engine.segment_names());
    let mut step = Step::new(
        engine,
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
            consumer: std::sync::Arc::new(consumer),
            decoders: Decoders::new(config)?,
            limits: step.engine.decode_limits(),
            sink: Sink::new(producer, &config.kafka, step.metrics().clone()),
            topic,
            metrics: step.metrics().clone(),
            state_dir: config.state.dir.clone(),
            group: source::repartitioner_group(&config.kafka),
            reader: source::reader(&config.kafka, brokers, "rekeying", &instance),
        };
        tracker.spawn(repartitioner.run(stopping.clone(), token.child_token()));
    }
    let webhooks = crate::webhook::Webhooks::start(
        &config.webhooks,
        &config.kafka,
        brokers,
        step.metrics(),
        &stopping,
        &tracker,
    )
    .await?;
    if let Some(path) = config_path {
        let (limits, reloads) = mpsc::channel(4);
        step.reloads = Some(reloads);
        tracker.spawn(
            reload::Reloader {
                path,
                running: config.clone(),
                access,
                webhooks,
                limits,
                metrics: step.metrics().clone(),
            }
            .run(stopping.clone()),
        );
    }
    let mut parts = Partitions::new(
        stopping.clone(),
        local,
        topics.inputs.clone(),
        (!config.kafka.changelog_topic.is_empty()).then(|| Changelog {
            topic: config.kafka.changelog_topic.clone(),
            reader: source::reader(&config.kafka, brokers, "changelog", &instance),
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
        tiers: tiers_reader,
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
                            tiers: group_tiers.as_mut(),
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
