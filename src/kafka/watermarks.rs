//! The log start and end of many partitions at once.
//!
//! librdkafka's `query_watermark_offsets` takes one partition and about
//! half a second per call on a quiet client (it waits for the partition's
//! leader first), so asking it for each of a hundred partitions of three
//! topics took over a minute of a takeover. One ListOffsets request for
//! all of them per end (Kafka's timestamps -2 = earliest and -1 = latest,
//! which `offsets_for_times` passes through) takes one wait. Blocking:
//! call it off the async threads.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::TopicPartition;

/// The low and high watermark of each of `partitions`; a partition the
/// broker reported an error for is left out (with a warning), an error of
/// the whole request is returned.
pub fn watermarks<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    partitions: &[TopicPartition],
    timeout: Duration,
) -> KafkaResult<BTreeMap<TopicPartition, (i64, i64)>> {
    let low = ends(consumer, partitions, Offset::Beginning, timeout)?;
    let high = ends(consumer, partitions, Offset::End, timeout)?;
    Ok(low
        .into_iter()
        .filter_map(|(tp, l)| high.get(&tp).map(|&h| (tp, (l, h))))
        .collect())
}

/// One end (`Offset::Beginning` or `Offset::End`) of each partition.
fn ends<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    partitions: &[TopicPartition],
    end: Offset,
    timeout: Duration,
) -> KafkaResult<BTreeMap<TopicPartition, i64>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in partitions {
        tpl.add_partition_offset(topic, *p, end)?;
    }
    let found = consumer.offsets_for_times(tpl, timeout)?;
    Ok(found
        .elements()
        .iter()
        .filter_map(|e| match (e.error(), e.offset()) {
            (Ok(()), Offset::Offset(o)) => Some(((e.topic().to_string(), e.partition()), o)),
            (error, offset) => {
                tracing::warn!(
                    topic = e.topic(),
                    partition = e.partition(),
                    ?error,
                    ?offset,
                    "watermark unknown"
                );
                None
            }
        })
        .collect())
}
