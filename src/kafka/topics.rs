//! churnwatch's own topics, managed the way Kafka Streams manages its
//! internal ones: the state changelog is created at start when missing
//! (compacted, co-partitioned with the inputs, replicated as widely as the
//! cluster allows up to 3), and an existing one that is not compacted or
//! has the wrong partition count is refused. Where the credentials may not
//! create topics, the error says which topic to create with which settings.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

/// Why an own topic is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The topic is missing and could not be created.
    #[error(
        "topic `{topic}` is missing and could not be created ({why}); create it with {partitions} partitions and cleanup.policy=compact"
    )]
    NotCreated {
        /// The topic.
        topic: String,
        /// Its required partition count (the inputs').
        partitions: usize,
        /// What the broker said.
        why: String,
    },
    /// The topic exists but is not compacted, so old state would be
    /// deleted by retention and a hand-over would miss customers.
    #[error(
        "topic `{topic}` has cleanup.policy={policy}; churnwatch's own topics (state changelog, inbox actions) need cleanup.policy=compact"
    )]
    NotCompacted {
        /// The topic.
        topic: String,
        /// Its policy.
        policy: String,
    },
}

/// The admin calls' timeout.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates one of churnwatch's own compacted topics (the state changelog,
/// the inbox's actions) if it is missing (`exists` false), else checks it
/// is compacted. A broker that cannot describe topic configs is trusted
/// (logged).
pub async fn ensure_compacted(
    client: &ClientConfig,
    topic: &str,
    partitions: usize,
    brokers: usize,
    exists: bool,
) -> Result<(), TopicError> {
    let not_created = |why: String| TopicError::NotCreated {
        topic: topic.to_string(),
        partitions,
        why,
    };
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(|e| not_created(e.to_string()))?;
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    if !exists {
        let replication = i32::try_from(brokers.clamp(1, 3)).unwrap_or(1);
        let count = i32::try_from(partitions).map_err(|e| not_created(e.to_string()))?;
        let new = NewTopic::new(topic, count, TopicReplication::Fixed(replication))
            .set("cleanup.policy", "compact");
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
        tracing::info!(
            topic,
            partitions,
            replication,
            "state changelog created (compacted)"
        );
        return Ok(());
    }
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await;
    let policy = match described.as_deref() {
        Ok([Ok(resource)]) => resource.get("cleanup.policy").and_then(|e| e.value.clone()),
        _ => None,
    };
    match policy {
        Some(p) if p.split(',').any(|v| v.trim() == "compact") => Ok(()),
        Some(p) => Err(TopicError::NotCompacted {
            topic: topic.to_string(),
            policy: p,
        }),
        None => {
            tracing::warn!(
                topic,
                "the broker did not describe the topic's cleanup.policy; make sure it is compact"
            );
            Ok(())
        }
    }
}
