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

pub mod feed;
pub mod instances;
pub mod lifecycle;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::engine::event::Ts;
pub use lifecycle::{Action, CloseReason, Lifecycle, Position, Refused, State};

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

/// Filters of an inbox listing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Tier.
    pub tier: Option<String>,
    /// Rule.
    pub rule: Option<String>,
    /// Account rep.
    pub rep: Option<String>,
    /// Lifecycle state (`open`, `acknowledged`, `snoozed`, `closed`).
    pub state: Option<State>,
    /// Only what needs work: open or acknowledged (not snoozed, not
    /// closed); the inbox page's default view.
    #[serde(default)]
    pub needs_work: bool,
    /// Assigned to this person.
    pub assigned_to: Option<String>,
    /// `risk` (default: highest first), `tier` (A first) or `age` (oldest first).
    pub sort: Option<Sort>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Position to continue from (the previous page's `next`).
    pub cursor: Option<String>,
}

/// A `cursor` this inbox did not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API gave")]
pub struct BadCursor;

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    /// Highest risk first.
    #[default]
    Risk,
    /// Tier A first, then by risk.
    Tier,
    /// Longest firing first.
    Age,
}

/// A firing alert with its lifecycle, as listed.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// The episode.
    #[serde(flatten)]
    pub episode: Episode,
    /// Its state now.
    pub state: State,
    /// Its lifecycle record (none: nobody acted yet).
    pub lifecycle: Option<Lifecycle>,
}

/// A page of the inbox.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The items.
    pub alerts: Vec<Item>,
    /// Pass as `cursor` for the next page; none on the last.
    pub next: Option<String>,
    /// Firing alerts per tier and per rule (before paging, after filters).
    pub counts: Counts,
}

/// Counts at the top of the inbox.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Per tier.
    pub tier: BTreeMap<String, u64>,
    /// Per rule.
    pub rule: BTreeMap<String, u64>,
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
    /// with the alert's customer, rule, tier and episode (so every record
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

    /// Firing alerts that pass `f`, sorted and paged.
    pub fn list(&self, f: &Filter, now: Ts) -> Result<Page, BadCursor> {
        let after = match f.cursor.as_deref() {
            None => None,
            Some(c) => Some(SortKey::parse(c).ok_or(BadCursor)?),
        };
        let sort = f.sort.unwrap_or_default();
        let v = self.view.read();
        let mut counts = Counts::default();
        let mut items: Vec<(SortKey, Item)> = v
            .episodes
            .values()
            .filter(|e| e.resolved_at.is_none())
            .filter_map(|e| {
                let lifecycle = v.lifecycles.get(&e.alert.alert_id).cloned();
                let state = Lifecycle::state_of(lifecycle.as_ref(), true, now);
                let a = &e.alert;
                let keep = f.tier.as_ref().is_none_or(|t| *t == a.tier)
                    && f.rule.as_ref().is_none_or(|r| *r == a.rule)
                    && f.rep.as_ref().is_none_or(|r| Some(r.as_str()) == e.rep())
                    && f.state.is_none_or(|s| s == state)
                    && (!f.needs_work || matches!(state, State::Open | State::Acknowledged))
                    && f.assigned_to.as_ref().is_none_or(|p| {
                        lifecycle
                            .as_ref()
                            .and_then(|l| l.assigned_to.as_deref())
                            .is_some_and(|a| same_person(a, p))
                    });
                keep.then(|| {
                    *counts.tier.entry(a.tier.clone()).or_default() += 1;
                    *counts.rule.entry(a.rule.clone()).or_default() += 1;
                    let item = Item {
                        episode: e.clone(),
                        state,
                        lifecycle,
                    };
                    (SortKey::of(sort, &item), item)
                })
            })
            .collect();
        drop(v);
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let start = after.map_or(0, |c| items.partition_point(|(k, _)| *k <= c));
        let limit = f.limit.unwrap_or(100).clamp(1, 1000);
        let rest = items.len().saturating_sub(start);
        let page: Vec<(SortKey, Item)> = items.into_iter().skip(start).take(limit).collect();
        let next = (rest > limit)
            .then(|| page.last().map(|(k, _)| k.render()))
            .flatten();
        Ok(Page {
            alerts: page.into_iter().map(|(_, i)| i).collect(),
            next,
            counts,
        })
    }
}

/// Whether two assignee names are one person's: compared trimmed and
/// case-folded, so "Anna " is "anna".
pub fn same_person(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// The overview's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overview {
    /// Open (firing, not closed) alerts per (tier, rule).
    pub open: BTreeMap<(String, String), u64>,
    /// Open alerts per age band: under a day, a week, a month, older.
    pub ages: [u64; 4],
    /// Closed alerts per rule: (all, of them false alarms).
    pub closed: BTreeMap<String, (u64, u64)>,
}

