//! The sharded customer store: a cheap-to-clone handle that the engine
//! writes and the HTTP API, metrics and snapshots read concurrently.
//!
//! Callers never see a shard guard: reads return copies, so no lock is held
//! across an `.await` or while another map is touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use parking_lot::RwLock;
use rustc_hash::FxBuildHasher;

use super::customer::Customer;
use super::event::{CustomerKey, Ts};
use super::rep::{RepIdx, Roster};
use super::rule::Check;

#[derive(Debug, Clone, Default)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// Customer id → compact index; timers and the tier index use the index.
    pub(crate) ids: DashMap<CustomerKey, u32, FxBuildHasher>,
    pub(crate) customers: DashMap<u32, Customer, FxBuildHasher>,
    /// Firing time of every open episode, keyed by customer and check; the
    /// alert id of its resolution is derived from it.
    pub(crate) episodes: DashMap<(u32, Check), Ts, FxBuildHasher>,
    pub(crate) roster: RwLock<Roster>,
    /// The engine's watermark in ms (`i64::MIN` before the first), so
    /// readers compute rolling numbers as of engine time.
    pub(crate) watermark: AtomicI64,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            ids: DashMap::default(),
            customers: DashMap::default(),
            episodes: DashMap::default(),
            roster: RwLock::default(),
            watermark: AtomicI64::new(i64::MIN),
        }
    }
}

/// One open alert episode, as listed by [`Store::active_alerts`].
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveEpisode {
    pub customer: Customer,
    pub check: Check,
    pub fired_at: Ts,
}

impl Store {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The engine's watermark, if it has one.
    pub fn watermark(&self) -> Option<Ts> {
        let w = self.inner.watermark.load(Ordering::Relaxed);
        (w != i64::MIN).then_some(Ts(w))
    }

    /// A copy of the customer's state.
    pub fn customer(&self, id: &str) -> Option<Customer> {
        let idx = *self.inner.ids.get(id)?;
        self.inner.customers.get(&idx).map(|c| c.clone())
    }

    /// Number of customers tracked.
    pub fn len(&self) -> usize {
        self.inner.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.customers.is_empty()
    }

    /// The wire id of a rep.
    pub fn rep_name(&self, rep: RepIdx) -> Option<CustomerKey> {
        self.inner.roster.read().name(rep).cloned()
    }

    pub fn rep_departed(&self, rep: RepIdx) -> bool {
        self.inner.roster.read().is_departed(rep)
    }

    /// Firing time of the customer's open episode of `check`.
    pub fn episode(&self, id: &str, check: Check) -> Option<Ts> {
        let idx = *self.inner.ids.get(id)?;
        self.inner.episodes.get(&(idx, check)).map(|t| *t)
    }

    /// Every open episode (a copy); cost is proportional to open episodes.
    pub fn active_alerts(&self) -> Vec<ActiveEpisode> {
        let keys: Vec<((u32, Check), Ts)> = self
            .inner
            .episodes
            .iter()
            .map(|e| (*e.key(), *e.value()))
            .collect();
        keys.into_iter()
            .filter_map(|((idx, check), fired_at)| {
                let customer = self.inner.customers.get(&idx)?.clone();
                Some(ActiveEpisode {
                    customer,
                    check,
                    fired_at,
                })
            })
            .collect()
    }
}
