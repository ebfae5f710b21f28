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
pub mod customer;
pub mod event;
pub(crate) mod ids;
pub mod rep;
pub mod rule;
pub mod settings;
pub mod store;
pub mod tier;
pub mod watermark;
pub mod window;

use rustc_hash::FxHashMap;

use alert::{Alert, AlertId, Limit, Signals, Status, Trigger};
use customer::{Customer, MaybeTs, Windows};
use event::{DAY_MS, DecodeLimits, Event, EventKind, RejectReason, RepStatus, TicketStatus, Ts};
use rep::Roster;
use rule::{Check, Limits};
pub use settings::Settings;
use store::Store;
use tier::{Thresholds, TierIndex};
use watermark::{Clock, Reorder, Timers, Watermark};

/// One input partition's customers as plain data (snapshots, hand-over).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartitionState {
    pub partition: u16,
    pub customers: Vec<CustomerState>,
    /// Rep ids (and departure times) in the order of the indexes customers
    /// refer to: indexes are local to an engine, names are not.
    pub reps: Vec<(event::RepKey, Option<Ts>)>,
    pub clock: ClockState,
}

/// A customer with its open episodes and open tickets.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CustomerState {
    pub customer: Customer,
    pub episodes: Vec<(Check, Ts)>,
    pub tickets: Vec<(u64, bool)>,
}

/// Engine-wide time state, so a restored engine ranks and rolls windows as
/// the one that wrote the snapshot did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClockState {
    pub watermark: Option<Ts>,
    pub next_recompute: Option<Ts>,
    pub monetary_epoch: Option<u32>,
    pub threshold_a: f64,
    pub threshold_b: f64,
}

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
    pub late_events: u64,
    pub recomputes: u64,
    pub monetary_rollovers: u64,
}

/// The point in time at which a customer's checks are reconciled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    /// Catching up a customer's own deadlines before applying an event.
    Before,
    /// A timer popped: the watermark is strictly past `t`.
    Timer,
    /// After applying an event about the customer.
    Event,
    /// After a roster event about the customer's rep.
    Roster,
    /// After a tier recompute changed the customer's tier.
    Recompute,
}

impl Point {
    /// Whether the watermark is strictly past the point's time, so a
    /// deadline equal to it has passed.
    fn inclusive(self) -> bool {
        matches!(self, Point::Timer | Point::Recompute)
    }
}

/// [`Settings`] compiled once for the hot path.
#[derive(Debug, Clone, Copy)]
struct Tuned {
    limits: Limits,
    windows: Windows,
    decode: DecodeLimits,
    skew_ms: i64,
    a_percent: f64,
    b_percent: f64,
    recompute_ms: i64,
    handoff_window_days: f64,
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
    thresholds: Thresholds,
    next_recompute: Option<Ts>,
    monetary_epoch: Option<u32>,
    /// Monetary changed since the last recompute.
    dirty: bool,
    /// Open tickets by (customer, ticket hash) → is a complaint.
    tickets: FxHashMap<(u32, u64), bool>,
    /// Wall time the caller last reported, bounding future skew under the
    /// event clock.
    horizon: Option<Ts>,
    stats: Stats,
    /// Scratch of [`Engine::prefetch`]: buyers found, whose rank-bin
    /// entries are requested once their positions have arrived.
    prefetched: Vec<u32>,
}

pub struct Engine {
    store: Store,
    core: Core,
    /// The engine's own roster, read without a lock on the hot path; the
    /// store holds a mirror for readers, updated when a rep is added or
    /// changes status.
    roster: Roster,
}

impl Engine {
    /// An engine with a store of its own.
    pub fn new(settings: &Settings, clock: Clock) -> Self {
        Self::with_store(settings, clock, Store::default())
    }