impl Inbox {
    /// Open alerts by tier and rule and by age, and per rule the share
    /// closed as false alarm.
    pub fn overview(&self, now: Ts) -> Overview {
        let v = self.view.read();
        let mut o = Overview::default();
        for e in v.episodes.values() {
            let l = v.lifecycles.get(&e.alert.alert_id);
            if let Some(reason) = l.and_then(|l| l.closed_reason) {
                let c = o.closed.entry(e.alert.rule.clone()).or_default();
                c.0 += 1;
                c.1 += u64::from(reason == CloseReason::FalseAlarm);
                continue;
            }
            if e.resolved_at.is_some() {
                continue;
            }
            *o.open
                .entry((e.alert.tier.clone(), e.alert.rule.clone()))
                .or_default() += 1;
            let days = (now.0 - e.fired_at.0) / 86_400_000;
            o.ages[match days {
                d if d < 1 => 0,
                d if d < 7 => 1,
                d if d < 30 => 2,
                _ => 3,
            }] += 1;
        }
        o
    }

    /// Whether a customer's account rep departed, as far as the group's
    /// alerts tell (a firing `rep_turnover` of cause `departed`).
    pub fn rep_departed(&self, customer_id: &str) -> bool {
        let v = self.view.read();
        v.by_customer.get(customer_id).is_some_and(|ids| {
            ids.keys().any(|(_, id)| {
                v.episodes.get(id).is_some_and(|e| {
                    e.resolved_at.is_none()
                        && e.alert.rule == "rep_turnover"
                        && e.alert.cause.as_deref() == Some("departed")
                })
            })
        })
    }
}

/// A total order for listings: (primary, secondary, alert id), all ascending.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey(i64, i64, String);

impl SortKey {
    fn of(sort: Sort, item: &Item) -> Self {
        let e = &item.episode;
        let risk = -(e.risk().unwrap_or(0) as i64);
        let tier = match e.alert.tier.as_str() {
            "A" => 0,
            "B" => 1,
            _ => 2,
        };
        let id = e.alert.alert_id.clone();
        match sort {
            Sort::Risk => SortKey(risk, e.fired_at.0, id),
            Sort::Tier => SortKey(tier, risk, id),
            Sort::Age => SortKey(e.fired_at.0, risk, id),
        }
    }

    fn render(&self) -> String {
        format!("{}.{}.{}", self.0, self.1, self.2)
    }

