//! The Kafka source: the group consumer over the input topics, the roster
//! reader, and the start-up checks.
//!
//! At-least-once in the manner of rust-rdkafka's `at_least_once` example:
//! auto-commit on, `enable.auto.offset.store=false`, and offsets stored only
//! by the service once what a message caused is safe.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::client::{Role, client_config};
use super::offsets::TopicPartition;
use super::rebalance::SourceContext;
use super::topics::Policy;
use crate::config::{KafkaConfig, Topics};

/// The group consumer of the input topics (and the roster reader).
pub type InputConsumer = StreamConsumer<SourceContext>;

/// Why the Kafka clients could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused the configuration or a call.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// No broker answered at start.
    #[error(
        "no broker of {brokers} answered in {waited} s: check the addresses, that they are reachable from here (DNS, firewall, advertised listeners), and kafka.consumer's security settings (TLS, SASL)"
    )]
    Unreachable {
        /// `--brokers` or `kafka.brokers`.
        brokers: String,
        /// How long it was tried.
        waited: u64,
    },
    /// An input topic does not exist on the cluster.
    #[error("input topic `{0}` does not exist")]
    MissingTopic(String),
    /// Input topics have different partition counts, so one customer's
    /// events could land on partitions owned by different instances.
    #[error(
        "input and changelog topics are not co-partitioned (partition counts: {0}); give them the same partition count"
    )]
    NotCoPartitioned(String),
    /// The state changelog is missing and could not be created, or is not
    /// compacted.
    #[error(transparent)]
    Topic(#[from] super::topics::TopicError),
}

/// How long `run` waits for a reachable broker before it gives up (an
/// orchestrator restarts it with its own back-off: a tight crash loop
/// helps nobody, a silent hang neither).
pub const BROKER_WAIT: Duration = Duration::from_secs(30);

/// A client context that says nothing: the start-up probe reports one
/// line itself instead of librdkafka's line per connection attempt.
struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: KafkaError, _: &str) {}
}

impl ConsumerContext for Quiet {}

