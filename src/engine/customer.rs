//! Per-customer state: recency, rolling frequency / monetary / handoffs, the
//! account rep, open tickets, tier and which checks are firing.
//!
//! Fixed-size plain data (no heap beyond an id longer than 24 bytes), so a
//! customer costs the same whatever its history and copies straight into a
//! snapshot.

use super::alert::Signals;
use super::bgnbd::History;
use super::duplicate::Seen;
use super::event::{CustomerKey, DAY_MS, RepKey, Ts};
use super::rep::RepIdx;
use super::settings::Settings;
use super::tier::Tier;
use super::window::{Buckets, Ring, Rolling};

/// Monetary: 12 buckets (a month each with the default 365-day window).
pub const MONETARY_BUCKETS: usize = 12;
/// Frequency: 9 buckets (10 days each with the default 90-day window).
pub const FREQUENCY_BUCKETS: usize = 9;
/// Handoffs: 6 buckets (30 days each with the default 180-day window).
pub const HANDOFF_BUCKETS: usize = 6;

/// One customer's state (fixed size). `F` is the frequency ring: in memory
/// without its head (the latest purchase's bucket), in snapshots and the
/// changelog ([`CustomerRecord`]) with it, as every version wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Customer<F = Ring<u16, FREQUENCY_BUCKETS>> {
    /// The customer id.
    pub id: CustomerKey,
    /// The earliest event time seen.
    pub first_seen: Stamp,
    /// The latest purchase (refunds excluded).
    pub last_purchase: MaybeTs,
    /// The latest rep contact.
    pub last_contact: MaybeTs,
    /// The deadline this customer has in the timer queue, if any; owned by
    /// the engine's timer bookkeeping.
    pub pending: MaybeTs,
    /// Spend per bucket of `tiers.window`.
    pub monetary: Rolling<f32, MONETARY_BUCKETS>,
    /// Purchases per bucket of `windows.frequency`.
    pub frequency: F,
    /// Rep changes per bucket of `windows.handoffs`.
    pub handoffs: Rolling<u8, HANDOFF_BUCKETS>,
    /// Rep of the most recent call.
    pub account_rep: MaybeRep,
    /// Tickets opened and not resolved.
    pub open_tickets: u16,
    /// Open tickets that are complaints.
    pub open_complaints: u16,
    /// Days with a purchase, lifetime (saturating): BG/NBD counts repeat
    /// purchases by day, so several orders on one day count once.
    pub purchase_days: u16,
    /// The UTC day (since 1970) of the earliest purchase, where the
    /// purchase history starts for the risk model; [`NO_DAY`] if none. Two
    /// bytes where a time takes six.
    pub first_purchase_day: u16,
    /// Input partition the customer's events come from (0 in replay).
    pub partition: u16,
    /// Its tier and segment; serialised as the tier alone (the segment goes
    /// by name beside the record, in [`super::CustomerState`]: indexes are
    /// local to a config).
    #[serde(with = "standing_as_tier", rename = "tier")]
    standing: Standing,
    /// One bit per [`super::rule::Check`] that is firing (low five), and
    /// why it is a key account ([`KEY_BY_EVENT`], [`KEY_BY_LIST`]).
    flags: u8,
    /// Recent `event_id`s. Serialised beside the record (in
    /// [`super::CustomerState`]), so changelog entries written before it
    /// existed still decode.
    #[serde(skip)]
    pub seen: Seen,
}

/// A customer as snapshots and the changelog carry it.
pub type CustomerRecord = Customer<Rolling<u16, FREQUENCY_BUCKETS>>;

impl CustomerRecord {
    /// The record in memory: its frequency head follows from its latest
    /// purchase (every version kept them equal).
    pub fn into_customer(self) -> Customer {
        let ring = self.frequency.into_ring();
        self.with_frequency(ring)
    }
}

impl<F> Customer<F> {
    fn with_frequency<G>(self, frequency: G) -> Customer<G> {
        Customer {
            id: self.id,
            first_seen: self.first_seen,
            last_purchase: self.last_purchase,
            last_contact: self.last_contact,
            pending: self.pending,
            monetary: self.monetary,
            frequency,
            handoffs: self.handoffs,
            account_rep: self.account_rep,
            open_tickets: self.open_tickets,
            open_complaints: self.open_complaints,
            purchase_days: self.purchase_days,
            first_purchase_day: self.first_purchase_day,
            partition: self.partition,
            standing: self.standing,
            flags: self.flags,
            seen: self.seen,
        }
    }
}

