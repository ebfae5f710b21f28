//! The pure, deterministic core: events and time in, alerts out.
//!
//! Nothing here reads a clock or does I/O. Callers push events with
//! [`Engine::apply`], move time with [`Engine::advance_to`], ask when
//! something is next due with [`Engine::next_deadline`], and own the alert
//! buffer so the hot path does not allocate.
//!
//! # Time semantics
//! - A deadline D fires when the watermark moves strictly past D; the alert's
//!   `at` is D. Before an event at T is applied, every deadline < T fires.
//! - Tier thresholds are recomputed at every multiple of
//!   `tiers.recompute_interval` that the watermark moves strictly past; a
//!   purchase re-tiers its customer at once against the thresholds in force.
//!   A tier change that makes a condition true or false fires or resolves
//!   it at the time of the change.
//! - An event older than the watermark ("late") is applied to state in full
//!   (windows by its own `ts`, recency and contact as the max); alerts it
//!   causes carry the watermark as `at`, since the engine never emits into
//!   the past. A late call changes neither the account rep nor the handoffs.
//! - With `engine.allowed_lateness` > 0 (event clock), events inside the
//!   lateness are held and applied in `ts` order as the watermark passes.

pub mod alert;
mod apply;
pub mod bgnbd;
pub mod customer;
pub mod duplicate;
mod episode;
pub mod event;
pub(crate) mod ids;
mod lean;
pub mod money;
pub mod native;
mod partition;
mod reconcile;
pub mod rep;
pub mod risk;
pub mod rule;
pub mod segment;
pub mod settings;
pub mod store;
mod ticket;
pub mod tier;
pub mod tier_summary;
pub mod watermark;
pub mod window;

pub use partition::{ClockState, CustomerState, PartitionState, SegmentTiers};

use compact_str::CompactString;
use rustc_hash::FxHashMap;

use alert::Alert;
use customer::{Customer, MaybeTs, Windows};
use event::{CustomerKey, DecodeLimits, Event, EventKind, RejectReason, Ts};
use money::Converter;
use reconcile::Scope;
use risk::RiskSettings;
use rule::{Limits, Point};
use segment::{Segmentation, Segments};
pub use settings::Settings;
use store::Store;
use tier::{Thresholds, Tier, TierIndex};
use watermark::{Clock, Reorder, Timers, Watermark};

/// What [`Engine::apply`] did with an accepted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now, in time order.
    Now,
    /// Applied now, but older than the watermark (see module docs).
    Late,
    /// Held until the watermark reaches it (allowed lateness).
    Held,
}

/// Counters the adapters export; plain numbers, read at will.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Events older than the watermark, applied anyway.
    pub late_events: u64,
    /// Tier threshold recomputes run.
    pub recomputes: u64,
    /// Recomputes that rotated the monetary window.
    pub monetary_rollovers: u64,
    /// Open tickets forgotten because a customer had `max_open_tickets`.
    pub tickets_forgotten: u64,
    /// Customers forgotten under `engine.forget_after`.
    pub customers_forgotten: u64,
    /// Redelivered events skipped, per [`EventType`] (as index).
    pub duplicates: [u64; 4],
    /// Events naming a segment the config does not declare (their
    /// customers went to the default segment).
    pub unknown_segments: u64,
}

/// [`Settings`] compiled once for the hot path.
#[derive(Debug, Clone, Copy)]
struct Tuned {
    windows: Windows,
    decode: DecodeLimits,
    skew_ms: i64,
    a_percent: f64,
    b_percent: f64,
    recompute_ms: i64,
    /// `tiers.recompute_change`, if on (it applies under the wall clock).
    recompute_change: Option<f64>,
    handoff_window_days: f64,
    max_open_tickets: u16,
    forget_after_ms: Option<i64>,
    /// `engine.dedup_window` in hours, if on.
    dedup_hours: Option<u16>,
}

