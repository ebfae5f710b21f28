//! What the partitions assigned to this instance still have to re-read
//! before their state is whole again, and what that means for alerts.
//!
//! - **Tail.** Messages between what the restored state covers and the
//!   partition's high watermark at assignment were (maybe) applied before a
//!   crash. Under the wall clock no deadline fires until every tail is
//!   re-applied, so a deadline that fell due while the process was down
//!   cannot fire before the event that would have prevented it.
//! - **Rebuild.** A partition with no state to restore (no covering
//!   snapshot, no changelog) but with committed offsets is re-read from its
//!   earliest retained offset. Up to the committed offset its events are
//!   applied without emitting: those alerts were sent before. An alert of
//!   a rebuilt partition's customer is also held back if it is older than
//!   the newest event the rebuild applied (it was due before the commit).
//!
//! Plain bookkeeping; the pipeline seeks and consumes around it.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::engine::alert::Alert;
use crate::engine::event::Ts;
use crate::kafka::offsets::TopicPartition;
use crate::kafka::partition_map::PartitionMap;

/// One rebuilt engine partition.
#[derive(Debug, Default)]
struct Rebuild {
    /// Input topic → committed offset still to reach.
    pending: BTreeMap<String, i64>,
    /// Newest event `ts` applied while rebuilding.
    newest: Option<Ts>,
    /// Alerts held back so far (for the log line at the end).
    held_back: u64,
}

/// The recovery state of the assigned partitions.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Topic-partition → high watermark at assignment, until reached.
    tail: PartitionMap<i64>,
    /// Engine partition → its rebuild.
    rebuilds: FxHashMap<u16, Rebuild>,
}

/// How a consumed message is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// As usual: alerts emitted, offset stored once safe.
    Live,
    /// Rebuilding: applied, its alerts held back, its offset never stored
    /// (the group's committed offset is already past it).
    Quiet,
}

impl Recovery {
    /// Notes a partition's tail: until a message at `high - 1` or beyond is
    /// applied (or the partition reports no lag), it is catching up.
    pub fn tail(&mut self, tp: TopicPartition, high: i64) {
        *self.tail.get_or_insert_with(&tp.0, tp.1, || high) = high;
    }

    /// Starts rebuilding engine partition `partition` up to `committed`
    /// (per input topic).
    pub fn rebuild(&mut self, partition: u16, committed: Vec<(String, i64)>) {
        let r = self.rebuilds.entry(partition).or_default();
        r.pending.extend(committed);
    }

    /// Whether any partition is still catching up its tail or rebuilding.
    pub fn catching_up(&self) -> bool {
        !self.tail.is_empty() || self.rebuilding_any()
    }

    /// Whether any partition is still being rebuilt (readiness stays 503).
    pub fn rebuilding_any(&self) -> bool {
        self.rebuilds.values().any(|r| !r.pending.is_empty())
    }

    /// Whether engine partition `partition` is still being rebuilt.
    pub fn rebuilding(&self, partition: u16) -> bool {
        self.rebuilds
            .get(&partition)
            .is_some_and(|r| !r.pending.is_empty())
    }

    /// Whether input topic-partition `tp` is being read again from its
    /// start for a rebuild: until it reaches the committed offset its
    /// statistics may still describe the position before the seek (where a
    /// partition produced to since reads lag 0), so they must not count it
    /// caught up.
    pub fn rereading(&self, (topic, partition): (&str, i32)) -> bool {
        u16::try_from(partition)
            .ok()
            .and_then(|p| self.rebuilds.get(&p))
            .is_some_and(|r| r.pending.contains_key(topic))
    }

    /// Whether nothing is being recovered (the per-message fast path).
    pub fn is_idle(&self) -> bool {
        self.tail.is_empty() && self.rebuilds.is_empty()
    }

