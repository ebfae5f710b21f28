//! A partition's state moving out of and into the engine: copies for
//! snapshots and the changelog, restores, evictions on revocation, and the
//! customers `engine.forget_after` forgets.

use rustc_hash::FxHashMap;

use compact_str::CompactString;

use super::customer::{self, Customer, CustomerRecord, KEY_BY_EVENT, KEY_BY_LIST};
use super::duplicate::Seen;
use super::event::{CustomerKey, RepKey, Ts};
use super::rule::Check;
use super::tier::{self, Thresholds};
use super::watermark::Watermark;
use super::{Engine, rep};

/// One input partition's customers as plain data (snapshots, hand-over).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartitionState {
    /// The input partition.
    pub partition: u16,
    /// Its customers.
    pub customers: Vec<CustomerState>,
    /// Rep ids (and departure times) in the order of the indexes customers
    /// refer to: indexes are local to an engine, names are not.
    pub reps: Vec<(RepKey, Option<Ts>)>,
    /// Engine-wide time state when it was taken.
    pub clock: ClockState,
    /// Each segment's thresholds in force when it was taken, by name.
    pub tiers: Vec<SegmentTiers>,
}

/// A segment's tier thresholds, by the segment's name (indexes are local
/// to a config).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentTiers {
    /// The segment.
    pub segment: CompactString,
    /// Tier A threshold.
    pub a: f64,
    /// Tier B threshold.
    pub b: f64,
}

/// A customer with its open episodes and open tickets.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CustomerState {
    /// The record.
    pub customer: CustomerRecord,
    /// Firing checks and when each fired.
    pub episodes: Vec<(Check, Ts)>,
    /// Open tickets: hash and whether a complaint.
    pub tickets: Vec<(u64, bool)>,
    /// The record's recent event ids (kept out of the record's own
    /// serialisation, see [`Customer::seen`]).
    pub seen: Seen,
    /// Its segment's name ("" or an undeclared one: the default segment).
    pub segment: CompactString,
}

/// Engine-wide time state, so a restored engine ranks and rolls windows as
/// the one that wrote the snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClockState {
    /// The watermark.
    pub watermark: Option<Ts>,
    /// The next tier recompute.
    pub next_recompute: Option<Ts>,
    /// The monetary bucket epoch of the last recompute.
    pub monetary_epoch: Option<u32>,
    /// Tier A threshold of the default segment (every segment's are in
    /// [`PartitionState::tiers`]; this one is what changelogs written before
    /// segments carry).
    pub threshold_a: f64,
    /// Tier B threshold of the default segment.
    pub threshold_b: f64,
}

impl Engine {
    /// A copy of partition `partition`'s state.
    pub fn partition_state(&self, partition: u16) -> PartitionState {
        let mut states = self.partition_states(&[partition]);
        states.pop().unwrap_or_else(|| self.empty_state(partition))
    }

