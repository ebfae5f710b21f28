//! The retention inbox: every alert of the consumer group with its
//! lifecycle, materialised from the alert topic and the actions topic on
//! every instance (whichever partitions it owns), and the changes pushed to
//! live views.
//!
//! [`Inbox`] is the view; `feed` keeps it up to date from Kafka and writes
//! actions. The view holds each episode's latest transition and lifecycle.
//! The instance holding a customer also keeps its episodes in their
//! lifecycle records (the compacted actions topic), so any instance
//! rebuilds the same inbox whatever the alert topic's retention left; an
//! episode resolved longer than `inbox.keep` ago is dropped and its record
//! tombstoned, so memory is bounded by the firing episodes and that window.

pub mod actions;
pub mod feed;
pub mod instances;
pub mod lifecycle;
mod query;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::engine::event::Ts;
pub use lifecycle::{Action, CloseReason, Lifecycle, Position, Refused, State};
pub use query::{BadCursor, Counts, Filter, Item, Overview, Page, Sort, same_person};

/// An alert as published on the alert topic (the fields the inbox uses;
/// unknown ones are ignored, so older and newer producers both read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Episode id.
    pub alert_id: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// Rule.
    pub rule: String,
    /// Cause, for `rep_turnover`.
    pub cause: Option<String>,
    /// Customer.
    pub customer_id: String,
    /// Tier at `at`.
    pub tier: String,
    /// The customer's segment (empty in alerts from before segments).
    #[serde(default)]
    pub segment: String,
    /// Transition time.
    pub at: Ts,
    /// The sentence.
    pub reason: String,
    /// The customer's numbers at `at`.
    #[serde(default)]
    pub signals: serde_json::Value,
}

/// One episode: its first firing and latest transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// When it fired.
    pub fired_at: Ts,
    /// When it resolved, if it did.
    pub resolved_at: Option<Ts>,
    /// The latest transition seen.
    #[serde(flatten)]
    pub alert: Published,
    /// Where its firing record is on the alert topic, when read from there:
    /// its lifecycle records carry it, so a webhook endpoint announces no
    /// action before the firing.
    #[serde(skip)]
    pub firing_record: Option<Position>,
}

impl Episode {
    /// The episode as one transition tells it.
    fn of(a: Published, position: Option<Position>) -> Self {
        let firing = a.status == "firing";
        Self {
            fired_at: a.at,
            resolved_at: (!firing).then_some(a.at),
            firing_record: position.filter(|_| firing),
            alert: a,
        }
    }

    /// Takes in what `other` knows of the same episode, in any order: the
    /// earliest firing, the latest resolution, and the latest transition
    /// (a firing replayed after the resolution does not reopen it).
    fn merge(&mut self, other: Episode) {
        self.fired_at = self.fired_at.min(other.fired_at);
        self.firing_record = self.firing_record.or(other.firing_record);
        let newer = match (self.resolved_at, other.resolved_at) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b > a,
            (None, None) => other.alert.at >= self.alert.at,
            (Some(_), None) => false,
        };
        if newer {
            self.resolved_at = other.resolved_at;
            self.alert = other.alert;
        }
    }

    /// When it fired and resolved: what its record must tell.
    fn ends(&self) -> (Ts, Option<Ts>) {
        (self.fired_at, self.resolved_at)
    }

    /// The risk score at the latest transition, if it carries one.
    pub fn risk(&self) -> Option<u64> {
        self.alert.signals.get("risk").and_then(|r| r.as_u64())
    }

    /// The account rep at the latest transition.
    pub fn rep(&self) -> Option<&str> {
        self.alert
            .signals
            .get("account_rep")
            .and_then(|r| r.as_str())
    }
}

/// What changed, for live views.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// `firing`, `resolved`, `lifecycle` or `reopened`.
    pub kind: &'static str,
    /// The alert.
    pub alert_id: String,
}