    fn parse(s: &str) -> Option<Self> {
        let mut p = s.splitn(3, '.');
        Some(SortKey(
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
            p.next()?.to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600_000;

    fn alert(id: &str, customer: &str, status: &str, tier: &str, at: i64, risk: u64) -> Published {
        Published {
            alert_id: id.into(),
            status: status.into(),
            rule: "purchase_recency".into(),
            cause: None,
            customer_id: customer.into(),
            tier: tier.into(),
            at: Ts(at),
            reason: "no purchase".into(),
            signals: serde_json::json!({"risk": risk, "account_rep": "r1"}),
        }
    }

    #[test]
    fn firing_alerts_are_listed_until_they_resolve_sorted_and_paged() {
        let inbox = Inbox::default();
        let mut live = inbox.subscribe();
        inbox.alert(alert("a", "c1", "firing", "B", T, 40));
        inbox.alert(alert("b", "c2", "firing", "A", T + 1, 90));
        inbox.alert(alert("c", "c3", "firing", "A", T + 2, 60));
        assert_eq!(live.try_recv().unwrap().kind, "firing");
        let ids = |p: &Page| {
            p.alerts
                .iter()
                .map(|i| i.episode.alert.alert_id.clone())
                .collect::<Vec<_>>()
        };
        let now = Ts(T + 10);
        assert_eq!(
            ids(&inbox.list(&Filter::default(), now).unwrap()),
            ["b", "c", "a"]
        );
        let by_age = Filter {
            sort: Some(Sort::Age),
            ..Filter::default()
        };
        assert_eq!(ids(&inbox.list(&by_age, now).unwrap()), ["a", "b", "c"]);
        let first = inbox
            .list(
                &Filter {
                    limit: Some(2),
                    ..Filter::default()
                },
                now,
            )
            .unwrap();
        assert_eq!(ids(&first), ["b", "c"]);
        assert_eq!(first.counts.tier.get("A"), Some(&2));
        let second = inbox
            .list(
                &Filter {
                    limit: Some(2),
                    cursor: first.next.clone(),
                    ..Filter::default()
                },
                now,
            )
            .unwrap();
        assert_eq!((ids(&second), second.next), (vec!["a".to_string()], None));
        inbox.alert(alert("b", "c2", "resolved", "A", T + 5, 10));
        inbox.alert(alert("b", "c2", "firing", "A", T + 1, 90));
        assert_eq!(
            ids(&inbox.list(&Filter::default(), now).unwrap()),
            ["c", "a"],
            "a replayed firing stays resolved"
        );
        assert_eq!(inbox.customer("c2", now).len(), 1);
    }

    #[test]
    fn lifecycles_filter_the_listing_and_snoozes_wake() {
        let inbox = Inbox::default();
        inbox.alert(alert("a", "c1", "firing", "A", T, 40));
        inbox.alert(alert("b", "c2", "firing", "A", T, 50));
        let mut l = inbox.lifecycle_of("a");
        l.apply(
            Action::Snooze {
                until: Ts(T + 100),
                reason: None,
            },
            "anna",
            Ts(T + 1),
        )
        .unwrap();
        assert!(inbox.lifecycle(l.clone(), 5));
        let mut older = Lifecycle::new("a");
        older
            .apply(Action::Ack { note: None }, "ben", Ts(T + 50))
            .unwrap();
        assert!(
            !inbox.lifecycle(older, 4),
            "a record at an earlier offset is ignored, whatever its times"
        );
        let open = Filter {
            state: Some(State::Open),
            ..Filter::default()
        };
        let listed = |now| inbox.list(&open, Ts(now)).unwrap().alerts.len();
        assert_eq!(listed(T + 50), 1, "snoozed is not open");
        assert_eq!(inbox.wake(Ts(T + 99)), []);
        assert_eq!(
            inbox.wake(Ts(T + 100)),
            [("a".to_string(), "c1".to_string())]
        );
        assert_eq!(listed(T + 100), 2, "open again once the snooze ran out");
        assert!(inbox.wake(Ts(T + 200)).is_empty(), "each snooze wakes once");
    }

    #[test]
    fn records_that_keep_the_episode_rebuild_it_without_the_alert_topic() {
        let holder = Inbox::default();
        holder.alert(alert("a", "c1", "firing", "A", T, 70));
        assert_eq!(
            holder.unkept(10, |_| true),
            ["a"],
            "the record must keep it"
        );
        assert!(
            holder.unkept(10, |c| c != "c1").is_empty(),
            "only its holder writes it"
        );
        let kept = holder.lifecycle_of("a").keeping();
        let json = serde_json::to_vec(&kept).unwrap();
        let kept: Lifecycle = serde_json::from_slice(&json).expect("the record reads back");
        assert!(holder.lifecycle(kept.clone(), 0));
        assert!(holder.unkept(10, |_| true).is_empty());

        let fresh = Inbox::default();
        assert!(fresh.lifecycle(kept, 0));
        let now = Ts(T + 10);
        let item = fresh.get("a", now).expect("rebuilt from the record alone");
        assert_eq!((item.state, item.episode.fired_at), (State::Open, Ts(T)));
        assert_eq!(fresh.customer("c1", now).len(), 1);
        assert_eq!(fresh.list(&Filter::default(), now).unwrap().alerts.len(), 1);

        holder.alert(alert("a", "c1", "resolved", "A", T + 5, 10));
        assert_eq!(holder.unkept(10, |_| true), ["a"], "the resolution too");
    }

    #[test]
    fn episodes_resolved_beyond_keep_are_dropped_firing_ones_stay() {
        let day = 86_400_000;
        let keep = std::time::Duration::from_secs(30 * 86_400);
        let inbox = Inbox::default();
        inbox.alert(alert("old", "c1", "firing", "A", T, 70));
        inbox.alert(alert("old", "c1", "resolved", "A", T + day, 10));
        assert!(inbox.lifecycle(inbox.lifecycle_of("old"), 3));
        inbox.alert(alert("recent", "c2", "firing", "A", T, 70));
        inbox.alert(alert("recent", "c2", "resolved", "A", T + 20 * day, 10));
        inbox.alert(alert("firing", "c3", "firing", "A", T, 70));
        assert!(
            inbox.sweep(keep).is_empty(),
            "nothing is older than keep yet"
        );
        inbox.alert(alert("new", "c4", "firing", "A", T + 32 * day, 70));
        assert_eq!(
            inbox.sweep(keep),
            [("old".to_string(), "c1".to_string())],
            "dropped, and its record is to be tombstoned"
        );
        let now = Ts(T + 32 * day);
        assert!(inbox.get("old", now).is_none());
        assert!(inbox.customer("c1", now).is_empty());
        assert!(inbox.get("recent", now).is_some());
        assert!(
            inbox.get("firing", now).is_some(),
            "a firing episode is kept however old"
        );
        assert_eq!(inbox.len(), 3);
        inbox.tombstone("recent", 9);
        assert!(inbox.get("recent", now).is_none(), "a tombstone forgets it");
    }
}
