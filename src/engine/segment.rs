//! Segments: kinds of customer (wholesale, retail, …) that are each ranked
//! and alerted by their own rhythm, and key accounts pinned to tier A.
//!
//! The names are a closed set fixed by the config, so a customer carries
//! its segment in six bits and metrics can label by it without unbounded
//! cardinality. An event naming a segment the config does not declare puts
//! its customer in the default one and is counted.

use compact_str::CompactString;
use rustc_hash::FxHashSet;

use super::event::CustomerKey;
use super::settings::RuleSettings;

/// How a segment's customers are ranked into tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Ranking {
    /// A/B/C within the segment: its top 5% are its tier A.
    #[default]
    Own,
    /// One ranking shared by every `global` segment.
    Global,
}

/// One declared segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentSettings {
    /// Its name, as events and labels spell it.
    pub name: CompactString,
    /// Own or shared ranking.
    pub ranking: Ranking,
    /// Its rules: the global `[rules]` with the segment's overrides.
    pub rules: RuleSettings,
}

/// The declared segments and which one customers without one belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    /// Every segment, in index order (at most
    /// [`super::customer::MAX_SEGMENTS`]).
    pub segments: Vec<SegmentSettings>,
    /// Index of the default segment.
    pub default: u8,
    /// Customers pinned to tier A whatever their spend (`key_accounts`).
    pub key_accounts: Vec<CustomerKey>,
}

impl Segmentation {
    /// A single segment, `default`, with these rules: what a config without
    /// `[segments]` runs as.
    pub fn single(rules: RuleSettings) -> Self {
        Self {
            segments: vec![SegmentSettings {
                name: "default".into(),
                ranking: Ranking::Own,
                rules,
            }],
            default: 0,
            key_accounts: Vec::new(),
        }
    }
}

/// The segment table the engine runs with.
#[derive(Debug, Clone)]
pub(super) struct Segments {
    names: Box<[CompactString]>,
    /// Per segment: the ranking group it is ranked in.
    group: Box<[u8]>,
    /// Per segment: whether it is ranked on its own.
    own: Box<[bool]>,
    groups: usize,
    default: u8,
    key_accounts: FxHashSet<CustomerKey>,
}

impl Segments {
    pub(super) fn new(s: &Segmentation) -> Self {
        let mut group = Vec::with_capacity(s.segments.len());
        let mut groups = 0u8;
        let mut global = None;
        for seg in &s.segments {
            let g = match seg.ranking {
                Ranking::Global => *global.get_or_insert_with(|| {
                    groups += 1;
                    groups - 1
                }),
                Ranking::Own => {
                    groups += 1;
                    groups - 1
                }
            };
            group.push(g);
        }
        Self {
            names: s.segments.iter().map(|seg| seg.name.clone()).collect(),
            group: group.into(),
            own: s
                .segments
                .iter()
                .map(|seg| seg.ranking == Ranking::Own)
                .collect(),
            groups: usize::from(groups),
            default: s.default,
            key_accounts: s.key_accounts.iter().cloned().collect(),
        }
    }

    /// The segment called `name`; `None` if the config declares none.
    pub(super) fn find(&self, name: &str) -> Option<u8> {
        self.names.iter().position(|n| n == name).map(|i| i as u8)
    }

    /// The default segment.
    pub(super) fn default(&self) -> u8 {
        self.default
    }

    /// The ranking group of `segment`.
    pub(super) fn group(&self, segment: u8) -> usize {
        usize::from(self.group[usize::from(segment)])
    }

    /// Ranking group `group`'s name, the same on every instance: an own
    /// segment's name, or [`super::tier_summary::SHARED_GROUP`].
    pub(super) fn group_name(&self, group: usize) -> &str {
        let mut members = (0..self.names.len()).filter(|&s| usize::from(self.group[s]) == group);
        match (members.next(), members.next()) {
            (Some(s), None) if self.own[s] => &self.names[s],
            _ => super::tier_summary::SHARED_GROUP,
        }
    }

    /// How many ranking groups there are.
    pub(super) fn groups(&self) -> usize {
        self.groups
    }

    /// Every segment's name, in index order.
    pub(super) fn names(&self) -> &[CompactString] {
        &self.names
    }

    /// Whether the config lists `id` as a key account.
    pub(super) fn listed(&self, id: &str) -> bool {
        !self.key_accounts.is_empty() && self.key_accounts.contains(id)
    }

    /// Replaces the listed key accounts (a reload).
    pub(super) fn set_key_accounts(&mut self, ids: &[CustomerKey]) {
        self.key_accounts = ids.iter().cloned().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(name: &str, ranking: Ranking) -> SegmentSettings {
        SegmentSettings {
            name: name.into(),
            ranking,
            rules: crate::engine::tests::shipped_settings().rules,
        }
    }

    #[test]
    fn own_segments_rank_alone_and_global_ones_together() {
        let s = Segments::new(&Segmentation {
            segments: vec![
                seg("a", Ranking::Global),
                seg("b", Ranking::Own),
                seg("c", Ranking::Global),
            ],
            default: 1,
            key_accounts: vec!["k".into()],
        });
        assert_eq!((s.group(0), s.group(1), s.group(2)), (0, 1, 0));
        assert_eq!(s.groups(), 2);
        assert_eq!((s.find("c"), s.find("x")), (Some(2), None));
        assert!(s.listed("k") && !s.listed("j"));
    }
}
