//! The consuming phase: the engine task's loop over input, roster, ticks,
//! snapshot rounds and topology checks, and the batching and polling it
//! relies on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Clients;
use super::acker::Ack;
use super::group_tiers::GroupTiers;
use super::partitions::Partitions;
use super::step::{Origin, Step};
use crate::config::Config;
use crate::http::Readiness;
use crate::kafka::rebalance::Rebalanced;
use crate::kafka::source::{self, InputConsumer};

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

/// The consuming phase's borrowed state.
pub(super) struct Consuming<'a> {
    pub(super) c: &'a Clients,
    pub(super) ack_tx: &'a mpsc::Sender<Ack>,
    pub(super) step: &'a mut Step,
    pub(super) parts: &'a mut Partitions,
    pub(super) ready: &'a Readiness,
    /// The group-wide ranking (off without `kafka.tiers_topic`).
    pub(super) tiers: Option<&'a mut GroupTiers>,
}

impl Consuming<'_> {
    /// Returns when `stopping` is cancelled or the acker is gone, or with
    /// the new partition counts when an input topic's count changed.
    pub(super) async fn run(
        &mut self,
        config: &Config,
        stopping: &CancellationToken,
    ) -> Option<String> {
        let _handing_over = crate::kafka::rebalance::SourceContext::defer_revokes(&self.c.consumer);
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
                m = source::next_of(c.tiers.as_ref()) => match (m, self.tiers.as_deref_mut()) {
                    (Ok(m), Some(tiers)) => {
                        if let Err(why) = tiers.heard(&m) {
                            self.step.metrics().summary_refused();
                            tracing::warn!(offset = m.offset(), why, "tier summary refused");
                        }
                    }
                    (Err(e), _) => tracing::warn!(error = %e, "tier summaries reader"),
                    (Ok(_), None) => {}
                },
                _ = ticker.tick() => {
                    if let Some(tiers) = self.tiers.as_deref_mut() {
                        tiers.tick(self.step, self.parts.owned(), &c.sink).await;
                    }
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
