//! One customer event applied to its customer: resolve or create the
//! record, update its windows, re-rank and re-tier it, and run the rules
//! it can trigger.

use super::alert::Alert;
use super::customer::{Customer, KEY_BY_EVENT, KEY_BY_LIST, Stamp};
use super::event::{Event, EventKind, TicketStatus, Ts};
use super::reconcile::Scope;
use super::rep;
use super::rule::Point;

/// The customer-specific part of an event, once its customer is resolved.
enum Body {
    Purchase(f64),
    /// `None`: a rep the full roster cannot hold.
    Call(Option<rep::RepIdx>),
    Ticket(u64, TicketStatus, bool),
}

impl super::Engine {
    pub(super) fn apply_now(&mut self, event: Event, partition: u16, out: &mut Vec<Alert>) {
        let ts = event.ts;
        if self.core.next_recompute.is_none() {
            // Recomputes start on the hour after the first applied event.
            let every = self.core.settings.recompute_ms;
            self.core.next_recompute = Some(Ts((ts.0.div_euclid(every) + 1) * every));
        }
        let t = self.core.watermark.current().map_or(ts, |w| w.max(ts));
        let kind = event.kind.event_type();
        let (customer, body) = match event.kind {
            EventKind::Roster { rep, status } => {
                self.roster_event(&rep, status, t, ts, out);
                return;
            }
            EventKind::Purchase {
                customer, amount, ..
            } => (customer, Body::Purchase(amount)),
            EventKind::Call { customer, rep, .. } => {
                let roster = &self.store.inner().roster;
                let found = roster.read().lookup(&rep);
                let rep = found.or_else(|| roster.write().intern(&rep));
                (customer, Body::Call(rep))
            }
            EventKind::Ticket {
                customer,
                ticket,
                status,
                complaint,
            } => (customer, Body::Ticket(ticket, status, complaint)),
        };
        let purchase = matches!(body, Body::Purchase(_));
        let named = event.segment.as_deref().map(|n| self.core.segments.find(n));
        if let Some(None) = named {
            self.core.stats.unknown_segments += 1;
        }
        let segment = named.map(|n| n.unwrap_or(self.core.segments.default()));
        let inner = self.store.inner();
        let segments = &self.core.segments;
        let Some((idx, created, mut c)) = inner.customers.entry(&customer, || {
            let mut c = Customer::new(customer.clone(), ts, partition);
            c.set_segment(segment.unwrap_or(segments.default()));
            if segments.listed(&customer) {
                c.set_key_flags(KEY_BY_LIST);
            }
            c
        }) else {
            return;
        };
        if created {
            self.core.tiers.insert(idx, c.segment());
        }
        if let (Some(id), Some(hours)) = (event.id, self.core.settings.dedup_hours)
            && c.seen.repeat(id, ts, hours)
        {
            self.core.stats.duplicates[kind as usize] += 1;
            return;
        }
        let scope = &mut Scope {
            roster: &inner.roster,
            inner,
            out,
            since: self.core.since(ts),
        };
        let core = &mut self.core;
        // Only a customer whose earliest timer is before `t` can have
        // something due that the timer queue has not fired yet.
        if c.pending.get().is_some_and(|p| p < t) {
            core.reconcile(&mut c, idx, t, Point::Before, scope);
        }
        if ts < c.first_seen.get() {
            c.first_seen = Stamp::new(ts);
        }
        // The latest event naming a segment or a key account wins; a late
        // one cannot tell it is the latest, and changes neither.
        if ts >= t || created {
            let was = (c.segment(), c.tier(), c.key_flags());
            c.set_segment(segment.unwrap_or(was.0));
            match event.key_account {
                Some(true) => c.set_key_flags(was.2 | KEY_BY_EVENT),
                Some(false) => c.set_key_flags(was.2 & !KEY_BY_EVENT),
                None => {}
            }
            if created || (c.segment(), c.key_flags()) != (was.0, was.2) {
                // Both rankings it left and joined changed.
                core.dirty |= !created;
                core.rank(idx, &c);
                core.settle(&mut c, (was.0, was.1));
            }
        }
        let w = core.settings.windows;
        match body {
            Body::Purchase(amount) => {
                c.purchase(ts, amount, &w);
                core.dirty = true;
                core.rank(idx, &c);
                let was = (c.segment(), c.tier());
                core.settle(&mut c, was);
            }
            Body::Call(rep) => c.call(ts, rep, &w),
            Body::Ticket(ticket, status, complaint) => {
                core.ticket(&mut c, idx, ticket, status, complaint)
            }
        }
        core.reconcile(&mut c, idx, t, Point::Event, scope);
        drop(c);
        if purchase {
            self.core.purchases.0 += 1;
            self.recompute_if_moved(t, out);
        }
    }
}
