//! Segments: own and shared rankings, per-segment limits, key accounts.

use super::*;

/// Wholesale (recency A 60d) and retail (the default, global limits: A
/// 30d), each ranked on its own.
fn two_segments() -> Config {
    Config::parse(
        "[segments]\ndefault = \"retail\"\n\
         [segments.wholesale]\ntiers = \"own\"\n\
         [segments.wholesale.rules.purchase_recency]\nA = \"60d\"\nB = \"90d\"\n\
         [segments.retail]\n\
         [rules.contact_gap]\nA = \"off\"\nB = \"off\"\n\
         [rules.rep_turnover]\ntiers = []\n",
    )
    .unwrap()
}

impl Harness {
    fn segment_purchase(&mut self, customer: &str, segment: &str, at: Ts, amount: f64) {
        self.push(&format!(
            r#"{{"type":"purchase","ts":"{at}","customer_id":"{customer}","amount":{amount},"segment":"{segment}"}}"#
        ))
        .unwrap();
    }

    fn counts(&self, segment: &str) -> [u64; 3] {
        let i = self
            .engine
            .segment_names()
            .iter()
            .position(|n| n == segment)
            .unwrap();
        self.engine.tier_counts(i as u8)
    }
}

#[test]
fn a_customer_changing_segment_moves_tiers_and_limits() {
    let mut h = Harness::new(&two_segments());
    h.segment_purchase("w", "wholesale", day(0.0), 1000.0);
    for i in 0..19 {
        h.purchase(&format!("r{i:02}"), day(0.0), 10.0 + f64::from(i));
    }
    h.until(day(0.1));
    assert_eq!(h.tier("w"), Tier::A, "alone in its segment: its top 5%");
    assert_eq!(h.tier("r18"), Tier::A, "retail ranks its own");
    assert_eq!(
        (h.counts("wholesale"), h.counts("retail")[0]),
        ([1, 0, 0], 1)
    );
    // 40 days without a purchase: within wholesale's 60, past retail's 30.
    h.until(day(40.0));
    let fired_retail: Vec<_> = h
        .take()
        .into_iter()
        .filter(|a| a.0 == "w" || a.0 == "r18")
        .collect();
    assert_eq!(
        fired_retail,
        vec![fired("r18", Check::PurchaseRecency, day(30.0))]
    );
    // A contact that names retail moves it: retail's limit holds at once.
    h.push(&format!(
        r#"{{"type":"call","ts":"{}","customer_id":"w","rep_id":"r1","segment":"retail"}}"#,
        day(40.0)
    ))
    .unwrap();
    let alerts: Vec<Alert> = h.out.drain(..).collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (
            alerts[0].customer_id.as_str(),
            alerts[0].check,
            alerts[0].status,
            alerts[0].segment.as_str()
        ),
        ("w", Check::PurchaseRecency, Status::Firing, "retail")
    );
    assert_eq!(h.tier("w"), Tier::A, "the top of retail's spend");
    assert_eq!(h.counts("wholesale"), [0, 0, 0]);
    assert_eq!(h.counts("retail")[0], 2);
    // Back to wholesale: its 60 days are not over, so the episode ends.
    h.push(&format!(
        r#"{{"type":"call","ts":"{}","customer_id":"w","rep_id":"r1","segment":"wholesale"}}"#,
        day(41.0)
    ))
    .unwrap();
    let back: Vec<_> = h.take().into_iter().filter(|a| a.0 == "w").collect();
    assert_eq!(back, vec![resolved("w", Check::PurchaseRecency, day(41.0))]);
}

#[test]
fn an_undeclared_segment_is_the_default_and_counted() {
    let mut h = Harness::new(&two_segments());
    h.segment_purchase("x", "outlet", day(0.0), 5.0);
    let c = h.engine.store().customer("x").unwrap();
    assert_eq!(h.engine.segment_names()[usize::from(c.segment())], "retail");
    assert_eq!(h.engine.stats().unknown_segments, 1);
}

#[test]
fn a_late_event_does_not_change_the_segment() {
    let mut h = Harness::new(&two_segments());
    h.segment_purchase("x", "wholesale", day(1.0), 5.0);
    h.segment_purchase("y", "retail", day(2.0), 5.0);
    h.segment_purchase("x", "retail", day(0.5), 5.0);
    let c = h.engine.store().customer("x").unwrap();
    assert_eq!(
        h.engine.segment_names()[usize::from(c.segment())],
        "wholesale"
    );
}

