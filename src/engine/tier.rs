//! Dynamic ABC tiers: exact rank thresholds without sorting everyone.
//!
//! Customers with positive monetary sit in log-spaced bins (256 per power of
//! two, so a bin spans 0.27% of value). A recompute walks the bins from the
//! top to find the bin holding rank k, then selects exactly inside that one
//! bin. Only customers between the old and new threshold can change tier, so
//! only their bins are revisited. Cost per recompute: O(bins + boundary bins),
//! not O(N log N).

use serde::{Deserialize, Serialize};

use super::alert::Alert;
use super::customer::Customer;
use super::event::Ts;
use super::reconcile::Scope;

/// A value tier (ABC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum Tier {
    /// Key customers: the top `tiers.a_percent` by spend.
    A,
    /// Major customers: the next `tiers.b_percent`.
    B,
    /// Everyone else.
    #[default]
    C,
}

impl Tier {
    /// Every tier, A first.
    pub const ALL: [Tier; 3] = [Tier::A, Tier::B, Tier::C];

    /// The JSON and label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::A => "A",
            Tier::B => "B",
            Tier::C => "C",
        }
    }

    /// Position in per-tier arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Monetary needed for A and B; `INFINITY` while nobody qualifies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Monetary needed for tier A.
    pub a: f64,
    /// Monetary needed for tier B.
    pub b: f64,
}

impl Thresholds {
    /// Nobody qualifies for A or B yet.
    pub const NONE: Thresholds = Thresholds {
        a: f64::INFINITY,
        b: f64::INFINITY,
    };

    /// Ties at a boundary go up; zero or negative monetary is always C.
    pub fn classify(&self, monetary: f64) -> Tier {
        if monetary <= 0.0 {
            Tier::C
        } else if monetary >= self.a {
            Tier::A
        } else if monetary >= self.b {
            Tier::B
        } else {
            Tier::C
        }
    }
}

const BINS_PER_OCTAVE: i64 = 256;
const MIN_EXP: i64 = -20;
const MAX_EXP: i64 = 40;
const BIN_COUNT: usize = ((MAX_EXP - MIN_EXP) * BINS_PER_OCTAVE) as usize + 2;
const NO_BIN: u16 = u16::MAX;

fn bin_of(m: f64) -> u16 {
    if m <= 0.0 || m.is_nan() {
        return NO_BIN;
    }
    // Positive f64 bit patterns order like their values; exponent plus the
    // top 8 mantissa bits give 256 equal-ratio steps per octave.
    let bits = m.to_bits() as i64;
    let exp = (bits >> 52) - 1023;
    if exp < MIN_EXP {
        return 0;
    }
    if exp >= MAX_EXP {
        return (BIN_COUNT - 1) as u16;
    }
    let frac = (bits >> 44) & 0xff;
    (1 + (exp - MIN_EXP) * BINS_PER_OCTAVE + frac) as u16
}

/// A customer's place in the rank index.
#[derive(Debug, Clone, Copy)]
struct Rank {
    pos: u32,
    bin: u16,
}

impl Rank {
    const NONE: Rank = Rank {
        pos: 0,
        bin: NO_BIN,
    };
}

fn octave(bin: u16) -> usize {
    bin as usize / BINS_PER_OCTAVE as usize
}

/// The monetary rank index. Keyed by the engine's compact customer index;
/// the per-customer bin and position live here, not in the customer, so
/// moving one customer never touches another's record.
#[derive(Debug)]
pub struct TierIndex {
    bins: Vec<Vec<u32>>,
    /// Members per run of [`BINS_PER_OCTAVE`] bins, so finding a rank walks
    /// ~60 counters and one octave's bins instead of every bin.
    octaves: Vec<usize>,
    /// Each customer's bin and position in it, side by side: a purchase
    /// reads both.
    rank: Vec<Rank>,
    positive: usize,
    counts: [u64; 3],
}

impl Default for TierIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl TierIndex {
    /// An empty rank index.
    pub fn new() -> Self {
        Self {
            bins: vec![Vec::new(); BIN_COUNT],
            octaves: vec![0; BIN_COUNT.div_ceil(BINS_PER_OCTAVE as usize)],
            rank: Vec::new(),
            positive: 0,
            counts: [0; 3],
        }
    }

    /// Registers a new customer (monetary 0, tier C).
    pub fn insert(&mut self, idx: u32) {
        let i = idx as usize;
        if self.rank.len() <= i {
            self.rank.resize(i + 1, Rank::NONE);
        }
        self.rank[i] = Rank::NONE;
        self.counts[Tier::C.index()] += 1;
    }

    /// Forgets a customer that left this instance.
    pub fn remove(&mut self, idx: u32, tier: Tier) {
        self.place(idx, 0.0);
        self.counts[tier.index()] -= 1;
    }

