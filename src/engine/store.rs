//! The sharded customer store: a cheap-to-clone handle that the engine
//! writes and the HTTP API, metrics and snapshots read concurrently.
//!
//! Callers outside the engine never see a shard guard: reads return copies,
//! so no lock is held across an `.await` or while another map is touched.
//!
//! Records live densely in per-shard chunks addressed by the customer's
//! compact index, and the id index is a table of 4-byte entries (slot and
//! hash tag) whose equality check reads the id from the record itself. A
//! lookup by id is one lock and one probe that lands on the record it
//! returns, and a customer costs its record plus about 5-10 bytes of index
//! (a map keyed by id would store the id twice and leave its slots half
//! empty after each doubling; see BENCHMARKS.md).
//!
//! At a million customers each lookup is a few cache misses, so the engine
//! can announce a batch of upcoming ids ([`Customers::prefetch`]): their
//! index entries, then their records, are requested from memory together
//! rather than one miss after another.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use compact_str::CompactString;
use parking_lot::{MappedRwLockWriteGuard, RwLock, RwLockWriteGuard};

use super::customer::Customer;
pub(crate) use super::episode::Episodes;
pub use super::episode::{ActiveEpisode, EpisodeKey};
use super::event::{RepKey, Ts};
use super::ids::{IdHasher, IdIndex, MAX_SLOT, prefetch};
use super::rep::{RepIdx, Roster};
use super::rule::Check;
use super::tier::Thresholds;

/// A cheap-to-clone handle over the sharded customer records, open episodes
/// and the rep roster: the engine writes, readers (HTTP) read, and nobody
/// holds a shard guard outside a method.
#[derive(Debug, Clone, Default)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) customers: Customers,
    /// Firing time of every open episode, keyed by customer and check; the
    /// alert id of its resolution is derived from it.
    pub(crate) episodes: Episodes,
    pub(crate) roster: RwLock<Roster>,
    /// The engine's watermark in ms (`i64::MIN` before the first), so
    /// readers compute rolling numbers as of engine time.
    pub(crate) watermark: AtomicI64,
    /// Per segment (by index): its name and the tier thresholds in force,
    /// for readers.
    pub(crate) thresholds: RwLock<Vec<(CompactString, Thresholds)>>,
    /// What those thresholds were ranked over.
    pub(crate) ranked_over: RwLock<RankedOver>,
}

/// What the tier thresholds in force were ranked over: this instance's
/// customers, or the whole consumer group's (see
/// [`super::tier_summary`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RankedOver {
    /// The group-wide thresholds' version (the sum of the partitions'
    /// summary numbers: it grows with every summary); 0 while the instance
    /// ranks over its own customers.
    pub version: u64,
    /// Input partitions whose customers were ranked.
    pub partitions: usize,
    /// Input partitions in all (0 outside `run`).
    pub of: usize,
}

impl Default for Inner {
    fn default() -> Self {
        Self::seeded(0)
    }
}

impl Inner {
    fn seeded(seed: u64) -> Self {
        Self {
            customers: Customers::seeded(seed),
            episodes: Episodes::default(),
            roster: RwLock::new(Roster::seeded(seed)),
            watermark: AtomicI64::new(i64::MIN),
            thresholds: RwLock::new(Vec::new()),
            ranked_over: RwLock::new(RankedOver::default()),
        }
    }
}

/// Shards: a power of two. Few enough that partly filled chunks stay a
/// small share of memory, enough that a reader rarely meets the writer.
const SHARD_BITS: u32 = 4;
const SHARDS: usize = 1 << SHARD_BITS;
/// Records per chunk. Chunks never move, so growth copies nothing and
/// reserved but unused slots are never touched (not resident).
const CHUNK: usize = 4096;

/// Customer records by compact index (`slot << SHARD_BITS | shard`), with
/// an id index. Written by the engine only; a customer's shard is fixed by
/// its id's hash.
#[derive(Debug)]
pub(crate) struct Customers {
    shards: Box<[RwLock<Shard>]>,
    hasher: IdHasher,
}

