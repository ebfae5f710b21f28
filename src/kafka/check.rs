//! `churnwatch check --brokers`: what `run` would find on the cluster,
//! read without joining the group, committing or creating anything — the
//! inputs exist and are co-partitioned, the roster topics exist, and
//! churnwatch's own topics (when present) have the partition count and
//! cleanup policy `run` insists on. A missing own topic is not an error:
//! `run` creates it.

use super::client::{Role, client_config};
use super::rebalance::SourceContext;
use super::source::{
    BROKER_WAIT, InputConsumer, SourceError, check_co_partitioned, partition_count, reader,
    wait_for_brokers,
};
use super::topics::{Policy, verify_policy};
use crate::config::{KafkaConfig, Topics};

/// The lines `check` prints, or the first refusal `run` would make.
pub async fn cluster(
    config: &KafkaConfig,
    topics: &Topics,
    brokers: &str,
) -> Result<Vec<String>, SourceError> {
    wait_for_brokers(config, brokers, BROKER_WAIT).await?;
    // A group-less reader: creating it joins nothing.
    let consumer: InputConsumer =
        reader(config, brokers, "check", "cli").create_with_context(SourceContext::default())?;
    let mut lines = vec![format!("brokers: {brokers} answer")];
    let external: Vec<String> = topics.external().cloned().collect();
    let partitions = check_co_partitioned(&consumer, &external)?;
    if !external.is_empty() {
        lines.push(format!(
            "inputs: {} ({partitions} partitions each)",
            external.join(", ")
        ));
    }
    for topic in topics.rekeyed.iter().chain(&topics.roster) {
        let n = partition_count(&consumer, topic)?
            .0
            .ok_or_else(|| SourceError::MissingTopic(topic.clone()))?;
        lines.push(format!("{topic}: {n} partitions"));
    }
    let admin = client_config(config, brokers, Role::Admin);
    let own = [
        (topics.repartition.as_deref(), Policy::Delete, true),
        (Some(config.changelog_topic.as_str()), Policy::Compact, true),
        (Some(config.actions_topic.as_str()), Policy::Compact, false),
        (
            Some(config.instances_topic.as_str()),
            Policy::Compact,
            false,
        ),
    ];
    for (topic, policy, co_partitioned) in own {
        let Some(topic) = topic.filter(|t| !t.is_empty()) else {
            continue;
        };
        match partition_count(&consumer, topic)?.0 {
            None => lines.push(format!(
                "{topic}: missing; run creates it (cleanup.policy={policy})"
            )),
            Some(n) if co_partitioned && partitions > 0 && n != partitions => {
                return Err(SourceError::NotCoPartitioned(format!(
                    "{}, {topic}={n}",
                    external
                        .iter()
                        .map(|t| format!("{t}={partitions}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Some(n) => {
                let policy = verify_policy(&admin, topic, policy).await?;
                lines.push(format!("{topic}: {n} partitions, {policy}"));
            }
        }
    }
    for topic in [&config.alert_topic, &config.dead_letter_topic] {
        match partition_count(&consumer, topic)?.0 {
            Some(n) => lines.push(format!("{topic}: {n} partitions")),
            None => lines.push(format!(
                "{topic}: missing; create it unless the cluster creates topics on first write"
            )),
        }
    }
    Ok(lines)
}
