//! Redelivered events: at-least-once producers, connector restarts and CDC
//! re-snapshots send an event again, and counting it twice would inflate
//! spend and frequency. An event that carries an `event_id` is remembered
//! per customer, and one whose id was seen for that customer within
//! `engine.dedup_window` of event time is skipped.
//!
//! Memory is fixed: each customer keeps the last [`RING`] ids as 32-bit
//! fingerprints with the event's hour (24 bytes), the oldest replaced
//! first. A redelivery is caught while fewer than [`RING`] newer ids of the
//! same customer came in between, which covers a producer or connector
//! re-sending its last batch; two distinct ids of one customer collide with
//! odds of about one in a billion per event. The state is plain data in the
//! record, so it travels with snapshots and the changelog, and replay and
//! run, applying events in the same order, skip the same ones.

use std::num::NonZeroU32;

use super::event::{EventType, Ts};

/// Ids remembered per customer.
pub const RING: usize = 4;

/// Milliseconds per hour, the window's unit.
const HOUR_MS: i64 = 3_600_000;

/// The longest `engine.dedup_window`, in hours: hours are kept as wrapping
/// 16-bit numbers, so distances are only exact up to half their range.
pub const MAX_WINDOW_HOURS: u32 = i16::MAX as u32;

/// An event's identity: a fingerprint of its type and `event_id` (an order
/// and a call that share an id are different events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId(NonZeroU32);

impl EventId {
    /// The fingerprint of `id` for an event of type `kind`.
    pub fn new(kind: EventType, id: &str) -> EventId {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), kind as u64) as u32;
        EventId(NonZeroU32::new(h).unwrap_or(NonZeroU32::MIN))
    }
}

/// The ids a customer's recent events carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    /// Fingerprints; 0 is an empty slot.
    prints: [u32; RING],
    /// Hour of the event (since 1970, wrapping) per slot.
    hours: [u16; RING],
}

impl Seen {
    /// Whether `id` at `ts` repeats an id seen within `window_hours`; if it
    /// does not, it is remembered in place of the oldest.
    pub fn repeat(&mut self, id: EventId, ts: Ts, window_hours: u16) -> bool {
        let print = id.0.get();
        let hour = ts.0.div_euclid(HOUR_MS) as u16;
        let age = |slot: usize| hour.wrapping_sub(self.hours[slot]) as i16;
        if (0..RING).any(|s| self.prints[s] == print && age(s).unsigned_abs() <= window_hours) {
            return true;
        }
        let slot = (0..RING)
            .find(|&s| self.prints[s] == 0)
            .or_else(|| (0..RING).max_by_key(|&s| (age(s), std::cmp::Reverse(s))))
            .unwrap_or(0);
        self.prints[slot] = print;
        self.hours[slot] = hour;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = HOUR_MS;
    const WEEK: u16 = 168;

    fn id(s: &str) -> EventId {
        EventId::new(EventType::Purchase, s)
    }

    #[test]
    fn a_repeat_within_the_window_is_caught_in_either_direction() {
        let mut seen = Seen::default();
        assert!(!seen.repeat(id("o1"), Ts(1000 * H), WEEK));
        assert!(seen.repeat(id("o1"), Ts(1000 * H), WEEK));
        assert!(seen.repeat(id("o1"), Ts(1168 * H), WEEK));
        assert!(seen.repeat(id("o1"), Ts(832 * H), WEEK));
        assert!(
            !seen.repeat(id("o1"), Ts(1169 * H), WEEK),
            "past the window"
        );
    }

    #[test]
    fn the_type_is_part_of_the_identity() {
        let mut seen = Seen::default();
        assert!(!seen.repeat(id("7"), Ts(0), WEEK));
        assert!(!seen.repeat(EventId::new(EventType::Call, "7"), Ts(0), WEEK));
    }

    #[test]
    fn the_oldest_is_forgotten_first() {
        let mut seen = Seen::default();
        // Inserted out of time order: o3 is the oldest.
        for (name, hour) in [("o1", 10), ("o2", 11), ("o3", 5), ("o4", 12)] {
            assert!(!seen.repeat(id(name), Ts(hour * H), WEEK));
        }
        assert!(!seen.repeat(id("o5"), Ts(13 * H), WEEK));
        assert!(!seen.repeat(id("o3"), Ts(5 * H), WEEK), "o3 was replaced");
        for name in ["o2", "o4", "o5"] {
            assert!(seen.repeat(id(name), Ts(13 * H), WEEK), "{name}");
        }
    }

    #[test]
    fn hours_wrap_without_confusing_distance() {
        let mut seen = Seen::default();
        let wrap = i64::from(u16::MAX) + 1;
        assert!(!seen.repeat(id("o1"), Ts((wrap - 2) * H), WEEK));
        assert!(seen.repeat(id("o1"), Ts((wrap + 3) * H), WEEK));
        assert!(!seen.repeat(id("o1"), Ts((wrap + 200) * H), WEEK));
    }

    mod engine {
        use crate::engine::Engine;
        use crate::engine::native::decode;
        use crate::engine::settings::Settings;
        use crate::engine::tests::shipped_settings;
        use crate::engine::watermark::Clock;

        const ORDER: &str = r#"{"type":"purchase","ts":"2026-01-01T00:00:00Z","customer_id":"c","amount":1000,"event_id":"o-1"}"#;
        const LATER: &str = r#"{"type":"purchase","ts":"2026-01-03T00:00:00Z","customer_id":"c","amount":1000,"event_id":"o-1"}"#;
        const OTHER: &str = r#"{"type":"purchase","ts":"2026-01-02T00:00:00Z","customer_id":"c","amount":5,"event_id":"o-2"}"#;

        fn engine(settings: &Settings) -> Engine {
            Engine::new(settings, Clock::Event)
        }

        fn push(e: &mut Engine, lines: &[&str]) {
            let mut out = Vec::new();
            for l in lines {
                let ev = decode(l.as_bytes(), e.decode_limits()).unwrap();
                e.apply(ev, 0, &mut out).unwrap();
            }
        }

        fn monetary(e: &Engine) -> f64 {
            e.store().customer("c").unwrap().monetary_total()
        }

        #[test]
        fn three_deliveries_of_one_order_count_once() {
            let mut e = engine(&shipped_settings());
            push(&mut e, &[ORDER, OTHER, ORDER, LATER]);
            assert_eq!(monetary(&e), 1005.0);
            assert_eq!(e.stats().duplicates, [2, 0, 0, 0]);
        }

        #[test]
        fn a_restored_engine_remembers_what_it_saw() {
            let mut first = engine(&shipped_settings());
            push(&mut first, &[ORDER]);
            let mut restored = engine(&shipped_settings());
            restored.restore_partition(first.partition_state(0));
            push(&mut restored, &[LATER]);
            assert_eq!(monetary(&restored), 1000.0);
            assert_eq!(restored.stats().duplicates[0], 1);
        }

        #[test]
        fn a_zero_window_turns_it_off() {
            let mut off = shipped_settings();
            off.dedup_window = std::time::Duration::ZERO;
            let mut e = engine(&off);
            push(&mut e, &[ORDER, ORDER, LATER]);
            assert_eq!(monetary(&e), 3000.0);
        }
    }
}
