//! churnwatch's own topics, managed the way Kafka Streams manages its
//! internal ones: the state changelog and the repartition topic are created
//! at start when missing (compacted, resp. deleting, co-partitioned with
//! the inputs, replicated as widely as the cluster allows up to 3), and an
//! existing one with another cleanup policy or partition count is refused. Where the credentials may not
//! create topics, the error says which topic to create with which settings.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

/// The retention an own topic needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The state changelog and the inbox's topics: the latest per key, forever.
    Compact,
    /// The repartition topic: records in order, deleted by retention.
    Delete,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::Compact => "compact",
            Policy::Delete => "delete",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an own topic is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The topic is missing and could not be created.
    #[error(
        "topic `{topic}` is missing and could not be created ({why}); create it with {partitions} partitions and cleanup.policy={policy}"
    )]
    NotCreated {
        /// The topic.
        topic: String,
        /// Its required partition count (the inputs').
        partitions: usize,
        /// Its required policy.
        policy: Policy,
        /// What the broker said.
        why: String,
    },
    /// The topic exists with another cleanup policy: a compacted changelog
    /// deleted by retention would miss customers in a hand-over; a
    /// compacted repartition topic would drop a customer's earlier events.
    #[error(
        "topic `{topic}` has cleanup.policy={found}; churnwatch needs cleanup.policy={policy} for it (the state changelog and the inbox's topics are compacted, the repartition topic is not)"
    )]
    WrongPolicy {
        /// The topic.
        topic: String,
        /// Its policy.
        found: String,
        /// The one it needs.
        policy: Policy,
    },
}

/// The admin calls' timeout.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates one of churnwatch's own topics with `policy` if it is missing
/// (`exists` false), else checks its policy. A broker that cannot describe
/// topic configs is trusted (logged).
pub async fn ensure(
    client: &ClientConfig,
    topic: &str,
    policy: Policy,
    partitions: usize,
    brokers: usize,
    exists: bool,
) -> Result<(), TopicError> {
    let not_created = |why: String| TopicError::NotCreated {
        topic: topic.to_string(),
        partitions,
        policy,
        why,
    };
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(|e| not_created(e.to_string()))?;
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    if !exists {
        let replication = i32::try_from(brokers.clamp(1, 3)).unwrap_or(1);
        let count = i32::try_from(partitions).map_err(|e| not_created(e.to_string()))?;
        let new = NewTopic::new(topic, count, TopicReplication::Fixed(replication))
            .set("cleanup.policy", policy.as_str());
        let results = admin
            .create_topics([&new], &options)
            .await
            .map_err(|e| not_created(e.to_string()))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(not_created(code.to_string())),
            }
        }
        tracing::info!(topic, partitions, replication, %policy, "topic created");
        return Ok(());
    }
    match described_policy(&admin, topic).await {
        Some(p) if policy_is(&p, policy) => Ok(()),
        Some(p) => Err(TopicError::WrongPolicy {
            topic: topic.to_string(),
            found: p,
            policy,
        }),
        None => {
            tracing::warn!(
                topic,
                %policy,
                "the broker did not describe the topic's cleanup.policy; make sure it is this"
            );
            Ok(())
        }
    }
}

/// The topic's `cleanup.policy` as the broker describes it (`None`: it
/// does not, or the call failed).
async fn described_policy(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Option<String> {
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await;
    match described.as_deref() {
        Ok([Ok(resource)]) => resource.get("cleanup.policy").and_then(|e| e.value.clone()),
        _ => None,
    }
}

/// What `check --brokers` says of an existing own topic: `Ok` with what
/// was found, or the refusal `run` would make.
pub async fn verify_policy(
    client: &ClientConfig,
    topic: &str,
    policy: Policy,
) -> Result<String, TopicError> {
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(|e| TopicError::NotCreated {
            topic: topic.to_string(),
            partitions: 0,
            policy,
            why: e.to_string(),
        })?;
    match described_policy(&admin, topic).await {
        Some(p) if policy_is(&p, policy) => Ok(format!("cleanup.policy={p}")),
        Some(p) => Err(TopicError::WrongPolicy {
            topic: topic.to_string(),
            found: p,
            policy,
        }),
        None => Ok("cleanup.policy not described by the broker".to_string()),
    }
}

/// Whether `found` (`compact`, `delete`, `compact,delete`) keeps what
/// `policy` needs: compaction for a compacted topic, no compaction for a
/// deleting one.
fn policy_is(found: &str, policy: Policy) -> bool {
    let compacts = found.split(',').any(|v| v.trim() == "compact");
    compacts == (policy == Policy::Compact)
}