#[derive(Debug, Default)]
struct Shard {
    /// Slots by index within the shard; `None` is a slot freed by eviction.
    chunks: Vec<Vec<Option<Customer>>>,
    /// Slots of the shard, found by the id's hash.
    index: IdIndex,
    hasher: IdHasher,
    free: Vec<u32>,
    len: usize,
}

impl Customers {
    fn seeded(seed: u64) -> Self {
        let hasher = IdHasher::new(seed);
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        hasher,
                        ..Shard::default()
                    })
                })
                .collect(),
            hasher,
        }
    }
}

/// The shard is taken from bits the index uses for neither its probe start
/// (low bits) nor its tag (top 8 bits).
fn shard_of_hash(h: u64) -> usize {
    ((h >> 32) as usize) & (SHARDS - 1)
}

fn split(idx: u32) -> (usize, u32) {
    (idx as usize & (SHARDS - 1), idx >> SHARD_BITS)
}

/// The compact index of `slot` in shard `shard` (the inverse of [`split`]).
fn join(shard: usize, slot: u32) -> u32 {
    slot << SHARD_BITS | shard as u32
}

/// The slot of the `i`th record of chunk `n`.
fn slot_of(n: usize, i: usize) -> u32 {
    (n * CHUNK + i) as u32
}

/// The record in `slot` of a shard's chunks.
fn record(chunks: &[Vec<Option<Customer>>], slot: u32) -> Option<&Customer> {
    let s = slot as usize;
    chunks.get(s / CHUNK)?.get(s % CHUNK)?.as_ref()
}

/// The cell of `slot`, filled or freed.
fn cell(chunks: &mut [Vec<Option<Customer>>], slot: u32) -> Option<&mut Option<Customer>> {
    let s = slot as usize;
    chunks.get_mut(s / CHUNK)?.get_mut(s % CHUNK)
}

impl Shard {
    fn slot(&self, slot: u32) -> Option<&Customer> {
        record(&self.chunks, slot)
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Customer> {
        cell(&mut self.chunks, slot)?.as_mut()
    }

    fn find(&self, h: u64, id: &str) -> Option<u32> {
        self.index
            .find(h, |s| self.slot(s).is_some_and(|c| c.id == id))
    }

    /// The hash of the record in `slot`, for the index to move its entry.
    fn rehash(hasher: IdHasher, chunks: &[Vec<Option<Customer>>]) -> impl Fn(u32) -> u64 + '_ {
        move |s| record(chunks, s).map_or(0, |c| hasher.hash(&c.id))
    }

    /// Stores a record whose id is not present; returns its slot, or `None`
    /// when the shard holds as many records as the index can address
    /// (2^24, about 270 million customers over the shards: far beyond memory).
    fn insert(&mut self, h: u64, customer: Customer) -> Option<u32> {
        let freed = self
            .free
            .pop()
            .filter(|&s| cell(&mut self.chunks, s).is_some());
        let slot = match freed {
            Some(s) => {
                if let Some(c) = cell(&mut self.chunks, s) {
                    *c = Some(customer);
                }
                s
            }
            None => {
                let next = self
                    .chunks
                    .last()
                    .map_or(0, |c| (self.chunks.len() - 1) * CHUNK + c.len());
                if next > MAX_SLOT as usize {
                    return None;
                }
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let n = self.chunks.len() - 1;
                let chunk = &mut self.chunks[n];
                chunk.push(Some(customer));
                slot_of(n, chunk.len() - 1)
            }
        };
        // Cannot be refused: the slot is at most MAX_SLOT (checked above).
        self.index
            .insert(h, slot, Self::rehash(self.hasher, &self.chunks));
        self.len += 1;
        Some(slot)
    }
}

impl Customers {
    fn shard(&self, idx: u32) -> (&RwLock<Shard>, u32) {
        let (shard, slot) = split(idx);
        (&self.shards[shard], slot)
    }