/// Everything but the store, so a customer's shard guard (borrowed from the
/// store) and the engine's own structures can be used together.
#[derive(Debug)]
struct Core {
    settings: Tuned,
    watermark: Watermark,
    timers: Timers,
    held: Reorder,
    tiers: TierIndex,
    /// Thresholds in force per ranking group.
    thresholds: Vec<Thresholds>,
    /// The consumer group's thresholds per ranking group, when they rank
    /// instead of this engine's customers ([`Engine::rank_with`]).
    given: Option<Vec<Thresholds>>,
    segments: Segments,
    /// Rule limits per segment.
    limits: Box<[Limits]>,
    next_recompute: Option<Ts>,
    monetary_epoch: Option<u32>,
    /// Monetary changed since the last recompute.
    dirty: bool,
    /// Purchases applied in all, and as of the last recompute.
    purchases: (u64, u64),
    /// Ranked customers as of the last recompute.
    ranked_at_recompute: usize,
    /// Customers forgotten (`engine.forget_after`) and not yet taken by the
    /// changelog writer, with their partition.
    forgotten: Vec<(u16, CustomerKey)>,
    track_forgotten: bool,
    /// A restore brought thresholds that may be older than its customers:
    /// recompute at the next chance (wall clock).
    recompute_soon: bool,
    /// Open tickets per customer, oldest first: (ticket hash, is a
    /// complaint); at most `max_open_tickets` each.
    tickets: FxHashMap<u32, Vec<(u64, bool)>>,
    /// Wall time the caller last reported, bounding future skew under the
    /// event clock.
    horizon: Option<Ts>,
    stats: Stats,
    /// `[money]`: purchases into the base currency.
    money: Converter,
    /// Scratch of [`Engine::prefetch`]: buyers found, whose rank-bin
    /// entries are requested once their positions have arrived.
    prefetched: Vec<u32>,
}

/// The churn engine. Call contract:
/// - [`Engine::apply`] each event in input order (per partition), passing
///   the partition and a buffer the caller owns and drains; alerts it
///   causes are pushed there.
/// - [`Engine::advance_to`] moves engine time (never backwards: an earlier
///   time is ignored); due deadlines, tier recomputes and held events are
///   handled in time order. [`Engine::next_deadline`] says when advancing
///   would next do something, so a simulated clock can jump there.
/// - Under the event clock, [`Engine::set_horizon`] reports wall time
///   (future-skew bound); [`Engine::prefetch`] is an optional cache hint.
/// - [`Engine::partition_states`] / [`Engine::restore_partition`] /
///   [`Engine::evict_partition`] move a partition's state out and in.
///
/// Promises: the same inputs and times give the same alerts and ids
/// (nothing reads a clock or does I/O); an alert is emitted once per
/// transition; readers of [`Engine::store`] see consistent customers.
pub struct Engine {
    /// Customer records, open episodes and the rep roster; shared with
    /// readers (HTTP), written only here.
    store: Store,
    core: Core,
}

impl Engine {
    /// An engine with a store of its own.
    pub fn new(settings: &Settings, clock: Clock) -> Self {
        Self::with_store(settings, clock, Store::default())
    }

    /// An engine writing into `store`, which others may read concurrently.
    pub fn with_store(s: &Settings, clock: Clock, store: Store) -> Self {
        let segments = Segments::new(&s.segments);
        let settings = Tuned {
            windows: Windows::new(s),
            decode: DecodeLimits {
                max_amount: s.max_amount,
                max_event_bytes: s.max_event_bytes,
            },
            skew_ms: s.max_future_skew.as_millis() as i64,
            a_percent: s.tiers.a_percent,
            b_percent: s.tiers.b_percent,
            recompute_ms: s.tiers.recompute_interval.as_millis() as i64,
            recompute_change: (s.tiers.recompute_change > 0.0).then_some(s.tiers.recompute_change),
            handoff_window_days: s.windows.handoffs.as_secs_f64() / 86_400.0,
            max_open_tickets: s.max_open_tickets,
            forget_after_ms: s.forget_after.map(|d| d.as_millis() as i64),
            dedup_hours: u16::try_from(s.dedup_window.as_secs() / 3600)
                .ok()
                .filter(|&h| h > 0),
        };
        let engine = Self {
            store,
            core: Core {
                settings,
                watermark: Watermark::new(clock, s.allowed_lateness.as_millis() as i64),
                timers: Timers::default(),
                held: Reorder::default(),
                tiers: TierIndex::new(segments.groups(), segments.names().len()),
                thresholds: vec![Thresholds::NONE; segments.groups()],
                given: None,
                limits: limits_of(&s.segments, &s.risk),
                segments,
                next_recompute: None,
                monetary_epoch: None,
                dirty: false,
                purchases: (0, 0),
                ranked_at_recompute: 0,
                recompute_soon: false,
                forgotten: Vec::new(),
                track_forgotten: false,
                tickets: FxHashMap::default(),
                horizon: None,
                stats: Stats::default(),
                money: Converter::new(s.money.clone()),
                prefetched: Vec::new(),
            },
        };
        engine.core.publish_thresholds(engine.store.inner());
        engine
    }

    /// Switches the clock (`run` under `engine.clock = "wall"` starts on
    /// event time while it catches up, then moves to the wall clock). Held
    /// events are released by the next advance.
    pub fn set_clock(&mut self, clock: Clock) {
        self.core.watermark.clock = clock;
    }

    /// The clock engine time follows now.
    pub fn clock(&self) -> Clock {
        self.core.watermark.clock
    }

    /// The store readers share.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The decoder's limits from the settings.
    pub fn decode_limits(&self) -> DecodeLimits {
        self.core.settings.decode
    }

