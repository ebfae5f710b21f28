//! Group-wide tiers: when the consumer group splits the input partitions
//! over several instances, each holds only some customers, and its own top
//! 5% is not the group's. Each partition's owner publishes a
//! [`TierSummary`] of that partition's ranked customers; every instance
//! merges the latest summary of every partition into the same thresholds
//! one instance holding every customer would compute.
//!
//! A summary is the partition's rank-bin histogram (the bins of
//! [`super::tier`], 0.27% of value wide), plus the exact monetary of the
//! members of the bins the last merge found the A and B boundaries in.
//! Merging sums the histograms to find each boundary's bin and the rank
//! inside it, then selects among that bin's members exactly. Where a
//! partition's summary lacks the values of a boundary bin (the boundary
//! moved since it was published), the merge is incomplete and says which
//! bins it wants; the owners' next summaries carry them. Deterministic: the
//! same summaries give the same thresholds on every instance.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tier::{BIN_COUNT, Thresholds, rank_of};

/// The name of the ranking group of every segment ranked `global` (segment
/// names cannot contain `*`); an `own` segment's group is its name.
pub const SHARED_GROUP: &str = "*";

/// One input partition's ranked customers, as far as the group-wide
/// thresholds need them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TierSummary {
    /// One more per publish of this partition: the versions' parts.
    pub seq: u64,
    /// Per ranking group, by name.
    pub groups: BTreeMap<String, GroupSummary>,
}

/// One ranking group's part of a [`TierSummary`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupSummary {
    /// The non-empty rank bins, ascending, beside their member counts.
    pub bins: Vec<u16>,
    /// Members per bin of `bins`.
    pub counts: Vec<u32>,
    /// The exact monetary of every member of the bins asked for, by bin,
    /// as `f64` bit patterns (exact through JSON).
    pub values: BTreeMap<u16, Vec<u64>>,
}

impl GroupSummary {
    /// Members in `bin`.
    fn count(&self, bin: u16) -> u32 {
        self.bins
            .binary_search(&bin)
            .map_or(0, |i| self.counts.get(i).copied().unwrap_or(0))
    }

    /// Whether `bins` and `counts` pair up, ascend and name real bins, and
    /// every value list is as long as its bin's count: anything else in a
    /// summary read from a topic is refused.
    pub fn is_valid(&self) -> bool {
        self.bins.len() == self.counts.len()
            && self.bins.windows(2).all(|w| w[0] < w[1])
            && self.bins.iter().all(|&b| usize::from(b) < BIN_COUNT)
            && self
                .values
                .iter()
                .all(|(&b, v)| v.len() == self.count(b) as usize)
    }
}

/// What merging every partition's latest summary gave.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Merged {
    /// Per ranking group, its exact thresholds; `None` while a partition's
    /// summary lacks the values of a boundary bin.
    pub thresholds: BTreeMap<String, Option<Thresholds>>,
    /// Per ranking group, the bins holding its A and B boundaries: the
    /// bins whose members' values the next summaries carry.
    pub wanted: BTreeMap<String, Vec<u16>>,
}

impl Merged {
    /// Whether every group's thresholds are exact.
    pub fn complete(&self) -> bool {
        self.thresholds.values().all(Option::is_some)
    }
}