    /// Records a customer's monetary value.
    pub fn place(&mut self, idx: u32, monetary: f64) {
        let i = idx as usize;
        let new = bin_of(monetary);
        let Rank { bin: old, pos } = self.rank[i];
        if old == new {
            return;
        }
        if old != NO_BIN {
            let members = &mut self.bins[old as usize];
            let p = pos as usize;
            members.swap_remove(p);
            if let Some(&moved) = members.get(p) {
                self.rank[moved as usize].pos = pos;
            }
            self.octaves[octave(old)] -= 1;
            self.positive -= 1;
        }
        let mut pos = 0;
        if new != NO_BIN {
            let members = &mut self.bins[new as usize];
            pos = members.len() as u32;
            members.push(idx);
            self.octaves[octave(new)] += 1;
            self.positive += 1;
        }
        self.rank[i] = Rank { bin: new, pos };
    }

    /// Requests a customer's rank position from memory (see
    /// [`super::Engine::prefetch`]).
    pub fn prefetch(&self, idx: u32) {
        if let Some(r) = self.rank.get(idx as usize) {
            super::ids::prefetch(r, 1);
        }
    }

    /// Requests what moving the customer out of its bin touches: its own
    /// entry and the bin's last (which takes its place). Reads the position
    /// [`Self::prefetch`] requested, so call it once that has run for the
    /// whole batch.
    pub fn prefetch_members(&self, idx: u32) {
        let Some(&Rank { bin, pos }) = self.rank.get(idx as usize) else {
            return;
        };
        if let Some(members) = self.bins.get(bin as usize) {
            if let Some(m) = members.get(pos as usize) {
                super::ids::prefetch(m, 1);
            }
            if let Some(m) = members.last() {
                super::ids::prefetch(m, 1);
            }
        }
    }

    /// Keeps the per-tier counts in step with a customer's tier change.
    pub fn moved(&mut self, from: Tier, to: Tier) {
        self.counts[from.index()] -= 1;
        self.counts[to.index()] += 1;
    }

    /// Customers per tier, indexed by [`Tier::index`].
    pub fn counts(&self) -> [u64; 3] {
        self.counts
    }

    /// Customers with positive monetary (the ranked population).
    pub fn ranked(&self) -> usize {
        self.positive
    }

    /// Exact thresholds for the configured shares; `monetary` reads a
    /// customer's current value (called only for boundary-bin members).
    pub fn thresholds(
        &self,
        a_percent: f64,
        b_percent: f64,
        monetary: impl Fn(u32) -> f64,
    ) -> Thresholds {
        let n = self.positive as f64;
        let rank = |pct: f64| ((n * pct / 100.0) - 1e-9).ceil().max(0.0) as usize;
        Thresholds {
            a: self.value_at_rank(rank(a_percent), &monetary),
            b: self.value_at_rank(rank(a_percent + b_percent), &monetary),
        }
    }

    /// Monetary of the customer at 1-based rank `k`, descending.
    fn value_at_rank(&self, k: usize, monetary: &impl Fn(u32) -> f64) -> f64 {
        if k == 0 || k > self.positive {
            return f64::INFINITY;
        }
        let mut above = 0;
        let per = BINS_PER_OCTAVE as usize;
        for (o, &count) in self.octaves.iter().enumerate().rev() {
            if above + count < k {
                above += count;
                continue;
            }
            let bins = &self.bins[o * per..((o + 1) * per).min(BIN_COUNT)];
            for members in bins.iter().rev() {
                if above + members.len() >= k {
                    let mut values: Vec<f64> = members.iter().map(|&i| monetary(i)).collect();
                    let nth = k - above - 1;
                    values.select_nth_unstable_by(nth, |x, y| y.total_cmp(x));
                    return values[nth];
                }
                above += members.len();
            }
        }
        f64::INFINITY
    }

    /// Customers whose monetary lies in the closed range `[lo, hi]`, bin by
    /// bin (callers filter exactly); the ones a threshold move can re-tier.
    pub fn between(&self, lo: f64, hi: f64) -> impl Iterator<Item = u32> + '_ {
        let range = if hi > 0.0 && lo <= hi {
            let first = if lo <= 0.0 { 0 } else { bin_of(lo) as usize };
            first..bin_of(hi) as usize + 1
        } else {
            0..0
        };
        self.bins[range].iter().flat_map(|m| m.iter().copied())
    }
}

/// The engine's recomputes: thresholds from the population, and the
/// customers they move.
impl super::Engine {
    /// Under the wall clock, recomputes early once the population moved by
    /// more than `tiers.recompute_change` (or a restore asked for it); the
    /// hourly schedule stays as it was.
    pub(super) fn recompute_if_moved(&mut self, t: Ts, out: &mut Vec<Alert>) {
        let c = &self.core;
        let Some(change) = c.settings.recompute_change.filter(|_| c.on_wall_clock()) else {
            return;
        };
        let moved = |now: f64, then: f64| (now - then).abs() > change * then.max(1.0);
        let (purchases, then) = c.purchases;
        if c.recompute_soon
            || moved(purchases as f64, then as f64)
            || moved(c.tiers.ranked() as f64, c.ranked_at_recompute as f64)
        {
            self.recompute(t, out, false);
        }
    }

