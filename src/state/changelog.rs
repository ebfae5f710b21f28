//! The state changelog: partition state handed over through Kafka, the way
//! Kafka Streams does it, so a partition's next owner needs no other disk.
//!
//! At every snapshot round, each owned partition `p` appends to partition
//! `p` of the compacted changelog topic (`kafka.changelog_topic`) the
//! customers that changed since the last round (keyed by customer id), the
//! reps whose departure changed (keyed by [`REP_KEY_PREFIX`] + rep id), then
//! one `Meta` entry with the input offsets the round covers and the engine
//! clock. Every record is bounded by construction (a customer's open
//! tickets are capped by `engine.max_open_tickets`, the roster is one
//! record per rep), so no round can hold a record the producer refuses. Input offsets are stored only after the broker
//! acknowledged the whole round. A new owner reads the partition from its
//! start to a fence it writes itself (so the end is found without trusting
//! high watermarks), keeps the state as of the last `Meta`, and drops what
//! follows it (a round cut short by a crash). The first round after an
//! assignment writes every customer of the partition, so compaction can
//! never leave a customer only in a cut-short round.
//!
//! This module is the record format and its bookkeeping (pure); reading
//! the topic is `kafka::changelog`.

use compact_str::CompactString;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::engine::customer::{CustomerRecord, MaybeRep};
use crate::engine::duplicate::Seen;
use crate::engine::event::{CustomerKey, RepKey, Ts};
use crate::engine::rep::RepIdx;
use crate::engine::rule::Check;
use crate::engine::{ClockState, CustomerState, PartitionState, SegmentTiers};

/// Key of the per-round `Meta` entry (compaction keeps the newest).
pub const META_KEY: &[u8] = b"__churnwatch.meta";
/// Key of the fence a reader writes to find the partition's end.
pub const FENCE_KEY: &[u8] = b"__churnwatch.fence";
/// Prefix of a rep's key (then the rep id).
pub const REP_KEY_PREFIX: &[u8] = b"__churnwatch.rep/";
/// Key of the per-segment tier thresholds (compaction keeps the newest).
pub const TIERS_KEY: &[u8] = b"__churnwatch.tiers";

/// One changelog record's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// A customer as changelogs before event ids were remembered wrote it
    /// (postcard is positional, so the old shape keeps its own variant):
    /// read on upgrade, never written.
    CustomerBeforeIds {
        /// The record.
        customer: CustomerRecord,
        /// Firing checks and when each fired.
        episodes: Vec<(Check, Ts)>,
        /// Open tickets.
        tickets: Vec<(u64, bool)>,
        /// Its account rep's id.
        rep: Option<RepKey>,
    },
    /// Closes a round: what it covers.
    Meta {
        /// Next input offset per topic the round covers.
        offsets: Vec<(String, i64)>,
        /// Engine-wide time state.
        clock: ClockState,
    },
    /// Written by a reader; marks how far it must read.
    Fence(u128),
    /// A rep of the roster and when it departed.
    Rep {
        /// The rep's id.
        id: RepKey,
        /// Its departure, if any.
        departed: Option<Ts>,
    },
    /// A customer forgotten (`engine.forget_after`): drops its earlier
    /// entries, so a hand-over does not bring it back.
    Forgotten(CustomerKey),
    /// A customer as changelogs before segments wrote it: read on
    /// upgrade (into the default segment), never written.
    CustomerBeforeSegments {
        /// The record.
        customer: CustomerRecord,
        /// Firing checks and when each fired.
        episodes: Vec<(Check, Ts)>,
        /// Open tickets.
        tickets: Vec<(u64, bool)>,
        /// Its recent event ids.
        seen: Seen,
        /// Its account rep's id.
        rep: Option<RepKey>,
    },
    /// A customer as of a round; `rep` names its account rep (indexes are
    /// local to an engine).
    Customer {
        /// The customer, its open episodes and tickets, its recent ids,
        /// its segment.
        state: CustomerState,
        /// Its account rep's id.
        rep: Option<RepKey>,
    },
    /// Every segment's thresholds as of a round.
    Tiers(Vec<SegmentTiers>),
}

