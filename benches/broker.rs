//! Benchmark 5 of issue 7: end to end on a real broker (`tansu`, which
//! `tests/run.sh` installs). Numbers go to BENCHMARKS.md.
//!
//! `cargo bench --bench broker` runs two measurements on one broker:
//! 1. Throughput: one pre-produced stream read by a bare rdkafka consumer
//!    (poll and count, nothing else) and by `churnwatch run` (release build,
//!    default configuration but for ports and the state directory); events/s
//!    of each, counted from the first message to the last, and their ratio.
//! 2. Alert latency: `churnwatch run` under a fixed load (`--rate`, default
//!    20,000 events/s, for `--seconds`, default 15), of which 100 events per
//!    second make a rep-handoff alert fire at once; p50/p99 from handing the
//!    triggering event to the producer to receiving its alert from the alert
//!    topic, both in this process; beside it the broker's own floor: the same
//!    trigger events' latency to a bare consumer of the input topic.
//!
//! `cargo bench --bench broker -- --mock` runs on rdkafka's mock cluster
//! instead, where the broker is not the limit: the CPU seconds per million
//! events of `run` (the whole process, librdkafka's threads included) and
//! of replay over the same events, then the latency run of 2. there, with
//! churnwatch's own share read from its `churnwatch_alert_latency_seconds`
//! (a message's arrival in the process to its alert's acknowledgement).
//!
//! `-- --customers N --days D` sizes the throughput stream; `-- --fetch-wait-ms
//! M` sets the instance's `fetch.wait.max.ms` for the latency run, `--linger-ms
//! M` its producer's `linger.ms`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};

use churnwatch::config::Config;
use common::broker::{Process, Tansu, population_lines, ready, start_instance};
use common::produce_lines;

