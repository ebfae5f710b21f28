//! Support tickets: each customer's open ones (at most
//! `engine.max_open_tickets`, the oldest forgotten first) and the counts
//! the risk score and the rules read.

use super::Core;
use super::customer::Customer;
use super::event::TicketStatus;

impl Core {
    pub(super) fn ticket(
        &mut self,
        c: &mut Customer,
        idx: u32,
        ticket: u64,
        status: TicketStatus,
        complaint: bool,
    ) {
        let close = |c: &mut Customer, complaint: bool| {
            c.open_tickets = c.open_tickets.saturating_sub(1);
            if complaint {
                c.open_complaints = c.open_complaints.saturating_sub(1);
            }
        };
        match status {
            TicketStatus::Opened => {
                let open = self.tickets.entry(idx).or_default();
                if open.iter().any(|&(t, _)| t == ticket) {
                    return;
                }
                if open.len() >= usize::from(self.settings.max_open_tickets) {
                    // The oldest is forgotten, so one customer's state stays bounded.
                    let (_, was_complaint) = open.remove(0);
                    close(c, was_complaint);
                    self.stats.tickets_forgotten += 1;
                }
                open.push((ticket, complaint));
                c.open_tickets = c.open_tickets.saturating_add(1);
                if complaint {
                    c.open_complaints = c.open_complaints.saturating_add(1);
                }
            }
            TicketStatus::Resolved => {
                let Some(open) = self.tickets.get_mut(&idx) else {
                    return;
                };
                if let Some(i) = open.iter().position(|&(t, _)| t == ticket) {
                    let (_, was_complaint) = open.remove(i);
                    close(c, was_complaint);
                }
                if open.is_empty() {
                    self.tickets.remove(&idx);
                }
            }
        }
    }
}
