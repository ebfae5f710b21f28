//! Producers for the alert and dead-letter topics. The delivery futures are
//! the acknowledgements the offset store waits for; a failed delivery is
//! sent again (same key, payload and headers) until it succeeds or the
//! service stops, so an alert is never dropped by a broker outage.
//!
//! An error no retry can cure (record too large, unknown topic, not
//! authorised: [`permanent`]) ends the record instead: the sink counts it
//! in `churnwatch_produce_failures_total{topic,reason}` and the acker goes
//! on, so one record can never stall the instance. Dead letters are cut to
//! `kafka.dead_letter_max_bytes` first (the original size and a SHA-256 of
//! the whole payload go in headers), so a message the broker accepted as
//! input always fits as a dead letter.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use sha2::{Digest, Sha256};

use crate::config::KafkaConfig;
use crate::engine::alert::Alert;
use crate::engine::event::RejectReason;
use crate::metrics::Metrics;

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
    /// Set when the producer refused the record for good.
    refused: Option<&'static str>,
}

/// A consumed message and where it came from: what a dead letter or a
/// republished record carries.
pub struct Consumed<'a> {
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

impl<'a> Consumed<'a> {
    /// `m`'s coordinates and bytes.
    pub fn of<M: rdkafka::Message>(m: &'a M) -> Self {
        Consumed {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload().unwrap_or_default(),
        }
    }
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
    /// The record can never be produced; it is given up on.
    #[error("{topic} refused a record for good: {reason}")]
    Refused {
        /// The record's topic.
        topic: String,
        /// [`permanent`]'s reason.
        reason: &'static str,
    },
}

/// The reason label of an error no retry can cure, `None` for one that
/// may pass (broker down, leader moving, queue full).
pub fn permanent(e: &KafkaError) -> Option<&'static str> {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code()? {
        C::MessageSizeTooLarge | C::InvalidMessageSize => Some("too_large"),
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::UnknownTopicId => {
            Some("unknown_topic")
        }
        C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed => Some("unauthorized"),
        C::InvalidRecord | C::InvalidRequiredAcks => Some("invalid_record"),
        _ => None,
    }
}

/// The producer of alerts, dead letters and changelog records (a clone
/// shares the client).
#[derive(Clone)]
pub struct Sink {
    producer: FutureProducer,
    alert_topic: String,
    dead_letter_topic: String,
    dead_letter_max_bytes: usize,
    metrics: Metrics,
}

impl Sink {
    /// A sink writing alerts and dead letters to the topics `kafka` names.
    pub fn new(producer: FutureProducer, kafka: &KafkaConfig, metrics: Metrics) -> Self {
        Self {
            producer,
            metrics,
            alert_topic: kafka.alert_topic.clone(),
            dead_letter_topic: kafka.dead_letter_topic.clone(),
            dead_letter_max_bytes: kafka.dead_letter_max_bytes,
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
            refused: None,
        };
        self.enqueue(out).await
    }

    /// Queues a rejected message: original bytes (the first
    /// `dead_letter_max_bytes` of them), reason and source in headers.
    pub async fn dead_letter(&self, source: &Consumed<'_>, reason: &RejectReason) -> Outgoing {
        let detail = reason.to_string();
        let mut headers = source_headers(
            OwnedHeaders::new()
                .insert(header("churnwatch.reason", reason.code()))
                .insert(header("churnwatch.detail", &detail)),
            source.topic,
            source.partition,
            source.offset,
        );
        let mut payload = source.payload;
        let mut key = source.key.unwrap_or_default();
        if payload.len() + key.len() > self.dead_letter_max_bytes {
            let size = source.payload.len().to_string();
            let digest = hex::encode(Sha256::digest(source.payload));
            headers = headers
                .insert(header(TRUNCATED_SIZE_HEADER, &size))
                .insert(header(TRUNCATED_SHA256_HEADER, &digest));
            key = &key[..key.len().min(self.dead_letter_max_bytes / 2)];
            payload = &payload[..payload.len().min(self.dead_letter_max_bytes - key.len())];
        }
        let out = Outgoing {
            since: None,
            topic: self.dead_letter_topic.clone(),
            partition: None,
            key: key.to_vec(),
            payload: payload.to_vec(),
            headers: Some(headers),
            delivery: None,
            refused: None,
        };
        self.enqueue(out).await
    }

    /// Queues a record re-keyed to the repartition topic: the source's
    /// bytes, keyed by customer id, its coordinates in headers.
    pub async fn republish(&self, topic: &str, customer: &[u8], source: &Consumed<'_>) -> Outgoing {
        let headers = source_headers(
            OwnedHeaders::new(),
            source.topic,
            source.partition,
            source.offset,
        );
        let out = Outgoing {
            since: None,
            topic: topic.to_string(),
            partition: None,
            key: customer.to_vec(),
            payload: source.payload.to_vec(),
            headers: Some(headers),
            delivery: None,
            refused: None,
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
            refused: None,
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
                Err((e, _)) if let Some(reason) = permanent(&e) => {
                    out.refused = Some(reason);
                    return out;
                }
                Err((e, _)) => {
                    tracing::warn!(topic = %out.topic, error = %e, "produce failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Waits until the broker acknowledged the record, sending it again
    /// after a failed delivery; a permanent refusal ends the wait. Returns
    /// the partition and offset it landed at.
    pub async fn confirm(
        &self,
        mut out: Outgoing,
        stop: &CancellationToken,
    ) -> Result<(i32, i64), SinkError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Some(reason) = out.refused {
                self.metrics.produce_failed(&out.topic, reason);
                tracing::error!(topic = %out.topic, reason, "record refused for good; not produced");
                return Err(SinkError::Refused {
                    topic: out.topic,
                    reason,
                });
            }
            let Some(delivery) = out.delivery.take() else {
                out = self.enqueue(out).await;
                continue;
            };
            let result = tokio::select! {
                r = delivery => r,
                _ = stop.cancelled() => return Err(SinkError::Cancelled { topic: out.topic }),
            };
            match result {
                Ok(Ok(d)) => return Ok((d.partition, d.offset)),
                Ok(Err((e, _))) if let Some(reason) = permanent(&e) => {
                    out.refused = Some(reason);
                    continue;
                }
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

/// Header of a dead letter and of a repartitioned record: the topic the
/// record came from.
pub const SOURCE_TOPIC_HEADER: &str = "churnwatch.source.topic";
/// Header of a dead letter and of a repartitioned record: its partition.
pub const SOURCE_PARTITION_HEADER: &str = "churnwatch.source.partition";
/// Header of a dead letter and of a repartitioned record: its offset.
pub const SOURCE_OFFSET_HEADER: &str = "churnwatch.source.offset";

/// The UTF-8 value of `m`'s header `key`.
pub fn header_str<'a, M: rdkafka::Message>(m: &'a M, key: &str) -> Option<&'a str> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// `headers` and where the record came from.
fn source_headers(headers: OwnedHeaders, topic: &str, partition: i32, offset: i64) -> OwnedHeaders {
    headers
        .insert(header(SOURCE_TOPIC_HEADER, topic))
        .insert(header(SOURCE_PARTITION_HEADER, &partition.to_string()))
        .insert(header(SOURCE_OFFSET_HEADER, &offset.to_string()))
}
/// Header of a cut dead letter: the payload's original size in bytes.
pub const TRUNCATED_SIZE_HEADER: &str = "churnwatch.payload.size";
/// Header of a cut dead letter: hex SHA-256 of the whole original payload.
pub const TRUNCATED_SHA256_HEADER: &str = "churnwatch.payload.sha256";

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header {
        key,
        value: Some(value),
    }
}
