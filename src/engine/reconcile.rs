//! Applying an evaluation: turns what each rule says about a customer
//! (see [`super::rule::evaluate`]) into firing / resolved alerts, keeps the
//! open episodes, and reschedules the customer's timer.

use super::Core;
use super::alert::{Alert, AlertId, Limit, Status, Trigger};
use super::customer::{Customer, KEY_BY_LIST, MaybeTs, Stamp};
use super::event::Ts;
use super::rep::Roster;
use super::risk;
use super::rule::{Check, Evaluation, Point, evaluate};
use super::store;
use parking_lot::RwLock;

/// What reconciling a customer needs besides the engine's own state. The
/// roster is locked only when a customer's rule needs it (a departure
/// check of a tier the rule covers, an alert's rep name), not per event.
pub(super) struct Scope<'a> {
    pub(super) roster: &'a RwLock<Roster>,
    pub(super) inner: &'a store::Inner,
    pub(super) out: &'a mut Vec<Alert>,
    /// Under the wall clock, the `ts` of the event being applied: an
    /// episode it starts is identified by when the events made the
    /// condition true, not by when this process noticed (a restart that
    /// re-applies the event gives the same id). `None` elsewhere.
    pub(super) since: Option<Ts>,
}

/// One change of a check's state, before it becomes an [`Alert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Transition {
    check: Check,
    status: Status,
    at: Ts,
    fired_at: Ts,
    trigger: Trigger,
}

/// The change an evaluation asks of a check that is (or is not) `firing`;
/// a resolution's `fired_at` is filled in from the open episode.
fn transition(check: Check, firing: bool, e: Evaluation, point: Point) -> Option<Transition> {
    if e.holds && !firing && e.may_start {
        Some(Transition {
            check,
            status: Status::Firing,
            at: e.at,
            fired_at: e.at,
            trigger: e.trigger,
        })
    } else if !e.holds && firing {
        Some(Transition {
            check,
            status: Status::Resolved,
            at: e.at,
            fired_at: e.at,
            // A tier or limit change ends an episode whatever else moved.
            trigger: match point {
                Point::Recompute => Trigger::TierChange,
                Point::Reconfigured => Trigger::LimitChange,
                _ => e.trigger,
            },
        })
    } else {
        None
    }
}

/// Whether the customer's account rep has departed (a roster read).
fn rep_departed(c: &Customer, roster: &RwLock<Roster>) -> bool {
    c.account_rep
        .get()
        .is_some_and(|r| roster.read().is_departed(r))
}

impl Core {
    /// Puts a customer in the tier the thresholds in force give it and
    /// reconciles its checks if that moved it.
    pub(super) fn retier(&mut self, c: &mut Customer, idx: u32, t: Ts, scope: &mut Scope<'_>) {
        let was = (c.segment(), c.tier());
        if self.settle(c, was) {
            self.reconcile(c, idx, t, Point::Recompute, scope);
        }
    }

    /// Brings a customer's firing checks in line with its state at `t`,
    /// emitting the transitions, then reschedules its timer.
    pub(super) fn reconcile(
        &mut self,
        c: &mut Customer,
        idx: u32,
        t: Ts,
        point: Point,
        scope: &mut Scope<'_>,
    ) {
        let roster = scope.roster;
        let s = &self.settings;
        let limits = self.limits(c);
        let departed = (limits.applies(Check::Departed, c.tier())
            || limits.applies(Check::Risk, c.tier()))
            && rep_departed(c, roster);
        for check in Check::ALL {
            let e = evaluate(check, c, t, point, limits, &s.windows, departed);
            let Some(mut tr) = transition(check, c.is_firing(check.bit()), e, point) else {
                continue;
            };
            match tr.status {
                Status::Firing => {
                    if tr.trigger != Trigger::Deadline
                        && let Some(since) = scope.since
                    {
                        tr.fired_at = since.min(tr.at);
                    }
                    // Under the wall clock a recompute runs when the process
                    // gets to it; an absence check it starts is identified
                    // by the deadline the data set (a customer that leaves
                    // and re-enters the tier without buying keeps that id).
                    if self.on_wall_clock()
                        && matches!(tr.trigger, Trigger::TierChange | Trigger::LimitChange)
                        && let Some(due) = limits.due(check, c)
                    {
                        tr.fired_at = due.min(tr.at);
                    }
                    c.set_firing(check.bit(), true);
                    scope.inner.episodes.insert((idx, check), tr.fired_at);
                }
                Status::Resolved => {
                    c.set_firing(check.bit(), false);
                    if let Some(fired_at) = scope.inner.episodes.remove(&(idx, check)) {
                        tr.fired_at = fired_at;
                    }
                }
            }
            scope.out.push(self.alert(c, tr, roster));
        }
        let departed = departed && limits.applies(Check::Risk, c.tier());
        // Lazy timers: an entry earlier than the true deadline is allowed
        // (it pops, re-checks and reschedules), so the queue is touched only
        // when a deadline moves earlier: most events move it later.
        // As the record holds it (a deadline past 48 bits comes early), so
        // the queue's key and `pending` stay the same time.
        let next = self.next_due(c, t, departed).map(|n| Stamp::new(n).get());
        let old = c.pending.get();
        let earlier = match (old, next) {
            (None, Some(_)) => true,
            (Some(o), Some(n)) => n < o,
            (_, None) => false,
        };
        if earlier {
            self.timers.reschedule(idx, old, next);
            c.pending = next.map_or(MaybeTs::NONE, MaybeTs::some);
        }
    }

