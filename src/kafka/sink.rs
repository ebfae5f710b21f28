//! Producers for the alert and dead-letter topics. The delivery futures are
//! the acknowledgements the offset store waits for; a failed delivery is
//! sent again (same key, payload and headers) until it succeeds or the
//! service stops, so an alert is never dropped by a broker outage.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::engine::alert::Alert;
use crate::engine::event::RejectReason;

/// One record on its way to the broker, kept so it can be sent again.
pub struct Outgoing {
    /// Alerts only: when the engine could first have known, the start of
    /// the latency the acker observes.
    since: Option<std::time::Instant>,
    topic: String,
    /// An explicit partition (changelog); else the key decides.
    partition: Option<i32>,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    delivery: Option<DeliveryFuture>,
}

/// A rejected input message and where it came from.
pub struct Rejected<'a> {
    /// The input topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// The message's offset.
    pub offset: i64,
    /// The message's key.
    pub key: Option<&'a [u8]>,
    /// The original bytes.
    pub payload: &'a [u8],
}

impl Outgoing {
    /// For an alert, when its latency started.
    pub fn since(&self) -> Option<std::time::Instant> {
        self.since
    }
}

/// Why a record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The service stopped before the broker acknowledged the record.
    #[error("stopped before {topic} acknowledged a record")]
    Cancelled {
        /// The record's topic.
        topic: String,
    },
}

/// The producer of alerts, dead letters and changelog records (a clone
/// shares the client).
#[derive(Clone)]
pub struct Sink {
    producer: FutureProducer,
    alert_topic: String,
    dead_letter_topic: String,
}

impl Sink {
    /// A sink writing alerts to `alert_topic` and dead letters to `dead_letter_topic`.
    pub fn new(producer: FutureProducer, alert_topic: String, dead_letter_topic: String) -> Self {
        Self {
            producer,
            alert_topic,
            dead_letter_topic,
        }
    }

    /// Queues an alert, already serialised as the replay JSON, keyed by
    /// customer id; `since` is when its trigger happened (latency metric).
    pub async fn alert(
        &self,
        alert: &Alert,
        payload: &[u8],
        since: std::time::Instant,
    ) -> Outgoing {
        let out = Outgoing {
            since: Some(since),
            topic: self.alert_topic.clone(),
            partition: None,
            key: alert.customer_id.as_bytes().to_vec(),
            payload: payload.to_vec(),
            headers: None,
            delivery: None,
        };
        self.enqueue(out).await
    }

    /// Queues a rejected message: original bytes, reason and source in headers.
    pub async fn dead_letter(&self, source: &Rejected<'_>, reason: &RejectReason) -> Outgoing {
        let detail = reason.to_string();
        let partition = source.partition.to_string();
        let offset = source.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(header("churnwatch.reason", reason.code()))
            .insert(header("churnwatch.detail", &detail))
            .insert(header("churnwatch.source.topic", source.topic))
            .insert(header("churnwatch.source.partition", &partition))
            .insert(header("churnwatch.source.offset", &offset));
        let out = Outgoing {
            since: None,
            topic: self.dead_letter_topic.clone(),
            partition: None,
            key: source.key.unwrap_or_default().to_vec(),
            payload: source.payload.to_vec(),
            headers: Some(headers),
            delivery: None,
        };
        self.enqueue(out).await
    }

    /// Queues a record for `partition` of `topic` (the state changelog).
    pub async fn to_partition(
        &self,
        topic: &str,
        partition: i32,
        key: Vec<u8>,
        payload: Vec<u8>,
    ) -> Outgoing {
        let out = Outgoing {
            since: None,
            topic: topic.to_string(),
            partition: Some(partition),
            key,
            payload,
            headers: None,
            delivery: None,
        };
        self.enqueue(out).await
    }

    /// Hands the record to librdkafka, waiting while its queue is full.
    async fn enqueue(&self, mut out: Outgoing) -> Outgoing {
        loop {
            let mut record = FutureRecord::to(&out.topic)
                .key(&out.key)
                .payload(&out.payload);
            if let Some(h) = &out.headers {
                record = record.headers(h.clone());
            }
            if let Some(p) = out.partition {
                record = record.partition(p);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    out.delivery = Some(delivery);
                    return out;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    tracing::warn!(topic = %out.topic, error = %e, "produce failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Waits until the broker acknowledged the record, sending it again
    /// after a failed delivery.
    pub async fn confirm(
        &self,
        mut out: Outgoing,
        stop: &CancellationToken,
    ) -> Result<(), SinkError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(delivery) = out.delivery.take() else {
                out = self.enqueue(out).await;
                continue;
            };
            let result = tokio::select! {
                r = delivery => r,
                _ = stop.cancelled() => return Err(SinkError::Cancelled { topic: out.topic }),
            };
            match result {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err((e, _))) => {
                    tracing::warn!(topic = %out.topic, error = %e, "delivery failed; sending again")
                }
                Err(_) => tracing::warn!(topic = %out.topic, "delivery report lost; sending again"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.cancelled() => return Err(SinkError::Cancelled { topic: out.topic }),
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
