//! Input events: their types, the JSON decoder at the edge, and the reasons an
//! input is rejected.
//!
//! Decoding borrows from the input bytes and produces an owned [`Event`]
//! whose ids are inline strings (no heap for ids up to 24 bytes), so the hot
//! path allocates nothing for well-formed input.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::Deserialize;

/// Milliseconds since the Unix epoch, UTC. Engine time is only ever this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts(pub i64);

impl Ts {
    /// The earliest time.
    pub const MIN: Ts = Ts(i64::MIN);
    /// The latest time.
    pub const MAX: Ts = Ts(i64::MAX);

    /// Parses an RFC 3339 timestamp with offset.
    pub fn parse_rfc3339(s: &str) -> Option<Ts> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| Ts(d.timestamp_millis()))
    }

    /// `ms` later, saturating.
    pub fn saturating_add(self, ms: i64) -> Ts {
        Ts(self.0.saturating_add(ms))
    }

    /// Days from `earlier` to `self`, as a float.
    pub fn days_since(self, earlier: Ts) -> f64 {
        (self.0.saturating_sub(earlier.0)) as f64 / DAY_MS as f64
    }
}

/// Milliseconds per day.
pub const DAY_MS: i64 = 86_400_000;

impl fmt::Display for Ts {
    /// RFC 3339 in UTC with `Z`; fractional seconds only when present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(d) => f.write_str(&d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl serde::Serialize for Ts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ts::parse_rfc3339(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("bad timestamp `{s}`")))
    }
}

/// A customer id as it appears on the wire.
pub type CustomerKey = CompactString;
/// A rep id as it appears on the wire.
pub type RepKey = CompactString;

/// Longest accepted id, in characters.
pub const MAX_ID_CHARS: usize = 128;

/// One decoded, validated input event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event time (`ts`).
    pub ts: Ts,
    /// What happened.
    pub kind: EventKind,
}

/// What an event says happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// Negative `amount` is a refund: it lowers monetary but is not a purchase
    /// for recency or frequency.
    Purchase {
        /// The customer.
        customer: CustomerKey,
        /// Amount in the customer's currency; negative is a refund.
        amount: f64,
    },
    /// A rep contacted the customer (visit, phone, email, chat).
    Call {
        /// The customer.
        customer: CustomerKey,
        /// The rep who made the contact.
        rep: RepKey,
        /// How (default phone).
        channel: Channel,
        /// Who started it (default outbound).
        direction: Direction,
    },
    /// `ticket` is a hash of the ticket id: the engine only needs identity.
    Ticket {
        /// The customer.
        customer: CustomerKey,
        /// Hash of the ticket id.
        ticket: u64,
        /// Opened or resolved.
        status: TicketStatus,
        /// Whether it is a complaint.
        complaint: bool,
    },
    /// A rep joined or departed (roster topic).
    Roster {
        /// The rep.
        rep: RepKey,
        /// Active or departed.
        status: RepStatus,
    },
}

impl Event {
    /// The event's `type`.
    pub fn event_type(&self) -> EventType {
        match self.kind {
            EventKind::Purchase { .. } => EventType::Purchase,
            EventKind::Call { .. } => EventType::Call,
            EventKind::Ticket { .. } => EventType::Ticket,
            EventKind::Roster { .. } => EventType::Rep,
        }
    }

    /// The customer the event concerns (roster events concern none).
    pub fn customer(&self) -> Option<&CustomerKey> {
        match &self.kind {
            EventKind::Purchase { customer, .. }
            | EventKind::Call { customer, .. }
            | EventKind::Ticket { customer, .. } => Some(customer),
            EventKind::Roster { .. } => None,
        }
    }
}

/// The `type` field, as a closed set (metric labels come from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `purchase`.
    Purchase,
    /// `call`.
    Call,
    /// `ticket`.
    Ticket,
    /// `rep` (roster).
    Rep,
}

impl EventType {
    /// Every type, for pre-registering metric labels.
    pub const ALL: [EventType; 4] = [Self::Purchase, Self::Call, Self::Ticket, Self::Rep];

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purchase => "purchase",
            Self::Call => "call",
            Self::Ticket => "ticket",
            Self::Rep => "rep",
        }
    }
}

