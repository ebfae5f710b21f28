//! The restore choice, pure: given the local snapshots of the partitions
//! assigned together and the group's committed offsets, which state each
//! partition starts from. The pipeline does the reading (files, committed
//! offsets, the changelog) around it.
//!
//! One round of local snapshots that covers every partition's committed
//! offsets wins (the fast path of a restart on the same machine: one round,
//! so the partitions agree on the engine clock even if a crash cut the last
//! round short); else each partition takes its newest covering snapshot,
//! else the changelog (a hand-over), else whatever local snapshot it has.

use std::collections::{BTreeMap, BTreeSet};

use crate::state::snapshot::Snapshot;

/// Where one partition's state comes from.
#[derive(Debug)]
pub enum Choice {
    /// A local snapshot that covers the committed offsets.
    Snapshot(Snapshot),
    /// Try the changelog; if it has nothing, take `fallback` (a local
    /// snapshot that does not cover the committed offsets), if any.
    Changelog {
        /// The newest non-covering local snapshot.
        fallback: Option<Snapshot>,
    },
}

/// One partition's candidates.
#[derive(Debug, Default)]
pub struct Candidates {
    /// Valid local snapshots (current and previous).
    pub snapshots: Vec<Snapshot>,
    /// The group's committed offset per input topic (empty: none known).
    pub committed: Vec<(String, i64)>,
    /// The partition's high watermark per input topic (a topic left out:
    /// unknown). A snapshot claiming offsets past it was written against
    /// other data (another cluster, a recreated topic) and is refused.
    pub high: Vec<(String, i64)>,
}

/// Picks each partition's source.
pub fn choose(partitions: BTreeMap<i32, Candidates>) -> BTreeMap<i32, Choice> {
    let mut covering = BTreeMap::new();
    let mut others = BTreeMap::new();
    for (p, c) in partitions {
        let (yes, no): (Vec<_>, Vec<_>) = c
            .snapshots
            .into_iter()
            .filter(|s| exists(&s.offsets, &c.high))
            .partition(|s| covers(&s.offsets, &c.committed));
        covering.insert(p, yes);
        others.insert(p, no);
    }
    let common = common_round(&covering);
    covering
        .into_iter()
        .map(|(p, snaps)| {
            let newest = snaps
                .into_iter()
                .filter(|s| common.is_none_or(|r| s.round == r))
                .max_by_key(|s| s.round);
            let choice = match newest {
                Some(s) => Choice::Snapshot(s),
                None => Choice::Changelog {
                    fallback: others
                        .remove(&p)
                        .and_then(|o| o.into_iter().max_by_key(|s| s.round)),
                },
            };
            (p, choice)
        })
        .collect()
}

/// The newest snapshot round that every partition has.
fn common_round(snapshots: &BTreeMap<i32, Vec<Snapshot>>) -> Option<u64> {
    let rounds: BTreeSet<u64> = snapshots.values().flatten().map(|s| s.round).collect();
    rounds
        .into_iter()
        .rev()
        .find(|r| snapshots.values().all(|c| c.iter().any(|s| s.round == *r)))
}

/// Whether every offset a snapshot claims to cover exists on the partition
/// (is at most its high watermark, where that is known).
fn exists(offsets: &[(String, i64)], high: &[(String, i64)]) -> bool {
    offsets.iter().all(|(topic, next)| {
        high.iter()
            .find(|(t, _)| t == topic)
            .is_none_or(|(_, h)| next <= h)
    })
}

