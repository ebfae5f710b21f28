//! Takeover after a crash (issue #29, part 2), on a real broker (`tansu`,
//! which `tests/run.sh` installs).
//!
//! `cargo bench --bench takeover` produces one purchase for each of
//! `--customers` customers (default 1,000,000) over `--partitions` input
//! partitions (default 6), starts two `churnwatch run` instances in one
//! group (`session.timeout.ms` 6,000), waits until they hold every customer
//! between them (each batch's changelog entries are produced before its
//! offsets are stored), then kills one with
//! SIGKILL and measures on the survivor, from the kill:
//! - when the group gave it the dead member's partitions (the broker's
//!   session timeout, then the rebalance; `churnwatch_partitions_owned`);
//! - how long its restores took (`churnwatch_restore_seconds`);
//! - when `/readyz` answers 200 and `/customers/{id}` answers 200 for a
//!   sample of the moved customers;
//! - when a rep-handoff alert, caused after the kill on a moved customer,
//!   is on the alert topic.
//!
//! `--mock` runs the same on rdkafka's mock cluster (96 partitions by
//! default: it keeps only a partition's newest 100,000 messages or 5 MB).
//! On tansu 0.6.0 the survivor is never given the dead member's
//! partitions (the broker drops the member but keeps the group's
//! generation and assignment); the bench says so and exits with status 2.
//!
//! Numbers go to BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use churnwatch::config::Config;
use common::broker::{Instance, Tansu, start_instance};

/// How long each phase may take before the bench gives up.
const PHASE: Duration = Duration::from_secs(900);
/// How long after the kill the survivor may wait for the dead member's
/// partitions: the session timeout (6 s) and a rebalance, many times over.
const REASSIGN: Duration = Duration::from_secs(90);
/// Customers looked up on the survivor.
const SAMPLE: usize = 200;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn customer(i: usize) -> String {
    format!("t{i:07}")
}

/// Customer `i`'s one purchase: spread over 10 to 100,009, so a fifth rank
/// in tiers A and B.
fn amount(i: usize) -> usize {
    (i * 7919) % 100_000 + 10
}