/// Waits (at most `limit`, asking again with back-off) until a broker of
/// `brokers` answers a metadata request, so a missing or unreachable
/// cluster is one warning and one error naming the brokers, not a page of
/// librdkafka connection errors from every client.
pub async fn wait_for_brokers(
    config: &KafkaConfig,
    brokers: &str,
    limit: Duration,
) -> Result<(), SourceError> {
    let probe: BaseConsumer<Quiet> = client_config(config, brokers, Role::Admin)
        .set("group.id", format!("{}-probe", config.group_id))
        .create_with_context(Quiet)?;
    let probe = Arc::new(probe);
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut warned = false;
    loop {
        let asking = probe.clone();
        let answered = tokio::task::spawn_blocking(move || {
            asking.fetch_metadata(None, Duration::from_secs(2)).is_ok()
        })
        .await
        .unwrap_or(false);
        if answered {
            if warned {
                tracing::info!(brokers, "a broker answered");
            }
            return Ok(());
        }
        let waited = started.elapsed();
        if waited >= limit {
            return Err(SourceError::Unreachable {
                brokers: brokers.to_string(),
                waited: waited.as_secs(),
            });
        }
        if !warned {
            tracing::warn!(
                brokers,
                limit_s = limit.as_secs(),
                "no broker answers yet; retrying (check the addresses, that they are reachable from here, and kafka.consumer's security settings)"
            );
            warned = true;
        }
        tokio::time::sleep(backoff.min(limit.saturating_sub(waited))).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The group consumer over the input topics, checked for co-partitioning,
/// and their partition count;
/// the repartition topic (when a topic is re-keyed) and the state changelog
/// (if on) are created when missing, and refused when their cleanup policy
/// is wrong or they are not co-partitioned with the inputs; the inbox's actions
/// topic is created when missing (compacted, as many partitions as the
/// inputs) and refused when not compacted.
pub async fn input_consumer(
    config: &KafkaConfig,
    topics: &Topics,
    brokers: &str,
) -> Result<(InputConsumer, usize), SourceError> {
    let consumer: InputConsumer =
        client_config(config, brokers, Role::Input).create_with_context(SourceContext::default())?;
    let external: Vec<String> = topics.external().cloned().collect();
    let mut partitions = check_co_partitioned(&consumer, &external)?;
    if let Some(topic) = &topics.repartition {
        let (found, brokers_up) = partition_count(&consumer, topic)?;
        if partitions == 0 {
            partitions = match found {
                Some(n) => n,
                None => rekeyed_partitions(&consumer, config, topics)?,
            };
        }
        if let Some(n) = found.filter(|&n| n != partitions) {
            let mut shown: Vec<String> = external
                .iter()
                .map(|t| format!("{t}={partitions}"))
                .collect();
            shown.push(format!("{topic}={n}"));
            return Err(SourceError::NotCoPartitioned(shown.join(", ")));
        }
        let admin = client_config(config, brokers, Role::Admin);
        super::topics::ensure(
            &admin,
            topic,
            Policy::Delete,
            partitions,
            brokers_up,
            found.is_some(),
        )
        .await?;
    }
    let topic = &config.changelog_topic;
    if !topic.is_empty() {
        let (found, brokers_up) = partition_count(&consumer, topic)?;
        if let Some(n) = found.filter(|&n| n != partitions) {
            let mut shown: Vec<String> = topics
                .inputs
                .iter()
                .map(|t| format!("{t}={partitions}"))
                .collect();
            shown.push(format!("{topic}={n}"));
            return Err(SourceError::NotCoPartitioned(shown.join(", ")));
        }
        let admin = client_config(config, brokers, Role::Admin);
        super::topics::ensure(
            &admin,
            topic,
            Policy::Compact,
            partitions,
            brokers_up,
            found.is_some(),
        )
        .await?;
    }
    for topic in [&config.actions_topic, &config.instances_topic] {
        if !topic.is_empty() {
            ensure_shared_topic(&consumer, config, brokers, topic, partitions).await?;
        }
    }
    if !config.tiers_topic.is_empty() {
        // Keyed by input partition and read whole by everyone: one is enough.
        ensure_shared_topic(&consumer, config, brokers, &config.tiers_topic, 1).await?;
    }
    let topics: Vec<&str> = topics.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok((consumer, partitions))
}

/// The partition count of a new repartition topic when every input is
/// re-keyed: the changelog's if it exists, else the largest re-keyed
/// topic's (as Kafka Streams sizes its repartition topics).
fn rekeyed_partitions(
    consumer: &InputConsumer,
    config: &KafkaConfig,
    topics: &Topics,
) -> Result<usize, SourceError> {
    if !config.changelog_topic.is_empty()
        && let (Some(n), _) = partition_count(consumer, &config.changelog_topic)?
    {
        return Ok(n);
    }
    let mut most = 0;
    for topic in &topics.rekeyed {
        let n = partition_count(consumer, topic)?
            .0
            .ok_or_else(|| SourceError::MissingTopic(topic.clone()))?;
        most = most.max(n);
    }
    Ok(most)
}

/// Creates one of the compacted topics every instance reads whole (the
/// inbox's actions and instances, the tier summaries) when missing, with
/// `partitions` partitions; an existing one is
/// checked beside the start: one that is not compacted loses old records
/// to retention, which is worth an error in the log, not a refusal to run.
async fn ensure_shared_topic(
    consumer: &InputConsumer,
    config: &KafkaConfig,
    brokers: &str,
    topic: &str,
    partitions: usize,
) -> Result<(), SourceError> {
    let (found, brokers_up) = partition_count(consumer, topic)?;
    let admin = client_config(config, brokers, Role::Admin);
    let topic = topic.to_string();
    let check = async move {
        super::topics::ensure(
            &admin,
            &topic,
            Policy::Compact,
            found.unwrap_or(partitions),
            brokers_up,
            found.is_some(),
        )
        .await
        .map_err(|e| (topic, e))
    };
    if found.is_none() {
        return check.await.map_err(|(_, e)| e.into());
    }
    tokio::spawn(async move {
        if let Err((topic, e)) = check.await {
            tracing::error!(error = %e, topic, "a shared compacted topic");
        }
    });
    Ok(())
}

/// Commits the offsets the consumer stored, off the async threads (at
/// shutdown: what was stored since the last auto-commit is not lost).
pub async fn commit_stored(consumer: Arc<InputConsumer>) {
    let committed = tokio::task::spawn_blocking(move || {
        consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
    })
    .await;
    if let Ok(Err(e)) = committed {
        tracing::debug!(error = %e, "final commit");
    }
}

/// A topic's partition count (`None`: it does not exist) and the number of
/// brokers in the cluster, from one metadata request (blocking).
pub fn partition_count<C: Consumer<SourceContext>>(
    consumer: &C,
    topic: &str,
) -> Result<(Option<usize>, usize), KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|&n| n > 0);
    Ok((n, md.brokers().len()))
}

