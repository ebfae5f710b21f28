//! End to end against a real Kafka-compatible broker: `tansu`, started on a
//! free loopback port per test and stopped when the test ends.
//! `tests/run.sh` installs it; without it these tests fail with a message
//! saying so.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use churnwatch::config::Config;
use churnwatch::engine::store::Store;
use common::*;

struct Tansu {
    child: Child,
    brokers: String,
}

impl Tansu {
    async fn start() -> Tansu {
        init_logs();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed (tests/run.sh installs it)");
        let brokers = format!("127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect(&brokers).is_ok()
        })
        .await;
        assert!(up, "tansu listens on {brokers}");
        Tansu { child, brokers }
    }

    async fn create_topics(&self, config: &Config, input_partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("admin");
        let mut topics: Vec<(String, i32)> = config
            .kafka
            .input_topics
            .iter()
            .map(|t| (t.clone(), input_partitions))
            .collect();
        topics.push((config.kafka.roster_topic.clone(), 1));
        topics.push((config.kafka.alert_topic.clone(), 3));
        topics.push((config.kafka.dead_letter_topic.clone(), 1));
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
            .collect();
        for r in admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .expect("create topics")
        {
            r.expect("topic created");
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (alert_id, status): an alert's identity.
fn identities(alerts: &[serde_json::Value]) -> Vec<(String, String)> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_ordered_scenario_on_three_partitions_equals_replay() {
    let tansu = Tansu::start().await;
    let config = event_clock_config(&tansu.brokers);
    tansu.create_topics(&config, 3).await;
    let lines = scenario_lines();
    produce_lines(&config, &lines).await;
    let expected = replay_alerts(&config, &lines);

    let stop = CancellationToken::new();
    let run = spawn_run(&config, Store::default(), &stop).await.handle;
    let arrived = eventually(Duration::from_secs(90), || {
        read_topic(&tansu.brokers, "churn-alerts").len() >= expected.len()
            && read_topic(&tansu.brokers, "churn-dead-letters").len() >= 2
    })
    .await;
    stop.cancel();
    let report = run.await.expect("join").expect("run");
    assert!(arrived, "alerts and dead letters arrived");
    assert_eq!(
        alert_set(&parse_alerts(&read_topic(&tansu.brokers, "churn-alerts"))),
        alert_set(&expected)
    );
    assert_eq!(report.rejected, 2);
    let reasons: BTreeSet<String> = read_topic(&tansu.brokers, "churn-dead-letters")
        .iter()
        .filter_map(|r| r.header("churnwatch.reason").map(str::to_string))
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["invalid_json".to_string(), "wrong_type".to_string()])
    );
}