struct Options {
    customers: usize,
    days: usize,
    rate: u64,
    seconds: u64,
    /// `fetch.wait.max.ms` of the instance under load (librdkafka's 500 if unset).
    fetch_wait: Option<u64>,
    /// `linger.ms` of the instance's producer under load (churnwatch's 5 if unset).
    linger: Option<u64>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let optional = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    Options {
        customers: value("--customers", 5_000) as usize,
        days: value("--days", 90) as usize,
        rate: value("--rate", 20_000),
        seconds: value("--seconds", 15),
        fetch_wait: optional("--fetch-wait-ms"),
        linger: optional("--linger-ms"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`:
    // minutes of load on a broker are not a test.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-child") {
        let mut config = Config::default();
        config.kafka.brokers = args.get(i + 1).cloned().unwrap_or_default();
        let n = args.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(0);
        let (_, cpu) = bare_consumer(&config, n);
        println!("bare-child cpu {cpu}");
        return;
    }
    let options = options();
    if std::env::args().any(|a| a == "--mock") {
        mock(&options).await;
        return;
    }
    if !common::broker::tansu_installed() {
        println!("broker bench: tansu is not installed (tests/run.sh installs it); skipped");
        return;
    }
    let tansu = Tansu::start().await;
    let dir = tempfile::tempdir().expect("temp dir");

    let mut config = Config::default();
    config.kafka.brokers = tansu.brokers.clone();
    tansu.create_topics(&config, 3).await;
    let lines = population_lines(options.customers, 7, options.days);
    produce_lines(&config, &lines).await;
    let n = lines.len() as u64;
    // The bare consumer reads the input topics only; `run` also reads the
    // roster topic, and counts its events.
    let inputs = lines
        .iter()
        .filter(|l| !l.contains(r#""type":"rep""#))
        .count() as u64;
    let (bare, _) = bare_consumer(&config, inputs);
    let (run, _) = churnwatch_run(
        &tansu.brokers,
        dir.path(),
        "throughput",
        "",
        (n, n - inputs),
    )
    .await;
    println!(
        "throughput, {} customers / {n} events on 3 partitions: bare consumer {:.0} events/s, \
         churnwatch run {:.0} events/s, ratio {:.2} (target >= 0.9)",
        options.customers,
        bare,
        run,
        run / bare
    );

    let latency = latency_config(&tansu.brokers);
    tansu.create_topics(&latency, 3).await;
    report_latency(&latency, dir.path(), &options, 50).await;
}

/// The latency run's own topics, so it starts on an empty input.
fn latency_config(brokers: &str) -> Config {
    let mut latency = Config::default();
    latency.kafka.brokers = brokers.to_string();
    latency.kafka.input_topics = ["purchases", "calls", "tickets"]
        .map(|t| format!("latency-{t}"))
        .to_vec();
    latency.kafka.alert_topic = "latency-alerts".into();
    latency.kafka.dead_letter_topic = "latency-dead-letters".into();
    latency.kafka.changelog_topic = "latency-state".into();
    latency.kafka.roster_topic = "latency-reps".into();
    latency
}

/// Runs [`alert_latency`] and prints it beside its floor and churnwatch's
/// own share (`target_ms`: the end-to-end p99 target on this broker).
async fn report_latency(config: &Config, dir: &Path, options: &Options, target_ms: u64) {
    let (alerts, floor, own) = alert_latency(config, dir, options).await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "alert latency at {} events/s for {} s: {} alerts, p50 {:.1} ms, p99 {:.1} ms \
         (target p99 < {target_ms} ms); the broker's own floor, trigger event produce -> consumed \
         by a bare consumer: p50 {:.1} ms, p99 {:.1} ms; churnwatch's own share, arrival in the \
         process -> the alert's broker acknowledgement (churnwatch_alert_latency_seconds, \
         interpolated in its buckets): p50 {:.2} ms, p99 {:.2} ms (target p99 <= 10 ms)",
        options.rate,
        options.seconds,
        alerts.count,
        ms(alerts.p50),
        ms(alerts.p99),
        ms(floor.p50),
        ms(floor.p99),
        own.0 * 1e3,
        own.1 * 1e3,
    );
}

/// Input partitions per topic on the mock cluster: its partitions keep only
/// their newest few MB (older messages are dropped, and a reader from the
/// start would never see them), so the stream is spread thin.
const MOCK_PARTITIONS: i32 = 12;

/// `--mock`: rdkafka's in-process mock cluster, where the broker is not
/// the limit: CPU seconds per million events of `churnwatch run` (the whole
/// process, start to the last event counted) beside replay's over the same
/// lines (this process, in-process replay).
async fn mock(options: &Options) {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let mut config = Config::default();
    config.kafka.brokers = cluster.bootstrap_servers();
    common::broker::create_mock_topics(&cluster, &config, MOCK_PARTITIONS);
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = population_lines(options.customers, 7, options.days);
    produce_lines(&config, &lines).await;
    let n = lines.len() as u64;
    let inputs = lines
        .iter()
        .filter(|l| !l.contains(r#""type":"rep""#))
        .count() as u64;
    let bare_cpu = bare_consumer_process(&config.kafka.brokers, inputs);
    let (rate, run_cpu) = churnwatch_run(
        &config.kafka.brokers,
        dir.path(),
        "mock",
        "",
        (n, n - inputs),
    )
    .await;
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("lines written");
    // Median of three: a few hundred thousand events are a fraction of a
    // CPU second, counted in 10 ms ticks.
    let mut replays: Vec<f64> = (0..3)
        .map(|_| {
            let before = cpu_seconds("thread-self");
            churnwatch::replay::replay(
                &Config::default(),
                &churnwatch::replay::ReplayOptions {
                    inputs: vec![file.clone()],
                    mapped: Vec::new(),
                    until: None,
                    dead_letter: None,
                    now: churnwatch::engine::event::Ts(i64::MAX / 2),
                },
                &mut std::io::sink(),
                &mut std::io::sink(),
            )
            .expect("replay");
            (cpu_seconds("thread-self") - before) / n as f64
        })
        .collect();
    replays.sort_by(f64::total_cmp);
    let replay_cpu = replays[1];
    println!(
        "mock cluster, {} customers / {n} events on {MOCK_PARTITIONS} partitions: churnwatch run {rate:.0} events/s, \
         {:.2} CPU s per million events (the whole process while it consumed); a bare rdkafka \
         consumer of the same input {:.2} (a process of its own); replay {:.2} CPU s per million \
         (median of three); run / (bare consumer + replay) {:.2} (target <= 1.3); run / replay {:.2}",
        options.customers,
        run_cpu * 1e6,
        bare_cpu * 1e6,
        replay_cpu * 1e6,
        run_cpu / (bare_cpu + replay_cpu),
        run_cpu / replay_cpu
    );
    let latency = latency_config(&config.kafka.brokers);
    for (topic, partitions) in common::broker::topics_of(&latency, 3) {
        cluster.create_topic(&topic, partitions, 1).expect("topic");
    }
    report_latency(&latency, dir.path(), options, 50).await;
}

/// User plus system CPU seconds of process `pid` (or "self", "thread-self") so far, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Events/s of a bare rdkafka consumer reading `n` messages of the input
/// topics, and this process's CPU seconds per message over the same span.
fn bare_consumer(config: &Config, n: u64) -> (f64, f64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", "bare-consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("bare consumer");
    let topics: Vec<&str> = config
        .kafka
        .input_topics
        .iter()
        .map(String::as_str)
        .collect();
    consumer.subscribe(&topics).expect("subscribe");
    let mut seen = 0u64;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < n && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(|| (Instant::now(), cpu_seconds("self")));
            seen += 1;
        }
    }
    assert_eq!(seen, n, "the bare consumer read the whole stream");
    let cpu = first.map_or(0.0, |(_, cpu)| (cpu_seconds("self") - cpu) / n as f64);
    (rate(n, first.map(|(at, _)| at.elapsed())), cpu)
}

/// [`bare_consumer`] in a process of its own (this bench run again with
/// `--bare-child`), so an in-process broker's threads are not counted: its
/// CPU seconds per message.
fn bare_consumer_process(brokers: &str, n: u64) -> f64 {
    let out = std::env::current_exe()
        .and_then(|exe| {
            std::process::Command::new(exe)
                .args(["--bench", "--bare-child", brokers, &n.to_string()])
                .output()
        })
        .expect("bare consumer process");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("bare-child cpu ")?.parse().ok())
        .expect("the bare consumer process reported its CPU")
}

fn rate(n: u64, elapsed: Option<Duration>) -> f64 {
    elapsed.map_or(0.0, |e| n as f64 / e.as_secs_f64())
}

/// Starts `churnwatch run` (group `group`, extra TOML `extra`), returns its
/// process and the address of its ops listener (`/metrics`, `/readyz`).
fn start(brokers: &str, dir: &Path, group: &str, extra: &str) -> (Process, String) {
    let instance = start_instance(brokers, dir, group, group, extra);
    (instance.process, instance.ops)
}

/// The instance's metrics, parsed.
async fn scrape(ops: &str) -> Option<prometheus_parse::Scrape> {
    let text = reqwest::get(format!("{ops}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).ok()
}

/// Input events counted by `churnwatch_events_total` (applied and rejected).
async fn events_counted(ops: &str) -> Option<u64> {
    let scrape = scrape(ops).await?;
    let total = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "churnwatch_events_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum::<f64>();
    Some(total as u64)
}

/// Events/s of `churnwatch run` over `n` events, from the first scrape that
/// counts more than the `roster` events (read at start, before the group
/// has assigned any input) to the first that counts all (scraped every
/// 200 ms), and the process's CPU seconds per event over the same span
/// (its start-up, group join and restore are not the events' cost).
async fn churnwatch_run(
    brokers: &str,
    dir: &Path,
    group: &str,
    extra: &str,
    (n, roster): (u64, u64),
) -> (f64, f64) {
    let (mut process, ops) = start(brokers, dir, group, extra);
    let pid = process.0.id().to_string();
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut done = None;
    while Instant::now() < deadline {
        let counted = events_counted(&ops).await.unwrap_or(0);
        if counted > roster {
            let (at, base, cpu) =
                *first.get_or_insert_with(|| (Instant::now(), counted, cpu_seconds(&pid)));
            if counted >= n {
                assert!(
                    base < n,
                    "the stream is too short to time (--customers, --days)"
                );
                done = Some((
                    rate(n - base, Some(at.elapsed())),
                    (cpu_seconds(&pid) - cpu) / (n - base) as f64,
                ));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    process.kill();
    done.expect("churnwatch run consumed the whole stream")
}

/// Percentiles of a set of latencies.
struct Latency {
    p50: Duration,
    p99: Duration,
    count: usize,
}

impl Latency {
    /// From send times and receive times by key.
    fn of(sent: &[(String, Instant)], received: &HashMap<String, Instant>) -> Latency {
        let mut all: Vec<Duration> = sent
            .iter()
            .filter_map(|(id, at)| received.get(id).map(|r| r.duration_since(*at)))
            .collect();
        assert!(
            !all.is_empty(),
            "triggers arrived ({} triggers sent)",
            sent.len()
        );
        all.sort();
        let pick = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
        Latency {
            p50: pick(0.5),
            p99: pick(0.99),
            count: all.len(),
        }
    }
}

/// A consumer of `topic` in its own group, reading from the start.
fn reader(brokers: &str, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Fixed load with alert-triggering events; returns the alerts' latency,
/// as the floor the trigger events' own latency to a bare consumer, and
/// the p50 and p99 seconds of churnwatch's own histogram.
async fn alert_latency(
    config: &Config,
    dir: &Path,
    options: &Options,
) -> (Latency, Latency, (f64, f64)) {
    let topics = config
        .kafka
        .input_topics
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let extra = format!(
        "input_topics = [{topics}]\nalert_topic = \"{}\"\ndead_letter_topic = \"{}\"\n\
         changelog_topic = \"{}\"\nroster_topic = \"{}\"\n\
         {}{}[rules.rep_turnover]\ntiers = [\"A\", \"B\", \"C\"]\n",
        config.kafka.alert_topic,
        config.kafka.dead_letter_topic,
        config.kafka.changelog_topic,
        config.kafka.roster_topic,
        options.fetch_wait.map_or(String::new(), |ms| {
            format!("[kafka.consumer]\n\"fetch.wait.max.ms\" = \"{ms}\"\n")
        }),
        options.linger.map_or(String::new(), |ms| {
            format!("[kafka.producer]\n\"linger.ms\" = \"{ms}\"\n")
        })
    );
    let (mut process, ops) = start(&config.kafka.brokers, dir, "latency", &extra);
    let ready = ready(&format!("{ops}/readyz"), Duration::from_secs(60)).await;
    assert!(ready, "churnwatch run is ready");

    let brokers = &config.kafka.brokers;
    let alerts = reader(brokers, "latency-reader", &config.kafka.alert_topic);
    let calls = reader(
        brokers,
        "latency-input-reader",
        &config.kafka.input_topics[1],
    );
    // The reader must own the alert topic before the load starts: alerts it
    // fetched only after joining its group would count the join as latency.
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut received: HashMap<String, Instant> = HashMap::new();
        let mut triggers: HashMap<String, Instant> = HashMap::new();
        let joining = Instant::now();
        let owns = |c: &BaseConsumer| c.assignment().map_or(0, |a| a.count()) > 0;
        while !(owns(&alerts) && owns(&calls)) && joining.elapsed() < Duration::from_secs(60) {
            let _ = alerts.poll(Duration::from_millis(5));
            let _ = calls.poll(Duration::from_millis(5));
        }
        let _ = joined_tx.send(());
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_secs(10) {
            if let Some(Ok(m)) = alerts.poll(Duration::from_millis(2)) {
                let at = Instant::now();
                quiet_since = at;
                if let Some(id) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    received.entry(id.to_string()).or_insert(at);
                }
            }
            // A trigger is its customer's last call: keep the latest arrival.
            while let Some(Ok(m)) = calls.poll(Duration::ZERO) {
                if let Some(id) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                    triggers.insert(id.to_string(), Instant::now());
                }
            }
        }
        (received, triggers)
    });

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "1")
        .create()
        .expect("load producer");
    let _ = joined_rx.recv_timeout(Duration::from_secs(60));
    let sent = fixed_load(&producer, config, options);
    producer
        .flush(Duration::from_secs(30))
        .expect("load delivered");
    let (received, triggers) = reader.join().expect("alert reader");
    let own = own_latency(&ops)
        .await
        .expect("churnwatch_alert_latency_seconds scraped");
    process.kill();
    (
        Latency::of(&sent, &received),
        Latency::of(&sent, &triggers),
        own,
    )
}

/// p50 and p99 of `churnwatch_alert_latency_seconds`, interpolated
/// linearly inside its buckets (as PromQL's `histogram_quantile`).
async fn own_latency(ops: &str) -> Option<(f64, f64)> {
    let buckets = scrape(ops)
        .await?
        .samples
        .iter()
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b)
                if s.metric == "churnwatch_alert_latency_seconds" =>
            {
                Some(b.clone())
            }
            _ => None,
        })?;
    let total = buckets.last()?.count;
    if total == 0.0 {
        return None;
    }
    let quantile = |q: f64| {
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for b in &buckets {
            if b.count >= rank {
                if b.less_than.is_infinite() {
                    return lower;
                }
                let share = (rank - below) / (b.count - below).max(f64::MIN_POSITIVE);
                return lower + (b.less_than - lower) * share;
            }
            (lower, below) = (b.less_than, b.count);
        }
        lower
    };
    Some((quantile(0.5), quantile(0.99)))
}

/// Sends `rate` events/s for `seconds`, in 1 ms slices: purchases of a
/// background population, and per 10 ms one customer's fourth call with a
/// fourth rep (its first three calls went out earlier), which crosses the
/// handoff threshold. Returns each trigger's customer id and send time.
fn fixed_load(
    producer: &ThreadedProducer<DefaultProducerContext>,
    config: &Config,
    options: &Options,
) -> Vec<(String, Instant)> {
    let (purchases, calls) = (&config.kafka.input_topics[0], &config.kafka.input_topics[1]);
    let per_ms = (options.rate / 1000).max(1);
    let total_ms = options.seconds * 1000;
    let mut sent = Vec::new();
    let started = Instant::now();
    let send = |topic: &str, key: &str, line: &str| {
        let mut record = BaseRecord::to(topic).key(key).payload(line);
        loop {
            match producer.send(record) {
                Ok(()) => return,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    };
    for ms in 0..total_ms {
        let due = started + Duration::from_millis(ms);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for i in 0..per_ms {
            let slot = ms % 10;
            let customer = format!("l{}", ms / 10);
            if slot < 4 && i == 0 {
                let line = format!(
                    r#"{{"type":"call","ts":"{now}","customer_id":"{customer}","rep_id":"rep{slot}","channel":"phone"}}"#
                );
                if slot == 3 {
                    sent.push((customer.clone(), Instant::now()));
                }
                send(calls, &customer, &line);
            } else {
                let customer = format!("b{}", (ms * per_ms + i) % 50_000);
                let line = format!(
                    r#"{{"type":"purchase","ts":"{now}","customer_id":"{customer}","amount":120,"currency":"EUR"}}"#
                );
                send(purchases, &customer, &line);
            }
        }
    }
    sent
}
