//! The churn rules, their per-tier limits, and the conditions they test.
//!
//! A rule's condition is a pure function of one customer's state and a
//! time; the engine turns condition changes into firing/resolved alerts.

use super::alert::Trigger;
use super::customer::{Customer, Windows};
use super::event::{DAY_MS, Ts};
use super::risk::{self, RiskSettings};
use super::settings::{AdaptiveRecency, RuleSettings};
use super::tier::Tier;

/// Which rule an alert belongs to (closed set: metric labels come from it).
/// Config names rules as [`Rule::as_str`] spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// No purchase for too long.
    PurchaseRecency,
    /// No rep contact for too long.
    ContactGap,
    /// The account rep departed, or reps keep changing.
    RepTurnover,
    /// The churn-risk score reached the tier's threshold.
    Risk,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 4] = [
        Rule::PurchaseRecency,
        Rule::ContactGap,
        Rule::RepTurnover,
        Rule::Risk,
    ];

    /// The config and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PurchaseRecency => "purchase_recency",
            Rule::ContactGap => "contact_gap",
            Rule::RepTurnover => "rep_turnover",
            Rule::Risk => "risk",
        }
    }
}

/// Why `rep_turnover` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The account rep departed.
    Departed,
    /// Too many rep changes in the handoff window.
    Handoffs,
}

impl Cause {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Departed => "departed",
            Cause::Handoffs => "handoffs",
        }
    }
}

/// One independently firing condition: a rule, with its cause where it has
/// several. Each has its own bit in [`Customer::firing`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Check {
    /// `purchase_recency`.
    PurchaseRecency,
    /// `contact_gap`.
    ContactGap,
    /// `rep_turnover`, cause `departed`.
    Departed,
    /// `rep_turnover`, cause `handoffs`.
    Handoffs,
    /// `risk`.
    Risk,
}

impl Check {
    /// Every check.
    pub const ALL: [Check; 5] = [
        Check::PurchaseRecency,
        Check::ContactGap,
        Check::Departed,
        Check::Handoffs,
        Check::Risk,
    ];

    /// Its bit in [`Customer::firing`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The rule it belongs to.
    pub fn rule(self) -> Rule {
        match self {
            Check::PurchaseRecency => Rule::PurchaseRecency,
            Check::ContactGap => Rule::ContactGap,
            Check::Departed | Check::Handoffs => Rule::RepTurnover,
            Check::Risk => Rule::Risk,
        }
    }

    /// The cause, for rules with several.
    pub fn cause(self) -> Option<Cause> {
        match self {
            Check::Departed => Some(Cause::Departed),
            Check::Handoffs => Some(Cause::Handoffs),
            _ => None,
        }
    }

    /// Absence rules fire from deadlines; the others from events.
    pub fn is_absence(self) -> bool {
        matches!(self, Check::PurchaseRecency | Check::ContactGap)
    }
}

/// The rule set compiled for the hot path: limits in milliseconds, tier
/// membership as a bitmask.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    recency: [Option<i64>; 3],
    contact: [Option<i64>; 3],
    departed_tiers: u8,
    handoff_tiers: u8,
    /// Handoffs that fire `rep_turnover` (cause `handoffs`).
    pub handoff_threshold: u32,
    adaptive: Option<Adaptive>,
    risk_thresholds: [Option<u8>; 3],
    risk_hysteresis: u8,
    /// The score's settings.
    pub risk: RiskSettings,
}

/// [`AdaptiveRecency`] in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Adaptive {
    factor: f64,
    min_purchase_days: u32,
    min: [i64; 3],
    max: [i64; 3],
}

/// Which `purchase_recency` limit applies to a customer, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecencyLimit {
    /// The tier's fixed limit (mode `fixed`).
    Fixed(i64),
    /// Adaptive: `factor` × the customer's usual gap, clamped.
    Adaptive {
        /// The limit, ms.
        limit_ms: i64,
        /// The customer's mean gap between purchase days, ms.
        gap_ms: i64,
        /// The configured multiple.
        factor: f64,
    },
    /// Adaptive mode, but too few purchase days: the fixed limit.
    Fallback {
        /// The fixed limit, ms.
        limit_ms: i64,
        /// Purchase days so far.
        purchase_days: u32,
        /// Purchase days the adaptive limit needs.
        needed: u32,
    },
}

impl RecencyLimit {
    /// The limit in milliseconds.
    pub fn ms(self) -> i64 {
        match self {
            RecencyLimit::Fixed(ms) => ms,
            RecencyLimit::Adaptive { limit_ms, .. } | RecencyLimit::Fallback { limit_ms, .. } => {
                limit_ms
            }
        }
    }
}

