//! Webhook delivery to real local receivers: one healthy, one that fails
//! first, one that refuses, one down. Signatures are checked with an
//! independent HMAC implementation, not the crate that signs them. (How
//! endpoints consume the alert topic, survive crashes and never block one
//! another is tested in `kafka_mock.rs`.)

mod common;

use tokio_util::sync::CancellationToken;

use churnwatch::config::Config;
use churnwatch::config::WebhookConfig;
use churnwatch::engine::Engine;
use churnwatch::engine::alert::Alert;
use churnwatch::engine::event::Ts;
use churnwatch::engine::native::decode;
use churnwatch::engine::tier::Tier;
use churnwatch::engine::watermark::Clock;
use churnwatch::metrics::Metrics;
use churnwatch::webhook::Endpoint;
use common::*;

/// A URL where nothing listens.
fn down_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/hook")
}

fn endpoint(name: &str, url: &str, dead: &std::path::Path) -> WebhookConfig {
    let text = format!(
        "[[webhooks]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{}\"\nallow_private_network = true\nmax_attempts = 3\nbackoff_initial = \"10ms\"\nbackoff_max = \"40ms\"\ntimeout = \"5s\"\ndead_letter_file = \"{}\"\n",
        secret(),
        dead.display()
    );
    Config::parse(&text)
        .expect("webhook config")
        .webhooks
        .remove(0)
}

/// The scenario's alerts (seven: firing and resolved, tiers A and B).
fn scenario_alerts() -> Vec<Alert> {
    let mut engine = Engine::new(&Config::default().engine_settings(), Clock::Event);
    let mut out = Vec::new();
    for line in scenario_lines() {
        if let Ok(ev) = decode(line.as_bytes(), engine.decode_limits()) {
            engine.apply(ev, 0, &mut out).unwrap();
        }
    }
    engine.advance_to(Ts::parse_rfc3339("2026-04-11T00:00:00Z").unwrap(), &mut out);
    assert_eq!(out.len(), 7);
    out
}

