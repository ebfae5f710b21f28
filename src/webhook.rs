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

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WebhookConfig;
use crate::engine::alert::Alert;
use crate::metrics::{DeliveryOutcome, Metrics};

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver took it (2xx).
    Delivered,
    /// Try again, no sooner than `after` if the receiver said so.
    Retry {
        /// The `Retry-After` delay, if given.
        after: Option<Duration>,
    },
    /// A permanent refusal (4xx other than 429).
    GiveUp,
    /// Never sent: the alert could not be signed here (not the receiver's doing).
    Unsigned,
}

/// One attempt's result as the classifier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt<'a> {
    /// An HTTP status and the `Retry-After` header, if any.
    Answered {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header.
        retry_after: Option<&'a str>,
    },
    /// Connection refused, reset, timed out.
    Transport,
}

/// Pure retry policy; `now` (Unix seconds) reads an HTTP-date `Retry-After`.
pub fn classify(attempt: Attempt<'_>, now: i64) -> Verdict {
    match attempt {
        Attempt::Answered { status, .. } if (200..300).contains(&status) => Verdict::Delivered,
        Attempt::Answered {
            status,
            retry_after,
        } if status == 429 || status >= 500 => Verdict::Retry {
            after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        Attempt::Answered { .. } => Verdict::GiveUp,
        Attempt::Transport => Verdict::Retry { after: None },
    }
}

/// `Retry-After` as seconds (the HTTP-date form is read too).
fn parse_retry_after(v: &str, now: i64) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let secs = (when.timestamp() - now).clamp(0, 3600);
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

/// Why the outboxes could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The signer refused the key (the crate's `from_bytes` never does today).
    #[error("webhooks: cannot build the signer: {0}")]
    Signer(#[from] standardwebhooks::WebhookError),
    /// The HTTP client could not be built (TLS backend unavailable).
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
        for c in configs {
            // Infallible: the key was decoded when the config was parsed.
            let signer = standardwebhooks::Webhook::from_bytes(c.secret.key().to_vec())?;
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
            if !e.config.wants(alert.tier, alert.rule(), alert.status) {
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
                Verdict::Unsigned => {
                    self.metrics.webhook_delivery(name, DeliveryOutcome::Failed);
                    self.dead
                        .write(name, job, "signing_failed", "the alert could not be signed");
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
            Err(_) => return Verdict::Unsigned,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_retries_server_errors_and_429_only() {
        let answered = |status| Attempt::Answered {
            status,
            retry_after: None,
        };
        let now = 1_767_225_600; // 2026-01-01T00:00:00Z
        let classify = |a| classify(a, now);
        assert_eq!(classify(answered(200)), Verdict::Delivered);
        assert_eq!(classify(answered(204)), Verdict::Delivered);
        assert_eq!(classify(answered(500)), Verdict::Retry { after: None });
        assert_eq!(classify(answered(503)), Verdict::Retry { after: None });
        assert_eq!(classify(answered(400)), Verdict::GiveUp);
        assert_eq!(classify(answered(404)), Verdict::GiveUp);
        assert_eq!(classify(Attempt::Transport), Verdict::Retry { after: None });
        assert_eq!(
            classify(Attempt::Answered {
                status: 503,
                retry_after: Some("Thu, 01 Jan 2026 00:00:30 GMT")
            }),
            Verdict::Retry {
                after: Some(Duration::from_secs(30))
            },
            "an HTTP-date is read against the given now, not the clock"
        );
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
