//! The set of running endpoints, and how a reload changes it.

use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Endpoint, Topics, WebhookError};
use crate::config::{KafkaConfig, WebhookConfig};
use crate::kafka::client::{Role, client_config};
use crate::kafka::rebalance::SourceContext;
use crate::kafka::source::InputConsumer;
use crate::metrics::Metrics;

/// The running endpoints. A reload hands [`Webhooks::prepare`] the new
/// list (every endpoint that is new or changed is built then, so a bad
/// secret file refuses the reload before anything stops) and
/// [`Webhooks::apply`] the result: endpoints removed or changed stop
/// (committing what they delivered; an endpoint whose `secret_file`
/// now holds another key counts as changed), new and changed ones start from
/// their group's committed offsets. An unchanged endpoint keeps running.
pub struct Webhooks {
    kafka: KafkaConfig,
    brokers: String,
    metrics: Metrics,
    stop: CancellationToken,
    tracker: TaskTracker,
    running: Vec<Running>,
}

struct Running {
    config: WebhookConfig,
    /// The signing key it runs with (a `secret_file` may change alone).
    key: Vec<u8>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

/// Endpoints built for [`Webhooks::apply`], not started yet.
pub struct Prepared {
    wanted: Vec<WebhookConfig>,
    built: Vec<(Endpoint, InputConsumer, Vec<u8>)>,
}

/// What [`Webhooks::apply`] changed, by endpoint name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Started.
    pub added: Vec<String>,
    /// Stopped.
    pub removed: Vec<String>,
    /// Restarted with a new configuration.
    pub changed: Vec<String>,
}

impl Webhooks {
    /// Starts every endpoint's delivery loop on `tracker`; each stops on
    /// `stop` (an alert being retried then is delivered again after the
    /// restart: its offset was not stored).
    pub async fn start(
        configs: &[WebhookConfig],
        kafka: &KafkaConfig,
        brokers: &str,
        metrics: &Metrics,
        stop: &CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Self, WebhookError> {
        let mut webhooks = Self {
            kafka: kafka.clone(),
            brokers: brokers.to_string(),
            metrics: metrics.clone(),
            stop: stop.clone(),
            tracker: tracker.clone(),
            running: Vec::new(),
        };
        let prepared = webhooks.prepare(configs)?;
        webhooks.apply(prepared).await?;
        Ok(webhooks)
    }

    /// Builds the endpoints of `configs` that do not run as configured yet.
    pub fn prepare(&self, configs: &[WebhookConfig]) -> Result<Prepared, WebhookError> {
        let mut built = Vec::new();
        for c in configs {
            let key = c
                .signing_key()
                .map_err(|why| WebhookError::Secret {
                    endpoint: c.name.clone(),
                    why,
                })?
                .key()
                .to_vec();
            if self.running.iter().any(|r| &r.config == c && r.key == key) {
                continue;
            }
            let endpoint = Endpoint::new(c, self.metrics.clone())?;
            let group = format!("{}.webhook.{}", self.kafka.group_id, c.name);
            let consumer: InputConsumer =
                client_config(&self.kafka, &self.brokers, Role::Subscriber(&group))
                    .create_with_context(SourceContext::default())
                    .map_err(|source| WebhookError::Consumer {
                        endpoint: c.name.clone(),
                        source,
                    })?;
            built.push((endpoint, consumer, key));
        }
        Ok(Prepared {
            wanted: configs.to_vec(),
            built,
        })
    }

    /// Stops what `prepared` no longer has as it runs, then starts what
    /// it built. Stopping waits for the endpoint (at most its in-flight
    /// attempt, bounded by its `timeout`), so a changed endpoint's old
    /// and new consumers never share its group.
    pub async fn apply(&mut self, prepared: Prepared) -> Result<Changes, WebhookError> {
        let mut changes = Changes::default();
        let (keep, stop): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| {
                prepared.wanted.contains(&r.config)
                    && !prepared
                        .built
                        .iter()
                        .any(|(e, _, _)| e.config.name == r.config.name)
            });
        self.running = keep;
        for r in stop {
            r.stop.cancel();
            if let Err(e) = r.done.await {
                tracing::warn!(endpoint = %r.config.name, error = %e, "webhook endpoint ended abnormally");
            }
            match prepared.wanted.iter().any(|w| w.name == r.config.name) {
                true => changes.changed.push(r.config.name),
                false => changes.removed.push(r.config.name),
            }
        }
        let kafka = &self.kafka;
        for (endpoint, consumer, key) in prepared.built {
            let config = endpoint.config.clone();
            let mut topics = vec![kafka.alert_topic.as_str()];
            if config.lifecycle_events() {
                topics.push(&kafka.actions_topic);
            }
            consumer
                .subscribe(&topics)
                .map_err(|source| WebhookError::Consumer {
                    endpoint: config.name.clone(),
                    source,
                })?;
            let topics = Topics {
                alerts: kafka.alert_topic.clone(),
                actions: kafka.actions_topic.clone(),
            };
            self.metrics.webhook_endpoint(&config.name);
            let stop = self.stop.child_token();
            let done = self
                .tracker
                .spawn(endpoint.consume(consumer, topics, stop.clone()));
            if !changes.changed.contains(&config.name) {
                changes.added.push(config.name.clone());
            }
            self.running.push(Running {
                config,
                key,
                stop,
                done,
            });
        }
        Ok(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn secret(byte: u8) -> String {
        use base64::Engine as _;
        let key = [byte; 32];
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }

    #[tokio::test]
    async fn a_reload_restarts_only_what_changed_including_a_rotated_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, secret(1)).unwrap();
        let configs = Config::parse(&format!(
            "[[webhooks]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"{}\"\nallow_private_network = true\n\
             [[webhooks]]\nname = \"b\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{}\"\nallow_private_network = true\n",
            file.display(),
            secret(2)
        ))
        .unwrap()
        .webhooks;
        let kafka = crate::config::KafkaConfig {
            brokers: "127.0.0.1:9".into(),
            ..Default::default()
        };
        let metrics = Metrics::new(&prometheus::Registry::new(), &[]).unwrap();
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        let mut running =
            Webhooks::start(&configs, &kafka, &kafka.brokers, &metrics, &stop, &tracker)
                .await
                .unwrap();
        let same = running.prepare(&configs).unwrap();
        assert!(same.built.is_empty(), "nothing to rebuild");
        assert_eq!(running.apply(same).await.unwrap(), Changes::default());

        std::fs::write(&file, secret(3)).unwrap();
        let rotated = running.prepare(&configs[..1]).unwrap();
        let changes = running.apply(rotated).await.unwrap();
        assert_eq!(
            changes,
            Changes {
                added: vec![],
                removed: vec!["b".into()],
                changed: vec!["a".into()],
            }
        );
        std::fs::write(&file, "not a key").unwrap();
        assert!(
            running.prepare(&configs[..1]).is_err(),
            "a bad secret file refuses the reload"
        );
        stop.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
