//! Engine time: the watermark, the due-timer queue and the reorder buffer
//! for events inside the allowed lateness.
//!
//! Timers are plain data keyed by (deadline, customer): one entry per
//! customer, the earliest of its checks, replaced when state moves it, so an
//! advance pops only what is due.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use super::event::{Event, Ts};

/// Where engine time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The watermark follows the event `ts` of one ordered stream (replay).
    Event,
    /// The watermark follows the wall clock passed to `advance_to` (`run`).
    #[default]
    Wall,
    /// The caller sets the watermark (the minimum over input partitions);
    /// events are held until it reaches them, so they apply in `ts` order
    /// across partitions (`run` with `engine.clock = "event"`).
    PartitionMinimum,
}

/// The engine's notion of now.
#[derive(Debug, Clone)]
pub struct Watermark {
    /// Where time comes from.
    pub clock: Clock,
    lateness_ms: i64,
    /// Largest event `ts` seen (event clock only).
    max_seen: Option<Ts>,
    current: Option<Ts>,
}

impl Watermark {
    /// A watermark for `clock`, trailing the largest `ts` by `lateness_ms` (event clock).
    pub fn new(clock: Clock, lateness_ms: i64) -> Self {
        Self {
            clock,
            lateness_ms,
            max_seen: None,
            current: None,
        }
    }

    /// The allowed lateness it was made with.
    pub fn lateness_ms(&self) -> i64 {
        self.lateness_ms
    }

    /// Engine time, once set.
    pub fn current(&self) -> Option<Ts> {
        self.current
    }

    /// The time future skew is measured from: the watermark under the wall
    /// clock; under the event clock the caller's wall time (`horizon`),
    /// because history may legitimately jump ahead of its own watermark by
    /// more than any fixed skew (a quiet weekend, a sparse scenario file).
    pub fn reference(&self, horizon: Option<Ts>) -> Option<Ts> {
        match self.clock {
            Clock::Event | Clock::PartitionMinimum => horizon,
            Clock::Wall => self.current,
        }
    }

    /// Notes an event time; returns the watermark the event clock now
    /// allows (unchanged under the wall clock).
    pub fn observe(&mut self, ts: Ts) -> Option<Ts> {
        match self.clock {
            Clock::Event => {
                let max = self.max_seen.map_or(ts, |m| m.max(ts));
                self.max_seen = Some(max);
                Some(Ts(max.0.saturating_sub(self.lateness_ms)))
            }
            Clock::Wall | Clock::PartitionMinimum => self.current,
        }
    }

    /// Moves the watermark forward (never back).
    pub fn set(&mut self, t: Ts) {
        self.current = Some(self.current.map_or(t, |c| c.max(t)));
    }

    /// Whether `ts` is older than the watermark.
    pub fn is_late(&self, ts: Ts) -> bool {
        self.current.is_some_and(|w| ts < w)
    }
}

/// Deadlines, one per customer, ordered by time then customer index (so
/// equal deadlines fire in a deterministic order).
#[derive(Debug, Default)]
pub struct Timers {
    queue: BTreeSet<Deadline>,
}

/// A deadline as a 12-byte key, (time high, time low, customer), that sorts
/// as (time, customer): a `(Ts, u32)` pads to 16, and the set holds one per
/// high-tier customer (1.3 bytes per customer at 1M). Deadlines are
/// customer record times ([`super::customer::Stamp`]), so never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline([u32; 3]);

impl Deadline {
    fn new(t: Ts, idx: u32) -> Self {
        let t = t.0.max(0);
        Deadline([(t >> 32) as u32, t as u32, idx])
    }

    fn get(self) -> (Ts, u32) {
        let [hi, lo, idx] = self.0;
        (Ts(i64::from(hi) << 32 | i64::from(lo)), idx)
    }
}

