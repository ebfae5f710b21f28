//! `[engine]`, `[tiers]`, `[windows]`: time, input limits, tiering and the
//! rolling windows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::days;
use crate::engine::money::{Currency, Money};

/// How the engine treats time and what input it accepts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How far the event-time watermark trails the largest event `ts` seen.
    /// Events inside this lateness are held back and applied in `ts` order.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Events whose `ts` is further than this ahead of the newest time the
    /// engine knows are rejected (`future_timestamp`), so one bad clock cannot
    /// fire every customer's deadlines at once.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Largest accepted absolute purchase amount; larger is `bad_amount`.
    pub max_amount: f64,
    /// Largest accepted message, in bytes; larger is `too_large`.
    pub max_event_bytes: usize,
    /// Time source of `run`: `wall` fires deadlines from the wall clock (a
    /// silent customer is alerted with no events arriving); `event` makes
    /// the watermark the minimum over assigned partitions of the largest
    /// event time seen, so `run` equals `replay` over time-ordered input.
    pub clock: RunClock,
    /// Under the event clock, a partition that is caught up and has had no
    /// message for this long no longer holds the watermark back.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often `run` moves engine time (wall clock) or re-reads partition
    /// progress (event clock).
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
    /// Open tickets kept per customer; beyond it the oldest is forgotten
    /// (counted), so no customer's state grows without bound.
    pub max_open_tickets: u16,
    /// Events held for ordering (event time) before `run` pauses the input
    /// partitions that run ahead of engine time, until half have drained:
    /// back-pressure instead of unbounded memory when one partition lags.
    pub max_held_events: usize,
    /// Customers with no spend in `tiers.window`, nothing firing, no open
    /// ticket and no event for this long are forgotten (at the hourly
    /// recompute), so one-off contacts do not accumulate; off by default
    /// ("" or absent), since a forgotten customer is new when it returns.
    #[serde(with = "humantime_serde")]
    pub forget_after: Option<Duration>,
    /// An event whose `event_id` the same customer had within this much
    /// event time is a redelivery and skipped (counted, not dead-lettered);
    /// "0s" turns de-duplication off. Whole hours, at most 32767 h.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
}

/// Where `run` takes time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunClock {
    /// Deadlines fire from the wall clock (once caught up: until then
    /// `run` moves on event time, see `pipeline::step`).
    #[default]
    Wall,
    /// Event time across partitions: the watermark is the minimum over the
    /// assigned partitions ([`crate::engine::watermark::Clock::PartitionMinimum`]).
    Event,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::ZERO,
            max_future_skew: days(1),
            max_amount: 1e9,
            max_event_bytes: 64 * 1024,
            clock: RunClock::Wall,
            idle_timeout: Duration::from_secs(5),
            tick_interval: Duration::from_millis(200),
            max_open_tickets: 100,
            max_held_events: 1_000_000,
            forget_after: None,
            dedup_window: days(7),
        }
    }
}

/// Dynamic ABC tiers: shares of the customers with positive monetary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierConfig {
    /// Share of customers (by rank of monetary) in tier A, in percent.
    pub a_percent: f64,
    /// Share of customers in tier B, in percent, on top of A's.
    pub b_percent: f64,
    /// Trailing window of spend that ranks customers (monetary).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Engine time between two threshold recomputes.
    #[serde(with = "humantime_serde")]
    pub recompute_interval: Duration,
    /// Under the wall clock, thresholds are also recomputed as soon as the
    /// population has moved by more than this share since the last
    /// recompute, in percent: purchases applied since then, or the count of
    /// customers with spend. Engine time hardly moves while a backlog
    /// streams in, so the interval alone would rank on a stale population.
    /// Event clocks (replay, `run` with `clock = "event"`) rank on the
    /// interval only: their time moves with the data, and their alerts
    /// stay exactly those of earlier versions. 0 turns it off.
    pub recompute_change: f64,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            a_percent: 5.0,
            b_percent: 15.0,
            window: days(365),
            recompute_interval: Duration::from_secs(3600),
            recompute_change: 1.0,
        }
    }
}

/// `[money]`: the currency amounts are kept in, and the rate of every
/// other currency a purchase may name. Absent, purchases are taken as they
/// are while they all name one currency (or none); a purchase naming a
/// second one is refused (`unknown_currency`), never summed with the first.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MoneyConfig {
    /// ISO 4217 code monetary, tier thresholds and alerts are in.
    pub base_currency: Option<String>,
    /// Base units per unit of each other currency (`{ USD = 0.92 }`); a
    /// purchase in a currency with no rate is refused (`unknown_currency`).
    pub rates: BTreeMap<String, f64>,
}

impl MoneyConfig {
    /// The engine's form; call on a validated config.
    pub(super) fn money(&self) -> Money {
        Money {
            base: self.base_currency.as_deref().and_then(Currency::parse),
            rates: self
                .rates
                .iter()
                .filter_map(|(code, &rate)| Some((Currency::parse(code)?, rate)))
                .collect(),
        }
    }

    /// Codes are three letters, rates positive and finite, and rates need
    /// a base to convert into.
    pub(super) fn validate(&self) -> Result<(), String> {
        match &self.base_currency {
            None if !self.rates.is_empty() => {
                return Err("money.rates needs money.base_currency".into());
            }
            Some(b) if Currency::parse(b).is_none() => {
                return Err(format!(
                    "money.base_currency `{b}` is not a currency code (three letters, as in ISO 4217)"
                ));
            }
            _ => {}
        }
        for (code, rate) in &self.rates {
            if Currency::parse(code).is_none() {
                return Err(format!(
                    "money.rates: `{code}` is not a currency code (three letters, as in ISO 4217)"
                ));
            }
            if !(rate.is_finite() && *rate > 0.0) {
                return Err(format!("money.rates.{code} must be a positive number"));
            }
        }
        Ok(())
    }
}

/// Trailing windows of the frequency and rep-handoff counters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Window of `frequency` (purchases counted).
    #[serde(with = "humantime_serde")]
    pub frequency: Duration,
    /// Window of rep handoffs counted by `rep_turnover` (cause `handoffs`).
    #[serde(with = "humantime_serde")]
    pub handoffs: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            frequency: days(90),
            handoffs: days(180),
        }
    }
}
