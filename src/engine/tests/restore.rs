//! Eviction, snapshots and restores: a restored engine continues like the original.

use super::*;

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
    assert_eq!(h.engine.tier_counts(0).iter().sum::<u64>(), 1);
    h.until(day(31.0));
    assert_eq!(
        h.take(),
        vec![fired("a", Check::PurchaseRecency, day(30.0))]
    );
}

/// Scenario lines from the replay fixture, decoded.
fn scenario_events(engine: &Engine) -> Vec<crate::engine::event::Event> {
    include_str!("../../../tests/data/scenario.jsonl")
        .lines()
        .filter_map(|l| decode(l.as_bytes(), engine.decode_limits()).ok())
        .collect()
}

/// Runs `events` through one engine, and through an engine restored from a
/// snapshot taken after the first `split`; returns both alert streams.
fn with_and_without_restore(
    config: &Config,
    events: &[crate::engine::event::Event],
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
    type Routed = (u16, crate::engine::event::Event);
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
