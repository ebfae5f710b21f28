//! A real Kafka-compatible broker for tests and benchmarks: `tansu`, started
//! on a free loopback port and stopped (with everything it started) on drop.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

use churnwatch::config::Config;

use super::{eventually, init_logs};

/// A child process killed (SIGKILL) and reaped when dropped, so a failing
/// test leaves nothing running.
pub struct Process(pub Child);

impl Process {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Sends `signal` (e.g. "STOP", "CONT") with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.0.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(sent.success(), "SIG{signal} delivered");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Tansu {
    pub process: Process,
    pub brokers: String,
}

impl Tansu {
    pub async fn start() -> Tansu {
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
        Tansu {
            process: Process(child),
            brokers,
        }
    }

    pub async fn create_topics(&self, config: &Config, input_partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("admin");
        let topics = topics_of(config, input_partitions);
        let changelog = &config.kafka.changelog_topic;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(t, p)| {
                let topic = NewTopic::new(t, *p, TopicReplication::Fixed(1));
                if t == changelog {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
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

/// Whether the `tansu` broker is on the PATH (broker benches skip without it).
pub fn tansu_installed() -> bool {
    Command::new("tansu").arg("--version").output().is_ok()
}

/// Creates on the mock cluster every topic a `run` needs: the inputs and
/// changelog with `input_partitions`, the inbox topics with one.
pub fn create_mock_topics(
    cluster: &rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    config: &Config,
    input_partitions: i32,
) {
    let inbox = [
        (config.kafka.actions_topic.clone(), 1),
        (config.kafka.instances_topic.clone(), 1),
        (config.kafka.tiers_topic.clone(), 1),
    ];
    for (topic, partitions) in topics_of(config, input_partitions).into_iter().chain(inbox) {
        cluster.create_topic(&topic, partitions, 1).expect("topic");
    }
}

/// The topics `config` reads and writes, with partition counts (the
/// changelog co-partitioned with the inputs); the inbox's topics are left
/// to the service, which creates them.
pub fn topics_of(config: &Config, input_partitions: i32) -> Vec<(String, i32)> {
    let mut topics: Vec<(String, i32)> = config
        .kafka
        .input_topics
        .iter()
        .map(|t| (t.clone(), input_partitions))
        .collect();
    topics.push((config.kafka.roster_topic.clone(), 1));
    topics.push((config.kafka.alert_topic.clone(), 3));
    topics.push((config.kafka.dead_letter_topic.clone(), 1));
    let changelog = &config.kafka.changelog_topic;
    if !changelog.is_empty() {
        topics.push((changelog.clone(), input_partitions));
    }
    topics
}

/// The events of a synthetic population over `days`, from 2026-01-01.
pub fn population_lines(customers: usize, seed: u64, days: usize) -> Vec<String> {
    let mut population =
        churnwatch::generate::Population::new(churnwatch::generate::PopulationOptions {
            customers,
            seed,
            start: churnwatch::engine::event::Ts::parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
            shape: Default::default(),
        });
    let mut generated = Vec::new();
    for _ in 0..days {
        population.next_day(&mut generated);
    }
    generated.into_iter().map(|g| g.line).collect()
}

/// Polls `url` until it answers 200 (false once `limit` has passed).
pub async fn ready(url: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `churnwatch run --config cfg` as a child process, its log appended to
/// `log` (`CHILD_LOG` sets its `RUST_LOG`).
pub fn run_instance(cfg: &std::path::Path, log: &std::path::Path) -> Process {
    run_instance_with_log_level(cfg, log, &child_log("info,librdkafka=warn"))
}

/// A child's `RUST_LOG`: `CHILD_LOG` if set, else `default`.
fn child_log(default: &str) -> String {
    std::env::var("CHILD_LOG").unwrap_or_else(|_| default.into())
}

/// [`run_instance`] logging at `level` (a `RUST_LOG` value).
pub fn run_instance_with_log_level(
    cfg: &std::path::Path,
    log: &std::path::Path,
    level: &str,
) -> Process {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_churnwatch"))
        .args(["run", "--config"])
        .arg(cfg)
        .env("RUST_LOG", level)
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .spawn()
        .expect("churnwatch runs");
    Process(child)
}

/// Where a child instance's config and log go, and a free port for its API.
pub struct InstanceFiles {
    /// Holds the files until the test ends.
    pub dir: tempfile::TempDir,
    /// Its config file (the test writes it).
    pub cfg: std::path::PathBuf,
    /// Its log; `KEEP_LOG=path` keeps it after the test.
    pub log: std::path::PathBuf,
    /// A loopback address nothing listens on yet.
    pub http: std::net::SocketAddr,
}

/// Fresh [`InstanceFiles`].
pub fn instance_files() -> InstanceFiles {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("churnwatch.toml");
    let log = std::env::var_os("KEEP_LOG").map_or_else(|| dir.path().join("run.log"), Into::into);
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    InstanceFiles {
        dir,
        cfg,
        log,
        http,
    }
}

/// A bench's `churnwatch run` child: its process and the URLs of its data
/// and operations listeners.
pub struct Instance {
    pub process: Process,
    pub data: String,
    pub ops: String,
}

/// Starts `churnwatch run` (release build, logging warnings, or at
/// `CHILD_LOG`'s `RUST_LOG` level) as a member of
/// `group` named `name`: `extra` TOML follows its `[kafka]` lines, its
/// state goes to `dir/name`, both listeners on free loopback ports.
pub fn start_instance(
    brokers: &str,
    dir: &std::path::Path,
    name: &str,
    group: &str,
    extra: &str,
) -> Instance {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
    };
    let (http, ops) = (free(), free());
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\n{extra}\n\
             [http]\nbind = \"{http}\"\nops_bind = \"{ops}\"\n[state]\ndir = \"{}\"\n",
            dir.join(name).display()
        ),
    )
    .expect("config written");
    let child = Command::new(env!("CARGO_BIN_EXE_churnwatch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", child_log("warn"))
        .stdout(Stdio::null())
        .spawn()
        .expect("churnwatch runs");
    Instance {
        process: Process(child),
        data: format!("http://{http}"),
        ops: format!("http://{ops}"),
    }
}