/// A key account because its latest event said `key_account = true`.
pub const KEY_BY_EVENT: u8 = 1 << 5;
/// A key account because the config's `key_accounts` list names it.
pub const KEY_BY_LIST: u8 = 1 << 6;
const KEY_BITS: u8 = KEY_BY_EVENT | KEY_BY_LIST;

/// The most segments a config declares: the index shares a byte with the
/// tier.
pub const MAX_SEGMENTS: usize = 64;

/// Tier (low two bits) and segment index (high six) in one byte, so the
/// record stays at 168 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing(u8);

impl Standing {
    fn tier(self) -> Tier {
        Tier::ALL[usize::from(self.0 & 3).min(2)]
    }

    fn segment(self) -> u8 {
        self.0 >> 2
    }

    fn new(tier: Tier, segment: u8) -> Self {
        Standing((segment << 2) | tier.index() as u8)
    }
}

/// [`Standing`] as the plain tier records written before segments hold.
mod standing_as_tier {
    use super::{Standing, Tier};

    pub fn serialize<S: serde::Serializer>(s: &Standing, ser: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&s.tier(), ser)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Standing, D::Error> {
        let tier: Tier = serde::Deserialize::deserialize(d)?;
        Ok(Standing::new(tier, 0))
    }
}

/// `first_purchase_day` of a customer that never bought.
pub const NO_DAY: u16 = u16::MAX;

/// The UTC day of `t` since 1970, clamped to what a `u16` holds (1970 to 2149).
fn day_of(t: Ts) -> u16 {
    t.0.div_euclid(DAY_MS).clamp(0, i64::from(NO_DAY) - 1) as u16
}

/// A time in 6 bytes: milliseconds since 1970 in 48 bits, which hold
/// every time an event may carry ([`Ts::is_event_time`]) exactly, to the
/// year 10889. Two bytes a time off the record, which keeps four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp([u16; 3]);

/// The largest 48-bit value, [`MaybeTs::NONE`]'s.
const STAMP_MAX: i64 = (1 << 48) - 1;

impl Stamp {
    /// `t`, clamped to what 48 bits hold below the none marker (only a
    /// deadline can lie beyond; it then comes early, which a lazy timer
    /// allows).
    pub fn new(t: Ts) -> Self {
        Self::pack(t.0.clamp(0, STAMP_MAX - 1))
    }

    fn pack(v: i64) -> Self {
        Stamp([v as u16, (v >> 16) as u16, (v >> 32) as u16])
    }

    fn raw(self) -> i64 {
        let [a, b, c] = self.0.map(i64::from);
        a | b << 16 | c << 32
    }

    /// The time.
    pub fn get(self) -> Ts {
        Ts(self.raw())
    }
}

/// Written as the [`Ts`] it holds, as the 8-byte field it replaced was.
impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ts::deserialize(d).map(Stamp::new)
    }
}

/// An optional time in 6 bytes (`Option<Ts>` takes 16): the largest
/// 48-bit value is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeTs(Stamp);

impl MaybeTs {
    /// No time.
    pub const NONE: MaybeTs = MaybeTs(Stamp([u16::MAX; 3]));

    /// A time (clamped as [`Stamp::new`] does).
    pub fn some(t: Ts) -> Self {
        MaybeTs(Stamp::new(t))
    }

    /// The time, if any.
    pub fn get(self) -> Option<Ts> {
        (self != Self::NONE).then(|| self.0.get())
    }
}

/// Written as the milliseconds, `i64::MIN` for none, as the 8-byte field
/// it replaced was: snapshots and changelog entries read both ways.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename = "MaybeTs")]
struct MaybeTsWire(i64);

impl serde::Serialize for MaybeTs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MaybeTsWire(self.get().map_or(i64::MIN, |t| t.0)).serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for MaybeTs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let MaybeTsWire(ms) = MaybeTsWire::deserialize(d)?;
        Ok(match ms {
            i64::MIN => MaybeTs::NONE,
            ms => MaybeTs::some(Ts(ms)),
        })
    }
}

/// An optional rep in 4 bytes: `u32::MAX` is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaybeRep(u32);