impl Entry {
    /// The record value. An error (never seen: every field is plain data)
    /// fails the round, so no empty record is ever produced.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Reads a record value.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// One changelog record: key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// What each partition last sent, to send only what changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Per partition: hash of a record's key → hash of its last sent value.
    sent: FxHashMap<u16, FxHashMap<u64, u64>>,
}

impl Changes {
    /// One round for `state.partition`: `(key, value)` records of the
    /// customers and reps that changed, then the closing `Meta`.
    pub fn round(
        &mut self,
        state: &PartitionState,
        forgotten: &[CustomerKey],
        offsets: &[(String, i64)],
    ) -> Result<Vec<Record>, postcard::Error> {
        let sent = self.sent.entry(state.partition).or_default();
        let mut out = Vec::new();
        for id in forgotten {
            sent.remove(&xxh3_64(id.as_bytes()));
            out.push((
                id.as_bytes().to_vec(),
                Entry::Forgotten(id.clone()).encode()?,
            ));
        }
        for c in &state.customers {
            let rep = c
                .customer
                .account_rep
                .get()
                .and_then(|r| state.reps.get(r.0 as usize))
                .map(|(name, _)| name.clone());
            let value = Entry::Customer {
                state: c.clone(),
                rep,
            }
            .encode()?;
            changed(sent, c.customer.id.as_bytes().to_vec(), value, &mut out);
        }
        for (id, departed) in &state.reps {
            let value = Entry::Rep {
                id: id.clone(),
                departed: *departed,
            }
            .encode()?;
            let key = [REP_KEY_PREFIX, id.as_bytes()].concat();
            changed(sent, key, value, &mut out);
        }
        changed(
            sent,
            TIERS_KEY.to_vec(),
            Entry::Tiers(state.tiers.clone()).encode()?,
            &mut out,
        );
        let meta = Entry::Meta {
            offsets: offsets.to_vec(),
            clock: state.clock,
        };
        out.push((META_KEY.to_vec(), meta.encode()?));
        Ok(out)
    }

    /// Forgets a partition (revoked): its next round, here or elsewhere,
    /// starts with every customer.
    pub fn forget(&mut self, partition: u16) {
        self.sent.remove(&partition);
    }
}

/// Adds the record to `out` unless `sent` says it went out unchanged.
fn changed(sent: &mut FxHashMap<u64, u64>, key: Vec<u8>, value: Vec<u8>, out: &mut Vec<Record>) {
    let hash = xxh3_64(&value);
    if sent.insert(xxh3_64(&key), hash) != Some(hash) {
        out.push((key, value));
    }
}

/// A customer written before segments existed: the default segment.
fn before_segments(
    customer: CustomerRecord,
    episodes: Vec<(Check, Ts)>,
    tickets: Vec<(u64, bool)>,
    seen: Seen,
) -> CustomerState {
    CustomerState {
        customer,
        episodes,
        tickets,
        seen,
        segment: CompactString::default(),
    }
}