impl Timers {
    /// Replaces a customer's entry `old` by `new`.
    pub fn reschedule(&mut self, idx: u32, old: Option<Ts>, new: Option<Ts>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.queue.remove(&Deadline::new(o, idx));
        }
        if let Some(n) = new {
            self.queue.insert(Deadline::new(n, idx));
        }
    }

    /// The earliest pending timer.
    pub fn first(&self) -> Option<(Ts, u32)> {
        self.queue.first().map(|d| d.get())
    }

    /// Pops the earliest pending timer.
    pub fn pop_first(&mut self) -> Option<(Ts, u32)> {
        self.queue.pop_first().map(Deadline::get)
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// An event held back until the watermark reaches its `ts`.
#[derive(Debug)]
pub struct Held {
    /// The event's time.
    pub ts: Ts,
    /// Arrival order, breaking ties.
    pub seq: u64,
    /// The input partition.
    pub partition: u16,
    /// The event.
    pub event: Event,
}

impl Held {
    /// Release order.
    fn key(&self) -> (Ts, u64) {
        (self.ts, self.seq)
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// Queues per partition before an event out of order goes to the heap.
const RUNS_PER_PARTITION: usize = 4;

/// Events inside the allowed lateness, released in (`ts`, arrival) order.
///
/// Each input topic's partition is mostly in time order already, and `run`
/// holds thousands of events whenever one partition's fetch runs ahead of
/// the others': so events wait in time-ordered queues (a push is an
/// append) and a small heap orders the queues' heads, a k-way merge (a
/// release costs log of the queues, not of the events). A partition number
/// is shared by the input topics (purchases, calls and tickets of one
/// customer), whose fetches interleave: so a partition has up to
/// [`RUNS_PER_PARTITION`] queues, and an event goes to the first whose last
/// event is not later (one queue per topic, in practice). Only an event
/// older than every queue's last goes to a heap beside them. Each queue is
/// sorted by (`ts`, arrival), so the release order is the same as one
/// global heap's.
#[derive(Debug, Default)]
pub struct Reorder {
    queues: Vec<(u16, VecDeque<Held>)>,
    /// The release key of each non-empty queue's head, and the queue.
    heads: BinaryHeap<Reverse<((Ts, u64), usize)>>,
    out_of_order: BinaryHeap<Reverse<Held>>,
    seq: u64,
    len: usize,
}

impl Reorder {
    /// Holds an event from `partition`.
    pub fn push(&mut self, event: Event, partition: u16) {
        self.seq += 1;
        self.len += 1;
        let held = Held {
            ts: event.ts,
            seq: self.seq,
            partition,
            event,
        };
        let mut runs = 0;
        let mut fits = None;
        for (i, (p, queue)) in self.queues.iter().enumerate() {
            if *p != partition {
                continue;
            }
            runs += 1;
            if queue.back().is_none_or(|last| last.ts <= held.ts) {
                fits = Some(i);
                break;
            }
        }
        let i = match fits {
            Some(i) => i,
            None if runs < RUNS_PER_PARTITION => {
                self.queues.push((partition, VecDeque::new()));
                self.queues.len() - 1
            }
            None => {
                self.out_of_order.push(Reverse(held));
                return;
            }
        };
        let queue = &mut self.queues[i].1;
        if queue.is_empty() {
            self.heads.push(Reverse((held.key(), i)));
        }
        queue.push_back(held);
    }

    /// Whether the out-of-order heap holds the earliest event.
    fn out_of_order_first(&self) -> bool {
        match (self.out_of_order.peek(), self.heads.peek()) {
            (Some(o), Some(Reverse((head, _)))) => o.0.key() < *head,
            (o, _) => o.is_some(),
        }
    }

    /// The earliest held event's time.
    pub fn first_ts(&self) -> Option<Ts> {
        if self.out_of_order_first() {
            self.out_of_order.peek().map(|o| o.0.ts)
        } else {
            self.heads.peek().map(|Reverse(((ts, _), _))| *ts)
        }
    }

    /// Releases the earliest held event.
    pub fn pop(&mut self) -> Option<Held> {
        let held = if self.out_of_order_first() {
            self.out_of_order.pop().map(|o| o.0)
        } else {
            let Reverse((_, i)) = self.heads.pop()?;
            let queue = &mut self.queues.get_mut(i)?.1;
            let held = queue.pop_front();
            if let Some(next) = queue.front() {
                self.heads.push(Reverse((next.key(), i)));
            }
            held
        }?;
        self.len -= 1;
        Some(held)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Drops the events held from `partition`.
    pub fn drop_partition(&mut self, partition: u16) {
        for (p, queue) in &mut self.queues {
            if *p == partition {
                self.len -= queue.len();
                queue.clear();
            }
        }
        let queues = &self.queues;
        self.heads
            .retain(|Reverse((_, q))| queues.get(*q).is_some_and(|(p, _)| *p != partition));
        let before = self.out_of_order.len();
        self.out_of_order.retain(|h| h.0.partition != partition);
        self.len -= before - self.out_of_order.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::event::EventKind;

    proptest::proptest! {
        #[test]
        fn deadlines_fire_by_time_then_customer(
            ops in proptest::collection::vec((0i64..(1 << 48), 0u32..50, proptest::bool::ANY), 0..200),
        ) {
            let (mut timers, mut model) = (Timers::default(), BTreeSet::new());
            for (t, idx, add) in ops {
                let t = Ts(t);
                if add {
                    timers.reschedule(idx, None, Some(t));
                    model.insert((t, idx));
                } else if let Some(&(old, _)) = model.iter().find(|(_, i)| *i == idx) {
                    timers.reschedule(idx, Some(old), Some(t));
                    model.remove(&(old, idx));
                    model.insert((t, idx));
                }
                proptest::prop_assert_eq!(timers.first(), model.first().copied());
            }
            while let Some(d) = timers.pop_first() {
                proptest::prop_assert_eq!(Some(d), model.pop_first());
            }
            proptest::prop_assert!(model.is_empty());
        }
    }

    fn event(ts: i64) -> Event {
        Event {
            segment: None,
            key_account: None,
            ts: Ts(ts),
            kind: EventKind::Purchase {
                customer: "c".into(),
                amount: 1.0,
                currency: None,
            },
            id: None,
        }
    }

    proptest::proptest! {
        /// Interleaved topics put many events behind their partition's
        /// last: whichever queue or the heap holds them, the order is one
        /// global sort's by (ts, arrival).
        #[test]
        fn release_order_is_a_global_sort_by_time_then_arrival(
            pushes in proptest::collection::vec((0i64..50, 0u16..3), 0..300),
            dropped in proptest::option::of(0u16..3),
        ) {
            let mut r = Reorder::default();
            let mut expected = Vec::new();
            for (seq, (ts, partition)) in pushes.iter().enumerate() {
                r.push(event(*ts), *partition);
                expected.push((*ts, seq as u64 + 1, *partition));
            }
            if let Some(d) = dropped {
                r.drop_partition(d);
                expected.retain(|e| e.2 != d);
            }
            expected.sort();
            proptest::prop_assert_eq!(r.len(), expected.len());
            let mut order = Vec::new();
            while let Some(h) = r.pop() {
                order.push((h.ts.0, h.seq, h.partition));
            }
            proptest::prop_assert_eq!(order, expected);
        }
    }

    #[test]
    fn releases_in_time_then_arrival_order_across_partitions() {
        let mut r = Reorder::default();
        for (ts, partition) in [(10, 0), (30, 0), (20, 1), (20, 1), (5, 0), (20, 2), (40, 1)] {
            r.push(event(ts), partition);
        }
        assert_eq!((r.len(), r.first_ts()), (7, Some(Ts(5))));
        r.drop_partition(2);
        r.push(event(15), 2);
        let mut order = Vec::new();
        while let Some(h) = r.pop() {
            order.push((h.ts.0, h.seq, h.partition));
        }
        assert_eq!(
            order,
            [
                (5, 5, 0),
                (10, 1, 0),
                (15, 8, 2),
                (20, 3, 1),
                (20, 4, 1),
                (30, 2, 0),
                (40, 7, 1)
            ]
        );
        assert!(r.is_empty());
    }
}
