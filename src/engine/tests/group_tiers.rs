//! Group-wide tiers: instances holding some partitions each rank with the
//! thresholds merged from every partition's summary, as one instance
//! holding everyone does.

use std::collections::BTreeMap;

use super::*;
use crate::engine::tier_summary::{GroupSummary, TierSummary, merge};

const SEGMENTS: &str = "[segments]\ndefault = \"s0\"\n[segments.s0]\n[segments.s1]\ntiers = \"own\"\n\
     [segments.s2]\ntiers = \"global\"\n";

/// A purchase of `amount` by customer `i` of `segment` on input `partition`.
fn buy(engine: &mut Engine, i: usize, segment: u8, amount: f64, key: bool, partition: u16) {
    let line = format!(
        r#"{{"type":"purchase","ts":"{}","customer_id":"c{i}","amount":{amount},"segment":"s{segment}","key_account":{key}}}"#,
        day(0.0)
    );
    let ev = decode(line.as_bytes(), engine.decode_limits()).unwrap();
    engine.apply(ev, partition, &mut Vec::new()).unwrap();
}

/// Every partition's summary from the instance owning it, with `wanted`.
fn summaries(
    instances: &[(Engine, Vec<u16>)],
    wanted: &BTreeMap<String, Vec<u16>>,
) -> Vec<TierSummary> {
    instances
        .iter()
        .flat_map(|(e, owned)| e.tier_summaries(owned, wanted).into_values())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Partitions spread over up to three instances, one of them holding
    /// most customers: after a summary round that finds the boundary bins
    /// and one that carries their members, every instance's thresholds and
    /// every customer's tier are what one instance holding all computes.
    #[test]
    fn instances_rank_as_one_holding_every_customer(
        customers in proptest::collection::vec(
            (0u8..3, 0u32..3000, proptest::bool::weighted(0.05), prop_oneof![3 => Just(0u16), 1 => 1u16..6]),
            1..300,
        ),
        owner in proptest::collection::vec(0usize..3, 6),
    ) {
        let config = Config::parse(SEGMENTS).unwrap();
        let settings = config.engine_settings();
        let mut whole = Engine::new(&settings, Clock::Event);
        let mut instances: Vec<(Engine, Vec<u16>)> = (0..3)
            .map(|i| {
                let owned = (0..6u16).filter(|&p| owner[usize::from(p)] == i).collect();
                (Engine::new(&settings, Clock::Event), owned)
            })
            .collect();
        for (i, &(s, m, key, p)) in customers.iter().enumerate() {
            // Amounts with cents, so ties and near-ties share bins.
            let amount = f64::from(m) / 4.0;
            buy(&mut whole, i, s, amount, key, p);
            buy(&mut instances[owner[usize::from(p)]].0, i, s, amount, key, p);
        }
        whole.advance_to(day(0.1), &mut Vec::new());
        for (e, _) in &mut instances {
            e.advance_to(day(0.1), &mut Vec::new());
        }
        let first = merge(&summaries(&instances, &BTreeMap::new()), 5.0, 15.0);
        let merged = merge(&summaries(&instances, &first.wanted), 5.0, 15.0);
        prop_assert!(merged.complete(), "{:?}", merged);
        let given: BTreeMap<String, _> = merged
            .thresholds
            .iter()
            .filter_map(|(g, t)| Some((g.clone(), (*t)?)))
            .collect();
        for (e, _) in &mut instances {
            e.rank_with(Some(&given), &mut Vec::new());
            for s in 0..3u8 {
                prop_assert_eq!(e.thresholds(s), whole.thresholds(s), "segment s{}", s);
            }
        }
        for (i, &(_, _, _, p)) in customers.iter().enumerate() {
            let id = format!("c{i}");
            let held = &instances[owner[usize::from(p)]].0;
            let tier = held.store().customer(&id).unwrap().tier();
            prop_assert_eq!(tier, whole.store().customer(&id).unwrap().tier(), "{}", id);
        }
    }
}

#[test]
fn a_summary_without_the_boundary_values_leaves_the_merge_incomplete() {
    let mut e = Engine::new(&Config::default().engine_settings(), Clock::Event);
    for i in 0..40 {
        buy(&mut e, i, 0, 100.0 + i as f64, false, (i % 2) as u16);
    }
    e.advance_to(day(0.1), &mut Vec::new());
    let none = BTreeMap::new();
    let blind: Vec<TierSummary> = e.tier_summaries(&[0, 1], &none).into_values().collect();
    let first = merge(&blind, 5.0, 15.0);
    assert!(!first.complete());
    assert_eq!(
        first.wanted["default"].len(),
        2,
        "the A and B boundaries' bins"
    );
    let told: Vec<TierSummary> = e
        .tier_summaries(&[0, 1], &first.wanted)
        .into_values()
        .collect();
    let second = merge(&told, 5.0, 15.0);
    assert_eq!(second.thresholds["default"], Some(e.thresholds(0)));
    // The 5% of 40 is the 2nd largest: 138.
    assert_eq!(e.thresholds(0).a, 138.0);
}

#[test]
fn malformed_summaries_are_refused() {
    let ok = GroupSummary {
        bins: vec![3, 9],
        counts: vec![1, 2],
        values: BTreeMap::from([(9, vec![1, 2])]),
    };
    assert!(ok.is_valid());
    let unsorted = GroupSummary {
        bins: vec![9, 3],
        ..ok.clone()
    };
    let short = GroupSummary {
        values: BTreeMap::from([(9, vec![1])]),
        ..ok.clone()
    };
    let unpaired = GroupSummary {
        counts: vec![1],
        ..ok.clone()
    };
    let out_of_range = GroupSummary {
        bins: vec![3, u16::MAX],
        ..ok.clone()
    };
    for bad in [unsorted, short, unpaired, out_of_range] {
        assert!(!bad.is_valid(), "{bad:?}");
    }
}