#[test]
fn key_accounts_are_pinned_to_a_and_take_no_rank() {
    let mut h = Harness::new(
        &Config::parse(
            "[rules.purchase_recency]\nA = \"30d\"\nB = \"30d\"\nC = \"off\"\n\
             [rules.contact_gap]\nA = \"off\"\nB = \"off\"\n[rules.rep_turnover]\ntiers = []\n",
        )
        .unwrap(),
    );
    for i in 0..20 {
        h.purchase(&format!("c{i:02}"), day(0.0), 10.0 + f64::from(i));
    }
    h.push(&format!(
        r#"{{"type":"purchase","ts":"{}","customer_id":"k","amount":1,"key_account":true}}"#,
        day(0.0)
    ))
    .unwrap();
    h.until(day(0.1));
    assert_eq!(h.tier("k"), Tier::A, "pinned whatever its spend");
    assert_eq!(h.tier("c19"), Tier::A, "A's 5% is of the 20 unpinned");
    assert_eq!(h.tier("c18"), Tier::B);
    assert_eq!(h.engine.tier_counts(0), [2, 3, 16]);
    h.until(day(31.0));
    let k: Vec<Alert> = h.out.drain(..).filter(|a| a.customer_id == "k").collect();
    assert_eq!(k.len(), 1);
    assert!(k[0].key_account);
    assert!(
        k[0].reason().contains("tier A (key account)"),
        "{}",
        k[0].reason()
    );
    // No longer a key account: ranked by its spend again, and C has no
    // recency limit, so the episode ends.
    h.push(&format!(
        r#"{{"type":"call","ts":"{}","customer_id":"k","rep_id":"r","key_account":false}}"#,
        day(31.0)
    ))
    .unwrap();
    assert_eq!(h.tier("k"), Tier::C);
    assert_eq!(
        h.take(),
        vec![resolved("k", Check::PurchaseRecency, day(31.0))]
    );
}

#[test]
fn a_listed_key_account_is_pinned_from_its_first_event_and_a_reload_unpins_it() {
    let mut listed = shipped_settings();
    listed.segments.key_accounts = vec!["k".into()];
    let mut h = Harness::with_settings(&listed);
    for i in 0..20 {
        h.purchase(&format!("c{i:02}"), day(0.0), 10.0 + f64::from(i));
    }
    h.purchase("k", day(0.0), 1.0);
    assert_eq!(h.tier("k"), Tier::A);
    let mut unlisted = listed;
    unlisted.segments.key_accounts.clear();
    h.engine
        .set_limits(&unlisted.segments, &unlisted.risk, &mut h.out);
    assert_eq!(h.tier("k"), Tier::C);
}

/// Brute force: each ranking group sorted, thresholds at the k-th value.
fn brute_force_tiers(customers: &[(u8, f64, bool)], group: impl Fn(u8) -> u8) -> Vec<Tier> {
    let threshold = |g: u8, pct: f64| {
        let mut spend: Vec<f64> = customers
            .iter()
            .filter(|(s, m, key)| group(*s) == g && *m > 0.0 && !key)
            .map(|c| c.1)
            .collect();
        spend.sort_by(|a, b| b.total_cmp(a));
        let k = ((spend.len() as f64 * pct / 100.0) - 1e-9).ceil().max(0.0) as usize;
        if k == 0 { f64::INFINITY } else { spend[k - 1] }
    };
    customers
        .iter()
        .map(|&(s, m, key)| {
            let (a, b) = (threshold(group(s), 5.0), threshold(group(s), 20.0));
            if key {
                Tier::A
            } else if m <= 0.0 {
                Tier::C
            } else if m >= a {
                Tier::A
            } else if m >= b {
                Tier::B
            } else {
                Tier::C
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// "own" segments rank alone, "global" ones together, key accounts are
    /// A and outside every ranking: as a brute-force sort says.
    #[test]
    fn own_and_global_rankings_match_a_brute_force_model(
        customers in proptest::collection::vec((0u8..4, 0u32..5000, proptest::bool::weighted(0.05)), 1..200),
    ) {
        let config = Config::parse(
            "[segments]\ndefault = \"s0\"\n[segments.s0]\n[segments.s1]\ntiers = \"own\"\n\
             [segments.s2]\ntiers = \"global\"\n[segments.s3]\ntiers = \"global\"\n",
        )
        .unwrap();
        let mut h = Harness::new(&config);
        let customers: Vec<(u8, f64, bool)> =
            customers.into_iter().map(|(s, m, k)| (s, f64::from(m), k)).collect();
        for (i, &(s, m, key)) in customers.iter().enumerate() {
            h.push(&format!(
                r#"{{"type":"purchase","ts":"{}","customer_id":"c{i}","amount":{m},"segment":"s{s}","key_account":{key}}}"#,
                day(0.0)
            ))
            .unwrap();
        }
        h.until(day(0.1));
        let expected = brute_force_tiers(&customers, |s| if s >= 2 { 2 } else { s });
        for (i, want) in expected.iter().enumerate() {
            prop_assert_eq!(h.tier(&format!("c{i}")), *want, "customer c{} {:?}", i, customers[i]);
        }
    }
}
