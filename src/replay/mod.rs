//! `churnwatch replay`: the engine over JSON-lines files in event time.
//!
//! The same engine as `run`; only the source (files) and the clock (event
//! time) differ, so a replay and a live run over the same events agree.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::config::Config;
use crate::engine::Engine;
use crate::engine::alert::Alert;
use crate::engine::event::{self, RejectReason, Ts};
use crate::engine::watermark::Clock;
use crate::mapping::Mapping;

pub mod input;
use input::{Decoded, Line, Sources};

/// What to replay and where rejects go.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Native files in order; `-` is standard input.
    pub inputs: Vec<PathBuf>,
    /// `--input TOPIC=FILE`: files read through their topic's mapping,
    /// merged with the native stream in event time.
    pub mapped: Vec<(String, PathBuf)>,
    /// Advance the watermark to this time after the input, so due deadlines fire.
    pub until: Option<Ts>,
    /// JSON-lines file receiving every rejected line with its reason.
    pub dead_letter: Option<PathBuf>,
    /// Wall time bounding future skew (see `engine.max_future_skew`).
    pub now: Ts,
}

/// Input lines that became no applied event, by reason: rejected ones
/// (dead-lettered) by code, skipped ones (counted only: redeliveries) by
/// cause. Every command that reads history ends by saying these, so an
/// empty result is never silently the product of a wrong input.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Outcomes {
    /// Rejected lines per reason code.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Skipped lines per cause (and input: `filtered in shop.orders`).
    pub skipped: BTreeMap<String, u64>,
}

impl Outcomes {
    /// Counts a rejected line.
    pub fn reject(&mut self, reason: &RejectReason) {
        *self.rejected.entry(reason.code()).or_default() += 1;
    }

    /// Counts a line its input's mapping skipped.
    pub fn skip(&mut self, cause: &str, topic: &str) {
        *self
            .skipped
            .entry(format!("{cause} in {topic}"))
            .or_default() += 1;
    }

    /// Takes the redeliveries the engine skipped.
    pub fn skipped_by(&mut self, engine: &Engine) {
        let duplicates: u64 = engine.stats().duplicates.iter().sum();
        if duplicates > 0 {
            self.skipped.insert("duplicate".into(), duplicates);
        }
    }

    /// Rejected lines.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Skipped lines.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

impl std::fmt::Display for Outcomes {
    /// `2 rejected (bad_timestamp 1, missing_field 1), 1 skipped (duplicate 1)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        by_reason(f, "rejected", &self.rejected)?;
        f.write_str(", ")?;
        by_reason(f, "skipped", &self.skipped)
    }
}

/// `3 rejected (a 2, b 1)`, or `0 rejected`.
fn by_reason<K: std::fmt::Display>(
    f: &mut std::fmt::Formatter<'_>,
    verb: &str,
    by: &BTreeMap<K, u64>,
) -> std::fmt::Result {
    write!(f, "{} {verb}", by.values().sum::<u64>())?;
    let mut sep = " (";
    for (reason, n) in by {
        write!(f, "{sep}{reason} {n}")?;
        sep = ", ";
    }
    if !by.is_empty() {
        f.write_str(")")?;
    }
    Ok(())
}

/// Totals printed as the last line on stderr.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Events applied (redeliveries skipped are not).
    pub applied: u64,
    /// Lines rejected or skipped, by reason.
    pub outcomes: Outcomes,
    /// Events older than the watermark.
    pub late: u64,
    /// Alerts written.
    pub alerts: u64,
    /// Customers at the end.
    pub customers: usize,
    /// Wall time the replay took.
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.applied as f64 / secs
        } else {
            0.0
        };
        write!(
            f,
            "replay: {} events applied, {}, {} late, {} alerts, {} customers, {:.3}s elapsed, {:.0} events/s",
            self.applied, self.outcomes, self.late, self.alerts, self.customers, secs, rate
        )
    }
}

/// `--max-rejected`: how many rejected lines a replay may have and still
/// succeed, as a count or a percentage of the lines read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxRejected {
    /// At most this many.
    Count(u64),
    /// At most this share of the lines read, in percent.
    Percent(f64),
}

impl std::str::FromStr for MaxRejected {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a count (e.g. 10) or a percentage (e.g. 0.5%)");
        match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Self::Percent(p)),
                _ => Err(bad()),
            },
            None => s.trim().parse().map(Self::Count).map_err(|_| bad()),
        }
    }
}

impl Summary {
    /// Why the replay must not count as a success: nothing applied from a
    /// non-empty input, or more rejects than `max` allows.
    pub fn shortfall(&self, max: Option<MaxRejected>) -> Option<String> {
        let rejected = self.outcomes.rejected_total();
        let read = self.applied + rejected + self.outcomes.skipped_total();
        if read > 0 && self.applied == 0 {
            return Some(format!(
                "no event applied: all {read} lines were rejected or skipped"
            ));
        }
        let (over, limit) = match max? {
            MaxRejected::Count(n) => (rejected > n, n.to_string()),
            MaxRejected::Percent(p) => (rejected as f64 > read as f64 * p / 100.0, format!("{p}%")),
        };
        over.then(|| format!("{rejected} of {read} lines rejected, over --max-rejected {limit}"))
    }
}

