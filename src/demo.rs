//! `churnwatch demo`: the whole product on an in-process Kafka.
//!
//! Starts rdkafka's mock cluster, creates the topics, feeds a synthetic
//! population at an accelerated clock, runs exactly the `run` pipeline
//! (event clock, so simulated days drive deadlines) and prints alerts as
//! they arrive on the alert topic.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RunClock};
use crate::engine::event::Ts;
use crate::generate::{Population, PopulationOptions, Publisher, topic_for};
use crate::kafka::client::{Role, client_config};
use crate::pipeline;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seed of the synthetic population.
    pub seed: u64,
    /// Number of customers.
    pub customers: usize,
    /// Simulated days per wall-clock second.
    pub speed: f64,
    /// Simulated day 0.
    pub start: Ts,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The mock cluster or a client could not be created.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The pipeline failed to start.
    #[error(transparent)]
    Service(#[from] pipeline::PipelineError),
}

/// Totals printed at the end.
#[derive(Debug, Default, Clone)]
pub struct DemoSummary {
    /// Events produced.
    pub events: u64,
    /// Simulated days fed.
    pub simulated_days: u32,
    /// Alerts seen on the alert topic, by `rule/status`.
    pub alerts: BTreeMap<String, u64>,
    /// The pipeline's totals.
    pub report: pipeline::Report,
}

/// Runs the demo until `stop` completes, printing progress and alerts with `print`.
pub async fn run(
    options: DemoOptions,
    mut print: impl FnMut(&str),
    stop: impl Future<Output = ()>,
) -> Result<DemoSummary, DemoError> {
    let cluster = MockCluster::new(3)?;
    let brokers = cluster.bootstrap_servers();
    let mut config = Config::default();
    config.kafka.brokers = brokers.clone();
    config.engine.clock = RunClock::Event;
    config.engine.idle_timeout = Duration::from_millis(500);
    config.engine.tick_interval = Duration::from_millis(100);
    // Simulated time runs ahead of the wall clock by design.
    config.engine.max_future_skew = Duration::from_secs(100 * 365 * 86_400);
    // The demo's cluster lives in memory; so does its state.
    config.state.dir = std::path::PathBuf::new();
    config.kafka.changelog_topic = String::new();
    for topic in &config.kafka.input_topics {
        cluster.create_topic(topic, 3, 1)?;
    }
    cluster.create_topic(&config.kafka.roster_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.alert_topic, 3, 1)?;
    cluster.create_topic(&config.kafka.dead_letter_topic, 1, 1)?;
    // The mock cluster answers no CreateTopics, so `run` cannot make it.
    cluster.create_topic(&config.kafka.actions_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.instances_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.tiers_topic, 1, 1)?;
    // Loopback only, so the demo needs no tokens: the default ports when
    // free (a stable address to bookmark), else any.
    let listeners = match crate::http::Listeners::bind(&config.http).await {
        Ok(l) => l,
        Err(_) => {
            let any = crate::config::HttpConfig {
                bind: "127.0.0.1:0".into(),
                ops_bind: "127.0.0.1:0".into(),
                ..config.http.clone()
            };
            crate::http::Listeners::bind(&any)
                .await
                .map_err(pipeline::PipelineError::from)?
        }
    };
    if let (Ok(data), Ok(ops)) = (listeners.data.local_addr(), listeners.ops.local_addr()) {
        print(&format!(
            "churnwatch demo: retention inbox at http://localhost:{}/ (open it in a browser; no sign-in on loopback)",
            data.port()
        ));
        print(&format!(
            "data API: http://localhost:{0}/api/v1/alerts  /alerts  /customers/C0000001   metrics: http://localhost:{1}/metrics",
            data.port(),
            ops.port()
        ));
    }
    print(&format!(
        "in-process Kafka at {brokers}; {} customers, seed {}, {} simulated days per second",
        options.customers, options.seed, options.speed
    ));
    let token = CancellationToken::new();
    let service_config = config.clone();
    let service_stop = token.clone();
    let service = tokio::spawn(async move {
        pipeline::run(
            &service_config,
            &service_config.kafka.brokers,
            pipeline::Wiring {
                http: Some(listeners),
                store: crate::engine::store::Store::seeded(rand::random()),
                ..Default::default()
            },
            service_stop.cancelled_owned(),
        )
        .await
    });

    let producer: FutureProducer = client_config(&config.kafka, &brokers, Role::Loader).create()?;
    let mut publisher = Publisher::new(producer);
    let viewer: StreamConsumer = client_config(
        &config.kafka,
        &brokers,
        Role::Reader("churnwatch-demo-viewer"),
    )
    .set("auto.offset.reset", "earliest")
    .create()?;
    viewer.subscribe(&[config.kafka.alert_topic.as_str()])?;

    let mut population = Population::new(PopulationOptions {
        customers: options.customers,
        seed: options.seed,
        start: options.start,
        shape: Default::default(),
    });
    let mut summary = DemoSummary::default();
    let mut day_events = Vec::new();
    let day_period = Duration::from_secs_f64(1.0 / options.speed.max(0.01));
    let mut next_day = tokio::time::interval(day_period);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = next_day.tick() => {
                day_events.clear();
                population.next_day(&mut day_events);
                for g in &day_events {
                    let topic = topic_for(&config.kafka, g.kind);
                    if let Err(e) = publisher.send(topic, g.key.as_bytes(), g.line.as_bytes()).await {
                        print(&format!("demo: producing an event failed: {e}"));
                    }
                    summary.events += 1;
                }
                if population.day() == 3 {
                    // Show that bad input is rejected and dead-lettered, not dropped.
                    let bad = br#"{"type":"purchase","amount":"lots"}"#;
                    if let Err(e) = publisher.send(&config.kafka.input_topics[0], b"C0000001", bad).await {
                        print(&format!("demo: producing an event failed: {e}"));
                    }
                }
                summary.simulated_days = population.day();
            }
            m = viewer.recv() => match m {
                Ok(m) => {
                    if let Some(Ok(alert)) = m.payload().map(serde_json::from_slice::<Value>) {
                        *summary.alerts.entry(format!("{}/{}", alert["rule"].as_str().unwrap_or("?"), alert["status"].as_str().unwrap_or("?"))).or_default() += 1;
                        print(&readable(&alert));
                    }
                }
                Err(e) => print(&format!("demo: alert topic: {e}")),
            },
        }
    }
    token.cancel();
    match service.await {
        Ok(Ok(report)) => summary.report = report,
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => print(&format!("demo: service task failed: {e}")),
    }
    // Clients go before the cluster they talk to.
    drop(viewer);
    drop(publisher);
    drop(cluster);
    Ok(summary)
}

/// One alert as a line a person reads.
pub fn readable(a: &Value) -> String {
    let s = |k: &str| a[k].as_str().unwrap_or("-").to_string();
    let rule = match a["cause"].as_str() {
        Some(c) => format!("{}/{c}", s("rule")),
        None => s("rule"),
    };
    format!(
        "{}  {:<8} tier {}  {:<9} {:<24} {}",
        s("at"),
        s("status").to_uppercase(),
        s("tier"),
        s("customer_id"),
        rule,
        s("reason")
    )
}
