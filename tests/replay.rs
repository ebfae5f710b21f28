//! Replays the scenario file through the real binary and checks every alert
//! field by field against what the scenario was written to produce.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

const SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/scenario.jsonl");

fn churnwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_churnwatch"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn alerts(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each alert line is JSON"))
        .collect()
}

/// (customer, rule, cause, status, tier, at, reason, severity)
type Expected = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

const EXPECTED: [Expected; 7] = [
    (
        "big4",
        "rep_turnover",
        Some("handoffs"),
        "firing",
        "B",
        "2026-03-05T09:00:00Z",
        "3 rep changes in the handoff window (limit 3 in 180 days)",
        "medium",
    ),
    (
        "big3",
        "rep_turnover",
        Some("departed"),
        "firing",
        "B",
        "2026-03-06T09:00:00Z",
        "account rep r3 departed; the customer has no active rep (tier B)",
        "medium",
    ),
    (
        "big3",
        "rep_turnover",
        Some("departed"),
        "resolved",
        "B",
        "2026-03-07T09:00:00Z",
        "active rep r4 now serves the customer",
        "medium",
    ),
    (
        "key1",
        "purchase_recency",
        None,
        "firing",
        "A",
        "2026-03-31T10:00:00Z",
        "no purchase for 30 days (tier A limit 30)",
        "high",
    ),
    (
        "big2",
        "contact_gap",
        None,
        "firing",
        "B",
        "2026-03-31T10:05:00Z",
        "no rep contact for 30 days (tier B limit 30)",
        "medium",
    ),
    (
        "key1",
        "purchase_recency",
        None,
        "resolved",
        "A",
        "2026-04-05T10:00:00Z",
        "customer purchased again (tier A limit 30)",
        "high",
    ),
    (
        "big2",
        "contact_gap",
        None,
        "resolved",
        "B",
        "2026-04-10T10:05:00Z",
        "rep r2 contacted the customer (tier B limit 30)",
        "medium",
    ),
];

#[test]
fn scenario_alerts_match_field_by_field() {
    let out = churnwatch(&["replay", "--until", "2026-04-11T00:00:00Z", SCENARIO]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = alerts(&out);
    assert_eq!(got.len(), EXPECTED.len(), "{got:#?}");
    for (a, e) in got.iter().zip(EXPECTED) {
        let (customer, rule, cause, status, tier, at, reason, severity) = e;
        assert_eq!(a["customer_id"], customer);
        assert_eq!(a["rule"], rule);
        assert_eq!(a["cause"], cause.map_or(Value::Null, Value::from));
        assert_eq!(a["status"], status);
        assert_eq!(a["tier"], tier);
        assert_eq!(a["at"], at);
        assert_eq!(a["reason"], reason);
        assert_eq!(a["severity"], severity);
        assert_eq!(a["alert_id"].as_str().map(str::len), Some(32));
        for key in [
            "recency_days",
            "frequency_90d",
            "monetary",
            "days_since_contact",
            "account_rep",
            "rep_handoffs_180d",
            "open_tickets",
        ] {
            assert!(
                a["signals"].get(key).is_some(),
                "signal {key} missing in {a}"
            );
        }
    }
    // An episode's firing and resolved alerts share one id; episodes differ.
    assert_eq!(got[1]["alert_id"], got[2]["alert_id"]);
    assert_eq!(got[3]["alert_id"], got[5]["alert_id"]);
    assert_eq!(got[4]["alert_id"], got[6]["alert_id"]);
    assert_ne!(got[3]["alert_id"], got[4]["alert_id"]);
    // Signals carry the state at `at`.
    let key1 = &got[3]["signals"];
    assert_eq!(key1["recency_days"], 30.0);
    assert_eq!(key1["frequency_90d"], 1);
    assert_eq!(key1["monetary"], 5000.0);
    assert_eq!(
        key1["days_since_contact"], 0.0,
        "the call at the deadline's instant came first"
    );
    assert_eq!(key1["account_rep"], "r1");
    let big4 = &got[0]["signals"];
    assert_eq!(big4["rep_handoffs_180d"], 3);
    assert_eq!(big4["open_tickets"], 1);
    assert_eq!(big4["open_complaints"], 1);
}

#[test]
fn rejects_are_reported_dead_lettered_and_do_not_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dead.jsonl");
    let out = churnwatch(&["replay", "--dead-letter", dlq.to_str().unwrap(), SCENARIO]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("scenario.jsonl:21: wrong type for field `amount`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("scenario.jsonl:31: invalid JSON"),
        "{stderr}"
    );
    let summary = stderr.lines().last().unwrap();
    assert!(
        summary.contains("42 events applied, 2 rejected"),
        "{summary}"
    );
    assert!(summary.contains("20 customers"), "{summary}");
    let dead: Vec<Value> = std::fs::read_to_string(&dlq)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["reason"], "wrong_type");
    assert_eq!(dead[0]["line"], 21);
    assert_eq!(dead[1]["reason"], "invalid_json");
    assert_eq!(dead[1]["raw"], "not json at all");
    // Without --until, deadlines past the last event's time stay pending.
    assert_eq!(
        alerts(&out).len(),
        7,
        "the last event (day 40) lets all seven pass"
    );
}

