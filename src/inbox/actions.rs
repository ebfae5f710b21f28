//! People's actions on alerts (acknowledge, snooze, assign, close, ...),
//! written to the actions topic so every instance's inbox sees them.

use std::sync::Arc;

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::Inbox;
use super::feed::{STORE_WITHIN, wall_now};
use super::lifecycle::{Action, Lifecycle, Position, Refused};
use crate::config::KafkaConfig;

/// Why an action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// No such alert in the inbox.
    #[error("unknown alert")]
    UnknownAlert,
    /// The lifecycle refused it.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Another instance stored an action on the same revision at the same
    /// moment, and this one does not go with it: the other stands.
    #[error("another action on this alert was stored at the same moment: {0}")]
    Conflict(Refused),
    /// The view has not read the stored lifecycles yet.
    #[error("the inbox is catching up on the actions topic; try again in a moment")]
    CatchingUp,
    /// The actions topic did not take it.
    #[error("the actions topic did not acknowledge the action: {0}")]
    NotStored(String),
}

/// Writes lifecycle records to the actions topic.
///
/// Compaction keeps a key's record at the latest offset, so that is the
/// rule everywhere. Two instances writing one alert at once would each
/// build on the record before, and the later would silently drop the
/// other's action: so each record names its `base`, and a writer waits
/// until it has read back its own record; if another was stored between
/// its base and it, and its own is the latest, it applies its change again
/// on top of the other's (or, when the change no longer goes, restores the
/// other's record and says so with a conflict). Two concurrent writers
/// always end on one record holding both changes or the first; more at
/// once are settled pairwise the same way.
pub struct Actions {
    producer: FutureProducer,
    topic: String,
    inbox: Arc<Inbox>,
    /// One write at a time here: each is applied to the record the last left.
    writing: tokio::sync::Mutex<()>,
    /// Woken each time the actions reader moves on.
    read: Arc<tokio::sync::Notify>,
}

/// How many times a write is applied again on top of concurrent ones.
const REBASES: usize = 3;

impl Actions {
    /// A writer for `config.actions_topic` through `producer`.
    pub fn new(producer: FutureProducer, config: &KafkaConfig, inbox: Arc<Inbox>) -> Self {
        Self {
            producer,
            topic: config.actions_topic.clone(),
            inbox,
            writing: tokio::sync::Mutex::new(()),
            read: Arc::new(tokio::sync::Notify::new()),
        }
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
        let (record, base) = self.inbox.watch(alert_id);
        if let Some(v) = version.filter(|v| *v != record.revision) {
            self.inbox.unwatch(alert_id);
            tracing::debug!(alert_id, asked = v, "a stale action");
            return Err(Refused::Stale(record.revision).into());
        }
        self.store(alert_id, record, base, |mut r| {
            r.apply(action.clone(), by, now)?;
            Ok(r)
        })
        .await
    }

    /// Writes the episode of `alert_id` into its record, if the record
    /// does not keep it yet (quietly: no webhook hears of it).
    pub async fn keep(&self, alert_id: &str) -> Result<(), ActError> {
        let _one = self.writing.lock().await;
        if self.inbox.to_keep(alert_id).is_none() {
            return Ok(());
        }
        let (record, base) = self.inbox.watch(alert_id);
        self.store(alert_id, record, base, |r| Ok(r.keeping()))
            .await
            .map(drop)
    }

    /// Stores a tombstone for `alert_id`: compaction forgets its record.
    pub async fn forget(&self, alert_id: &str) -> Result<(), ActError> {
        let send = self.producer.send(
            FutureRecord::<str, [u8]>::to(&self.topic).key(alert_id),
            STORE_WITHIN,
        );
        tokio::time::timeout(STORE_WITHIN, send)
            .await
            .map_err(|_| ActError::NotStored("not acknowledged in time".into()))?
            .map_err(|(e, _)| ActError::NotStored(e.to_string()))
            .map(drop)
    }

    /// Stores `change` of `record` (read at offset `base`, being watched),
    /// checking for concurrent writers as the type's doc says.
    async fn store(
        &self,
        alert_id: &str,
        mut record: Lifecycle,
        mut base: Option<i64>,
        change: impl Fn(Lifecycle) -> Result<Lifecycle, Refused>,
    ) -> Result<Lifecycle, ActError> {
        let mut first = true;
        let mut refused: Option<Refused>;
        for _ in 0..=REBASES {
            let mut next = match change(record.clone()) {
                Ok(next) => {
                    refused = None;
                    next
                }
                Err(e) if first => {
                    self.inbox.unwatch(alert_id);
                    return Err(e.into());
                }
                // The other change stands: it is written back, on top.
                Err(e) => {
                    refused = Some(e);
                    let mut back = record.clone();
                    back.quiet = true;
                    back
                }
            };
            next.base = base;
            let at = match self.send(alert_id, &next).await {
                Ok(at) => at,
                Err(e) => {
                    self.inbox.unwatch(alert_id);
                    return Err(e);
                }
            };
            self.inbox.lifecycle(next.clone(), at.offset);
            self.read_back(at).await;
            let (seen, held) = self.inbox.unwatch(alert_id);
            let missed = seen
                .into_iter()
                .filter(|(o, _)| base.is_none_or(|b| *o > b) && *o < at.offset)
                .max_by_key(|(o, _)| *o);
            match missed {
                // Ours is the latest and missed another: build on that one.
                Some((o, other)) if held == Some(at.offset) => {
                    tracing::info!(
                        alert_id,
                        ours = at.offset,
                        theirs = o,
                        "inbox: a concurrent write; applying this one again on top of it"
                    );
                    record = other;
                    base = Some(at.offset);
                    first = false;
                    self.inbox.watch(alert_id);
                }
                _ => {
                    return match refused {
                        Some(e) => Err(ActError::Conflict(e)),
                        None => Ok(next),
                    };
                }
            }
        }
        tracing::warn!(
            alert_id,
            "inbox: writes kept crossing; the latest stored one stands"
        );
        Ok(self.inbox.lifecycle_of(alert_id))
    }

    /// Produces `record`; where it was stored.
    async fn send(&self, alert_id: &str, record: &Lifecycle) -> Result<Position, ActError> {
        let body = serde_json::to_vec(record).map_err(|e| ActError::NotStored(e.to_string()))?;
        let send = self.producer.send(
            FutureRecord::to(&self.topic).key(alert_id).payload(&body),
            STORE_WITHIN,
        );
        let stored = tokio::time::timeout(STORE_WITHIN, send)
            .await
            .map_err(|_| ActError::NotStored("not acknowledged in time".into()))?
            .map_err(|(e, _)| ActError::NotStored(e.to_string()))?;
        Ok(Position {
            partition: stored.partition,
            offset: stored.offset,
        })
    }

    /// Waits (bounded) until the actions reader has read past `at`, so
    /// every record stored before it has been seen (at once, when no feed
    /// reads the topic into the view: nothing to check against).
    async fn read_back(&self, at: Position) {
        if !self.inbox.is_read() {
            return;
        }
        let waited = tokio::time::timeout(STORE_WITHIN, async {
            loop {
                let moved = self.read.notified();
                if self.inbox.read_past(at.partition, at.offset) {
                    return;
                }
                moved.await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                partition = at.partition,
                offset = at.offset,
                "inbox: own record not read back in time; not checked for a concurrent write"
            );
        }
    }

    /// Wakes writers waiting to read their records back.
    pub(super) fn moved(&self) {
        self.read.notify_waiters();
    }
}
