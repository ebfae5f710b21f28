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

use super::instances::{Announcement, EVERY, Heard, Instances};
use super::lifecycle::{Action, Lifecycle, Position, Refused};
use super::{Inbox, Published};
use crate::config::KafkaConfig;
use crate::engine::event::Ts;
use crate::kafka::client::{Role, client_config};
use crate::kafka::source::{InputConsumer, SourceError, whole_topic_reader};

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
            whole_topic_reader(config, brokers, topic, purpose, instance).map(|(c, _)| c)
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
    /// An announcer of `instance`, reached at `url`.
    pub fn new(
        config: &KafkaConfig,
        brokers: &str,
        instance: &str,
        url: &str,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            producer: client_config(config, brokers, Role::Producer).create()?,
            topic: config.instances_topic.clone(),
            instance: instance.to_string(),
            url: url.to_string(),
        })
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
}

/// How long a lifecycle record or an announcement may take to be
/// acknowledged before it counts as not stored.
const STORE_WITHIN: Duration = Duration::from_secs(5);

fn wall_now() -> Ts {
    Ts(chrono::Utc::now().timestamp_millis())
}

/// Feeds the inbox until `stop`: alerts and lifecycle records as they
/// come, the instances' announcements, and every second the snoozes that
/// ran out (announced as `reopened`; the instance that `holds` the customer
/// writes the reopen record that webhook endpoints hear of, so one instance
/// does, whichever partitions move). Every [`EVERY`] it announces itself
/// with the partitions `assigned` gives, and says it is gone when stopped.
/// A record that does not decode is logged and skipped: the inbox is a
/// view, the topics stay the record.
pub async fn run(
    feed: Feed,
    readers: Readers,
    holds: impl Fn(&str) -> bool,
    assigned: impl Fn() -> Vec<i32>,
    stop: CancellationToken,
) {
    let Some(mut readers) = measured(readers, &stop).await else {
        return;
    };
    let Feed {
        inbox,
        actions,
        instances,
        announcer,
        untrusted,
    } = feed;
    let me = announcer
        .as_ref()
        .map(|a| a.instance.clone())
        .unwrap_or_default();
    let mut wake = tokio::time::interval(Duration::from_secs(1));
    wake.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut announce = tokio::time::interval(EVERY);
    announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut since = wall_now();
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
                Ok(m) => match m.payload().map(serde_json::from_slice::<Lifecycle>) {
                    Some(Ok(mut l)) => {
                        // A record dated ahead (a forged one, a host's clock)
                        // must not push every later action into its past.
                        let latest = Ts(wall_now().0 + super::instances::SKEW.as_millis() as i64);
                        l.updated_at = l.updated_at.min(latest);
                        inbox.lifecycle(l, m.offset());
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, offset = m.offset(), "inbox: an actions record does not decode; skipped"),
                    None => {}
                },
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
            _ = wake.tick() => {
                let now = wall_now();
                for (id, customer) in inbox.wake(since, now) {
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
                since = now;
            }
        }
    }
    if let Some(a) = &announcer {
        a.say(None).await;
    }
}

/// The reader's next message; never, without a reader.
async fn next_of(
    reader: Option<&InputConsumer>,
) -> Result<rdkafka::message::BorrowedMessage<'_>, rdkafka::error::KafkaError> {
    match reader {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// Why an action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// No such alert in the inbox.
    #[error("unknown alert")]
    UnknownAlert,
    /// The lifecycle refused it.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The view has not read the stored lifecycles yet.
    #[error("the inbox is catching up on the actions topic; try again in a moment")]
    CatchingUp,
    /// The actions topic did not take it.
    #[error("the actions topic did not acknowledge the action: {0}")]
    NotStored(String),
}

/// Writes actions to the actions topic.
pub struct Actions {
    producer: FutureProducer,
    topic: String,
    inbox: Arc<Inbox>,
    /// One action at a time: each is applied to the record the last left.
    writing: tokio::sync::Mutex<()>,
}

impl Actions {
    /// A writer for `config.actions_topic`.
    pub fn new(
        config: &KafkaConfig,
        brokers: &str,
        inbox: Arc<Inbox>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Self {
            producer: client_config(config, brokers, Role::Producer).create()?,
            topic: config.actions_topic.clone(),
            inbox,
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Applies `action` by `by` now to the record at `version` (any, if
    /// `None`), stores the record and returns it.
    pub async fn act(
        &self,
        alert_id: &str,
        action: Action,
        by: &str,
        version: Option<u64>,
    ) -> Result<Lifecycle, ActError> {
        if !self.inbox.is_caught_up() {
            return Err(ActError::CatchingUp);
        }
        let _one = self.writing.lock().await;
        let now = wall_now();
        let Some(item) = self.inbox.get(alert_id, now) else {
            return Err(ActError::UnknownAlert);
        };
        if item.state == super::State::Resolved
            && matches!(
                action,
                Action::Ack { .. } | Action::Snooze { .. } | Action::Reopen
            )
        {
            return Err(Refused::NotFiring.into());
        }
        let mut record = self.inbox.lifecycle_of(alert_id);
        if let Some(v) = version.filter(|v| *v != record.revision) {
            tracing::debug!(alert_id, asked = v, "a stale action");
            return Err(Refused::Stale(record.revision).into());
        }
        record.apply(action, by, now)?;
        let body = serde_json::to_vec(&record).map_err(|e| ActError::NotStored(e.to_string()))?;
        let send = self.producer.send(
            FutureRecord::to(&self.topic).key(alert_id).payload(&body),
            STORE_WITHIN,
        );
        let stored = tokio::time::timeout(STORE_WITHIN, send)
            .await
            .map_err(|_| ActError::NotStored("not acknowledged in time".into()))?
            .map_err(|(e, _)| ActError::NotStored(e.to_string()))?;
        self.inbox.lifecycle(record.clone(), stored.offset);
        Ok(record)
    }
}
