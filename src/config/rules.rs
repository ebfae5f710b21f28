//! `[rules]` and `[risk]`: every rule's limits and the risk score.

use std::time::Duration;

use serde::Deserialize;

use super::days;
use crate::engine::bgnbd::Model;
use crate::engine::risk::Weights;
use crate::engine::tier::Tier;

/// A limit per tier; None: the rule is off for that tier.
///
/// In the file a table names only the tiers it changes (`A = "21d"`
/// leaves B and C at their defaults) and turns a tier off explicitly with
/// `"off"`, so a partial table never switches a default off silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TierLimits {
    /// Tier A's limit.
    pub a: Option<Duration>,
    /// Tier B's limit.
    pub b: Option<Duration>,
    /// Tier C's limit.
    pub c: Option<Duration>,
}

/// A tier table as written: each key absent, `"off"`, or a duration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierTable {
    #[serde(rename = "A", default, deserialize_with = "limit")]
    a: Option<Option<Duration>>,
    #[serde(rename = "B", default, deserialize_with = "limit")]
    b: Option<Option<Duration>>,
    #[serde(rename = "C", default, deserialize_with = "limit")]
    c: Option<Option<Duration>>,
}

/// `"off"` (None) or a duration such as `"30d"`.
fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Duration>>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(Some(None));
    }
    humantime::parse_duration(&text)
        .map(|v| Some(Some(v)))
        .map_err(|_| serde::de::Error::custom("expected `off` or a duration such as `30d`"))
}

impl TierTable {
    /// `defaults` with the tiers this table names replaced.
    fn over(self, defaults: TierLimits) -> TierLimits {
        TierLimits {
            a: self.a.unwrap_or(defaults.a),
            b: self.b.unwrap_or(defaults.b),
            c: self.c.unwrap_or(defaults.c),
        }
    }
}

/// A tier table over `defaults` (the field's own default).
fn tiers_over<'de, D: serde::Deserializer<'de>>(
    d: D,
    defaults: TierLimits,
) -> Result<TierLimits, D::Error> {
    TierTable::deserialize(d).map(|t| t.over(defaults))
}

fn contact_gap<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TierLimits, D::Error> {
    tiers_over(d, RulesConfig::default().contact_gap)
}

fn adaptive_min<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TierLimits, D::Error> {
    tiers_over(d, default_adaptive_min())
}

fn adaptive_max<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TierLimits, D::Error> {
    tiers_over(d, default_adaptive_max())
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

/// `[rules.purchase_recency]`: the fixed limit per tier (None: off) and,
/// in `adaptive` mode, the per-customer limit. Every key left out keeps
/// its default, a tier is turned off with `"off"` (see [`TierLimits`]).
/// The tier keys repeat [`TierLimits`]' because serde cannot flatten a
/// struct into one that denies unknown keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RecencyTable")]
pub struct PurchaseRecencyConfig {
    /// Tier A's fixed limit.
    pub a: Option<Duration>,
    /// Tier B's fixed limit.
    pub b: Option<Duration>,
    /// Tier C's fixed limit.
    pub c: Option<Duration>,
    /// `fixed` (default) or `adaptive`.
    pub mode: RecencyMode,
    /// Adaptive: the limit is this multiple of the customer's mean gap
    /// between purchase days.
    pub factor: f64,
    /// Adaptive: purchase days a customer needs before its own gap is
    /// trusted; until then the fixed limit applies.
    pub min_purchase_days: u32,
    /// Adaptive: the lowest limit per tier.
    pub min: TierLimits,
    /// Adaptive: the highest limit per tier.
    pub max: TierLimits,
}

/// `[rules.purchase_recency]` as written (see [`TierTable`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecencyTable {
    #[serde(rename = "A", default, deserialize_with = "limit")]
    a: Option<Option<Duration>>,
    #[serde(rename = "B", default, deserialize_with = "limit")]
    b: Option<Option<Duration>>,
    #[serde(rename = "C", default, deserialize_with = "limit")]
    c: Option<Option<Duration>>,
    #[serde(default)]
    mode: Option<RecencyMode>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    min_purchase_days: Option<u32>,
    #[serde(default, deserialize_with = "some_adaptive_min")]
    min: Option<TierLimits>,
    #[serde(default, deserialize_with = "some_adaptive_max")]
    max: Option<TierLimits>,
}

fn some_adaptive_min<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<TierLimits>, D::Error> {
    adaptive_min(d).map(Some)
}

fn some_adaptive_max<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<TierLimits>, D::Error> {
    adaptive_max(d).map(Some)
}

impl From<RecencyTable> for PurchaseRecencyConfig {
    fn from(t: RecencyTable) -> Self {
        let d = PurchaseRecencyConfig::default();
        let fixed = TierTable {
            a: t.a,
            b: t.b,
            c: t.c,
        }
        .over(d.fixed());
        Self {
            a: fixed.a,
            b: fixed.b,
            c: fixed.c,
            mode: t.mode.unwrap_or(d.mode),
            factor: t.factor.unwrap_or(d.factor),
            min_purchase_days: t.min_purchase_days.unwrap_or(d.min_purchase_days),
            min: t.min.unwrap_or(d.min),
            max: t.max.unwrap_or(d.max),
        }
    }
}

impl Default for PurchaseRecencyConfig {
    fn default() -> Self {
        Self {
            a: Some(days(30)),
            b: Some(days(45)),
            c: None,
            mode: RecencyMode::Fixed,
            factor: default_recency_factor(),
            min_purchase_days: default_min_purchase_days(),
            min: default_adaptive_min(),
            max: default_adaptive_max(),
        }
    }
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
    #[serde(deserialize_with = "contact_gap")]
    pub contact_gap: TierLimits,
    /// Rep departures and frequent rep changes.
    pub rep_turnover: RepTurnoverConfig,
    /// The churn-risk score over a per-tier threshold (off by default).
    pub risk: RiskRuleConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            purchase_recency: PurchaseRecencyConfig::default(),
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