/// The broker under the group: tansu (a separate process), or rdkafka's
/// mock cluster in this process.
enum Broker {
    Tansu(Tansu),
    Mock(rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
}

impl Broker {
    fn brokers(&self) -> String {
        match self {
            Broker::Tansu(t) => t.brokers.clone(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    async fn create_topics(&self, config: &Config, partitions: i32) {
        match self {
            Broker::Tansu(t) => t.create_topics(config, partitions).await,
            Broker::Mock(m) => common::broker::create_mock_topics(m, config, partitions),
        }
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: a
    // million customers on a broker is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mock = std::env::args().any(|a| a == "--mock");
    let customers = arg("--customers", 1_000_000);
    // The mock cluster keeps only a partition's newest 100,000 messages or
    // 5 MB: the changelog of a million customers needs many partitions.
    let partitions = arg("--partitions", if mock { 96 } else { 6 }) as i32;
    let broker = if mock {
        Broker::Mock(rdkafka::mocking::MockCluster::new(1).expect("mock cluster"))
    } else {
        if !common::broker::tansu_installed() {
            println!("takeover bench: tansu is not installed (tests/run.sh installs it); skipped");
            return;
        }
        Broker::Tansu(Tansu::start().await)
    };
    let brokers = broker.brokers();
    let mut config = Config::default();
    config.kafka.brokers = brokers.clone();
    broker.create_topics(&config, partitions).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = start(&brokers, dir.path(), "a");
    let mut b = start(&brokers, dir.path(), "b");
    // Both members split the partitions before any input exists: each
    // customer's state is then on its owner and the changelog only, so the
    // survivor must restore the moved partitions from the changelog (had
    // it held them once, its own snapshots would restore them).
    until(PHASE, || async {
        let (x, y) = (
            metric_sum(&a, "churnwatch_partitions_owned").await,
            metric_sum(&b, "churnwatch_partitions_owned").await,
        );
        matches!((x, y), (Some(x), Some(y)) if x > 0.0 && y > 0.0 && x + y == f64::from(partitions))
            .then_some(())
    })
    .await
    .expect("the two instances split the partitions");
    let loaded = Instant::now();
    produce(&brokers, &config.kafka.input_topics[0], customers);
    println!(
        "takeover: {customers} purchases produced on {partitions} partitions in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );
    let held = until(PHASE, || async {
        let (x, y) = (customers_held(&a).await, customers_held(&b).await);
        (x > 0 && y > 0 && x + y == customers as u64).then_some((x, y))
    })
    .await
    .expect("the two instances hold every customer between them");
    println!(
        "takeover: instance a holds {} customers, b {} ({:.1} s after the first purchase was produced)",
        held.0,
        held.1,
        loaded.elapsed().as_secs_f64()
    );
    // Offsets are committed up to the newest snapshot round
    // (`state.snapshot_interval`): until then a crash re-reads the input
    // rather than the changelog. Killed after the round, the survivor
    // restores from the changelog.
    let purchases = &config.kafka.input_topics[0];
    until(PHASE, || async {
        (committed_total(&brokers, purchases, partitions) == customers as i64).then_some(())
    })
    .await
    .expect("the group commits every purchase");
    println!(
        "takeover: every purchase committed {:.1} s after the first was produced",
        loaded.elapsed().as_secs_f64()
    );
    let moved: Vec<usize> = sample_owned_by_other(&a, customers).await;
    // The biggest spender of them is in tier A: its handoffs alert at once.
    let watched = moved
        .iter()
        .copied()
        .max_by_key(|&i| amount(i))
        .map(customer)
        .expect("b owns some of the sampled customers");
    let moved: Vec<String> = moved.into_iter().map(customer).collect();
    let restoring = restore_seconds(&a).await;
    let from_changelog = || async {
        metric_sum_where(
            &a,
            "churnwatch_restores_total",
            Some(("source", "changelog")),
        )
        .await
        .unwrap_or(0.0)
    };
    let changelog_before = from_changelog().await;

    b.process.kill();
    let killed = Instant::now();
    let killed_at = chrono::Utc::now().timestamp_millis();
    trace("killed");
    trigger_handoff(&brokers, &config, &watched);
    let Some(assigned) = until(REASSIGN, || async {
        (metric_sum(&a, "churnwatch_partitions_owned").await == Some(f64::from(partitions)))
            .then(|| killed.elapsed())
    })
    .await
    else {
        println!(
            "takeover: the survivor was not given the dead member's partitions within {} s of the kill: \
             the broker dropped the member but did not re-form the group (tansu 0.6.0 does this; see BENCHMARKS.md, \
             and run with --mock)",
            REASSIGN.as_secs()
        );
        a.process.kill();
        std::process::exit(2);
    };
    trace("reassigned");
    let ready = until(PHASE, || async {
        answers(&format!("{}/readyz", a.ops))
            .await
            .then(|| killed.elapsed())
    })
    .await
    .expect("the survivor is ready");
    trace("ready");
    let served = until(PHASE, || async {
        let mut n = 0;
        for id in &moved {
            n += usize::from(found(&a, id).await);
        }
        trace(&format!("{n} of {} moved customers served", moved.len()));
        (n == moved.len()).then(|| killed.elapsed())
    })
    .await
    .expect("the survivor serves the moved customers");
    trace("served");
    let restore = restore_seconds(&a).await - restoring;
    let changelog_restores = from_changelog().await - changelog_before;
    let alerted = alert_seen(&brokers, &config, &watched, killed_at);
    let s = |d: Duration| d.as_secs_f64();
    println!(
        "takeover at {customers} customers on {} ({partitions} partitions), session timeout 6 s: \
         partitions reassigned {:.1} s after the kill, restore took {restore:.1} s \
         ({changelog_restores} partitions from the changelog), ready {:.1} s, \
         {} moved customers served {:.1} s, a moved customer's alert on the topic {}",
        if mock { "the mock cluster" } else { "tansu" },
        s(assigned),
        s(ready),
        moved.len(),
        s(served),
        alerted.map_or("not within the wait".to_string(), |d| format!(
            "{:.1} s",
            s(d)
        ))
    );
    a.process.kill();
}

/// `TAKEOVER_TRACE=1` says how far the bench got.
fn trace(what: &str) {
    if std::env::var_os("TAKEOVER_TRACE").is_some() {
        eprintln!("takeover: {what}");
    }
}

/// One purchase per customer, keyed by its id.
fn produce(brokers: &str, topic: &str, customers: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .expect("producer");
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for i in 0..customers {
        let id = customer(i);
        let line = format!(
            r#"{{"type":"purchase","ts":"{ts}","customer_id":"{id}","amount":{}.5}}"#,
            amount(i)
        );
        let mut record = BaseRecord::to(topic).key(&id).payload(&line);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(300))
        .expect("every purchase produced");
}

/// The sum of group `takeover`'s committed offsets on `topic`.
fn committed_total(brokers: &str, topic: &str, partitions: i32) -> i64 {
    let Ok(consumer) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "takeover")
        .create::<BaseConsumer>()
    else {
        return 0;
    };
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_or(0, |c| {
            c.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .sum()
        })
}

/// Four calls by four reps in a row: three handoffs, which the
/// rep-turnover check alerts on at once for a tier A or B customer.
fn trigger_handoff(brokers: &str, config: &Config, id: &str) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for rep in 0..4 {
        let line = format!(
            r#"{{"type":"call","ts":"{ts}","customer_id":"{id}","rep_id":"takeover-rep{rep}"}}"#
        );
        let record = BaseRecord::to(&config.kafka.input_topics[1])
            .key(id)
            .payload(&line);
        producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("call sent");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("calls produced");
}

/// How long after `since` (Unix ms) an alert naming `id` was produced to
/// the alert topic (its record's create time: the topic is read after the
/// other phases, so the time it is read would measure the bench).
fn alert_seen(brokers: &str, config: &Config, id: &str, since: i64) -> Option<Duration> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "takeover-alerts")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("alert reader");
    consumer
        .subscribe(&[config.kafka.alert_topic.as_str()])
        .expect("subscribe");
    let needle = format!("\"customer_id\":\"{id}\"");
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
            && m.payload()
                .is_some_and(|p| String::from_utf8_lossy(p).contains(&needle))
            && let Some(at) = m.timestamp().to_millis()
        {
            return Some(Duration::from_millis(at.saturating_sub(since).max(0) as u64));
        }
    }
    None
}

/// `churnwatch run` as member `name` of group `takeover`.
fn start(brokers: &str, dir: &Path, name: &str) -> Instance {
    let consumer =
        "[kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"";
    start_instance(brokers, dir, name, "takeover", consumer)
}

/// The sum of every sample of metric `name`.
async fn metric_sum(api: &Instance, name: &str) -> Option<f64> {
    metric_sum_where(api, name, None).await
}

/// The sum of the samples of metric `name` with `label` (name, value).
async fn metric_sum_where(api: &Instance, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let text = common::try_scrape(&api.ops).await?;
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).ok()?;
    let values = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        });
    Some(values.sum())
}

