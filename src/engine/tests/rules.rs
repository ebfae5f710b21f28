//! Each rule's exact alerts: deadlines, limits, tiers, the roster, lateness.

use super::*;

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
    assert_eq!(h.engine.tier_counts(0), [1, 3, 16]);
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

#[test]
fn reloaded_limits_fire_resolve_and_move_deadlines_at_once() {
    let mut h = Harness::new(&flat(60, 400));
    lone_a_customer(&mut h, "c1");
    h.until(day(40.0));
    assert!(h.take().is_empty(), "40 days is inside 60");
    // Tighter: the condition holds now, so it fires at the reload.
    let tight = flat(30, 400).engine_settings();
    h.engine
        .set_limits(&tight.segments, &tight.risk, &mut h.out);
    assert_eq!(
        h.take(),
        vec![fired("c1", Check::PurchaseRecency, day(40.0))]
    );
    // Looser again: the open episode ends, as a limit change.
    let loose = flat(90, 400).engine_settings();
    h.engine
        .set_limits(&loose.segments, &loose.risk, &mut h.out);
    let ended: Vec<_> = h.out.iter().map(|a| (a.status, a.trigger)).collect();
    assert_eq!(
        ended,
        vec![(Status::Resolved, super::super::alert::Trigger::LimitChange)]
    );
    assert!(
        h.out[0].reason().contains("limits were changed"),
        "{}",
        h.out[0].reason()
    );
    h.out.clear();
    // The deadline moved with the limit: nothing at 60 days, a firing past 90.
    h.until(day(89.0));
    assert!(
        h.take().is_empty(),
        "the old 60-day deadline no longer fires"
    );
    h.until(day(91.0));
    assert_eq!(
        h.take(),
        vec![fired("c1", Check::PurchaseRecency, day(90.0))]
    );
}

#[test]
fn limits_set_before_any_event_apply_to_what_comes() {
    let mut h = Harness::new(&flat(60, 400));
    let tight = flat(30, 400).engine_settings();
    h.engine
        .set_limits(&tight.segments, &tight.risk, &mut h.out);
    assert!(h.take().is_empty());
    lone_a_customer(&mut h, "c1");
    h.until(day(31.0));
    assert_eq!(
        h.take(),
        vec![fired("c1", Check::PurchaseRecency, day(30.0))]
    );
}
