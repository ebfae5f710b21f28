//! Input mappings (`[[inputs]]`): a company's own records, read as
//! churnwatch events without a conversion job in front.
//!
//! A mapping is compiled once at start ([`compile`]): pointers into a trie,
//! formats parsed, zones loaded, every constant checked against what its
//! field accepts, so a mapping that cannot work is refused naming
//! `inputs[N].fields.X`. Decoding a record is one pass that captures only
//! the pointed-at values ([`capture`]), then the same validation the native
//! format goes through ([`crate::engine::native::assemble`]). Deterministic
//! and free of I/O, like the engine, so replay and `run` map alike.

pub mod capture;
mod compile;
pub mod time;

use std::borrow::Cow;

use serde::de::DeserializeSeed;

use crate::engine::event::{DecodeLimits, Event, EventType, RejectReason, shorten};
use crate::engine::native::{Parts, assemble};
use capture::{Capture, Node, Scalar};
pub use compile::{MappingError, compile};
use time::TimeFormat;

/// Distinct pointers a mapping may read: every field, the event type, the
/// filter and Debezium's `op` fit with room to spare.
pub const MAX_SLOTS: usize = 16;

/// What a record became.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// An event to apply.
    Event(Event),
    /// Nothing to apply, by design: counted per input and cause, not
    /// dead-lettered.
    Skipped(Skip),
}

/// Why a record was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// It failed the input's `when`.
    Filtered,
    /// A Debezium delete (`op = "d"`) or tombstone.
    Deleted,
}

impl Skip {
    /// The cause as counted (`skipped (filtered N)`, metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Filtered => "filtered",
            Skip::Deleted => "deleted",
        }
    }
}

/// One compiled `[[inputs]]` entry.
#[derive(Debug)]
pub struct Mapping {
    /// The topic.
    pub topic: String,
    /// `inputs[N] (topic)`, for messages.
    label: String,
    /// Whether the record's key must be the customer id.
    pub keyed_by_customer: bool,
    /// Whether it carries the roster.
    pub roster: bool,
    debezium: bool,
    trie: Node,
    event: EventRule,
    when: Option<(usize, String, Vec<String>)>,
    /// Indexed by [`Target`].
    fields: Vec<Option<Field>>,
    op: Option<usize>,
}

/// Where the event type comes from.
#[derive(Debug)]
enum EventRule {
    Constant(EventType),
    Read(Box<Field>),
}

/// The churnwatch fields a mapping can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    CustomerId,
    Amount,
    Currency,
    Ts,
    EventId,
    RepId,
    Channel,
    Direction,
    TicketId,
    Status,
    Kind,
    Segment,
    KeyAccount,
}

impl Target {
    const ALL: [Target; 13] = [
        Target::CustomerId,
        Target::Amount,
        Target::Currency,
        Target::Ts,
        Target::EventId,
        Target::RepId,
        Target::Channel,
        Target::Direction,
        Target::TicketId,
        Target::Status,
        Target::Kind,
        Target::Segment,
        Target::KeyAccount,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::CustomerId => "customer_id",
            Target::Amount => "amount",
            Target::Currency => "currency",
            Target::Ts => "ts",
            Target::EventId => "event_id",
            Target::RepId => "rep_id",
            Target::Channel => "channel",
            Target::Direction => "direction",
            Target::TicketId => "ticket_id",
            Target::Status => "status",
            Target::Kind => "kind",
            Target::Segment => "segment",
            Target::KeyAccount => "key_account",
        }
    }
}

