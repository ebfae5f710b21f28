//! Helpers shared by the broker tests: route scenario lines to topics, read
//! a topic to its end, and the replay answer to compare with.

#![allow(dead_code)]

pub mod broker;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use churnwatch::config::Config;
use churnwatch::engine::event::Ts;
use churnwatch::generate::Publisher;
use churnwatch::replay::{ReplayOptions, replay};

pub const SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/scenario.jsonl");

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
}

/// A config for tests: event clock, quick ticks, the given brokers.
pub fn event_clock_config(brokers: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.engine.clock = churnwatch::config::RunClock::Event;
    c.engine.idle_timeout = Duration::from_secs(1);
    c.engine.tick_interval = Duration::from_millis(50);
    c.engine.max_future_skew = Duration::from_secs(100 * 365 * 86_400);
    // Under the target dir, so a run's state dirs go with `cargo clean`
    // rather than piling up in /tmp.
    c.state.dir = tempfile::Builder::new()
        .prefix("churnwatch-state-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("state dir")
        .keep();
    c.state.snapshot_interval = Duration::from_millis(300);
    c
}

/// Produces JSON lines the way an upstream would: by `type` to its topic,
/// keyed by customer id; lines that do not parse go to the first input.
pub async fn produce_lines(config: &Config, lines: &[String]) {
    produce_lines_with(config, lines, &[]).await;
}

/// [`produce_lines`] with extra producer properties.
pub async fn produce_lines_with(config: &Config, lines: &[String], extra: &[(&str, &str)]) {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.kafka.brokers);
    for (k, v) in extra {
        client.set(*k, *v);
    }
    let producer: FutureProducer = client.create().expect("producer");
    let mut publisher = Publisher::new(producer);
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let (topic, key) = match v["type"].as_str() {
            Some("purchase") => ("purchases", v["customer_id"].as_str()),
            Some("call") => ("calls", v["customer_id"].as_str()),
            Some("ticket") => ("tickets", v["customer_id"].as_str()),
            Some("rep") => (config.kafka.roster_topic.as_str(), v["rep_id"].as_str()),
            _ => ("purchases", None),
        };
        let key = key.unwrap_or("unkeyed");
        publisher
            .send(topic, key.as_bytes(), line.as_bytes())
            .await
            .expect("produce");
    }
    publisher.flush().await.expect("flush");
}

pub fn scenario_lines() -> Vec<String> {
    std::fs::read_to_string(SCENARIO)
        .expect("scenario")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The scenario with one purchase per size, padded to that many bytes,
/// put between its good lines (every fifth).
pub fn with_big_messages(sizes: &[usize]) -> Vec<String> {
    let mut lines = scenario_lines();
    for (i, size) in sizes.iter().enumerate() {
        let head = format!(
            r#"{{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"big{i}","amount":5,"pad":""#
        );
        let pad = "x".repeat(size.saturating_sub(head.len() + 2));
        lines.insert((i + 1) * 5, format!("{head}{pad}\"}}"));
    }
    lines
}

/// Alerts replay gives for the same lines and config (no --until).
pub fn replay_alerts(config: &Config, lines: &[String]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("in.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    let options = ReplayOptions {
        inputs: vec![path],
        mapped: Vec::new(),
        until: None,
        dead_letter: None,
        now: Ts(chrono::Utc::now().timestamp_millis()),
    };
    let mut out = Vec::new();
    replay(config, &options, &mut out, &mut std::io::sink()).expect("replay");
    String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// The value of header `key`, if present.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.0 == key)
            .map(|h| h.1.as_str())
    }
}

/// Every record of `topic` so far. The end is found by writing a unique
/// end marker to each partition and reading up to it, not by the broker's
/// high watermark (tansu 0.6 reports one per batch, not per record).
/// Whether `config`'s tiers topic holds, for every one of `partitions`
/// input partitions, a summary of its group, and their merge is exact:
/// what an instance starting now would rank with.
pub fn group_tiers_published(config: &Config, partitions: usize) -> bool {
    use churnwatch::engine::tier_summary::{TierSummary, merge};
    let prefix = format!("{}/", config.kafka.group_id);
    let mut latest = std::collections::BTreeMap::new();
    for r in read_topic(&config.kafka.brokers, &config.kafka.tiers_topic) {
        let Some(p) = r.key.as_deref().and_then(|k| k.strip_prefix(&prefix)) else {
            continue;
        };
        if let Ok(s) = serde_json::from_slice::<TierSummary>(&r.payload) {
            latest.insert(p.to_string(), s);
        }
    }
    latest.len() == partitions
        && merge(
            latest.values(),
            config.tiers.a_percent,
            config.tiers.b_percent,
        )
        .complete()
}

pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("marker producer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let marker = format!(
        "{END}{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        let record = rdkafka::producer::BaseRecord::<(), str>::to(topic)
            .partition(*p)
            .payload(marker.as_str());
        producer.send(record).map_err(|(e, _)| e).expect("marker");
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("tpl");
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10)).expect("marker flushed");
    consumer.assign(&tpl).expect("assign");
    let mut open: BTreeSet<i32> = parts.into_iter().collect();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !open.is_empty() && std::time::Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let payload = m.payload().unwrap_or_default();
        if payload == marker.as_bytes() {
            open.remove(&m.partition());
            continue;
        }
        if payload.starts_with(END.as_bytes()) {
            continue;
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            key: m.key().map(|k| String::from_utf8_lossy(k).to_string()),
            payload: payload.to_vec(),
            headers,
        });
    }
    assert!(open.is_empty(), "read {topic} to its end marker");
    out
}

const END: &str = "__end_of_test_read__";

/// (alert_id, status): an alert's identity.
pub fn identities(alerts: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["alert_id"].as_str().unwrap_or_default().to_string(),
                a["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Distinct (alert_id, status) pairs.
pub fn distinct(alerts: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    identities(alerts).into_iter().collect()
}

/// Alerts as comparable strings (the whole JSON), as a set.
pub fn alert_set(alerts: &[serde_json::Value]) -> BTreeSet<String> {
    alerts.iter().map(|a| a.to_string()).collect()
}

pub fn parse_alerts(records: &[Record]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).expect("alert json"))
        .collect()
}

/// Polls `probe` until it holds or `limit` passes (a failure bound, not a
/// sleep standing in for synchronisation).
pub async fn eventually(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if probe() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Service wiring for tests: the given store and an HTTP API on port 0.
pub async fn wiring(store: churnwatch::engine::store::Store) -> churnwatch::pipeline::Wiring {
    churnwatch::pipeline::Wiring {
        store,
        registry: prometheus::Registry::new(),
        http: Some(churnwatch::http::Listeners {
            data: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("port 0"),
            ops: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("port 0"),
        }),
        config_path: None,
    }
}

pub const KEY: &[u8] = b"a shared secret for the tests";

/// The Standard Webhooks secret for [`KEY`].
pub fn secret() -> String {
    use base64::Engine as _;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

/// Verifies a Standard Webhooks signature with hmac + sha2 directly.
pub fn verify(r: &Received) -> bool {
    let h = |k: &str| {
        r.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let signed = format!(
        "{}.{}.{}",
        h("webhook-id"),
        h("webhook-timestamp"),
        String::from_utf8_lossy(&r.body)
    );
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
    mac.update(signed.as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    h("webhook-signature").split(' ').any(|s| s == expected)
}

#[derive(Clone)]
pub enum Behaviour {
    Ok,
    FailFirst(usize),
    /// 500 while the flag is set, then 200.
    FailWhile(Arc<std::sync::atomic::AtomicBool>),
    /// Holds every request until the semaphore is closed, then 200.
    HoldUntilClosed(Arc<tokio::sync::Semaphore>),
    Refuse,
    /// 307 to the given URL.
    Redirect(String),
    /// 503 with this `Retry-After` for the first `n` requests, then 200.
    RetryAfter(&'static str, usize),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub at: std::time::Instant,
}

/// A receiver on port 0; returns its URL and what it received.
pub async fn receiver(behaviour: Behaviour) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    receiver_on(listener, behaviour)
}

/// A receiver on `listener` (e.g. a port that was unreachable until now).
pub fn receiver_on(
    listener: tokio::net::TcpListener,
    behaviour: Behaviour,
) -> (String, Arc<Mutex<Vec<Received>>>) {
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = seen.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (log, behaviour) = (log.clone(), behaviour.clone());
            async move {
                let at = std::time::Instant::now();
                let n = {
                    let mut l = log.lock().unwrap();
                    l.push(Received {
                        headers,
                        body: body.to_vec(),
                        at,
                    });
                    l.len()
                };
                let status = match behaviour {
                    Behaviour::Redirect(to) => {
                        return (StatusCode::TEMPORARY_REDIRECT, [("location", to)])
                            .into_response();
                    }
                    Behaviour::RetryAfter(after, k) if n <= k => {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", after.to_string())],
                        )
                            .into_response();
                    }
                    Behaviour::RetryAfter(..) => StatusCode::OK,
                    Behaviour::Ok => StatusCode::NO_CONTENT,
                    Behaviour::FailFirst(k) if n <= k => StatusCode::INTERNAL_SERVER_ERROR,
                    Behaviour::FailFirst(_) => StatusCode::OK,
                    Behaviour::FailWhile(f) if f.load(std::sync::atomic::Ordering::SeqCst) => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    Behaviour::FailWhile(_) => StatusCode::OK,
                    Behaviour::HoldUntilClosed(gate) => {
                        // Closed: every waiting and later acquire returns at once.
                        let _ = gate.acquire().await;
                        StatusCode::OK
                    }
                    Behaviour::Refuse => StatusCode::BAD_REQUEST,
                };
                status.into_response()
            }
        }),
    );
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

/// A service running in a task, and the base URL of its HTTP API.
pub struct Running {
    pub handle: tokio::task::JoinHandle<
        Result<churnwatch::pipeline::Report, churnwatch::pipeline::PipelineError>,
    >,
    /// The data API (customers, alerts).
    pub api: String,
    /// The operations listener (metrics, health, readiness).
    pub ops: String,
}

/// Runs the service in a task until `stop`, over `store`, with an HTTP API
/// on port 0.
pub async fn spawn_run(
    config: &Config,
    store: churnwatch::engine::store::Store,
    stop: &tokio_util::sync::CancellationToken,
) -> Running {
    spawn_wired(config, wiring(store).await, stop)
}

/// The data listener's address of `wiring`, as `http://127.0.0.1:port`.
pub fn data_url(wiring: &churnwatch::pipeline::Wiring) -> String {
    let l = wiring.http.as_ref().expect("listeners");
    format!("http://{}", l.data.local_addr().expect("bound"))
}

/// [`spawn_run`] on listeners bound already (to configure `http.peers`).
pub fn spawn_wired(
    config: &Config,
    wiring: churnwatch::pipeline::Wiring,
    stop: &tokio_util::sync::CancellationToken,
) -> Running {
    let (addr, ops) = wiring
        .http
        .as_ref()
        .and_then(|l| Some((l.data.local_addr().ok()?, l.ops.local_addr().ok()?)))
        .expect("bound");
    let (config, stop) = (config.clone(), stop.clone());
    let handle = tokio::spawn(async move {
        churnwatch::pipeline::run(
            &config,
            &config.kafka.brokers,
            wiring,
            stop.cancelled_owned(),
        )
        .await
    });
    Running {
        handle,
        api: format!("http://{addr}"),
        ops: format!("http://{ops}"),
    }
}

/// Sum of the group's committed offsets over the input topics.
pub fn committed(brokers: &str, config: &Config, partitions: i32) -> i64 {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &config.kafka.group_id)
        .create()
    {
        Ok(c) => c,
        Err(_) => return 0,
    };
    let mut tpl = TopicPartitionList::new();
    for t in &config.kafka.input_topics {
        for p in 0..partitions {
            let _ = tpl.add_partition(t, p);
        }
    }
    match consumer.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(c) => c
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
        Err(_) => 0,
    }
}

