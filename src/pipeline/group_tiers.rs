//! Group-wide tiers in `run` (the merge is in
//! [`crate::engine::tier_summary`]). The engine task publishes a summary of
//! each input partition it owns to `kafka.tiers_topic` after each of the
//! engine's recomputes, and again when the last merge wants boundary
//! values its summaries lacked; it reads every partition's latest summary
//! back from that topic. Once every input partition has a summary and the
//! merge is exact, it ranks with the merged thresholds; until then the
//! thresholds in force hold. An instance holding every partition ranks
//! over its own customers: the same thresholds without the topic's delay,
//! so one instance (and replay) rank exactly as before. A partition nobody
//! owns keeps its last summary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::Message;

use super::step::Step;
use crate::engine::store::RankedOver;
use crate::engine::tier::Thresholds;
use crate::engine::tier_summary::{Merged, TierSummary, merge};
use crate::kafka::sink::Sink;

/// The shortest time between two publishes of this instance's summaries.
const MIN_GAP: Duration = Duration::from_secs(1);

/// The group-wide ranking's state on one instance.
pub struct GroupTiers {
    topic: String,
    /// `kafka.group_id`: records are keyed `{group}/{partition}`, so
    /// groups sharing the topic by mistake never merge each other's.
    group: String,
    /// Input partitions in all.
    partitions: usize,
    a_percent: f64,
    b_percent: f64,
    /// Every partition's latest summary, from the topic (and, at once,
    /// this instance's own).
    latest: BTreeMap<u16, TierSummary>,
    merged: Merged,
    /// A summary arrived since the last merge.
    heard: bool,
    /// The engine ranks with the group's thresholds (not its own).
    group_in_force: bool,
    published: Option<Published>,
}

/// What the last publish covered: a new one is due when any of it changed.
struct Published {
    /// The engine's recompute count.
    recomputes: u64,
    owned: Vec<u16>,
    /// The bins whose values it carried.
    wanted: BTreeMap<String, Vec<u16>>,
    at: Instant,
}

impl GroupTiers {
    /// The state of an instance of a group over `partitions` input
    /// partitions, ranking A and B at these shares.
    pub fn new(
        (topic, group): (String, String),
        partitions: usize,
        a_percent: f64,
        b_percent: f64,
    ) -> Self {
        Self {
            topic,
            group,
            partitions,
            a_percent,
            b_percent,
            latest: BTreeMap::new(),
            merged: Merged::default(),
            heard: false,
            group_in_force: false,
            published: None,
        }
    }