#[test]
fn reruns_are_identical_and_stdin_equals_a_file() {
    let a = churnwatch(&["replay", "--until", "2026-06-01T00:00:00Z", SCENARIO]);
    let b = churnwatch(&["replay", "--until", "2026-06-01T00:00:00Z", SCENARIO]);
    assert_eq!(a.stdout, b.stdout);
    let piped = Command::new(env!("CARGO_BIN_EXE_churnwatch"))
        .args(["replay", "--until", "2026-06-01T00:00:00Z", "-"])
        .stdin(std::fs::File::open(SCENARIO).unwrap())
        .output()
        .unwrap();
    assert_eq!(a.stdout, piped.stdout);
    assert!(
        alerts(&a).len() > 7,
        "later deadlines fire with a later --until"
    );
}

#[test]
fn bad_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[tiers]\na_percent = 150\n").unwrap();
    let out = churnwatch(&["replay", "--config", cfg.to_str().unwrap(), SCENARIO]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tiers.a_percent"));
}

#[test]
fn shipped_config_replays_like_the_defaults() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/config/churnwatch.toml");
    let a = churnwatch(&[
        "replay",
        "--config",
        cfg,
        "--until",
        "2026-04-11T00:00:00Z",
        SCENARIO,
    ]);
    let b = churnwatch(&["replay", "--until", "2026-04-11T00:00:00Z", SCENARIO]);
    assert_eq!(a.stdout, b.stdout);
}

/// Writes `lines` to a file in a fresh directory.
fn input(lines: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let shown = path.to_str().unwrap().to_string();
    (dir, shown)
}

#[test]
fn redeliveries_count_once_and_are_reported_as_skipped() {
    let order = r#"{"type":"purchase","ts":"2026-01-01T00:00:00Z","customer_id":"c","amount":1000,"event_id":"o-1"}"#;
    let (_dir, file) = input(&[order, order, order]);
    let out = churnwatch(&["replay", &file]);
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("1 events applied, 0 rejected, 2 skipped (duplicate 2)"),
        "{summary}"
    );
}

#[test]
fn the_summary_counts_rejects_by_reason_and_nothing_applied_exits_3() {
    let (_dir, file) = input(&[
        r#"{"type":"purchase","ts":"2026-01-01T00:00:00Z","amount":1}"#,
        r#"{"type":"purchase","ts":"2026-01-01T00:00:00Z","amount":2}"#,
        r#"{"type":"purchase","ts":"yesterday","customer_id":"c","amount":3}"#,
    ]);
    let out = churnwatch(&["replay", &file]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0 events applied, 3 rejected (bad_timestamp 1, missing_field 2)"),
        "{stderr}"
    );
    assert!(stderr.contains("no event applied"), "{stderr}");
}

