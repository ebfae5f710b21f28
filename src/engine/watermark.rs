//! Engine time: the watermark, the due-timer queue and the reorder buffer
//! for events inside the allowed lateness.
//!
//! Timers are plain data keyed by (deadline, customer): one entry per
//! customer, the earliest of its checks, replaced when state moves it, so an
//! advance pops only what is due.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

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
    queue: BTreeSet<(Ts, u32)>,
}

impl Timers {
    /// Replaces a customer's entry `old` by `new`.
    pub fn reschedule(&mut self, idx: u32, old: Option<Ts>, new: Option<Ts>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            self.queue.remove(&(o, idx));
        }
        if let Some(n) = new {
            self.queue.insert((n, idx));
        }
    }

    /// The earliest pending timer.
    pub fn first(&self) -> Option<(Ts, u32)> {
        self.queue.first().copied()
    }

    /// Pops the earliest pending timer.
    pub fn pop_first(&mut self) -> Option<(Ts, u32)> {
        self.queue.pop_first()
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

/// Events inside the allowed lateness, released in (`ts`, arrival) order.
/// The heap orders small keys and the events wait in slots: a sift then
/// moves 24 bytes per level rather than a whole event (a `run` over many
/// partitions holds thousands, and every event passes through here).
#[derive(Debug, Default)]
pub struct Reorder {
    heap: BinaryHeap<Reverse<(Ts, u64, u32)>>,
    slots: Vec<Option<(u16, Event)>>,
    free: Vec<u32>,
    seq: u64,
}

impl Reorder {
    /// Holds an event from `partition`.
    pub fn push(&mut self, event: Event, partition: u16) {
        self.seq += 1;
        let ts = event.ts;
        let held = Some((partition, event));
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = held;
                slot
            }
            None => {
                self.slots.push(held);
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.heap.push(Reverse((ts, self.seq, slot)));
    }

    /// The earliest held event's time.
    pub fn first_ts(&self) -> Option<Ts> {
        self.heap.peek().map(|Reverse((ts, _, _))| *ts)
    }

    /// Releases the earliest held event.
    pub fn pop(&mut self) -> Option<Held> {
        loop {
            let Reverse((ts, seq, slot)) = self.heap.pop()?;
            // Every key has its event (`drop_partition` removes both); a
            // key without one is skipped rather than trusted.
            if let Some((partition, event)) =
                self.slots.get_mut(slot as usize).and_then(Option::take)
            {
                self.free.push(slot);
                return Some(Held {
                    ts,
                    seq,
                    partition,
                    event,
                });
            }
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the events held from `partition`.
    pub fn drop_partition(&mut self, partition: u16) {
        let slots = &mut self.slots;
        self.heap.retain(|Reverse((_, _, slot))| {
            let Some(held) = slots.get_mut(*slot as usize) else {
                return false;
            };
            if held.as_ref().is_some_and(|(p, _)| *p == partition) {
                *held = None;
            }
            held.is_some()
        });
        self.free = (0..slots.len())
            .filter(|&i| slots[i].is_none())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
    }
}