    /// Takes in a record of the tiers topic (another group's is passed
    /// over); a malformed one (key not `{group}/{input partition}`,
    /// payload not a valid summary) is refused with why.
    pub fn heard(&mut self, m: &impl Message) -> Result<(), &'static str> {
        let (group, partition) = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.rsplit_once('/'))
            .ok_or("key is not {group}/{partition}")?;
        if group != self.group {
            return Ok(());
        }
        let partition = partition
            .parse::<u16>()
            .ok()
            .filter(|&p| usize::from(p) < self.partitions)
            .ok_or("key is not an input partition")?;
        let Some(payload) = m.payload() else {
            // A tombstone: the partition keeps its last summary.
            return Ok(());
        };
        let summary: TierSummary =
            serde_json::from_slice(payload).map_err(|_| "payload is not a tier summary")?;
        if !summary.groups.values().all(|g| g.is_valid()) {
            return Err("summary's bins and values do not agree");
        }
        self.take(partition, summary);
        Ok(())
    }

    fn take(&mut self, partition: u16, summary: TierSummary) {
        let newer = self
            .latest
            .get(&partition)
            .is_none_or(|s| s.seq <= summary.seq);
        if newer {
            self.latest.insert(partition, summary);
            self.heard = true;
        }
    }

    /// Publishes this instance's summaries when due, merges what arrived,
    /// and ranks `step`'s engine with the result (see the module).
    pub async fn tick(&mut self, step: &mut Step, owned: &BTreeSet<i32>, sink: &Sink) {
        let owned: Vec<u16> = owned
            .iter()
            .filter_map(|&p| u16::try_from(p).ok())
            .collect();
        self.publish(step, &owned, sink).await;
        if std::mem::take(&mut self.heard) {
            self.merged = merge(self.latest.values(), self.a_percent, self.b_percent);
        }
        let own = |partitions: usize| RankedOver {
            version: 0,
            partitions,
            of: self.partitions,
        };
        let ranked = match ranking(
            owned.len(),
            self.partitions,
            self.group_known(),
            self.group_in_force,
        ) {
            Ranking::Hold => None,
            Ranking::Own => {
                self.group_in_force = false;
                step.rank_with(None);
                Some(own(owned.len()))
            }
            Ranking::OwnUntilGroup => Some(own(owned.len())),
            Ranking::Group => {
                self.group_in_force = true;
                step.rank_with(self.given().as_ref());
                Some(RankedOver {
                    version: self.latest.values().map(|s| s.seq).sum(),
                    partitions: self.latest.len(),
                    of: self.partitions,
                })
            }
        };
        if let Some(r) = ranked {
            step.engine.store().set_ranked_over(r);
            step.metrics().ranked_over(r);
        }
    }

    /// Whether every partition has reported and the merge is exact.
    fn group_known(&self) -> bool {
        self.latest.len() >= self.partitions && self.merged.complete()
    }

    /// The group's thresholds, once [`Self::group_known`]: built only when
    /// ranked with, not at every tick of an instance holding every partition.
    fn given(&self) -> Option<BTreeMap<String, Thresholds>> {
        if !self.group_known() {
            return None;
        }
        self.merged
            .thresholds
            .iter()
            .map(|(g, t)| Some((g.clone(), (*t)?)))
            .collect()
    }

    /// Publishes a summary of each owned partition after an engine
    /// recompute, an assignment change, or a merge that wants other bins.
    async fn publish(&mut self, step: &Step, owned: &[u16], sink: &Sink) {
        let recomputes = step.engine.stats().recomputes;
        let due = match &self.published {
            None => true,
            Some(p) => {
                p.at.elapsed() >= MIN_GAP
                    && (p.recomputes != recomputes
                        || p.owned.as_slice() != owned
                        || p.wanted != self.merged.wanted)
            }
        };
        if !due || owned.is_empty() {
            return;
        }
        let summaries = step.engine.tier_summaries(owned, &self.merged.wanted);
        for (p, mut summary) in summaries {
            summary.seq = self.latest.get(&p).map_or(0, |s| s.seq) + 1;
            match serde_json::to_vec(&summary) {
                Ok(payload) => {
                    // Not awaited: a lost summary is replaced by the next.
                    drop(
                        sink.to_partition(
                            &self.topic,
                            0,
                            format!("{}/{p}", self.group).into_bytes(),
                            payload,
                        )
                        .await,
                    );
                    self.take(p, summary);
                }
                Err(e) => tracing::error!(partition = p, error = %e, "tier summary not encodable"),
            }
        }
        self.published = Some(Published {
            recomputes,
            owned: owned.to_vec(),
            wanted: self.merged.wanted.clone(),
            at: Instant::now(),
        });
    }
}

/// What an instance ranks with at a tick.
#[derive(Debug, PartialEq, Eq)]
enum Ranking {
    /// Its own customers' thresholds: it holds every partition.
    Own,
    /// The group's merged thresholds.
    Group,
    /// Its own customers', reported as such, until the group's are known.
    OwnUntilGroup,
    /// Whatever is in force.
    Hold,
}

/// An instance that owns nothing (it is starting, or between a revoke and
/// an assignment) holds what is in force: it has no customers to rank, and
/// a restart's first ticks would otherwise take in the group's thresholds
/// of before the restart (still on the topic) and rank its first rebuilt or
/// restored events with them, then switch back to its own at an arbitrary
/// moment once it holds every partition, which under the event clock is a
/// recompute replay never makes.
fn ranking(owned: usize, partitions: usize, group_known: bool, group_in_force: bool) -> Ranking {
    if owned == 0 {
        Ranking::Hold
    } else if owned == partitions {
        Ranking::Own
    } else if group_known {
        Ranking::Group
    } else if group_in_force {
        Ranking::Hold
    } else {
        Ranking::OwnUntilGroup
    }
}

#[cfg(test)]
mod tests {
    use super::{Ranking, ranking};

    #[test]
    fn an_instance_owning_nothing_takes_in_no_thresholds() {
        assert_eq!(ranking(0, 3, true, false), Ranking::Hold);
        assert_eq!(ranking(0, 3, true, true), Ranking::Hold);
    }

    #[test]
    fn one_owner_of_every_partition_ranks_its_own_even_with_the_group_known() {
        assert_eq!(ranking(3, 3, true, true), Ranking::Own);
    }

    #[test]
    fn a_part_owner_ranks_with_the_group_once_known_and_holds_it_after() {
        assert_eq!(ranking(1, 3, false, false), Ranking::OwnUntilGroup);
        assert_eq!(ranking(1, 3, true, false), Ranking::Group);
        assert_eq!(ranking(2, 3, false, true), Ranking::Hold);
    }
}