    /// The index of the customer with this id.
    pub(crate) fn find(&self, id: &str) -> Option<u32> {
        let h = self.hasher.hash(id);
        let shard = shard_of_hash(h);
        let slot = self.shards[shard].read().find(h, id)?;
        Some(join(shard, slot))
    }

    /// A copy of the record at `idx`.
    pub(crate) fn get(&self, idx: u32) -> Option<Customer> {
        self.read(idx, Customer::clone)
    }

    /// Reads a field of the record at `idx` without copying the record.
    pub(crate) fn read<R>(&self, idx: u32, f: impl FnOnce(&Customer) -> R) -> Option<R> {
        let (shard, slot) = self.shard(idx);
        shard.read().slot(slot).map(f)
    }

    /// The record at `idx`, locked for writing (its shard is locked while
    /// the guard lives: the engine holds it only for one customer's work).
    pub(crate) fn get_mut(&self, idx: u32) -> Option<MappedRwLockWriteGuard<'_, Customer>> {
        let (shard, slot) = self.shard(idx);
        RwLockWriteGuard::try_map(shard.write(), |s| s.slot_mut(slot)).ok()
    }

    /// The customer with this id, created by `make` if absent: one lock and
    /// one probe. Returns its index, whether it was created, and the record.
    pub(crate) fn entry(
        &self,
        id: &str,
        make: impl FnOnce() -> Customer,
    ) -> Option<(u32, bool, MappedRwLockWriteGuard<'_, Customer>)> {
        let h = self.hasher.hash(id);
        let shard = shard_of_hash(h);
        let mut guard = self.shards[shard].write();
        let (slot, created) = match guard.find(h, id) {
            Some(s) => (s, false),
            None => (guard.insert(h, make())?, true),
        };
        let record = RwLockWriteGuard::try_map(guard, |s| s.slot_mut(slot)).ok()?;
        Some((join(shard, slot), created, record))
    }

    /// Stores a customer whose id is not present yet; returns its index, or
    /// `None` (storing nothing) if the id is taken.
    pub(crate) fn insert(&self, customer: Customer) -> Option<u32> {
        let id = customer.id.clone();
        let (idx, created, _) = self.entry(&id, || customer)?;
        created.then_some(idx)
    }

    /// Removes every record `doomed` picks; returns them with their indexes.
    /// Their slots are reused by later inserts.
    pub(crate) fn remove_where(
        &self,
        mut doomed: impl FnMut(&Customer) -> bool,
    ) -> Vec<(u32, Customer)> {
        let mut gone = Vec::new();
        for (shard_no, shard) in self.shards.iter().enumerate() {
            let mut guard = shard.write();
            let s = &mut *guard;
            let mut slots = Vec::new();
            for (n, chunk) in s.chunks.iter().enumerate() {
                for (i, cell) in chunk.iter().enumerate() {
                    if let Some(c) = cell.as_ref().filter(|c| doomed(c)) {
                        slots.push((slot_of(n, i), s.hasher.hash(&c.id)));
                    }
                }
            }
            // Unindex every doomed slot before emptying any: the index
            // rehashes records that are still present as it closes gaps.
            for &(slot, h) in &slots {
                s.index.remove(h, slot, Shard::rehash(s.hasher, &s.chunks));
            }
            for (slot, _) in slots {
                if let Some(c) = cell(&mut s.chunks, slot).and_then(Option::take) {
                    s.free.push(slot);
                    s.len -= 1;
                    gone.push((join(shard_no, slot), c));
                }
            }
        }
        gone
    }

    /// Calls `f` on every record, one shard locked at a time.
    pub(crate) fn for_each(&self, mut f: impl FnMut(u32, &Customer)) {
        for (shard_no, shard) in self.shards.iter().enumerate() {
            let guard = shard.read();
            for (n, chunk) in guard.chunks.iter().enumerate() {
                for (i, c) in chunk.iter().enumerate() {
                    if let Some(c) = c {
                        f(join(shard_no, slot_of(n, i)), c);
                    }
                }
            }
        }
    }

    /// Calls `f` on every record for writing, one shard locked at a time.
    pub(crate) fn for_each_mut(&self, mut f: impl FnMut(u32, &mut Customer)) {
        for (shard_no, shard) in self.shards.iter().enumerate() {
            let mut guard = shard.write();
            for (n, chunk) in guard.chunks.iter_mut().enumerate() {
                for (i, c) in chunk.iter_mut().enumerate() {
                    if let Some(c) = c {
                        f(join(shard_no, slot_of(n, i)), c);
                    }
                }
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len).sum()
    }

    /// Asks memory for what looking up `ids` will touch, in two sweeps over
    /// the batch: every index entry first, then every candidate record, so
    /// the misses overlap instead of queueing. `each` gets each candidate's
    /// index (a hint: a hash-tag match, not yet checked against the id)
    /// with the value the caller paired the id with. Changes nothing; the
    /// shards are read-locked once for the whole batch.
    pub(crate) fn prefetch<'a, T: Copy + Default>(
        &self,
        ids: impl IntoIterator<Item = (&'a str, T)>,
        mut each: impl FnMut(u32, T),
    ) {
        let guards: [_; SHARDS] = std::array::from_fn(|s| self.shards[s].read());
        let mut batch = [(0u64, T::default()); PREFETCH];
        let mut ids = ids.into_iter().peekable();
        while ids.peek().is_some() {
            let mut n = 0;
            for (pending, (id, mark)) in batch.iter_mut().zip(&mut ids) {
                let h = self.hasher.hash(id);
                *pending = (h, mark);
                if let Some(e) = guards[shard_of_hash(h)].index.probe_start(h) {
                    prefetch(e, 1);
                }
                n += 1;
            }
            for &(h, mark) in &batch[..n] {
                let shard = shard_of_hash(h);
                let s = &guards[shard];
                if let Some(slot) = s.index.find(h, |_| true) {
                    let chunk = s.chunks.get(slot as usize / CHUNK);
                    if let Some(c) = chunk.and_then(|c| c.get(slot as usize % CHUNK)) {
                        prefetch(c, 1);
                    }
                    each(join(shard, slot), mark);
                }
            }
        }
    }
}

