//! The churn rules, their per-tier limits, and the conditions they test.
//!
//! A rule's condition is a pure function of one customer's state and a
//! time; the engine turns condition changes into firing/resolved alerts.

use super::customer::Customer;
use super::event::{DAY_MS, Ts};
use super::settings::RuleSettings;
use super::tier::Tier;

/// Which rule an alert belongs to (closed set: metric labels come from it).
/// Config names rules as [`Rule::as_str`] spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// Compiles the rule settings.
    pub fn new(rules: &RuleSettings) -> Self {
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
