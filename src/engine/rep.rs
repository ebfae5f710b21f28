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

/// Which customers each rep is the account rep of (customers by compact
/// index), kept as account reps change, so a departure reconciles that
/// rep's customers only instead of scanning everyone. A rep's list is
/// unordered; removal scans it, which costs one rep's book per handoff.
#[derive(Debug, Default)]
pub struct RepCustomers {
    by_rep: Vec<Vec<u32>>,
}

impl RepCustomers {
    /// Customer `customer`'s account rep changed from `from` to `to`.
    pub fn moved(&mut self, customer: u32, from: Option<RepIdx>, to: Option<RepIdx>) {
        if let Some(list) = from.and_then(|r| self.by_rep.get_mut(r.0 as usize))
            && let Some(pos) = list.iter().position(|&c| c == customer)
        {
            list.swap_remove(pos);
        }
        if let Some(r) = to {
            let i = r.0 as usize;
            if self.by_rep.len() <= i {
                self.by_rep.resize_with(i + 1, Vec::new);
            }
            super::lean::push(&mut self.by_rep[i], customer);
        }
    }

    /// The customers `rep` serves, in no particular order.
    pub fn of(&self, rep: RepIdx) -> &[u32] {
        self.by_rep.get(rep.0 as usize).map_or(&[], Vec::as_slice)
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
        // Only this rep's customers, in the order a full scan would visit
        // them (so alerts come out as they always did).
        let mut served = self.core.rep_customers.of(rep_idx).to_vec();
        served.sort_unstable_by_key(|&idx| super::store::scan_order(idx));
        for idx in served {
            if let Some(mut c) = inner.customers.get_mut(idx) {
                self.core.reconcile(&mut c, idx, t, Point::Before, scope);
                self.core.reconcile(&mut c, idx, t, Point::Roster, scope);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rep_customers_follow_handoffs_and_evictions() {
        let mut index = RepCustomers::default();
        let (r1, r2) = (RepIdx(1), RepIdx(7));
        for c in 0..5 {
            index.moved(c, None, Some(r1));
        }
        index.moved(2, Some(r1), Some(r2));
        index.moved(4, Some(r1), None);
        let mut of_r1 = index.of(r1).to_vec();
        of_r1.sort_unstable();
        assert_eq!(of_r1, vec![0, 1, 3]);
        assert_eq!(index.of(r2), &[2]);
        assert_eq!(
            index.of(RepIdx(3)),
            &[] as &[u32],
            "a rep with no customers"
        );
        assert_eq!(index.of(RepIdx(99)), &[] as &[u32], "a rep never seen");
    }

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
