//! Signed HTTP callbacks for retention teams (Standard Webhooks).
//!
//! One bounded queue and one worker per endpoint, so a slow or dead
//! endpoint never blocks ingestion or the other endpoints. Retries follow a
//! pure classifier (5xx, 429 and transport errors retry; other 4xx do not)
//! under capped, jittered exponential backoff that honours `Retry-After`.
//! An alert that cannot be delivered (attempts exhausted, permanent error,
//! queue full, shutdown) goes to the endpoint's dead-letter file: never
//! dropped silently. The `webhook-id` (alert id plus status) is the same on
//! every attempt, so receivers can de-duplicate.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::alert::{Alert, Status};
use crate::engine::rule::Rule;
use crate::engine::tier::Tier;
use crate::metrics::{DeliveryOutcome, Metrics};

/// `[[webhooks]]`: one receiving endpoint.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name used in metrics, logs and dead letters (never the URL, which may
    /// carry credentials).
    pub name: String,
    pub url: String,
    /// Standard Webhooks secret, `whsec_<base64 key>`. Never logged.
    pub secret: String,
    /// Deliver only alerts of these tiers (all when empty).
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Deliver only these rules (all when empty).
    #[serde(default)]
    pub rules: Vec<RuleName>,
    /// Deliver only these statuses (all when empty).
    #[serde(default)]
    pub statuses: Vec<StatusName>,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before an alert is dead-lettered; 0 = no count limit, only
    /// `retry_for` bounds the retries.
    #[serde(default)]
    pub max_attempts: u32,
    /// How long after it was queued an alert is still retried. Counted from
    /// queueing, not from the first attempt, so a long outage drains the
    /// queue (to the dead letters) instead of retrying each alert in turn
    /// for the whole budget.
    #[serde(default = "default_retry_for", with = "humantime_serde")]
    pub retry_for: Duration,
    /// First retry delay; doubles per attempt up to `backoff_max`.
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Alerts waiting for this endpoint before new ones are dead-lettered.
    #[serde(default = "default_capacity")]
    pub queue_capacity: usize,
    /// JSON-lines file of undeliverable alerts.
    #[serde(default = "default_dead_letter_file")]
    pub dead_letter_file: PathBuf,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .field("tiers", &self.tiers)
            .field("rules", &self.rules)
            .field("statuses", &self.statuses)
            .field("max_attempts", &self.max_attempts)
            .field("retry_for", &self.retry_for)
            .finish_non_exhaustive()
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_for() -> Duration {
    Duration::from_secs(3600)
}
fn default_backoff_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_capacity() -> usize {
    10_000
}
fn default_dead_letter_file() -> PathBuf {
    PathBuf::from("churnwatch-webhook-dead-letters.jsonl")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleName {
    PurchaseRecency,
    ContactGap,
    RepTurnover,
}

impl RuleName {
    fn matches(self, rule: Rule) -> bool {
        matches!(
            (self, rule),
            (RuleName::PurchaseRecency, Rule::PurchaseRecency)
                | (RuleName::ContactGap, Rule::ContactGap)
                | (RuleName::RepTurnover, Rule::RepTurnover)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusName {
    Firing,
    Resolved,
}

impl WebhookConfig {
    pub fn wants(&self, alert: &Alert) -> bool {
        let status = match alert.status {
            Status::Firing => StatusName::Firing,
            Status::Resolved => StatusName::Resolved,
        };
        (self.tiers.is_empty() || self.tiers.contains(&alert.tier))
            && (self.rules.is_empty() || self.rules.iter().any(|r| r.matches(alert.rule())))
            && (self.statuses.is_empty() || self.statuses.contains(&status))
    }

    /// Checks one endpoint; `at` is its position for error messages.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err("url must be http:// or https://".into());
        }
        standardwebhooks::Webhook::new(&self.secret)
            .map_err(|_| "secret must be whsec_<base64 key>".to_string())?;
        if self.retry_for.is_zero() {
            return Err("retry_for must be positive".into());
        }
        if self.queue_capacity == 0 {
            return Err("queue_capacity must be at least 1".into());
        }
        if self.backoff_initial > self.backoff_max {
            return Err("backoff_initial must not exceed backoff_max".into());
        }
        Ok(())
    }
}

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again, no sooner than `after` if the receiver said so.
    Retry {
        after: Option<Duration>,
    },
    /// A permanent refusal (4xx other than 429).
    GiveUp,
}

/// One attempt's result as the classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// An HTTP status and the `Retry-After` header, if any.
    Answered {
        status: u16,
        retry_after: Option<&'a str>,
    },
    /// Connection refused, reset, timed out.
    Transport,
}

