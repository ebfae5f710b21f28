//! The shipped Grafana dashboard and Prometheus rules are valid and speak
//! only of metrics churnwatch exports.

use std::collections::BTreeSet;
use std::process::Command;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus-rules.yml");
const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana-dashboard.json");

fn promtool_check_rules(path: &std::path::Path) {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
        .expect("promtool is installed (tests/run.sh installs Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool check rules {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Metric names exported by a fresh registry (histograms as base names).
fn exported() -> BTreeSet<String> {
    let registry = prometheus::Registry::new();
    let m = churnwatch::metrics::Metrics::new(&registry, &["x".to_string()]).unwrap();
    // Per-partition series exist once a partition is assigned, per-segment
    // ones once the engine names its segments.
    m.consumer_lag("purchases", 0, 0);
    m.segments(&["default".into()]);
    registry
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect()
}

/// `churnwatch_*` names used in an expression, histogram suffixes removed.
fn used(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("churnwatch_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        out.push(name.strip_suffix("_bucket").unwrap_or(name).to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn rules_pass_promtool_and_use_exported_metrics() {
    promtool_check_rules(std::path::Path::new(RULES));
    let text = std::fs::read_to_string(RULES).unwrap();
    let names = exported();
    let used = used(&text);
    assert!(!used.is_empty());
    for n in used {
        assert!(
            names.contains(&n),
            "rules use {n}, which churnwatch does not export"
        );
    }
}

#[test]
fn dashboard_loads_and_every_query_is_valid_promql_over_exported_metrics() {
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).expect("dashboard JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_string())
        .collect();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "type",
        "reason",
        "rule and tier",
        "tier",
        "threshold",
        "lag",
        "latency",
        "Webhook deliveries",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "a panel about {wanted}"
        );
    }
    let names = exported();
    for e in &exprs {
        for n in used(e) {
            assert!(
                names.contains(&n),
                "dashboard uses {n}, which churnwatch does not export"
            );
        }
    }
    // promtool parses each query as a recording rule.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$job", "churnwatch");
        yaml.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    std::fs::write(&path, yaml).unwrap();
    promtool_check_rules(&path);
}