/// The state as of the last complete round among `entries` (in log order),
/// with the input offsets it covers; `None` if no round completed.
pub fn fold(
    partition: u16,
    entries: impl IntoIterator<Item = Entry>,
) -> Option<(PartitionState, Vec<(String, i64)>)> {
    let mut done: FxHashMap<String, (CustomerState, Option<RepKey>)> = FxHashMap::default();
    let mut roster: FxHashMap<RepKey, Option<Ts>> = FxHashMap::default();
    let mut pending = Vec::new();
    let mut pending_reps = Vec::new();
    let mut pending_forgotten = Vec::new();
    let mut pending_tiers = None;
    let mut tiers = Vec::new();
    let mut last = None;
    for e in entries {
        match e {
            Entry::Customer { state, rep } => pending.push((state, rep)),
            Entry::CustomerBeforeIds {
                customer,
                episodes,
                tickets,
                rep,
            } => pending.push((
                before_segments(customer, episodes, tickets, Seen::default()),
                rep,
            )),
            Entry::CustomerBeforeSegments {
                customer,
                episodes,
                tickets,
                seen,
                rep,
            } => pending.push((before_segments(customer, episodes, tickets, seen), rep)),
            Entry::Tiers(t) => pending_tiers = Some(t),
            Entry::Rep { id, departed } => pending_reps.push((id, departed)),
            Entry::Forgotten(id) => pending_forgotten.push(id),
            Entry::Meta { offsets, clock } => {
                for id in pending_forgotten.drain(..) {
                    done.remove(id.as_str());
                }
                for (state, rep) in pending.drain(..) {
                    done.insert(state.customer.id.to_string(), (state, rep));
                }
                roster.extend(pending_reps.drain(..));
                if let Some(t) = pending_tiers.take() {
                    tiers = t;
                }
                last = Some((offsets, clock));
            }
            Entry::Fence(_) => {}
        }
    }
    let (offsets, clock) = last?;
    let mut reps: Vec<(RepKey, Option<Ts>)> = roster.into_iter().collect();
    // Sorted, so a restore interns the reps in the same order every time.
    reps.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut index: FxHashMap<RepKey, u32> = reps
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), i as u32))
        .collect();
    let customers = done
        .into_values()
        .map(|(mut state, rep)| {
            state.customer.account_rep = match rep {
                Some(name) => {
                    let i = *index.entry(name.clone()).or_insert_with(|| {
                        reps.push((name, None));
                        (reps.len() - 1) as u32
                    });
                    MaybeRep::some(RepIdx(i))
                }
                None => MaybeRep::NONE,
            };
            state
        })
        .collect();
    Some((
        PartitionState {
            partition,
            customers,
            reps,
            clock,
            tiers,
        },
        offsets,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::native::decode;
    use crate::engine::watermark::Clock;
    use crate::engine::{Engine, PartitionState};

    fn engine_after(lines: &[&str]) -> Engine {
        let mut e = Engine::new(&Config::default().engine_settings(), Clock::Event);
        let mut out = Vec::new();
        for l in lines {
            let ev = decode(l.as_bytes(), e.decode_limits()).unwrap();
            e.apply(ev, 0, &mut out).unwrap();
        }
        e
    }

    fn decoded(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<Entry> {
        records
            .iter()
            .map(|(_, v)| postcard::from_bytes(v).unwrap())
            .collect()
    }

    /// `log` folds to `expected`'s partition 0, covering `calls` up to `next`.
    fn assert_folds_to(log: Vec<Entry>, next: i64, expected: &Engine) {
        let (state, offsets) = fold(0, log).unwrap();
        assert_eq!(offsets, vec![("calls".to_string(), next)]);
        let mut restored = Engine::new(&Config::default().engine_settings(), Clock::Event);
        restored.restore_partition(state);
        assert_eq!(
            sorted(restored.partition_state(0)),
            sorted(expected.partition_state(0))
        );
    }

    fn sorted(mut s: PartitionState) -> PartitionState {
        s.customers
            .sort_by(|a, b| a.customer.id.cmp(&b.customer.id));
        s
    }

    const A: &str =
        r#"{"type":"call","ts":"2026-01-01T00:00:00Z","customer_id":"a","rep_id":"r1"}"#;
    const B: &str =
        r#"{"type":"purchase","ts":"2026-01-02T00:00:00Z","customer_id":"b","amount":5}"#;
    const A2: &str =
        r#"{"type":"call","ts":"2026-01-02T00:00:00Z","customer_id":"a","rep_id":"r2"}"#;

    #[test]
    fn rounds_send_only_changed_customers_and_fold_back_to_the_state() {
        let mut changes = Changes::default();
        let first = engine_after(&[A, B]);
        let r1 = changes
            .round(&first.partition_state(0), &[], &[("calls".into(), 1)])
            .unwrap();
        assert_eq!(
            r1.len(),
            5,
            "two customers, rep r1, the thresholds and the meta"
        );
        let again = changes
            .round(&first.partition_state(0), &[], &[("calls".into(), 1)])
            .unwrap();
        assert_eq!(again.len(), 1, "nothing changed: only the meta");
        let second = engine_after(&[A, B, A2]);
        let r2 = changes
            .round(&second.partition_state(0), &[], &[("calls".into(), 2)])
            .unwrap();
        assert_eq!(r2.len(), 3, "customer a, the new rep r2 and the meta");
        assert_eq!(r2[0].0, b"a");
        assert_eq!(r2[1].0, b"__churnwatch.rep/r2");

        let log: Vec<Entry> = [r1, again, r2].iter().flat_map(|r| decoded(r)).collect();
        assert_folds_to(log, 2, &second);
    }

    /// A round for [`A`] and [`B`] as the release before event ids wrote
    /// it (record values, hex): an upgrade must read it, not stall on it.
    const BEFORE_IDS: [&str; 4] = [
        "00016114323032362d30312d30315430303a30303a30305affffffffffffffffff0180a0d5edee66ffffffffffffffffff01000c0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000009000000000000000000000600000000000000000000ffff03000200000001027231",
        "00016214323032362d30312d30325430303a30303a30305a809088c0ef66ffffffffffffffffff01ffffffffffffffffff01a0050c0000a0400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000fd0f090000010000000000000006000000000000ffffffff0f000001e79f01000200000000",
        "0302723100",
        "01010563616c6c73040114323032362d30312d30325430303a30303a30305a0114323032362d30312d30325430303a30303a30305a01a005000000000000f07f000000000000f07f",
    ];

    #[test]
    fn a_changelog_from_before_event_ids_still_folds() {
        let log = from_hex(&BEFORE_IDS);
        assert!(matches!(log[0], Entry::CustomerBeforeIds { .. }));
        assert_folds_to(log, 2, &engine_after(&[A, B]));
    }

    /// A round for [`A`] and [`B`] with event ids as the release before
    /// segments wrote it: its customers come back in the default segment,
    /// their ids remembered.
    const BEFORE_SEGMENTS: [&str; 4] = [
        "05016214323032362d30312d30325430303a30303a30305a809088c0ef66ffffffffffffffffff01ffffffffffffffffff01a0050c0000a0400000000000000000000000000000000000000000000000000000000000000000000000000000000000000000fd0f090000010000000000000006000000000000ffffffff0f000001e79f010002000000b4afeaa10d000000a8fb0100000000",
        "05016114323032362d30312d30315430303a30303a30305affffffffffffffffff0180a0d5edee66ffffffffffffffffff01000c0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000009000000000000000000000600000000000000000000ffff030002000000eaf7a2d50400000090fb0100000001027231",
        "0302723100",
        "01010563616c6c73040114323032362d30312d30325430303a30303a30305a0114323032362d30312d30325430303a30303a30305a01a005000000000000f07f000000000000f07f",
    ];

    fn from_hex(records: &[&str]) -> Vec<Entry> {
        records
            .iter()
            .map(|h| {
                let bytes: Vec<u8> = (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect();
                Entry::decode(&bytes).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_changelog_from_before_segments_still_folds() {
        let log = from_hex(&BEFORE_SEGMENTS);
        assert!(matches!(log[0], Entry::CustomerBeforeSegments { .. }));
        let with_ids =
            |l: &str, id: &str| l.replace("\"type\"", &format!("\"event_id\":\"{id}\",\"type\""));
        let (a, b) = (with_ids(A, "e1"), with_ids(B, "e2"));
        assert_folds_to(log, 2, &engine_after(&[&a, &b]));
    }

    #[test]
    fn segments_and_their_thresholds_travel_by_name() {
        let config = Config::parse(
            "[segments]\ndefault = \"retail\"\n[segments.wholesale]\n[segments.retail]\n",
        )
        .unwrap();
        let mut e = Engine::new(&config.engine_settings(), Clock::Event);
        let mut out = Vec::new();
        for l in [
            r#"{"type":"purchase","ts":"2026-01-01T00:00:00Z","customer_id":"w","amount":900,"segment":"wholesale"}"#,
            r#"{"type":"purchase","ts":"2026-01-01T00:00:00Z","customer_id":"r","amount":5}"#,
            r#"{"type":"call","ts":"2026-01-01T02:00:00Z","customer_id":"r","rep_id":"x"}"#,
        ] {
            e.apply(
                decode(l.as_bytes(), e.decode_limits()).unwrap(),
                0,
                &mut out,
            )
            .unwrap();
        }
        let round = Changes::default()
            .round(&e.partition_state(0), &[], &[("calls".into(), 3)])
            .unwrap();
        let (state, _) = fold(0, decoded(&round)).unwrap();
        // Declared in another order: indexes differ, names do not.
        let reordered = Config::parse(
            "[segments]\ndefault = \"retail\"\n[segments.a_new_one]\n[segments.wholesale]\n[segments.retail]\n",
        )
        .unwrap();
        let mut restored = Engine::new(&reordered.engine_settings(), Clock::Event);
        restored.restore_partition(state);
        let segment_of = |e: &Engine, id: &str| {
            let c = e.store().customer(id).unwrap();
            e.segment_names()[usize::from(c.segment())].to_string()
        };
        assert_eq!(segment_of(&restored, "w"), "wholesale");
        assert_eq!(segment_of(&restored, "r"), "retail");
        assert_eq!(restored.thresholds(2).a, 900.0, "wholesale's own");
        assert_eq!(restored.thresholds(1).a, 5.0, "retail's own");
    }

    #[test]
    fn a_round_cut_short_is_ignored() {
        let mut changes = Changes::default();
        let first = engine_after(&[A, B]);
        let r1 = changes
            .round(&first.partition_state(0), &[], &[("calls".into(), 1)])
            .unwrap();
        let second = engine_after(&[A, B, A2]);
        let mut r2 = changes
            .round(&second.partition_state(0), &[], &[("calls".into(), 2)])
            .unwrap();
        r2.pop();
        let log: Vec<Entry> = [r1, r2].iter().flat_map(|r| decoded(r)).collect();
        assert_folds_to(log, 1, &first);
        assert!(fold(0, Vec::new()).is_none());
    }

    #[test]
    fn no_record_grows_with_the_roster_or_a_customers_tickets() {
        let mut lines: Vec<String> = (0..5_000)
            .map(|i| {
                format!(
                    r#"{{"type":"call","ts":"2026-01-01T00:00:00Z","customer_id":"c{i}","rep_id":"rep-with-a-longish-id-{i}"}}"#
                )
            })
            .collect();
        lines.extend((0..1_000).map(|i| {
            format!(
                r#"{{"type":"ticket","ts":"2026-01-02T00:00:00Z","customer_id":"c0","ticket_id":"t{i}","status":"opened","kind":"complaint"}}"#
            )
        }));
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let e = engine_after(&refs);
        let round = Changes::default()
            .round(&e.partition_state(0), &[], &[("calls".into(), 6_000)])
            .unwrap();
        assert_eq!(
            round.len(),
            5_000 + 5_000 + 2,
            "customers, reps, thresholds, meta"
        );
        let largest = round.iter().map(|(k, v)| k.len() + v.len()).max().unwrap();
        assert!(largest < 4_096, "largest record {largest} bytes");
        let (state, _) = fold(0, decoded(&round)).unwrap();
        let c0 = state
            .customers
            .iter()
            .find(|c| c.customer.id == "c0")
            .unwrap();
        assert_eq!(c0.tickets.len(), 100, "engine.max_open_tickets");
        assert_eq!(c0.customer.open_tickets, 100);
        assert_eq!(e.stats().tickets_forgotten, 900);
    }

    #[test]
    fn a_forgotten_customer_is_dropped_from_the_folded_state() {
        let mut changes = Changes::default();
        let both = engine_after(&[A, B]);
        let r1 = changes
            .round(&both.partition_state(0), &[], &[("calls".into(), 1)])
            .unwrap();
        let only_b = engine_after(&[B]);
        let r2 = changes
            .round(
                &only_b.partition_state(0),
                &["a".into()],
                &[("calls".into(), 2)],
            )
            .unwrap();
        let log: Vec<Entry> = [r1, r2].iter().flat_map(|r| decoded(r)).collect();
        let (state, _) = fold(0, log).unwrap();
        let ids: Vec<&str> = state
            .customers
            .iter()
            .map(|c| c.customer.id.as_str())
            .collect();
        assert_eq!(ids, vec!["b"]);
    }
}