/// A replay that could not run to the end (input rejects never are this).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An input file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The file.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
    /// `--input` names a topic without an `[[inputs]]` entry.
    #[error("--input {0}=...: the config has no [[inputs]] entry with topic = \"{0}\"")]
    Unmapped(String),
    /// A mapping of the config cannot work (refused at load already).
    #[error(transparent)]
    Mapping(crate::mapping::MappingError),
    /// Alerts could not be written (e.g. stdout closed).
    #[error("cannot write alerts: {0}")]
    Output(io::Error),
    /// The dead-letter file could not be created or written.
    #[error("cannot write dead letters to {path}: {source}")]
    DeadLetter {
        /// The file.
        path: String,
        /// What the OS said.
        source: io::Error,
    },
}

/// Replays `options.inputs` and `options.mapped`; alerts go to `alerts`
/// as JSON lines, one `file:line: reason` per reject to `diagnostics`.
pub fn replay(
    config: &Config,
    options: &ReplayOptions,
    alerts: &mut dyn Write,
    diagnostics: &mut dyn Write,
) -> Result<Summary, ReplayError> {
    let started = Instant::now();
    let mut engine = Engine::new(&config.engine_settings(), Clock::Event);
    engine.set_horizon(options.now);
    let mut dead = DeadLetters::open(options.dead_letter.as_deref())?;
    let mut sink = AlertSink {
        out: alerts,
        count: 0,
    };
    let mut summary = Summary::default();
    let mappings = compile(config)?;
    let mut sources = Sources::new(
        &options.inputs,
        &options.mapped,
        &mappings,
        engine.decode_limits(),
    )?;
    let mut batch: Vec<Line> = Vec::with_capacity(BATCH);
    let mut pending: Vec<Alert> = Vec::new();
    let mut end = false;
    while !end {
        // Decode a batch, let the engine prefetch its customers, then
        // apply it in order: the same events in the same order as one
        // by one, with the memory misses overlapped.
        let mut failure = None;
        while batch.len() < BATCH {
            match sources.next_line() {
                Ok(Some(line)) => batch.push(line),
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    end = true;
                    break;
                }
            }
        }
        engine.prefetch(batch.iter().filter_map(|l| match &l.decoded {
            Decoded::Event(e) => Some(e),
            _ => None,
        }));
        for l in batch.drain(..) {
            let applied = match l.decoded {
                Decoded::Event(ev) => engine
                    .apply(ev, 0, &mut pending)
                    .map(drop)
                    .map_err(|r| sources.locate(l.input, r)),
                Decoded::Skipped(cause, topic) => {
                    summary.outcomes.skip(cause, &topic);
                    Ok(())
                }
                Decoded::Rejected(reason) => Err(reason),
            };
            match applied {
                Ok(()) => summary.applied += 1,
                Err(reason) => {
                    summary.outcomes.reject(&reason);
                    // Diagnostics are best effort: a closed stderr must not stop the replay.
                    let _ = writeln!(diagnostics, "{}:{}: {reason}", l.file, l.no);
                    let whole = !matches!(reason, RejectReason::TooLarge { .. });
                    dead.write(&l.file, l.no, &reason, whole.then_some(&l.raw[..]))?;
                }
            }
            sources.recycle(l.raw);
            sink.write_all(&mut pending)?;
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
    if let Some(until) = options.until {
        engine.advance_to(until, &mut pending);
        sink.write_all(&mut pending)?;
    }
    sink.out.flush().map_err(ReplayError::Output)?;
    dead.flush()?;
    summary.outcomes.skipped_by(&engine);
    summary.applied -= summary.outcomes.skipped_total();
    summary.late = engine.stats().late_events;
    summary.alerts = sink.count;
    summary.customers = engine.store().len();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Every `[[inputs]]` mapping of a validated config.
pub fn compile(config: &Config) -> Result<Vec<Mapping>, ReplayError> {
    config
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| crate::mapping::compile(i, input).map_err(ReplayError::Mapping))
        .collect()
}

/// The engine's state at `cut` over the inputs: every event up to `cut`
/// applied in merge order (its alerts dropped), every later one handed to
/// `later` instead, the watermark then moved to `cut`. Rejected and
/// skipped lines are counted, not fatal. What `fit` and `evaluate` start
/// from; without a cut, the whole input is applied.
pub fn state_at(
    config: &Config,
    settings: &crate::engine::Settings,
    files: &[PathBuf],
    mapped: &[(String, PathBuf)],
    cut: Option<Ts>,
    now: Ts,
    mut later: impl FnMut(&event::Event),
) -> Result<(Engine, Outcomes), ReplayError> {
    let mut engine = Engine::new(settings, Clock::Event);
    engine.set_horizon(now);
    let mappings = compile(config)?;
    let mut sources = Sources::new(files, mapped, &mappings, engine.decode_limits())?;
    let mut pending = Vec::new();
    let mut outcomes = Outcomes::default();
    while let Some(line) = sources.next_line()? {
        let applied = match line.decoded {
            Decoded::Event(mut ev) => engine
                .to_base(&mut ev)
                .and_then(|()| {
                    if cut.is_some_and(|c| ev.ts > c) {
                        later(&ev);
                        Ok(())
                    } else {
                        engine.apply(ev, 0, &mut pending).map(drop)
                    }
                })
                .map_err(|r| sources.locate(line.input, r)),
            Decoded::Skipped(cause, topic) => {
                outcomes.skip(cause, &topic);
                Ok(())
            }
            Decoded::Rejected(reason) => Err(reason),
        };
        if let Err(reason) = applied {
            outcomes.reject(&reason);
        }
        sources.recycle(line.raw);
        pending.clear();
    }
    if let Some(cut) = cut {
        engine.advance_to(cut, &mut pending);
    }
    outcomes.skipped_by(&engine);
    Ok((engine, outcomes))
}

/// Lines decoded ahead of being applied (see [`Engine::prefetch`]).
const BATCH: usize = 32;

struct AlertSink<'a> {
    out: &'a mut dyn Write,
    count: u64,
}

