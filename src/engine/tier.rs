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
/// Rank bins in all (and the one past the last for values beyond range).
pub(super) const BIN_COUNT: usize = ((MAX_EXP - MIN_EXP) * BINS_PER_OCTAVE) as usize + 2;
const NO_BIN: u16 = u16::MAX;

pub(super) fn bin_of(m: f64) -> u16 {
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

/// The 1-based rank, descending, of the last customer within the top
/// `pct` percent of `ranked` customers (0: nobody).
pub(super) fn rank_of(ranked: usize, pct: f64) -> usize {
    ((ranked as f64 * pct / 100.0) - 1e-9).ceil().max(0.0) as usize
}

/// A customer's place in the rank index: its bin and position in the bin,
/// in 6 bytes (a `u32` position beside the `u16` would pad to 8). The
/// ranking group is not kept: it is the one whose bin holds the customer
/// at that position, found among the few groups.
#[derive(Debug, Clone, Copy)]
struct Rank {
    bin: u16,
    pos: [u16; 2],
}

impl Rank {
    const NONE: Rank = Rank {
        bin: NO_BIN,
        pos: [0; 2],
    };

    fn new(bin: u16, pos: u32) -> Self {
        Self {
            bin,
            pos: [pos as u16, (pos >> 16) as u16],
        }
    }

    fn pos(self) -> usize {
        usize::from(self.pos[0]) | usize::from(self.pos[1]) << 16
    }
}

fn octave(bin: u16) -> usize {
    bin as usize / BINS_PER_OCTAVE as usize
}

/// One ranking group's bins: a segment ranked on its own, or every
/// segment ranked together.
#[derive(Debug)]
struct Group {
    bins: Vec<Vec<u32>>,
    /// Members per run of [`BINS_PER_OCTAVE`] bins, so finding a rank walks
    /// ~60 counters and one octave's bins instead of every bin.
    octaves: Vec<usize>,
    positive: usize,
}

impl Group {
    fn new() -> Self {
        Self {
            bins: vec![Vec::new(); BIN_COUNT],
            octaves: vec![0; BIN_COUNT.div_ceil(BINS_PER_OCTAVE as usize)],
            positive: 0,
        }
    }
}

/// The monetary rank index. Keyed by the engine's compact customer index;
/// the per-customer bin and position live here, not in the
/// customer, so moving one customer never touches another's record.
/// Customers with zero or negative monetary, and key accounts, are in no
/// bin: they take no rank from anyone.
#[derive(Debug)]
pub struct TierIndex {
    groups: Vec<Group>,
    /// Each customer's bin and position in it, side by side: a purchase
    /// reads both.
    rank: Vec<Rank>,
    /// Customers per segment and tier.
    counts: Vec<[u64; 3]>,
}

impl Default for TierIndex {
    fn default() -> Self {
        Self::new(1, 1)
    }
}

impl TierIndex {
    /// An empty rank index of `groups` ranking groups over `segments`
    /// segments.
    pub fn new(groups: usize, segments: usize) -> Self {
        Self {
            groups: (0..groups.max(1)).map(|_| Group::new()).collect(),
            rank: Vec::new(),
            counts: vec![[0; 3]; segments.max(1)],
        }
    }

    /// Registers a new customer of `segment` (monetary 0, tier C).
    pub fn insert(&mut self, idx: u32, segment: u8) {
        let i = idx as usize;
        if self.rank.len() <= i {
            self.rank.resize(i + 1, Rank::NONE);
        }
        self.rank[i] = Rank::NONE;
        self.counts[usize::from(segment)][Tier::C.index()] += 1;
    }

    /// Forgets a customer that left this instance.
    pub fn remove(&mut self, idx: u32, segment: u8, tier: Tier) {
        self.place(idx, 0, 0.0);
        self.counts[usize::from(segment)][tier.index()] -= 1;
    }

    /// Records a customer's monetary value in ranking group `group` (0 or
    /// less: unranked).
    pub fn place(&mut self, idx: u32, group: usize, monetary: f64) {
        let i = idx as usize;
        let new = bin_of(monetary);
        let r = self.rank[i];
        let old = r.bin;
        let was = self.group_of(idx, r);
        if old == new && (new == NO_BIN || was == Some(group)) {
            return;
        }
        if let Some(was) = was {
            let g = &mut self.groups[was];
            let members = &mut g.bins[old as usize];
            let p = r.pos();
            members.swap_remove(p);
            if let Some(&moved) = members.get(p) {
                self.rank[moved as usize].pos = r.pos;
            }
            g.octaves[octave(old)] -= 1;
            g.positive -= 1;
        }
        let mut pos = 0;
        if new != NO_BIN {
            let g = &mut self.groups[group];
            let members = &mut g.bins[new as usize];
            pos = members.len() as u32;
            super::lean::push(members, idx);
            g.octaves[octave(new)] += 1;
            g.positive += 1;
        }
        self.rank[i] = Rank::new(new, pos);
    }

    /// The ranking group whose bin holds customer `idx` at its place.
    fn group_of(&self, idx: u32, r: Rank) -> Option<usize> {
        if r.bin == NO_BIN {
            return None;
        }
        self.groups
            .iter()
            .position(|g| g.bins[r.bin as usize].get(r.pos()) == Some(&idx))
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
        let Some(&r) = self.rank.get(idx as usize) else {
            return;
        };
        // Every group's bin with room at the position: the one holding the
        // customer is among them, and there are few.
        for g in &self.groups {
            if let Some(members) = g.bins.get(r.bin as usize)
                && let Some(m) = members.get(r.pos())
            {
                super::ids::prefetch(m, 1);
                if let Some(m) = members.last() {
                    super::ids::prefetch(m, 1);
                }
            }
        }
    }

    /// Keeps the per-segment, per-tier counts in step with a customer
    /// moving (segment, tier).
    pub fn moved(&mut self, from: (u8, Tier), to: (u8, Tier)) {
        self.counts[usize::from(from.0)][from.1.index()] -= 1;
        self.counts[usize::from(to.0)][to.1.index()] += 1;
    }

    /// Customers per tier of `segment`, indexed by [`Tier::index`].
    pub fn counts(&self, segment: u8) -> [u64; 3] {
        self.counts[usize::from(segment)]
    }

    /// Customers with positive monetary, key accounts aside (the ranked
    /// population), over every group.
    pub fn ranked(&self) -> usize {
        self.groups.iter().map(|g| g.positive).sum()
    }

    /// Exact thresholds of ranking group `group` for the configured
    /// shares; `monetary` reads a customer's current value (called only
    /// for boundary-bin members).
    pub fn thresholds(
        &self,
        group: usize,
        a_percent: f64,
        b_percent: f64,
        monetary: impl Fn(u32) -> f64,
    ) -> Thresholds {
        let g = &self.groups[group];
        let n = g.positive;
        Thresholds {
            a: g.value_at_rank(rank_of(n, a_percent), &monetary),
            b: g.value_at_rank(rank_of(n, a_percent + b_percent), &monetary),
        }
    }

    /// The ranking group and bin of customer `idx`, if it is ranked.
    pub fn placed(&self, idx: u32) -> Option<(usize, u16)> {
        let r = *self.rank.get(idx as usize)?;
        Some((self.group_of(idx, r)?, r.bin))
    }

    /// Customers of ranking group `group` whose monetary lies in the closed
    /// range `[lo, hi]`, bin by bin (callers filter exactly); the ones a
    /// threshold move can re-tier.
    pub fn between(&self, group: usize, lo: f64, hi: f64) -> impl Iterator<Item = u32> + '_ {
        let range = if hi > 0.0 && lo <= hi {
            let first = if lo <= 0.0 { 0 } else { bin_of(lo) as usize };
            first..bin_of(hi) as usize + 1
        } else {
            0..0
        };
        self.groups[group].bins[range]
            .iter()
            .flat_map(|m| m.iter().copied())
    }
}

