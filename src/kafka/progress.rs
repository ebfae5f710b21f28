//! The event-clock watermark over input partitions: the minimum of each
//! partition's largest event time, skipping partitions that are caught up
//! and idle (else one quiet partition would stop time for all).

use std::time::{Duration, Instant};

use super::offsets::TopicPartition;
use super::partition_map::PartitionMap;
use crate::engine::event::Ts;

#[derive(Debug, Clone, Copy)]
struct Part {
    max_ts: Option<Ts>,
    last_message: Instant,
    /// Next offset to read; compared with the high watermark.
    next_offset: i64,
    caught_up: bool,
    /// An input partition (not the roster).
    input: bool,
}

/// Per-partition event-time progress.
#[derive(Debug, Default)]
pub struct Progress {
    parts: PartitionMap<Part>,
}

impl Progress {
    /// Starts tracking a partition; `input` is false for the roster.
    pub fn assign(&mut self, tp: TopicPartition, now: Instant, input: bool) {
        self.parts.get_or_insert_with(&tp.0, tp.1, || Part {
            max_ts: None,
            last_message: now,
            next_offset: 0,
            caught_up: false,
            input,
        });
    }

    /// Stops tracking a partition.
    pub fn revoke(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }

    /// Whether the partition is tracked (assigned and not revoked since).
    pub fn tracks(&self, (topic, partition): (&str, i32)) -> bool {
        self.parts.contains(topic, partition)
    }

    /// Notes a message (valid or not: it proves the partition moves).
    pub fn observe(
        &mut self,
        (topic, partition): (&str, i32),
        offset: i64,
        ts: Option<Ts>,
        now: Instant,
    ) {
        if let Some(p) = self.parts.get_mut(topic, partition) {
            if let Some(ts) = ts {
                p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
            }
            p.last_message = now;
            p.next_offset = offset + 1;
            p.caught_up = false;
        }
    }

    /// Partitions idle for `idle` whose high watermark should be checked.
    pub fn idle(&self, now: Instant, idle: Duration) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, p)| !p.caught_up && now.duration_since(p.last_message) >= idle)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The input partitions whose newest event is past `w` (or all with
    /// events, before engine time starts): the ones adding held events.
    pub fn ahead_of(&self, w: Option<Ts>) -> Vec<TopicPartition> {
        self.parts
            .iter()
            .filter(|(_, p)| p.input && p.max_ts.is_some_and(|m| w.is_none_or(|w| m > w)))
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// Records the partition's high watermark (next offset to be written).
    pub fn high_watermark(&mut self, tp: &TopicPartition, high: i64) {
        if let Some(p) = self.parts.get_mut(&tp.0, tp.1) {
            p.caught_up = p.next_offset >= high;
        }
    }

    /// Notes where consuming the partition resumes (restored or committed
    /// offset), so a partition with nothing left to consume is judged
    /// caught up from the high watermark alone: librdkafka's statistics
    /// know no position until a message was consumed or this member
    /// committed (a partition handed over exactly has neither).
    pub fn starts_at(&mut self, tp: &TopicPartition, next: i64) {
        if let Some(p) = self.parts.get_mut(&tp.0, tp.1) {
            p.next_offset = p.next_offset.max(next);
        }
    }

    /// Marks the partition caught up on librdkafka's word (consumer lag 0):
    /// this also covers a partition that delivers nothing because its
    /// committed offset is already at the end.
    pub fn caught_up(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.parts.get_mut(&tp.0, tp.1) {
            p.caught_up = true;
        }
    }

    /// Whether any input partition is assigned.
    pub fn has_input(&self) -> bool {
        self.parts.values().any(|p| p.input)
    }

    /// The watermark the partitions allow, if any. None before any input
    /// partition is assigned: the roster alone must not move time.
    pub fn watermark(&self, now: Instant, idle: Duration) -> Option<Ts> {
        if !self.has_input() {
            return None;
        }
        let holding = |p: &Part| !(p.caught_up && now.duration_since(p.last_message) >= idle);
        let mut active = self.parts.values().filter(|p| holding(p)).peekable();
        if active.peek().is_none() {
            return self.parts.values().filter_map(|p| p.max_ts).max();
        }
        let mut min: Option<Ts> = None;
        for p in active {
            let ts = p.max_ts?;
            min = Some(min.map_or(ts, |m| m.min(ts)));
        }
        min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_partitions_skipping_idle_caught_up_ones() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(5);
        let a = ("in".to_string(), 0);
        let b = ("in".to_string(), 1);
        let mut p = Progress::default();
        let roster = ("reps".to_string(), 0);
        p.assign(roster.clone(), t0, false);
        p.observe((&roster.0, roster.1), 0, Some(Ts(500)), t0);
        assert_eq!(p.watermark(t0, idle), None, "no input partition yet");
        p.revoke(&roster);
        p.assign(a.clone(), t0, true);
        p.assign(b.clone(), t0, true);
        p.observe((&a.0, a.1), 0, Some(Ts(100)), t0);
        assert_eq!(p.watermark(t0, idle), None, "b has told nothing yet");
        p.observe((&b.0, b.1), 0, Some(Ts(40)), t0);
        assert_eq!(p.watermark(t0, idle), Some(Ts(40)));
        let later = t0 + Duration::from_secs(6);
        assert_eq!(
            p.watermark(later, idle),
            Some(Ts(40)),
            "idle but not known caught up"
        );
        assert_eq!(p.idle(later, idle).len(), 2);
        p.high_watermark(&b, 1);
        assert_eq!(
            p.watermark(later, idle),
            Some(Ts(100)),
            "b is caught up and idle"
        );
        p.high_watermark(&a, 1);
        assert_eq!(
            p.watermark(later, idle),
            Some(Ts(100)),
            "all idle: the largest time seen"
        );
        p.observe((&b.0, b.1), 1, Some(Ts(60)), later);
        // a stays skipped; b moves again and alone holds time (the engine
        // itself never moves its watermark back).
        assert_eq!(p.watermark(later, idle), Some(Ts(60)));
    }
}