impl AlertSink<'_> {
    fn write_all(&mut self, alerts: &mut Vec<Alert>) -> Result<(), ReplayError> {
        for alert in alerts.drain(..) {
            serde_json::to_writer(&mut *self.out, &alert)
                .map_err(|e| ReplayError::Output(e.into()))?;
            self.out.write_all(b"\n").map_err(ReplayError::Output)?;
            self.count += 1;
        }
        Ok(())
    }
}

/// Appends one line to `buf` keeping at most `max` bytes of it (without
/// the line end); returns the line's full length, so an over-long line is
/// measured and skipped without being held in memory. `None` at end of
/// input.
fn read_line_bounded(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<usize>> {
    let start = buf.len();
    let mut size = 0usize;
    let mut seen_any = false;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(seen_any.then_some(size));
        }
        seen_any = true;
        let (take, done) = match memchr::memchr(b'\n', chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let content = &chunk[..take];
        let content_len = content.len() - usize::from(done);
        if size + content_len <= max {
            buf.extend_from_slice(&content[..content_len]);
        }
        size += content_len;
        reader.consume(take);
        if done {
            if size > max {
                buf.truncate(start);
            }
            return Ok(Some(size));
        }
    }
}

/// An input file, or standard input for `-`.
fn open_input(path: &Path) -> io::Result<Box<dyn BufRead>> {
    Ok(if path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(BufReader::with_capacity(1 << 20, File::open(path)?))
    })
}

fn trim_line(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Rejected lines as JSON lines: source, line, reason code and message,
/// and the original text (base64 when it is not UTF-8).
struct DeadLetters {
    file: Option<(String, io::BufWriter<File>)>,
}

impl DeadLetters {
    fn open(path: Option<&Path>) -> Result<Self, ReplayError> {
        let file = match path {
            None => None,
            Some(p) => {
                let shown = p.display().to_string();
                let f = crate::state::owner_only()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(p)
                    .map_err(|source| ReplayError::DeadLetter {
                        path: shown.clone(),
                        source,
                    })?;
                Some((shown, io::BufWriter::new(f)))
            }
        };
        Ok(Self { file })
    }

    fn write(
        &mut self,
        source: &str,
        line: u64,
        reason: &RejectReason,
        raw: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        let Some((path, out)) = &mut self.file else {
            return Ok(());
        };
        let (text, b64) = match raw.map(std::str::from_utf8) {
            Some(Ok(s)) => (Some(s.to_string()), None),
            Some(Err(_)) => (
                None,
                raw.map(|r| base64::engine::general_purpose::STANDARD.encode(r)),
            ),
            None => (None, None),
        };
        let record = serde_json::json!({
            "source": source,
            "line": line,
            "reason": reason.code(),
            "detail": reason.to_string(),
            "raw": text,
            "raw_base64": b64,
        });
        let fail = |source: io::Error| ReplayError::DeadLetter {
            path: path.clone(),
            source,
        };
        serde_json::to_writer(&mut *out, &record).map_err(|e| fail(e.into()))?;
        out.write_all(b"\n").map_err(fail)
    }

    fn flush(&mut self) -> Result<(), ReplayError> {
        match &mut self.file {
            Some((path, out)) => out.flush().map_err(|source| ReplayError::DeadLetter {
                path: path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reader_measures_and_drops_long_lines() {
        let data = b"short\r\n0123456789ABCDEF\nlast";
        let mut r: &[u8] = data;
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(6));
        assert_eq!(trim_line(&buf), b"short");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(16));
        assert_eq!(trim_line(&buf), b"short", "a long line adds nothing");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(4));
        assert_eq!(buf, b"short\rlast", "lines are appended");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), None);
    }
}