#[derive(Debug, Default)]
struct View {
    episodes: HashMap<String, Episode>,
    lifecycles: HashMap<String, Lifecycle>,
    /// The actions topic's offset of each held lifecycle: a record at a
    /// later offset replaces it, an earlier one is old news.
    offsets: HashMap<String, i64>,
    /// Episodes per customer, by firing time.
    by_customer: HashMap<String, BTreeMap<(Ts, String), ()>>,
    /// Snooze ends to come, earliest first: the wake-up queue.
    wakes: BTreeSet<(Ts, String)>,
    /// Episodes whose lifecycle record does not tell their latest
    /// transition yet (for the holder of their customer to write).
    unkept: HashSet<String>,
    /// The newest transition seen: the clock `inbox.keep` counts on.
    clock: Ts,
    /// Records read for an alert a writer is checking, while it checks.
    watched: HashMap<String, Vec<(i64, Lifecycle)>>,
    /// How far the actions topic is read: the next offset per partition.
    read: HashMap<i32, i64>,
}

impl View {
    /// Files `e` under its id, merged with what is known; whether that
    /// changed when it fired or resolved (then its record has to say so).
    fn put(&mut self, id: &str, e: Episode) -> bool {
        let customer = e.alert.customer_id.clone();
        self.clock = self.clock.max(e.alert.at);
        let (held, changed) = match self.episodes.get_mut(id) {
            Some(held) => {
                let was = held.ends();
                held.merge(e);
                let changed = held.ends() != was;
                (held, changed)
            }
            None => (self.episodes.entry(id.to_string()).or_insert(e), true),
        };
        let fired_at = held.fired_at;
        self.by_customer
            .entry(customer)
            .or_default()
            .insert((fired_at, id.to_string()), ());
        changed
    }

    /// Replaces the lifecycle of `id`, moving its snooze's wake-up. The
    /// episode it keeps joins the view's (held once, there).
    fn set_lifecycle(&mut self, id: &str, mut l: Lifecycle, offset: i64) {
        let wake = |l: &Lifecycle| {
            l.snoozed_until
                .filter(|_| l.closed_reason.is_none())
                .map(|u| (u, id.to_string()))
        };
        if let Some(w) = self.lifecycles.get(id).and_then(wake) {
            self.wakes.remove(&w);
        }
        if let Some(w) = wake(&l) {
            self.wakes.insert(w);
        }
        let kept = l.episode.take();
        self.offsets.insert(id.to_string(), offset);
        self.lifecycles.insert(id.to_string(), l);
        let told = kept.map(|e| {
            let ends = e.ends();
            self.put(id, e);
            ends
        });
        match self.episodes.get(id) {
            Some(e) if told != Some(e.ends()) => self.unkept.insert(id.to_string()),
            _ => self.unkept.remove(id),
        };
    }

    /// Forgets `id` altogether.
    fn drop_episode(&mut self, id: &str) {
        if let Some(l) = self.lifecycles.remove(id)
            && let Some(u) = l.snoozed_until
        {
            self.wakes.remove(&(u, id.to_string()));
        }
        self.offsets.remove(id);
        self.unkept.remove(id);
        if let Some(e) = self.episodes.remove(id)
            && let Some(ids) = self.by_customer.get_mut(&e.alert.customer_id)
        {
            ids.remove(&(e.fired_at, id.to_string()));
            if ids.is_empty() {
                self.by_customer.remove(&e.alert.customer_id);
            }
        }
    }
}