impl MaybeRep {
    /// No rep.
    pub const NONE: MaybeRep = MaybeRep(u32::MAX);

    /// A rep.
    pub fn some(r: RepIdx) -> Self {
        MaybeRep(r.0)
    }

    /// The rep, if any.
    pub fn get(self) -> Option<RepIdx> {
        (self != Self::NONE).then_some(RepIdx(self.0))
    }
}

/// Bucket geometry of the three rolling windows.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    /// Monetary buckets.
    pub monetary: Buckets,
    /// Frequency buckets.
    pub frequency: Buckets,
    /// Handoff buckets.
    pub handoffs: Buckets,
}

impl Windows {
    /// The bucket geometry the settings' window lengths give.
    pub fn new(settings: &Settings) -> Self {
        let ms = |d: std::time::Duration| d.as_millis() as i64;
        Self {
            monetary: Buckets::new(ms(settings.tiers.window), MONETARY_BUCKETS),
            frequency: Buckets::new(ms(settings.windows.frequency), FREQUENCY_BUCKETS),
            handoffs: Buckets::new(ms(settings.windows.handoffs), HANDOFF_BUCKETS),
        }
    }
}

impl Customer {
    /// A customer first seen at `first_seen` on input `partition`.
    pub fn new(id: CustomerKey, first_seen: Ts, partition: u16) -> Self {
        Self {
            id,
            first_seen: Stamp::new(first_seen),
            last_purchase: MaybeTs::NONE,
            last_contact: MaybeTs::NONE,
            pending: MaybeTs::NONE,
            monetary: Rolling::default(),
            frequency: Ring::default(),
            handoffs: Rolling::default(),
            account_rep: MaybeRep::NONE,
            open_tickets: 0,
            open_complaints: 0,
            purchase_days: 0,
            first_purchase_day: NO_DAY,
            partition,
            standing: Standing::new(Tier::C, 0),
            flags: 0,
            seen: Seen::default(),
        }
    }

    /// The frequency ring's head: the bucket of the latest purchase, which
    /// is the newest bucket a purchase added to (0 before any, as a new
    /// ring's).
    fn frequency_head(&self, w: &Windows) -> u32 {
        self.last_purchase
            .get()
            .map_or(0, |t| w.frequency.index(t.0))
    }

    /// The record as snapshots and the changelog carry it.
    pub fn record(&self, w: &Windows) -> CustomerRecord {
        let ring = self.frequency.with_head(self.frequency_head(w));
        self.clone().with_frequency(ring)
    }

    /// Monetary as ranked for tiers: the sum of the buckets kept, brought up
    /// to date at each purchase and at each monetary bucket rollover.
    pub fn monetary_total(&self) -> f64 {
        self.monetary.total()
    }

    /// Applies a purchase or refund.
    pub fn purchase(&mut self, ts: Ts, amount: f64, w: &Windows) {
        self.monetary.add(w.monetary.index(ts.0), amount);
        if amount >= 0.0 {
            self.frequency
                .add(self.frequency_head(w), w.frequency.index(ts.0), 1.0);
            let day = day_of(ts);
            // A late purchase between the first and the last day may repeat
            // a day already counted; telling would need every day kept.
            let new_day = match (self.first_purchase(), self.last_purchase.get()) {
                (Some(f), Some(l)) => day != day_of(f) && day != day_of(l),
                _ => true,
            };
            if new_day {
                self.purchase_days = self.purchase_days.saturating_add(1);
            }
            self.last_purchase = MaybeTs::some(self.last_purchase.get().map_or(ts, |p| p.max(ts)));
            if self.first_purchase_day == NO_DAY || day < self.first_purchase_day {
                self.first_purchase_day = day;
            }
        }
    }

    /// The start of the day of the first purchase, if any.
    pub fn first_purchase(&self) -> Option<Ts> {
        (self.first_purchase_day != NO_DAY).then(|| Ts(i64::from(self.first_purchase_day) * DAY_MS))
    }

    /// The purchase history as BG/NBD sees it at `at` (days since the first
    /// purchase); none before the first purchase.
    pub fn history(&self, at: Ts) -> Option<History> {
        let first = self.first_purchase()?;
        let last = self.last_purchase.get().unwrap_or(first);
        Some(History {
            x: f64::from(self.purchase_days.saturating_sub(1)),
            t_x: last.days_since(first).max(0.0),
            t: at.days_since(first).max(0.0),
        })
    }

