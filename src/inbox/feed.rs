//! Keeps the [`Inbox`] up to date from Kafka and writes people's actions.
//!
//! Every instance reads all of the alert topic and of the actions topic
//! from the beginning (outside the group, like the roster), so each shows
//! the whole group's alerts whichever partitions it owns. An action is
//! applied to the alert's current record and the whole record produced to
//! the actions topic, keyed by `alert_id`; it counts once the broker has
//! acknowledged it, and only then does the caller get an answer.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use super::actions::{ActError, Actions};
use super::instances::{Announcement, EVERY, Heard, Instances};
use super::lifecycle::{Action, Lifecycle, Position, Refused};
use super::{Inbox, Published};
use crate::config::KafkaConfig;
use crate::engine::event::Ts;
use crate::kafka::source::{InputConsumer, SourceError, next_of, whole_topic_reader};

/// The inbox's readers.
pub struct Readers {
    alerts: InputConsumer,
    actions: InputConsumer,
    instances: Option<InputConsumer>,
    /// The actions and instances topics' names.
    topics: (String, String),
    /// The partitions of the actions and instances topics not yet read to
    /// the end they had at start: (actions?, topic, partition, end).
    behind: Vec<(bool, String, i32, i64)>,
}

/// The partitions of `reader`'s `topic` holding records, with the offset
/// after their last one at this moment (blocking metadata calls).
fn ends(
    reader: &InputConsumer,
    topic: &str,
    actions: bool,
) -> Result<Vec<(bool, String, i32, i64)>, SourceError> {
    use rdkafka::consumer::Consumer;
    let mut out = Vec::new();
    for p in reader.assignment()?.elements() {
        let (low, high) = reader.fetch_watermarks(topic, p.partition(), WATERMARKS_WITHIN)?;
        if high > low {
            out.push((actions, topic.to_string(), p.partition(), high));
        }
    }
    Ok(out)
}

/// How long the start-up's watermark queries may take, each.
const WATERMARKS_WITHIN: Duration = Duration::from_secs(10);

impl Readers {
    /// Drops the partitions read to their start-time end; whether any is
    /// left, i.e. the inbox is still catching up.
    fn catching_up(&mut self) -> bool {
        use rdkafka::consumer::Consumer;
        let position = |c: &InputConsumer| c.position().ok();
        let (actions, instances) = (
            position(&self.actions),
            self.instances.as_ref().and_then(position),
        );
        self.behind.retain(|(is_actions, topic, partition, end)| {
            let at = match is_actions {
                true => actions.as_ref(),
                false => instances.as_ref(),
            }
            .and_then(|tpl| tpl.find_partition(topic, *partition))
            .map(|e| e.offset());
            !matches!(at, Some(rdkafka::Offset::Offset(o)) if o >= *end)
        });
        !self.behind.is_empty()
    }
}

impl Readers {
    /// Readers of the alert, actions and instances topics, from their
    /// beginnings (no instances reader when that topic is off).
    pub fn new(config: &KafkaConfig, brokers: &str, instance: &str) -> Result<Self, SourceError> {
        let read = |topic: &str, purpose: &str| {
            whole_topic_reader(config, brokers, &[topic.to_string()], purpose, instance)
                .map(|(c, _)| c)
        };
        let actions = read(&config.actions_topic, "inbox-actions")?;
        let instances = match config.instances_topic.is_empty() {
            true => None,
            false => Some(read(&config.instances_topic, "inbox-instances")?),
        };
        Ok(Self {
            alerts: read(&config.alert_topic, "inbox-alerts")?,
            actions,
            instances,
            topics: (config.actions_topic.clone(), config.instances_topic.clone()),
            behind: Vec::new(),
        })
    }

    /// The start-time ends of the actions and instances topics.
    fn ends(&self) -> Result<Vec<(bool, String, i32, i64)>, SourceError> {
        let mut behind = ends(&self.actions, &self.topics.0, true)?;
        if let Some(i) = &self.instances {
            behind.extend(ends(i, &self.topics.1, false)?);
        }
        Ok(behind)
    }
}