/// The mock cluster's config: the event clock, a 6 s session.
pub fn mock_config(brokers: &str) -> Config {
    let mut c = event_clock_config(brokers);
    c.kafka
        .consumer
        .insert("session.timeout.ms".into(), "6000".into());
    c
}

pub fn cluster_with_topics(
    partitions: i32,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    for t in ["purchases", "calls", "tickets"] {
        cluster.create_topic(t, partitions, 1).expect("topic");
    }
    cluster.create_topic("reps", 1, 1).expect("topic");
    cluster
        .create_topic("churnwatch-state", partitions, 1)
        .expect("topic");
    cluster.create_topic("churn-alerts", 3, 1).expect("topic");
    cluster
        .create_topic("churn-dead-letters", 1, 1)
        .expect("topic");
    // The mock cluster answers no CreateTopics: the inbox's topic is made here.
    for t in [
        "churnwatch-actions",
        "churnwatch-instances",
        "churnwatch-tiers",
    ] {
        cluster.create_topic(t, 1, 1).expect("topic");
    }
    let brokers = cluster.bootstrap_servers();
    (cluster, brokers)
}

/// The service's `/metrics` text.
pub async fn scrape(api: &str) -> String {
    try_scrape(api).await.expect("metrics text")
}

/// The `/metrics` text of a service that may be down.
pub async fn try_scrape(api: &str) -> Option<String> {
    reqwest::get(format!("{api}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of a sample in Prometheus text, by name and labels.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// One purchase-recency limit for every tier and no contact or rep rule:
/// which alerts fire does not depend on tier thresholds.
pub fn tier_independent(config: &mut Config) {
    let month = Some(Duration::from_secs(30 * 86_400));
    config
        .rules
        .purchase_recency
        .set_fixed(churnwatch::config::TierLimits {
            a: month,
            b: month,
            c: month,
        });
    config.rules.contact_gap = churnwatch::config::TierLimits::default();
    config.rules.rep_turnover.tiers.clear();
}
