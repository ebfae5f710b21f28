//! Finding records by id: an index of slots (one per store shard, one for
//! the rep roster) with open addressing and linear probing over 4-byte
//! entries, each holding a record slot and 8 bits of the id's hash; and the
//! cache prefetch hint the engine's batch lookups use.
//!
//! Our own rather than hashbrown's because the engine prefetches a batch of
//! upcoming lookups: that needs the address where an id's probe starts, and
//! a probe that picks its candidate from the hash alone, without reading a
//! record (hashbrown exposes neither). Equality is decided by the caller
//! against the record's own id, so ids are stored once.

use std::hash::BuildHasher;

use rustc_hash::FxSeededState;

const SLOT_BITS: u32 = 24;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// Largest slot an entry can hold (an entry stores `slot + 1`; 0 is empty).
pub(crate) const MAX_SLOT: u32 = SLOT_MASK - 1;
const EMPTY: u32 = 0;
/// Grow past this load: linear probing stays short up to it (2.5 probes on
/// a hit at 0.8, 16 entries per cache line).
const LOAD_NUM: usize = 4;
const LOAD_DEN: usize = 5;
/// Tables grow by half: with any length allowed (the probe start is a
/// multiply, not a mask) a table is 0.53 to 0.8 full, where doubling
/// power-of-two tables left it 0.4 to 0.8 (8.5 bytes per customer at 1M
/// customers in 16 shards, now 5.1).
const GROW_NUM: usize = 3;
const GROW_DEN: usize = 2;

/// The hash every id lookup of one store uses: seeded, so a process that
/// picks its seed at random (as `run` does) cannot be fed ids crafted to
/// collide into long probe chains. Seed 0 (the default) keeps replay's
/// output order reproducible (the seed also picks each customer's shard,
/// hence the scan order).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl IdHasher {
    /// A hasher for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The hash of `id`.
    pub(crate) fn hash(self, id: &str) -> u64 {
        FxSeededState::with_seed(self.0 as usize).hash_one(id)
    }
}

/// Requests the cache lines of `n` values at `p` (a hint; never faults).
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T, n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let (start, bytes) = (p.cast::<i8>(), n * std::mem::size_of::<T>());
        for offset in (0..bytes).step_by(64).chain([bytes.saturating_sub(1)]) {
            // SAFETY: a prefetch is a hint; it reads nothing architecturally
            // and does not fault, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct IdIndex {
    /// Empty, or at least 16 long.
    entries: Vec<u32>,
    len: usize,
}

/// The hash bits kept in an entry: the top 8, which pick neither the probe
/// start (low bits) nor the shard (bits 32-35).
fn tag(h: u64) -> u32 {
    (h >> 56) as u32
}

fn entry(h: u64, slot: u32) -> u32 {
    tag(h) << SLOT_BITS | (slot + 1)
}

fn entry_slot(e: u32) -> u32 {
    (e & SLOT_MASK) - 1
}

impl IdIndex {
    /// Where `h`'s probe starts: its low 32 bits scaled to the length.
    fn home(&self, h: u64) -> usize {
        (((h & 0xFFFF_FFFF) * self.entries.len() as u64) >> 32) as usize
    }

    /// The entry after `i`, wrapping.
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.entries.len() {
            0
        } else {
            i + 1
        }
    }

    /// The entry an id's probe starts at, for prefetching.
    pub(crate) fn probe_start(&self, h: u64) -> Option<&u32> {
        self.entries.get(self.home(h))
    }

    /// The first slot, in probe order, whose entry carries `h`'s tag and
    /// that `eq` accepts: the one holding the id, if `eq` compares ids.
    pub(crate) fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(h);
        let mut i = self.home(h);
        // Ends at an empty entry: the load stays under 1, so there is one.
        loop {
            let e = *self.entries.get(i)?;
            if e == EMPTY {
                return None;
            }
            if e >> SLOT_BITS == t && eq(entry_slot(e)) {
                return Some(entry_slot(e));
            }
            i = self.next(i);
        }
    }

    /// Adds `slot` under hash `h`; `rehash` gives the hash of a slot already
    /// present, for growing. A slot over [`MAX_SLOT`] is refused (false).
    pub(crate) fn insert(&mut self, h: u64, slot: u32, rehash: impl Fn(u32) -> u64) -> bool {
        if slot > MAX_SLOT {
            return false;
        }
        if (self.len + 1) * LOAD_DEN > self.entries.len() * LOAD_NUM {
            self.grow(rehash);
        }
        let e = entry(h, slot);
        self.place(h, e);
        self.len += 1;
        true
    }

    fn place(&mut self, h: u64, e: u32) {
        let mut i = self.home(h);
        while self.entries[i] != EMPTY {
            i = self.next(i);
        }
        self.entries[i] = e;
    }

    fn grow(&mut self, rehash: impl Fn(u32) -> u64) {
        let size = (self.entries.len() * GROW_NUM / GROW_DEN).max(16);
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; size]);
        for e in old.into_iter().filter(|&e| e != EMPTY) {
            self.place(rehash(entry_slot(e)), e);
        }
    }

    /// Removes `slot`, stored under hash `h`. Later entries of the cluster
    /// shift back into the hole (no tombstones), so `rehash` must still
    /// answer for every slot present.
    pub(crate) fn remove(&mut self, h: u64, slot: u32, rehash: impl Fn(u32) -> u64) -> bool {
        let (target, len, home) = (entry(h, slot), self.entries.len(), self.home(h));
        let Some(mut hole) = (0..len)
            .map(|k| (home + k) % len)
            .take_while(|&i| self.entries[i] != EMPTY)
            .find(|&i| self.entries[i] == target)
        else {
            return false;
        };
        let mut j = hole;
        loop {
            j = self.next(j);
            let e = self.entries[j];
            if e == EMPTY {
                break;
            }
            // An entry may fill the hole unless its home lies cyclically in
            // (hole, j]: then moving it before its home would lose it.
            let home = self.home(rehash(entry_slot(e)));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.entries[hole] = e;
                hole = j;
            }
        }
        self.entries[hole] = EMPTY;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Deliberately poor hashes (few distinct homes and tags) so clusters
    /// wrap and collide.
    fn h(key: u32) -> u64 {
        let x = u64::from(key % 37);
        x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (x << 56)
    }

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u32..200), 0..600)) {
            // Each key is its own slot, so `h` is also the rehash.
            let mut index = IdIndex::default();
            let mut model = BTreeSet::new();
            for (add, key) in ops {
                if add && !model.contains(&key) {
                    prop_assert!(index.insert(h(key), key, h));
                    model.insert(key);
                } else if !add && model.contains(&key) {
                    prop_assert!(index.remove(h(key), key, h));
                    model.remove(&key);
                }
                prop_assert_eq!(index.len, model.len());
                for key in 0..200u32 {
                    let found = index.find(h(key), |s| s == key).is_some();
                    prop_assert_eq!(found, model.contains(&key), "key {}", key);
                }
            }
        }
    }
}
