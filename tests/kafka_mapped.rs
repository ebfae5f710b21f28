//! A company's own topics on a real broker (`tansu`): mapped by
//! `[[inputs]]`, the orders topic keyed by order id and re-keyed through
//! `<group>-repartition`, equal to replay over the same raw files.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use churnwatch::config::Config;
use churnwatch::engine::event::Ts;
use churnwatch::engine::store::Store;
use churnwatch::generate::Publisher;
use churnwatch::replay::{ReplayOptions, replay};
use common::broker::{Tansu, ready};
use common::*;

const COMPANY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/company");

/// Each raw stream's topic, file, and the pointer its records are keyed by
/// (orders by order id, as Debezium keys them; the rest by customer or rep).
const STREAMS: [(&str, &str, &[&str]); 4] = [
    ("shop.orders", "orders", &["/after/id", "/before/id"]),
    ("crm.activities", "activities", &["/account_id"]),
    (
        "helpdesk.tickets",
        "tickets",
        &["/ticket/requester/account"],
    ),
    ("hr.employees", "hr", &["/employee_email"]),
];

/// The fixture's config on `brokers`, with only mapped topics (no native
/// input or roster topic) and the event clock.
fn company_config(brokers: &str) -> Config {
    let text = std::fs::read_to_string(format!("{COMPANY}/churnwatch.toml")).unwrap();
    let mut config = event_clock_config(brokers);
    let mapped = Config::parse(&text).unwrap();
    config.money = mapped.money;
    config.inputs = mapped.inputs;
    config.kafka.input_topics = Vec::new();
    config.kafka.roster_topic = String::new();
    config
}

/// Creates `topics` (name, partitions) with the default (delete) policy.
async fn create(tansu: &Tansu, topics: &[(&str, i32)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &tansu.brokers)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| {
            let n = NewTopic::new(t, *p, TopicReplication::Fixed(1));
            match *t == "churnwatch-state" {
                true => n.set("cleanup.policy", "compact"),
                false => n,
            }
        })
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

/// Publishes `records` (topic, key, payload) as the company's Java
/// producers would: partitioned by murmur2 of the key, one per batch
/// (tansu 0.6 cannot resume inside a batch; see kafka_tansu.rs).
async fn publish(brokers: &str, records: &[(String, String, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    let mut publisher = Publisher::new(producer);
    for (topic, key, payload) in records {
        publisher
            .send(topic, key.as_bytes(), payload.as_bytes())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
}

/// The fixture's records, keyed as their systems key them.
fn company_records() -> Vec<(String, String, String)> {
    let mut records = Vec::new();
    for (topic, file, keys) in STREAMS {
        let text = std::fs::read_to_string(format!("{COMPANY}/{file}.jsonl")).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let key = keys
                .iter()
                .find_map(|k| v.pointer(k).filter(|v| !v.is_null()))
                .map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_string))
                .unwrap_or_default();
            records.push((topic.to_string(), key, line.to_string()));
        }
    }
    records
}