/// `readers` once they know the ends to catch up to, asked on a blocking
/// thread: the watermark calls take seconds on a slow broker, and on the
/// runtime they would hold back the input's first poll (and so the
/// group's rebalance) for as long. Asked again each second until they
/// answer; `None` when stopped first.
async fn measured(mut readers: Readers, stop: &CancellationToken) -> Option<Readers> {
    loop {
        let (back, ends) = tokio::task::spawn_blocking(move || {
            let ends = readers.ends();
            (readers, ends)
        })
        .await
        .ok()?;
        readers = back;
        match ends {
            Ok(behind) => {
                readers.behind = behind;
                return Some(readers);
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbox: the actions topic's end is not known yet; asking again")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Announces this instance on the instances topic.
pub struct Announcer {
    producer: FutureProducer,
    topic: String,
    /// This instance's id (the record key).
    pub instance: String,
    url: String,
}

impl Announcer {
    /// An announcer of `instance`, reached at `url`, through `producer`.
    pub fn new(producer: FutureProducer, config: &KafkaConfig, instance: &str, url: &str) -> Self {
        Self {
            producer,
            topic: config.instances_topic.clone(),
            instance: instance.to_string(),
            url: url.to_string(),
        }
    }

    /// Says who this instance is and what it owns (`None`: it is gone).
    async fn say(&self, partitions: Option<Vec<i32>>) {
        let body = partitions.map(|partitions| {
            serde_json::to_vec(&Announcement {
                instance: self.instance.clone(),
                url: self.url.clone(),
                partitions,
                at: wall_now(),
            })
            .unwrap_or_default()
        });
        let mut record = FutureRecord::to(&self.topic).key(&self.instance);
        if let Some(b) = &body {
            record = record.payload(b);
        }
        // Bounded: a broker that does not acknowledge must not hold the feed
        // (or a drain waiting on it) for librdkafka's message timeout.
        match tokio::time::timeout(STORE_WITHIN, self.producer.send(record, STORE_WITHIN)).await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                tracing::warn!(error = %e, "inbox: the instance announcement was not stored")
            }
            Err(_) => {
                tracing::warn!("inbox: the instance announcement was not acknowledged in time")
            }
        }
    }
}

/// What the feed keeps up to date and writes with.
pub struct Feed {
    /// The view.
    pub inbox: Arc<Inbox>,
    /// The action writer (for reopen records).
    pub actions: Arc<Actions>,
    /// The instances heard of.
    pub instances: Arc<Instances>,
    /// This instance's announcer (none when the instances topic is off).
    pub announcer: Option<Announcer>,
    /// Counts announcements naming an address outside `http.peers`.
    pub untrusted: Option<prometheus::IntCounter>,
    /// `inbox.keep`.
    pub keep: Duration,
}

/// Episodes written into their records per second, at most: a first
/// start over a long alert topic catches up without flooding the broker.
const KEEP_PER_SECOND: usize = 200;
/// How often episodes resolved beyond `inbox.keep` are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How long a lifecycle record or an announcement may take to be
/// acknowledged before it counts as not stored.
pub(super) const STORE_WITHIN: Duration = Duration::from_secs(5);

pub(super) fn wall_now() -> Ts {
    Ts(chrono::Utc::now().timestamp_millis())
}

/// Feeds the inbox until `stop`: alerts and lifecycle records as they
/// come, the instances' announcements, and once caught up, every second,
/// the snoozes that ran out (announced as `reopened`). The instance that
/// `holds` a customer writes its records: the reopens webhook endpoints
/// hear of, the episodes its records do not keep yet, and the tombstones
/// of episodes resolved beyond `inbox.keep` (every [`SWEEP_EVERY`]). Every
/// [`EVERY`] it announces itself with the partitions `assigned` gives, and
/// says it is gone when stopped.
/// A record that does not decode is logged and skipped: the inbox is a
/// view, the topics stay the record.
pub async fn run(
    feed: Feed,
    readers: Readers,
    holds: impl Fn(&str) -> bool,
    assigned: impl Fn() -> Vec<i32>,
    stop: CancellationToken,
) {
    feed.inbox.reads_actions();
    let Some(mut readers) = measured(readers, &stop).await else {
        return;
    };
    let Feed {
        inbox,
        actions,
        instances,
        announcer,
        untrusted,
        keep,
    } = feed;
    let me = announcer
        .as_ref()
        .map(|a| a.instance.clone())
        .unwrap_or_default();
    let mut wake = tokio::time::interval(Duration::from_secs(1));
    wake.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut announce = tokio::time::interval(EVERY);
    announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The holder's record writes (keeps, tombstones), one batch at a time.
    let mut keeping: Option<tokio::task::JoinHandle<()>> = None;
    let mut dropped: Vec<(String, String)> = Vec::new();
    let mut catching_up = true;
    loop {
        if catching_up && !readers.catching_up() {
            catching_up = false;
            inbox.caught_up();
            tracing::info!(
                "inbox: the actions and instances topics are read to their end; actions are taken"
            );
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            m = readers.alerts.recv() => match m {
                Ok(m) => match m.payload().map(serde_json::from_slice::<Published>) {
                    Some(Ok(a)) => inbox.alert_at(a, Some(Position { partition: m.partition(), offset: m.offset() })),
                    Some(Err(e)) => tracing::warn!(error = %e, offset = m.offset(), "inbox: an alert record does not decode; skipped"),
                    None => {}
                },
                Err(e) => tracing::warn!(error = %e, "inbox: alert topic reader"),
            },
            m = readers.actions.recv() => match m {
                Ok(m) => {
                    match m.payload().map(serde_json::from_slice::<Lifecycle>) {
                        Some(Ok(mut l)) => {
                            // A record dated ahead (a forged one, a host's clock)
                            // must not push every later action into its past.
                            let latest = Ts(wall_now().0 + super::instances::SKEW.as_millis() as i64);
                            l.updated_at = l.updated_at.min(latest);
                            inbox.lifecycle(l, m.offset());
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, offset = m.offset(), "inbox: an actions record does not decode; skipped"),
                        None => {
                            if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                                inbox.tombstone(key, m.offset());
                            }
                        }
                    }
                    inbox.read_to(m.partition(), m.offset() + 1);
                    actions.moved();
                }
                Err(e) => tracing::warn!(error = %e, "inbox: actions topic reader"),
            },
            m = next_of(readers.instances.as_ref()) => match m {
                Ok(m) => {
                    let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
                    match m.payload().map(serde_json::from_slice::<Announcement>) {
                        Some(Ok(a)) => {
                            let url = a.url.clone();
                            if key != me && instances.heard(&key, Some(a)) == Heard::Untrusted {
                                tracing::warn!(instance = %key, url = %url, offset = m.offset(), "inbox: an instance announcement names an address outside http.peers; ignored");
                                if let Some(c) = &untrusted {
                                    c.inc();
                                }
                            }
                        }
                        None => {
                            instances.heard(&key, None);
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "inbox: an instance announcement does not decode; skipped"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "inbox: instances topic reader"),
            },
            _ = announce.tick() => {
                if let Some(a) = &announcer {
                    a.say(Some(assigned())).await;
                }
            }
            _ = sweep.tick(), if !catching_up => {
                dropped.extend(inbox.sweep(keep).into_iter().filter(|(_, c)| holds(c)));
            }
            _ = wake.tick(), if !catching_up => {
                if keeping.as_ref().is_none_or(|k| k.is_finished()) {
                    let keeps = inbox.unkept(KEEP_PER_SECOND, &holds);
                    let forgets: Vec<String> = dropped.drain(..dropped.len().min(KEEP_PER_SECOND)).map(|(id, _)| id).collect();
                    let actions = actions.clone();
                    keeping = Some(tokio::spawn(async move {
                        for id in keeps {
                            if let Err(e) = actions.keep(&id).await {
                                tracing::warn!(alert_id = %id, error = %e, "inbox: the episode was not kept in its record; trying again");
                            }
                        }
                        for id in forgets {
                            if let Err(e) = actions.forget(&id).await {
                                tracing::warn!(alert_id = %id, error = %e, "inbox: the tombstone of an old episode was not stored");
                            }
                        }
                    }));
                }
                let now = wall_now();
                for (id, customer) in inbox.wake(now) {
                    tracing::info!(alert_id = %id, "snooze ran out; the alert is open again");
                    if holds(&customer) {
                        // Off the feed loop: a slow broker must not hold the
                        // readers (nor every action waiting on the writer).
                        let actions = actions.clone();
                        tokio::spawn(async move {
                            match actions.act(&id, Action::Reopen, "churnwatch", None).await {
                                Ok(_) | Err(ActError::Refused(Refused::NoSnoozeOver)) => {}
                                Err(e) => tracing::warn!(alert_id = %id, error = %e, "the reopen record was not written"),
                            }
                        });
                    }
                }
            }
        }
    }
    if let Some(k) = keeping {
        k.abort();
    }
    if let Some(a) = &announcer {
        a.say(None).await;
    }
}
