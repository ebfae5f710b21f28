//! Per-partition state found by `(topic, partition)` borrowed from a
//! message: the consume loop looks one up per message, and an owned
//! `(String, i32)` key would cost an allocation each time. An instance holds
//! tens of partitions, so a sorted vector beats a tree and iterates in the
//! same order one would. Messages come in runs of one partition (a
//! fetch's batch), so the last entry found is tried first: one comparison
//! instead of a binary search's half dozen string compares, three times
//! per message.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::offsets::TopicPartition;

/// Values by topic and partition, sorted by both.
#[derive(Debug)]
pub struct PartitionMap<V> {
    entries: Vec<(TopicPartition, V)>,
    /// The index last found: a hint, checked before use.
    last: AtomicUsize,
}

impl<V> Default for PartitionMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            last: AtomicUsize::new(0),
        }
    }
}

impl<V> PartitionMap<V> {
    fn find(&self, topic: &str, partition: i32) -> Result<usize, usize> {
        let last = self.last.load(Ordering::Relaxed);
        if let Some(((t, p), _)) = self.entries.get(last)
            && *p == partition
            && t == topic
        {
            return Ok(last);
        }
        let found = self
            .entries
            .binary_search_by(|((t, p), _)| (t.as_str(), *p).cmp(&(topic, partition)));
        if let Ok(i) = found {
            self.last.store(i, Ordering::Relaxed);
        }
        found
    }

    /// Whether the partition has a value.
    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.find(topic, partition).is_ok()
    }

    /// The partition's value.
    pub fn get_mut(&mut self, topic: &str, partition: i32) -> Option<&mut V> {
        let i = self.find(topic, partition).ok()?;
        self.entries.get_mut(i).map(|(_, v)| v)
    }

    /// The partition's value, made by `new` if it has none (the only time
    /// the topic name is copied).
    pub fn get_or_insert_with(
        &mut self,
        topic: &str,
        partition: i32,
        new: impl FnOnce() -> V,
    ) -> &mut V {
        let i = match self.find(topic, partition) {
            Ok(i) => i,
            Err(i) => {
                self.entries
                    .insert(i, ((topic.to_string(), partition), new()));
                i
            }
        };
        &mut self.entries[i].1
    }

    /// Forgets the partition.
    pub fn remove(&mut self, tp: &TopicPartition) {
        if let Ok(i) = self.find(&tp.0, tp.1) {
            self.entries.remove(i);
        }
    }

    /// Every partition and its value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, &V)> {
        self.entries.iter().map(|(tp, v)| (tp, v))
    }

    /// Every partition and its value, in order, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&TopicPartition, &mut V)> {
        self.entries.iter_mut().map(|(tp, v)| (&*tp, v))
    }

    /// Whether no partition has a value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every value, in partition order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_borrowed_names_and_keeps_partition_order() {
        let mut m = PartitionMap::default();
        *m.get_or_insert_with("b", 0, || 0) += 1;
        *m.get_or_insert_with("a", 2, || 0) += 1;
        *m.get_or_insert_with("a", 1, || 0) += 1;
        *m.get_or_insert_with("b", 0, || 0) += 1;
        let order: Vec<_> = m.iter().map(|((t, p), v)| (t.as_str(), *p, *v)).collect();
        assert_eq!(order, [("a", 1, 1), ("a", 2, 1), ("b", 0, 2)]);
        assert_eq!(m.get_mut("a", 2).copied(), Some(1));
        assert!(m.get_mut("a", 3).is_none());
        m.remove(&("a".to_string(), 1));
        assert_eq!(m.values().count(), 2);
        // The last found moved by the removal: the hint is checked.
        assert_eq!(m.get_mut("a", 2).copied(), Some(1));
        assert_eq!(m.get_mut("b", 0).copied(), Some(2));
        assert!(m.get_mut("a", 1).is_none());
    }
}