/// Refuses input topics with different partition counts.
pub fn check_co_partitioned<C: Consumer<SourceContext>>(
    consumer: &C,
    topics: &[String],
) -> Result<usize, SourceError> {
    let mut counts = Vec::new();
    for topic in topics {
        let n = partition_count(consumer, topic)?
            .0
            .ok_or_else(|| SourceError::MissingTopic(topic.clone()))?;
        counts.push((topic.clone(), n));
    }
    let first = counts.first().map_or(0, |c| c.1);
    if counts.iter().any(|c| c.1 != first) {
        let shown: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
        return Err(SourceError::NotCoPartitioned(shown.join(", ")));
    }
    Ok(first)
}

/// A reader of every partition of the roster topic from the beginning,
/// outside the group: a departure concerns customers on every partition.
pub fn roster_consumer(
    config: &KafkaConfig,
    topics: &Topics,
    brokers: &str,
    instance: &str,
) -> Result<(InputConsumer, Vec<TopicPartition>), SourceError> {
    whole_topic_reader(config, brokers, &topics.roster, "roster", instance)
}

/// A reader of every partition of `topic` from the beginning, outside the
/// group (its group name, `{group_id}-{purpose}-{instance}`, commits
/// nothing): for what every instance needs all of, such as the roster or
/// the inbox's alerts and actions.
pub fn whole_topic_reader(
    config: &KafkaConfig,
    brokers: &str,
    topics: &[String],
    purpose: &str,
    instance: &str,
) -> Result<(InputConsumer, Vec<TopicPartition>), SourceError> {
    let consumer: InputConsumer =
        reader(config, brokers, purpose, instance).create_with_context(SourceContext::default())?;
    let mut tpl = TopicPartitionList::new();
    let mut tps = Vec::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            return Err(SourceError::MissingTopic(topic.clone()));
        }
        for p in parts {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            tps.push((topic.clone(), p));
        }
    }
    consumer.assign(&tpl)?;
    Ok((consumer, tps))
}

/// The reader's next message; never, without a reader.
pub async fn next_of(
    reader: Option<&InputConsumer>,
) -> Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError> {
    match reader {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// Settings of a group-less reader (`{group_id}-{purpose}-{instance}`,
/// committing nothing), such as the changelog's.
pub fn reader(config: &KafkaConfig, brokers: &str, purpose: &str, instance: &str) -> ClientConfig {
    let group = format!("{}-{purpose}-{instance}", config.group_id);
    client_config(config, brokers, Role::Reader(&group))
}

/// The re-keying task's group: each re-keyed partition is read by one
/// instance.
pub fn repartitioner_group(config: &KafkaConfig) -> String {
    format!("{}-repartitioner", config.group_id)
}

/// The re-keying task's consumer of the topics not keyed by customer id,
/// in its own group (each partition read by one instance), and the
/// producer of the repartition topic, partitioning customer ids as
/// `kafka.repartition_partitioner` says.
pub fn repartitioner_clients(
    config: &KafkaConfig,
    topics: &Topics,
    brokers: &str,
) -> Result<(InputConsumer, rdkafka::producer::FutureProducer), SourceError> {
    let group = repartitioner_group(config);
    let consumer: InputConsumer = client_config(config, brokers, Role::Subscriber(&group))
        .create_with_context(SourceContext::default())?;
    let rekeyed: Vec<&str> = topics.rekeyed.iter().map(String::as_str).collect();
    consumer.subscribe(&rekeyed)?;
    let producer = client_config(config, brokers, Role::Producer)
        .set("partitioner", &config.repartition_partitioner)
        .create()?;
    Ok((consumer, producer))
}

/// The idempotent producer for alerts, dead letters and changelog rounds.
pub fn producer(
    config: &KafkaConfig,
    brokers: &str,
) -> Result<rdkafka::producer::FutureProducer, SourceError> {
    Ok(client_config(config, brokers, Role::Producer).create()?)
}
