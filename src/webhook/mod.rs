//! Signed HTTP callbacks for retention teams (Standard Webhooks).
//!
//! Each endpoint is a sink that consumes the alert topic, the way an HTTP
//! sink connector does: its own consumer group (`<kafka.group_id>.webhook.
//! <name>`), one record at a time, and the record's offset is stored only
//! once the alert was delivered or written to the endpoint's dead-letter
//! file. A crash therefore loses nothing the alert topic holds: the next
//! start (here or on another instance of the group) delivers again from the
//! last stored offset, with the same `webhook-id`. This was chosen over an
//! outbox in the snapshot because the alert topic already is the durable,
//! ordered, replicated log of what to deliver; a second copy would need
//! its own compaction and hand-over. Per-customer order holds (the topic is
//! keyed by customer, an endpoint delivers in partition order), and a slow
//! or dead endpoint holds back only its own consumer: never ingestion,
//! never another endpoint. Its backlog is the group's lag
//! (`churnwatch_webhook_queue_depth`).
//!
//! Retries follow a pure classifier (5xx, 429, 3xx and transport errors
//! retry; other 4xx do not; redirects are never followed) under capped, jittered exponential backoff that
//! honours `Retry-After`, until `retry_for` after the alert was produced;
//! then the dead-letter file. A new endpoint group starts at the alert
//! topic's earliest retained record (to start later, set the group's
//! offsets with `kafka-consumer-groups --reset-offsets --to-latest` first).

pub mod retry;
mod running;
pub mod target;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

use crate::config::{Delivered, WebhookConfig};
use crate::engine::alert::Status;
use crate::engine::rule::Rule;
use crate::engine::tier::Tier;
use crate::inbox::{Lifecycle, Position};
use crate::kafka::source::InputConsumer;
use crate::metrics::{DeliveryOutcome, Metrics};
use retry::RETRY_AFTER_FLOOR;
pub use retry::{Attempt, Verdict, backoff, classify};
pub use running::{Changes, Prepared, Webhooks};

/// The topics an endpoint reads.
struct Topics {
    alerts: String,
    actions: String,
}

/// Lifecycle events waiting for their alert's firing, per actions
/// partition in offset order: (partition, offset, job; `None` for a record
/// this endpoint does not announce, which still waits its turn).
#[derive(Default)]
struct Held(std::collections::VecDeque<(i32, i64, Option<Job>)>);

impl Held {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(&mut self, partition: i32, offset: i64, job: Option<Job>) {
        self.0.push_back((partition, offset, job));
    }

    /// Whether something of actions `partition` waits.
    fn waits(&self, partition: i32) -> bool {
        self.0.iter().any(|(p, ..)| *p == partition)
    }