/// The shared inbox.
pub struct Inbox {
    view: RwLock<View>,
    changes: broadcast::Sender<Change>,
    /// Set by the feed once the actions and instances topics are read to
    /// the end they had at start: before, the view may show an older
    /// lifecycle than stored, and an action on it would supersede history.
    caught_up: std::sync::atomic::AtomicBool,
    /// Set once a feed reads the actions topic into this view: only then
    /// can a writer read its own records back (and check for others').
    reading: std::sync::atomic::AtomicBool,
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            view: RwLock::default(),
            changes: broadcast::channel(1024).0,
            caught_up: std::sync::atomic::AtomicBool::new(false),
            reading: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Inbox {
    /// Says the view has caught up with the stored lifecycles.
    pub fn caught_up(&self) {
        self.caught_up
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the view has caught up (actions are taken only then).
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Live changes (a slow reader misses some and is told so by the channel).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn notify(&self, kind: &'static str, alert_id: &str) {
        // Nobody listening is fine.
        let _ = self.changes.send(Change {
            kind,
            alert_id: alert_id.to_string(),
        });
    }

    /// Takes in one alert from the alert topic (duplicates are harmless).
    pub fn alert(&self, a: Published) {
        self.alert_at(a, None);
    }

    /// [`Inbox::alert`] for a record read at `position` of the alert topic.
    pub fn alert_at(&self, a: Published, position: Option<Position>) {
        let id = a.alert_id.clone();
        let firing = a.status == "firing";
        {
            let mut v = self.view.write();
            if v.put(&id, Episode::of(a, position)) {
                v.unkept.insert(id.clone());
            }
        }
        self.notify(if firing { "firing" } else { "resolved" }, &id);
    }

    /// Takes in a lifecycle record stored at `offset` of the actions topic
    /// (read back, or just written here): the later offset wins, as in
    /// compaction, so every instance ends on the record a restarted one
    /// reads. Whether it was taken.
    pub fn lifecycle(&self, l: Lifecycle, offset: i64) -> bool {
        let id = l.alert_id.clone();
        let taken = {
            let mut v = self.view.write();
            if let Some(seen) = v.watched.get_mut(&id) {
                seen.push((offset, l.clone()));
            }
            match v.offsets.get(&id) {
                Some(held) if *held >= offset => false,
                _ => {
                    v.set_lifecycle(&id, l, offset);
                    true
                }
            }
        };
        if taken {
            self.notify("lifecycle", &id);
        }
        taken
    }

    /// A tombstone for `id` at `offset` of the actions topic: the episode
    /// and its lifecycle are forgotten (unless a later record is held).
    pub fn tombstone(&self, id: &str, offset: i64) {
        let mut v = self.view.write();
        if v.offsets.get(id).is_none_or(|held| *held < offset) {
            v.drop_episode(id);
        }
    }

    /// Notes that partition `partition` of the actions topic is read up
    /// to (not including) `next`.
    pub fn read_to(&self, partition: i32, next: i64) {
        self.view.write().read.insert(partition, next);
    }

    /// Says a feed reads the actions topic into this view.
    pub fn reads_actions(&self) {
        self.reading
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a feed reads the actions topic into this view.
    pub fn is_read(&self) -> bool {
        self.reading.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the actions topic's `partition` is read past `offset`.
    pub fn read_past(&self, partition: i32, offset: i64) -> bool {
        self.view
            .read()
            .read
            .get(&partition)
            .is_some_and(|next| *next > offset)
    }

    /// The lifecycle of `alert_id` as [`Inbox::lifecycle_of`] gives it,
    /// with the offset it is stored at (none: nothing stored), and from
    /// now on every record read for it is kept for [`Inbox::unwatch`].
    pub fn watch(&self, alert_id: &str) -> (Lifecycle, Option<i64>) {
        let held = {
            let mut v = self.view.write();
            v.watched.entry(alert_id.to_string()).or_default();
            v.offsets.get(alert_id).copied()
        };
        (self.lifecycle_of(alert_id), held)
    }

    /// The records read for `alert_id` since [`Inbox::watch`], and where
    /// the view stands on it now (the offset it holds).
    pub fn unwatch(&self, alert_id: &str) -> (Vec<(i64, Lifecycle)>, Option<i64>) {
        let mut v = self.view.write();
        let seen = v.watched.remove(alert_id).unwrap_or_default();
        (seen, v.offsets.get(alert_id).copied())
    }

    /// An episode as its record should keep it, if its record does not
    /// yet: with the customer it belongs to.
    pub fn to_keep(&self, alert_id: &str) -> Option<Episode> {
        let v = self.view.read();
        v.unkept
            .contains(alert_id)
            .then(|| v.episodes.get(alert_id).cloned())
            .flatten()
    }

    /// Up to `n` episodes whose records do not keep them yet, of
    /// customers `held` here.
    pub fn unkept(&self, n: usize, held: impl Fn(&str) -> bool) -> Vec<String> {
        let v = self.view.read();
        v.unkept
            .iter()
            .filter(|id| {
                v.episodes
                    .get(*id)
                    .is_some_and(|e| held(&e.alert.customer_id))
            })
            .take(n)
            .cloned()
            .collect()
    }

    /// Drops the episodes resolved more than `keep` before the newest
    /// transition seen; returns those that had a record, with their
    /// customers, for the holder to tombstone.
    pub fn sweep(&self, keep: std::time::Duration) -> Vec<(String, String)> {
        let mut v = self.view.write();
        let before = Ts(v.clock.0.saturating_sub(keep.as_millis() as i64));
        let old: Vec<(String, String, bool)> = v
            .episodes
            .iter()
            .filter(|(_, e)| e.resolved_at.is_some_and(|r| r < before))
            .map(|(id, e)| {
                (
                    id.clone(),
                    e.alert.customer_id.clone(),
                    v.offsets.contains_key(id),
                )
            })
            .collect();
        let mut stored = Vec::new();
        for (id, customer, recorded) in old {
            v.drop_episode(&id);
            if recorded {
                stored.push((id, customer));
            }
        }
        stored
    }

    /// How many episodes the view holds.
    pub fn len(&self) -> usize {
        self.view.read().episodes.len()
    }

    /// Whether the view holds no episode.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lifecycle record of an alert (a fresh one if nobody acted),
    /// with the alert's customer, rule, tier, segment and episode (so every record
    /// written keeps the episode).
    pub fn lifecycle_of(&self, alert_id: &str) -> Lifecycle {
        let v = self.view.read();
        let mut l = v
            .lifecycles
            .get(alert_id)
            .cloned()
            .unwrap_or_else(|| Lifecycle::new(alert_id));
        if let Some(e) = v.episodes.get(alert_id) {
            l.customer_id.clone_from(&e.alert.customer_id);
            l.rule.clone_from(&e.alert.rule);
            l.tier.clone_from(&e.alert.tier);
            l.segment.clone_from(&e.alert.segment);
            l.firing = l.firing.or(e.firing_record);
            l.episode = Some(e.clone());
        }
        l
    }

    /// One alert with its lifecycle, firing or not.
    pub fn get(&self, alert_id: &str, now: Ts) -> Option<Item> {
        let v = self.view.read();
        let episode = v.episodes.get(alert_id)?.clone();
        let lifecycle = v.lifecycles.get(alert_id).cloned();
        let state = Lifecycle::state_of(lifecycle.as_ref(), episode.resolved_at.is_none(), now);
        Some(Item {
            episode,
            state,
            lifecycle,
        })
    }

    /// A customer's episodes, newest first, with their lifecycles.
    pub fn customer(&self, customer_id: &str, now: Ts) -> Vec<Item> {
        let ids: Vec<String> = {
            let v = self.view.read();
            v.by_customer
                .get(customer_id)
                .map(|m| m.keys().rev().map(|(_, id)| id.clone()).collect())
                .unwrap_or_default()
        };
        ids.iter().filter_map(|id| self.get(id, now)).collect()
    }

    /// Snoozes that ran out by `now` on alerts still firing, taken off
    /// the wake-up queue: they are open again. Announced as `reopened`
    /// changes; returned with their customers, for the reopen records.
    pub fn wake(&self, now: Ts) -> Vec<(String, String)> {
        let woke: Vec<(String, String)> = {
            let mut v = self.view.write();
            let mut woke = Vec::new();
            while let Some((u, id)) = v.wakes.first().cloned() {
                if u > now {
                    break;
                }
                v.wakes.pop_first();
                if let Some(e) = v.episodes.get(&id).filter(|e| e.resolved_at.is_none()) {
                    woke.push((id, e.alert.customer_id.clone()));
                }
            }
            woke
        };
        for (id, _) in &woke {
            self.notify("reopened", id);
        }
        woke
    }
}

#[cfg(test)]
mod tests;