/// How a rep contacted the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A visit.
    Visit,
    /// A phone call.
    Phone,
    /// An email.
    Email,
    /// A chat.
    Chat,
}

/// Who started a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The rep.
    Outbound,
    /// The customer.
    Inbound,
}

/// A ticket's transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketStatus {
    /// Opened.
    Opened,
    /// Resolved.
    Resolved,
}

/// A rep's roster status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepStatus {
    /// Employed.
    Active,
    /// Left the company.
    Departed,
}

/// Why an input was rejected. [`RejectReason::code`] is the stable
/// identifier used as dead-letter reason, metric label and log field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RejectReason {
    /// The message exceeds `engine.max_event_bytes`.
    #[error("message is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// `engine.max_event_bytes`.
        limit: usize,
    },
    /// A Kafka record without a value (a tombstone), which carries no event.
    #[error("the record has no value (null payload)")]
    NullPayload,
    /// The bytes are not UTF-8, so cannot be JSON.
    #[error("message is not valid UTF-8 (at byte {at})")]
    InvalidUtf8 {
        /// Offset of the first invalid byte.
        at: usize,
    },
    /// Not a JSON object (syntax error, truncation, nesting too deep, ...).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// A required field is absent (or null).
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong JSON type or an unparseable value.
    #[error("wrong type for field `{field}`: {detail}")]
    WrongType {
        /// The field.
        field: String,
        /// What was wrong.
        detail: String,
    },
    /// The same key appears twice in the object.
    #[error("duplicate field `{0}`")]
    DuplicateField(String),
    /// `type` is not one of purchase, call, ticket, rep.
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    /// `ts` is not RFC 3339 with offset, or is before 1970.
    #[error("bad timestamp `{0}`: expected RFC 3339 with offset, not before 1970")]
    BadTimestamp(String),
    /// `ts` is too far ahead of the engine's newest known time.
    #[error("timestamp {ts} is more than {max_skew_secs}s ahead of engine time {now}")]
    FutureTimestamp {
        /// The event's time.
        ts: Ts,
        /// The engine's reference time.
        now: Ts,
        /// `engine.max_future_skew` in seconds.
        max_skew_secs: u64,
    },
    /// `amount` is not finite or its absolute value exceeds `engine.max_amount`.
    #[error("bad amount {amount}: must be finite with absolute value <= {limit}")]
    BadAmount {
        /// The amount given.
        amount: f64,
        /// `engine.max_amount`.
        limit: f64,
    },
    /// An id is empty or longer than [`MAX_ID_CHARS`].
    #[error("field `{field}` must be 1 to 128 characters, got {chars}")]
    BadId {
        /// The id field.
        field: &'static str,
        /// Its length in characters.
        chars: usize,
    },
    /// An enumerated field has a value outside its set.
    #[error("field `{field}` has unknown value `{value}`")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// An event on a topic that does not carry its kind: a customer event
    /// on the roster topic (it would alert on every instance) or a roster
    /// event on an input topic (it would change one instance's roster).
    #[error("a `{kind}` event does not belong on this topic")]
    WrongTopic {
        /// The event's `type`.
        kind: &'static str,
    },
}

/// The code table: each variant's stable code, written once; `CODES`
/// (metric label pre-registration) and `code()` both come from it.
macro_rules! reject_codes {
    ($($variant:ident => $code:literal),* $(,)?) => {
        impl RejectReason {
            /// Every code, for pre-registering metric label values.
            pub const CODES: &'static [&'static str] = &[$($code),*];

            /// The stable code: dead-letter reason, metric label, log field.
            pub fn code(&self) -> &'static str {
                match self {
                    $(Self::$variant { .. } => $code,)*
                }
            }
        }
    };
}

