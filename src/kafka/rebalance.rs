//! Rebalances as the service sees them: librdkafka's callbacks (which run
//! inside `recv`, where the engine cannot be reached) turn into
//! [`Rebalanced`] messages, and a revoke can be held until the service has
//! handed its partitions over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

use super::offsets::TopicPartition;
use super::source::InputConsumer;

/// A rebalance seen by the consumer, handed to the service loop (the
/// callback runs inside `recv`, where the engine cannot be reached).
#[derive(Debug, Clone, PartialEq)]
pub enum Rebalanced {
    /// Partitions given to this member.
    Assigned(Vec<TopicPartition>),
    /// Partitions taken away. With `handover` the group waits (librdkafka
    /// holds the rejoin until the unassign) for the service to write their
    /// state and commit, then to call [`SourceContext::release`], so the
    /// next owner starts exactly where this one stopped; without it they
    /// were lost (session expired) or the consumer is closing, and are
    /// already gone.
    Revoked {
        /// The partitions taken away.
        partitions: Vec<TopicPartition>,
        /// Whether the group waits for their handover.
        handover: bool,
    },
}

/// Consumer context: collects rebalances and, from librdkafka's periodic
/// statistics, each partition's high watermark and lag and whether any
/// broker is reachable (no blocking broker call).
pub struct SourceContext {
    rebalances: Mutex<Vec<Rebalanced>>,
    /// Whether a service loop is there to hand revoked partitions over.
    deferring: std::sync::atomic::AtomicBool,
    /// A revoke whose unassign waits for [`SourceContext::release`].
    unassign_pending: std::sync::atomic::AtomicBool,
    high_watermarks: Mutex<BTreeMap<TopicPartition, i64>>,
    lags: Mutex<BTreeMap<TopicPartition, i64>>,
    /// False once a statistics report shows no broker up (outage).
    brokers_up: std::sync::atomic::AtomicBool,
}

