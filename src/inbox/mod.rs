//! The retention inbox: every alert of the consumer group with its
//! lifecycle, materialised from the alert topic and the actions topic on
//! every instance (whichever partitions it owns), and the changes pushed to
//! live views.
//!
//! [`Inbox`] is the view; `feed` keeps it up to date from Kafka and writes
//! actions. The view holds each episode's latest transition and lifecycle,
//! for as long as the alert topic retains it.

pub mod feed;
pub mod instances;
pub mod lifecycle;

use std::collections::{BTreeMap, HashMap};

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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
}

impl Default for Inbox {
    fn default() -> Self {
        Self {
            view: RwLock::default(),
            changes: broadcast::channel(1024).0,
            caught_up: std::sync::atomic::AtomicBool::new(false),
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
            let customer = a.customer_id.clone();
            let e = v.episodes.entry(id.clone()).or_insert_with(|| Episode {
                fired_at: a.at,
                resolved_at: None,
                alert: a.clone(),
                firing_record: None,
            });
            if firing {
                e.fired_at = e.fired_at.min(a.at);
                e.firing_record = e.firing_record.or(position);
            } else {
                e.resolved_at = Some(a.at);
            }
            // A firing replayed after its resolution does not reopen it.
            if !firing || e.resolved_at.is_none() {
                e.alert = a;
            }
            let fired_at = e.fired_at;
            v.by_customer
                .entry(customer)
                .or_default()
                .insert((fired_at, id.clone()), ());
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
            match v.offsets.get(&id) {
                Some(held) if *held >= offset => false,
                _ => {
                    v.offsets.insert(id.clone(), offset);
                    v.lifecycles.insert(id.clone(), l);
                    true
                }
            }
        };
        if taken {
            self.notify("lifecycle", &id);
        }
        taken
    }

    /// The lifecycle record of an alert (a fresh one if nobody acted),
    /// with the alert's customer, rule and tier.
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

    /// Snoozes that ran out between `since` and `now` on alerts still
    /// firing: they are open again. Announced as `reopened` changes;
    /// returned with their customers, for the reopen records.
    pub fn wake(&self, since: Ts, now: Ts) -> Vec<(String, String)> {
        let woke: Vec<(String, String)> = {
            let v = self.view.read();
            v.lifecycles
                .values()
                .filter(|l| l.closed_reason.is_none())
                .filter(|l| l.snoozed_until.is_some_and(|u| u > since && u <= now))
                .filter_map(|l| {
                    let e = v.episodes.get(&l.alert_id)?;
                    e.resolved_at
                        .is_none()
                        .then(|| (l.alert_id.clone(), e.alert.customer_id.clone()))
                })
                .collect()
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
        assert_eq!(
            inbox.wake(Ts(T + 50), Ts(T + 100)),
            [("a".to_string(), "c1".to_string())]
        );
        assert_eq!(listed(T + 100), 2, "open again once the snooze ran out");
        assert!(inbox.wake(Ts(T + 100), Ts(T + 200)).is_empty());
    }
}
