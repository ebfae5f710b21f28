//! What a partition's new owner reads before it applies anything: the
//! group's committed offsets, the input watermarks, the changelog up to a
//! fresh fence, and the local snapshots. Broker calls run off the engine
//! task; a failed lookup is retried or leaves the source out, never read
//! as "nothing there".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;

use super::partitions::{Local, Partitions};
use crate::engine::PartitionState;
use crate::kafka::changelog::read_to_fence;
use crate::kafka::sink::Sink;
use crate::kafka::source::InputConsumer;
use crate::kafka::watermarks::watermarks;
use crate::state::changelog::{self, Entry};
use crate::state::snapshot::{self, Snapshot};

/// How long a committed-offsets lookup may take.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

impl Partitions {
    /// The group's committed input offsets of `partitions` (one request),
    /// looked up off the engine task (a blocking broker call). A failed
    /// lookup is retried (it must never read as "nothing committed", which
    /// would skip the rebuild); `None` once the service is stopping.
    pub(super) async fn committed(
        &self,
        partitions: &[i32],
        consumer: &Arc<InputConsumer>,
    ) -> Option<BTreeMap<i32, Vec<(String, i64)>>> {
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut tpl = rdkafka::TopicPartitionList::new();
            for &p in partitions {
                for t in &self.input_topics {
                    tpl.add_partition(t, p);
                }
            }
            let consumer = consumer.clone();
            let found = tokio::task::spawn_blocking(move || {
                consumer.committed_offsets(tpl, COMMITTED_TIMEOUT)
            })
            .await;
            match found {
                Ok(Ok(c)) => {
                    let mut by_partition: BTreeMap<i32, Vec<(String, i64)>> =
                        partitions.iter().map(|&p| (p, Vec::new())).collect();
                    for e in c.elements() {
                        if let (rdkafka::Offset::Offset(o), Some(of)) =
                            (e.offset(), by_partition.get_mut(&e.partition()))
                        {
                            of.push((e.topic().to_string(), o));
                        }
                    }
                    return Some(by_partition);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "committed offsets unknown; asking again")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "committed offsets lookup failed; asking again")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stopping.cancelled() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// The low and high watermarks of each input topic's `partitions`
    /// (two requests, see [`watermarks`]), looked up off the engine task;
    /// a failed lookup leaves the partition's topic out (then no snapshot
    /// is refused for it, and a rebuild starts at the log start).
    pub(super) async fn watermarks(
        &self,
        partitions: &[i32],
        consumer: &Arc<InputConsumer>,
    ) -> BTreeMap<i32, Vec<(String, i64, i64)>> {
        let tps: Vec<_> = partitions
            .iter()
            .flat_map(|&p| self.input_topics.iter().map(move |t| (t.clone(), p)))
            .collect();
        let consumer = consumer.clone();
        let found =
            tokio::task::spawn_blocking(move || watermarks(&*consumer, &tps, COMMITTED_TIMEOUT))
                .await;
        let mut by_partition: BTreeMap<i32, Vec<(String, i64, i64)>> = BTreeMap::new();
        match found {
            Ok(Ok(marks)) => {
                for ((t, p), (low, high)) in marks {
                    by_partition.entry(p).or_default().push((t, low, high));
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "watermarks unknown"),
            Err(e) => tracing::warn!(error = %e, "watermarks lookup failed"),
        }
        by_partition
    }

    /// The given partitions' states as of their last complete changelog
    /// round, read in parallel (one blocking reader each), so restoring
    /// several partitions takes as long as the slowest one
    /// (`read_limit` at most), well inside the group's
    /// `max.poll.interval.ms`. A partition left out had nothing readable.
    pub(super) async fn changelog_states(
        &self,
        partitions: &[i32],
        sink: &Sink,
    ) -> BTreeMap<i32, (PartitionState, Vec<(String, i64)>)> {
        let mut found = BTreeMap::new();
        let Some(c) = self.changelog.as_ref() else {
            return found;
        };
        let mut reads = tokio::task::JoinSet::new();
        for &p in partitions {
            let Some(nonce) = self.fence(p, sink).await else {
                continue;
            };
            let (reader, topic, limit) = (c.reader.clone(), c.topic.clone(), c.read_limit);
            reads.spawn_blocking(move || (p, read_to_fence(&reader, &topic, p, nonce, limit)));
        }
        while let Some(read) = reads.join_next().await {
            match read {
                Ok((p, Ok(entries))) => {
                    if let Some(state) = u16::try_from(p)
                        .ok()
                        .and_then(|n| changelog::fold(n, entries))
                    {
                        found.insert(p, state);
                    }
                }
                Ok((p, Err(e))) => {
                    tracing::warn!(partition = p, error = %e, "changelog unreadable; rebuilding from Kafka")
                }
                Err(e) => tracing::warn!(error = %e, "changelog reader failed"),
            }
        }
        found
    }

    /// Writes a fresh fence to changelog partition `p`; its nonce once the
    /// broker has it.
    pub(super) async fn fence(&self, p: i32, sink: &Sink) -> Option<u128> {
        let c = self.changelog.as_ref()?;
        let nonce: u128 = rand::random();
        let fence = match Entry::Fence(nonce).encode() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "changelog fence not encodable");
                return None;
            }
        };
        let fence = sink
            .to_partition(&c.topic, p, changelog::FENCE_KEY.to_vec(), fence)
            .await;
        if let Err(e) = sink.confirm(fence, self.give_up(&c.stop)).await {
            tracing::warn!(partition = p, error = %e, "changelog fence not written");
            return None;
        }
        Some(nonce)
    }
}

/// Partition `p`'s valid local snapshots (current and previous); a refused
/// file is logged and skipped, so the partition is rebuilt another way.
pub(super) fn local_snapshots(local: &Local, p: u16) -> Vec<Snapshot> {
    let (dir, owner) = (&local.dir, &local.owner);
    [
        snapshot::read(dir, p, owner),
        snapshot::read_previous(dir, p, owner),
    ]
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