    /// The alert-topic partitions the held events wait on.
    fn partitions(&self) -> Vec<i32> {
        let mut p: Vec<i32> = self
            .0
            .iter()
            .filter_map(|(_, _, j)| j.as_ref()?.after.map(|a| a.partition))
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// The first held event, per actions partition, whose firing `passed`.
    fn ready(&self, passed: &impl Fn(Option<Position>) -> bool) -> Option<(i32, i64)> {
        let mut seen = Vec::new();
        for (p, o, job) in &self.0 {
            if seen.contains(p) {
                continue;
            }
            seen.push(*p);
            if passed(job.as_ref().and_then(|j| j.after)) {
                return Some((*p, *o));
            }
        }
        None
    }

    /// Removes and returns the first held event of `partition`.
    fn take(&mut self, partition: i32) -> Option<Option<Job>> {
        let i = self.0.iter().position(|(p, ..)| *p == partition)?;
        self.0.remove(i).map(|(_, _, j)| j)
    }
}

/// Whether this consumer has read past `after` on the alert topic (no
/// position to wait for counts as passed).
fn passed(consumer: &InputConsumer, alerts: &str, after: Option<Position>) -> bool {
    let Some(after) = after else { return true };
    consumer
        .position()
        .ok()
        .and_then(|tpl| {
            tpl.find_partition(alerts, after.partition)
                .map(|e| e.offset())
        })
        .is_some_and(|at| matches!(at, rdkafka::Offset::Offset(o) if o > after.offset))
}

/// The group's committed offsets on the alert topic's `partitions`
/// (held by other instances too), asked on a blocking thread.
async fn committed(
    consumer: &Arc<InputConsumer>,
    alerts: &str,
    partitions: Vec<i32>,
) -> Vec<(i32, i64)> {
    let (consumer, alerts) = (consumer.clone(), alerts.to_string());
    tokio::task::spawn_blocking(move || {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&alerts, *p);
        }
        consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

/// Pauses (or resumes) one actions partition.
fn pause(consumer: &InputConsumer, topic: &str, partition: i32, paused: bool) {
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let done = match paused {
        true => consumer.pause(&tpl),
        false => consumer.resume(&tpl),
    };
    if let Err(e) = done {
        tracing::debug!(error = %e, partition, "actions partition not paused or resumed (revoked)");
    }
}

/// One alert on its way to one endpoint.
pub struct Job {
    webhook_id: String,
    body: Vec<u8>,
    /// When the alert was produced (Unix ms): `retry_for` counts from here.
    produced_ms: i64,
    /// The alert-topic record (the alert's firing) this job may not
    /// overtake: a lifecycle event is never announced before its alert.
    after: Option<Position>,
}

/// The fields of an alert record an endpoint's filter reads.
#[derive(serde::Deserialize)]
struct Head<'a> {
    alert_id: &'a str,
    status: Status,
    rule: Rule,
    tier: Tier,
    #[serde(default)]
    segment: &'a str,
}

/// A name as config and JSON spell it (`"A"`, `"purchase_recency"`).
fn parse_name<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

/// Why the endpoints could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The signer refused the key (the crate's `from_bytes` never does today).
    #[error("webhooks: cannot build the signer: {0}")]
    Signer(#[from] standardwebhooks::WebhookError),
    /// The signing key could not be had (`secret_file` unreadable or bad).
    #[error("webhook `{endpoint}`: {why}")]
    Secret {
        /// The endpoint's name.
        endpoint: String,
        /// Why, naming the file, never its content.
        why: String,
    },
    /// The HTTP client could not be built (TLS backend unavailable).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The endpoint's consumer of the alert topic could not be set up.
    #[error("webhook `{endpoint}`: cannot consume the alert topic: {source}")]
    Consumer {
        /// The endpoint's name.
        endpoint: String,
        /// What librdkafka said.
        source: rdkafka::error::KafkaError,
    },
}

/// One endpoint: signs, sends, retries, dead-letters.
pub struct Endpoint {
    config: WebhookConfig,
    client: reqwest::Client,
    signer: standardwebhooks::Webhook,
    metrics: Metrics,
    dead: DeadLetters,
}

impl Endpoint {
    /// The endpoint `config` describes, reporting to `metrics`.
    pub fn new(config: &WebhookConfig, metrics: Metrics) -> Result<Self, WebhookError> {
        let key = config.signing_key().map_err(|why| WebhookError::Secret {
            endpoint: config.name.clone(),
            why,
        })?;
        let signer = standardwebhooks::Webhook::from_bytes(key.key().to_vec())?;
        // Redirects are never followed (a 3xx is a failed attempt, as the
        // Standard Webhooks spec asks); proxies only when configured.
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if let Some(p) = &config.proxy {
            builder = builder.proxy(reqwest::Proxy::all(p)?);
        }
        if !config.allow_private_network {
            builder = builder.dns_resolver(Arc::new(target::PublicOnly));
        }
        let client = builder.build()?;
        Ok(Self {
            dead: DeadLetters {
                path: config.dead_letter_file.clone(),
            },
            config: config.clone(),
            client,
            signer,
            metrics,
        })
    }

