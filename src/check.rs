//! `churnwatch check`: validates a config and shows what its mappings make
//! of sample records, so a mapping is set up in minutes rather than by
//! trial runs: the first events as churnwatch reads them, then every
//! reason a record was rejected or skipped, with an example of each.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde_json::json;

use crate::config::Config;
use crate::engine::Engine;
use crate::engine::event::{Event, EventKind};
use crate::engine::watermark::Clock;
use crate::replay::input::{Decoded, Sources};
use crate::replay::{ReplayError, compile};

/// What `check` found in the samples.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Records read.
    pub records: u64,
    /// Of them, events.
    pub events: u64,
    /// Rejected per reason code, with the first example.
    pub rejected: BTreeMap<&'static str, (u64, String)>,
    /// Skipped per cause.
    pub skipped: BTreeMap<String, u64>,
}

/// Reads `files` and `mapped` through the config, printing the first
/// `sample` events and a line per reason to `out`.
pub fn check(
    config: &Config,
    files: &[PathBuf],
    mapped: &[(String, PathBuf)],
    sample: usize,
    out: &mut dyn Write,
) -> Result<Checked, ReplayError> {
    let mappings = compile(config)?;
    let topics: Vec<&str> = mappings.iter().map(|m| m.topic.as_str()).collect();
    let io = |e: std::io::Error| ReplayError::Output(e);
    writeln!(
        out,
        "config: valid; {} mapped topic(s){}{}",
        topics.len(),
        if topics.is_empty() { "" } else { ": " },
        topics.join(", ")
    )
    .map_err(io)?;
    // The engine only converts money here: unknown currencies show up too.
    let mut engine = Engine::new(&config.engine_settings(), Clock::Event);
    let mut sources = Sources::new(files, mapped, &mappings, engine.decode_limits())?;
    let mut found = Checked::default();
    while let Some(line) = sources.next_line()? {
        found.records += 1;
        let decoded = match line.decoded {
            Decoded::Event(mut e) => match engine.to_base(&mut e) {
                Ok(()) => Decoded::Event(e),
                Err(r) => Decoded::Rejected(sources.locate(line.input, r)),
            },
            other => other,
        };
        match decoded {
            Decoded::Event(e) => {
                found.events += 1;
                if found.events <= sample as u64 {
                    writeln!(out, "event {}:{}: {}", line.file, line.no, shown(&e)).map_err(io)?;
                }
            }
            Decoded::Skipped(cause, topic) => {
                *found
                    .skipped
                    .entry(format!("{cause} in {topic}"))
                    .or_default() += 1;
            }
            Decoded::Rejected(reason) => {
                let entry = found
                    .rejected
                    .entry(reason.code())
                    .or_insert_with(|| (0, format!("{}:{}: {reason}", line.file, line.no)));
                entry.0 += 1;
            }
        }
        sources.recycle(line.raw);
    }
    writeln!(
        out,
        "{} records: {} events, {} rejected, {} skipped",
        found.records,
        found.events,
        found.rejected.values().map(|(n, _)| n).sum::<u64>(),
        found.skipped.values().sum::<u64>()
    )
    .map_err(io)?;
    for (code, (n, example)) in &found.rejected {
        writeln!(out, "rejected {code} ({n}), e.g. {example}").map_err(io)?;
    }
    for (cause, n) in &found.skipped {
        writeln!(out, "skipped {cause} ({n})").map_err(io)?;
    }
    Ok(found)
}

/// An event as churnwatch read it (amounts in the base currency; ticket
/// ids and event ids are kept as fingerprints, so shown as such).
fn shown(e: &Event) -> serde_json::Value {
    let mut v = match &e.kind {
        EventKind::Purchase {
            customer, amount, ..
        } => json!({"type": "purchase", "customer_id": customer.as_str(), "amount": amount}),
        EventKind::Call {
            customer,
            rep,
            channel,
            direction,
        } => json!({"type": "call", "customer_id": customer.as_str(), "rep_id": rep.as_str(),
            "channel": format!("{channel:?}").to_lowercase(), "direction": format!("{direction:?}").to_lowercase()}),
        EventKind::Ticket {
            customer,
            ticket,
            status,
            complaint,
        } => {
            json!({"type": "ticket", "customer_id": customer.as_str(), "ticket": format!("{ticket:016x}"),
            "status": format!("{status:?}").to_lowercase(), "complaint": complaint})
        }
        EventKind::Roster { rep, status } => {
            json!({"type": "rep", "rep_id": rep.as_str(), "status": format!("{status:?}").to_lowercase()})
        }
    };
    v["ts"] = json!(e.ts.to_string());
    v["event_id"] = json!(e.id.is_some());
    v
}