fn dead_letters(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every endpoint delivers every alert it wants, in order, concurrently
/// with the others, as its consumer of the alert topic would.
async fn deliver_all(configs: &[WebhookConfig], metrics: &Metrics, alerts: &[Alert]) {
    let stop = CancellationToken::new();
    let now = chrono::Utc::now().timestamp_millis();
    let bodies: Vec<Vec<u8>> = alerts
        .iter()
        .map(|a| serde_json::to_vec(a).unwrap())
        .collect();
    let tasks: Vec<_> = configs
        .iter()
        .map(|c| {
            let endpoint = Endpoint::new(c, metrics.clone()).unwrap();
            let (bodies, stop) = (bodies.clone(), stop.clone());
            tokio::spawn(async move {
                for body in bodies {
                    if let Some(job) = endpoint.job(&body, now) {
                        assert!(endpoint.deliver(&job, &stop).await, "settled");
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_signed_retries_server_errors_and_dead_letters_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (ok_url, ok_seen) = receiver(Behaviour::Ok).await;
    let (flaky_url, flaky_seen) = receiver(Behaviour::FailFirst(2)).await;
    let (refuse_url, refuse_seen) = receiver(Behaviour::Refuse).await;
    let dead = |n: &str| dir.path().join(format!("{n}.jsonl"));
    let mut only_a = endpoint("only-a", &ok_url, &dead("only-a"));
    only_a.tiers = vec![Tier::A];
    let configs = vec![
        endpoint("ok", &ok_url, &dead("ok")),
        endpoint("flaky", &flaky_url, &dead("flaky")),
        endpoint("refuse", &refuse_url, &dead("refuse")),
        endpoint("down", &down_url(), &dead("down")),
        only_a,
    ];
    let registry = prometheus::Registry::new();
    let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
    let metrics = Metrics::new(&registry, &names).unwrap();
    let alerts = scenario_alerts();
    deliver_all(&configs, &metrics, &alerts).await;
    assert_eq!(dead_letters(&dead("down")).len(), 7);
    assert_eq!(dead_letters(&dead("refuse")).len(), 7);
    assert_eq!(flaky_seen.lock().unwrap().len(), 9);

    let ok = ok_seen.lock().unwrap().clone();
    // 7 alerts to "ok", plus the 2 tier-A ones to "only-a" on the same receiver.
    assert_eq!(ok.len(), 9);
    assert!(ok.iter().all(verify), "signatures verify independently");
    let ids: std::collections::BTreeSet<String> = ok
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
        .collect();
    for a in &alerts {
        assert!(
            ids.contains(&format!("{}-{}", a.alert_id, a.status.as_str())),
            "webhook-id is alert id plus status"
        );
    }
    let first_id = format!("{}-{}", alerts[0].alert_id, alerts[0].status.as_str());
    let first = ok
        .iter()
        .find(|r| r.headers["webhook-id"] == first_id.as_str())
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(
        body,
        serde_json::to_value(&alerts[0]).unwrap(),
        "the body is the alert JSON"
    );

    let flaky = flaky_seen.lock().unwrap().clone();
    assert_eq!(
        flaky[0].headers["webhook-id"], flaky[1].headers["webhook-id"],
        "retries keep the idempotency key"
    );
    assert_eq!(
        flaky[1].headers["webhook-id"],
        flaky[2].headers["webhook-id"]
    );
    assert!(flaky.iter().all(verify));
    assert!(
        dead_letters(&dead("flaky")).is_empty(),
        "two 500s then success: delivered"
    );

    assert_eq!(refuse_seen.lock().unwrap().len(), 7, "a 400 is not retried");
    let refused = dead_letters(&dead("refuse"));
    assert!(
        refused
            .iter()
            .all(|d| d["reason"] == "rejected" && d["alert"]["alert_id"].is_string())
    );
    let down = dead_letters(&dead("down"));
    assert!(down.iter().all(|d| d["reason"] == "exhausted"));

    let text = churnwatch::metrics::render(&registry);
    for (line, want) in [
        (
            "churnwatch_webhook_deliveries_total{endpoint=\"flaky\",outcome=\"retried\"}",
            2,
        ),
        (
            "churnwatch_webhook_deliveries_total{endpoint=\"flaky\",outcome=\"delivered\"}",
            7,
        ),
        (
            "churnwatch_webhook_deliveries_total{endpoint=\"down\",outcome=\"failed\"}",
            7,
        ),
        (
            "churnwatch_webhook_deliveries_total{endpoint=\"down\",outcome=\"retried\"}",
            14,
        ),
        (
            "churnwatch_webhook_deliveries_total{endpoint=\"refuse\",outcome=\"failed\"}",
            7,
        ),
    ] {
        assert!(
            text.contains(&format!("{line} {want}")),
            "{line} {want} in\n{text}"
        );
    }
    assert!(!text.contains("whsec_"), "secrets never reach metrics");
}

/// One alert through a fresh endpoint to `url`, settled (delivered or
/// dead-lettered); returns the dead letters.
async fn deliver_one(config: &WebhookConfig, dead: &std::path::Path) -> Vec<serde_json::Value> {
    let metrics = Metrics::new(
        &prometheus::Registry::new(),
        std::slice::from_ref(&config.name),
    )
    .unwrap();
    deliver_all(
        std::slice::from_ref(config),
        &metrics,
        &scenario_alerts()[..1],
    )
    .await;
    dead_letters(dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_attempt_and_its_target_never_hears_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (target, target_seen) = receiver(Behaviour::Ok).await;
    let (redirecting, redirect_seen) = receiver(Behaviour::Redirect(target)).await;
    let dead = dir.path().join("dead.jsonl");
    let letters = deliver_one(&endpoint("team", &redirecting, &dead), &dead).await;
    assert_eq!(
        redirect_seen.lock().unwrap().len(),
        3,
        "retried under the policy"
    );
    assert!(
        target_seen.lock().unwrap().is_empty(),
        "the redirect target got nothing"
    );
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["reason"], "exhausted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_inward_is_refused_at_connect_time() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver(Behaviour::Ok).await;
    // A name, not a literal address: only the resolved address is inward
    // (the config check at start refuses `localhost` by name too, so the
    // flag is turned off after parsing).
    let named = url.replace("127.0.0.1", "localhost");
    let dead = dir.path().join("dead.jsonl");
    let mut config = endpoint("team", &named, &dead);
    config.allow_private_network = false;
    let letters = deliver_one(&config, &dead).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the inward address"
    );
    assert_eq!(letters.len(), 1, "dead-lettered once the attempts ran out");
    config.allow_private_network = true;
    let allowed_dead = dir.path().join("allowed.jsonl");
    config.dead_letter_file = allowed_dead.clone();
    assert!(deliver_one(&config, &allowed_dead).await.is_empty());
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the same name is delivered to when allowed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_within_a_floor_and_the_backoff_cap() {
    let dir = tempfile::tempdir().unwrap();
    for (after, label) in [("0", "floor"), ("3600", "cap")] {
        let (url, seen) = receiver(Behaviour::RetryAfter(after, 1)).await;
        let dead = dir.path().join(format!("{label}.jsonl"));
        assert!(
            deliver_one(&endpoint("team", &url, &dead), &dead)
                .await
                .is_empty()
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{label}: one refusal, then delivered");
        let gap = seen[1].at - seen[0].at;
        assert!(
            gap >= std::time::Duration::from_secs(1) && gap < std::time::Duration::from_secs(30),
            "{label}: Retry-After {after} waited {gap:?}, within [1 s, max(backoff_max, 1 s)]"
        );
    }
}

/// A secret from a file (a mounted Kubernetes Secret) signs as the inline
/// one does; a missing or bad file stops the endpoint from starting with
/// an error naming the file, never what it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_signs_and_a_bad_one_is_named_without_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver(Behaviour::Ok).await;
    let dead = dir.path().join("dead.jsonl");
    let key_file = dir.path().join("webhook-secret");
    std::fs::write(&key_file, format!("  {}\n", secret())).unwrap();
    let mut config = endpoint("team", &url, &dead);
    config.secret = None;
    config.secret_file = Some(key_file.clone());
    let letters = deliver_one(&config, &dead).await;
    assert!(letters.is_empty(), "{letters:?}");
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(verify(&got[0]), "signed with the file's key");

    let metrics = Metrics::new(&prometheus::Registry::new(), &["team".to_string()]).unwrap();
    std::fs::write(&key_file, "whsec_not base64 at all, secret-ish\n").unwrap();
    let err = Endpoint::new(&config, metrics.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("webhook-secret") && err.contains("whsec_<base64 key>"),
        "{err}"
    );
    assert!(
        !err.contains("secret-ish"),
        "the content is never shown: {err}"
    );
    config.secret_file = Some(dir.path().join("missing"));
    let err = Endpoint::new(&config, metrics).err().unwrap().to_string();
    assert!(err.contains("team") && err.contains("missing"), "{err}");
}

/// An endpoint with `segments` receives the alerts of those segments'
/// customers only; one without receives them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_filtered_by_segment_gets_that_segments_alerts_only() {
    let dir = tempfile::tempdir().unwrap();
    let (url, seen) = receiver(Behaviour::Ok).await;
    let (all_url, all_seen) = receiver(Behaviour::Ok).await;
    let mut wholesale = endpoint("wholesale-team", &url, &dir.path().join("w.jsonl"));
    wholesale.segments = vec!["wholesale".into()];
    let everyone = endpoint("everyone", &all_url, &dir.path().join("e.jsonl"));
    let mut alerts = scenario_alerts();
    let first = alerts[0].customer_id.clone();
    for a in alerts.iter_mut().filter(|a| a.customer_id == first) {
        a.segment = "wholesale".into();
    }
    let expected: Vec<String> = alerts
        .iter()
        .filter(|a| a.segment == "wholesale")
        .map(|a| format!("{}-{}", a.alert_id, a.status.as_str()))
        .collect();
    assert!(!expected.is_empty() && expected.len() < alerts.len());
    let metrics = Metrics::new(
        &prometheus::Registry::new(),
        &["wholesale-team".to_string(), "everyone".to_string()],
    )
    .unwrap();
    deliver_all(&[wholesale, everyone], &metrics, &alerts).await;
    let got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(all_seen.lock().unwrap().len(), alerts.len());
}