    /// Recomputes tier thresholds at `t` and re-tiers the customers they
    /// move; `scheduled`: the hourly one, which schedules the next.
    pub(super) fn recompute(&mut self, t: Ts, out: &mut Vec<Alert>, scheduled: bool) {
        let core = &mut self.core;
        if scheduled {
            core.next_recompute = Some(Ts(t.0 + core.settings.recompute_ms));
            self.forget_idle(t);
        }
        let core = &mut self.core;
        core.stats.recomputes += 1;
        core.purchases.1 = core.purchases.0;
        core.ranked_at_recompute = core.tiers.ranked();
        core.recompute_soon = false;
        let inner = self.store.inner();
        let epoch = core.settings.windows.monetary.index(t.0);
        let rollover = core.monetary_epoch.is_some_and(|e| e != epoch);
        core.monetary_epoch = Some(epoch);
        if rollover {
            // Old spend left the window for everyone: rebuild the index.
            core.stats.monetary_rollovers += 1;
            inner.customers.for_each_mut(|idx, c| {
                c.monetary.rotate(epoch);
                core.tiers.place(idx, c.monetary_total());
            });
            core.dirty = true;
        }
        if !core.dirty {
            return;
        }
        core.dirty = false;
        let old = core.thresholds;
        let new = core
            .tiers
            .thresholds(core.settings.a_percent, core.settings.b_percent, |i| {
                inner
                    .customers
                    .read(i, Customer::monetary_total)
                    .unwrap_or(0.0)
            });
        core.thresholds = new;
        *inner.thresholds.write() = new;
        let scope = &mut Scope {
            roster: &inner.roster,
            inner,
            out,
            since: None,
        };
        if rollover {
            inner
                .customers
                .for_each_mut(|idx, c| core.retier(c, idx, t, scope));
        } else if old != new {
            let span = |x: f64, y: f64| (x.min(y), x.max(y));
            let (a_lo, a_hi) = span(old.a, new.a);
            let (b_lo, b_hi) = span(old.b, new.b);
            let mut moved: Vec<u32> = core
                .tiers
                .between(a_lo, a_hi)
                .chain(core.tiers.between(b_lo, b_hi))
                .collect();
            moved.sort_unstable();
            moved.dedup();
            for idx in moved {
                if let Some(mut c) = inner.customers.get_mut(idx) {
                    core.retier(&mut c, idx, t, scope);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn thresholds_equal_a_full_sort(values in proptest::collection::vec(0.0f64..1e6, 0..300)) {
            let mut idx = TierIndex::new();
            for (i, v) in values.iter().enumerate() {
                idx.insert(i as u32);
                idx.place(i as u32, *v);
            }
            let got = idx.thresholds(5.0, 15.0, |i| values[i as usize]);
            let mut sorted: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let n = sorted.len();
            let at = |k: usize| if k == 0 { f64::INFINITY } else { sorted[k - 1] };
            prop_assert_eq!(got.a, at((n * 5).div_ceil(100)));
            prop_assert_eq!(got.b, at((n * 20).div_ceil(100)));
        }

        #[test]
        fn bins_are_monotone(a in 1e-9f64..1e15, b in 1e-9f64..1e15) {
            if a <= b {
                prop_assert!(bin_of(a) <= bin_of(b));
            }
        }
    }

    #[test]
    fn ties_go_up_and_nonpositive_is_c() {
        let t = Thresholds { a: 100.0, b: 50.0 };
        assert_eq!(t.classify(100.0), Tier::A);
        assert_eq!(t.classify(99.0), Tier::B);
        assert_eq!(t.classify(50.0), Tier::B);
        assert_eq!(t.classify(49.0), Tier::C);
        assert_eq!(Thresholds { a: 0.0, b: 0.0 }.classify(0.0), Tier::C);
    }

    #[test]
    fn moving_a_customer_keeps_positions_consistent() {
        let mut idx = TierIndex::new();
        for i in 0..4 {
            idx.insert(i);
            idx.place(i, 10.0);
        }
        idx.place(1, 1000.0);
        idx.place(0, 0.0);
        let mut in_range: Vec<u32> = idx.between(10.0, 10.0).collect();
        in_range.sort();
        assert_eq!(in_range, vec![2, 3]);
        assert_eq!(
            idx.between(500.0, f64::INFINITY).collect::<Vec<_>>(),
            vec![1]
        );
    }
}