/// Whether a snapshot's offsets reach the group's committed ones (none
/// known: any snapshot does).
fn covers(offsets: &[(String, i64)], committed: &[(String, i64)]) -> bool {
    committed
        .iter()
        .all(|(topic, c)| offsets.iter().any(|(t, next)| t == topic && next >= c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::Engine;
    use crate::engine::watermark::Clock;

    fn snap(partition: u16, round: u64) -> Snapshot {
        let engine = Engine::new(
            &Config::default().engine_settings(),
            Clock::PartitionMinimum,
        );
        Snapshot {
            round,
            offsets: vec![("purchases".into(), round as i64)],
            owner: crate::state::snapshot::Owner {
                cluster_id: "c".into(),
                group_id: "g".into(),
                topics: vec!["purchases".into()],
            },
            state: engine.partition_state(partition),
        }
    }

    #[test]
    fn a_round_cut_short_restores_every_partition_from_the_round_before() {
        // A crash after partition 0 of round 7 was written: partition 0 has
        // rounds 7 and 6, partition 1 rounds 6 and 5.
        let cut = BTreeMap::from([
            (0, vec![snap(0, 7), snap(0, 6)]),
            (1, vec![snap(1, 6), snap(1, 5)]),
        ]);
        assert_eq!(common_round(&cut), Some(6));
        let complete = BTreeMap::from([
            (0, vec![snap(0, 7), snap(0, 6)]),
            (1, vec![snap(1, 7), snap(1, 6)]),
        ]);
        assert_eq!(common_round(&complete), Some(7));
        let disjoint = BTreeMap::from([(0, vec![snap(0, 9)]), (1, vec![snap(1, 4)])]);
        assert_eq!(common_round(&disjoint), None);
    }

    #[test]
    fn a_snapshot_covers_the_committed_offsets_it_reaches() {
        let offsets = vec![("purchases".to_string(), 10), ("calls".to_string(), 4)];
        assert!(covers(&offsets, &[]));
        assert!(covers(
            &offsets,
            &[("purchases".into(), 10), ("calls".into(), 3)]
        ));
        assert!(!covers(&offsets, &[("purchases".into(), 11)]));
        assert!(!covers(&offsets, &[("tickets".into(), 1)]));
    }

    #[test]
    fn a_snapshot_claiming_offsets_the_partition_does_not_have_is_refused() {
        // Written against a longer log (another cluster, a recreated topic):
        // round 7 claims offset 7, the partition ends at 3.
        let parts = BTreeMap::from([(
            0,
            Candidates {
                snapshots: vec![snap(0, 7), snap(0, 2)],
                committed: Vec::new(),
                high: vec![("purchases".into(), 3)],
            },
        )]);
        match choose(parts).remove(&0) {
            Some(Choice::Snapshot(s)) => assert_eq!(s.round, 2),
            other => panic!("{other:?}"),
        }
        let none_left = BTreeMap::from([(
            0,
            Candidates {
                snapshots: vec![snap(0, 7)],
                committed: Vec::new(),
                high: vec![("purchases".into(), 0)],
            },
        )]);
        assert!(matches!(
            choose(none_left).remove(&0),
            Some(Choice::Changelog { fallback: None })
        ));
    }

    #[test]
    fn choice_takes_the_common_covering_round_else_the_changelog_with_a_fallback() {
        let committed = vec![("purchases".to_string(), 6)];
        let parts = BTreeMap::from([
            (
                0,
                Candidates {
                    snapshots: vec![snap(0, 7), snap(0, 6)],
                    committed: committed.clone(),
                    high: Vec::new(),
                },
            ),
            (
                1,
                Candidates {
                    snapshots: vec![snap(1, 6), snap(1, 5)],
                    committed: committed.clone(),
                    high: Vec::new(),
                },
            ),
            (
                2,
                Candidates {
                    snapshots: vec![snap(2, 5)],
                    committed,
                    high: Vec::new(),
                },
            ),
        ]);
        let rounds: Vec<(i32, Option<u64>, Option<u64>)> = choose(parts)
            .into_iter()
            .map(|(p, c)| match c {
                Choice::Snapshot(s) => (p, Some(s.round), None),
                Choice::Changelog { fallback } => (p, None, fallback.map(|s| s.round)),
            })
            .collect();
        // Partition 2 covers nothing, so no round is common to all: each
        // covering partition takes its newest covering snapshot.
        assert_eq!(
            rounds,
            vec![(0, Some(7), None), (1, Some(6), None), (2, None, Some(5))]
        );
    }
}
