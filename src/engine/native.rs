//! churnwatch's own JSON event format: the decoder topics without an
//! `[[inputs]]` mapping are read with.
//!
//! Decoding borrows from the input bytes and produces an owned [`Event`]
//! whose ids are inline strings (no heap for ids up to 24 bytes), so the hot
//! path allocates nothing for well-formed input.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::Deserialize;

use super::duplicate::EventId;
use super::event::{
    Channel, DecodeLimits, Direction, Event, EventKind, EventType, MAX_ID_CHARS, RejectReason,
    RepStatus, TicketStatus, Ts, shorten,
};
use super::money::Currency;

/// A JSON string borrowed from the input when it has no escapes, owned
/// otherwise. serde borrows a bare `Cow<str>` field but not one inside an
/// `Option`, which allocated (and freed) every string of every event.
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// The wire form: every field optional so a missing one gets a precise
/// reason, strings borrowed where the JSON has no escapes.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    event_type: Option<Text<'a>>,
    #[serde(borrow)]
    ts: Option<Text<'a>>,
    #[serde(borrow)]
    customer_id: Option<Text<'a>>,
    amount: Option<f64>,
    #[serde(borrow)]
    currency: Option<Text<'a>>,
    #[serde(borrow)]
    rep_id: Option<Text<'a>>,
    #[serde(borrow)]
    channel: Option<Text<'a>>,
    #[serde(borrow)]
    direction: Option<Text<'a>>,
    #[serde(borrow)]
    ticket_id: Option<Text<'a>>,
    #[serde(borrow)]
    status: Option<Text<'a>>,
    #[serde(borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    event_id: Option<Text<'a>>,
    #[serde(borrow)]
    segment: Option<Text<'a>>,
    key_account: Option<bool>,
}

/// Decodes one message (one JSON object) into an event.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<Event, RejectReason> {
    if bytes.len() > limits.max_event_bytes {
        return Err(RejectReason::TooLarge {
            size: bytes.len(),
            limit: limits.max_event_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| RejectReason::InvalidUtf8 {
        at: e.valid_up_to(),
    })?;
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| json_reason(text, e))?;
    let kind_name = wire
        .event_type
        .as_deref()
        .ok_or(RejectReason::MissingField("type"))?;
    let ts_text = wire.ts.as_deref().ok_or(RejectReason::MissingField("ts"))?;
    let ts = match Ts::parse_rfc3339(ts_text) {
        Some(ts) if ts.is_event_time() => ts,
        _ => return Err(RejectReason::BadTimestamp(shorten(ts_text))),
    };
    let kind =
        EventType::parse(kind_name).ok_or_else(|| RejectReason::UnknownType(shorten(kind_name)))?;
    let parts = Parts {
        customer_id: wire.customer_id.as_deref(),
        amount: wire.amount,
        currency: wire.currency.as_deref(),
        rep_id: wire.rep_id.as_deref(),
        channel: wire.channel.as_deref(),
        direction: wire.direction.as_deref(),
        ticket_id: wire.ticket_id.as_deref(),
        status: wire.status.as_deref(),
        complaint: wire.kind.as_deref() == Some("complaint"),
        event_id: wire.event_id.as_deref(),
        segment: wire.segment.as_deref(),
        key_account: wire.key_account,
    };
    assemble(kind, ts, &parts, limits)
}

/// An event's fields before validation: what the native format and the
/// input mappings both produce, so both accept and refuse alike.
#[derive(Debug, Default)]
pub struct Parts<'a> {
    /// `customer_id`.
    pub customer_id: Option<&'a str>,
    /// `amount`, in `currency`.
    pub amount: Option<f64>,
    /// `currency`.
    pub currency: Option<&'a str>,
    /// `rep_id`.
    pub rep_id: Option<&'a str>,
    /// `channel`.
    pub channel: Option<&'a str>,
    /// `direction`.
    pub direction: Option<&'a str>,
    /// `ticket_id`.
    pub ticket_id: Option<&'a str>,
    /// `status`.
    pub status: Option<&'a str>,
    /// Whether a ticket is a complaint (`kind = "complaint"`).
    pub complaint: bool,
    /// `event_id`.
    pub event_id: Option<&'a str>,
    /// `segment` (customer events).
    pub segment: Option<&'a str>,
    /// `key_account` (customer events).
    pub key_account: Option<bool>,
}

/// The values each enumerated field accepts, in the order messages list them.
pub const CHANNELS: &[(&str, Channel)] = &[
    ("visit", Channel::Visit),
    ("phone", Channel::Phone),
    ("email", Channel::Email),
    ("chat", Channel::Chat),
];
/// See [`CHANNELS`].
pub const DIRECTIONS: &[(&str, Direction)] = &[
    ("outbound", Direction::Outbound),
    ("inbound", Direction::Inbound),
];
/// See [`CHANNELS`].
pub const TICKET_STATUSES: &[(&str, TicketStatus)] = &[
    ("opened", TicketStatus::Opened),
    ("resolved", TicketStatus::Resolved),
];
/// See [`CHANNELS`].
pub const REP_STATUSES: &[(&str, RepStatus)] = &[
    ("active", RepStatus::Active),
    ("departed", RepStatus::Departed),
];

