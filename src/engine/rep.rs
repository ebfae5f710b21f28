//! The rep roster: interned rep ids and who has departed.
//!
//! Reps are few (thousands) next to customers (millions), so customers hold
//! a 4-byte [`RepIdx`] and the names live here once. The roster holds at
//! most 2^24 - 1 reps (16.7 million, far beyond any sales force: only
//! hostile input gets there); calls by reps beyond that still count as
//! contacts but change no account rep (see [`super::customer::Customer::call`]).

use super::alert::Alert;
use super::event::{RepKey, RepStatus, Ts};
use super::ids::{IdHasher, IdIndex, prefetch};
use super::reconcile::Scope;
use super::rule::Point;

/// Compact index of an interned rep id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RepIdx(pub u32);

#[derive(Debug, Clone, PartialEq)]
struct RepEntry {
    id: RepKey,
    departed_at: Option<Ts>,
}

/// The interned reps and who has departed.
#[derive(Debug, Default)]
pub struct Roster {
    /// Slots of `reps`, found by the id's hash.
    index: IdIndex,
    hasher: IdHasher,
    reps: Vec<RepEntry>,
}

impl Roster {
    /// An empty roster hashing ids with `seed` (see [`IdHasher`]).
    pub(crate) fn seeded(seed: u64) -> Self {
        Self {
            hasher: IdHasher::new(seed),
            ..Self::default()
        }
    }

    /// The index of `id`, interning it on first sight; `None` when the
    /// roster is full.
    pub fn intern(&mut self, id: &RepKey) -> Option<RepIdx> {
        let h = self.hasher.hash(id);
        if let Some(idx) = self.find(h, id) {
            return Some(idx);
        }
        let slot = u32::try_from(self.reps.len()).ok()?;
        let (reps, hasher) = (&self.reps, self.hasher);
        if !self.index.insert(h, slot, |s| {
            reps.get(s as usize).map_or(0, |r| hasher.hash(&r.id))
        }) {
            return None;
        }
        self.reps.push(RepEntry {
            id: id.clone(),
            departed_at: None,
        });
        Some(RepIdx(slot))
    }

    /// The index of a known rep.
    pub fn lookup(&self, id: &str) -> Option<RepIdx> {
        self.find(self.hasher.hash(id), id)
    }

    fn find(&self, h: u64, id: &str) -> Option<RepIdx> {
        self.index
            .find(h, |s| self.reps.get(s as usize).is_some_and(|r| r.id == id))
            .map(RepIdx)
    }

    /// Requests the entry a lookup of `id` will read (see
    /// [`super::Engine::prefetch`]).
    pub fn prefetch(&self, id: &str) {
        if let Some(r) = self
            .index
            .find(self.hasher.hash(id), |_| true)
            .and_then(|s| self.reps.get(s as usize))
        {
            prefetch(r, 1);
        }
    }

    /// A rep's id.
    pub fn name(&self, idx: RepIdx) -> Option<&RepKey> {
        self.reps.get(idx.0 as usize).map(|r| &r.id)
    }

    /// Whether the rep has departed.
    pub fn is_departed(&self, idx: RepIdx) -> bool {
        self.reps
            .get(idx.0 as usize)
            .is_some_and(|r| r.departed_at.is_some())
    }

    /// Records a roster event; returns true if the rep's status changed.
    pub fn set_departed(&mut self, idx: RepIdx, departed_at: Option<Ts>) -> bool {
        match self.reps.get_mut(idx.0 as usize) {
            Some(r) if r.departed_at.is_some() != departed_at.is_some() => {
                r.departed_at = departed_at;
                true
            }
            _ => false,
        }
    }

    /// Rep ids and departure times in index order.
    pub fn entries(&self) -> impl Iterator<Item = (&RepKey, Option<Ts>)> {
        self.reps.iter().map(|r| (&r.id, r.departed_at))
    }

    /// Reps known.
    pub fn len(&self) -> usize {
        self.reps.len()
    }

    /// Whether no rep is known.
    pub fn is_empty(&self) -> bool {
        self.reps.is_empty()
    }
}

/// The roster side of the engine.
impl super::Engine {
    /// Applies a roster change at `t` (event time `ts`) and re-evaluates
    /// only the rep's customers.
    pub(super) fn roster_event(
        &mut self,
        rep: &RepKey,
        status: RepStatus,
        t: Ts,
        ts: Ts,
        out: &mut Vec<Alert>,
    ) {
        let inner = self.store.inner();
        let departed = (status == RepStatus::Departed).then_some(t);
        let changed = {
            let mut roster = inner.roster.write();
            // A rep the full roster cannot hold is nobody's account rep.
            roster
                .intern(rep)
                .filter(|&idx| roster.set_departed(idx, departed))
        };
        let Some(rep_idx) = changed else { return };
        let scope = &mut Scope {
            roster: &inner.roster,
            inner,
            out,
            since: self.core.since(ts),
        };
        // A scan of everyone, where an index of each rep's customers cost
        // 4.9 bytes per customer (issue #29's memory budget) and upkeep on
        // every handoff, for departures a sales force has a few of a week:
        // a scan of a million records takes tens of milliseconds.
        let core = &mut self.core;
        inner.customers.for_each_mut(|idx, c| {
            if c.account_rep.get() == Some(rep_idx) {
                core.reconcile(c, idx, t, Point::Before, scope);
                core.reconcile(c, idx, t, Point::Roster, scope);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departures_are_answered_as_recorded() {
        let mut roster = Roster::default();
        let reps: Vec<RepIdx> = (0..200)
            .filter_map(|i| roster.intern(&format!("R{i}").into()))
            .collect();
        assert_eq!(roster.len(), 200);
        assert_eq!(roster.intern(&"R7".into()), Some(reps[7]), "interned once");
        for (i, &r) in reps.iter().enumerate() {
            if i % 3 == 0 {
                assert!(roster.set_departed(r, Some(Ts(i as i64))));
            }
        }
        assert!(roster.set_departed(reps[63], None), "back from departure");
        assert!(!roster.set_departed(reps[64], None), "never departed");
        for ((id, departed_at), &r) in roster.entries().zip(&reps) {
            assert_eq!(roster.is_departed(r), departed_at.is_some(), "{id}");
            assert_eq!(roster.lookup(id), Some(r));
        }
        assert!(roster.is_departed(reps[0]) && !roster.is_departed(reps[63]));
        assert!(
            !roster.is_departed(RepIdx(5000)),
            "unknown reps are not departed"
        );
    }
}