/// Ids looked up per prefetch sweep: enough misses in flight to fill the
/// core's miss buffers, few enough that the lines stay in L1/L2 until used.
const PREFETCH: usize = 32;

impl Store {
    /// A store whose id hashes use `seed`: `run` passes a random one, so
    /// crafted ids cannot force long probe chains ([`Store::default`] uses
    /// 0, which keeps replay's output order reproducible).
    pub fn seeded(seed: u64) -> Self {
        Self {
            inner: Arc::new(Inner::seeded(seed)),
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The engine's watermark, if it has one.
    pub fn watermark(&self) -> Option<Ts> {
        let w = self.inner.watermark.load(Ordering::Relaxed);
        (w != i64::MIN).then_some(Ts(w))
    }

    /// The tier thresholds in force for customers of `segment`.
    pub fn thresholds(&self, segment: u8) -> Thresholds {
        self.inner
            .thresholds
            .read()
            .get(usize::from(segment))
            .map_or(Thresholds::NONE, |s| s.1)
    }

    /// What the thresholds in force were ranked over.
    pub fn ranked_over(&self) -> RankedOver {
        *self.inner.ranked_over.read()
    }

    /// Records what the thresholds in force were ranked over (`run`).
    pub fn set_ranked_over(&self, r: RankedOver) {
        *self.inner.ranked_over.write() = r;
    }

    /// Every segment's name, in index order.
    pub fn segment_names(&self) -> Vec<CompactString> {
        self.inner
            .thresholds
            .read()
            .iter()
            .map(|s| s.0.clone())
            .collect()
    }

    /// The name of segment `segment` (index order of the config).
    pub fn segment_name(&self, segment: u8) -> CompactString {
        self.inner
            .thresholds
            .read()
            .get(usize::from(segment))
            .map(|s| s.0.clone())
            .unwrap_or_default()
    }

    /// A copy of the customer's state.
    pub fn customer(&self, id: &str) -> Option<Customer> {
        let c = &self.inner.customers;
        c.get(c.find(id)?)
    }

    /// Number of customers tracked.
    pub fn len(&self) -> usize {
        self.inner.customers.len()
    }

    /// Visits every customer (in shard order), each under its shard's
    /// read lock: for whole-population reports such as `evaluate`.
    pub fn for_each_customer(&self, mut f: impl FnMut(&Customer)) {
        self.inner.customers.for_each(|_, c| f(c));
    }

    /// Whether no customer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The wire id of a rep.
    pub fn rep_id(&self, rep: RepIdx) -> Option<RepKey> {
        self.inner.roster.read().name(rep).cloned()
    }

    /// Whether the rep has departed.
    pub fn rep_departed(&self, rep: RepIdx) -> bool {
        self.inner.roster.read().is_departed(rep)
    }

    /// Firing time of the customer's open episode of `check`.
    pub fn episode(&self, id: &str, check: Check) -> Option<Ts> {
        let idx = self.inner.customers.find(id)?;
        self.inner.episodes.get(&(idx, check))
    }

    /// Up to `limit` open episodes that `keep` accepts, newest first,
    /// starting after `after`; with the key of the last one returned when
    /// more may follow. Walks the listing order: a page costs what it
    /// returns (plus whatever `keep` skips), not a copy of every episode.
    pub fn active_alerts(
        &self,
        after: Option<EpisodeKey>,
        limit: usize,
        mut keep: impl FnMut(&Customer, Check) -> bool,
    ) -> (Vec<ActiveEpisode>, Option<EpisodeKey>) {
        use std::ops::Bound;
        let order = self.inner.episodes.order.read();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = Vec::new();
        let mut last = None;
        for key in order.range((from, Bound::Unbounded)) {
            if page.len() == limit {
                return (page, last);
            }
            let Some(customer) = self.inner.customers.get(key.customer) else {
                continue;
            };
            last = Some(*key);
            if keep(&customer, key.check) {
                page.push(ActiveEpisode {
                    customer,
                    check: key.check,
                    fired_at: key.fired_at.0,
                });
            }
        }
        (page, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: &str, partition: u16) -> Customer {
        Customer::new(id.into(), Ts(0), partition)
    }

    #[test]
    fn records_are_found_by_id_and_index_and_slots_are_reused() {
        let c = Customers::seeded(0x5eed_cafe_f00d);
        let ids: Vec<String> = (0..10_000).map(|i| format!("customer-{i}")).collect();
        let idx: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| c.insert(customer(id, (i % 3) as u16)).unwrap_or(u32::MAX))
            .collect();
        assert_eq!(c.len(), ids.len());
        assert_eq!(c.insert(customer("customer-7", 0)), None, "ids are unique");
        for (id, &i) in ids.iter().zip(&idx) {
            assert_eq!(c.find(id), Some(i));
            assert_eq!(c.get(i).map(|r| r.id.to_string()), Some(id.clone()));
        }
        let gone = c.remove_where(|r| r.partition == 1);
        assert_eq!(gone.len(), ids.len() / 3);
        assert_eq!(c.len(), ids.len() - gone.len());
        for (i, r) in &gone {
            assert_eq!(c.find(&r.id), None);
            assert_eq!(c.get(*i), None);
        }
        let (again, created, _) = c.entry("newcomer", || customer("newcomer", 0)).unwrap();
        assert!(created);
        assert!(
            gone.iter().any(|(i, _)| *i == again),
            "a freed slot is reused"
        );
        let (same, created, _) = c.entry("newcomer", || customer("other", 0)).unwrap();
        assert_eq!((same, created), (again, false));
        let mut seen = 0;
        c.for_each(|i, r| {
            assert_eq!(c.find(&r.id), Some(i));
            seen += 1;
        });
        assert_eq!(seen, c.len());
    }

    #[test]
    fn an_empty_slot_costs_no_more_than_a_record() {
        assert_eq!(
            std::mem::size_of::<Option<Customer>>(),
            std::mem::size_of::<Customer>()
        );
    }
}