    /// Engine time, once anything happened.
    pub fn watermark(&self) -> Option<Ts> {
        self.core.watermark.current()
    }

    /// The segments' names, in index order.
    pub fn segment_names(&self) -> &[CompactString] {
        self.core.segments.names()
    }

    /// The tier thresholds in force for customers of `segment`.
    pub fn thresholds(&self, segment: u8) -> Thresholds {
        self.core.thresholds[self.core.segments.group(segment)]
    }

    /// Customers per tier of `segment`, indexed by [`Tier::index`].
    pub fn tier_counts(&self, segment: u8) -> [u64; 3] {
        self.core.tiers.counts(segment)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// Pending timers (one per customer with a deadline).
    pub fn pending_timers(&self) -> usize {
        self.core.timers.len()
    }

    /// Events held inside the allowed lateness.
    pub fn held_events(&self) -> usize {
        self.core.held.len()
    }

    /// Reports the caller's wall time. Under the event clock, events more
    /// than `engine.max_future_skew` ahead of it are rejected; under the
    /// wall clock the watermark itself is the reference.
    pub fn set_horizon(&mut self, wall_now: Ts) {
        self.core.horizon = Some(wall_now);
    }

    /// The earliest time at which advancing would do something.
    pub fn next_deadline(&self) -> Option<Ts> {
        let c = &self.core;
        [
            c.timers.first().map(|t| t.0),
            c.next_recompute,
            c.held.first_ts(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Warms the caches for applying `events` next: their customers' index
    /// entries, records and rank positions are requested from memory
    /// together, where applying one by one would wait for each in turn. A
    /// hint: it changes no state, so the results are the same without it.
    pub fn prefetch<'a>(&mut self, events: impl Iterator<Item = &'a Event> + Clone) {
        let roster = self.store.inner().roster.read();
        for e in events.clone() {
            if let EventKind::Call { rep, .. } = &e.kind {
                roster.prefetch(rep);
            }
        }
        let core = &mut self.core;
        core.prefetched.clear();
        // Only a purchase moves its customer in the rank index.
        let customers = events.filter_map(|e| match &e.kind {
            EventKind::Purchase { customer, .. } => Some((customer.as_str(), true)),
            _ => e.customer().map(|c| (c.as_str(), false)),
        });
        self.store
            .inner()
            .customers
            .prefetch(customers, |idx, purchase| {
                if purchase {
                    core.tiers.prefetch(idx);
                    core.prefetched.push(idx);
                }
            });
        for &idx in &core.prefetched {
            core.tiers.prefetch_members(idx);
        }
    }

    /// Applies one event from input `partition` (0 outside Kafka). Alerts it
    /// causes, and deadlines it lets pass under the event clock, are pushed
    /// to `out`.
    pub fn apply(
        &mut self,
        event: Event,
        partition: u16,
        out: &mut Vec<Alert>,
    ) -> Result<Applied, RejectReason> {
        let mut event = event;
        self.to_base(&mut event)?;
        let ts = event.ts;
        let wm = &mut self.core.watermark;
        if let Some(now) = wm.reference(self.core.horizon)
            && ts.0 > now.0.saturating_add(self.core.settings.skew_ms)
        {
            return Err(RejectReason::FutureTimestamp {
                ts,
                now,
                max_skew_secs: (self.core.settings.skew_ms / 1000) as u64,
            });
        }
        let late = wm.is_late(ts);
        let allowed = wm.observe(ts);
        if late {
            self.core.stats.late_events += 1;
            self.apply_now(event, partition, out);
            return Ok(Applied::Late);
        }
        match (wm.clock, allowed) {
            (Clock::PartitionMinimum, _) => {
                self.core.held.push(event, partition);
                Ok(Applied::Held)
            }
            (Clock::Event, Some(target)) if target < ts || !self.core.held.is_empty() => {
                self.core.held.push(event, partition);
                self.advance_to(target, out);
                Ok(Applied::Held)
            }
            (Clock::Event, Some(target)) => {
                self.advance_to(target, out);
                self.apply_now(event, partition, out);
                Ok(Applied::Now)
            }
            _ => {
                self.apply_now(event, partition, out);
                Ok(Applied::Now)
            }
        }
    }

    /// Converts a purchase's amount into the base currency (`[money]`), or
    /// refuses it; [`Engine::apply`] does this itself, callers that look
    /// at amounts before applying (evaluate's later purchases) call it.
    pub fn to_base(&mut self, event: &mut Event) -> Result<(), RejectReason> {
        if let EventKind::Purchase {
            amount, currency, ..
        } = &mut event.kind
        {
            *amount = self
                .core
                .money
                .to_base(*amount, currency.take())
                .map_err(|u| RejectReason::UnknownCurrency {
                    currency: u.currency.to_string(),
                    base: u.base.to_string(),
                    configured: u.configured,
                })?;
        }
        Ok(())
    }

    /// Moves the watermark to `now`: fires every deadline < `now`, runs due
    /// tier recomputes and releases held events, in time order.
    pub fn advance_to(&mut self, now: Ts, out: &mut Vec<Alert>) {
        if self.core.watermark.current().is_some_and(|w| now < w) {
            return;
        }
        let c = &self.core;
        if c.recompute_soon && c.settings.recompute_change.is_some() && c.on_wall_clock() {
            // Restored thresholds first catch up with the restored customers.
            self.recompute(now, out, false);
        }
        loop {
            let held = self.core.held.first_ts().filter(|&t| t <= now);
            let timer = self.core.timers.first().filter(|&(t, _)| t < now);
            let recompute = self.core.next_recompute.filter(|&t| t < now);
            // Time first; at equal times the order of `Due` (events, then
            // timers, then recomputes) matches "a deadline fires strictly
            // after its time".
            let next = [
                held.map(|t| (t, Due::Held)),
                timer.map(|(t, _)| (t, Due::Timer)),
                recompute.map(|t| (t, Due::Recompute)),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some((t, due)) = next else { break };
            self.core.watermark.set(t);
            match due {
                Due::Held => {
                    if let Some(h) = self.core.held.pop() {
                        self.apply_now(h.event, h.partition, out);
                    }
                }
                Due::Timer => {
                    if let Some((t, idx)) = self.core.timers.pop_first() {
                        self.fire_timer(t, idx, out);
                    }
                }
                Due::Recompute => self.recompute(t, out, true),
            }
        }
        self.core.watermark.set(now);
        if let Some(w) = self.core.watermark.current() {
            self.store
                .inner()
                .watermark
                .store(w.0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn fire_timer(&mut self, t: Ts, idx: u32, out: &mut Vec<Alert>) {
        let inner = self.store.inner();
        let Some(mut c) = inner.customers.get_mut(idx) else {
            return;
        };
        c.pending = MaybeTs::NONE;
        let scope = &mut Scope {
            roster: &inner.roster,
            inner,
            out,
            since: None,
        };
        self.core.reconcile(&mut c, idx, t, Point::Timer, scope);
    }
}

/// Each segment's rule limits, compiled.
fn limits_of(s: &Segmentation, risk: &RiskSettings) -> Box<[Limits]> {
    s.segments
        .iter()
        .map(|seg| Limits::new(&seg.rules, risk))
        .collect()
}

/// What is due when the watermark advances, in the order handled at equal times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A held event (allowed lateness) is released.
    Held,
    /// A customer's timer pops.
    Timer,
    /// Tier thresholds are recomputed.
    Recompute,
}

impl Core {
    /// An applied event's time as its episodes' identity, under the wall
    /// clock only (the event clocks already run on event time, and replay's
    /// ids stay as they were).
    fn since(&self, ts: Ts) -> Option<Ts> {
        self.on_wall_clock().then_some(ts)
    }

    fn on_wall_clock(&self) -> bool {
        self.watermark.clock == Clock::Wall
    }

    /// The rule limits of `c`'s segment.
    fn limits(&self, c: &Customer) -> &Limits {
        &self.limits[usize::from(c.segment())]
    }

    /// The tier `c` belongs in: A for a key account, else what its ranking
    /// group's thresholds give its monetary.
    fn tier_for(&self, c: &Customer) -> Tier {
        if c.is_key_account() {
            return Tier::A;
        }
        self.thresholds[self.segments.group(c.segment())].classify(c.monetary_total())
    }

    /// Puts `c`'s monetary into its ranking group (a key account into none).
    fn rank(&mut self, idx: u32, c: &Customer) {
        let monetary = if c.is_key_account() {
            0.0
        } else {
            c.monetary_total()
        };
        self.tiers
            .place(idx, self.segments.group(c.segment()), monetary);
    }

    /// Gives `c` the tier it belongs in, keeping the counts of segment and
    /// tier in step with where it `was`; whether either moved.
    fn settle(&mut self, c: &mut Customer, was: (u8, Tier)) -> bool {
        c.set_tier(self.tier_for(c));
        let now = (c.segment(), c.tier());
        if now != was {
            self.tiers.moved(was, now);
        }
        now != was
    }

    /// Publishes every segment's thresholds to readers.
    fn publish_thresholds(&self, inner: &store::Inner) {
        let names = self.segments.names();
        *inner.thresholds.write() = names
            .iter()
            .enumerate()
            .map(|(s, name)| (name.clone(), self.thresholds[self.segments.group(s as u8)]))
            .collect();
    }
}

#[cfg(test)]
mod tests;