    /// Notes a consumed message of an input topic-partition (engine
    /// partition `partition`) and says how to apply it.
    pub fn message(
        &mut self,
        (topic, kafka_partition): (&str, i32),
        partition: u16,
        offset: i64,
    ) -> Apply {
        if let Some(&mut high) = self.tail.get_mut(topic, kafka_partition)
            && offset + 1 >= high
        {
            self.tail.remove(&(topic.to_string(), kafka_partition));
        }
        let Some(r) = self.rebuilds.get_mut(&partition) else {
            return Apply::Live;
        };
        match r.pending.get(topic) {
            Some(&committed) if offset < committed => {
                if offset + 1 >= committed {
                    r.pending.remove(topic);
                    if r.pending.is_empty() {
                        tracing::info!(
                            partition,
                            held_back = r.held_back,
                            newest = ?r.newest,
                            "rebuilt from the input; alerts before its newest event held back"
                        );
                    }
                }
                Apply::Quiet
            }
            Some(_) => {
                r.pending.remove(topic);
                Apply::Live
            }
            None => Apply::Live,
        }
    }

    /// Notes the event time of a message applied quietly.
    pub fn quiet_event(&mut self, partition: u16, ts: Ts) {
        if let Some(r) = self.rebuilds.get_mut(&partition) {
            r.newest = Some(r.newest.map_or(ts, |n| n.max(ts)));
        }
    }

    /// A partition whose lag is 0 has no tail left. (A rebuild ends only
    /// by offsets: before its seek takes effect the lag may read 0.)
    pub fn caught_up(&mut self, tp: &TopicPartition) {
        self.tail.remove(tp);
    }

    /// The topic-partitions still catching up their tail.
    pub fn tails(&self) -> impl Iterator<Item = &TopicPartition> {
        self.tail.iter().map(|(tp, _)| tp)
    }

    /// Whether `alert` must be held back: its customer's partition is being
    /// rebuilt, or it is older than the newest event the rebuild applied.
    pub fn hold_back(&mut self, alert: &Alert) -> bool {
        let Some(r) = self.rebuilds.get_mut(&alert.partition) else {
            return false;
        };
        let hold = !r.pending.is_empty() || r.newest.is_some_and(|n| alert.at < n);
        r.held_back += u64::from(hold);
        hold
    }

    /// Forgets a revoked topic-partition.
    pub fn revoke(&mut self, tp: &TopicPartition, partition: u16) {
        self.tail.remove(tp);
        self.rebuilds.remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: i32) -> TopicPartition {
        (t.to_string(), p)
    }

    #[test]
    fn a_rebuild_is_quiet_up_to_the_committed_offset_then_live() {
        let mut r = Recovery::default();
        r.rebuild(0, vec![("purchases".into(), 3), ("calls".into(), 1)]);
        assert!(r.catching_up());
        assert!(r.rereading(("purchases", 0)) && r.rereading(("calls", 0)));
        assert!(!r.rereading(("purchases", 1)) && !r.rereading(("reps", 0)));
        assert_eq!(r.message(("purchases", 0), 0, 0), Apply::Quiet);
        assert_eq!(r.message(("calls", 0), 0, 0), Apply::Quiet);
        assert!(
            !r.rereading(("calls", 0)),
            "calls reached its committed offset"
        );
        assert_eq!(
            r.message(("purchases", 1), 1, 0),
            Apply::Live,
            "other partition"
        );
        assert!(r.catching_up());
        assert_eq!(r.message(("purchases", 0), 0, 1), Apply::Quiet);
        assert_eq!(r.message(("purchases", 0), 0, 2), Apply::Quiet);
        assert!(
            !r.catching_up(),
            "both topics reached their committed offset"
        );
        assert_eq!(r.message(("purchases", 0), 0, 3), Apply::Live);
    }

    #[test]
    fn a_gap_before_the_committed_offset_still_ends_the_rebuild() {
        let mut r = Recovery::default();
        r.rebuild(0, vec![("purchases".into(), 5)]);
        assert_eq!(r.message(("purchases", 0), 0, 2), Apply::Quiet);
        assert_eq!(r.message(("purchases", 0), 0, 7), Apply::Live);
        assert!(!r.catching_up());
    }

    #[test]
    fn the_tail_ends_at_the_high_watermark_or_when_caught_up() {
        let mut r = Recovery::default();
        r.tail(tp("purchases", 0), 10);
        r.tail(tp("calls", 0), 4);
        r.message(("purchases", 0), 0, 8);
        assert!(r.catching_up());
        r.message(("purchases", 0), 0, 9);
        r.caught_up(&tp("calls", 0));
        assert!(!r.catching_up());
    }
}