/// Merges partitions' summaries into each ranking group's thresholds, for
/// shares `a_percent` and `a_percent + b_percent` of the ranked customers
/// (the ranks [`super::tier::TierIndex::thresholds`] uses).
pub fn merge<'a>(
    summaries: impl IntoIterator<Item = &'a TierSummary> + Clone,
    a_percent: f64,
    b_percent: f64,
) -> Merged {
    let mut names: Vec<&str> = summaries
        .clone()
        .into_iter()
        .flat_map(|s| s.groups.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut merged = Merged::default();
    for name in names {
        let parts: Vec<&GroupSummary> = summaries
            .clone()
            .into_iter()
            .filter_map(|s| s.groups.get(name))
            .collect();
        let mut histogram = vec![0u64; BIN_COUNT];
        for p in &parts {
            for (&b, &n) in p.bins.iter().zip(&p.counts) {
                if let Some(slot) = histogram.get_mut(usize::from(b)) {
                    *slot += u64::from(n);
                }
            }
        }
        let ranked = histogram.iter().sum::<u64>() as usize;
        let a = boundary(&histogram, rank_of(ranked, a_percent));
        let b = boundary(&histogram, rank_of(ranked, a_percent + b_percent));
        let value = |at: Option<(u16, usize)>| match at {
            None => Some(f64::INFINITY),
            Some((bin, nth)) => exact(&parts, bin, nth),
        };
        let thresholds = match (value(a), value(b)) {
            (Some(a), Some(b)) => Some(Thresholds { a, b }),
            _ => None,
        };
        let mut wanted: Vec<u16> = [a, b].into_iter().flatten().map(|(bin, _)| bin).collect();
        wanted.dedup();
        merged.thresholds.insert(name.to_string(), thresholds);
        merged.wanted.insert(name.to_string(), wanted);
    }
    merged
}

/// The bin holding 1-based rank `k` (descending) and the rank's 0-based
/// place among that bin's members, descending; `None` for rank 0 or past
/// the last member (nobody qualifies).
fn boundary(histogram: &[u64], k: usize) -> Option<(u16, usize)> {
    if k == 0 {
        return None;
    }
    let mut above = 0usize;
    for (bin, &n) in histogram.iter().enumerate().rev() {
        let n = n as usize;
        if above + n >= k {
            return Some((bin as u16, k - above - 1));
        }
        above += n;
    }
    None
}

/// The `nth` largest monetary among every partition's members of `bin`;
/// `None` if a partition with members there did not send their values.
fn exact(parts: &[&GroupSummary], bin: u16, nth: usize) -> Option<f64> {
    let mut values = Vec::new();
    for p in parts {
        if p.count(bin) == 0 {
            continue;
        }
        values.extend(p.values.get(&bin)?.iter().map(|&v| f64::from_bits(v)));
    }
    if nth >= values.len() {
        return None;
    }
    values.select_nth_unstable_by(nth, |x, y| y.total_cmp(x));
    Some(values[nth])
}

/// The engine's side: summaries of the partitions it owns, and ranking
/// with the group's thresholds.
impl super::Engine {
    /// A summary of each of `partitions` (its customers ranked in this
    /// engine's index), carrying the members' values of the `wanted` bins
    /// of each ranking group (from the last [`merge`]). One pass over the
    /// customers; called per recompute, not per event.
    pub fn tier_summaries(
        &self,
        partitions: &[u16],
        wanted: &BTreeMap<String, Vec<u16>>,
    ) -> BTreeMap<u16, TierSummary> {
        let core = &self.core;
        let groups = core.segments.groups();
        let names: Vec<&str> = (0..groups).map(|g| core.segments.group_name(g)).collect();
        let wants: Vec<&[u16]> = names
            .iter()
            .map(|n| wanted.get(*n).map_or(&[][..], Vec::as_slice))
            .collect();
        // Per owned partition and group: a dense histogram, and the values.
        type Part = (Vec<u32>, BTreeMap<u16, Vec<u64>>);
        let mut parts: BTreeMap<u16, Vec<Part>> = partitions
            .iter()
            .map(|&p| {
                (
                    p,
                    (0..groups)
                        .map(|_| (vec![0; BIN_COUNT], BTreeMap::new()))
                        .collect(),
                )
            })
            .collect();
        self.store.inner().customers.for_each(|idx, c| {
            let Some((group, bin)) = core.tiers.placed(idx) else {
                return;
            };
            let Some((histogram, values)) = parts
                .get_mut(&c.partition)
                .and_then(|groups| groups.get_mut(group))
            else {
                return;
            };
            histogram[usize::from(bin)] += 1;
            if wants[group].contains(&bin) {
                values
                    .entry(bin)
                    .or_default()
                    .push(c.monetary_total().to_bits());
            }
        });
        parts
            .into_iter()
            .map(|(p, groups)| {
                let groups = groups
                    .into_iter()
                    .zip(&names)
                    .map(|((histogram, mut values), name)| {
                        let (bins, counts) = histogram
                            .iter()
                            .enumerate()
                            .filter(|&(_, &n)| n > 0)
                            .map(|(b, &n)| (b as u16, n))
                            .unzip();
                        // Sorted, so a summary's bytes depend on its members only.
                        values.values_mut().for_each(|v| v.sort_unstable());
                        let summary = GroupSummary {
                            bins,
                            counts,
                            values,
                        };
                        (name.to_string(), summary)
                    })
                    .collect();
                (p, TierSummary { seq: 0, groups })
            })
            .collect()
    }

    /// Ranks with `given` (each ranking group's thresholds, by name, from
    /// [`merge`]) from now on, instead of over the customers this engine
    /// holds; `None` goes back to its own ranking. Customers the change
    /// moves are re-tiered at the watermark, as by a recompute.
    pub fn rank_with(
        &mut self,
        given: Option<&BTreeMap<String, Thresholds>>,
        out: &mut Vec<super::alert::Alert>,
    ) {
        let core = &self.core;
        let given: Option<Vec<Thresholds>> = given.map(|m| {
            (0..core.segments.groups())
                .map(|g| {
                    m.get(core.segments.group_name(g))
                        .copied()
                        .unwrap_or(Thresholds::NONE)
                })
                .collect()
        });
        if given == core.given {
            return;
        }
        self.core.given = given;
        self.core.dirty = true;
        if let Some(now) = self.core.watermark.current() {
            self.recompute(now, out, false);
        }
    }
}
