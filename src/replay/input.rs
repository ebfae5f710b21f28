//! Replay's sources: native files read in order as one stream, and
//! `--input TOPIC=FILE` files read through their topic's mapping, merged
//! in event time.
//!
//! The next line handed out is the earliest head among the inputs (ties:
//! input order), each input read in its own order. The engine's event
//! clock then never passes an input that is not exhausted, so over
//! time-ordered exports the result is that of `run` over the topics with
//! `engine.clock = "event"`, whose watermark is the minimum over partitions.

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::path::PathBuf;
use std::rc::Rc;

use super::{ReplayError, open_input, read_line_bounded, trim_line};
use crate::engine::event::{DecodeLimits, Event, RejectReason, Ts};
use crate::mapping::{Mapped, Mapping};

/// One line, decoded.
pub struct Line {
    /// The file it came from, as given.
    pub file: Rc<str>,
    /// 1-based line number in it.
    pub no: u64,
    /// The line (empty when over the size limit).
    pub raw: Vec<u8>,
    /// What it became.
    pub decoded: Decoded,
    /// Which of the inputs it came from (see [`Sources::locate`]).
    pub input: usize,
}

/// What a line became.
pub enum Decoded {
    /// An event to apply.
    Event(Event),
    /// Skipped by its mapping (`filtered`, `deleted`), with the topic.
    Skipped(&'static str, Rc<str>),
    /// Rejected, with the reason.
    Rejected(RejectReason),
}

impl Line {
    fn ts(&self) -> Option<Ts> {
        match &self.decoded {
            Decoded::Event(e) => Some(e.ts),
            _ => None,
        }
    }
}

/// One stream: files read one after another, through a mapping or native.
struct Input<'m> {
    paths: VecDeque<PathBuf>,
    reader: Option<(Rc<str>, Box<dyn BufRead>, u64)>,
    mapping: Option<&'m Mapping>,
    topic: Rc<str>,
    head: Option<Line>,
}

/// Every input of a replay.
pub struct Sources<'m> {
    inputs: Vec<Input<'m>>,
    limits: DecodeLimits,
    /// Line buffers handed back, reused so reading allocates nothing.
    pool: Vec<Vec<u8>>,
}

impl<'m> Sources<'m> {
    /// Native `files` (one stream, in order) and `mapped` (topic, file)
    /// pairs, each read through the mapping of its topic in `mappings`.
    pub fn new(
        files: &[PathBuf],
        mapped: &[(String, PathBuf)],
        mappings: &'m [Mapping],
        limits: DecodeLimits,
    ) -> Result<Self, ReplayError> {
        let mut inputs = Vec::new();
        if !files.is_empty() {
            inputs.push(Input::new(files.iter().cloned().collect(), None, ""));
        }
        for (topic, path) in mapped {
            let mapping = mappings
                .iter()
                .find(|m| m.topic == *topic)
                .ok_or_else(|| ReplayError::Unmapped(topic.clone()))?;
            inputs.push(Input::new(
                VecDeque::from([path.clone()]),
                Some(mapping),
                topic,
            ));
        }
        Ok(Self {
            inputs,
            limits,
            pool: Vec::new(),
        })
    }

    /// The next line in merge order; `None` when every input is exhausted.
    pub fn next_line(&mut self) -> Result<Option<Line>, ReplayError> {
        // One input has nothing to merge: no head is parked (each line is
        // moved once less, measurable on the native path).
        if let [input] = &mut self.inputs[..] {
            // Its lines are input 0 already.
            return input.read(self.limits, &mut self.pool);
        }
        let mut best: Option<(usize, Option<Ts>)> = None;
        for i in 0..self.inputs.len() {
            let input = &mut self.inputs[i];
            if input.head.is_none() {
                input.head = input.read(self.limits, &mut self.pool)?;
            }
            let Some(head) = &input.head else { continue };
            let ts = head.ts();
            if ts.is_none() {
                // Rejects and skips do not wait for time order.
                best = Some((i, None));
                break;
            }
            if best.is_none_or(|(_, b)| ts < b) {
                best = Some((i, ts));
            }
        }
        Ok(best.and_then(|(i, _)| {
            let mut line = self.inputs[i].head.take()?;
            line.input = i;
            Some(line)
        }))
    }

    /// Names the pointer of the field `reason` concerns when the line of
    /// `input` (its [`Line::input`]) was mapped (a reason found after decoding, such as `unknown_currency`).
    pub fn locate(&self, input: usize, reason: RejectReason) -> RejectReason {
        match self.inputs.get(input).and_then(|i| i.mapping) {
            Some(m) => m.locate(reason),
            None => reason,
        }
    }

    /// Hands a line's buffer back for reuse.
    pub fn recycle(&mut self, mut raw: Vec<u8>) {
        raw.clear();
        self.pool.push(raw);
    }
}

impl<'m> Input<'m> {
    fn new(paths: VecDeque<PathBuf>, mapping: Option<&'m Mapping>, topic: &str) -> Self {
        Self {
            paths,
            reader: None,
            mapping,
            topic: topic.into(),
            head: None,
        }
    }

    /// The next non-blank line of this input, decoded.
    fn read(
        &mut self,
        limits: DecodeLimits,
        pool: &mut Vec<Vec<u8>>,
    ) -> Result<Option<Line>, ReplayError> {
        let mut raw = pool.pop().unwrap_or_default();
        loop {
            if self.reader.is_none() {
                let Some(path) = self.paths.pop_front() else {
                    pool.push(raw);
                    return Ok(None);
                };
                let shown: Rc<str> = path.display().to_string().into();
                let reader = open_input(&path).map_err(|source| input_error(&shown, source))?;
                self.reader = Some((shown, reader, 0));
            }
            let Some((file, reader, no)) = &mut self.reader else {
                continue;
            };
            raw.clear();
            let Some(size) = read_line_bounded(reader.as_mut(), &mut raw, limits.max_event_bytes)
                .map_err(|source| input_error(file, source))?
            else {
                self.reader = None;
                continue;
            };
            *no += 1;
            let whole = size == raw.len();
            let line = trim_line(&raw);
            if whole && line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let decoded = if !whole {
                Decoded::Rejected(RejectReason::TooLarge {
                    size,
                    limit: limits.max_event_bytes,
                })
            } else {
                match crate::mapping::decode(self.mapping, None, Some(line), limits) {
                    Ok(Mapped::Event(e)) => Decoded::Event(e),
                    Ok(Mapped::Skipped(s)) => Decoded::Skipped(s.as_str(), self.topic.clone()),
                    Err(r) => Decoded::Rejected(r),
                }
            };
            let len = trim_line(&raw).len();
            raw.truncate(len);
            return Ok(Some(Line {
                file: file.clone(),
                no: *no,
                raw,
                decoded,
                input: 0,
            }));
        }
    }
}

fn input_error(file: &str, source: io::Error) -> ReplayError {
    ReplayError::Input {
        path: file.to_string(),
        source,
    }
}
