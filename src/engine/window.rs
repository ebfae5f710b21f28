//! Bucketed rolling counters: a trailing window in fixed memory.
//!
//! A window of length W is cut into N epoch-aligned buckets of width W/N.
//! At time t the window holds the bucket containing t and the N-1 before it,
//! so its reach is between W - W/N and W (bucket granularity). That is the
//! price of fixed per-customer memory; the width is documented per window.

/// A counter that can live in a bucket.
pub trait Count: Copy + Default + PartialEq {
    /// Adds `v` (saturating for integers).
    fn plus(self, v: f64) -> Self;
    /// The count as a float.
    fn value(self) -> f64;
}

impl Count for u8 {
    fn plus(self, v: f64) -> Self {
        self.saturating_add(v as u8)
    }
    fn value(self) -> f64 {
        self as f64
    }
}

impl Count for u16 {
    fn plus(self, v: f64) -> Self {
        self.saturating_add(v as u16)
    }
    fn value(self) -> f64 {
        self as f64
    }
}

impl Count for f32 {
    fn plus(self, v: f64) -> Self {
        (self as f64 + v) as f32
    }
    fn value(self) -> f64 {
        self as f64
    }
}

/// N buckets in a ring whose head (the bucket index of the newest slot)
/// the owner keeps: a ring whose head follows from a time the record holds
/// anyway (the frequency ring's is its latest purchase's bucket) does not
/// store it again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ring<T: Count, const N: usize> {
    slots: [T; N],
}

impl<T: Count, const N: usize> Default for Ring<T, N> {
    fn default() -> Self {
        Self {
            slots: [T::default(); N],
        }
    }
}

/// A [`Ring`] with its head: (head, slots) in snapshots and the changelog;
/// serde has no impls for const-generic arrays. The head is kept as two
/// halves so a ring of bytes is not padded to a multiple of four (the
/// handoff ring takes 10 bytes, not 12).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rolling<T: Count, const N: usize> {
    head: [u16; 2],
    ring: Ring<T, N>,
}

impl<T: Count + serde::Serialize, const N: usize> serde::Serialize for Rolling<T, N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.head(), &self.ring.slots[..]).serialize(s)
    }
}

impl<'de, T: Count + serde::Deserialize<'de>, const N: usize> serde::Deserialize<'de>
    for Rolling<T, N>
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (head, slots): (u32, Vec<T>) = serde::Deserialize::deserialize(d)?;
        let slots: [T; N] = slots.try_into().map_err(|v: Vec<T>| {
            serde::de::Error::invalid_length(v.len(), &"the window's bucket count")
        })?;
        Ok(Ring { slots }.with_head(head))
    }
}

/// Maps times to bucket indexes for one window length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buckets {
    width_ms: i64,
}

impl Buckets {
    /// `n` buckets spanning `window_ms`.
    pub fn new(window_ms: i64, n: usize) -> Self {
        Self {
            width_ms: (window_ms / n as i64).max(1),
        }
    }

    /// The bucket number of time `t_ms`.
    pub fn index(self, t_ms: i64) -> u32 {
        (t_ms.max(0) / self.width_ms).min(u32::MAX as i64) as u32
    }

    /// The time at which bucket `b` starts.
    pub fn start(self, b: u32) -> i64 {
        b as i64 * self.width_ms
    }
}

impl<T: Count, const N: usize> Ring<T, N> {
    /// Adds `v` to bucket `b` of the ring at `head`; the new head. A bucket
    /// older than the window is ignored (the event is outside what the
    /// window can still hold).
    pub fn add(&mut self, head: u32, b: u32, v: f64) -> u32 {
        let head = self.rotate(head, b);
        if b + (N as u32) > head {
            let slot = &mut self.slots[b as usize % N];
            *slot = slot.plus(v);
        }
        head
    }

    /// Moves the head forward to `b`, clearing buckets that left the
    /// window; the new head.
    pub fn rotate(&mut self, head: u32, b: u32) -> u32 {
        if b <= head {
            return head;
        }
        if b - head >= N as u32 {
            self.slots = [T::default(); N];
        } else {
            for i in head + 1..=b {
                self.slots[i as usize % N] = T::default();
            }
        }
        b
    }

    /// Sum of the window as of bucket `b`: buckets in `(b - N, b]`.
    pub fn sum_at(&self, head: u32, b: u32) -> f64 {
        let mut sum = 0.0;
        for (k, slot) in self.slots.iter().enumerate() {
            let bucket = Self::bucket_of_slot(head, k);
            if bucket <= b && bucket + (N as u32) > b {
                sum += slot.value();
            }
        }
        sum
    }

