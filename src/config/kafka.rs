//! `[kafka]`: topics, group and librdkafka pass-through.

use std::collections::BTreeMap;

use serde::Deserialize;

/// librdkafka properties passed through; `Debug` shows the keys only, since
/// values include `sasl.password` and key material.
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

impl std::ops::Deref for Properties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// `[kafka]`: where `run` reads and writes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers (`--brokers` overrides).
    pub brokers: String,
    /// Consumer group of all `run` instances that share the work.
    pub group_id: String,
    /// Co-partitioned input topics; any may carry any event type.
    pub input_topics: Vec<String>,
    /// Rep roster topic, read in full by every instance.
    pub roster_topic: String,
    /// Where alerts go, keyed by customer id.
    pub alert_topic: String,
    /// The inbox's lifecycle records (acknowledged, snoozed, assigned,
    /// closed, notes), keyed by `alert_id`, compacted; read in full by
    /// every instance.
    pub actions_topic: String,
    /// Where each instance announces its `http.advertised_url` and input
    /// partitions, keyed by instance, compacted; "" turns it off (customer
    /// pages then show what the alerts carried when another instance holds
    /// the customer).
    pub instances_topic: String,
    /// Where each input partition's owner publishes the summary of its
    /// customers' spend that tiers are ranked on across the group (one
    /// partition, compacted, keyed `{group_id}/{input partition}`; created when
    /// missing). "" turns it off: each instance then ranks over the
    /// customers it holds.
    pub tiers_topic: String,
    /// Where rejected messages go, with the reason in headers.
    pub dead_letter_topic: String,
    /// Compacted state changelog, co-partitioned with the inputs, keyed by
    /// customer id; "" turns hand-over through Kafka off (used only with
    /// `state.dir` set: snapshot rounds write it).
    pub changelog_topic: String,
    /// librdkafka consumer properties, passed through as they are (TLS,
    /// SASL, timeouts). Values are never logged.
    pub consumer: Properties,
    /// librdkafka producer properties, passed through as they are.
    pub producer: Properties,
    /// A dead letter's key and payload together are cut to this many bytes
    /// (headers then carry the original size and a SHA-256 of the whole
    /// payload), so an input the broker accepted always fits as a dead
    /// letter under the producer's `message.max.bytes`.
    pub dead_letter_max_bytes: usize,
    /// librdkafka's `partitioner` for the repartition topic (see README,
    /// "Your own topics"): it must place a customer id where the producers
    /// of the other input topics do, so `murmur2_random` (the Java
    /// client's, hence Kafka Connect's, Debezium's and Kafka Streams')
    /// unless they are librdkafka clients (`consistent_random`).
    pub repartition_partitioner: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "churnwatch".into(),
            input_topics: vec!["purchases".into(), "calls".into(), "tickets".into()],
            roster_topic: "reps".into(),
            alert_topic: "churn-alerts".into(),
            actions_topic: "churnwatch-actions".into(),
            instances_topic: "churnwatch-instances".into(),
            tiers_topic: "churnwatch-tiers".into(),
            dead_letter_topic: "churn-dead-letters".into(),
            changelog_topic: "churnwatch-state".into(),
            consumer: Properties::default(),
            producer: Properties::default(),
            dead_letter_max_bytes: 256 * 1024,
            repartition_partitioner: "murmur2_random".into(),
        }
    }
}