    /// Applies a call by `rep`. A call counts as a handoff when its rep
    /// differs from the account rep; a call older than the last contact
    /// changes neither the account rep nor the handoffs, since the engine
    /// cannot tell which rep came before it. A rep the full roster cannot
    /// hold (`None`) makes a contact only.
    pub fn call(&mut self, ts: Ts, rep: Option<RepIdx>, w: &Windows) {
        if self.last_contact.get().is_some_and(|c| ts < c) {
            return;
        }
        self.last_contact = MaybeTs::some(ts);
        let Some(rep) = rep else { return };
        if self.account_rep.get().is_some_and(|r| r != rep) {
            self.handoffs.add(w.handoffs.index(ts.0), 1.0);
        }
        self.account_rep = MaybeRep::some(rep);
    }

    /// The customer's numbers as of `at`: the one place they are computed,
    /// for alerts and the HTTP API alike. `account_rep` is the rep's id.
    pub fn signals(&self, at: Ts, w: &Windows, account_rep: Option<RepKey>, risk: u8) -> Signals {
        Signals {
            risk,
            recency_days: self.last_purchase.get().map(|p| at.days_since(p)),
            frequency_90d: self
                .frequency
                .sum_at(self.frequency_head(w), w.frequency.index(at.0))
                as u32,
            monetary: self.monetary.sum_at(w.monetary.index(at.0)),
            days_since_contact: self.last_contact.get().map(|l| at.days_since(l)),
            account_rep,
            rep_handoffs_180d: self.handoffs.sum_at(w.handoffs.index(at.0)) as u32,
            open_tickets: self.open_tickets as u32,
            open_complaints: self.open_complaints as u32,
            days_since_first_seen: (at.0 - self.first_seen.get().0) as f64 / DAY_MS as f64,
        }
    }

    /// The tier the thresholds in force (or a key account's pin) give it.
    pub fn tier(&self) -> Tier {
        self.standing.tier()
    }

    /// Moves it to `tier`.
    pub fn set_tier(&mut self, tier: Tier) {
        self.standing = Standing::new(tier, self.segment());
    }

    /// Index of its segment in the config's segment table.
    pub fn segment(&self) -> u8 {
        self.standing.segment()
    }

    /// Moves it to segment `segment` (below [`MAX_SEGMENTS`]).
    pub fn set_segment(&mut self, segment: u8) {
        self.standing = Standing::new(self.tier(), segment);
    }

    /// Why it is a key account: [`KEY_BY_EVENT`] and/or [`KEY_BY_LIST`].
    pub fn key_flags(&self) -> u8 {
        self.flags & KEY_BITS
    }

    /// Sets why it is a key account.
    pub fn set_key_flags(&mut self, flags: u8) {
        self.flags = (self.flags & !KEY_BITS) | (flags & KEY_BITS);
    }

    /// A key account: pinned to tier A of its segment, outside the ranking.
    pub fn is_key_account(&self) -> bool {
        self.key_flags() != 0
    }

    /// The bits of the checks that are firing.
    pub fn firing(&self) -> u8 {
        self.flags & !KEY_BITS
    }

    /// Marks the check with this bit firing or not.
    pub fn set_firing(&mut self, bit: u8, on: bool) {
        if on {
            self.flags |= bit;
        } else {
            self.flags &= !bit;
        }
    }

