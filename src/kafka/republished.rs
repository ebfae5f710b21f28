//! What the repartition topic already holds: its partitions' ends, and the
//! last source offset republished past given positions (read back from the
//! records' source headers). Blocking calls: run them off the async threads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use super::sink::{SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER, SOURCE_TOPIC_HEADER, header_str};
use super::watermarks::watermarks as all_watermarks;
use crate::state::rekeying::{ReadBack, fingerprint};

/// How long one broker call may take.
const CALL: Duration = Duration::from_secs(10);

/// The next offset of every partition of `topic`.
pub fn ends(client: &ClientConfig, topic: &str) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let reader = quiet(client)?;
    let md = reader.fetch_metadata(Some(topic), CALL)?;
    let tps: Vec<_> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| (topic.to_string(), p.id())))
        .collect();
    let marks = all_watermarks(&reader, &tps, CALL)?;
    // A partition the broker did not answer for is an error, never "empty".
    if marks.len() != tps.len() {
        return Err(unanswered());
    }
    Ok(marks
        .into_iter()
        .map(|((_, p), (_, high))| (p, high))
        .collect())
}

/// A partition missing from a watermarks answer.
fn unanswered() -> KafkaError {
    KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownPartition)
}

/// The source offsets (with their payloads' fingerprints) per source topic
/// and partition of the records of `topic` from `from` (per partition) to
/// the partitions' ends as of the call, read for at most `limit`. Partial
/// after `limit` (said in the warning): it can only find less, never more
/// than is there.
pub fn last_republished(
    client: &ClientConfig,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    limit: Duration,
) -> Result<BTreeMap<(String, i32), ReadBack>, KafkaError> {
    let reader = quiet(client)?;
    let mut tpl = TopicPartitionList::new();
    let mut left = BTreeMap::new();
    let tps: Vec<_> = from.keys().map(|&p| (topic.to_string(), p)).collect();
    let marks = all_watermarks(&reader, &tps, CALL)?;
    for (&p, &start) in from {
        let Some(&(low, high)) = marks.get(&(topic.to_string(), p)) else {
            return Err(unanswered());
        };
        let start = start.max(low);
        if start < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            left.insert(p, high);
        }
    }
    let mut found = BTreeMap::new();
    if left.is_empty() {
        return Ok(found);
    }
    reader.assign(&tpl)?;
    let deadline = Instant::now() + limit;
    while !left.is_empty() && Instant::now() < deadline {
        let Some(m) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        if let Some((t, p, o)) = source_of(&m) {
            found
                .entry((t.to_string(), p))
                .or_insert_with(BTreeMap::new)
                .insert(o, fingerprint(m.payload()));
        }
        if left
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            left.remove(&m.partition());
        }
    }
    if !left.is_empty() {
        tracing::warn!(
            topic,
            partitions = left.len(),
            secs = limit.as_secs(),
            "repartition topic not read to its end in time; some records may be republished again"
        );
    }
    Ok(found)
}

/// A short-lived reader: without the statistics the long-lived ones report.
fn quiet(client: &ClientConfig) -> Result<BaseConsumer, KafkaError> {
    client.clone().set("statistics.interval.ms", "0").create()
}

/// A republished record's source coordinates.
fn source_of<M: Message>(m: &M) -> Option<(&str, i32, i64)> {
    Some((
        header_str(m, SOURCE_TOPIC_HEADER)?,
        header_str(m, SOURCE_PARTITION_HEADER)?.parse().ok()?,
        header_str(m, SOURCE_OFFSET_HEADER)?.parse().ok()?,
    ))
}