    /// The job for an alert record, if this endpoint subscribed to its
    /// kind; `None` also for a record that is not an alert (logged).
    pub fn job(&self, payload: &[u8], produced_ms: i64) -> Option<Job> {
        let head: Head<'_> = match serde_json::from_slice(payload) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(endpoint = %self.config.name, error = %e, "record on the alert topic is not an alert; skipped");
                return None;
            }
        };
        self.config
            .wants(
                head.tier,
                head.rule,
                head.segment,
                Delivered::of_alert(head.status),
            )
            .then(|| Job {
                webhook_id: format!("{}-{}", head.alert_id, head.status.as_str()),
                body: payload.to_vec(),
                produced_ms,
                after: None,
            })
    }

    /// The job for a lifecycle record of the actions topic, if this
    /// endpoint subscribed to the event its last action announces. The
    /// body: `{"type": "lifecycle", "status", "alert_id", "customer_id",
    /// "rule", "tier", "segment", "by", "at", "action", "lifecycle"}`; the
    /// `webhook-id` counts the actions, so a redelivery keeps it.
    pub fn lifecycle_job(&self, payload: &[u8], produced_ms: i64) -> Option<Job> {
        let record: Lifecycle = serde_json::from_slice(payload)
            .inspect_err(|e| tracing::debug!(endpoint = %self.config.name, error = %e, "record on the actions topic is not a lifecycle; skipped"))
            .ok()?;
        // Records churnwatch writes to keep an episode announce nothing.
        if record.quiet {
            return None;
        }
        let done = record.history.last()?;
        let status = done.action.announced()?;
        let delivered = Delivered::of_lifecycle(status)?;
        let tier: Tier = parse_name(&record.tier)?;
        let rule: Rule = parse_name(&record.rule)?;
        if !self.config.wants(tier, rule, &record.segment, delivered) {
            return None;
        }
        let body = serde_json::json!({
            "type": "lifecycle",
            "status": status,
            "alert_id": record.alert_id,
            "customer_id": record.customer_id,
            "rule": record.rule,
            "tier": record.tier,
            "segment": record.segment,
            "by": done.by,
            "at": done.at,
            "action": done.action,
            "lifecycle": record,
        });
        Some(Job {
            webhook_id: format!("{}-{status}-{}", record.alert_id, record.history.len()),
            body: serde_json::to_vec(&body).ok()?,
            produced_ms,
            after: record.firing,
        })
    }

    /// Delivers the alert topic's records in order, storing each offset
    /// once its alert is settled, until `stop`. A lifecycle event whose
    /// alert's firing this endpoint's group has not settled yet waits, its
    /// actions partition paused (so no later offset is stored before it),
    /// until the group's position on the alert topic has passed that firing
    /// (here, or committed by the instance that holds that partition).
    async fn consume(self, consumer: InputConsumer, topics: Topics, stop: CancellationToken) {
        let consumer = Arc::new(consumer);
        let mut held = Held::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let m = tokio::select! {
                m = consumer.recv() => m,
                _ = tick.tick() => {
                    let lag: i64 = consumer.context().lags().values().sum();
                    self.metrics
                        .webhook_queue_depth(&self.config.name, usize::try_from(lag).unwrap_or(0));
                    if !held.is_empty() {
                        let passed = committed(&consumer, &topics.alerts, held.partitions()).await;
                        if !self.release(&consumer, &topics, &mut held, &passed, &stop).await {
                            break;
                        }
                    }
                    continue;
                }
                _ = stop.cancelled() => break,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(endpoint = %self.config.name, error = %e, "alert topic consumer error");
                    continue;
                }
            };
            let produced_ms = m
                .timestamp()
                .to_millis()
                .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            let payload = m.payload().unwrap_or_default();
            let lifecycle = m.topic() == topics.actions;
            let job = match lifecycle {
                true => self.lifecycle_job(payload, produced_ms),
                false => self.job(payload, produced_ms),
            };
            if lifecycle
                && (held.waits(m.partition())
                    || job
                        .as_ref()
                        .is_some_and(|j| !passed(&consumer, &topics.alerts, j.after)))
            {
                pause(&consumer, &topics.actions, m.partition(), true);
                held.push(m.partition(), m.offset(), job);
                continue;
            }
            let settled = match job {
                Some(job) => self.deliver(&job, &stop).await,
                None => true,
            };
            if !settled {
                break;
            }
            if let Err(e) = consumer.store_offset_from_message(&m) {
                tracing::debug!(endpoint = %self.config.name, error = %e, "offset not stored (partition revoked)");
            }
            if !lifecycle
                && !held.is_empty()
                && !self
                    .release(&consumer, &topics, &mut held, &[], &stop)
                    .await
            {
                break;
            }
        }
        crate::kafka::source::commit_stored(consumer).await;
    }

    /// Delivers the held lifecycle events whose firing has been passed
    /// (by this consumer, or in `committed`), in offset order per actions
    /// partition, resuming a partition once nothing of it waits. False when
    /// stopped during a delivery.
    async fn release(
        &self,
        consumer: &InputConsumer,
        topics: &Topics,
        held: &mut Held,
        committed: &[(i32, i64)],
        stop: &CancellationToken,
    ) -> bool {
        let passed_now = |after: Option<Position>| {
            passed(consumer, &topics.alerts, after)
                || after.is_some_and(|p| {
                    committed
                        .iter()
                        .any(|&(q, o)| q == p.partition && o > p.offset)
                })
        };
        while let Some((partition, offset)) = held.ready(&passed_now) {
            let Some(job) = held.take(partition) else {
                continue;
            };
            if let Some(job) = job
                && !self.deliver(&job, stop).await
            {
                return false;
            }
            if let Err(e) = consumer.store_offset(&topics.actions, partition, offset) {
                tracing::debug!(endpoint = %self.config.name, error = %e, "offset not stored (partition revoked)");
            }
            if !held.waits(partition) {
                pause(consumer, &topics.actions, partition, false);
            }
        }
        true
    }

    /// Attempts until delivered or dead-lettered (true), or stopped while
    /// retrying (false: not settled, delivered again after a restart).
    pub async fn deliver(&self, job: &Job, stop: &CancellationToken) -> bool {
        let name = &self.config.name;
        let limit = match self.config.max_attempts {
            0 => u32::MAX,
            n => n,
        };
        for n in 1..=limit {
            let verdict = tokio::select! {
                v = self.attempt(job) => v,
                _ = stop.cancelled() => return false,
            };
            let after = match verdict {
                Verdict::Delivered => {
                    self.metrics
                        .webhook_delivery(name, DeliveryOutcome::Delivered);
                    return true;
                }
                Verdict::GiveUp => {
                    self.metrics.webhook_delivery(name, DeliveryOutcome::Failed);
                    self.dead.write(
                        name,
                        job,
                        "rejected",
                        "the receiver refused the alert (4xx)",
                    );
                    return true;
                }
                Verdict::Unsigned => {
                    self.metrics.webhook_delivery(name, DeliveryOutcome::Failed);
                    self.dead
                        .write(name, job, "signing_failed", "the alert could not be signed");
                    return true;
                }
                Verdict::Retry { after } => after,
            };
            // `Retry-After` is honoured within [1 s, backoff_max].
            let ceiling = self.config.backoff_max.max(RETRY_AFTER_FLOOR);
            let after = after.map(|a| a.clamp(RETRY_AFTER_FLOOR, ceiling));
            let wait = after.unwrap_or_else(|| {
                backoff(
                    n,
                    self.config.backoff_initial,
                    self.config.backoff_max,
                    rand::random::<f64>(),
                )
            });
            let age = chrono::Utc::now().timestamp_millis() - job.produced_ms;
            let age = Duration::from_millis(u64::try_from(age).unwrap_or(0));
            if n == limit || age + wait > self.config.retry_for {
                break;
            }
            self.metrics
                .webhook_delivery(name, DeliveryOutcome::Retried);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return false,
            }
        }
        self.metrics.webhook_delivery(name, DeliveryOutcome::Failed);
        self.dead
            .write(name, job, "exhausted", "no attempt succeeded");
        true
    }

    async fn attempt(&self, job: &Job) -> Verdict {
        let ts = chrono::Utc::now().timestamp();
        let signature = match self.signer.sign(&job.webhook_id, ts, &job.body) {
            Ok(s) => s,
            Err(_) => return Verdict::Unsigned,
        };
        let sent = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &job.webhook_id)
            .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, ts.to_string())
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(job.body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok());
                let v = classify(
                    Attempt::Answered {
                        status: resp.status().as_u16(),
                        retry_after,
                    },
                    chrono::Utc::now().timestamp(),
                );
                tracing::debug!(endpoint = %self.config.name, webhook_id = %job.webhook_id, status = resp.status().as_u16(), ?v, "webhook attempt");
                v
            }
            Err(e) => {
                tracing::debug!(endpoint = %self.config.name, webhook_id = %job.webhook_id, error = %e.without_url(), "webhook attempt failed");
                classify(Attempt::Transport, 0)
            }
        }
    }
}

/// The endpoint's dead-letter file (JSON lines, appended).
struct DeadLetters {
    path: PathBuf,
}

impl DeadLetters {
    fn write(&self, endpoint: &str, job: &Job, reason: &str, detail: &str) {
        let alert: serde_json::Value =
            serde_json::from_slice(&job.body).unwrap_or(serde_json::Value::Null);
        let line = serde_json::json!({
            "endpoint": endpoint,
            "webhook_id": job.webhook_id,
            "reason": reason,
            "detail": detail,
            "alert": alert,
        });
        let written = crate::state::owner_only()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            // Last resort: the log carries the alert so it is still not lost.
            tracing::error!(endpoint, path = %self.path.display(), error = %e, alert = %line, "cannot write webhook dead letter");
        }
    }
}
