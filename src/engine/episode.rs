//! Open alert episodes: which checks are firing for which customer since
//! when, in the order `/alerts` lists them.

use dashmap::DashMap;
use parking_lot::RwLock;
use rustc_hash::FxBuildHasher;

use super::customer::Customer;
use super::event::Ts;
use super::rule::Check;

/// The open episodes, by key and in listing order (newest first), so a
/// page of `/alerts` is a range walk instead of a copy and sort of every
/// open episode. Episodes open and close far less often than events
/// arrive; both structures change together under the order's lock.
#[derive(Debug, Default)]
pub(crate) struct Episodes {
    by_key: DashMap<(u32, Check), Ts, FxBuildHasher>,
    pub(super) order: RwLock<std::collections::BTreeSet<EpisodeKey>>,
}

/// An episode's place in the listing: newest first, then customer index
/// and check (a stable total order, so a cursor resumes exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EpisodeKey {
    /// Firing time, newest first.
    pub fired_at: std::cmp::Reverse<Ts>,
    /// The customer's record index.
    pub customer: u32,
    /// The firing check.
    pub check: Check,
}

impl Episodes {
    pub(crate) fn get(&self, key: &(u32, Check)) -> Option<Ts> {
        self.by_key.get(key).map(|t| *t)
    }

    pub(crate) fn insert(&self, key: (u32, Check), at: Ts) {
        let mut order = self.order.write();
        if let Some(old) = self.by_key.insert(key, at) {
            order.remove(&EpisodeKey::new(key, old));
        }
        order.insert(EpisodeKey::new(key, at));
    }

    pub(crate) fn remove(&self, key: &(u32, Check)) -> Option<Ts> {
        let mut order = self.order.write();
        let (_, at) = self.by_key.remove(key)?;
        order.remove(&EpisodeKey::new(*key, at));
        Some(at)
    }
}

impl EpisodeKey {
    fn new((customer, check): (u32, Check), at: Ts) -> Self {
        Self {
            fired_at: std::cmp::Reverse(at),
            customer,
            check,
        }
    }
}

/// One open alert episode, as listed by [`super::store::Store::active_alerts`].
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveEpisode {
    /// The customer as it is now.
    pub customer: Customer,
    /// The firing check.
    pub check: Check,
    /// When the episode fired.
    pub fired_at: Ts,
}