    /// Sum of everything stored, whatever the time.
    pub fn total(&self) -> f64 {
        self.slots.iter().map(|s| s.value()).sum()
    }

    fn bucket_of_slot(head: u32, k: usize) -> u32 {
        let head_slot = head as usize % N;
        let back = (head_slot + N - k) % N;
        head.wrapping_sub(back as u32)
    }

    /// The ring and its head, kept together.
    pub fn with_head(self, head: u32) -> Rolling<T, N> {
        let mut rolling = Rolling {
            head: [0; 2],
            ring: self,
        };
        rolling.set_head(head);
        rolling
    }
}

impl<T: Count, const N: usize> Rolling<T, N> {
    fn head(&self) -> u32 {
        u32::from(self.head[0]) | u32::from(self.head[1]) << 16
    }

    fn set_head(&mut self, head: u32) {
        self.head = [head as u16, (head >> 16) as u16];
    }

    /// Adds `v` to bucket `b` (see [`Ring::add`]).
    pub fn add(&mut self, b: u32, v: f64) {
        let head = self.ring.add(self.head(), b, v);
        self.set_head(head);
    }

    /// Moves the head forward to `b` (see [`Ring::rotate`]).
    pub fn rotate(&mut self, b: u32) {
        let head = self.ring.rotate(self.head(), b);
        self.set_head(head);
    }

    /// Sum of the window as of bucket `b`: buckets in `(b - N, b]`.
    pub fn sum_at(&self, b: u32) -> f64 {
        self.ring.sum_at(self.head(), b)
    }

    /// Sum of everything stored, whatever the time.
    pub fn total(&self) -> f64 {
        self.ring.total()
    }

    /// The first bucket index from which the sum as seen at that bucket is
    /// below `threshold`, with no further additions; `None` if it already is
    /// at `from`.
    pub fn falls_below(&self, from: u32, threshold: f64) -> Option<u32> {
        if self.sum_at(from) < threshold {
            return None;
        }
        (from.max(self.head())..=self.head() + N as u32).find(|&b| self.sum_at(b) < threshold)
    }

    /// The ring without its head.
    pub fn into_ring(self) -> Ring<T, N> {
        self.ring
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Brute force: sum of every addition whose bucket is in `(b - N, b]`.
    fn model(adds: &[(u32, u16)], b: u32, n: u32) -> f64 {
        let newest = adds.iter().map(|a| a.0).max().unwrap_or(0);
        adds.iter()
            .filter(|(ab, _)| *ab + n > newest) // dropped on arrival when too old
            .filter(|(ab, _)| *ab <= b && *ab + n > b)
            .map(|(_, v)| *v as f64)
            .sum()
    }

    proptest! {
        #[test]
        fn rolling_sum_equals_brute_force(
            adds in proptest::collection::vec((0u32..60, 1u16..5), 0..40),
            probe in 0u32..80,
        ) {
            let mut sorted = adds.clone();
            sorted.sort_by_key(|a| a.0);
            let mut w: Rolling<u16, 6> = Rolling::default();
            for (b, v) in &sorted {
                w.add(*b, *v as f64);
            }
            let newest = sorted.last().map(|a| a.0).unwrap_or(0);
            let probe = probe.max(newest);
            prop_assert_eq!(w.sum_at(probe), model(&sorted, probe, 6));
        }

        #[test]
        fn falls_below_is_the_first_bucket_under_threshold(
            adds in proptest::collection::vec((0u32..30, 1u16..3), 1..20),
            threshold in 1u16..8,
        ) {
            let mut sorted = adds.clone();
            sorted.sort_by_key(|a| a.0);
            let mut w: Rolling<u16, 6> = Rolling::default();
            for (b, v) in &sorted {
                w.add(*b, *v as f64);
            }
            let head = sorted.last().map(|a| a.0).unwrap_or(0);
            let t = threshold as f64;
            let brute = (head..head + 7).find(|b| model(&sorted, *b, 6) < t);
            let got = w.falls_below(head, t);
            if model(&sorted, head, 6) < t {
                prop_assert_eq!(got, None);
            } else {
                prop_assert_eq!(got, brute);
            }
        }
    }

    #[test]
    fn old_buckets_expire_and_out_of_window_adds_are_ignored() {
        let mut w: Rolling<u8, 3> = Rolling::default();
        w.add(10, 1.0);
        w.add(11, 1.0);
        w.add(12, 1.0);
        assert_eq!(w.sum_at(12), 3.0);
        assert_eq!(w.sum_at(13), 2.0);
        w.add(9, 5.0);
        assert_eq!(w.sum_at(12), 3.0);
        w.add(20, 1.0);
        assert_eq!(w.sum_at(20), 1.0);
    }
}
