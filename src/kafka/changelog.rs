//! Reading the state changelog topic (the record format is
//! `state::changelog`).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::state::changelog::Entry;

/// Why a changelog partition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    /// librdkafka refused a call or reported an error.
    #[error("changelog {topic}[{partition}]: {source}")]
    Kafka {
        /// The changelog topic.
        topic: String,
        /// The partition read.
        partition: i32,
        /// What librdkafka said.
        source: rdkafka::error::KafkaError,
    },
    /// The fence was not read back in time.
    #[error("changelog {topic}[{partition}]: its end (our fence) not reached in {secs} s")]
    Timeout {
        /// The changelog topic.
        topic: String,
        /// The partition read.
        partition: i32,
        /// How long the read was allowed.
        secs: u64,
    },
}

/// Reads changelog partition `partition` from its start up to the fence
/// `nonce` (written beforehand by the caller). Blocking: run it off the
/// async threads. Entries that do not decode are skipped with a warning.
pub fn read_to_fence(
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    nonce: u128,
    limit: Duration,
) -> Result<Vec<Entry>, ChangelogError> {
    let kafka = |source| ChangelogError::Kafka {
        topic: topic.to_string(),
        partition,
        source,
    };
    let consumer: BaseConsumer = client.create().map_err(kafka)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(kafka)?;
    consumer.assign(&tpl).map_err(kafka)?;
    let deadline = std::time::Instant::now() + limit;
    let mut entries = Vec::new();
    while std::time::Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.map_err(kafka)?;
        match Entry::decode(m.payload().unwrap_or_default()) {
            Ok(Entry::Fence(n)) if n == nonce => return Ok(entries),
            Ok(e) => entries.push(e),
            Err(e) => {
                tracing::warn!(topic, partition, offset = m.offset(), error = %e, "changelog entry skipped")
            }
        }
    }
    Err(ChangelogError::Timeout {
        topic: topic.to_string(),
        partition,
        secs: limit.as_secs(),
    })
}