    /// Whether the check with this bit is firing.
    pub fn is_firing(&self, bit: u8) -> bool {
        self.flags & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped defaults' window geometry (the engine takes plain
    /// settings; the tests borrow the config's defaults for them).
    fn windows() -> Windows {
        Windows::new(&crate::engine::tests::shipped_settings())
    }

    #[test]
    fn customer_stays_small() {
        // 144 bytes of state and 24 of remembered event ids.
        assert!(
            std::mem::size_of::<Customer>() <= 168,
            "{}",
            std::mem::size_of::<Customer>()
        );
    }

    proptest::proptest! {
        #[test]
        fn every_event_time_is_kept_exactly(ms in 0..=Ts::LATEST_EVENT.0) {
            proptest::prop_assert_eq!(Stamp::new(Ts(ms)).get(), Ts(ms));
            proptest::prop_assert_eq!(MaybeTs::some(Ts(ms)).get(), Some(Ts(ms)));
        }
    }

    #[test]
    fn times_are_written_as_the_eight_byte_fields_were() {
        let t = Ts(1_717_200_000_123);
        let json = |m: MaybeTs| serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(json(MaybeTs::some(t)), "1717200000123");
        assert_eq!(json(MaybeTs::NONE), i64::MIN.to_string());
        let back = |s: &str| serde_json::from_str::<MaybeTs>(s).ok();
        assert_eq!(back("1717200000123"), Some(MaybeTs::some(t)));
        assert_eq!(back(&i64::MIN.to_string()), Some(MaybeTs::NONE));
        let stamp = serde_json::to_string(&Stamp::new(t)).unwrap_or_default();
        assert_eq!(stamp, serde_json::to_string(&t).unwrap_or_default());
        assert_eq!(
            serde_json::from_str::<Stamp>(&stamp).ok(),
            Some(Stamp::new(t))
        );
        // A deadline beyond 48 bits is kept early, never as none.
        assert!(
            MaybeTs::some(Ts::MAX)
                .get()
                .is_some_and(|d| d > Ts::LATEST_EVENT)
        );
    }

    proptest::proptest! {
        /// The frequency ring without a head counts as the ring with one
        /// did, and its record carries the head that ring had.
        #[test]
        fn frequency_is_the_ring_with_its_head_kept(
            days in proptest::collection::vec((0i64..400, proptest::bool::ANY), 1..40),
            probe in 0i64..500,
        ) {
            let w = windows();
            let mut c = Customer::new("c".into(), Ts(0), 0);
            let mut kept: Rolling<u16, FREQUENCY_BUCKETS> = Rolling::default();
            for (day, refund) in days {
                let (t, amount) = (Ts(day * DAY_MS), if refund { -1.0 } else { 10.0 });
                c.purchase(t, amount, &w);
                if !refund {
                    kept.add(w.frequency.index(t.0), 1.0);
                }
            }
            let at = Ts(probe * DAY_MS).max(c.last_purchase.get().unwrap_or(Ts(0)));
            let signals = c.signals(at, &w, None, 0);
            proptest::prop_assert_eq!(
                f64::from(signals.frequency_90d),
                kept.sum_at(w.frequency.index(at.0))
            );
            let record = c.record(&w);
            proptest::prop_assert_eq!(record.frequency, kept);
            let bytes = postcard::to_allocvec(&record).unwrap_or_default();
            let back = postcard::from_bytes::<CustomerRecord>(&bytes).map(CustomerRecord::into_customer);
            proptest::prop_assert_eq!(back.ok(), Some(c));
        }
    }

    #[test]
    fn refunds_lower_monetary_but_are_not_purchases() {
        let w = windows();
        let mut c = Customer::new("c".into(), Ts(0), 0);
        c.purchase(Ts(1000), 100.0, &w);
        c.purchase(Ts(2000), -40.0, &w);
        assert_eq!(c.monetary_total(), 60.0);
        assert_eq!(c.last_purchase.get(), Some(Ts(1000)));
        assert_eq!(c.frequency.total(), 1.0);
    }

    #[test]
    fn handoffs_count_rep_changes_only() {
        let w = windows();
        let mut c = Customer::new("c".into(), Ts(0), 0);
        for (t, rep) in [(1, 1), (2, 1), (3, 2), (4, 1), (5, 1)] {
            c.call(Ts(t * 1000), Some(RepIdx(rep)), &w);
        }
        assert_eq!(c.handoffs.total(), 2.0);
        c.call(Ts(500), Some(RepIdx(9)), &w);
        assert_eq!(
            c.account_rep.get(),
            Some(RepIdx(1)),
            "a late call does not take over"
        );
    }

    #[test]
    fn a_call_by_an_untracked_rep_is_a_contact_only() {
        let w = windows();
        let mut c = Customer::new("c".into(), Ts(0), 0);
        c.call(Ts(1000), Some(RepIdx(1)), &w);
        c.call(Ts(2000), None, &w);
        assert_eq!(c.last_contact.get(), Some(Ts(2000)));
        assert_eq!(c.account_rep.get(), Some(RepIdx(1)));
        assert_eq!(c.handoffs.total(), 0.0);
    }
}
