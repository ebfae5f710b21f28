//! The plain data the engine runs on.
//!
//! `config.rs` builds it from the validated config file; the engine never
//! sees the file's shape, serde attributes or defaults, so the dependency
//! points one way (config → engine) and tests can build settings directly.

use std::time::Duration;

use super::money::Money;
use super::risk::RiskSettings;
use super::segment::Segmentation;
use super::tier::Tier;

/// Everything the engine needs to know, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How far the event-time watermark trails the largest `ts` seen.
    pub allowed_lateness: Duration,
    /// Events further ahead of the engine's reference time are rejected.
    pub max_future_skew: Duration,
    /// Largest accepted absolute purchase amount.
    pub max_amount: f64,
    /// Largest accepted message in bytes.
    pub max_event_bytes: usize,
    /// Open tickets kept per customer (the oldest beyond it is forgotten).
    pub max_open_tickets: u16,
    /// Idle customers without spend are forgotten after this long (off: None).
    pub forget_after: Option<Duration>,
    /// Redeliveries of an `event_id` within this much event time are
    /// skipped; zero: off. Whole hours, at most 32767.
    pub dedup_window: Duration,
    /// Dynamic ABC tiering.
    pub tiers: TierSettings,
    /// Trailing windows of the rolling counters.
    pub windows: WindowSettings,
    /// Rule limits per tier (the global `[rules]`; each segment's own, with
    /// its overrides, are in `segments`).
    pub rules: RuleSettings,
    /// The segments, their rules and the key accounts.
    pub segments: Segmentation,
    /// The churn-risk score.
    pub risk: RiskSettings,
    /// The base currency and conversion rates.
    pub money: Money,
}

/// Tier shares and the spend window that ranks customers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierSettings {
    /// Share of ranked customers in tier A, in percent.
    pub a_percent: f64,
    /// Share in tier B on top of A's, in percent.
    pub b_percent: f64,
    /// Trailing window of spend (monetary).
    pub window: Duration,
    /// Engine time between two threshold recomputes.
    pub recompute_interval: Duration,
    /// Under the wall clock, the share (0..1) by which purchases or ranked
    /// customers may move before an early recompute; 0: never early.
    pub recompute_change: f64,
}

/// Windows of the frequency and handoff counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSettings {
    /// Window of `frequency` (the alert field `frequency_90d` counts this
    /// window, whatever its length).
    pub frequency: Duration,
    /// Window of rep handoffs (the alert field `rep_handoffs_180d`).
    pub handoffs: Duration,
}

/// Every rule's limits. Per-tier arrays are indexed by [`Tier::index`];
/// `None` turns the rule off for that tier.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    /// Longest allowed time since the last purchase.
    pub purchase_recency: [Option<Duration>; 3],
    /// Longest allowed time since the last rep contact (or first seen).
    pub contact_gap: [Option<Duration>; 3],
    /// Tiers `rep_turnover` applies to.
    pub rep_turnover_tiers: Vec<Tier>,
    /// Whether a departed account rep fires `rep_turnover`.
    pub departed: bool,
    /// Whether frequent handoffs fire `rep_turnover`.
    pub handoffs: bool,
    /// Handoffs inside the handoff window that fire.
    pub handoff_threshold: u32,
    /// `purchase_recency` measured against each customer's own rhythm
    /// (`mode = "adaptive"`); `None`: the fixed limits alone.
    pub adaptive_recency: Option<AdaptiveRecency>,
    /// Risk score at which the `risk` rule fires, per tier (`None`: off).
    pub risk: [Option<u8>; 3],
    /// A firing `risk` alert resolves once the score is this far below
    /// the tier's threshold.
    pub risk_hysteresis: u8,
}

/// Adaptive `purchase_recency`: the limit is `factor` times the customer's
/// mean gap between purchase days, clamped per tier; customers with fewer
/// than `min_purchase_days` keep the fixed limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveRecency {
    /// Multiple of the usual gap.
    pub factor: f64,
    /// Purchase days needed before the customer's own gap is trusted.
    pub min_purchase_days: u32,
    /// Lowest limit per tier.
    pub min: [Duration; 3],
    /// Highest limit per tier.
    pub max: [Duration; 3],
}