/// Pure retry policy.
pub fn classify(attempt: Attempt<'_>) -> Verdict {
    match attempt {
        Attempt::Answered { status, .. } if (200..300).contains(&status) => Verdict::Delivered,
        Attempt::Answered {
            status,
            retry_after,
        } if status == 429 || status >= 500 => Verdict::Retry {
            after: retry_after.and_then(parse_retry_after),
        },
        Attempt::Answered { .. } => Verdict::GiveUp,
        Attempt::Transport => Verdict::Retry { after: None },
    }
}

/// `Retry-After` as seconds (the HTTP-date form is read too).
fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).clamp(0, 3600);
    Some(Duration::from_secs(secs as u64))
}

/// Delay before attempt `n + 1` (n ≥ 1): exponential, capped, with "equal
/// jitter" (`jitter` in [0, 1) picks a point in the upper half).
pub fn backoff(n: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << (n.saturating_sub(1)).min(20))
        .min(max);
    exp.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// One alert on its way to one endpoint.
struct Job {
    webhook_id: String,
    body: Arc<Vec<u8>>,
    queued: tokio::time::Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// An endpoint's config is unusable.
    #[error("webhooks[{index}] ({name}): {why}")]
    Config {
        index: usize,
        name: String,
        why: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

struct Endpoint {
    config: Arc<WebhookConfig>,
    tx: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
    dead: Arc<DeadLetters>,
}

/// The per-endpoint outboxes. `submit` never waits.
pub struct Outboxes {
    endpoints: Vec<Endpoint>,
    metrics: Metrics,
}

impl Outboxes {
    /// Starts one worker per endpoint on `tracker`; workers stop on `stop`,
    /// dead-lettering what is still queued.
    pub fn start(
        configs: &[WebhookConfig],
        metrics: Metrics,
        stop: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, WebhookError> {
        let mut endpoints = Vec::new();
        for (index, c) in configs.iter().enumerate() {
            c.validate().map_err(|why| WebhookError::Config {
                index,
                name: c.name.clone(),
                why,
            })?;
            let signer =
                standardwebhooks::Webhook::new(&c.secret).map_err(|_| WebhookError::Config {
                    index,
                    name: c.name.clone(),
                    why: "secret must be whsec_<base64 key>".into(),
                })?;
            let client = reqwest::Client::builder().timeout(c.timeout).build()?;
            let (tx, rx) = mpsc::channel(c.queue_capacity);
            let config = Arc::new(c.clone());
            let depth = Arc::new(AtomicUsize::new(0));
            let dead = Arc::new(DeadLetters {
                path: c.dead_letter_file.clone(),
                lock: std::sync::Mutex::new(()),
            });
            let worker = Worker {
                config: config.clone(),
                client,
                signer,
                metrics: metrics.clone(),
                depth: depth.clone(),
                dead: dead.clone(),
            };
            tracker.spawn(worker.run(rx, stop.clone()));
            endpoints.push(Endpoint {
                config,
                tx,
                depth,
                dead,
            });
        }
        Ok(Self { endpoints, metrics })
    }

    /// Queues `alert` for every endpoint that wants it; a full queue sends
    /// it to that endpoint's dead letters at once.
    pub fn submit(&self, alert: &Alert, body: &Arc<Vec<u8>>) {
        for e in &self.endpoints {
            if !e.config.wants(alert) {
                continue;
            }
            let job = Job {
                webhook_id: format!("{}-{}", alert.alert_id, alert.status.as_str()),
                body: body.clone(),
                queued: tokio::time::Instant::now(),
            };
            // Counted before the send, so the worker's decrement never runs first.
            let depth = e.depth.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            match e.tx.try_send(job) {
                Ok(()) => self.metrics.webhook_queue_depth(&e.config.name, depth),
                Err(
                    mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job),
                ) => {
                    e.depth.fetch_sub(1, Ordering::Relaxed);
                    self.metrics
                        .webhook_delivery(&e.config.name, DeliveryOutcome::QueueFull);
                    e.dead.write(
                        &e.config.name,
                        &job,
                        "queue_full",
                        "the endpoint's queue is full",
                    );
                }
            }
        }
    }
}

struct Worker {
    config: Arc<WebhookConfig>,
    client: reqwest::Client,
    signer: standardwebhooks::Webhook,
    metrics: Metrics,
    depth: Arc<AtomicUsize>,
    dead: Arc<DeadLetters>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Job>, stop: CancellationToken) {
        loop {
            let job = tokio::select! {
                j = rx.recv() => j,
                _ = stop.cancelled() => None,
            };
            let Some(job) = job else { break };
            self.dequeued();
            if !self.deliver(&job, &stop).await && stop.is_cancelled() {
                break;
            }
        }
        // Whatever is still queued at shutdown is written down, not lost.
        rx.close();
        while let Some(job) = rx.recv().await {
            self.dequeued();
            self.dead.write(
                &self.config.name,
                &job,
                "shutdown",
                "churnwatch stopped before delivery",
            );
        }
    }

    fn dequeued(&self) {
        let d = self.depth.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.metrics.webhook_queue_depth(&self.config.name, d);
    }

    /// Attempts until delivered, given up or stopped; true if settled.
    async fn deliver(&self, job: &Job, stop: &CancellationToken) -> bool {
        let name = &self.config.name;
        let limit = match self.config.max_attempts {
            0 => u32::MAX,
            n => n,
        };
        for n in 1..=limit {
            let verdict = self.attempt(job).await;
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
                Verdict::Retry { after } => after,
            };
            let wait = after.unwrap_or_else(|| {
                backoff(
                    n,
                    self.config.backoff_initial,
                    self.config.backoff_max,
                    rand::random::<f64>(),
                )
            });
            if n == limit || job.queued.elapsed() + wait > self.config.retry_for {
                break;
            }
            self.metrics
                .webhook_delivery(name, DeliveryOutcome::Retried);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {
                    self.dead.write(name, job, "shutdown", "churnwatch stopped while retrying");
                    return false;
                }
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
            Err(_) => return Verdict::GiveUp,
        };
        let sent = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, &job.webhook_id)
            .header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP, ts.to_string())
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(job.body.as_ref().clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok());
                let v = classify(Attempt::Answered {
                    status: resp.status().as_u16(),
                    retry_after,
                });
                tracing::debug!(endpoint = %self.config.name, webhook_id = %job.webhook_id, status = resp.status().as_u16(), ?v, "webhook attempt");
                v
            }
            Err(e) => {
                tracing::debug!(endpoint = %self.config.name, webhook_id = %job.webhook_id, error = %e.without_url(), "webhook attempt failed");
                classify(Attempt::Transport)
            }
        }
    }
}

