//! Which input offsets may be stored for commit: pure, ordered bookkeeping.
//!
//! A message's offset may be stored once it has been applied (under the
//! event clock, once the watermark released it) and the alerts of that step
//! were acknowledged. Offsets are released strictly in order per partition,
//! so a commit never skips an unapplied message.

use std::collections::VecDeque;

use super::partition_map::PartitionMap;
use crate::engine::event::Ts;

/// A topic and partition.
pub type TopicPartition = (String, i32);

/// Consumed offsets per partition, waiting for their step to be safe.
#[derive(Debug, Default)]
pub struct PendingOffsets {
    parts: PartitionMap<VecDeque<(i64, Option<Ts>)>>,
}

impl PendingOffsets {
    /// Records a consumed message. `applied_at` is `None` if it is already
    /// applied (or dead-lettered), else the `ts` the watermark must reach.
    pub fn push(&mut self, topic: &str, partition: i32, offset: i64, applied_at: Option<Ts>) {
        self.parts
            .get_or_insert_with(topic, partition, VecDeque::new)
            .push_back((offset, applied_at));
    }

    /// Pops every message the watermark has released, in order; returns the
    /// highest released offset per partition.
    pub fn release(&mut self, watermark: Option<Ts>) -> Vec<(TopicPartition, i64)> {
        let mut out = Vec::new();
        for (tp, queue) in self.parts.iter_mut() {
            let mut last = None;
            while let Some(&(offset, at)) = queue.front() {
                let done = match at {
                    None => true,
                    Some(t) => watermark.is_some_and(|w| t <= w),
                };
                if !done {
                    break;
                }
                last = Some(offset);
                queue.pop_front();
            }
            if let Some(o) = last {
                out.push((tp.clone(), o));
            }
        }
        out
    }

    /// Forgets a revoked partition: its unapplied messages go to the new owner.
    pub fn revoke(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }

    /// Offsets still waiting.
    pub fn waiting(&self) -> usize {
        self.parts.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".into(), p)
    }

    #[test]
    fn releases_in_order_and_never_past_a_held_message() {
        let mut p = PendingOffsets::default();
        p.push("t", 0, 10, None);
        p.push("t", 0, 11, Some(Ts(50)));
        p.push("t", 0, 12, None);
        p.push("t", 1, 7, Some(Ts(20)));
        assert_eq!(p.release(Some(Ts(30))), vec![(tp(0), 10), (tp(1), 7)]);
        assert_eq!(p.waiting(), 2);
        assert_eq!(p.release(Some(Ts(49))), vec![]);
        assert_eq!(p.release(Some(Ts(50))), vec![(tp(0), 12)]);
        assert_eq!(p.waiting(), 0);
    }

    #[test]
    fn revoked_partitions_release_nothing() {
        let mut p = PendingOffsets::default();
        p.push("t", 3, 1, None);
        p.revoke(&tp(3));
        assert!(p.release(None).is_empty());
    }
}
