//! `generate --planted-churn`, `fit` and `evaluate` end to end through the
//! binary: on a population whose churners are known, the risk score ranks
//! them far above chance, and every output (`--json`, `--scores`,
//! `--report`, the `[risk.model]` fragment) carries what it promises.

use std::collections::HashMap;
use std::process::Command;

use churnwatch::evaluate::roc_auc;

fn churnwatch(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_churnwatch"))
        .args(args)
        .output()
        .expect("churnwatch runs");
    assert!(
        out.status.success(),
        "churnwatch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn evaluate_ranks_planted_churners_far_above_chance() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (events, truth, scores, report) = (
        path("events.jsonl"),
        path("truth.jsonl"),
        path("scores.jsonl"),
        path("report.html"),
    );
    churnwatch(&[
        "generate",
        "--customers",
        "3000",
        "--days",
        "200",
        "--seed",
        "9",
        "--planted-churn",
        "0.3",
        "--truth",
        &truth,
        "--output",
        &events,
    ]);
    // Day 120 of 200: planted churn days run from 50 to 150.
    let cut = "2026-05-01T00:00:00Z";
    let json = churnwatch(&[
        "evaluate",
        "--cut",
        cut,
        "--horizon",
        "60d",
        "--json",
        "--scores",
        &scores,
        "--report",
        &report,
        &events,
    ]);
    let e: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(e["model_source"], "fitted");
    let group = |name: &str| {
        e["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == name)
            .unwrap_or_else(|| panic!("group {name}"))
            .clone()
    };
    let auc = |g: &serde_json::Value, score: &str| {
        g["scores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["score"] == score)
            .and_then(|s| s["roc_auc"].as_f64())
            .unwrap_or_else(|| panic!("{score} AUC in {g}"))
    };
    let ab = group("A+B");
    assert!(auc(&ab, "risk") > 0.75, "{ab}");
    assert!(ab["customers"].as_u64().unwrap() > 300, "{ab}");
    let rules = ab["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["rule"] == "purchase_recency" && r["firing"].as_u64() > Some(0))
    );

    // Against the planted truth: customers planted to stop by the cut
    // (day 120) versus everyone else, ranked by risk at the cut.
    let planted: HashMap<String, u64> = std::fs::read_to_string(&truth)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|t| {
            (
                t["customer_id"].as_str().unwrap().to_string(),
                t["day"].as_u64().unwrap(),
            )
        })
        .collect();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() > 2500, "one line per customer seen by the cut");
    for key in [
        "customer_id",
        "tier",
        "risk",
        "recency_days",
        "frequency",
        "monetary",
        "p_alive",
        "churned",
    ] {
        assert!(rows[0].get(key).is_some(), "{key} in {}", rows[0]);
    }
    let scored: Vec<(f64, bool)> = rows
        .iter()
        .map(|r| {
            let id = r["customer_id"].as_str().unwrap();
            let gone = planted.get(id).is_some_and(|&d| d <= 120);
            (r["risk"].as_f64().unwrap(), gone)
        })
        .collect();
    let planted_auc = roc_auc(&scored).unwrap();
    assert!(
        planted_auc > 0.8,
        "risk ranks the churned-by-the-cut at AUC {planted_auc}"
    );

    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.matches("<svg").count() == 4);
    // Self-contained: nothing to fetch.
    assert!(!html.contains("<link") && !html.contains("<script") && !html.contains("src="));
    assert!(html.contains("A+B") && html.contains("ROC AUC"));
}

#[test]
fn fit_prints_a_risk_model_fragment_the_config_reads() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl").display().to_string();
    let fragment_file = dir.path().join("model.toml");
    churnwatch(&[
        "generate",
        "--customers",
        "500",
        "--days",
        "120",
        "--output",
        &events,
    ]);
    let printed = churnwatch(&[
        "fit",
        "--until",
        "2026-04-01T00:00:00Z",
        "--output",
        &fragment_file.display().to_string(),
        &events,
    ]);
    assert!(
        printed.contains("log-likelihood") && printed.contains("[risk.model]"),
        "{printed}"
    );
    assert_eq!(std::fs::read_to_string(&fragment_file).unwrap(), printed);
    let config = churnwatch::config::Config::parse(&printed).expect("a valid config fragment");
    let m = config.risk.model.expect("the model is set");
    assert!(m.is_valid(), "{m:?}");
}

/// With several segments, `evaluate` reports each segment × tier group
/// besides the groups over everyone, and each row names its segment.
#[test]
fn evaluate_reports_each_segment_and_tier() {
    let dir = tempfile::tempdir().unwrap();
    let scores = dir.path().join("scores.jsonl").display().to_string();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/wholesaler");
    let json = churnwatch(&[
        "evaluate",
        "--config",
        &format!("{data}/churnwatch.toml"),
        "--cut",
        "2026-04-01T00:00:00Z",
        "--horizon",
        "30d",
        "--json",
        "--scores",
        &scores,
        &format!("{data}/events.jsonl"),
    ]);
    let e: serde_json::Value = serde_json::from_str(&json).unwrap();
    let customers = |segment: Option<&str>, group: &str| {
        e["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == group && g["segment"].as_str() == segment)
            .unwrap_or_else(|| panic!("{segment:?} {group} in {e}"))["customers"]
            .as_u64()
            .unwrap()
    };
    let (all, wholesale, retail) = (
        customers(None, "all"),
        customers(Some("wholesale"), "all"),
        customers(Some("retail"), "all"),
    );
    assert_eq!(all, wholesale + retail);
    assert!(wholesale >= 30 && retail >= 150, "{wholesale} {retail}");
    assert!(
        customers(Some("wholesale"), "A") >= 1,
        "ranked within its own"
    );
    let rows = std::fs::read_to_string(&scores).unwrap();
    let wholesale_rows = rows
        .lines()
        .filter(|l| l.contains("\"segment\":\"wholesale\""))
        .count() as u64;
    assert_eq!(wholesale_rows, wholesale);
}
