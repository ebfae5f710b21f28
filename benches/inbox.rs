//! The retention inbox's memory and its timer queue: heap bytes per open
//! episode at 100k episodes (each with an action record, as a busy team
//! leaves them), and the cost of a wake-up tick with nothing due.
//!
//! `cargo bench --bench inbox [-- --episodes N]`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use churnwatch::engine::event::Ts;
use churnwatch::inbox::{Action, Inbox, Published};

/// The system allocator, counting the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const T: i64 = 1_767_225_600_000;

/// An alert as the engine publishes it (the signals of a real one).
fn alert(i: usize) -> Published {
    Published {
        alert_id: format!("{i:032x}"),
        status: "firing".into(),
        rule: "purchase_recency".into(),
        cause: None,
        customer_id: format!("C{i:08}"),
        tier: "A".into(),
        segment: "default".into(),
        at: Ts(T + i as i64),
        reason: "no purchase for 41 days (tier A limit 30 days)".into(),
        signals: serde_json::json!({
            "risk": 72, "recency_days": 41.2, "frequency_90d": 3, "monetary": 18250.5,
            "days_since_contact": 12.0, "account_rep": format!("R{:04}", i % 300),
            "rep_handoffs_180d": 1, "open_tickets": 0, "open_complaints": 0,
            "days_since_first_seen": 812.0
        }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--episodes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let before = LIVE.load(Ordering::Relaxed);
    let inbox = Inbox::default();
    for i in 0..n {
        inbox.alert(alert(i));
        let mut l = inbox.lifecycle_of(&format!("{i:032x}"));
        let acted = l.apply(
            Action::Snooze {
                until: Ts(T + 86_400_000 + i as i64),
                reason: Some("calling back next week".into()),
            },
            "retention-lead",
            Ts(T + n as i64),
        );
        if acted.is_ok() {
            inbox.lifecycle(l, i as i64);
        }
    }
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "inbox {n} open episodes, each snoozed once: {} heap bytes, {} B per open episode",
        bytes,
        bytes / n as isize
    );
    let rounds = 1_000;
    let start = Instant::now();
    for r in 0..rounds {
        assert!(inbox.wake(Ts(T + r)).is_empty());
    }
    println!(
        "wake-up tick, nothing due, {n} snoozes queued: {:.0} ns",
        start.elapsed().as_nanos() as f64 / rounds as f64
    );
    let start = Instant::now();
    let woke = inbox.wake(Ts(T + 86_400_000 + n as i64 / 100));
    println!(
        "wake-up tick, 1% due: {} woke in {:.2} ms",
        woke.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
}