/// Replay's alerts over the raw files, read through the same mappings.
fn replay_company(config: &Config) -> Vec<Value> {
    let options = ReplayOptions {
        inputs: Vec::new(),
        mapped: STREAMS
            .iter()
            .map(|(t, f, _)| (t.to_string(), PathBuf::from(format!("{COMPANY}/{f}.jsonl"))))
            .collect(),
        until: None,
        dead_letter: None,
        now: Ts(chrono::Utc::now().timestamp_millis()),
    };
    let mut out = Vec::new();
    replay(config, &options, &mut out, &mut std::io::sink()).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_topics_with_orders_repartitioned_equal_replay_and_a_wrong_key_is_dead_lettered() {
    let tansu = Tansu::start().await;
    let config = company_config(&tansu.brokers);
    create(
        &tansu,
        &[
            // One partition: re-keying keeps each source partition's order.
            ("shop.orders", 1),
            ("crm.activities", 3),
            ("helpdesk.tickets", 3),
            ("hr.employees", 1),
            ("churn-alerts", 3),
            ("churn-dead-letters", 1),
            ("churnwatch-state", 3),
        ],
    )
    .await;
    let expected = replay_company(&config);
    assert!(!expected.is_empty(), "the fixture alerts");
    let mut records = company_records();
    // A customer-keyed topic's record under another key: refused, since
    // applying it would put key1's calls on another partition than its state.
    records.push((
        "crm.activities".into(),
        "someone-else".into(),
        r#"{"activity_id":"A-99","account_id":"key1","owner_email":"r1@corp.example","kind":"call","occurred_at":"2026-03-02 09:00:00"}"#.into(),
    ));
    publish(&tansu.brokers, &records).await;

    let stop = CancellationToken::new();
    let running = spawn_run(&config, Store::default(), &stop).await;
    let arrived = eventually(Duration::from_secs(90), || {
        read_topic(&tansu.brokers, "churn-alerts").len() >= expected.len()
            && read_topic(&tansu.brokers, "churn-dead-letters").len() >= 3
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", running.ops))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    stop.cancel();
    running.handle.await.unwrap().unwrap();
    assert!(arrived, "alerts and dead letters arrived");
    assert_eq!(
        alert_set(&parse_alerts(&read_topic(&tansu.brokers, "churn-alerts"))),
        alert_set(&expected),
        "run over the raw topics alerts as replay over their files"
    );
    let dead: BTreeMap<String, (String, String)> = read_topic(&tansu.brokers, "churn-dead-letters")
        .iter()
        .map(|r| {
            let h = |k: &str| r.header(k).unwrap_or_default().to_string();
            (
                h("churnwatch.reason"),
                (h("churnwatch.source.topic"), h("churnwatch.detail")),
            )
        })
        .collect();
    assert_eq!(
        dead.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["missing_field", "unknown_currency", "wrong_key"].map(String::from)),
        "{dead:?}"
    );
    // Dead-lettered by the re-keying, with the orders topic's coordinates.
    assert_eq!(dead["missing_field"].0, "shop.orders");
    assert!(
        dead["missing_field"]
            .1
            .starts_with("/customer_ref: missing field")
    );
    assert!(
        dead["unknown_currency"].1.starts_with("/currency: "),
        "{dead:?}"
    );
    assert_eq!(dead["wrong_key"].0, "crm.activities");
    assert!(
        dead["wrong_key"].1.contains("keyed_by_customer"),
        "names the setting: {}",
        dead["wrong_key"].1
    );
    for line in [
        r#"churnwatch_skipped_records_total{cause="filtered",input="shop.orders"} 1"#,
        r#"churnwatch_skipped_records_total{cause="deleted",input="shop.orders"} 1"#,
        r#"churnwatch_skipped_records_total{cause="filtered",input="crm.activities"} 1"#,
        r#"churnwatch_skipped_records_total{cause="filtered",input="hr.employees"} 1"#,
        r#"churnwatch_duplicate_events_total{type="purchase"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let repartitioned = read_topic(&tansu.brokers, "churnwatch-repartition");
    assert!(
        repartitioned
            .iter()
            .all(|r| r.header("churnwatch.source.topic") == Some("shop.orders")),
        "only the orders are re-keyed"
    );
}

/// Debezium-shaped orders: `customers` customers with `each` orders of
/// 2.50 EUR, interleaved (order i is customer i % customers), a minute apart.
fn orders(customers: usize, each: usize) -> Vec<(String, String, String)> {
    let start_us: i64 = 1_772_323_200_000_000; // 2026-03-01T00:00:00Z
    (0..customers * each)
        .map(|i| {
            let payload = serde_json::json!({
                "before": null,
                "after": {
                    "id": i,
                    "customer_ref": format!("c{:05}", i % customers),
                    "total_cents": 250,
                    "currency": "EUR",
                    "status": "paid",
                    "created_at": start_us + i as i64 * 60_000_000,
                },
                "op": "c",
            });
            (
                "shop.orders".to_string(),
                i.to_string(),
                payload.to_string(),
            )
        })
        .collect()
}

/// Each customer's `frequency_90d` and `monetary` as the instance serves them.
/// Waits (at most `limit`) for the first record to land in `topic`, read
/// as it lands rather than by [`read_topic`]'s round trip.
fn first_landed(brokers: &str, topic: &str, limit: Duration) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("watcher-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    let mut assigned = false;
    while std::time::Instant::now() < deadline {
        if !assigned {
            let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5));
            let parts: Vec<i32> = md
                .iter()
                .flat_map(|md| md.topics())
                .filter(|t| t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if parts.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let mut tpl = rdkafka::TopicPartitionList::new();
            for p in parts {
                tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                    .unwrap();
            }
            consumer.assign(&tpl).unwrap();
            assigned = true;
        }
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(20)) {
            return true;
        }
    }
    false
}

async fn served(client: &reqwest::Client, api: &str, customers: usize) -> Vec<(u64, f64)> {
    let mut out = Vec::with_capacity(customers);
    for c in 0..customers {
        let v: Value = match client.get(format!("{api}/customers/c{c:05}")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        out.push((
            v["frequency_90d"].as_u64().unwrap_or(0),
            v["monetary"].as_f64().unwrap_or(0.0),
        ));
    }
    out
}

/// `kill -9` while the orders are being re-keyed (inside the first batch,
/// then again part-way), each time restarted on the same disk: every
/// customer ends with exactly its orders, none lost (the
/// source offsets were stored only once republished) and none doubled:
/// nothing is even republished twice (what was acknowledged but not
/// committed is recorded in `state.dir`, what landed unacknowledged is
/// read back from the repartition topic). Leaning on `event_id` alone was
/// not enough: each customer has more orders than de-duplication remembers
/// ids, the two source partitions are read at different speeds after the
/// restart, and some customers were doubled (seen: 8 of 4000). A kill
/// inside the first batch once left no record at all, and its restart
/// republished all that had landed again (seen: 404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_repartitioning_loses_and_doubles_nothing() {
    const SESSION: Duration = Duration::from_secs(6);
    const CUSTOMERS: usize = 4000;
    const EACH: usize = 5;
    let tansu = Tansu::start().await;
    create(
        &tansu,
        &[
            ("shop.orders", 2),
            ("reps", 1),
            ("churn-alerts", 3),
            ("churn-dead-letters", 1),
            ("churnwatch-state", 3),
        ],
    )
    .await;
    let records = orders(CUSTOMERS, EACH);
    publish(&tansu.brokers, &records).await;
    let files = common::broker::instance_files();
    let api = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let state = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::write(
        &files.cfg,
        format!(
            r#"[engine]
clock = "event"
idle_timeout = "1s"
tick_interval = "50ms"
max_future_skew = "36500d"
[kafka]
brokers = "{brokers}"
input_topics = []
[kafka.consumer]
"session.timeout.ms" = "{session}"
# One record per batch on the repartition topic too: tansu 0.6 cannot
# resume inside a batch (see kafka_tansu.rs).
[kafka.producer]
"batch.num.messages" = "1"
[http]
bind = "{api}"
ops_bind = "{ops}"
[state]
dir = "{state}"
snapshot_interval = "200ms"
[[inputs]]
topic = "shop.orders"
event = "purchase"
unwrap = "debezium"
keyed_by_customer = false
[inputs.fields]
customer_id = "/customer_ref"
amount = {{ path = "/total_cents", scale = 0.01 }}
currency = "/currency"
ts = {{ path = "/created_at", format = "epoch_us" }}
event_id = "/id"
"#,
            brokers = tansu.brokers,
            session = SESSION.as_millis(),
            ops = files.http,
            state = state.path().display(),
        ),
    )
    .unwrap();
    let start = || common::broker::run_instance(&files.cfg, &files.log);
    // First killed the moment its first republished record lands: inside
    // its first batch, before anything was acknowledged or committed.
    let mut child = start();
    let brokers = tansu.brokers.clone();
    let landed = tokio::task::spawn_blocking(move || {
        first_landed(&brokers, "churnwatch-repartition", Duration::from_secs(60))
    })
    .await
    .unwrap();
    child.kill();
    assert!(
        landed,
        "the instance started re-keying; its log:\n{}",
        std::fs::read_to_string(&files.log).unwrap_or_default()
    );
    let at_first = read_topic(&tansu.brokers, "churnwatch-repartition").len();
    // Restarted once the broker expired the killed member (see
    // kafka_tansu.rs, kill_9_at_random_points_loses_no_alert, for why not
    // sooner), then killed again once it has republished more.
    tokio::time::sleep(SESSION + Duration::from_secs(1)).await;
    let mut child = start();
    let mut at_kill = 0;
    let repartitioning = eventually(Duration::from_secs(60), || {
        at_kill = read_topic(&tansu.brokers, "churnwatch-repartition").len();
        at_kill > at_first
    })
    .await;
    child.kill();
    assert!(
        repartitioning,
        "the restarted instance went on re-keying; its log:\n{}",
        std::fs::read_to_string(&files.log).unwrap_or_default()
    );
    assert!(
        at_kill < records.len(),
        "killed while re-keying ({at_kill} of {} republished)",
        records.len()
    );
    tokio::time::sleep(SESSION + Duration::from_secs(1)).await;
    let mut child = start();
    assert!(
        ready(
            &format!("http://{}/readyz", files.http),
            Duration::from_secs(60)
        )
        .await,
        "ready after the restart"
    );
    let client = reqwest::Client::new();
    let api = format!("http://{api}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut got = served(&client, &api, CUSTOMERS).await;
    while got.iter().any(|(f, _)| *f < EACH as u64) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        got = served(&client, &api, CUSTOMERS).await;
    }
    child.kill();
    let wrong: Vec<(usize, (u64, f64))> = got
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, (f, m))| *f != EACH as u64 || (*m - 2.5 * EACH as f64).abs() > 1e-9)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} customers of {CUSTOMERS} without exactly their {EACH} orders (first: {:?}); \
         {at_kill} records republished at the kill, {} now",
        wrong.len(),
        &wrong[..wrong.len().min(5)],
        read_topic(&tansu.brokers, "churnwatch-repartition").len()
    );
    // Restarted on the same disk, nothing was republished twice: what was
    // acknowledged is recorded there, what landed unacknowledged is read back.
    let mut copies: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in read_topic(&tansu.brokers, "churnwatch-repartition") {
        let at = |h| r.header(h).unwrap_or_default().to_string();
        *copies
            .entry((
                at("churnwatch.source.partition"),
                at("churnwatch.source.offset"),
            ))
            .or_default() += 1;
    }
    let twice = copies.values().filter(|&&n| n > 1).count();
    assert_eq!(copies.len(), records.len(), "every order was re-keyed");
    assert_eq!(
        twice, 0,
        "orders republished twice (of {at_first} at the first kill, {at_kill} at the second)"
    );
}
