//! The HTTP API on a real server (port 0), over a store the engine fills.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use churnwatch::config::Config;
use churnwatch::config::{HttpConfig, Role, TokenConfig};
use churnwatch::engine::Engine;
use churnwatch::engine::alert::Status;
use churnwatch::engine::event::Ts;
use churnwatch::engine::native::decode;
use churnwatch::engine::store::Store;
use churnwatch::engine::watermark::Clock;
use churnwatch::http::{ApiState, Listeners, Readiness, start};
use churnwatch::metrics::{DeliveryOutcome, Metrics};
use common::*;

struct Api {
    /// The data API.
    base: String,
    /// The operations listener.
    ops: String,
    ready: Arc<Readiness>,
    firing_key1: String,
    registry: prometheus::Registry,
}

/// Replays the scenario up to 2026-03-31T11:00Z into a store and serves it
/// with the default HTTP settings (no tokens: loopback only).
async fn api() -> Api {
    api_with(HttpConfig::default()).await
}

/// [`api`] with `http` (its addresses are replaced by free loopback ports).
async fn api_with(http: HttpConfig) -> Api {
    api_serving(http, |s| s).await
}

/// [`api_with`], the state passed through `extend` (to add an inbox).
async fn api_serving(http: HttpConfig, extend: impl FnOnce(ApiState) -> ApiState) -> Api {
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
                metrics.events_applied(kind, 1, 1e-6);
            }
            Ok(_) => {}
            Err(reason) => metrics.event_rejected(None, &reason),
        }
    }
    engine.advance_to(cut, &mut out);
    for a in &out {
        metrics.alert_emitted(a);
    }
    metrics.segments(engine.segment_names());
    metrics.engine_state(&engine, 0);
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
    let state = extend(ApiState::new(
        store,
        registry.clone(),
        ready.clone(),
        &config.engine_settings(),
    ));
    let listeners = Listeners {
        data: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ops: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let scheme = if http.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let base = format!(
        "{scheme}://localhost:{}",
        listeners.data.local_addr().unwrap().port()
    );
    let ops = format!(
        "http://127.0.0.1:{}",
        listeners.ops.local_addr().unwrap().port()
    );
    start(listeners, state, &http, std::future::pending())
        .await
        .expect("HTTP starts");
    Api {
        base,
        ops,
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
    assert_eq!(get(format!("{}/healthz", api.ops)).await.0, 200);
    assert_eq!(get(format!("{}/readyz", api.ops)).await.0, 503);
    api.ready.report(true);
    assert_eq!(get(format!("{}/readyz", api.ops)).await.0, 200);
    for (listener, path) in [
        (&api.base, "/metrics"),
        (&api.ops, "/alerts"),
        (&api.ops, "/customers/key1"),
    ] {
        assert_eq!(
            get(format!("{listener}{path}")).await.0,
            404,
            "{path} is served on its own listener only"
        );
    }
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
    // The risk score and its reasons: largest first, points summing to it.
    let risk = v["risk"].as_u64().unwrap();
    let reasons = v["risk_reasons"].as_array().unwrap();
    let points: Vec<u64> = reasons
        .iter()
        .map(|r| r["points"].as_u64().unwrap())
        .collect();
    assert_eq!(points.iter().sum::<u64>(), risk, "{v}");
    assert!(points.windows(2).all(|w| w[0] >= w[1]), "{v}");
    assert_eq!(reasons[0]["factor"], "lapse");
    let text = reasons[0]["reason"].as_str().unwrap();
    assert!(
        text.starts_with("no purchase for 30 days after 1 purchase day"),
        "{text}"
    );
    assert_eq!(
        reasons.len(),
        1,
        "contacted an hour ago, no rep or ticket trouble: {v}"
    );
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
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["customer_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, all) = list("").await;
    // At 11:00 on 03-31: key1 recency, big2 contact gap, big4 handoffs fire.
    assert_eq!(ids(&all).len(), 3, "{all}");
    assert!(all["next"].is_null(), "one page holds them: {all}");
    let (_, a) = list("?status=firing&tier=A").await;
    assert_eq!(ids(&a), ["key1"]);
    let (_, gap) = list("?rule=contact_gap").await;
    assert_eq!(ids(&gap), ["big2"]);
    // Page by page with the cursor: the same order, nothing twice.
    let mut paged = Vec::new();
    let mut query = "?limit=1".to_string();
    loop {
        let (status, page) = list(&query).await;
        assert_eq!(status, 200, "{page}");
        paged.extend(ids(&page));
        match page["next"].as_str() {
            Some(next) => query = format!("?limit=1&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(paged, ids(&all), "pages concatenate to the whole list");
    assert_eq!(paged[0], "big2", "newest first");
    let (_, resolved) = list("?status=resolved").await;
    assert_eq!(ids(&resolved).len(), 0);
    assert_eq!(list("?status=maybe").await.0, 400);
    assert_eq!(list("?rule=nope").await.0, 400);
    assert_eq!(list("?cursor=garbage").await.0, 400);
    let (status, capped) = list("?limit=100000").await;
    assert_eq!(status, 200, "a large limit is capped, not refused");
    assert_eq!(ids(&capped).len(), 3);
}

#[tokio::test]
async fn metrics_pass_promtool_and_carry_the_contract_names() {
    let api = api().await;
    let (status, text) = get(format!("{}/metrics", api.ops)).await;
    assert_eq!(status, 200);
    for name in [
        "churnwatch_events_total{outcome=\"applied\",type=\"purchase\"}",
        "churnwatch_dead_letters_total{reason=\"invalid_json\"} 1",
        "churnwatch_alerts_total{rule=\"purchase_recency\",segment=\"default\",status=\"firing\",tier=\"A\"} 1",
        "churnwatch_customers{segment=\"default\",tier=\"A\"} 1",
        "churnwatch_tier_threshold{segment=\"default\",tier=\"A\"} 5000",
        "churnwatch_unknown_segment_total 0",
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
    // Every tier-A customer in exactly one risk band.
    let in_bands: f64 = text
        .lines()
        .filter(|l| l.starts_with("churnwatch_customers_by_risk{") && l.contains("tier=\"A\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(in_bands, 1.0, "{text}");
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

/// A token held in a file and one given by its SHA-256, as an operator
/// would configure them.
fn tokens(dir: &std::path::Path) -> Vec<TokenConfig> {
    use sha2::Digest;
    let file = dir.join("operator.token");
    std::fs::write(&file, "operator-token-7f3a\n").unwrap();
    vec![
        TokenConfig {
            name: "dashboard".into(),
            role: Role::Viewer,
            token_file: None,
            token_sha256: Some(hex::encode(sha2::Sha256::digest(b"viewer-token-c41d"))),
        },
        TokenConfig {
            name: "retention-lead".into(),
            role: Role::Operator,
            token_file: Some(file),
            token_sha256: None,
        },
    ]
}

async fn send(method: reqwest::Method, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new().request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("request")
}

#[tokio::test]
async fn tokens_decide_who_reads_and_who_writes_and_operations_need_none() {
    let dir = tempfile::tempdir().unwrap();
    let api = api_with(HttpConfig {
        tokens: tokens(dir.path()),
        ..HttpConfig::default()
    })
    .await;
    let alerts = format!("{}/alerts", api.base);
    for token in [None, Some("wrong"), Some("viewer-token-c41")] {
        let r = send(reqwest::Method::GET, &alerts, token).await;
        assert_eq!(r.status(), 401, "{token:?}");
        assert_eq!(
            r.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer realm=\"churnwatch\""
        );
        let body: serde_json::Value = r.json().await.expect("a JSON error body");
        assert!(body["error"].is_string(), "{body}");
        for secret in ["viewer-token", "operator-token", "wrong"] {
            assert!(!body.to_string().contains(secret), "no token in {body}");
        }
    }
    for token in ["viewer-token-c41d", "operator-token-7f3a"] {
        let r = send(reqwest::Method::GET, &alerts, Some(token)).await;
        assert_eq!(r.status(), 200, "{token} reads");
    }
    let viewer_write = send(reqwest::Method::POST, &alerts, Some("viewer-token-c41d")).await;
    assert_eq!(viewer_write.status(), 403, "a viewer may not write");
    let operator_write = send(reqwest::Method::POST, &alerts, Some("operator-token-7f3a")).await;
    assert_eq!(
        operator_write.status(),
        405,
        "an operator passes the gate (no write action on /alerts yet)"
    );
    assert_eq!(get(format!("{}/metrics", api.ops)).await.0, 200);
    assert_eq!(get(format!("{}/healthz", api.ops)).await.0, 200);
}

#[tokio::test]
async fn without_tokens_only_loopback_host_names_are_answered() {
    let api = api().await;
    let url = format!("{}/alerts", api.base);
    let with_host = |host: &'static str| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .get(&url)
                .header("host", host)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        with_host("evil.example").await,
        421,
        "DNS rebinding refused"
    );
    assert_eq!(with_host("evil.example:9898").await, 421);
    assert_eq!(with_host("localhost:9898").await, 200);
    assert_eq!(with_host("127.0.0.1").await, 200);
}

#[tokio::test]
async fn a_non_loopback_data_listener_without_tokens_is_refused_at_start() {
    let state = ApiState::new(
        Store::default(),
        prometheus::Registry::new(),
        Arc::new(Readiness::new(
            Duration::from_secs(5),
            Duration::from_secs(60),
        )),
        &Config::default().engine_settings(),
    );
    let listeners = Listeners {
        data: tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap(),
        ops: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let Err(err) = start(
        listeners,
        state,
        &HttpConfig::default(),
        std::future::pending(),
    )
    .await
    else {
        panic!("an open listener without tokens is refused")
    };
    assert!(err.to_string().contains("http.tokens"), "{err}");
    let config_err = Config::parse("[http]\nbind = \"0.0.0.0:9898\"\n").unwrap_err();
    assert!(
        config_err.to_string().contains("http.tokens"),
        "{config_err}"
    );
}

#[tokio::test]
async fn slow_clients_do_not_stall_the_api_for_others() {
    use tokio::io::AsyncWriteExt;
    let api = api_with(HttpConfig {
        request_timeout: Duration::from_secs(2),
        max_concurrent_requests: 4,
        ..HttpConfig::default()
    })
    .await;
    let addr = api.base.trim_start_matches("http://").to_string();
    // Many connections that send half a request line and then nothing, and
    // some that promise a body they never send.
    let mut slow = Vec::new();
    for i in 0..64 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let start = if i % 2 == 0 {
            "GET /alerts HTTP/1.1\r\nHost: local".to_string()
        } else {
            "POST /alerts HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n{"
                .to_string()
        };
        s.write_all(start.as_bytes()).await.unwrap();
        slow.push(s);
    }
    for _ in 0..8 {
        let answered =
            tokio::time::timeout(Duration::from_secs(10), get(format!("{}/alerts", api.base)))
                .await
                .expect("answered while slow clients hang");
        assert_eq!(answered.0, 200);
    }
    // The slow ones are answered (408) or closed once their time is up.
    let mut ends = tokio::task::JoinSet::new();
    for mut s in slow {
        ends.spawn(async move {
            let mut buf = [0u8; 256];
            tokio::time::timeout(
                Duration::from_secs(10),
                tokio::io::AsyncReadExt::read(&mut s, &mut buf),
            )
            .await
            .is_ok()
        });
    }
    let closed = ends
        .join_all()
        .await
        .into_iter()
        .filter(|ended| *ended)
        .count();
    assert_eq!(closed, 64, "every slow connection was answered or closed");
}

/// A self-signed pair for `localhost`, written to `dir`.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k, cert.cert.der().to_vec())
}

async fn served_certificate(url: &str, trust: &[u8]) -> Option<Vec<u8>> {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(trust).ok()?)
        .tls_info(true)
        .build()
        .ok()?;
    let r = client.get(url).send().await.ok()?;
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()?
        .peer_certificate()
        .map(<[u8]>::to_vec)
}

#[tokio::test]
async fn tls_serves_the_data_api_and_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = self_signed(dir.path());
    let api = api_with(HttpConfig {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
        ..HttpConfig::default()
    })
    .await;
    let url = format!("{}/alerts", api.base);
    assert_eq!(
        served_certificate(&url, &first).await.as_deref(),
        Some(&first[..])
    );
    let plain = reqwest::get(url.replace("https://", "http://")).await;
    assert!(
        plain.map_or(true, |r| !r.status().is_success()),
        "no plain HTTP on the TLS listener"
    );
    // Renewed on disk: served without a restart.
    let renewed_dir = tempfile::tempdir().unwrap();
    let (c2, k2, second) = self_signed(renewed_dir.path());
    std::fs::copy(&k2, &key).unwrap();
    std::fs::copy(&c2, &cert).unwrap();
    let mut picked_up = false;
    for _ in 0..100 {
        if served_certificate(&url, &second).await.as_deref() == Some(&second[..]) {
            picked_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(picked_up, "the renewed certificate is served");
}

/// An API serving an inbox of one alert (`alert-1`) to the [`tokens`];
/// the token directory and the mock cluster live as long as it is used.
async fn inbox_of_one_served() -> (
    tempfile::TempDir,
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Api,
) {
    let dir = tempfile::tempdir().unwrap();
    let http = HttpConfig {
        tokens: tokens(dir.path()),
        ..HttpConfig::default()
    };
    let (cluster, inbox) = inbox_of_one(&http, "alert-1");
    let api = api_serving(http, |s| s.with_inbox(inbox)).await;
    (dir, cluster, api)
}

/// An inbox holding one firing alert, `alert_id`, writing its actions to
/// a topic of rdkafka's mock cluster (kept alive by the returned value),
/// caught up with the stored actions.
fn inbox_of_one(
    http: &HttpConfig,
    alert_id: &str,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    churnwatch::http::inbox::InboxState,
) {
    let (cluster, state) = inbox_catching_up(http, alert_id);
    state.inbox.caught_up();
    (cluster, state)
}

/// [`inbox_of_one`] before it has read the actions topic to its end.
fn inbox_catching_up(
    http: &HttpConfig,
    alert_id: &str,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    churnwatch::http::inbox::InboxState,
) {
    use churnwatch::inbox::{Inbox, Published, actions::Actions, instances::Instances};
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let config = Config::default();
    cluster
        .create_topic(&config.kafka.actions_topic, 1, 1)
        .expect("topic");
    let inbox = Arc::new(Inbox::default());
    inbox.alert(Published {
        alert_id: alert_id.into(),
        status: "firing".into(),
        rule: "purchase_recency".into(),
        cause: None,
        customer_id: "key1".into(),
        tier: "A".into(),
        segment: "default".into(),
        at: Ts(chrono::Utc::now().timestamp_millis()),
        reason: "no purchase for 31 days".into(),
        signals: serde_json::json!({"risk": 80}),
    });
    let brokers = cluster.bootstrap_servers();
    let state = churnwatch::http::inbox::InboxState {
        actions: Arc::new(Actions::new(
            churnwatch::kafka::source::producer(&config.kafka, &brokers).expect("producer"),
            &config.kafka,
            inbox.clone(),
        )),
        inbox,
        instances: Arc::new(Instances::new(&[])),
        peers: Arc::new(churnwatch::http::peers::Peers::new(http).expect("peers")),
        me: "test".into(),
    };
    (cluster, state)
}

/// Browsers speak HTTP/2 over TLS, where `:authority` replaces `Host`: sign-in
/// and an action by session cookie still pass the Origin check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_an_action_work_over_https_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed(dir.path());
    let http = HttpConfig {
        tls_cert: Some(cert),
        tls_key: Some(key),
        tokens: tokens(dir.path()),
        ..HttpConfig::default()
    };
    let (_cluster, inbox) = inbox_of_one(&http, "alert-1");
    let api = api_serving(http, |s| s.with_inbox(inbox)).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(&der).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = |path: &str, body: &str| {
        client
            .post(format!("{}{path}", api.base))
            .header("origin", &api.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
    };
    let signed = form("/signin", "token=operator-token-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(signed.version(), reqwest::Version::HTTP_2, "spoken over h2");
    assert_eq!(signed.status().as_u16(), 303, "signed in over HTTP/2");
    let cookie = signed
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let acked = form("/ui/alerts/alert-1/ack", "note=calling")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status().as_u16(), 303, "the action is taken");
    let one: serde_json::Value = client
        .get(format!("{}/api/v1/alerts/alert-1", api.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["state"], "acknowledged", "{one}");
    assert_eq!(one["lifecycle"]["acknowledged_by"], "retention-lead");
    let elsewhere = client
        .post(format!("{}/ui/alerts/alert-1/notes", api.base))
        .header("origin", "https://evil.example")
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("text=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status().as_u16(), 403, "another site's post");
}

/// Input an operator (or a script) can send is bounded, and each bound is
/// answered with what was wrong: a snooze of 300000 years, a body over
/// `http.max_body_bytes`, a cursor this API never gave, notes that would
/// push the record past what the broker takes. A full record can still be
/// closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_input_is_refused_clearly_and_a_full_record_still_closes() {
    let (_dir, _cluster, api) = inbox_of_one_served().await;
    let client = reqwest::Client::new();
    let post = |verb: &str, body: String| {
        client
            .post(format!("{}/api/v1/alerts/alert-1/{verb}", api.base))
            .bearer_auth("operator-token-7f3a")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let answer = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (
            status,
            r.json::<serde_json::Value>().await.unwrap_or_default(),
        )
    };
    let (status, why) = answer(post("snooze", r#"{"for":"300000y"}"#.into()).await.unwrap()).await;
    assert_eq!(status, 400, "{why}");
    assert!(why["error"].as_str().unwrap().contains("`for`"), "{why}");
    let huge = serde_json::json!({"text": "x".repeat(100 * 1024)}).to_string();
    let (status, why) = answer(post("notes", huge).await.expect("an answer, not a reset")).await;
    assert_eq!(status, 413, "{why}");
    assert!(
        why["error"].as_str().unwrap().contains("65536"),
        "names the limit: {why}"
    );
    let garbage = client
        .get(format!("{}/api/v1/alerts?cursor=garbage", api.base))
        .bearer_auth("operator-token-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
    let note = serde_json::json!({"text": "n".repeat(4000)}).to_string();
    let mut taken = 0;
    let refusal = loop {
        let (status, body) = answer(post("notes", note.clone()).await.unwrap()).await;
        match status {
            200 => taken += 1,
            _ => break (status, body),
        }
        assert!(taken < 1000, "notes are never refused");
    };
    assert_eq!(refusal.0, 409, "{}", refusal.1);
    assert!(
        refusal.1["error"]
            .as_str()
            .unwrap()
            .contains("can still be closed"),
        "{}",
        refusal.1
    );
    assert!(taken > 50, "only {taken} notes of 4000 bytes fit");
    let (status, closed) =
        answer(post("close", r#"{"reason":"lost"}"#.into()).await.unwrap()).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["closed_reason"], "lost");
}

/// Pages cannot be framed by another site (clickjacking the action buttons).
#[tokio::test]
async fn pages_refuse_to_be_framed() {
    let api = api().await;
    let r = reqwest::get(format!("{}/signin", api.base)).await.unwrap();
    assert_eq!(
        r.headers()
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok()),
        Some("frame-ancestors 'none'")
    );
    assert_eq!(
        r.headers()
            .get("x-frame-options")
            .and_then(|v| v.to_str().ok()),
        Some("DENY")
    );
}

/// Until the inbox has read the stored lifecycles, an action could act on
/// an older record than stored and supersede history: it is refused (503,
/// saying why) and the instance is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_during_catch_up_are_refused_and_readiness_waits() {
    let http = HttpConfig::default();
    let (_cluster, inbox) = inbox_catching_up(&http, "alert-1");
    let view = inbox.inbox.clone();
    let api = api_serving(http, |s| s.with_inbox(inbox)).await;
    api.ready.report(true);
    let ack = || {
        reqwest::Client::new()
            .post(format!("{}/api/v1/alerts/alert-1/ack", api.base))
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    let early = ack().await.unwrap();
    assert_eq!(early.status().as_u16(), 503);
    assert!(early.text().await.unwrap().contains("catching up"));
    let (status, why) = get(format!("{}/readyz", api.ops)).await;
    assert_eq!((status, why.contains("catching up")), (503, true), "{why}");
    assert!(
        view.get("alert-1", Ts(0)).unwrap().lifecycle.is_none(),
        "nothing written"
    );
    view.caught_up();
    assert_eq!(ack().await.unwrap().status().as_u16(), 200);
    assert_eq!(get(format!("{}/readyz", api.ops)).await.0, 200);
}

/// An action names the revision it was decided on; one decided on a record
/// that has changed since is refused with 409 and changes nothing, so a
/// page left open never overwrites what a colleague did meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_on_a_stale_revision_is_refused() {
    let (_dir, _cluster, api) = inbox_of_one_served().await;
    let client = reqwest::Client::new();
    let post = |verb: &str, body: serde_json::Value| {
        let request = client
            .post(format!("{}/api/v1/alerts/alert-1/{verb}", api.base))
            .bearer_auth("operator-token-7f3a")
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, acked) = post("ack", serde_json::json!({"version": 0})).await;
    assert_eq!(status, 200, "{acked}");
    let revision = acked["revision"].as_u64().expect("a revision");
    assert!(revision > 0, "{acked}");
    let (status, stale) = post("assign", serde_json::json!({"to": "anna", "version": 0})).await;
    assert_eq!(status, 409, "{stale}");
    assert!(
        stale["error"]
            .as_str()
            .unwrap()
            .contains(&revision.to_string()),
        "names the current revision: {stale}"
    );
    let (status, assigned) = post(
        "assign",
        serde_json::json!({"to": "anna", "version": revision}),
    )
    .await;
    assert_eq!(status, 200, "{assigned}");
    assert_eq!(assigned["assigned_to"], "anna");
    assert_eq!(assigned["revision"].as_u64(), Some(revision + 1));
}

/// The inbox page opens on what needs work: a snoozed alert is a filter
/// away ("any" or "snoozed"), not in the default view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_page_opens_on_what_needs_work() {
    let (_dir, _cluster, api) = inbox_of_one_served().await;
    let client = reqwest::Client::new();
    let page = |query: &'static str| {
        let request = client
            .get(format!("{}/{query}", api.base))
            .bearer_auth("operator-token-7f3a");
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let listed = "id=\"alert-alert-1\"";
    assert!(page("").await.contains(listed), "an open alert needs work");
    let snoozed = client
        .post(format!("{}/api/v1/alerts/alert-1/snooze", api.base))
        .bearer_auth("operator-token-7f3a")
        .json(&serde_json::json!({"for": "1d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(snoozed.status().as_u16(), 200);
    assert!(
        !page("").await.contains(listed),
        "snoozed: not in the default view"
    );
    assert!(page("?state=any").await.contains(listed), "any state");
    assert!(
        page("?state=snoozed").await.contains(listed),
        "snoozed filter"
    );
}

/// The inbox filters by segment, in the API and on the page; an alert
/// carries its customer's segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_filters_by_segment() {
    let (_dir, _cluster, api) = inbox_of_one_served().await;
    let client = reqwest::Client::new();
    let get = |query: &'static str| {
        let request = client
            .get(format!("{}{query}", api.base))
            .bearer_auth("operator-token-7f3a");
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let listed = |json: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["alert_id"].as_str().unwrap().to_string())
            .collect()
    };
    let all = get("/api/v1/alerts").await;
    assert_eq!(listed(&all), vec!["alert-1"]);
    assert!(all.contains("\"segment\":\"default\""), "{all}");
    assert_eq!(
        listed(&get("/api/v1/alerts?segment=default").await),
        vec!["alert-1"]
    );
    assert!(listed(&get("/api/v1/alerts?segment=wholesale").await).is_empty());
    let row = "id=\"alert-alert-1\"";
    assert!(get("/?segment=default").await.contains(row));
    assert!(!get("/?segment=wholesale").await.contains(row));
}