reject_codes! {
    TooLarge => "too_large",
    NullPayload => "null_payload",
    InvalidUtf8 => "invalid_utf8",
    InvalidJson => "invalid_json",
    MissingField => "missing_field",
    WrongType => "wrong_type",
    DuplicateField => "duplicate_field",
    UnknownType => "unknown_type",
    BadTimestamp => "bad_timestamp",
    FutureTimestamp => "future_timestamp",
    BadAmount => "bad_amount",
    BadId => "bad_id",
    BadValue => "bad_value",
    WrongTopic => "wrong_topic",
}

/// Limits the decoder enforces; taken from `[engine]`.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// `engine.max_amount`.
    pub max_amount: f64,
    /// `engine.max_event_bytes`.
    pub max_event_bytes: usize,
}

/// A JSON string borrowed from the input when it has no escapes, owned
/// otherwise. serde borrows a bare `Cow<str>` field but not one inside an
/// `Option`, which allocated (and freed) every string of every event.
struct Text<'a>(Cow<'a, str>);

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
        Some(ts) if ts.0 >= 0 => ts,
        _ => return Err(RejectReason::BadTimestamp(shorten(ts_text))),
    };
    let kind = match kind_name {
        "purchase" => {
            let customer = id(&wire.customer_id, "customer_id")?;
            let amount = wire.amount.ok_or(RejectReason::MissingField("amount"))?;
            if !amount.is_finite() || amount.abs() > limits.max_amount {
                return Err(RejectReason::BadAmount {
                    amount,
                    limit: limits.max_amount,
                });
            }
            // -0.0 is not a refund: normalise so no sign leaks into sums.
            let amount = if amount == 0.0 { 0.0 } else { amount };
            EventKind::Purchase { customer, amount }
        }
        "call" => EventKind::Call {
            customer: id(&wire.customer_id, "customer_id")?,
            rep: id(&wire.rep_id, "rep_id")?,
            channel: one_of(
                &wire.channel,
                "channel",
                Channel::Phone,
                &[
                    ("visit", Channel::Visit),
                    ("phone", Channel::Phone),
                    ("email", Channel::Email),
                    ("chat", Channel::Chat),
                ],
            )?,
            direction: one_of(
                &wire.direction,
                "direction",
                Direction::Outbound,
                &[
                    ("outbound", Direction::Outbound),
                    ("inbound", Direction::Inbound),
                ],
            )?,
        },
        "ticket" => {
            let customer = id(&wire.customer_id, "customer_id")?;
            let ticket = id(&wire.ticket_id, "ticket_id")?;
            let status = required_one_of(
                &wire.status,
                "status",
                &[
                    ("opened", TicketStatus::Opened),
                    ("resolved", TicketStatus::Resolved),
                ],
            )?;
            EventKind::Ticket {
                customer,
                ticket: xxhash_rust::xxh3::xxh3_64(ticket.as_bytes()),
                status,
                complaint: wire.kind.as_deref() == Some("complaint"),
            }
        }
        "rep" => EventKind::Roster {
            rep: id(&wire.rep_id, "rep_id")?,
            status: required_one_of(
                &wire.status,
                "status",
                &[
                    ("active", RepStatus::Active),
                    ("departed", RepStatus::Departed),
                ],
            )?,
        },
        other => return Err(RejectReason::UnknownType(shorten(other))),
    };
    Ok(Event { ts, kind })
}

fn id(value: &Option<Text<'_>>, field: &'static str) -> Result<CompactString, RejectReason> {
    let s = value.as_deref().ok_or(RejectReason::MissingField(field))?;
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
    Ok(CompactString::from(s))
}

/// An optional enumerated field: `default` when absent.
fn one_of<T: Copy>(
    value: &Option<Text<'_>>,
    field: &'static str,
    default: T,
    choices: &[(&str, T)],
) -> Result<T, RejectReason> {
    value
        .as_deref()
        .map_or(Ok(default), |v| pick(v, field, choices))
}

/// A required enumerated field.
fn required_one_of<T: Copy>(
    value: &Option<Text<'_>>,
    field: &'static str,
    choices: &[(&str, T)],
) -> Result<T, RejectReason> {
    pick(
        value.as_deref().ok_or(RejectReason::MissingField(field))?,
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

/// Echoed input is cut so a huge field cannot bloat logs and dead letters.
fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
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
                amount: 12.5
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