/// Limits that apply to every tier, so which customers an instance holds
/// cannot change what fires (tiers are ranked per instance: see README).
fn tier_free(brokers: &str) -> Config {
    let mut c = event_clock_config(brokers);
    let d30 = Some(Duration::from_secs(30 * 86_400));
    c.rules.purchase_recency = churnwatch::engine::rule::TierLimits {
        a: d30,
        b: d30,
        c: d30,
    };
    c.rules.contact_gap = churnwatch::engine::rule::TierLimits::default();
    c.rules.rep_turnover.tiers = vec![
        churnwatch::engine::tier::Tier::A,
        churnwatch::engine::tier::Tier::B,
        churnwatch::engine::tier::Tier::C,
    ];
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_partitions_and_emit_each_alert_once() {
    let tansu = Tansu::start().await;
    let config = tier_free(&tansu.brokers);
    tansu.create_topics(&config, 4).await;
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let (store_a, store_b) = (Store::default(), Store::default());
    let a = spawn_run(&config, store_a.clone(), &stop_a).await.handle;
    let b = spawn_run(&config, store_b.clone(), &stop_b).await.handle;
    let lines = scenario_lines();
    produce_lines(&config, &lines).await;
    let expected = replay_alerts(&config, &lines);
    let done = eventually(Duration::from_secs(120), || {
        read_topic(&tansu.brokers, "churn-alerts").len() >= expected.len()
            && store_a.len() + store_b.len() == 20
    })
    .await;
    stop_a.cancel();
    stop_b.cancel();
    let (ra, rb) = (
        a.await.expect("join").expect("a"),
        b.await.expect("join").expect("b"),
    );
    assert!(done, "both instances consumed; alerts arrived");
    assert!(
        ra.applied > 0 && rb.applied > 0,
        "the group split the work: {ra:?} {rb:?}"
    );
    let got = parse_alerts(&read_topic(&tansu.brokers, "churn-alerts"));
    assert_eq!(
        identities(&got),
        identities(&expected),
        "each alert exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_resumes_from_committed_offsets() {
    let tansu = Tansu::start().await;
    let mut config = tier_free(&tansu.brokers);
    config.engine.clock = churnwatch::config::RunClock::Wall;
    tansu.create_topics(&config, 3).await;
    let lines = scenario_lines();
    let (first, second) = lines.split_at(lines.len() / 2);
    let is_roster = |l: &&String| l.contains(r#""type":"rep""#);
    let inputs = |half: &[String]| half.iter().filter(|l| !is_roster(l)).count() as u64;
    let rosters = lines.iter().filter(is_roster).count() as u64;
    produce_lines(&config, first).await;

    let stop = CancellationToken::new();
    let run = spawn_run(&config, Store::default(), &stop).await.handle;
    let consumed = eventually(Duration::from_secs(90), || {
        committed(&tansu.brokers, &config) >= inputs(first) as i64
    })
    .await;
    stop.cancel();
    let r1 = run.await.expect("join").expect("first run");
    assert!(consumed, "offsets of the first half were committed");

    produce_lines(&config, second).await;
    let stop = CancellationToken::new();
    let run = spawn_run(&config, Store::default(), &stop).await.handle;
    let total = inputs(&lines) as i64;
    let resumed = eventually(Duration::from_secs(90), || {
        committed(&tansu.brokers, &config) >= total
    })
    .await;
    stop.cancel();
    let r2 = run.await.expect("join").expect("second run");
    assert!(resumed, "the second run committed the rest");
    let roster_first = first.iter().filter(is_roster).count() as u64;
    // The roster is read in full at every start; inputs resume after the
    // committed offsets, so no input message is consumed twice.
    assert_eq!(r1.applied + r1.rejected, inputs(first) + roster_first);
    assert_eq!(r2.applied + r2.rejected, inputs(second) + rosters);
}

/// Sum of the group's committed offsets over the input topics.
fn committed(brokers: &str, config: &Config) -> i64 {
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
        for p in 0..3 {
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

/// Distinct (alert_id, status) pairs.
fn distinct(alerts: &[serde_json::Value]) -> BTreeSet<(String, String)> {
    identities(alerts).into_iter().collect()
}

/// Issue 6 (open): the distinct alert set after kills is not yet reliably
/// exact (in some runs an episode differs); run with `--ignored` to see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "issue 6: restore after kill -9 is not yet exact in every run"]
async fn kill_9_at_random_points_loses_no_alert() {
    use rand::{Rng, SeedableRng};
    let tansu = Tansu::start().await;
    let mut config = event_clock_config(&tansu.brokers);
    config.state.snapshot_interval = Duration::from_millis(200);
    tansu.create_topics(&config, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("churnwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[engine]\nclock = \"event\"\nidle_timeout = \"1s\"\ntick_interval = \"50ms\"\nmax_future_skew = \"36500d\"\n\
             [kafka]\nbrokers = \"{}\"\n[kafka.consumer]\n\"group.instance.id\" = \"kill-test-1\"\n[http]\nbind = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\nsnapshot_interval = \"200ms\"\n",
            tansu.brokers,
            config.state.dir.display()
        ),
    )
    .unwrap();
    let mut population =
        churnwatch::generate::Population::new(churnwatch::generate::PopulationOptions {
            customers: 5000,
            seed: 11,
            start: churnwatch::engine::event::Ts::parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
        });
    let mut generated = Vec::new();
    for _ in 0..150 {
        population.next_day(&mut generated);
    }
    let lines: Vec<String> = generated.into_iter().map(|g| g.line).collect();
    let expected = distinct(&replay_alerts(&config, &lines));
    assert!(
        expected.len() > 50,
        "a stream with something to alert on: {}",
        expected.len()
    );

    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_churnwatch"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.path().join("run.log"))
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|_| std::process::Stdio::null()),
            )
            .spawn()
            .expect("churnwatch runs")
    };
    // The whole stream is on the broker first (tansu 0.6 reports high
    // watermarks per batch, so "caught up" cannot be judged while producing);
    // the instance is then killed at random points while consuming it.
    produce_lines(&config, &lines).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut child = start();
    let mut seen = 0;
    for _ in 0..3 {
        // Kill only once this instance has made progress (new alerts on the
        // topic), at a random point after that.
        let mut done = false;
        let progressed = eventually(Duration::from_secs(60), || {
            let records = read_topic(&tansu.brokers, "churn-alerts");
            done = distinct(&parse_alerts(&records)) == expected;
            let n = records.len();
            (n > seen || done).then(|| seen = n).is_some()
        })
        .await;
        assert!(progressed, "the instance consumed and alerted");
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        child = start();
    }
    let complete = eventually(Duration::from_secs(120), || {
        distinct(&parse_alerts(&read_topic(&tansu.brokers, "churn-alerts"))) == expected
    })
    .await;
    child.kill().ok();
    child.wait().ok();
    let got = distinct(&parse_alerts(&read_topic(&tansu.brokers, "churn-alerts")));
    if let Some(keep) = std::env::var_os("KEEP_LOG") {
        let _ = std::fs::copy(dir.path().join("run.log"), keep);
    }
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(&expected).take(5).collect();
    assert!(
        complete,
        "distinct alerts equal an uninterrupted run's; missing {missing:?}, extra {extra:?}"
    );
}