impl Limits {
    /// Compiles the rule settings.
    pub fn new(rules: &RuleSettings, risk: &RiskSettings) -> Self {
        let ms = |l: &[Option<std::time::Duration>; 3]| l.map(|d| d.map(|d| d.as_millis() as i64));
        let mask = |on: bool| {
            if on {
                rules
                    .rep_turnover_tiers
                    .iter()
                    .fold(0u8, |m, t| m | 1 << t.index())
            } else {
                0
            }
        };
        Self {
            recency: ms(&rules.purchase_recency),
            contact: ms(&rules.contact_gap),
            departed_tiers: mask(rules.departed),
            handoff_tiers: mask(rules.handoffs),
            handoff_threshold: rules.handoff_threshold,
            adaptive: rules.adaptive_recency.map(|a: AdaptiveRecency| {
                let ms = |d: [std::time::Duration; 3]| d.map(|d| d.as_millis() as i64);
                Adaptive {
                    factor: a.factor,
                    min_purchase_days: a.min_purchase_days,
                    min: ms(a.min),
                    max: ms(a.max),
                }
            }),
            risk_thresholds: rules.risk,
            risk_hysteresis: rules.risk_hysteresis,
            risk: *risk,
        }
    }

    /// The `risk` rule's threshold for `tier`, if it applies.
    pub fn risk_threshold(&self, tier: Tier) -> Option<u8> {
        self.risk_thresholds[tier.index()]
    }

    /// The `purchase_recency` limit that applies to `c`, if the tier has the
    /// rule on: adaptive mode measures the customer against its own mean
    /// gap between purchase days once it has enough of them.
    pub fn recency_limit(&self, c: &Customer) -> Option<RecencyLimit> {
        let fixed = self.recency[c.tier().index()]?;
        let Some(a) = self.adaptive else {
            return Some(RecencyLimit::Fixed(fixed));
        };
        let (first, last) = (c.first_purchase(), c.last_purchase.get());
        match first.zip(last) {
            Some((f, l)) if u32::from(c.purchase_days) >= a.min_purchase_days.max(2) => {
                let gap_ms = (l.0 - f.0) / i64::from(c.purchase_days - 1);
                let i = c.tier().index();
                let limit_ms = ((gap_ms as f64 * a.factor) as i64).clamp(a.min[i], a.max[i]);
                Some(RecencyLimit::Adaptive {
                    limit_ms,
                    gap_ms,
                    factor: a.factor,
                })
            }
            _ => Some(RecencyLimit::Fallback {
                limit_ms: fixed,
                purchase_days: u32::from(c.purchase_days),
                needed: a.min_purchase_days,
            }),
        }
    }

    /// The absence limit of `check` for `tier`, in milliseconds.
    pub fn limit_ms(&self, check: Check, tier: Tier) -> Option<i64> {
        match check {
            Check::PurchaseRecency => self.recency[tier.index()],
            Check::ContactGap => self.contact[tier.index()],
            Check::Departed | Check::Handoffs | Check::Risk => None,
        }
    }

    /// Whether `check` applies to customers of `tier`.
    pub fn applies(&self, check: Check, tier: Tier) -> bool {
        match check {
            Check::Departed => self.departed_tiers & (1 << tier.index()) != 0,
            Check::Handoffs => self.handoff_tiers & (1 << tier.index()) != 0,
            Check::Risk => self.risk_threshold(tier).is_some(),
            absence => self.limit_ms(absence, tier).is_some(),
        }
    }

    /// When an absence check's condition starts to hold: its base time plus
    /// the tier's limit. The condition holds at `t` iff `t > due`.
    pub fn due(&self, check: Check, c: &Customer) -> Option<Ts> {
        let (base, limit) = match check {
            // A customer who never bought is measured from first sight.
            Check::PurchaseRecency => (
                c.last_purchase.get().unwrap_or(c.first_seen.get()),
                self.recency_limit(c)?.ms(),
            ),
            Check::ContactGap => (
                c.last_contact.get().unwrap_or(c.first_seen.get()),
                self.limit_ms(check, c.tier())?,
            ),
            _ => return None,
        };
        Some(base.saturating_add(limit))
    }

    /// Whether the `risk` rule holds for `c` at `t`: the score at or over
    /// the tier's threshold to fire, and not yet `risk_hysteresis` below it
    /// to stay firing (so a score hovering at the threshold does not flap).
    pub fn risk_holds(&self, c: &Customer, t: Ts, windows: &Windows, rep_departed: bool) -> bool {
        let Some(threshold) = self.risk_threshold(c.tier()) else {
            return false;
        };
        let score = risk::score(c, t, &self.risk_context(windows, rep_departed));
        if c.is_firing(Check::Risk.bit()) {
            score.saturating_add(self.risk_hysteresis) >= threshold
        } else {
            score >= threshold
        }
    }