    /// Copies of the given partitions' states, in the order asked, from one
    /// pass over the customers (a snapshot round of every owned partition
    /// costs one scan, not one per partition).
    pub fn partition_states(&self, partitions: &[u16]) -> Vec<PartitionState> {
        let inner = self.store.inner();
        let mut states: Vec<PartitionState> =
            partitions.iter().map(|&p| self.empty_state(p)).collect();
        let names = self.core.segments.names();
        let slot: FxHashMap<u16, usize> = partitions
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, i))
            .collect();
        inner.customers.for_each(|idx, c| {
            let Some(&i) = slot.get(&c.partition) else {
                return;
            };
            let episodes = Check::ALL
                .into_iter()
                .filter(|k| c.is_firing(k.bit()))
                .filter_map(|k| inner.episodes.get(&(idx, k)).map(|t| (k, t)))
                .collect();
            states[i].customers.push(CustomerState {
                customer: c.record(&self.core.settings.windows),
                episodes,
                tickets: self.core.tickets.get(&idx).cloned().unwrap_or_default(),
                seen: c.seen,
                segment: names[usize::from(c.segment())].clone(),
            });
        });
        states
    }

    /// A partition without customers, with the engine-wide roster and clock.
    fn empty_state(&self, partition: u16) -> PartitionState {
        let c = &self.core;
        let default = self.thresholds(c.segments.default());
        PartitionState {
            partition,
            customers: Vec::new(),
            reps: self
                .store
                .inner()
                .roster
                .read()
                .entries()
                .map(|(id, departed)| (id.clone(), departed))
                .collect(),
            clock: ClockState {
                watermark: c.watermark.current(),
                next_recompute: c.next_recompute,
                monetary_epoch: c.monetary_epoch,
                threshold_a: default.a,
                threshold_b: default.b,
            },
            tiers: c
                .segments
                .names()
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let t = self.thresholds(i as u8);
                    SegmentTiers {
                        segment: name.clone(),
                        a: t.a,
                        b: t.b,
                    }
                })
                .collect(),
        }
    }

    /// Loads a partition's state. Customers already present stay as they
    /// are; engine-wide time state is taken only where this engine has none.
    /// Deadlines already past fire, with their original `at`, at the next
    /// advance.
    pub fn restore_partition(&mut self, state: PartitionState) -> usize {
        let inner = self.store.inner();
        let reps: Vec<Option<rep::RepIdx>> = state
            .reps
            .iter()
            .map(|(name, departed)| {
                let mut roster = inner.roster.write();
                let idx = roster.intern(name)?;
                // A departure already known must hold before the roster topic
                // is read again, or restored alerts would resolve.
                if departed.is_some() {
                    roster.set_departed(idx, *departed);
                }
                Some(idx)
            })
            .collect();
        let mut restored = 0;
        for CustomerState {
            customer,
            episodes,
            tickets,
            seen,
            segment,
        } in state.customers
        {
            let mut customer = customer.into_customer();
            let segments = &self.core.segments;
            customer.partition = state.partition;
            customer.seen = seen;
            customer.set_segment(segments.find(&segment).unwrap_or(segments.default()));
            // The list may have changed since: its bit is the config's now.
            let by_event = customer.key_flags() & KEY_BY_EVENT;
            let listed = if segments.listed(&customer.id) {
                KEY_BY_LIST
            } else {
                0
            };
            customer.set_key_flags(by_event | listed);
            // A key account is in tier A whatever was stored; one the list
            // no longer names keeps its stored tier until it next buys or a
            // recompute moves it (its thresholds are not restored yet).
            customer.account_rep = customer
                .account_rep
                .get()
                .and_then(|r| reps.get(r.0 as usize).copied().flatten())
                .map_or(customer::MaybeRep::NONE, customer::MaybeRep::some);
            let (tier, segment, pending) =
                (customer.tier(), customer.segment(), customer.pending.get());
            let tier = if customer.is_key_account() {
                tier::Tier::A
            } else {
                tier
            };
            customer.set_tier(tier);
            let core = &mut self.core;
            let ranked = customer.clone();
            let Some(idx) = inner.customers.insert(customer) else {
                continue;
            };
            core.tiers.insert(idx, segment);
            core.rank(idx, &ranked);
            core.tiers.moved((segment, tier::Tier::C), (segment, tier));
            self.core.timers.reschedule(idx, None, pending);
            for (check, at) in episodes {
                inner.episodes.insert((idx, check), at);
            }
            if !tickets.is_empty() {
                let mut tickets = tickets;
                // A lowered `max_open_tickets` applies to restored state too.
                let over = tickets
                    .len()
                    .saturating_sub(usize::from(self.core.settings.max_open_tickets));
                tickets.drain(..over);
                self.core.tickets.insert(idx, tickets);
            }
            restored += 1;
        }
        let (c, k) = (&mut self.core, state.clock);
        if c.watermark.current().is_none()
            && let Some(w) = k.watermark
        {
            c.watermark.set(w);
        }
        c.next_recompute = c.next_recompute.or(k.next_recompute);
        c.monetary_epoch = c.monetary_epoch.or(k.monetary_epoch);
        for group in 0..c.segments.groups() {
            if c.thresholds[group] != Thresholds::NONE {
                continue;
            }
            // By segment name; a state from before segments has the
            // default segment's only.
            let names = c.segments.names();
            let restored = (0..names.len())
                .filter(|&s| c.segments.group(s as u8) == group)
                .find_map(|s| state.tiers.iter().find(|t| t.segment == names[s]))
                .map(|t| Thresholds { a: t.a, b: t.b });
            c.thresholds[group] = restored.unwrap_or(if state.tiers.is_empty() {
                Thresholds {
                    a: k.threshold_a,
                    b: k.threshold_b,
                }
            } else {
                Thresholds::NONE
            });
        }
        c.publish_thresholds(self.store.inner());
        c.dirty = true;
        c.recompute_soon = true;
        restored
    }

    /// Forgets engine time (watermark, recompute schedule, thresholds) once
    /// no input partition's customers are left, so the state restored next
    /// brings its own: restored customers are then judged against their own
    /// time, not against a watermark that had run ahead of them.
    pub fn reset_clock(&mut self) {
        let c = &mut self.core;
        c.watermark = Watermark::new(c.watermark.clock, c.watermark.lateness_ms());
        c.next_recompute = None;
        c.monetary_epoch = None;
        c.thresholds.fill(Thresholds::NONE);
        c.publish_thresholds(self.store.inner());
    }

    /// Forgets every customer of input `partition` and its held events, for
    /// a partition revoked in a rebalance (its new owner rebuilds them).
    /// Returns how many customers were dropped. A scan: rebalances are rare.
    pub fn evict_partition(&mut self, partition: u16) -> usize {
        let gone = self.remove_where(|c| c.partition == partition);
        self.core.held.drop_partition(partition);
        self.core.forgotten.retain(|(p, _)| *p != partition);
        gone
    }

    /// Removes the customers `doomed` picks from the store and every
    /// engine structure; how many.
    fn remove_where(&mut self, doomed: impl FnMut(&Customer) -> bool) -> usize {
        let inner = self.store.inner();
        let gone = inner.customers.remove_where(doomed);
        let core = &mut self.core;
        for (idx, c) in &gone {
            core.tiers.remove(*idx, c.segment(), c.tier());
            core.timers.reschedule(*idx, c.pending.get(), None);
            for check in Check::ALL {
                inner.episodes.remove(&(*idx, check));
            }
            core.tickets.remove(idx);
        }
        core.dirty = true;
        gone.len()
    }

    /// `engine.forget_after`: forgets the customers with no spend in the
    /// window, nothing firing, no open ticket and no event for that long
    /// (on an input partition: roster-only records stay). A scan, run with
    /// the scheduled recompute.
    pub(super) fn forget_idle(&mut self, t: Ts) {
        let Some(after) = self.core.settings.forget_after_ms else {
            return;
        };
        let before = Ts(t.0.saturating_sub(after));
        let mut forgotten = Vec::new();
        let n = self.remove_where(|c| {
            let last = [c.last_purchase.get(), c.last_contact.get()]
                .into_iter()
                .flatten()
                .fold(c.first_seen.get(), Ts::max);
            let idle = last < before
                && c.monetary_total() == 0.0
                && c.firing() == 0
                && c.open_tickets == 0;
            if idle {
                forgotten.push((c.partition, c.id.clone()));
            }
            idle
        });
        self.core.stats.customers_forgotten += n as u64;
        if self.core.track_forgotten {
            self.core.forgotten.extend(forgotten);
        }
    }

    /// Keeps the ids of forgotten customers for [`Engine::take_forgotten`]
    /// (on only where a changelog writer takes them, so nothing piles up).
    pub fn track_forgotten(&mut self) {
        self.core.track_forgotten = true;
    }

    /// The customers of `partition` forgotten since the last call, so the
    /// changelog can drop them too.
    pub fn take_forgotten(&mut self, partition: u16) -> Vec<CustomerKey> {
        let (mine, rest) = std::mem::take(&mut self.core.forgotten)
            .into_iter()
            .partition(|(p, _)| *p == partition);
        self.core.forgotten = rest;
        mine.into_iter().map(|(_, id)| id).collect()
    }
}