    /// The earliest time at which one of the customer's checks can change
    /// without an event: absence deadlines of checks not firing, and the
    /// time a firing handoff count falls below the threshold.
    fn next_due(&self, c: &Customer, t: Ts, rep_departed: bool) -> Option<Ts> {
        let s = &self.settings;
        let limits = self.limits(c);
        let mut next: Option<Ts> = None;
        let mut consider = |d: Ts| next = Some(next.map_or(d, |n: Ts| n.min(d)));
        if !c.is_firing(Check::Risk.bit())
            && let Some(d) = limits.risk_due(c, t, &s.windows, rep_departed)
        {
            consider(d);
        }
        for check in [Check::PurchaseRecency, Check::ContactGap] {
            if !c.is_firing(check.bit())
                && let Some(d) = limits.due(check, c)
            {
                consider(d.max(t));
            }
        }
        if c.is_firing(Check::Handoffs.bit()) {
            let b = s.windows.handoffs;
            if let Some(e) = c
                .handoffs
                .falls_below(b.index(t.0), limits.handoff_threshold as f64)
            {
                consider(Ts(b.start(e)));
            }
        }
        next
    }

    fn alert(&self, c: &Customer, tr: Transition, roster: &RwLock<Roster>) -> Alert {
        let Transition {
            check,
            status,
            at,
            fired_at,
            trigger,
        } = tr;
        let s = &self.settings;
        let limits = self.limits(c);
        let w = &s.windows;
        let limit = match check {
            Check::PurchaseRecency => match limits.recency_limit(c) {
                Some(l) => Limit::Recency(l),
                None => Limit::Days(None),
            },
            Check::ContactGap => Limit::Days(limits.limit_days(check, c.tier())),
            Check::Risk => Limit::Risk(limits.risk_threshold(c.tier())),
            Check::Handoffs => Limit::Handoffs {
                threshold: limits.handoff_threshold,
                window_days: s.handoff_window_days,
            },
            Check::Departed => Limit::None,
        };
        Alert {
            alert_id: AlertId::new(&c.id, check, fired_at),
            status,
            check,
            customer_id: c.id.clone(),
            tier: c.tier(),
            at,
            trigger,
            limit,
            signals: c.signals(
                at,
                w,
                c.account_rep
                    .get()
                    .and_then(|r| roster.read().name(r).cloned()),
                risk::score(c, at, &limits.risk_context(w, rep_departed(c, roster))),
            ),
            segment: self.segments.names()[usize::from(c.segment())].clone(),
            key_account: c.is_key_account(),
            partition: c.partition,
        }
    }
}

/// Reloaded limits (`run`).
impl super::Engine {
    /// Replaces every segment's rule limits, the risk score's settings and
    /// the listed key accounts (a reload; the segments themselves stay as
    /// they are) and re-evaluates every customer under them at the current
    /// engine time: episodes the new limits end resolve (trigger
    /// `LimitChange`), conditions they make true fire, timers move to the
    /// new deadlines, customers the list pins or unpins change tier. Before
    /// any event there is nothing to re-evaluate.
    pub fn set_limits(
        &mut self,
        segments: &super::segment::Segmentation,
        risk: &super::risk::RiskSettings,
        out: &mut Vec<Alert>,
    ) {
        let core = &mut self.core;
        core.limits = super::limits_of(segments, risk);
        core.segments.set_key_accounts(&segments.key_accounts);
        let inner = self.store.inner();
        let mut pinned = false;
        inner.customers.for_each_mut(|idx, c| {
            let listed = core.segments.listed(&c.id);
            let was = c.key_flags();
            c.set_key_flags((was & !KEY_BY_LIST) | if listed { KEY_BY_LIST } else { 0 });
            if c.key_flags() != was {
                core.rank(idx, c);
                let was = (c.segment(), c.tier());
                core.settle(c, was);
                pinned = true;
            }
        });
        core.dirty |= pinned;
        let Some(t) = core.watermark.current() else {
            return;
        };
        let scope = &mut Scope {
            roster: &inner.roster,
            inner,
            out,
            since: None,
        };
        inner
            .customers
            .for_each_mut(|idx, c| core.reconcile(c, idx, t, Point::Reconfigured, scope));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(holds: bool, may_start: bool) -> Evaluation {
        Evaluation {
            holds,
            at: Ts(5),
            trigger: Trigger::Event,
            may_start,
        }
    }

    #[test]
    fn transitions_fire_resolve_or_leave_alone() {
        let c = Check::ContactGap;
        let fired = transition(c, false, eval(true, true), Point::Event).unwrap();
        assert_eq!(
            (fired.status, fired.at, fired.trigger),
            (Status::Firing, Ts(5), Trigger::Event)
        );
        assert_eq!(
            transition(c, true, eval(true, true), Point::Event),
            None,
            "already firing"
        );
        assert_eq!(
            transition(c, false, eval(false, true), Point::Event),
            None,
            "nothing to resolve"
        );
        assert_eq!(
            transition(c, false, eval(true, false), Point::Timer),
            None,
            "may not start here"
        );
        let resolved = transition(c, true, eval(false, true), Point::Recompute).unwrap();
        assert_eq!(
            (resolved.status, resolved.trigger),
            (Status::Resolved, Trigger::TierChange),
            "a recompute resolves as a tier change"
        );
    }
}
