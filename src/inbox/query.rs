//! Reading the inbox: listings with filters, sorting and cursors, one
//! alert or customer, and the overview's figures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CloseReason, Episode, Inbox, Lifecycle, State};
use crate::engine::event::Ts;

/// Filters of an inbox listing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Tier.
    pub tier: Option<String>,
    /// Segment.
    pub segment: Option<String>,
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
    /// Per segment.
    pub segment: BTreeMap<String, u64>,
    /// Per rule.
    pub rule: BTreeMap<String, u64>,
}

impl Inbox {
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
                    && f.segment.as_ref().is_none_or(|s| *s == a.segment)
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
                    *counts.segment.entry(a.segment.clone()).or_default() += 1;
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
    /// Open (firing, not closed) alerts per (segment, tier, rule).
    pub open: BTreeMap<(String, String, String), u64>,
    /// Open alerts per age band: under a day, a week, a month, older.
    pub ages: [u64; 4],
    /// Closed alerts per rule: (all, of them false alarms).
    pub closed: BTreeMap<String, (u64, u64)>,
}

impl Inbox {
    /// Open alerts by segment, tier and rule and by age, and per rule the share
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
                .entry((
                    e.alert.segment.clone(),
                    e.alert.tier.clone(),
                    e.alert.rule.clone(),
                ))
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