/// The endpoint's dead-letter file (JSON lines, appended).
struct DeadLetters {
    path: PathBuf,
    lock: std::sync::Mutex<()>,
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
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let written = OpenOptions::new()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_retries_server_errors_and_429_only() {
        let answered = |status| Attempt::Answered {
            status,
            retry_after: None,
        };
        assert_eq!(classify(answered(200)), Verdict::Delivered);
        assert_eq!(classify(answered(204)), Verdict::Delivered);
        assert_eq!(classify(answered(500)), Verdict::Retry { after: None });
        assert_eq!(classify(answered(503)), Verdict::Retry { after: None });
        assert_eq!(classify(answered(400)), Verdict::GiveUp);
        assert_eq!(classify(answered(404)), Verdict::GiveUp);
        assert_eq!(classify(Attempt::Transport), Verdict::Retry { after: None });
        assert_eq!(
            classify(Attempt::Answered {
                status: 429,
                retry_after: Some("7")
            }),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_in_the_upper_half() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff(1, i, m, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(2, i, m, 1.0), Duration::from_millis(200));
        assert_eq!(backoff(3, i, m, 0.0), Duration::from_millis(200));
        assert_eq!(backoff(30, i, m, 1.0), Duration::from_secs(1));
        assert!(backoff(2, i, m, 0.5) >= Duration::from_millis(100));
    }
}
