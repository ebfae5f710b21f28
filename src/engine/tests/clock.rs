//! The wall clock, forgetting, the risk rule, adaptive recency and money.

use super::*;

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
    let [a, b, _] = h.engine.tier_counts(0);
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
    assert_eq!(
        e.tier_counts(0)[0],
        0,
        "off: only the hourly schedule ranks"
    );
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
    let limits =
        crate::engine::rule::Limits::new(&risk_only(80).engine_settings().rules, &settings.risk);
    let windows = crate::engine::customer::Windows::new(&settings);
    let score =
        |t: Ts| crate::engine::risk::score(&customer, t, &limits.risk_context(&windows, false));
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
