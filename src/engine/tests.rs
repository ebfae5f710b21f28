//! Engine scenarios on simulated time: exact alerts per rule.

use proptest::prelude::*;

use super::alert::{Alert, Status};
use super::event::{DAY_MS, Ts};
use super::native::decode;
use super::rule::Check;
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

impl Harness {
    fn new(config: &Config) -> Self {
        Self {
            engine: Engine::new(&config.engine_settings(), Clock::Event),
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
        self.engine.store().customer(customer).unwrap().tier
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

#[test]
fn purchase_recency_fires_at_the_deadline_not_when_noticed() {
    let mut h = Harness::defaults();
    lone_a_customer(&mut h, "c1");
    h.call("c1", "r1", day(13.0));
    h.call("c1", "r1", day(26.0));
    h.until(day(45.0));
    assert_eq!(
        h.take(),
        vec![
            fired("c1", Check::PurchaseRecency, day(30.0)),
            fired("c1", Check::ContactGap, day(40.0)),
        ]
    );
}

#[test]
fn exactly_at_the_limit_does_not_fire() {
    let mut h = Harness::new(&flat(30, 1000));
    h.purchase("c1", day(0.0), 10.0);
    h.until(day(30.0));
    assert!(
        h.take().is_empty(),
        "watermark at the deadline is not past it"
    );
    h.purchase("c1", day(30.0), 10.0);
    h.until(day(59.0));
    assert!(
        h.take().is_empty(),
        "a purchase exactly at the limit resets recency"
    );
    h.until(day(60.0).saturating_add(1));
    assert_eq!(
        h.take(),
        vec![fired("c1", Check::PurchaseRecency, day(60.0))]
    );
}

#[test]
fn purchase_recency_resolves_at_the_next_purchase_with_the_same_id() {
    let mut h = Harness::new(&flat(30, 1000));
    h.purchase("c1", day(0.0), 10.0);
    h.purchase("c1", day(40.0), 10.0);
    let alerts: Vec<Alert> = h.out.drain(..).collect();
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        (alerts[0].status, alerts[0].at),
        (Status::Firing, day(30.0))
    );
    assert_eq!(
        (alerts[1].status, alerts[1].at),
        (Status::Resolved, day(40.0))
    );
    assert_eq!(alerts[0].alert_id, alerts[1].alert_id);
    assert_eq!(
        alerts[0].reason(),
        "no purchase for 30 days (tier A limit 30)"
    );
}

#[test]
fn refunds_do_not_reset_recency() {
    let mut h = Harness::new(&flat(30, 1000));
    h.purchase("c1", day(0.0), 10.0);
    h.purchase("c1", day(20.0), -5.0);
    h.until(day(31.0));
    assert_eq!(
        h.take(),
        vec![fired("c1", Check::PurchaseRecency, day(30.0))]
    );
}

#[test]
fn contact_gap_measures_from_first_seen_when_never_called() {
    let mut h = Harness::new(&flat(1000, 14));
    h.purchase("c1", day(0.0), 10.0);
    h.until(day(20.0));
    assert_eq!(h.take(), vec![fired("c1", Check::ContactGap, day(14.0))]);
    h.call("c1", "r1", day(21.0));
    assert_eq!(h.take(), vec![resolved("c1", Check::ContactGap, day(21.0))]);
    h.until(day(35.0).saturating_add(1));
    assert_eq!(h.take(), vec![fired("c1", Check::ContactGap, day(35.0))]);
}

#[test]
fn no_repeats_while_firing() {
    let mut h = Harness::new(&flat(30, 1000));
    h.purchase("c1", day(0.0), 10.0);
    h.until(day(31.0));
    assert_eq!(h.take().len(), 1);
    h.push(&format!(
        r#"{{"type":"ticket","ts":"{}","customer_id":"c1","ticket_id":"t1","status":"opened"}}"#,
        day(40.0)
    ))
    .unwrap();
    h.until(day(300.0));
    assert!(h.take().is_empty());
}

#[test]
fn tier_gating_uses_each_tiers_limit_and_c_has_none() {
    let mut h = Harness::defaults();
    // 20 customers: rank 1 is A, ranks 2-4 are B, the rest C.
    for i in 0..20 {
        let c = format!("c{i:02}");
        h.purchase(&c, day(0.0), 1000.0 - i as f64);
        h.call(&c, "r1", day(0.0));
    }
    h.until(day(0.1));
    assert_eq!(h.tier("c00"), Tier::A);
    assert_eq!(h.tier("c01"), Tier::B);
    assert_eq!(h.tier("c03"), Tier::B);
    assert_eq!(h.tier("c04"), Tier::C);
    assert_eq!(h.engine.tier_counts(), [1, 3, 16]);
    let calls_every = |h: &mut Harness, c: &str| {
        for d in (10..=60).step_by(10) {
            h.call(c, "r1", day(d as f64));
        }
    };
    for i in 0..20 {
        calls_every(&mut h, &format!("c{i:02}"));
    }
    h.until(day(61.0));
    let alerts = h.take();
    let recency: Vec<_> = alerts
        .iter()
        .filter(|a| a.1 == Check::PurchaseRecency)
        .collect();
    // At equal deadlines, in timer order (by compact index).
    let want = [
        fired("c00", Check::PurchaseRecency, day(30.0)),
        fired("c02", Check::PurchaseRecency, day(45.0)),
        fired("c03", Check::PurchaseRecency, day(45.0)),
        fired("c01", Check::PurchaseRecency, day(45.0)),
    ];
    assert_eq!(
        recency,
        want.iter().collect::<Vec<_>>(),
        "tier C has the rule off: {alerts:?}"
    );
}

#[test]
fn moving_up_into_an_exceeded_limit_fires_at_the_recompute() {
    let mut h = Harness::defaults();
    // Ten customers: rank 1 is A, rank 2 is B, the rest C.
    for i in 0..10 {
        let c = format!("c{i}");
        h.purchase(&c, day(0.0), 1000.0 - 100.0 * i as f64);
        h.call(&c, "r1", day(0.0));
    }
    h.until(day(0.1));
    assert_eq!(
        (h.tier("c0"), h.tier("c1"), h.tier("c2")),
        (Tier::A, Tier::B, Tier::C)
    );
    h.call("c0", "r1", day(10.0));
    h.call("c0", "r1", day(19.0));
    // c1 has gone 20 days without contact: over A's 14, under B's 30.
    h.push(&format!(
        r#"{{"type":"purchase","ts":"{}","customer_id":"c0","amount":-950}}"#,
        day(20.0)
    ))
    .unwrap();
    assert_eq!(
        h.tier("c0"),
        Tier::C,
        "a refund re-tiers its customer at once"
    );
    assert!(h.take().is_empty());
    // Day 20 is on the hour: its recompute runs right after the refund.
    let recompute = day(20.0);
    h.until(recompute.saturating_add(1));
    assert_eq!(h.tier("c1"), Tier::A);
    assert_eq!(h.take(), vec![fired("c1", Check::ContactGap, recompute)]);
}

#[test]
fn a_purchase_that_moves_a_customer_up_is_a_tier_change_at_its_time() {
    let mut h = Harness::defaults();
    for i in 0..10 {
        let c = format!("c{i}");
        h.purchase(&c, day(0.0), 1000.0 - 100.0 * i as f64);
        h.call(&c, "r1", day(0.0));
    }
    h.until(day(0.1));
    assert_eq!(h.tier("c9"), Tier::C);
    h.call("c0", "r1", day(10.0));
    h.call("c1", "r1", day(10.0));
    h.purchase("c9", day(20.0), 10_000.0);
    assert_eq!(h.tier("c9"), Tier::A);
    assert_eq!(h.take(), vec![fired("c9", Check::ContactGap, day(20.0))]);
}

#[test]
fn moving_down_to_a_tier_without_the_rule_resolves_at_the_recompute() {
    let mut h = Harness::defaults();
    h.purchase("top", day(0.0), 100.0);
    h.call("top", "r1", day(0.0));
    h.until(day(0.1));
    assert_eq!(h.tier("top"), Tier::A);
    h.until(day(15.0));
    assert_eq!(h.take(), vec![fired("top", Check::ContactGap, day(14.0))]);
    // Twenty bigger customers push "top" down to C at the next recompute.
    for i in 0..20 {
        h.purchase(&format!("n{i:02}"), day(15.0), 1000.0 + i as f64);
    }
    // Day 15 is on the hour: its recompute runs after the events at day 15.
    let recompute = day(15.0);
    h.until(recompute.saturating_add(1));
    assert_eq!(h.tier("top"), Tier::C);
    assert_eq!(
        h.take(),
        vec![resolved("top", Check::ContactGap, recompute)]
    );
}

#[test]
fn departed_rep_alerts_a_and_b_customers_at_the_roster_time() {
    let mut h = Harness::defaults();
    for i in 0..20 {
        let c = format!("c{i:02}");
        h.purchase(&c, day(0.0), 1000.0 - i as f64);
        h.call(&c, "r1", day(0.0));
    }
    h.until(day(0.1));
    h.take();
    h.roster("r1", "departed", day(1.0));
    let mut alerts = h.take();
    alerts.sort();
    let expected: Vec<_> = ["c00", "c01", "c02", "c03"]
        .iter()
        .map(|c| fired(c, Check::Departed, day(1.0)))
        .collect();
    assert_eq!(alerts, expected, "only A and B customers");
    h.call("c01", "r1", day(2.0));
    assert!(
        h.take().is_empty(),
        "a call by the departed rep does not resolve"
    );
    h.call("c01", "r2", day(3.0));
    assert_eq!(h.take(), vec![resolved("c01", Check::Departed, day(3.0))]);
    h.roster("r1", "active", day(4.0));
    let mut back = h.take();
    back.sort();
    assert_eq!(
        back.len(),
        3,
        "the rep's return resolves the rest: {back:?}"
    );
}

#[test]
fn handoffs_fire_at_the_third_change_and_resolve_as_the_window_slides() {
    let mut h = Harness::defaults();
    lone_a_customer(&mut h, "c1");
    h.purchase("c1", day(5.0), 10.0);
    h.call("c1", "r2", day(5.0));
    h.call("c1", "r3", day(6.0));
    h.purchase("c1", day(6.0), 10.0);
    assert!(h.take().is_empty());
    h.call("c1", "r4", day(7.0));
    assert_eq!(h.take(), vec![fired("c1", Check::Handoffs, day(7.0))]);
    h.call("c1", "r4", day(8.0));
    assert!(h.take().is_empty(), "no repeat while firing");
    // Keep the customer otherwise healthy while the window slides.
    for d in (10..=200).step_by(10) {
        h.purchase("c1", day(d as f64), 10.0);
        h.call("c1", "r4", day(d as f64));
    }
    let alerts = h.take();
    let handoffs: Vec<_> = alerts.iter().filter(|a| a.1 == Check::Handoffs).collect();
    assert_eq!(handoffs.len(), 1, "{alerts:?}");
    let (_, _, status, at) = handoffs[0];
    assert_eq!(*status, Status::Resolved);
    // Handoff buckets are 30 days wide and epoch-aligned; the first handoff's
    // bucket leaves the 6-bucket window at a bucket boundary ~180 days on.
    let width = 30 * DAY_MS;
    let first_bucket = day(5.0).0 / width;
    assert_eq!(at.0, (first_bucket + 6) * width);
}

#[test]
fn late_events_are_applied_counted_and_stamped_at_the_watermark() {
    let mut h = Harness::new(&flat(30, 1000));
    h.purchase("c1", day(0.0), 10.0);
    h.purchase("c2", day(10.0), 10.0);
    let late = h
        .push(&format!(
            r#"{{"type":"purchase","ts":"{}","customer_id":"c1","amount":5}}"#,
            day(5.0)
        ))
        .unwrap();
    assert_eq!(late, Applied::Late);
    assert_eq!(h.engine.stats().late_events, 1);
    assert_eq!(
        h.engine.store().customer("c1").unwrap().last_purchase.get(),
        Some(day(5.0))
    );
    h.until(day(36.0));
    assert_eq!(
        h.take(),
        vec![fired("c1", Check::PurchaseRecency, day(35.0))]
    );
}

#[test]
fn allowed_lateness_reorders_events_inside_it() {
    let mut config = flat(30, 1000);
    config.engine.allowed_lateness = std::time::Duration::from_secs(2 * 86_400);
    let mut h = Harness::new(&config);
    h.purchase("c1", day(0.0), 10.0);
    h.purchase("c1", day(31.0), 10.0);
    assert!(h.take().is_empty(), "held: the watermark is at day 29");
    h.purchase("c1", day(29.5), 10.0);
    h.until(day(100.0));
    // Applied in ts order, no gap exceeded 30 days until after day 31; in
    // arrival order day 0 → 31 would have fired at day 30.
    assert_eq!(
        h.take(),
        vec![fired("c1", Check::PurchaseRecency, day(61.0))]
    );
    assert_eq!(h.engine.stats().late_events, 0);
}

#[test]
fn far_future_events_are_rejected() {
    let mut h = Harness::defaults();
    h.engine.set_horizon(day(1.0));
    h.purchase("c1", day(0.0), 10.0);
    h.purchase("c1", day(2.0), 10.0);
    let err = h
        .push(&format!(
            r#"{{"type":"purchase","ts":"{}","customer_id":"c1","amount":5}}"#,
            day(2.1)
        ))
        .unwrap_err();
    assert_eq!(err.code(), "future_timestamp");
    assert_eq!(
        h.engine.watermark(),
        Some(day(2.0)),
        "a rejected event does not move time"
    );
}

#[test]
fn advancing_with_nothing_due_changes_nothing() {
    let mut h = Harness::new(&flat(30, 1000));
    h.purchase("c1", day(0.0), 10.0);
    assert_eq!(
        h.engine.next_deadline(),
        Some(Ts((day(0.0).0 / 3_600_000 + 1) * 3_600_000))
    );
    h.until(day(29.0));
    assert!(h.take().is_empty());
    assert_eq!(h.engine.pending_timers(), 1);
}

/// One customer's events for the model test: (day offset in hours, is_call).
fn model_alerts(events: &[(i64, bool)], until: i64, limit_h: i64) -> Vec<(Check, Status, i64)> {
    let mut out = Vec::new();
    for (check, is_call) in [(Check::PurchaseRecency, false), (Check::ContactGap, true)] {
        // Each gap longer than the limit is one episode: it fires at the
        // limit and resolves at the event that ends the gap; a gap still
        // open at `until` is firing then.
        let mut base = events[0].0; // first seen
        for &(t, call) in events {
            if call != is_call {
                continue;
            }
            if t > base + limit_h {
                out.push((check, Status::Firing, base + limit_h));
                out.push((check, Status::Resolved, t));
            }
            base = base.max(t);
        }
        if until > base + limit_h {
            out.push((check, Status::Firing, base + limit_h));
        }
    }
    out.sort_by_key(|a| (a.2, a.0 as u8, a.1 as u8));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Firing order and `at` equal a brute-force model over the event list.
    #[test]
    fn absence_rules_match_a_brute_force_model(
        gaps in proptest::collection::vec((0i64..60 * 24, any::<bool>()), 1..30),
        tail in 0i64..60 * 24,
    ) {
        let hour = 3_600_000;
        let mut h = Harness::new(&flat(10, 10));
        let mut t = 0;
        let mut events = Vec::new();
        for (i, (gap, call)) in gaps.iter().enumerate() {
            // Snap some gaps to exactly the limit to exercise the boundary.
            t += if i % 5 == 0 { 10 * 24 } else { *gap };
            events.push((t, *call));
            let at = Ts(T0 + t * hour);
            if *call { h.call("c", "r", at) } else { h.purchase("c", at, 1.0) }
        }
        let until = t + tail;
        h.until(Ts(T0 + until * hour));
        let got: Vec<(Check, Status, i64)> = h.out.iter().map(|a| (a.check, a.status, (a.at.0 - T0) / hour)).collect();
        let mut sorted = got.clone();
        sorted.sort_by_key(|a| (a.2, a.0 as u8, a.1 as u8));
        let ats: Vec<i64> = got.iter().map(|a| a.2).collect();
        prop_assert!(ats.windows(2).all(|w| w[0] <= w[1]), "emitted out of order: {got:?}");
        prop_assert_eq!(sorted, model_alerts(&events, until, 10 * 24));
    }
}

#[test]
fn evicting_a_partition_drops_exactly_its_customers_and_timers() {
    let mut h = Harness::new(&flat(30, 1000));
    for (c, p) in [("a", 0u16), ("b", 1), ("c", 1)] {
        let ev = decode(
            format!(
                r#"{{"type":"purchase","ts":"{}","customer_id":"{c}","amount":5}}"#,
                day(0.0)
            )
            .as_bytes(),
            h.engine.decode_limits(),
        )
        .unwrap();
        h.engine.apply(ev, p, &mut h.out).unwrap();
    }
    assert_eq!(h.engine.pending_timers(), 3);
    assert_eq!(h.engine.evict_partition(1), 2);
    assert_eq!(h.engine.store().len(), 1);
    assert!(h.engine.store().customer("b").is_none());
    assert_eq!(h.engine.pending_timers(), 1);
    assert_eq!(h.engine.tier_counts().iter().sum::<u64>(), 1);
    h.until(day(31.0));
    assert_eq!(
        h.take(),
        vec![fired("a", Check::PurchaseRecency, day(30.0))]
    );
}

/// Scenario lines from the replay fixture, decoded.
fn scenario_events(engine: &Engine) -> Vec<super::event::Event> {
    include_str!("../../tests/data/scenario.jsonl")
        .lines()
        .filter_map(|l| decode(l.as_bytes(), engine.decode_limits()).ok())
        .collect()
}

/// Runs `events` through one engine, and through an engine restored from a
/// snapshot taken after the first `split`; returns both alert streams.
fn with_and_without_restore(
    config: &Config,
    events: &[super::event::Event],
    split: usize,
) -> (Vec<String>, Vec<String>) {
    let mut original = Harness::new(config);
    let (head, tail) = events.split_at(split);
    for e in head {
        original
            .engine
            .apply(e.clone(), 0, &mut original.out)
            .unwrap();
    }
    original.take();
    let state = original.engine.partition_state(0);
    let bytes = postcard::to_allocvec(&state).unwrap();
    let mut restored = Harness::new(config);
    let n = restored
        .engine
        .restore_partition(postcard::from_bytes(&bytes).unwrap());
    assert_eq!(n, original.engine.store().len());
    assert_eq!(restored.engine.partition_state(0).customers.len(), n);
    // The roster topic is read again from its start after a restart.
    for e in head.iter().filter(|e| e.customer().is_none()) {
        restored
            .engine
            .apply(e.clone(), 0, &mut restored.out)
            .unwrap();
    }
    assert!(
        restored.take().is_empty(),
        "open episodes are not emitted again (split {split})"
    );
    for h in [&mut original, &mut restored] {
        for e in tail {
            h.engine.apply(e.clone(), 0, &mut h.out).unwrap();
        }
        h.until(day(400.0));
    }
    (sorted_json(&original.out), sorted_json(&restored.out))
}

#[test]
fn a_restored_engine_continues_exactly_like_the_original_at_every_split() {
    let config = Config::default();
    let events = scenario_events(&Harness::new(&config).engine);
    for split in 0..=events.len() {
        let (a, b) = with_and_without_restore(&config, &events, split);
        assert!(!a.is_empty());
        assert_eq!(a, b, "restored after {split} events");
    }
}

#[test]
fn a_restored_engine_continues_exactly_like_the_original_on_a_population() {
    use crate::generate::{Population, PopulationOptions};
    let config = Config::default();
    let mut population = Population::new(PopulationOptions {
        customers: 40,
        seed: 7,
        start: day(0.0),
        shape: Default::default(),
    });
    let mut generated = Vec::new();
    for _ in 0..120 {
        population.next_day(&mut generated);
    }
    let engine = Harness::new(&config).engine;
    let events: Vec<_> = generated
        .iter()
        .filter_map(|g| decode(g.line.as_bytes(), engine.decode_limits()).ok())
        .collect();
    for split in (1..events.len()).step_by(29) {
        let (a, b) = with_and_without_restore(&config, &events, split);
        assert!(!a.is_empty());
        assert!(a == b, "restored after {split} of {} events", events.len());
    }
}

/// Alerts as JSON, sorted: alerts of one instant may come in another order
/// after a restore (customers are re-indexed); the multiset must not change.
fn sorted_json(alerts: &[Alert]) -> Vec<String> {
    let mut v: Vec<String> = alerts
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    v.sort_unstable();
    v
}

/// The service's pattern: three input partitions under the partitioned
/// clock (events held until the watermark passes them), the whole roster
/// read before the restore, snapshots taken between advances.
#[test]
fn a_restored_partitioned_engine_continues_like_the_original() {
    use crate::generate::{Population, PopulationOptions};
    type Routed = (u16, super::event::Event);
    let config = Config::default();
    let mut population = Population::new(PopulationOptions {
        customers: 1500,
        seed: 11,
        start: day(0.0),
        shape: Default::default(),
    });
    let mut generated = Vec::new();
    for _ in 0..150 {
        population.next_day(&mut generated);
    }
    let limits = Harness::new(&config).engine.decode_limits();
    let (roster, inputs): (Vec<Routed>, Vec<Routed>) = generated
        .iter()
        .filter_map(|g| decode(g.line.as_bytes(), limits).ok())
        .map(|e| {
            let p = e.customer().map_or(u16::MAX, |c| {
                (c.bytes().map(u32::from).sum::<u32>() % 3) as u16
            });
            (p, e)
        })
        .partition(|(p, _)| *p == u16::MAX);
    let start = |out: &mut Vec<Alert>| {
        let mut engine = Engine::new(&config.engine_settings(), Clock::PartitionMinimum);
        for (p, e) in &roster {
            engine.apply(e.clone(), *p, out).unwrap();
        }
        engine
    };
    // The watermark trails the newest event of each batch.
    let feed = |engine: &mut Engine, out: &mut Vec<Alert>, events: &[Routed]| {
        for batch in events.chunks(997) {
            for (p, e) in batch {
                engine.apply(e.clone(), *p, out).unwrap();
            }
            engine.advance_to(batch[batch.len() * 2 / 3].1.ts, out);
        }
    };
    let end = inputs.last().unwrap().1.ts;
    for quarter in 1..4 {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut original = start(&mut a);
        let (head, tail) = inputs.split_at(inputs.len() * quarter / 4);
        feed(&mut original, &mut a, head);
        let w = original.watermark().unwrap();
        let states: Vec<Vec<u8>> = (0..3)
            .map(|p| postcard::to_allocvec(&original.partition_state(p)).unwrap())
            .collect();
        a.clear();
        feed(&mut original, &mut a, tail);
        original.advance_to(end, &mut a);

        let mut restored = start(&mut b);
        for s in &states {
            restored.restore_partition(postcard::from_bytes(s).unwrap());
        }
        // The snapshot covers what the watermark had released; the rest
        // (held in the original) is consumed again.
        let rest: Vec<Routed> = inputs.iter().filter(|(_, e)| e.ts > w).cloned().collect();
        feed(&mut restored, &mut b, &rest);
        restored.advance_to(end, &mut b);
        assert!(!a.is_empty());
        assert!(sorted_json(&a) == sorted_json(&b), "restored at {w}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Prefetching is a hint: an engine told about every batch before
    /// applying it emits the same alerts and ends in the same state as one
    /// applying the same events without it.
    #[test]
    fn prefetching_changes_nothing(
        events in proptest::collection::vec((0u8..4, 0u8..40, 0u8..6, 0i64..3 * 24), 1..200),
        batch in 1usize..40,
    ) {
        let lines: Vec<String> = events
            .iter()
            .scan(0i64, |t, &(kind, customer, rep, gap)| {
                *t += gap;
                let at = Ts(T0 + *t * 3_600_000);
                Some(match kind {
                    0 => format!(r#"{{"type":"purchase","ts":"{at}","customer_id":"c{customer}","amount":{}}}"#, customer as f64 * 7.5 - 20.0),
                    1 => format!(r#"{{"type":"call","ts":"{at}","customer_id":"c{customer}","rep_id":"r{rep}"}}"#),
                    2 => format!(r#"{{"type":"ticket","ts":"{at}","customer_id":"c{customer}","ticket_id":"t{rep}","status":"opened","kind":"complaint"}}"#),
                    _ => format!(r#"{{"type":"rep","ts":"{at}","rep_id":"r{rep}","status":"{}"}}"#, if customer % 2 == 0 { "departed" } else { "active" }),
                })
            })
            .collect();
        let config = flat(5, 5);
        let (mut plain, mut warmed) = (Harness::new(&config), Harness::new(&config));
        for chunk in lines.chunks(batch) {
            let decoded: Vec<_> = chunk
                .iter()
                .map(|l| decode(l.as_bytes(), warmed.engine.decode_limits()).unwrap())
                .collect();
            warmed.engine.prefetch(decoded.iter());
            for (line, ev) in chunk.iter().zip(decoded) {
                plain.push(line).unwrap();
                warmed.engine.apply(ev, 0, &mut warmed.out).unwrap();
            }
        }
        prop_assert_eq!(plain.take(), warmed.take());
        prop_assert_eq!(plain.engine.partition_state(0), warmed.engine.partition_state(0));
    }
}

/// Under the wall clock an event-triggered episode is identified by the
/// event's `ts`, not by when it was applied: a restart that re-applies the
/// roster event later gives the same id (only `at` differs).
#[test]
fn wall_clock_event_alert_ids_come_from_the_data_not_the_processing_time() {
    let departure_ids = |applied_at: Ts| {
        let mut h = Harness::new(&Config::default());
        h.engine = Engine::new(&Config::default().engine_settings(), Clock::Wall);
        for i in 0..20 {
            let c = format!("c{i:02}");
            h.purchase(&c, day(0.0), 1000.0 - i as f64);
            h.call(&c, "r1", day(0.0));
        }
        h.until(applied_at);
        h.out.clear();
        h.roster("r1", "departed", day(1.0));
        let mut ids: Vec<(String, String, Ts)> = h
            .out
            .drain(..)
            .filter(|a| a.check == Check::Departed)
            .map(|a| (a.customer_id.to_string(), a.alert_id.to_string(), a.at))
            .collect();
        ids.sort();
        ids
    };
    let first = departure_ids(day(1.5));
    let later = departure_ids(day(1.9));
    assert!(!first.is_empty(), "the departure fired");
    let strip = |v: &[(String, String, Ts)]| -> Vec<(String, String)> {
        v.iter().map(|(c, id, _)| (c.clone(), id.clone())).collect()
    };
    assert_eq!(strip(&first), strip(&later), "same ids");
    assert!(
        first.iter().zip(&later).all(|(a, b)| a.2 < b.2),
        "`at` stays the processing time"
    );
}

/// Under the wall clock a backlog streams in while engine time stands
/// still; the tiers still follow the population (`tiers.recompute_change`),
/// where the hourly schedule alone would leave everyone in C.
#[test]
fn wall_clock_tiers_follow_a_population_that_streams_in_without_time_moving() {
    let mut h = Harness::new(&Config::default());
    h.engine = Engine::new(&Config::default().engine_settings(), Clock::Wall);
    let n = 2_000;
    for i in 0..n {
        // Spread amounts, in an order unrelated to the amount.
        let amount = ((i * 7_919) % n + 1) as f64;
        h.purchase(&format!("c{i}"), day(i as f64 / 100.0), amount);
    }
    let [a, b, _] = h.engine.tier_counts();
    let within = |got: u64, want: f64| (got as f64 - want).abs() <= want * 0.1;
    assert!(within(a, n as f64 * 0.05), "tier A: {a}");
    assert!(within(a + b, n as f64 * 0.20), "tiers A+B: {}", a + b);
    let recomputes = h.engine.stats().recomputes;
    assert!(
        recomputes < 1_000,
        "bounded: a recompute per 1% of growth, not per purchase ({recomputes})"
    );

    let mut off = Config::default();
    off.tiers.recompute_change = 0.0;
    let mut e = Engine::new(&off.engine_settings(), Clock::Wall);
    let mut out = Vec::new();
    for i in 0..100 {
        let ev = decode(
            format!(
                r#"{{"type":"purchase","ts":"{}","customer_id":"c{i}","amount":{i}}}"#,
                day(0.0)
            )
            .as_bytes(),
            e.decode_limits(),
        )
        .unwrap();
        e.apply(ev, 0, &mut out).unwrap();
    }
    assert_eq!(e.tier_counts()[0], 0, "off: only the hourly schedule ranks");
}

#[test]
fn forget_after_forgets_idle_customers_without_spend_and_keeps_the_rest() {
    let mut config = Config::default();
    config.engine.forget_after = Some(std::time::Duration::from_secs(30 * 86_400));
    let mut h = Harness::new(&config);
    h.call("caller", "r1", day(0.0));
    h.purchase("buyer", day(0.0), 10.0);
    h.call("recent", "r1", day(35.0));
    h.until(day(36.0));
    let store = h.engine.store();
    assert!(
        store.customer("caller").is_none(),
        "idle, no spend: forgotten"
    );
    assert!(
        store.customer("buyer").is_some(),
        "spend in the window: kept"
    );
    assert!(
        store.customer("recent").is_some(),
        "seen within forget_after: kept"
    );
    assert_eq!(h.engine.stats().customers_forgotten, 1);
    // A forgotten customer that returns is simply new.
    h.call("caller", "r1", day(37.0));
    assert!(h.engine.store().customer("caller").is_some());

    let mut off = Harness::defaults();
    off.call("caller", "r1", day(0.0));
    off.until(day(400.0));
    assert!(
        off.engine.store().customer("caller").is_some(),
        "off by default"
    );
}

/// Only the `risk` rule, for every tier, at `threshold`.
fn risk_only(threshold: u8) -> Config {
    Config::parse(&format!(
        "[rules.purchase_recency]\nA = \"off\"\nB = \"off\"\n[rules.contact_gap]\nA = \"off\"\nB = \"off\"\n[rules.rep_turnover]\ntiers = []\n\
         [rules.risk]\nA = {threshold}\nB = {threshold}\nC = {threshold}\nhysteresis = 10\n"
    ))
    .unwrap()
}

#[test]
fn the_risk_rule_fires_when_silence_lifts_the_score_and_resolves_below_the_hysteresis() {
    // A first purchase scores about 66 under the default model (most
    // one-time buyers never come back), so the rule is set above it.
    let mut h = Harness::new(&risk_only(80));
    for d in 0..8 {
        h.purchase("c", day(f64::from(d) * 7.0), 100.0);
    }
    assert!(h.take().is_empty(), "a weekly buyer is no risk");
    h.until(day(400.0));
    let fired_at = match h.take().as_slice() {
        [(c, Check::Risk, Status::Firing, at)] if c == "c" => *at,
        other => panic!("one risk alert: {other:?}"),
    };
    // Fired without an event, once the silence had lifted the score to 80:
    // not before, and within a minute of it.
    let store = h.engine.store();
    let customer = store.customer("c").unwrap();
    let settings = Config::default().engine_settings();
    let limits = super::rule::Limits::new(&risk_only(80).engine_settings().rules, &settings.risk);
    let windows = super::customer::Windows::new(&settings);
    let score = |t: Ts| super::risk::score(&customer, t, &limits.risk_context(&windows, false));
    assert!(
        score(fired_at) >= 80 && score(Ts(fired_at.0 - 60_000)) < 80,
        "{fired_at}"
    );
    assert!(fired_at > day(56.0) && fired_at < day(400.0));
    // A purchase brings the score down: under 80 - 10 resolves.
    h.purchase("c", day(401.0), 100.0);
    assert_eq!(h.take(), vec![resolved("c", Check::Risk, day(401.0))]);
}

#[test]
fn the_risk_rule_is_off_by_default_and_alerts_carry_the_score() {
    let mut h = Harness::defaults();
    lone_a_customer(&mut h, "c1");
    h.until(day(60.0));
    let out: Vec<Alert> = std::mem::take(&mut h.out);
    assert!(out.iter().all(|a| a.check != Check::Risk));
    let recency = out
        .iter()
        .find(|a| a.check == Check::PurchaseRecency)
        .expect("purchase_recency fired");
    assert!(recency.signals.risk > 0, "{:?}", recency.signals);
}

#[test]
fn adaptive_recency_measures_a_customer_against_its_own_gap() {
    let config = Config::parse(
        "[rules.purchase_recency]\nA = \"30d\"\nB = \"30d\"\nC = \"30d\"\nmode = \"adaptive\"\nfactor = 2.0\nmin_purchase_days = 4\n\
         [rules.purchase_recency.min]\nA = \"5d\"\nB = \"5d\"\nC = \"5d\"\n\
         [rules.contact_gap]\nA = \"off\"\nB = \"off\"\n[rules.rep_turnover]\ntiers = []\n",
    )
    .unwrap();
    let mut h = Harness::new(&config);
    // Every 4 days: the limit is 2 x 4 = 8 days after the last purchase.
    for d in [0.0, 4.0, 8.0, 12.0] {
        h.purchase("fast", day(d), 100.0);
    }
    // Two purchases only: the fixed 30 days apply.
    for d in [0.0, 10.0] {
        h.purchase("new", day(d), 100.0);
    }
    h.until(day(45.0));
    let out: Vec<Alert> = std::mem::take(&mut h.out);
    let at = |c: &str| {
        out.iter()
            .find(|a| a.customer_id == c)
            .map(|a| (a.at, a.reason()))
    };
    let (fast_at, fast_reason) = at("fast").expect("fast fired");
    assert_eq!(fast_at, day(20.0));
    assert!(
        fast_reason.contains("adaptive limit 8 days: 2x this customer's usual gap of 4 days"),
        "{fast_reason}"
    );
    let (new_at, new_reason) = at("new").expect("new fired");
    assert_eq!(new_at, day(40.0));
    assert!(
        new_reason.contains("fixed limit 30: 2 purchase days, the adaptive limit needs 4"),
        "{new_reason}"
    );
}

#[test]
fn currencies_are_converted_and_never_summed_unconverted() {
    let purchase = |currency: &str| {
        format!(
            r#"{{"type":"purchase","ts":"{}","customer_id":"c","amount":1000,"currency":"{currency}"}}"#,
            day(1.0)
        )
    };
    let monetary = |h: &Harness| h.engine.store().customer("c").unwrap().monetary_total();
    let config =
        Config::parse("[money]\nbase_currency = \"EUR\"\nrates = { USD = 0.92 }\n").unwrap();
    let mut h = Harness::new(&config);
    for ok in ["USD", "EUR", "eur"] {
        h.push(&purchase(ok)).unwrap();
    }
    for refused in ["JPY", "not-a-currency"] {
        assert_eq!(
            h.push(&purchase(refused)).unwrap_err().code(),
            "unknown_currency"
        );
    }
    assert!((monetary(&h) - 2920.0).abs() < 1e-3, "{}", monetary(&h));
    // Without [money]: one currency is taken as it is, a second refused.
    let mut h = Harness::defaults();
    h.push(&purchase("USD")).unwrap();
    h.purchase("c", day(1.0), 1000.0);
    let err = h.push(&purchase("EUR")).unwrap_err();
    assert_eq!(err.code(), "unknown_currency");
    assert!(
        err.to_string().contains("never sums two currencies"),
        "{err}"
    );
    assert_eq!(monetary(&h), 2000.0);
}

#[test]
fn money_config_refuses_rates_without_a_base_and_bad_codes() {
    for (text, said) in [
        (
            "[money]\nrates = { USD = 0.9 }\n",
            "needs money.base_currency",
        ),
        ("[money]\nbase_currency = \"EURO\"\n", "not a currency code"),
        (
            "[money]\nbase_currency = \"EUR\"\nrates = { USD = 0 }\n",
            "positive",
        ),
    ] {
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains(said) && err.contains("money"), "{err}");
    }
}