impl Group {
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
                core.rank(idx, c);
            });
            core.dirty = true;
        }
        if !core.dirty {
            return;
        }
        core.dirty = false;
        let scope = &mut Scope {
            roster: &inner.roster,
            inner,
            out,
            since: None,
        };
        let mut moved: Vec<u32> = Vec::new();
        for group in 0..core.segments.groups() {
            let old = core.thresholds[group];
            let new = match &core.given {
                Some(given) => given[group],
                None => core.tiers.thresholds(
                    group,
                    core.settings.a_percent,
                    core.settings.b_percent,
                    |i| {
                        inner
                            .customers
                            .read(i, Customer::monetary_total)
                            .unwrap_or(0.0)
                    },
                ),
            };
            core.thresholds[group] = new;
            if old != new && !rollover {
                let span = |x: f64, y: f64| (x.min(y), x.max(y));
                let (a_lo, a_hi) = span(old.a, new.a);
                let (b_lo, b_hi) = span(old.b, new.b);
                moved.extend(
                    core.tiers
                        .between(group, a_lo, a_hi)
                        .chain(core.tiers.between(group, b_lo, b_hi)),
                );
            }
        }
        core.publish_thresholds(inner);
        if rollover {
            inner
                .customers
                .for_each_mut(|idx, c| core.retier(c, idx, t, scope));
        } else {
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
            let mut idx = TierIndex::new(1, 1);
            for (i, v) in values.iter().enumerate() {
                idx.insert(i as u32, 0);
                idx.place(i as u32, 0, *v);
            }
            let got = idx.thresholds(0, 5.0, 15.0, |i| values[i as usize]);
            let mut sorted: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let n = sorted.len();
            let at = |k: usize| if k == 0 { f64::INFINITY } else { sorted[k - 1] };
            prop_assert_eq!(got.a, at((n * 5).div_ceil(100)));
            prop_assert_eq!(got.b, at((n * 20).div_ceil(100)));
        }

        /// Customers moving between groups and bins, often to the same
        /// bin of another group, are found where a plain map puts them.
        #[test]
        fn places_across_groups_equal_a_map(
            moves in proptest::collection::vec((0u32..40, 0usize..3, 0u8..4), 0..400)
        ) {
            let values = [0.0, 10.0, 10.5, 2000.0];
            let mut idx = TierIndex::new(3, 1);
            let mut model = std::collections::BTreeMap::new();
            for i in 0..40 {
                idx.insert(i, 0);
            }
            for (i, group, v) in moves {
                let v = values[usize::from(v)];
                idx.place(i, group, v);
                if v > 0.0 {
                    model.insert(i, (group, bin_of(v)));
                } else {
                    model.remove(&i);
                }
            }
            for i in 0..40 {
                prop_assert_eq!(idx.placed(i), model.get(&i).copied());
            }
            for group in 0..3 {
                let mut got: Vec<u32> = idx.between(group, 1.0, 1e6).collect();
                got.sort_unstable();
                let want: Vec<u32> = model
                    .iter()
                    .filter(|(_, (g, _))| *g == group)
                    .map(|(i, _)| *i)
                    .collect();
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(idx.ranked(), model.len());
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
        let mut idx = TierIndex::new(2, 2);
        for i in 0..4 {
            idx.insert(i, 0);
            idx.place(i, 0, 10.0);
        }
        idx.place(1, 0, 1000.0);
        idx.place(0, 0, 0.0);
        let mut in_range: Vec<u32> = idx.between(0, 10.0, 10.0).collect();
        in_range.sort();
        assert_eq!(in_range, vec![2, 3]);
        assert_eq!(
            idx.between(0, 500.0, f64::INFINITY).collect::<Vec<_>>(),
            vec![1]
        );
        idx.place(2, 1, 10.0);
        assert_eq!(idx.between(0, 10.0, 10.0).collect::<Vec<_>>(), vec![3]);
        assert_eq!(idx.between(1, 10.0, 10.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(idx.ranked(), 3);
    }
}