impl Default for SourceContext {
    fn default() -> Self {
        Self {
            rebalances: Mutex::default(),
            deferring: std::sync::atomic::AtomicBool::new(false),
            unassign_pending: std::sync::atomic::AtomicBool::new(false),
            high_watermarks: Mutex::default(),
            lags: Mutex::default(),
            brokers_up: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl SourceContext {
    /// Rebalances since the last call, in order.
    pub fn take_rebalances(&self) -> Vec<Rebalanced> {
        std::mem::take(&mut *lock(&self.rebalances))
    }

    /// Whether a rebalance waits for [`SourceContext::take_rebalances`].
    pub fn rebalance_pending(&self) -> bool {
        !lock(&self.rebalances).is_empty()
    }

    /// The partition's high watermark as of the last statistics report.
    pub fn high_watermark(&self, tp: &TopicPartition) -> Option<i64> {
        lock(&self.high_watermarks).get(tp).copied()
    }

    /// Whether the last statistics report saw a broker up (true before the
    /// first report).
    pub fn brokers_up(&self) -> bool {
        self.brokers_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The partition's consumer lag as of the last statistics report.
    pub fn lag(&self, tp: &TopicPartition) -> Option<i64> {
        lock(&self.lags).get(tp).copied()
    }

    /// Consumer lag per assigned partition, as of the last statistics report.
    pub fn lags(&self) -> BTreeMap<TopicPartition, i64> {
        lock(&self.lags).clone()
    }

    fn push(&self, r: Rebalanced) {
        lock(&self.rebalances).push(r);
    }

    /// From now on revokes wait for [`SourceContext::release`]; the guard
    /// ends that (and releases what is pending) when dropped, so a closing
    /// consumer is never left waiting for a loop that is gone.
    pub fn defer_revokes(consumer: &Arc<InputConsumer>) -> DeferGuard {
        consumer
            .context()
            .deferring
            .store(true, std::sync::atomic::Ordering::SeqCst);
        DeferGuard(consumer.clone())
    }

    /// Completes a deferred revoke: the partitions leave this member and
    /// the group rebalance goes on.
    pub fn release<C: Consumer<SourceContext>>(&self, consumer: &C) {
        if self
            .unassign_pending
            .swap(false, std::sync::atomic::Ordering::SeqCst)
            && let Err(e) = unassign(consumer)
        {
            tracing::warn!(error = %e, "unassign after handover failed");
        }
    }
}

/// See [`SourceContext::defer_revokes`].
pub struct DeferGuard(Arc<InputConsumer>);

impl Drop for DeferGuard {
    fn drop(&mut self) {
        let context = self.0.context();
        context
            .deferring
            .store(false, std::sync::atomic::Ordering::SeqCst);
        context.release(self.0.as_ref());
    }
}

fn assign<C: Consumer<SourceContext>>(
    consumer: &C,
    tpl: &TopicPartitionList,
) -> Result<(), KafkaError> {
    match consumer.rebalance_protocol() {
        rdkafka::consumer::RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
        _ => consumer.assign(tpl),
    }
}

fn unassign<C: Consumer<SourceContext>>(consumer: &C) -> Result<(), KafkaError> {
    match consumer.rebalance_protocol() {
        rdkafka::consumer::RebalanceProtocol::Cooperative => {
            consumer.incremental_unassign(&consumer.assignment()?)
        }
        _ => consumer.unassign(),
    }
}

/// A poisoned lock still holds usable plain data here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let mut highs = BTreeMap::new();
        let mut lags = BTreeMap::new();
        for (name, topic) in &statistics.topics {
            for (id, p) in &topic.partitions {
                if *id >= 0 && p.hi_offset >= 0 {
                    highs.insert((name.clone(), *id), p.hi_offset);
                }
                if *id >= 0
                    && p.desired
                    && let Some(lag) = position_lag(p)
                {
                    lags.insert((name.clone(), *id), lag);
                }
            }
        }
        lock(&self.high_watermarks).extend(highs);
        *lock(&self.lags) = lags;
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.brokers_up
            .store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ConsumerContext for SourceContext {
    /// Kafka Streams' handover on revoke: a revoke is not acknowledged to
    /// librdkafka here but by [`SourceContext::release`], once the service
    /// has written the partitions' state and committed their offsets
    /// (librdkafka holds the rejoin until then, within the rebalance
    /// timeout). Lost partitions and a closing consumer unassign at once.
    /// An assignment is taken up at once: librdkafka does not heartbeat
    /// while it waits for a deferred assign, so a restore longer than
    /// `session.timeout.ms` would lose the partitions (tried).
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr::*;
        use std::sync::atomic::Ordering::SeqCst;
        let done = match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.push(Rebalanced::Assigned(partitions(tpl)));
                assign(consumer, tpl)
            }
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let handover = self.deferring.load(SeqCst) && !consumer.assignment_lost();
                self.push(Rebalanced::Revoked {
                    partitions: partitions(tpl),
                    handover,
                });
                match handover {
                    true => {
                        self.unassign_pending.store(true, SeqCst);
                        Ok(())
                    }
                    false => unassign(consumer),
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; unassigning");
                unassign(consumer)
            }
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "rebalance assignment call failed");
        }
    }
}

/// Messages between the partition's high watermark and the consumer's
/// position, from the moment it is assigned: the consumed position when
/// something was consumed, else where consuming will start (the committed
/// offset, else the log start under `auto.offset.reset = earliest`).
/// librdkafka's own `consumer_lag` counts from the committed offset and is
/// -1 until the group has committed, which hid the lag of every restart.
fn position_lag(p: &rdkafka::statistics::Partition) -> Option<i64> {
    if p.hi_offset < 0 {
        return None;
    }
    let position = [p.app_offset, p.committed_offset, p.lo_offset]
        .into_iter()
        .find(|&o| o >= 0)?;
    Some((p.hi_offset - position).max(0))
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}
