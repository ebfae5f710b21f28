//! The recency rule against a brute-force model (proptest).

use super::*;

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