/// One compiled field.
#[derive(Debug)]
struct Field {
    /// The JSON Pointer (`value` fields: the field's name).
    pointer: String,
    /// Captured slot, or a constant.
    source: Result<usize, Scalar<'static>>,
    default: Option<Scalar<'static>>,
    map: Option<Vec<(String, Scalar<'static>)>>,
    contains: Option<(String, Scalar<'static>)>,
    scale: Option<f64>,
    format: TimeFormat,
    zone: chrono_tz::Tz,
}

/// A compiled constant seen through a borrow (no copy of its text).
fn view<'x>(s: &'x Scalar<'_>) -> Scalar<'x> {
    match s {
        Scalar::Str(t) => Scalar::Str(Cow::Borrowed(t)),
        other => other.clone(),
    }
}

/// Reads one record through `mapping`, or in the native format without
/// one: the one decoding step replay and `run` share.
pub fn decode(
    mapping: Option<&Mapping>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    limits: DecodeLimits,
) -> Result<Mapped, RejectReason> {
    match mapping {
        Some(m) => m.decode(key, value, limits),
        None => match value {
            Some(v) => crate::engine::native::decode(v, limits).map(Mapped::Event),
            None => Err(RejectReason::NullPayload),
        },
    }
}

impl Mapping {
    /// Maps one record; `key` is its Kafka key, if any.
    pub fn decode(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        limits: DecodeLimits,
    ) -> Result<Mapped, RejectReason> {
        let Some(bytes) = value else {
            return if self.debezium {
                Ok(Mapped::Skipped(Skip::Deleted))
            } else {
                Err(RejectReason::NullPayload)
            };
        };
        if bytes.len() > limits.max_event_bytes {
            return Err(RejectReason::TooLarge {
                size: bytes.len(),
                limit: limits.max_event_bytes,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| RejectReason::InvalidUtf8 {
            at: e.valid_up_to(),
        })?;
        // On the stack: a heap vector per record cost a tenth of the time.
        let mut slots: [Option<Scalar<'_>>; MAX_SLOTS] = Default::default();
        let mut de = serde_json::Deserializer::from_str(text);
        Capture {
            node: &self.trie,
            slots: &mut slots,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| RejectReason::InvalidJson(e.to_string()))?;
        if let Some(op) = self.op {
            match &slots[op] {
                Some(Scalar::Str(s)) if s == "d" => return Ok(Mapped::Skipped(Skip::Deleted)),
                None | Some(Scalar::Null) if self.debezium_deleted(&slots) => {
                    return Ok(Mapped::Skipped(Skip::Deleted));
                }
                _ => {}
            }
        }
        if let Some((slot, _, accepted)) = &self.when {
            let v = slots[*slot].as_ref().and_then(Scalar::text);
            if !v.is_some_and(|v| accepted.iter().any(|a| *a == *v)) {
                return Ok(Mapped::Skipped(Skip::Filtered));
            }
        }
        let kind = match &self.event {
            EventRule::Constant(k) => *k,
            EventRule::Read(f) => {
                let v = self.resolve(f, &slots)?;
                let name = v.as_ref().and_then(Scalar::text);
                let name = name.as_deref().unwrap_or("");
                EventType::parse(name)
                    .ok_or_else(|| self.at(&f.pointer, RejectReason::UnknownType(shorten(name))))?
            }
        };
        let ts = self.ts(&slots)?;
        let text_of = |t: Target| -> Result<Option<Cow<'_, str>>, RejectReason> {
            let Some(f) = &self.fields[t as usize] else {
                return Ok(None);
            };
            // A field the event type does not take is not read (a mapped
            // type may leave other types' fields in the record).
            let (required, optional) = compile::takes(kind);
            if !required.contains(&t) && !optional.contains(&t) {
                return Ok(None);
            }
            match self.resolve(f, &slots)? {
                None => Ok(None),
                Some(v) => match v.text() {
                    Some(_) => Ok(v.into_text()),
                    None => Err(self.at(&f.pointer, mismatch("wrong_type", "a string", &v))),
                },
            }
        };
        let customer = text_of(Target::CustomerId)?;
        let currency = text_of(Target::Currency)?;
        let rep = text_of(Target::RepId)?;
        let channel = text_of(Target::Channel)?;
        let direction = text_of(Target::Direction)?;
        let ticket = text_of(Target::TicketId)?;
        let status = text_of(Target::Status)?;
        let complaint = text_of(Target::Kind)?;
        let event_id = text_of(Target::EventId)?;
        let segment = text_of(Target::Segment)?;
        let key_account = self.flag(Target::KeyAccount, kind, &slots)?;
        if self.keyed_by_customer
            && let (Some(key), Some(c)) = (key, &customer)
            && key != c.as_bytes()
        {
            return Err(RejectReason::WrongKey {
                topic: self.topic.clone(),
                key: shorten(&String::from_utf8_lossy(key)),
                customer: shorten(c),
            });
        }
        let parts = Parts {
            customer_id: customer.as_deref(),
            amount: match kind {
                EventType::Purchase => self.amount(&slots)?,
                _ => None,
            },
            currency: currency.as_deref(),
            rep_id: rep.as_deref(),
            channel: channel.as_deref(),
            direction: direction.as_deref(),
            ticket_id: ticket.as_deref(),
            status: status.as_deref(),
            complaint: complaint.as_deref() == Some("complaint"),
            event_id: event_id.as_deref(),
            segment: segment.as_deref(),
            key_account,
        };
        assemble(kind, ts, &parts, limits)
            .map(Mapped::Event)
            .map_err(|r| self.locate(r))
    }

    /// A boolean field (`key_account`): a JSON boolean, or `"true"` /
    /// `"false"` as CRMs often export them.
    fn flag(
        &self,
        t: Target,
        kind: EventType,
        slots: &[Option<Scalar<'_>>],
    ) -> Result<Option<bool>, RejectReason> {
        let Some(f) = &self.fields[t as usize] else {
            return Ok(None);
        };
        if !compile::takes(kind).1.contains(&t) {
            return Ok(None);
        }
        match self.resolve(f, slots)? {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Bool(b)) => Ok(Some(b)),
            Some(Scalar::Str(s)) if s == "true" => Ok(Some(true)),
            Some(Scalar::Str(s)) if s == "false" => Ok(Some(false)),
            Some(v) => Err(self.at(
                &f.pointer,
                mismatch("wrong_type", "a boolean (or \"true\"/\"false\")", &v),
            )),
        }
    }

    /// A Debezium record without `op`: deleted when `after` is null.
    fn debezium_deleted(&self, slots: &[Option<Scalar<'_>>]) -> bool {
        self.debezium && slots.iter().all(|s| matches!(s, None | Some(Scalar::Null)))
    }

    fn ts(&self, slots: &[Option<Scalar<'_>>]) -> Result<crate::engine::event::Ts, RejectReason> {
        let Some(f) = &self.fields[Target::Ts as usize] else {
            return Err(self.at("ts", RejectReason::MissingField("ts")));
        };
        let v = self
            .resolve(f, slots)?
            .ok_or_else(|| self.at(&f.pointer, RejectReason::MissingField("ts")))?;
        f.format.read(&v, f.zone).ok_or_else(|| {
            let detail = format!(
                "{} is not {} (or is before 1970)",
                v.describe(),
                f.format.name()
            );
            self.at(
                &f.pointer,
                RejectReason::Mismatch {
                    code: "bad_timestamp",
                    detail,
                },
            )
        })
    }

    fn amount(&self, slots: &[Option<Scalar<'_>>]) -> Result<Option<f64>, RejectReason> {
        let Some(f) = &self.fields[Target::Amount as usize] else {
            return Ok(None);
        };
        let Some(v) = self.resolve(f, slots)? else {
            return Ok(None);
        };
        let n = match &v {
            Scalar::Int(i) => *i as f64,
            Scalar::UInt(u) => *u as f64,
            Scalar::Float(x) => *x,
            Scalar::Str(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| self.at(&f.pointer, mismatch("wrong_type", "a number", &v)))?,
            _ => return Err(self.at(&f.pointer, mismatch("wrong_type", "a number", &v))),
        };
        Ok(Some(match f.scale {
            None => n,
            // 0.01 is not exact in binary: dividing by 100 gives cents the
            // very amount their decimal spelling would.
            Some(s) if (1.0 / s).fract() == 0.0 || (1.0 / s).round() * s == 1.0 => {
                n / (1.0 / s).round()
            }
            Some(s) => n * s,
        }))
    }

    /// The field's value after `contains`, `default` and `map`.
    fn resolve<'x>(
        &'x self,
        f: &'x Field,
        slots: &'x [Option<Scalar<'_>>],
    ) -> Result<Option<Scalar<'x>>, RejectReason> {
        let raw = match &f.source {
            Ok(slot) => slots[*slot]
                .as_ref()
                .filter(|v| !matches!(v, Scalar::Null))
                .map(view),
            Err(constant) => Some(view(constant)),
        };
        let raw = match (&f.contains, raw) {
            (Some((needle, then)), Some(v)) => {
                let hit = match &v {
                    Scalar::List(items) => {
                        items.iter().any(|i| i.text().as_deref() == Some(needle))
                    }
                    other => other.text().as_deref() == Some(needle),
                };
                hit.then(|| view(then))
            }
            (_, raw) => raw,
        };
        let Some(v) = raw else {
            return Ok(f.default.as_ref().map(view));
        };
        let Some(map) = &f.map else {
            return Ok(Some(v));
        };
        let key = v.text();
        match map.iter().find(|(k, _)| Some(k.as_str()) == key.as_deref()) {
            Some((_, to)) => Ok(Some(view(to))),
            None => match &f.default {
                Some(d) => Ok(Some(view(d))),
                None => Err(self.at(
                    &f.pointer,
                    RejectReason::UnmappedValue {
                        value: shorten(key.as_deref().unwrap_or(&v.describe())),
                        accepted: map
                            .iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                )),
            },
        }
    }

    fn at(&self, pointer: &str, problem: RejectReason) -> RejectReason {
        RejectReason::Mapped {
            input: self.label.clone(),
            pointer: pointer.to_string(),
            problem: Box::new(problem),
        }
    }

    /// Names the pointer of the field a validation reason is about (also
    /// for reasons found after decoding, such as `unknown_currency`; one
    /// already located is kept).
    pub fn locate(&self, reason: RejectReason) -> RejectReason {
        let field = match &reason {
            RejectReason::MissingField(f) | RejectReason::BadId { field: f, .. } => *f,
            RejectReason::BadValue { field, .. } => *field,
            RejectReason::BadAmount { .. } => "amount",
            RejectReason::UnknownCurrency { .. } => "currency",
            _ => return reason,
        };
        let pointer = Target::ALL
            .iter()
            .find(|t| t.name() == field)
            .and_then(|t| self.fields[*t as usize].as_ref())
            .map_or_else(
                || format!("(fields.{field} is not mapped)"),
                |f| f.pointer.clone(),
            );
        self.at(&pointer, reason)
    }
}

/// "expected a number, got the string \"x\"".
fn mismatch(code: &'static str, expected: &str, got: &Scalar<'_>) -> RejectReason {
    RejectReason::Mismatch {
        code,
        detail: format!("expected {expected}, got {}", got.describe()),
    }
}

#[cfg(test)]
mod tests;
