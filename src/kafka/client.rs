//! The one place Kafka clients are configured: every consumer and producer
//! churnwatch makes (the pipeline's, the changelog reader, `generate`,
//! `demo`) starts from `[kafka.consumer]` / `[kafka.producer]` and gets the
//! keys churnwatch relies on enforced on top, so a SASL_SSL cluster is
//! reached the same way by every command.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;

use crate::config::KafkaConfig;

/// Consumer settings at-least-once rests on (the config refuses them in the
/// pass-through, so nothing overrides them).
const CONSUMER_ENFORCED: [(&str, &str); 2] = [
    ("enable.auto.offset.store", "false"),
    ("enable.auto.commit", "true"),
];

/// librdkafka's static membership key.
const STATIC_MEMBER: &str = "group.instance.id";

/// Where an orchestrator names the instance (a StatefulSet pod's name):
/// the group consumer's `group.instance.id` unless `[kafka.consumer]` sets
/// one, so a restarted pod takes its partitions back without a rebalance.
pub const INSTANCE_ID_ENV: &str = "CHURNWATCH_INSTANCE_ID";

/// What a client is for, which picks its defaults and enforced keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role<'a> {
    /// The group consumer over the input topics.
    Input,
    /// A webhook endpoint's consumer of the alert topic, in its own group
    /// (at-least-once like the input: offsets stored once delivered).
    Subscriber(&'a str),
    /// A group-less reader (roster, changelog) under the given group name,
    /// which commits nothing.
    Reader(&'a str),
    /// The idempotent producer of alerts, dead letters and changelog rounds.
    Producer,
    /// A bulk producer (`generate`, the demo's feed).
    Loader,
    /// The admin client that creates and checks churnwatch's own topics
    /// (the consumer pass-through: same cluster, same credentials).
    Admin,
}

/// The librdkafka settings of a client in `role`.
pub fn client_config(kafka: &KafkaConfig, brokers: &str, role: Role<'_>) -> ClientConfig {
    let (defaults, extra): (&[(&str, &str)], _) = match role {
        Role::Input => (
            &[
                ("group.id", kafka.group_id.as_str()),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                // Range gives each member the same partition numbers of every
                // co-partitioned topic: one customer, one owner.
                ("partition.assignment.strategy", "range"),
                ("auto.commit.interval.ms", "1000"),
                // Kafka's own default: a broker outage shorter than this
                // costs no rebalance (and no state hand-over).
                ("session.timeout.ms", "45000"),
                ("statistics.interval.ms", "500"),
            ],
            &kafka.consumer,
        ),
        Role::Subscriber(group) => (
            &[
                ("group.id", group),
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
                ("auto.commit.interval.ms", "1000"),
                ("statistics.interval.ms", "1000"),
            ],
            &kafka.consumer,
        ),
        Role::Reader(group) => (
            &[
                ("group.id", group),
                ("enable.partition.eof", "false"),
                ("statistics.interval.ms", "500"),
            ],
            &kafka.consumer,
        ),
        Role::Producer => (
            &[
                ("enable.idempotence", "true"),
                // An alert waits this long for company before it is sent:
                // 5 ms was half of the 10 ms churnwatch may add to an
                // alert's latency (BENCHMARKS.md, issue #18); under load,
                // in-flight requests still batch what arrives meanwhile.
                ("linger.ms", "1"),
                ("message.timeout.ms", "300000"),
            ],
            &kafka.producer,
        ),
        Role::Loader => (
            &[("enable.idempotence", "true"), ("linger.ms", "20")],
            &kafka.producer,
        ),
        Role::Admin => (&[], &kafka.consumer),
    };
    let mut c = layered(brokers, extra, defaults);
    match role {
        Role::Input | Role::Subscriber(_) => {
            for (k, v) in CONSUMER_ENFORCED {
                c.set(k, v);
            }
        }
        Role::Reader(_) => {
            c.set("enable.auto.commit", "false");
        }
        Role::Producer | Role::Loader | Role::Admin => {}
    }
    if role == Role::Input
        && let Some(id) = static_member(kafka, std::env::var(INSTANCE_ID_ENV).ok())
    {
        c.set(STATIC_MEMBER, id);
    }
    c
}

/// The group consumer's `group.instance.id` from [`INSTANCE_ID_ENV`]'s
/// value, unless the pass-through sets one.
fn static_member(kafka: &KafkaConfig, env: Option<String>) -> Option<String> {
    let id = env?.trim().to_string();
    (!id.is_empty() && !kafka.consumer.contains_key(STATIC_MEMBER)).then_some(id)
}

/// Bootstrap servers, then churnwatch's defaults, then the pass-through.
fn layered(
    brokers: &str,
    extra: &BTreeMap<String, String>,
    defaults: &[(&str, &str)],
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for (k, v) in extra {
        c.set(k, v);
    }
    // Keys only: values may be secrets.
    if !extra.is_empty() {
        tracing::debug!(keys = ?extra.keys().collect::<Vec<_>>(), "librdkafka properties passed through");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_comes_from_the_environment_unless_configured() {
        let mut kafka = KafkaConfig::default();
        assert_eq!(
            static_member(&kafka, Some(" churnwatch-1 ".into())).as_deref(),
            Some("churnwatch-1")
        );
        assert_eq!(static_member(&kafka, Some(" ".into())), None);
        assert_eq!(static_member(&kafka, None), None);
        kafka
            .consumer
            .insert(STATIC_MEMBER.into(), "configured".into());
        assert_eq!(static_member(&kafka, Some("churnwatch-1".into())), None);
    }

    #[test]
    fn pass_through_reaches_every_role_and_enforced_keys_win() {
        let mut kafka = KafkaConfig::default();
        kafka
            .consumer
            .insert("security.protocol".into(), "SASL_SSL".into());
        kafka
            .consumer
            .insert("enable.auto.offset.store".into(), "true".into());
        kafka
            .producer
            .insert("security.protocol".into(), "SASL_SSL".into());
        for role in [Role::Input, Role::Reader("g"), Role::Producer, Role::Loader] {
            let c = client_config(&kafka, "b:9092", role);
            assert_eq!(c.get("security.protocol"), Some("SASL_SSL"), "{role:?}");
            assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
        }
        let input = client_config(&kafka, "b:9092", Role::Input);
        assert_eq!(input.get("enable.auto.offset.store"), Some("false"));
        let reader = client_config(&kafka, "b:9092", Role::Reader("g"));
        assert_eq!(reader.get("enable.auto.commit"), Some("false"));
        assert_eq!(reader.get("group.id"), Some("g"));
    }
}
