//! Input events: their types, their time, and the reasons an input is
//! rejected. Decoding lives in [`super::native`] (churnwatch's own JSON)
//! and in the input mappings outside the engine.

use std::fmt;

use compact_str::CompactString;

use super::duplicate::EventId;
use super::money::Currency;

/// Milliseconds since the Unix epoch, UTC. Engine time is only ever this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts(pub i64);

impl Ts {
    /// The earliest time.
    pub const MIN: Ts = Ts(i64::MIN);
    /// The latest time.
    pub const MAX: Ts = Ts(i64::MAX);
    /// The latest time an event may carry, 9999-12-31T23:59:59.999Z (RFC
    /// 3339's last): with 1970 as the earliest, every event time fits the
    /// 48 bits a customer record keeps a time in.
    pub const LATEST_EVENT: Ts = Ts(253_402_300_799_999);

    /// Whether an event may carry this time (1970 to 9999).
    pub fn is_event_time(self) -> bool {
        (0..=Self::LATEST_EVENT.0).contains(&self.0)
    }

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
    /// The producer's `event_id`, if it gave one: a redelivery is skipped.
    pub id: Option<EventId>,
    /// The customer's `segment`, if the event names one (resolved against
    /// the config's names by the engine).
    pub segment: Option<CompactString>,
    /// The customer's `key_account` flag, if the event says.
    pub key_account: Option<bool>,
}

/// What an event says happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// Negative `amount` is a refund: it lowers monetary but is not a purchase
    /// for recency or frequency.
    Purchase {
        /// The customer.
        customer: CustomerKey,
        /// Amount in `currency`; negative is a refund. The engine converts
        /// it into the base currency before anything sums it.
        amount: f64,
        /// The amount's currency; None: the base currency.
        currency: Option<Currency>,
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
        self.kind.event_type()
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

impl EventKind {
    /// The event's `type`.
    pub fn event_type(&self) -> EventType {
        match self {
            EventKind::Purchase { .. } => EventType::Purchase,
            EventKind::Call { .. } => EventType::Call,
            EventKind::Ticket { .. } => EventType::Ticket,
            EventKind::Roster { .. } => EventType::Rep,
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

    /// The type a `type` value names.
    pub fn parse(s: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

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
    /// `ts` is not RFC 3339 with offset, or is before 1970 or after 9999.
    #[error("bad timestamp `{0}`: expected RFC 3339 with offset, from 1970 to 9999")]
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
    /// A purchase in a currency that cannot be converted into the base
    /// currency (no rate, not a currency code, or, without `[money]`, not
    /// the one earlier purchases named): refused, never summed.
    #[error("{}", unknown_currency(currency, base, *configured))]
    UnknownCurrency {
        /// The currency given.
        currency: String,
        /// The base currency.
        base: String,
        /// Whether the base is `money.base_currency` (else the first seen).
        configured: bool,
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
    /// A record on the repartition topic whose source topic no
    /// `[[inputs]]` entry re-keys (the config changed since it was
    /// republished, or another producer wrote it).
    #[error(
        "a repartitioned record from `{topic}`, which no [[inputs]] entry with keyed_by_customer = false maps"
    )]
    UnknownSource {
        /// The `churnwatch.source.topic` header (or "" without one).
        topic: String,
    },
    /// A value of the wrong kind for what a mapping reads it as (code
    /// `wrong_type`, or `bad_timestamp` for times).
    #[error("{detail}")]
    Mismatch {
        /// `wrong_type` or `bad_timestamp`.
        code: &'static str,
        /// "the string \"abc\" is not epoch_us", "expected a number, got …".
        detail: String,
    },
    /// A record whose Kafka key is not the customer id it maps to, on a
    /// topic declared keyed by customer: applying it would split the
    /// customer's state across partitions.
    #[error(
        "record key \"{key}\" is not its customer id \"{customer}\": topic {topic} is not keyed by customer id (set keyed_by_customer = false in its [[inputs]] entry to have churnwatch re-key it)"
    )]
    WrongKey {
        /// The topic.
        topic: String,
        /// The record's key.
        key: String,
        /// The customer id it maps to.
        customer: String,
    },
    /// A value outside a field's `map`, which has no `default`.
    #[error("\"{value}\" is not in the field's map (mapped: {accepted})")]
    UnmappedValue {
        /// The value.
        value: String,
        /// The values the map takes.
        accepted: String,
    },
    /// A record of an `[[inputs]]` topic its mapping could not turn into
    /// an event: where (the input and the JSON Pointer) and why.
    #[error("{pointer}: {problem} ({input})")]
    Mapped {
        /// `inputs[N] (topic)`.
        input: String,
        /// The JSON Pointer read, or the churnwatch field when unmapped.
        pointer: String,
        /// The problem; its code is this reason's code.
        problem: Box<RejectReason>,
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
                    Self::Mismatch { code, .. } => code,
                    Self::Mapped { problem, .. } => problem.code(),
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
    UnknownCurrency => "unknown_currency",
    WrongTopic => "wrong_topic",
    UnmappedValue => "unmapped_value",
    WrongKey => "wrong_key",
    UnknownSource => "unknown_source",
}

/// Limits the decoder enforces; taken from `[engine]`.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// `engine.max_amount`.
    pub max_amount: f64,
    /// `engine.max_event_bytes`.
    pub max_event_bytes: usize,
}

fn unknown_currency(currency: &str, base: &str, configured: bool) -> String {
    if base.is_empty() {
        format!("`{currency}` is not a currency code (three letters, as in ISO 4217)")
    } else if configured {
        format!(
            "no rate for currency `{currency}` in money.rates (amounts are kept in money.base_currency = {base})"
        )
    } else {
        format!(
            "a purchase in `{currency}` after purchases in `{base}`: churnwatch never sums two currencies; set money.base_currency and money.rates to convert"
        )
    }
}

/// Echoed input is cut so a huge field cannot bloat logs and dead letters.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}