/// Seconds the instance has spent restoring assignments so far.
async fn restore_seconds(api: &Instance) -> f64 {
    // The parser keeps a histogram's `_sum` line as a sample of its own.
    metric_sum(api, "churnwatch_restore_seconds_sum")
        .await
        .unwrap_or(0.0)
}

async fn customers_held(api: &Instance) -> u64 {
    metric_sum(api, "churnwatch_customers").await.unwrap_or(0.0) as u64
}

async fn found(api: &Instance, id: &str) -> bool {
    answers(&format!("{}/customers/{id}", api.data)).await
}

async fn answers(url: &str) -> bool {
    static HTTP: std::sync::LazyLock<reqwest::Client> =
        std::sync::LazyLock::new(reqwest::Client::new);
    // One client: a fresh one per request (`reqwest::get`) costs ~40 ms,
    // which made 200 lookups look like 8 s of takeover.
    HTTP.get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Up to [`SAMPLE`] customers (by number) that `api`'s instance does not
/// hold.
async fn sample_owned_by_other(api: &Instance, customers: usize) -> Vec<usize> {
    let mut moved = Vec::new();
    let step = (customers / (SAMPLE * 4)).max(1);
    for i in (0..customers).step_by(step) {
        if !found(api, &customer(i)).await {
            moved.push(i);
        }
        if moved.len() == SAMPLE {
            break;
        }
    }
    moved
}

/// Asks `probe` every 50 ms until it answers, for at most `wait`.
async fn until<T, F, Fut>(wait: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(v) = probe().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
