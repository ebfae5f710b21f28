//! The rep roster: interned rep ids and who has departed.
//!
//! Reps are few (thousands) next to customers (millions), so customers hold
//! a 4-byte [`RepIdx`] and the names live here once.

use rustc_hash::FxHashMap;

use super::event::{RepKey, Ts};

/// Compact index of an interned rep id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RepIdx(pub u32);

#[derive(Debug, Clone, PartialEq)]
struct RepEntry {
    id: RepKey,
    departed_at: Option<Ts>,
}

#[derive(Debug, Default)]
pub struct Roster {
    index: FxHashMap<RepKey, RepIdx>,
    reps: Vec<RepEntry>,
}

impl Roster {
    /// The index of `id`, interning it on first sight.
    pub fn intern(&mut self, id: &RepKey) -> RepIdx {
        if let Some(&idx) = self.index.get(id) {
            return idx;
        }
        let idx = RepIdx(self.reps.len() as u32);
        self.reps.push(RepEntry {
            id: id.clone(),
            departed_at: None,
        });
        self.index.insert(id.clone(), idx);
        idx
    }

    pub fn lookup(&self, id: &str) -> Option<RepIdx> {
        self.index.get(id).copied()
    }

    pub fn name(&self, idx: RepIdx) -> Option<&RepKey> {
        self.reps.get(idx.0 as usize).map(|r| &r.id)
    }

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

    pub fn len(&self) -> usize {
        self.reps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reps.is_empty()
    }
}