    /// An engine writing into `store`, which others may read concurrently.
    pub fn with_store(s: &Settings, clock: Clock, store: Store) -> Self {
        let settings = Tuned {
            limits: Limits::new(&s.rules),
            windows: Windows::new(s),
            decode: DecodeLimits {
                max_amount: s.max_amount,
                max_event_bytes: s.max_event_bytes,
            },
            skew_ms: s.max_future_skew.as_millis() as i64,
            a_percent: s.tiers.a_percent,
            b_percent: s.tiers.b_percent,
            recompute_ms: s.tiers.recompute_interval.as_millis() as i64,
            handoff_window_days: s.windows.handoffs.as_secs_f64() / 86_400.0,
        };
        Self {
            store,
            core: Core {
                settings,
                watermark: Watermark::new(clock, s.allowed_lateness.as_millis() as i64),
                timers: Timers::default(),
                held: Reorder::default(),
                tiers: TierIndex::new(),
                thresholds: Thresholds::NONE,
                next_recompute: None,
                monetary_epoch: None,
                dirty: false,
                tickets: FxHashMap::default(),
                horizon: None,
                stats: Stats::default(),
                prefetched: Vec::new(),
            },
            roster: Roster::default(),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn decode_limits(&self) -> DecodeLimits {
        self.core.settings.decode
    }

    pub fn watermark(&self) -> Option<Ts> {
        self.core.watermark.current()
    }

    pub fn thresholds(&self) -> Thresholds {
        self.core.thresholds
    }

    /// Customers per tier, indexed by [`Tier::index`].
    pub fn tier_counts(&self) -> [u64; 3] {
        self.core.tiers.counts()
    }

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
        for e in events.clone() {
            if let EventKind::Call { rep, .. } = &e.kind {
                self.roster.prefetch(rep);
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

    /// A copy of partition `partition`'s state.
    pub fn partition_state(&self, partition: u16) -> PartitionState {
        let mut states = self.partition_states(&[partition]);
        states.pop().unwrap_or_else(|| self.empty_state(partition))
    }

    /// Copies of the given partitions' states, in the order asked, from one
    /// pass over the customers (a snapshot round of every owned partition
    /// costs one scan, not one per partition).
    pub fn partition_states(&self, partitions: &[u16]) -> Vec<PartitionState> {
        let inner = self.store.inner();
        let mut states: Vec<PartitionState> =
            partitions.iter().map(|&p| self.empty_state(p)).collect();
        let slot: FxHashMap<u16, usize> = partitions
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, i))
            .collect();
        let mut tickets: FxHashMap<u32, Vec<(u64, bool)>> = FxHashMap::default();
        for (&(idx, ticket), &complaint) in &self.core.tickets {
            tickets.entry(idx).or_default().push((ticket, complaint));
        }
        inner.customers.for_each(|idx, c| {
            let Some(&i) = slot.get(&c.partition) else {
                return;
            };
            let episodes = Check::ALL
                .into_iter()
                .filter(|k| c.is_firing(k.bit()))
                .filter_map(|k| inner.episodes.get(&(idx, k)).map(|t| (k, *t)))
                .collect();
            states[i].customers.push(CustomerState {
                customer: c.clone(),
                episodes,
                tickets: tickets.remove(&idx).unwrap_or_default(),
            });
        });
        states
    }

    /// A partition without customers, with the engine-wide roster and clock.
    fn empty_state(&self, partition: u16) -> PartitionState {
        let c = &self.core;
        PartitionState {
            partition,
            customers: Vec::new(),
            reps: self
                .roster
                .entries()
                .map(|(id, departed)| (id.clone(), departed))
                .collect(),
            clock: ClockState {
                watermark: c.watermark.current(),
                next_recompute: c.next_recompute,
                monetary_epoch: c.monetary_epoch,
                threshold_a: c.thresholds.a,
                threshold_b: c.thresholds.b,
            },
        }
    }

    /// Loads a partition's state. Customers already present stay as they
    /// are; engine-wide time state is taken only where this engine has none.
    /// Deadlines already past fire, with their original `at`, at the next
    /// advance.
    pub fn restore_partition(&mut self, state: PartitionState) -> usize {
        let inner = self.store.inner();
        let reps: Vec<Option<rep::RepIdx>> = state
            .reps
            .iter()
            .map(|(name, departed)| {
                let mut mirror = inner.roster.write();
                let idx = self.roster.intern(name)?;
                mirror.intern(name);
                // A departure already known must hold before the roster topic
                // is read again, or restored alerts would resolve.
                if departed.is_some() {
                    self.roster.set_departed(idx, *departed);
                    mirror.set_departed(idx, *departed);
                }
                Some(idx)
            })
            .collect();
        let mut restored = 0;
        for CustomerState {
            mut customer,
            episodes,
            tickets,
        } in state.customers
        {
            customer.partition = state.partition;
            customer.account_rep = customer
                .account_rep
                .get()
                .and_then(|r| reps.get(r.0 as usize).copied().flatten())
                .map_or(customer::MaybeRep::NONE, customer::MaybeRep::some);
            let (tier, monetary, pending) = (
                customer.tier,
                customer.monetary_total(),
                customer.pending.get(),
            );
            let Some(idx) = inner.customers.insert(customer) else {
                continue;
            };
            self.core.tiers.insert(idx);
            self.core.tiers.place(idx, monetary);
            self.core.tiers.moved(tier::Tier::C, tier);
            self.core.timers.reschedule(idx, None, pending);
            for (check, at) in episodes {
                inner.episodes.insert((idx, check), at);
            }
            for (ticket, complaint) in tickets {
                self.core.tickets.insert((idx, ticket), complaint);
            }
            restored += 1;
        }
        let (c, k) = (&mut self.core, state.clock);
        if c.watermark.current().is_none()
            && let Some(w) = k.watermark
        {
            c.watermark.set(w);
        }
        c.next_recompute = c.next_recompute.or(k.next_recompute);
        c.monetary_epoch = c.monetary_epoch.or(k.monetary_epoch);
        if c.thresholds == Thresholds::NONE {
            c.thresholds = Thresholds {
                a: k.threshold_a,
                b: k.threshold_b,
            };
        }
        c.dirty = true;
        restored
    }

    /// Forgets every customer of input `partition` and its held events, for
    /// a partition revoked in a rebalance (its new owner rebuilds them).
    /// Returns how many customers were dropped. A scan: rebalances are rare.
    pub fn evict_partition(&mut self, partition: u16) -> usize {
        let inner = self.store.inner();
        let gone = inner.customers.remove_where(|c| c.partition == partition);
        for (idx, c) in &gone {
            self.core.tiers.remove(*idx, c.tier);
            self.core.timers.reschedule(*idx, c.pending.get(), None);
            for check in Check::ALL {
                inner.episodes.remove(&(*idx, check));
            }
        }
        let dropped: rustc_hash::FxHashSet<u32> = gone.iter().map(|g| g.0).collect();
        self.core
            .tickets
            .retain(|(idx, _), _| !dropped.contains(idx));
        self.core.held.retain(|h| h.partition != partition);
        self.core.dirty = true;
        gone.len()
    }

    /// Moves the watermark to `now`: fires every deadline < `now`, runs due
    /// tier recomputes and releases held events, in time order.
    pub fn advance_to(&mut self, now: Ts, out: &mut Vec<Alert>) {
        if self.core.watermark.current().is_some_and(|w| now < w) {
            return;
        }
        loop {
            let held = self.core.held.first_ts().filter(|&t| t <= now);
            let timer = self.core.timers.first().filter(|&(t, _)| t < now);
            let recompute = self.core.next_recompute.filter(|&t| t < now);
            // Order: time first; at equal times events, then timers, then
            // recomputes, matching "a deadline fires strictly after its time".
            let next = [
                held.map(|t| (t, 0u8)),
                timer.map(|(t, _)| (t, 1)),
                recompute.map(|t| (t, 2)),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some((t, kind)) = next else { break };
            self.core.watermark.set(t);
            match kind {
                0 => {
                    if let Some(h) = self.core.held.pop() {
                        self.apply_now(h.event, h.partition, out);
                    }
                }
                1 => {
                    if let Some((t, idx)) = self.core.timers.pop_first() {
                        self.fire_timer(t, idx, out);
                    }
                }
                _ => self.recompute(t, out),
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

    fn apply_now(&mut self, event: Event, partition: u16, out: &mut Vec<Alert>) {
        let ts = event.ts;
        if self.core.next_recompute.is_none() {
            // Recomputes start on the hour after the first applied event.
            let every = self.core.settings.recompute_ms;
            self.core.next_recompute = Some(Ts((ts.0.div_euclid(every) + 1) * every));
        }
        let t = self.core.watermark.current().map_or(ts, |w| w.max(ts));
        let (customer, body) = match event.kind {
            EventKind::Roster { rep, status } => {
                self.roster_event(&rep, status, t, out);
                return;
            }
            EventKind::Purchase { customer, amount } => (customer, Body::Purchase(amount)),
            EventKind::Call { customer, rep, .. } => {
                let rep = match self.roster.lookup(&rep) {
                    Some(r) => Some(r),
                    None => {
                        self.store.inner().roster.write().intern(&rep);
                        self.roster.intern(&rep)
                    }
                };
                (customer, Body::Call(rep))
            }
            EventKind::Ticket {
                customer,
                ticket,
                status,
                complaint,
            } => (customer, Body::Ticket(ticket, status, complaint)),
        };
        let inner = self.store.inner();
        let Some((idx, created, mut c)) = inner
            .customers
            .entry(&customer, || Customer::new(customer.clone(), ts, partition))
        else {
            return;
        };
        if created {
            self.core.tiers.insert(idx);
        }
        let scope = &mut Scope {
            roster: &self.roster,
            inner,
            out,
        };
        let core = &mut self.core;
        // Only a customer whose earliest timer is before `t` can have
        // something due that the timer queue has not fired yet.
        if c.pending.get().is_some_and(|p| p < t) {
            core.reconcile(&mut c, idx, t, Point::Before, scope);
        }
        if ts < c.first_seen {
            c.first_seen = ts;
        }
        let w = core.settings.windows;
        match body {
            Body::Purchase(amount) => {
                c.purchase(ts, amount, &w);
                core.dirty = true;
                let monetary = c.monetary_total();
                core.tiers.place(idx, monetary);
                let tier = core.thresholds.classify(monetary);
                if tier != c.tier {
                    core.tiers.moved(c.tier, tier);
                    c.tier = tier;
                }
            }
            Body::Call(rep) => c.call(ts, rep, &w),
            Body::Ticket(ticket, status, complaint) => {
                core.ticket(&mut c, idx, ticket, status, complaint)
            }
        }
        core.reconcile(&mut c, idx, t, Point::Event, scope);
    }

    fn fire_timer(&mut self, t: Ts, idx: u32, out: &mut Vec<Alert>) {
        let inner = self.store.inner();
        let Some(mut c) = inner.customers.get_mut(idx) else {
            return;
        };
        c.pending = MaybeTs::NONE;
        let scope = &mut Scope {
            roster: &self.roster,
            inner,
            out,
        };
        self.core.reconcile(&mut c, idx, t, Point::Timer, scope);
    }

    fn roster_event(
        &mut self,
        rep: &event::RepKey,
        status: RepStatus,
        t: Ts,
        out: &mut Vec<Alert>,
    ) {
        let inner = self.store.inner();
        let departed = (status == RepStatus::Departed).then_some(t);
        let changed = {
            let mut mirror = inner.roster.write();
            mirror.intern(rep);
            // A rep the full roster cannot hold is nobody's account rep.
            self.roster.intern(rep).filter(|&idx| {
                mirror.set_departed(idx, departed);
                self.roster.set_departed(idx, departed)
            })
        };
        let Some(rep_idx) = changed else { return };
        let scope = &mut Scope {
            roster: &self.roster,
            inner,
            out,
        };
        inner.customers.for_each_mut(|idx, c| {
            if c.account_rep.get() == Some(rep_idx) {
                self.core.reconcile(c, idx, t, Point::Before, scope);
                self.core.reconcile(c, idx, t, Point::Roster, scope);
            }
        });
    }

    /// Recomputes tier thresholds at `t` and re-tiers the customers they move.
    fn recompute(&mut self, t: Ts, out: &mut Vec<Alert>) {
        let core = &mut self.core;
        core.next_recompute = Some(Ts(t.0 + core.settings.recompute_ms));
        core.stats.recomputes += 1;
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
        let scope = &mut Scope {
            roster: &self.roster,
            inner,
            out,
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

/// What reconciling a customer needs besides the engine's own state.
struct Scope<'a> {
    roster: &'a Roster,
    inner: &'a store::Inner,
    out: &'a mut Vec<Alert>,
}

/// One change of a check's state, before it becomes an [`Alert`].
#[derive(Clone, Copy)]
struct Transition {
    check: Check,
    status: Status,
    at: Ts,
    fired_at: Ts,
    trigger: Trigger,
}

/// The customer-specific part of an event, once its customer is resolved.
enum Body {
    Purchase(f64),
    /// `None`: a rep the full roster cannot hold.
    Call(Option<rep::RepIdx>),
    Ticket(u64, TicketStatus, bool),
}

impl Core {
    fn ticket(
        &mut self,
        c: &mut Customer,
        idx: u32,
        ticket: u64,
        status: TicketStatus,
        complaint: bool,
    ) {
        match status {
            TicketStatus::Opened => {
                if self.tickets.insert((idx, ticket), complaint).is_none() {
                    c.open_tickets = c.open_tickets.saturating_add(1);
                    if complaint {
                        c.open_complaints = c.open_complaints.saturating_add(1);
                    }
                }
            }
            TicketStatus::Resolved => {
                if let Some(was_complaint) = self.tickets.remove(&(idx, ticket)) {
                    c.open_tickets = c.open_tickets.saturating_sub(1);
                    if was_complaint {
                        c.open_complaints = c.open_complaints.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// Puts a customer in the tier the thresholds in force give it and
    /// reconciles its checks if that moved it.
    fn retier(&mut self, c: &mut Customer, idx: u32, t: Ts, scope: &mut Scope<'_>) {
        let tier = self.thresholds.classify(c.monetary_total());
        if tier != c.tier {
            self.tiers.moved(c.tier, tier);
            c.tier = tier;
            self.reconcile(c, idx, t, Point::Recompute, scope);
        }
    }

    /// Brings a customer's firing checks in line with its state at `t`,
    /// emitting the transitions, then reschedules its timer.
    fn reconcile(
        &mut self,
        c: &mut Customer,
        idx: u32,
        t: Ts,
        point: Point,
        scope: &mut Scope<'_>,
    ) {
        let roster = scope.roster;
        let s = self.settings;
        for check in Check::ALL {
            let firing = c.is_firing(check.bit());
            let (holds, at, trigger) = match check {
                Check::PurchaseRecency | Check::ContactGap => {
                    let due = s.limits.due(check, c);
                    let holds = due.is_some_and(|d| d < t || (point.inclusive() && d == t));
                    match (point, due) {
                        (Point::Before | Point::Timer, Some(d)) if holds => {
                            (true, d, Trigger::Deadline)
                        }
                        (Point::Event | Point::Roster, _) if !holds => (false, t, Trigger::Event),
                        _ => (holds, t, Trigger::TierChange),
                    }
                }
                Check::Departed => {
                    let holds = s.limits.applies(check, c.tier)
                        && c.account_rep.get().is_some_and(|r| roster.is_departed(r));
                    let trigger = match point {
                        Point::Roster => Trigger::Roster,
                        Point::Recompute => Trigger::TierChange,
                        _ => Trigger::Event,
                    };
                    (holds, t, trigger)
                }
                Check::Handoffs => {
                    let count = c.handoffs.sum_at(s.windows.handoffs.index(t.0));
                    let holds = s.limits.applies(check, c.tier)
                        && count >= s.limits.handoff_threshold as f64;
                    let trigger = match point {
                        Point::Recompute => Trigger::TierChange,
                        Point::Before | Point::Timer => Trigger::WindowSlide,
                        _ => Trigger::Event,
                    };
                    (holds, t, trigger)
                }
            };
            // Handoffs only start on events or tier changes, never on the catch-up pass.
            let may_fire =
                !(check == Check::Handoffs && matches!(point, Point::Before | Point::Timer));
            if holds && !firing && may_fire {
                c.firing |= check.bit();
                scope.inner.episodes.insert((idx, check), at);
                let fired = Transition {
                    check,
                    status: Status::Firing,
                    at,
                    fired_at: at,
                    trigger,
                };
                scope.out.push(self.alert(c, fired, roster));
            } else if !holds && firing {
                c.firing &= !check.bit();
                let fired_at = scope
                    .inner
                    .episodes
                    .remove(&(idx, check))
                    .map_or(at, |(_, v)| v);
                let trigger = if point == Point::Recompute {
                    Trigger::TierChange
                } else {
                    trigger
                };
                let resolved = Transition {
                    check,
                    status: Status::Resolved,
                    at,
                    fired_at,
                    trigger,
                };
                scope.out.push(self.alert(c, resolved, roster));
            }
        }
        // Lazy timers: an entry earlier than the true deadline is allowed
        // (it pops, re-checks and reschedules), so the queue is touched only
        // when a deadline moves earlier: most events move it later.
        let next = self.next_due(c, t);
        let old = c.pending.get();
        let earlier = match (old, next) {
            (None, Some(_)) => true,
            (Some(o), Some(n)) => n < o,
            (_, None) => false,
        };
        if earlier {
            self.timers.reschedule(idx, old, next);
            c.pending = next.map_or(MaybeTs::NONE, MaybeTs::some);
        }
    }

    /// The earliest time at which one of the customer's checks can change
    /// without an event: absence deadlines of checks not firing, and the
    /// time a firing handoff count falls below the threshold.
    fn next_due(&self, c: &Customer, t: Ts) -> Option<Ts> {
        let s = &self.settings;
        let mut next: Option<Ts> = None;
        let mut consider = |d: Ts| next = Some(next.map_or(d, |n: Ts| n.min(d)));
        for check in [Check::PurchaseRecency, Check::ContactGap] {
            if !c.is_firing(check.bit())
                && let Some(d) = s.limits.due(check, c)
            {
                consider(d.max(t));
            }
        }
        if c.is_firing(Check::Handoffs.bit()) {
            let b = s.windows.handoffs;
            if let Some(e) = c
                .handoffs
                .falls_below(b.index(t.0), s.limits.handoff_threshold as f64)
            {
                consider(Ts(b.start(e)));
            }
        }
        next
    }

    fn alert(&self, c: &Customer, tr: Transition, roster: &Roster) -> Alert {
        let Transition {
            check,
            status,
            at,
            fired_at,
            trigger,
        } = tr;
        let s = &self.settings;
        let w = &s.windows;
        let limit = match check {
            Check::PurchaseRecency | Check::ContactGap => {
                Limit::Days(s.limits.limit_days(check, c.tier))
            }
            Check::Handoffs => Limit::Handoffs {
                threshold: s.limits.handoff_threshold,
                window_days: s.handoff_window_days,
            },
            Check::Departed => Limit::None,
        };
        Alert {
            alert_id: AlertId::new(&c.id, check, fired_at),
            status,
            check,
            customer_id: c.id.clone(),
            tier: c.tier,
            at,
            trigger,
            limit,
            signals: Signals {
                recency_days: c.last_purchase.get().map(|p| at.days_since(p)),
                frequency_90d: c.frequency.sum_at(w.frequency.index(at.0)) as u32,
                monetary: c.monetary.sum_at(w.monetary.index(at.0)),
                days_since_contact: c.last_contact.get().map(|l| at.days_since(l)),
                account_rep: c.account_rep.get().and_then(|r| roster.name(r)).cloned(),
                rep_handoffs_180d: c.handoffs.sum_at(w.handoffs.index(at.0)) as u32,
                open_tickets: c.open_tickets as u32,
                open_complaints: c.open_complaints as u32,
                days_since_first_seen: (at.0 - c.first_seen.0) as f64 / DAY_MS as f64,
            },
        }
    }
}

#[cfg(test)]
mod tests;
