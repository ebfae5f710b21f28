//! The churn rules, their per-tier limits, and the conditions they test.
//!
//! A rule's condition is a pure function of one customer's state and a
//! time; the engine turns condition changes into firing/resolved alerts.

use std::time::Duration;

use serde::Deserialize;

use super::customer::Customer;
use super::event::{DAY_MS, Ts};
use super::tier::Tier;
use crate::config::days;

/// Which rule an alert belongs to (closed set: metric labels come from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    PurchaseRecency,
    ContactGap,
    RepTurnover,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::PurchaseRecency, Rule::ContactGap, Rule::RepTurnover];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::PurchaseRecency => "purchase_recency",
            Rule::ContactGap => "contact_gap",
            Rule::RepTurnover => "rep_turnover",
        }
    }
}

/// Why `rep_turnover` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    Departed,
    Handoffs,
}

impl Cause {
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
    PurchaseRecency,
    ContactGap,
    Departed,
    Handoffs,
}

impl Check {
    pub const ALL: [Check; 4] = [
        Check::PurchaseRecency,
        Check::ContactGap,
        Check::Departed,
        Check::Handoffs,
    ];

    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn rule(self) -> Rule {
        match self {
            Check::PurchaseRecency => Rule::PurchaseRecency,
            Check::ContactGap => Rule::ContactGap,
            Check::Departed | Check::Handoffs => Rule::RepTurnover,
        }
    }

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

/// A limit per tier; a tier left out has the rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    #[serde(rename = "A", default, with = "humantime_serde")]
    pub a: Option<Duration>,
    #[serde(rename = "B", default, with = "humantime_serde")]
    pub b: Option<Duration>,
    #[serde(rename = "C", default, with = "humantime_serde")]
    pub c: Option<Duration>,
}

impl TierLimits {
    pub fn get(&self, tier: Tier) -> Option<Duration> {
        match tier {
            Tier::A => self.a,
            Tier::B => self.b,
            Tier::C => self.c,
        }
    }
}

/// `[rules]`: every rule's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleSet {
    /// Longest allowed time since the last purchase, per tier.
    pub purchase_recency: TierLimits,
    /// Longest allowed time since the last rep contact (or first seen), per tier.
    pub contact_gap: TierLimits,
    /// Rep departures and frequent rep changes.
    pub rep_turnover: RepTurnover,
}

impl Default for RuleSet {
    fn default() -> Self {
        Self {
            purchase_recency: TierLimits {
                a: Some(days(30)),
                b: Some(days(45)),
                c: None,
            },
            contact_gap: TierLimits {
                a: Some(days(14)),
                b: Some(days(30)),
                c: None,
            },
            rep_turnover: RepTurnover::default(),
        }
    }
}

/// `[rules.rep_turnover]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepTurnover {
    /// Tiers the rule applies to.
    pub tiers: Vec<Tier>,
    /// Alert when a customer's account rep departs.
    pub departed: bool,
    /// Alert when rep handoffs in the handoff window reach the threshold.
    pub handoffs: bool,
    /// Handoffs in `windows.handoffs` that make the `handoffs` cause fire.
    pub handoff_threshold: u32,
}

impl Default for RepTurnover {
    fn default() -> Self {
        Self {
            tiers: vec![Tier::A, Tier::B],
            departed: true,
            handoffs: true,
            handoff_threshold: 3,
        }
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
    pub handoff_threshold: u32,
}

impl Limits {
    pub fn new(rules: &RuleSet) -> Self {
        let ms = |l: &TierLimits| Tier::ALL.map(|t| l.get(t).map(|d| d.as_millis() as i64));
        let mask = |on: bool| {
            if on {
                rules
                    .rep_turnover
                    .tiers
                    .iter()
                    .fold(0u8, |m, t| m | 1 << t.index())
            } else {
                0
            }
        };
        Self {
            recency: ms(&rules.purchase_recency),
            contact: ms(&rules.contact_gap),
            departed_tiers: mask(rules.rep_turnover.departed),
            handoff_tiers: mask(rules.rep_turnover.handoffs),
            handoff_threshold: rules.rep_turnover.handoff_threshold,
        }
    }

    /// The absence limit of `check` for `tier`, in milliseconds.
    pub fn limit_ms(&self, check: Check, tier: Tier) -> Option<i64> {
        match check {
            Check::PurchaseRecency => self.recency[tier.index()],
            Check::ContactGap => self.contact[tier.index()],
            Check::Departed | Check::Handoffs => None,
        }
    }

    pub fn applies(&self, check: Check, tier: Tier) -> bool {
        match check {
            Check::Departed => self.departed_tiers & (1 << tier.index()) != 0,
            Check::Handoffs => self.handoff_tiers & (1 << tier.index()) != 0,
            absence => self.limit_ms(absence, tier).is_some(),
        }
    }

    /// When an absence check's condition starts to hold: its base time plus
    /// the tier's limit. The condition holds at `t` iff `t > due`.
    pub fn due(&self, check: Check, c: &Customer) -> Option<Ts> {
        let limit = self.limit_ms(check, c.tier)?;
        let base = match check {
            // A customer who never bought is measured from first sight.
            Check::PurchaseRecency => c.last_purchase.get().unwrap_or(c.first_seen),
            Check::ContactGap => c.last_contact.get().unwrap_or(c.first_seen),
            _ => return None,
        };
        Some(base.saturating_add(limit))
    }

    pub fn limit_days(&self, check: Check, tier: Tier) -> Option<f64> {
        self.limit_ms(check, tier)
            .map(|ms| ms as f64 / DAY_MS as f64)
    }
}