/// Validates `parts` as an event of type `kind` at `ts`.
pub fn assemble(
    kind: EventType,
    ts: Ts,
    parts: &Parts<'_>,
    limits: DecodeLimits,
) -> Result<Event, RejectReason> {
    let p = parts;
    let kind = match kind {
        EventType::Purchase => {
            let customer = id(p.customer_id, "customer_id")?;
            let amount = p.amount.ok_or(RejectReason::MissingField("amount"))?;
            if !amount.is_finite() || amount.abs() > limits.max_amount {
                return Err(RejectReason::BadAmount {
                    amount,
                    limit: limits.max_amount,
                });
            }
            // -0.0 is not a refund: normalise so no sign leaks into sums.
            let amount = if amount == 0.0 { 0.0 } else { amount };
            let currency =
                match p.currency {
                    None => None,
                    Some(code) => Some(Currency::parse(code).ok_or_else(|| {
                        RejectReason::UnknownCurrency {
                            currency: shorten(code),
                            base: String::new(),
                            configured: false,
                        }
                    })?),
                };
            EventKind::Purchase {
                customer,
                amount,
                currency,
            }
        }
        EventType::Call => EventKind::Call {
            customer: id(p.customer_id, "customer_id")?,
            rep: id(p.rep_id, "rep_id")?,
            channel: one_of(p.channel, "channel", Channel::Phone, CHANNELS)?,
            direction: one_of(p.direction, "direction", Direction::Outbound, DIRECTIONS)?,
        },
        EventType::Ticket => {
            let customer = id(p.customer_id, "customer_id")?;
            let ticket = checked(p.ticket_id, "ticket_id")?;
            EventKind::Ticket {
                customer,
                ticket: xxhash_rust::xxh3::xxh3_64(ticket.as_bytes()),
                status: required_one_of(p.status, "status", TICKET_STATUSES)?,
                complaint: p.complaint,
            }
        }
        EventType::Rep => EventKind::Roster {
            rep: id(p.rep_id, "rep_id")?,
            status: required_one_of(p.status, "status", REP_STATUSES)?,
        },
    };
    let id = match p.event_id {
        None => None,
        Some(raw) => Some(EventId::new(
            kind.event_type(),
            checked(Some(raw), "event_id")?,
        )),
    };
    let segment = match p.segment {
        None => None,
        Some(name) => Some(CompactString::from(checked(Some(name), "segment")?)),
    };
    Ok(Event {
        ts,
        kind,
        id,
        segment,
        key_account: p.key_account,
    })
}

fn id(value: Option<&str>, field: &'static str) -> Result<CompactString, RejectReason> {
    checked(value, field).map(CompactString::from)
}

/// A present id of 1 to [`MAX_ID_CHARS`] characters.
fn checked<'s>(value: Option<&'s str>, field: &'static str) -> Result<&'s str, RejectReason> {
    let s = value.ok_or(RejectReason::MissingField(field))?;
    if s.is_empty() {
        return Err(RejectReason::BadId { field, chars: 0 });
    }
    // Bytes bound chars from above, so only long ids need counting.
    if s.len() > MAX_ID_CHARS {
        let chars = s.chars().count();
        if chars > MAX_ID_CHARS {
            return Err(RejectReason::BadId { field, chars });
        }
    }
    Ok(s)
}

/// An optional enumerated field: `default` when absent.
fn one_of<T: Copy>(
    value: Option<&str>,
    field: &'static str,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, RejectReason> {
    value.map_or(Ok(default), |v| pick(v, field, choices))
}

/// A required enumerated field.
fn required_one_of<T: Copy>(
    value: Option<&str>,
    field: &'static str,
    choices: &[(&str, T)],
) -> Result<T, RejectReason> {
    pick(
        value.ok_or(RejectReason::MissingField(field))?,
        field,
        choices,
    )
}

fn pick<T: Copy>(v: &str, field: &'static str, choices: &[(&str, T)]) -> Result<T, RejectReason> {
    choices
        .iter()
        .find(|(name, _)| *name == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| RejectReason::BadValue {
            field,
            value: shorten(v),
        })
}

