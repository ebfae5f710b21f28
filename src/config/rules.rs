//! `[rules]` and `[risk]`: every rule's limits and the risk score.

use std::time::Duration;

use serde::Deserialize;

use super::days;
use crate::engine::bgnbd::Model;
use crate::engine::risk::Weights;
use crate::engine::tier::Tier;

/// A limit per tier; a tier left out has the rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    /// Tier A's limit.
    #[serde(rename = "A", default, with = "humantime_serde")]
    pub a: Option<Duration>,
    /// Tier B's limit.
    #[serde(rename = "B", default, with = "humantime_serde")]
    pub b: Option<Duration>,
    /// Tier C's limit.
    #[serde(rename = "C", default, with = "humantime_serde")]
    pub c: Option<Duration>,
}

impl TierLimits {
    /// The limits indexed by [`Tier::index`].
    pub(super) fn by_tier(&self) -> [Option<Duration>; 3] {
        Tier::ALL.map(|t| match t {
            Tier::A => self.a,
            Tier::B => self.b,
            Tier::C => self.c,
        })
    }
}

/// `[rules.purchase_recency]`: the fixed limit per tier (a tier left out has
/// the rule off) and, in `adaptive` mode, the per-customer limit. The tier
/// keys repeat [`TierLimits`]' because serde cannot flatten a struct into
/// one that denies unknown keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRecencyConfig {
    /// Tier A's fixed limit.
    #[serde(rename = "A", default, with = "humantime_serde")]
    pub a: Option<Duration>,
    /// Tier B's fixed limit.
    #[serde(rename = "B", default, with = "humantime_serde")]
    pub b: Option<Duration>,
    /// Tier C's fixed limit.
    #[serde(rename = "C", default, with = "humantime_serde")]
    pub c: Option<Duration>,
    /// `fixed` (default) or `adaptive`.
    #[serde(default)]
    pub mode: RecencyMode,
    /// Adaptive: the limit is this multiple of the customer's mean gap
    /// between purchase days.
    #[serde(default = "default_recency_factor")]
    pub factor: f64,
    /// Adaptive: purchase days a customer needs before its own gap is
    /// trusted; until then the fixed limit applies.
    #[serde(default = "default_min_purchase_days")]
    pub min_purchase_days: u32,
    /// Adaptive: the lowest limit per tier.
    #[serde(default = "default_adaptive_min")]
    pub min: TierLimits,
    /// Adaptive: the highest limit per tier.
    #[serde(default = "default_adaptive_max")]
    pub max: TierLimits,
}

/// How `purchase_recency` sets a customer's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecencyMode {
    /// The tier's limit for everyone.
    #[default]
    Fixed,
    /// From the customer's own purchase rhythm.
    Adaptive,
}

fn default_recency_factor() -> f64 {
    3.0
}

fn default_min_purchase_days() -> u32 {
    4
}

fn default_adaptive_min() -> TierLimits {
    TierLimits {
        a: Some(days(14)),
        b: Some(days(21)),
        c: Some(days(30)),
    }
}

fn default_adaptive_max() -> TierLimits {
    TierLimits {
        a: Some(days(90)),
        b: Some(days(120)),
        c: Some(days(180)),
    }
}

impl PurchaseRecencyConfig {
    /// Sets the fixed limits of all three tiers.
    pub fn set_fixed(&mut self, limits: TierLimits) {
        (self.a, self.b, self.c) = (limits.a, limits.b, limits.c);
    }

    pub(super) fn fixed(&self) -> TierLimits {
        TierLimits {
            a: self.a,
            b: self.b,
            c: self.c,
        }
    }
}

/// `[rules.risk]`: the score at which a customer of each tier alerts (a
/// tier left out, as all are by default, has the rule off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskRuleConfig {
    /// Tier A's threshold, 0–100.
    #[serde(rename = "A", default)]
    pub a: Option<u8>,
    /// Tier B's threshold.
    #[serde(rename = "B", default)]
    pub b: Option<u8>,
    /// Tier C's threshold.
    #[serde(rename = "C", default)]
    pub c: Option<u8>,
    /// A firing alert resolves once the score is this many points below
    /// the threshold, so a score hovering at it does not flap.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: u8,
}

fn default_hysteresis() -> u8 {
    10
}

impl Default for RiskRuleConfig {
    fn default() -> Self {
        Self {
            a: None,
            b: None,
            c: None,
            hysteresis: default_hysteresis(),
        }
    }
}

/// `[risk]`: the churn-risk score (see `engine::risk`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// The `lapse` factor is the chance of no purchase within this.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Points per factor (at most 100 together).
    pub weights: RiskWeights,
    /// BG/NBD parameters in days, as `churnwatch fit` writes them. Left
    /// out: the built-in fit (CDNOW); `churnwatch evaluate` then fits them
    /// on the history up to its cut, as a deployment would with `fit`.
    pub model: Option<Model>,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            horizon: days(90),
            weights: RiskWeights::default(),
            model: None,
        }
    }
}

/// `[risk.weights]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskWeights {
    /// Purchase silence against the customer's rhythm (BG/NBD).
    pub lapse: u8,
    /// Rep contact gap against the tier's service level.
    pub contact: u8,
    /// Departed account rep or frequent handoffs.
    pub rep: u8,
    /// Open complaints.
    pub complaints: u8,
}

impl Default for RiskWeights {
    fn default() -> Self {
        let w = Weights::default();
        Self {
            lapse: w.lapse,
            contact: w.contact,
            rep: w.rep,
            complaints: w.complaints,
        }
    }
}

/// `[rules]`: every rule's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Longest allowed time since the last purchase, per tier.
    pub purchase_recency: PurchaseRecencyConfig,
    /// Longest allowed time since the last rep contact (or first seen), per tier.
    pub contact_gap: TierLimits,
    /// Rep departures and frequent rep changes.
    pub rep_turnover: RepTurnoverConfig,
    /// The churn-risk score over a per-tier threshold (off by default).
    pub risk: RiskRuleConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            purchase_recency: PurchaseRecencyConfig {
                a: Some(days(30)),
                b: Some(days(45)),
                c: None,
                mode: RecencyMode::Fixed,
                factor: default_recency_factor(),
                min_purchase_days: default_min_purchase_days(),
                min: default_adaptive_min(),
                max: default_adaptive_max(),
            },
            contact_gap: TierLimits {
                a: Some(days(14)),
                b: Some(days(30)),
                c: None,
            },
            rep_turnover: RepTurnoverConfig::default(),
            risk: RiskRuleConfig::default(),
        }
    }
}

/// `[rules.rep_turnover]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepTurnoverConfig {
    /// Tiers the rule applies to.
    pub tiers: Vec<Tier>,
    /// Alert when a customer's account rep departs.
    pub departed: bool,
    /// Alert when rep handoffs in the handoff window reach the threshold.
    pub handoffs: bool,
    /// Handoffs in `windows.handoffs` that make the `handoffs` cause fire.
    pub handoff_threshold: u32,
}

impl Default for RepTurnoverConfig {
    fn default() -> Self {
        Self {
            tiers: vec![Tier::A, Tier::B],
            departed: true,
            handoffs: true,
            handoff_threshold: 3,
        }
    }
}