#[test]
fn max_rejected_fails_a_replay_past_its_limit() {
    let out = churnwatch(&["replay", "--max-rejected", "2", SCENARIO]);
    assert!(out.status.success(), "2 rejects are within 2");
    let out = churnwatch(&["replay", "--max-rejected", "1", SCENARIO]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("2 of 44 lines rejected, over --max-rejected 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = churnwatch(&["replay", "--max-rejected", "5%", SCENARIO]);
    assert!(out.status.success(), "2 of 44 is under 5%");
    let out = churnwatch(&["replay", "--max-rejected", "4%", SCENARIO]);
    assert_eq!(out.status.code(), Some(3), "2 of 44 is over 4%");
    let out = churnwatch(&["replay", "--max-rejected", "lots", SCENARIO]);
    assert_eq!(out.status.code(), Some(2), "a bad limit is a usage error");
}

const COMPANY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/company");

/// `--input` options for the four raw streams of the company fixture.
fn company_inputs() -> Vec<String> {
    [
        ("shop.orders", "orders"),
        ("crm.activities", "activities"),
        ("helpdesk.tickets", "tickets"),
        ("hr.employees", "hr"),
    ]
    .iter()
    .flat_map(|(topic, file)| {
        [
            "--input".to_string(),
            format!("{topic}={COMPANY}/{file}.jsonl"),
        ]
    })
    .collect()
}

#[test]
fn four_raw_streams_replay_like_their_native_conversion() {
    let config = format!("{COMPANY}/churnwatch.toml");
    let native_file = format!("{COMPANY}/native.jsonl");
    let until = "2026-06-01T00:00:00Z";
    let native = churnwatch(&[
        "replay",
        "--config",
        &config,
        "--until",
        until,
        &native_file,
    ]);
    assert!(native.status.success());
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dead.jsonl");
    let mut args = vec![
        "replay".to_string(),
        "--config".into(),
        config.clone(),
        "--until".into(),
        until.into(),
        "--dead-letter".into(),
        dlq.to_str().unwrap().into(),
    ];
    args.extend(company_inputs());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mapped = churnwatch(&args);
    assert!(mapped.status.success());
    assert!(alerts(&native).len() >= 10, "the fixture fires alerts");
    assert_eq!(
        String::from_utf8_lossy(&mapped.stdout),
        String::from_utf8_lossy(&native.stdout),
        "alert for alert"
    );
    let summary = String::from_utf8_lossy(&mapped.stderr);
    let summary = summary.lines().last().unwrap();
    assert!(
        summary.contains("42 events applied, 2 rejected (missing_field 1, unknown_currency 1), 6 skipped (deleted in shop.orders 1, duplicate 2, filtered in crm.activities 1, filtered in hr.employees 1, filtered in shop.orders 1)"),
        "{summary}"
    );
    let dead: Vec<Value> = std::fs::read_to_string(&dlq)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["reason"], "unknown_currency");
    assert!(dead[0]["raw"].as_str().unwrap().contains("JPY"));
    assert!(
        dead[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("/currency: "),
        "names the pointer: {}",
        dead[0]["detail"]
    );
    assert_eq!(dead[1]["reason"], "missing_field");
    assert!(
        dead[1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("/customer_ref: missing field"),
        "{}",
        dead[1]["detail"]
    );
    assert!(
        dead[1]["source"]
            .as_str()
            .unwrap()
            .ends_with("orders.jsonl")
    );
}

#[test]
fn fit_and_evaluate_read_mapped_inputs_and_say_what_they_lost() {
    let config = format!("{COMPANY}/churnwatch.toml");
    let mut args = vec!["fit".to_string(), "--config".into(), config.clone()];
    args.extend(company_inputs());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fit = churnwatch(&args);
    let stderr = String::from_utf8_lossy(&fit.stderr);
    assert!(
        stderr.contains("2 rejected (missing_field 1, unknown_currency 1)"),
        "{stderr}"
    );
    let mut args = vec![
        "evaluate".to_string(),
        "--config".into(),
        config.clone(),
        "--cut".into(),
        "2026-03-20T00:00:00Z".into(),
        "--horizon".into(),
        "30d".into(),
    ];
    args.extend(company_inputs());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let evaluated = churnwatch(&args);
    let stdout = String::from_utf8_lossy(&evaluated.stdout);
    assert!(
        stdout.contains("input: 2 rejected (missing_field 1, unknown_currency 1)"),
        "{stdout}{}",
        String::from_utf8_lossy(&evaluated.stderr)
    );
    let unmapped = churnwatch(&["fit", "--input", "nowhere=x.jsonl"]);
    assert!(!unmapped.status.success());
    assert!(
        String::from_utf8_lossy(&unmapped.stderr)
            .contains("no [[inputs]] entry with topic = \"nowhere\""),
        "{}",
        String::from_utf8_lossy(&unmapped.stderr)
    );
}

#[test]
fn check_shows_sample_events_and_every_reason_with_an_example() {
    let config = format!("{COMPANY}/churnwatch.toml");
    let mut args = vec![
        "check".to_string(),
        "--config".into(),
        config,
        "--sample".into(),
        "2".into(),
    ];
    args.extend(company_inputs());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = churnwatch(&args);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("config: valid; 4 mapped topic(s): shop.orders"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("event ")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("rejected missing_field (1), e.g. "), "{text}");
    assert!(
        text.contains("orders.jsonl:31: /customer_ref: missing field"),
        "{text}"
    );
    assert!(text.contains("rejected unknown_currency (1)"), "{text}");
    assert!(
        text.contains("skipped filtered in hr.employees (1)"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[inputs]]\ntopic = \"t\"\nevent = \"purchase\"\n[inputs.fields]\ncustomer_id = \"/c\"\nts = \"/t\"\n").unwrap();
    let out = churnwatch(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inputs[0].fields.amount"));
}

const WHOLESALER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wholesaler");

/// Sorted alert lines of a replay of `events` under `config`.
fn replayed(config: &std::path::Path, events: &std::path::Path) -> Vec<String> {
    let out = churnwatch(&[
        "replay",
        "--config",
        config.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// One process over a wholesaler's two segments ("own" tiers) gives exactly
/// the alerts of one process per segment run with that segment's limits as
/// its global rules (rep events shared), alert for alert.
#[test]
fn two_segments_in_one_process_equal_one_process_per_segment() {
    let dir = tempfile::tempdir().unwrap();
    let all = std::path::Path::new(WHOLESALER).join("events.jsonl");
    let text = std::fs::read_to_string(&all).unwrap();
    let only = |keep: &dyn Fn(&str) -> bool, name: &str| {
        let path = dir.path().join(name);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"type\":\"rep\"") || keep(l))
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let wholesale = only(&|l| l.contains("\"segment\":\"wholesale\""), "w.jsonl");
    let retail = only(&|l| !l.contains("\"segment\""), "r.jsonl");
    let config = |name: &str| std::path::Path::new(WHOLESALER).join(name);
    let together = replayed(&config("churnwatch.toml"), &all);
    let mut apart = replayed(&config("wholesale-only.toml"), &wholesale);
    apart.extend(replayed(&config("retail-only.toml"), &retail));
    apart.sort();
    let segment_count = |s: &str| {
        together
            .iter()
            .filter(|l| l.contains(&format!("\"segment\":\"{s}\"")))
            .count()
    };
    assert!(segment_count("wholesale") > 0 && segment_count("retail") > 0);
    assert_eq!(together.len(), apart.len());
    assert_eq!(together, apart, "not one alert differs");
    // Judged by retail's rhythm, the wholesale accounts alert far more.
    let as_retail = replayed(&config("retail-only.toml"), &wholesale).len();
    assert!(
        as_retail > 2 * segment_count("wholesale"),
        "{as_retail} vs {}",
        segment_count("wholesale")
    );
}

/// "global" tiers are today's one ranking: with the same rules, the
/// alerts are those of a run without segments but for the segment field.
#[test]
fn global_segments_share_one_ranking() {
    let dir = tempfile::tempdir().unwrap();
    let all = std::path::Path::new(WHOLESALER).join("events.jsonl");
    let global = dir.path().join("global.toml");
    std::fs::write(
        &global,
        "[segments]\ndefault = \"retail\"\n[segments.wholesale]\ntiers = \"global\"\n\
         [segments.retail]\ntiers = \"global\"\n",
    )
    .unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, "").unwrap();
    let strip = |lines: Vec<String>| -> Vec<Value> {
        let mut v: Vec<Value> = lines
            .iter()
            .map(|l| {
                let mut a: Value = serde_json::from_str(l).unwrap();
                a.as_object_mut().unwrap().remove("segment");
                a
            })
            .collect();
        v.sort_by_key(|a| a.to_string());
        v
    };
    let segmented = strip(replayed(&global, &all));
    assert!(!segmented.is_empty());
    assert_eq!(segmented, strip(replayed(&plain, &all)));
}