/// Turns a serde_json error into a reason; cold path, so it may re-parse to
/// learn which field was at fault.
fn json_reason(text: &str, err: serde_json::Error) -> RejectReason {
    use serde_json::error::Category;
    match err.classify() {
        Category::Data => {
            let msg = err.to_string();
            if let Some(rest) = msg.strip_prefix("duplicate field `") {
                let field = rest.split('`').next().unwrap_or_default();
                return RejectReason::DuplicateField(field.to_string());
            }
            let mut de = serde_json::Deserializer::from_str(text);
            let field = match serde_path_to_error::deserialize::<_, Wire<'_>>(&mut de) {
                Err(e) => e.path().to_string(),
                Ok(_) => String::from("?"),
            };
            RejectReason::WrongType { field, detail: msg }
        }
        Category::Io | Category::Syntax | Category::Eof => {
            RejectReason::InvalidJson(err.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_amount: 1e9,
        max_event_bytes: 65536,
    };

    fn reject(s: &str) -> RejectReason {
        decode(s.as_bytes(), LIMITS).unwrap_err()
    }

    #[test]
    fn decodes_each_type_with_defaults() {
        let p = decode(
            br#"{"type":"purchase","ts":"2026-03-01T10:00:00+01:00","customer_id":"c1","amount":12.5,"extra":[1]}"#,
            LIMITS,
        )
        .unwrap();
        assert_eq!(p.ts, Ts::parse_rfc3339("2026-03-01T09:00:00Z").unwrap());
        assert_eq!(
            p.kind,
            EventKind::Purchase {
                customer: "c1".into(),
                amount: 12.5,
                currency: None
            }
        );
        let c = decode(
            br#"{"type":"call","ts":"2026-03-01T10:00:00Z","customer_id":"c1","rep_id":"r1"}"#,
            LIMITS,
        )
        .unwrap();
        assert!(matches!(
            c.kind,
            EventKind::Call {
                channel: Channel::Phone,
                direction: Direction::Outbound,
                ..
            }
        ));
        let t = decode(
            br#"{"type":"ticket","ts":"2026-03-01T10:00:00Z","customer_id":"c1","ticket_id":"t","status":"opened","kind":"complaint"}"#,
            LIMITS,
        )
        .unwrap();
        assert!(matches!(
            t.kind,
            EventKind::Ticket {
                complaint: true,
                ..
            }
        ));
        let r = decode(
            br#"{"type":"rep","ts":"2026-03-01T10:00:00Z","rep_id":"r1","status":"departed"}"#,
            LIMITS,
        )
        .unwrap();
        assert!(matches!(
            r.kind,
            EventKind::Roster {
                status: RepStatus::Departed,
                ..
            }
        ));
    }

    #[test]
    fn rejects_with_precise_codes() {
        let cases = [
            (r#"{"type":"purchase""#, "invalid_json"),
            (r#"{"ts":"2026-03-01T10:00:00Z"}"#, "missing_field"),
            (
                r#"{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"c","amount":"5"}"#,
                "wrong_type",
            ),
            (r#"{"type":"purchase","type":"call"}"#, "duplicate_field"),
            (
                r#"{"type":"refund","ts":"2026-03-01T10:00:00Z"}"#,
                "unknown_type",
            ),
            (r#"{"type":"call","ts":"yesterday"}"#, "bad_timestamp"),
            (
                r#"{"type":"call","ts":"1969-12-31T23:59:59Z"}"#,
                "bad_timestamp",
            ),
            (
                r#"{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"c","amount":1e300}"#,
                "bad_amount",
            ),
            (
                r#"{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"","amount":1}"#,
                "bad_id",
            ),
            (
                r#"{"type":"call","ts":"2026-03-01T10:00:00Z","customer_id":"c","rep_id":"r","channel":"fax"}"#,
                "bad_value",
            ),
            (
                r#"{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"c","amount":NaN}"#,
                "invalid_json",
            ),
        ];
        for (input, code) in cases {
            assert_eq!(reject(input).code(), code, "{input}");
        }
        assert_eq!(
            decode(b"{\"type\":\"\xff\"}", LIMITS).unwrap_err().code(),
            "invalid_utf8"
        );
        let long = format!(
            r#"{{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"{}","amount":1}}"#,
            "é".repeat(129)
        );
        assert_eq!(
            reject(&long),
            RejectReason::BadId {
                field: "customer_id",
                chars: 129
            }
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        match reject(
            r#"{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":7,"amount":1}"#,
        ) {
            RejectReason::WrongType { field, .. } => assert_eq!(field, "customer_id"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn negative_zero_is_a_zero_purchase() {
        let e = decode(
            br#"{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"c","amount":-0.0}"#,
            LIMITS,
        )
        .unwrap();
        match e.kind {
            EventKind::Purchase { amount, .. } => {
                assert!(amount == 0.0 && amount.is_sign_positive())
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn escaped_ids_decode() {
        let e = decode(
            br#"{"type":"purchase","ts":"2026-03-01T10:00:00Z","customer_id":"c\u00e9","amount":1}"#,
            LIMITS,
        )
        .unwrap();
        assert_eq!(e.customer().map(|c| c.as_str()), Some("cé"));
    }

    #[test]
    fn timestamps_format_as_utc_z() {
        assert_eq!(
            Ts::parse_rfc3339("2026-03-01T10:00:00+02:00")
                .unwrap()
                .to_string(),
            "2026-03-01T08:00:00Z"
        );
        assert_eq!(Ts(1_500).to_string(), "1970-01-01T00:00:01.500Z");
    }
}