    /// The score's view of the rules.
    pub fn risk_context<'a>(
        &'a self,
        windows: &'a Windows,
        rep_departed: bool,
    ) -> risk::Context<'a> {
        risk::Context {
            limits: self,
            windows,
            rep_departed,
        }
    }

    /// When the score of `c`, without further events, first reaches the
    /// tier's `risk` threshold after `t`: found by bisection, to within a
    /// minute and up to ten years ahead. The score only rises with
    /// silence, except as handoffs leave their window, which makes this
    /// early at worst (the timer then re-checks and reschedules).
    pub fn risk_due(
        &self,
        c: &Customer,
        t: Ts,
        windows: &Windows,
        rep_departed: bool,
    ) -> Option<Ts> {
        let threshold = self.risk_threshold(c.tier())?;
        let cx = self.risk_context(windows, rep_departed);
        let over = |at: i64| risk::score(c, Ts(at), &cx) >= threshold;
        let (mut lo, mut hi) = (t.0, t.0.saturating_add(3650 * DAY_MS));
        if !over(hi) {
            return None;
        }
        while hi - lo > 60_000 {
            let mid = lo + (hi - lo) / 2;
            if over(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(Ts(hi))
    }

    /// The absence limit of `check` for `tier`, in days.
    pub fn limit_days(&self, check: Check, tier: Tier) -> Option<f64> {
        self.limit_ms(check, tier)
            .map(|ms| ms as f64 / DAY_MS as f64)
    }
}

/// The point in time at which a customer's checks are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Catching up a customer's own deadlines before applying an event.
    Before,
    /// A timer popped: the watermark is strictly past `t`.
    Timer,
    /// After applying an event about the customer.
    Event,
    /// After a roster event about the customer's rep.
    Roster,
    /// After a tier recompute changed the customer's tier.
    Recompute,
    /// After the rule limits were reloaded.
    Reconfigured,
}

impl Point {
    /// Whether the watermark is strictly past the point's time, so a
    /// deadline equal to it has passed.
    fn inclusive(self) -> bool {
        matches!(self, Point::Timer | Point::Recompute | Point::Reconfigured)
    }

    /// Whether a condition found true here may start an episode. Handoffs
    /// start only on events or tier changes, never on a catch-up pass.
    fn may_start(self, check: Check) -> bool {
        !(check == Check::Handoffs && matches!(self, Point::Before | Point::Timer))
    }
}

/// What a check's condition says about a customer at a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    /// The condition holds.
    pub holds: bool,
    /// When it became true or false (a deadline, else the point's time).
    pub at: Ts,
    /// What made it so.
    pub trigger: Trigger,
    /// A new episode may start here (see [`Point::may_start`]).
    pub may_start: bool,
}

/// What one check's condition says about customer `c` at time `t`. Pure:
/// `rep_departed` is whether its account rep has departed (looked up only
/// when a rule of its tier needs it; false otherwise). Inlined: it is
/// the hot path's inner loop (four checks per event).
#[inline]
pub fn evaluate(
    check: Check,
    c: &Customer,
    t: Ts,
    point: Point,
    limits: &Limits,
    windows: &Windows,
    rep_departed: bool,
) -> Evaluation {
    let (holds, at, trigger) = match check {
        Check::PurchaseRecency | Check::ContactGap => {
            let due = limits.due(check, c);
            let holds = due.is_some_and(|d| d < t || (point.inclusive() && d == t));
            match (point, due) {
                (Point::Before | Point::Timer, Some(d)) if holds => (true, d, Trigger::Deadline),
                (Point::Event | Point::Roster, _) if !holds => (false, t, Trigger::Event),
                (Point::Reconfigured, _) => (holds, t, Trigger::LimitChange),
                _ => (holds, t, Trigger::TierChange),
            }
        }
        Check::Departed => {
            let holds = limits.applies(check, c.tier()) && rep_departed;
            let trigger = match point {
                Point::Roster => Trigger::Roster,
                Point::Recompute => Trigger::TierChange,
                Point::Reconfigured => Trigger::LimitChange,
                _ => Trigger::Event,
            };
            (holds, t, trigger)
        }
        Check::Risk => {
            let holds = limits.risk_holds(c, t, windows, rep_departed);
            let trigger = match point {
                Point::Before | Point::Timer => Trigger::Deadline,
                Point::Roster => Trigger::Roster,
                Point::Recompute => Trigger::TierChange,
                Point::Reconfigured => Trigger::LimitChange,
                Point::Event => Trigger::Event,
            };
            (holds, t, trigger)
        }
        Check::Handoffs => {
            let count = c.handoffs.sum_at(windows.handoffs.index(t.0));
            let holds = limits.applies(check, c.tier()) && count >= limits.handoff_threshold as f64;
            let trigger = match point {
                Point::Recompute => Trigger::TierChange,
                Point::Reconfigured => Trigger::LimitChange,
                Point::Before | Point::Timer => Trigger::WindowSlide,
                _ => Trigger::Event,
            };
            (holds, t, trigger)
        }
    };
    Evaluation {
        holds,
        at,
        trigger,
        may_start: point.may_start(check),
    }
}
