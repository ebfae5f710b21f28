//! Engine scenarios on simulated time: exact alerts per rule. The harness
//! lives here, the scenarios by concern in the submodules.

use proptest::prelude::*;

use super::alert::{Alert, Status};
use super::event::{DAY_MS, Ts};
use super::native::decode;
use super::rule::Check;
use super::settings::Settings;
use super::tier::Tier;
use super::watermark::Clock;
use super::{Applied, Engine};
use crate::config::Config;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn day(d: f64) -> Ts {
    Ts(T0 + (d * DAY_MS as f64) as i64)
}

struct Harness {
    engine: Engine,
    out: Vec<Alert>,
}

/// The shipped defaults as the engine takes them: the engine's tests
/// borrow them from the config here, in one place.
pub(super) fn shipped_settings() -> Settings {
    Config::default().engine_settings()
}

impl Harness {
    fn new(config: &Config) -> Self {
        Self::with_settings(&config.engine_settings())
    }

    fn with_settings(settings: &Settings) -> Self {
        Self {
            engine: Engine::new(settings, Clock::Event),
            out: Vec::new(),
        }
    }

    fn defaults() -> Self {
        Self::new(&Config::default())
    }

    fn push(&mut self, json: &str) -> Result<Applied, super::RejectReason> {
        let ev = decode(json.as_bytes(), self.engine.decode_limits())?;
        self.engine.apply(ev, 0, &mut self.out)
    }

    fn purchase(&mut self, customer: &str, at: Ts, amount: f64) {
        self.push(&format!(
            r#"{{"type":"purchase","ts":"{at}","customer_id":"{customer}","amount":{amount}}}"#
        ))
        .unwrap();
    }

    fn call(&mut self, customer: &str, rep: &str, at: Ts) {
        self.push(&format!(
            r#"{{"type":"call","ts":"{at}","customer_id":"{customer}","rep_id":"{rep}"}}"#
        ))
        .unwrap();
    }

    fn roster(&mut self, rep: &str, status: &str, at: Ts) {
        self.push(&format!(
            r#"{{"type":"rep","ts":"{at}","rep_id":"{rep}","status":"{status}"}}"#
        ))
        .unwrap();
    }

    fn until(&mut self, t: Ts) {
        self.engine.advance_to(t, &mut self.out);
    }

    /// Drains alerts as (customer, check, status, at) tuples.
    fn take(&mut self) -> Vec<(String, Check, Status, Ts)> {
        self.out
            .drain(..)
            .map(|a| (a.customer_id.to_string(), a.check, a.status, a.at))
            .collect()
    }

    fn tier(&self, customer: &str) -> Tier {
        self.engine.store().customer(customer).unwrap().tier()
    }
}

fn fired(c: &str, check: Check, at: Ts) -> (String, Check, Status, Ts) {
    (c.to_string(), check, Status::Firing, at)
}

fn resolved(c: &str, check: Check, at: Ts) -> (String, Check, Status, Ts) {
    (c.to_string(), check, Status::Resolved, at)
}

/// A config where one tier's limits apply to everyone, for rule tests that
/// should not depend on ranking.
fn flat(recency_days: u64, contact_days: u64) -> Config {
    let text = format!(
        "[rules.purchase_recency]\nA = \"{recency_days}d\"\nB = \"{recency_days}d\"\nC = \"{recency_days}d\"\n\
         [rules.contact_gap]\nA = \"{contact_days}d\"\nB = \"{contact_days}d\"\nC = \"{contact_days}d\"\n\
         [rules.rep_turnover]\ntiers = []\n"
    );
    Config::parse(&text).unwrap()
}

/// One customer alone is the top 5%, so tier A once a recompute ran.
fn lone_a_customer(h: &mut Harness, c: &str) {
    h.purchase(c, day(0.0), 1000.0);
    h.call(c, "r1", day(0.0));
    h.until(day(0.1));
    assert_eq!(h.tier(c), Tier::A);
    assert!(h.take().is_empty());
}

mod clock;
mod group_tiers;
mod model;
mod restore;
mod rules;
mod segments;
