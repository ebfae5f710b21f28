//! The HTTP API on a real server (port 0), over a store the engine fills.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use churnwatch::config::Config;
use churnwatch::engine::Engine;
use churnwatch::engine::alert::Status;
use churnwatch::engine::customer::Windows;
use churnwatch::engine::event::{Ts, decode};
use churnwatch::engine::store::Store;
use churnwatch::engine::watermark::Clock;
use churnwatch::http::{ApiState, Readiness, serve};
use churnwatch::metrics::{DeliveryOutcome, Metrics};
use common::*;

struct Api {
    base: String,
    ready: Arc<Readiness>,
    firing_key1: String,
    registry: prometheus::Registry,
}

/// Replays the scenario up to 2026-03-31T11:00Z into a store and serves it.
async fn api() -> Api {
    let config = Config::default();
    let store = Store::default();
    let mut engine = Engine::with_store(&config.engine_settings(), Clock::Event, store.clone());
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry, &["team".to_string()]).unwrap();
    let mut out = Vec::new();
    let cut = Ts::parse_rfc3339("2026-03-31T11:00:00Z").unwrap();
    for line in scenario_lines() {
        match decode(line.as_bytes(), engine.decode_limits()) {
            Ok(ev) if ev.ts <= cut => {
                let kind = ev.event_type();
                engine.apply(ev, 0, &mut out).unwrap();
                metrics.event_applied(kind, 1e-6);
            }
            Ok(_) => {}
            Err(reason) => metrics.event_rejected(None, &reason),
        }
    }
    engine.advance_to(cut, &mut out);
    for a in &out {
        metrics.alert_emitted(a);
    }
    metrics.engine_state(
        engine.tier_counts(),
        engine.thresholds(),
        engine.watermark(),
        engine.stats(),
        0,
    );
    metrics.consumer_lag("purchases", 0, 3);
    metrics.webhook_delivery("team", DeliveryOutcome::Delivered);
    let firing_key1 = out
        .iter()
        .find(|a| a.customer_id == "key1" && a.status == Status::Firing)
        .map(|a| a.alert_id.to_string())
        .expect("key1 fired");
    let ready = Arc::new(Readiness::new(
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    ));
    let state = ApiState {
        store,
        registry: registry.clone(),
        ready: ready.clone(),
        windows: Windows::new(&config.engine_settings()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, state, std::future::pending()));
    Api {
        base,
        ready,
        firing_key1,
        registry,
    }
}

async fn get(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.expect("request");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test]
async fn health_and_readiness() {
    let api = api().await;
    assert_eq!(get(format!("{}/healthz", api.base)).await.0, 200);
    assert_eq!(get(format!("{}/readyz", api.base)).await.0, 503);
    api.ready.report(true);
    assert_eq!(get(format!("{}/readyz", api.base)).await.0, 200);
}

#[tokio::test]
async fn customer_lookup_shows_live_state_and_active_alerts() {
    let api = api().await;
    let (status, body) = get(format!("{}/customers/key1", api.base)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tier"], "A");
    assert_eq!(v["account_rep"], "r1");
    assert_eq!(v["frequency_90d"], 1);
    assert_eq!(v["monetary"], 5000.0);
    assert_eq!(v["as_of"], "2026-03-31T11:00:00Z");
    assert!((v["recency_days"].as_f64().unwrap() - (30.0 + 1.0 / 24.0)).abs() < 1e-9);
    assert_eq!(v["active_alerts"][0]["rule"], "purchase_recency");
    assert_eq!(v["active_alerts"][0]["alert_id"], api.firing_key1.as_str());
    assert_eq!(v["active_alerts"][0]["fired_at"], "2026-03-31T10:00:00Z");
    let big4: serde_json::Value =
        serde_json::from_str(&get(format!("{}/customers/big4", api.base)).await.1).unwrap();
    assert_eq!(big4["rep_handoffs_180d"], 3);
    assert_eq!(big4["open_complaints"], 1);
    let (status, _) = get(format!("{}/customers/nobody", api.base)).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn active_alerts_filter_by_tier_rule_status_and_limit() {
    let api = api().await;
    let list = |q: &str| {
        let url = format!("{}/alerts{q}", api.base);
        async move {
            let (s, b) = get(url).await;
            (
                s,
                serde_json::from_str::<serde_json::Value>(&b).unwrap_or_default(),
            )
        }
    };
    let (_, all) = list("").await;
    let customers: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["customer_id"].as_str().unwrap())
        .collect();
    // At 11:00 on 03-31: key1 recency, big2 contact gap, big4 handoffs fire.
    assert_eq!(customers.len(), 3, "{all}");
    let (_, a) = list("?status=firing&tier=A").await;
    assert_eq!(a.as_array().unwrap().len(), 1);
    assert_eq!(a[0]["customer_id"], "key1");
    let (_, gap) = list("?rule=contact_gap").await;
    assert_eq!(gap[0]["customer_id"], "big2");
    let (_, one) = list("?limit=1").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["customer_id"], "big2", "newest first");
    let (_, resolved) = list("?status=resolved").await;
    assert_eq!(resolved.as_array().unwrap().len(), 0);
    assert_eq!(list("?status=maybe").await.0, 400);
    assert_eq!(list("?rule=nope").await.0, 400);
}

#[tokio::test]
async fn metrics_pass_promtool_and_carry_the_contract_names() {
    let api = api().await;
    let (status, text) = get(format!("{}/metrics", api.base)).await;
    assert_eq!(status, 200);
    for name in [
        "churnwatch_events_total{outcome=\"applied\",type=\"purchase\"}",
        "churnwatch_dead_letters_total{reason=\"invalid_json\"} 1",
        "churnwatch_alerts_total{rule=\"purchase_recency\",status=\"firing\",tier=\"A\"} 1",
        "churnwatch_customers{tier=\"A\"} 1",
        "churnwatch_tier_threshold{tier=\"A\"} 5000",
        "churnwatch_watermark_timestamp_seconds",
        "churnwatch_event_apply_seconds_bucket",
        "churnwatch_alert_latency_seconds_bucket",
        "churnwatch_consumer_lag{partition=\"0\",topic=\"purchases\"} 3",
        "churnwatch_webhook_deliveries_total{endpoint=\"team\",outcome=\"delivered\"} 1",
        "churnwatch_webhook_queue_depth{endpoint=\"team\"} 0",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(
        churnwatch::metrics::render(&api.registry).lines().count(),
        text.lines().count()
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (tests/run.sh installs Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
