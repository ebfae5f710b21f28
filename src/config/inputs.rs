//! `[[inputs]]`: a company's own topics mapped onto churnwatch's events.
//! Only the file's shape lives here; [`crate::mapping`] compiles and checks
//! it (pointers, formats, zones, values) once at start.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One topic (or, in replay, one file given as `--input TOPIC=FILE`) and
/// how its records become events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// The topic the mapping reads.
    pub topic: String,
    /// The event type: a constant (`"purchase"`) or taken from the record.
    pub event: EventSource,
    /// Envelope to unwrap before the fields are read (`"debezium"`).
    #[serde(default)]
    pub unwrap: Option<Unwrap>,
    /// Whether the topic's Kafka key is the customer id (see README, "Your
    /// own topics"); false has churnwatch re-key the mapped events.
    #[serde(default = "yes")]
    pub keyed_by_customer: bool,
    /// The topic carries the roster (`rep` events), read by every instance.
    #[serde(default)]
    pub roster: bool,
    /// Records that fail it are skipped and counted, not dead-lettered.
    #[serde(default)]
    pub when: Option<When>,
    /// churnwatch field name → where its value comes from.
    pub fields: BTreeMap<String, FieldSource>,
}

/// What `run` consumes, from `[kafka]` and `[[inputs]]` together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topics {
    /// Read by the group and co-partitioned with the state: the native
    /// topics, the mapped ones keyed by customer, and the repartition topic.
    pub inputs: Vec<String>,
    /// Mapped topics keyed by something else, re-keyed into `repartition`.
    pub rekeyed: Vec<String>,
    /// `<group>-repartition`, when a topic is re-keyed.
    pub repartition: Option<String>,
    /// Read in full by every instance: `kafka.roster_topic` (unless "") and
    /// the mapped roster topics.
    pub roster: Vec<String>,
}

impl Topics {
    /// The topics of `kafka` and `inputs`.
    pub fn new(kafka: &super::KafkaConfig, inputs: &[InputConfig]) -> Self {
        let mut t = Topics {
            inputs: kafka.input_topics.clone(),
            roster: Vec::new(),
            rekeyed: Vec::new(),
            repartition: None,
        };
        if !kafka.roster_topic.is_empty() {
            t.roster.push(kafka.roster_topic.clone());
        }
        for i in inputs {
            match (i.roster, i.keyed_by_customer) {
                (true, _) => t.roster.push(i.topic.clone()),
                (false, true) => t.inputs.push(i.topic.clone()),
                (false, false) => t.rekeyed.push(i.topic.clone()),
            }
        }
        if !t.rekeyed.is_empty() {
            let topic = format!("{}-repartition", kafka.group_id);
            t.inputs.push(topic.clone());
            t.repartition = Some(topic);
        }
        t
    }

    /// The group's topics that come from outside (not the repartition one).
    pub fn external(&self) -> impl Iterator<Item = &String> {
        self.inputs
            .iter()
            .filter(|t| Some(*t) != self.repartition.as_ref())
    }
}

fn yes() -> bool {
    true
}

/// `event = "purchase"` or `event = { path = "/kind", map = { ... } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum EventSource {
    /// Every record is this type.
    Constant(String),
    /// The type is read from the record.
    Read(FieldTable),
}

/// Envelopes churnwatch can unwrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unwrap {
    /// Debezium change events: fields are read from `after` (also under a
    /// `payload` envelope); `op = "d"` and tombstones are skipped.
    Debezium,
}

/// `when = { path = "/status", equals = "paid" }` or `in = [...]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// JSON Pointer of the tested value.
    pub path: String,
    /// The value must be this.
    #[serde(default)]
    pub equals: Option<Literal>,
    /// The value must be one of these.
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<Literal>>,
}

/// A field: a bare JSON Pointer or a table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum FieldSource {
    /// `"/customer_ref"`.
    Path(String),
    /// `{ path = ..., format = ..., map = ..., ... }`.
    Table(FieldTable),
}

/// Everything a field table may say.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldTable {
    /// JSON Pointer of the value.
    pub path: Option<String>,
    /// A constant instead of a path.
    pub value: Option<Literal>,
    /// Used when the value is absent, null, or outside `map`.
    pub default: Option<Literal>,
    /// Value → churnwatch value; a value outside it without `default` is
    /// dead-lettered `unmapped_value`.
    pub map: Option<BTreeMap<String, Literal>>,
    /// The field is `then` when the value (a string or an array of them)
    /// contains this, absent otherwise.
    pub contains: Option<String>,
    /// See `contains`.
    pub then: Option<Literal>,
    /// Multiplies a numeric value (cents: 0.01).
    pub scale: Option<f64>,
    /// `ts` only: rfc3339 (default), epoch_s, epoch_ms, epoch_us, date, or
    /// a strftime pattern.
    pub format: Option<String>,
    /// `ts` only: IANA zone of times without an offset (default UTC).
    pub timezone: Option<String>,
}

/// A constant in a mapping: TOML strings, numbers or booleans.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// A string.
    Text(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl Literal {
    /// The value as the text a record's value is compared with.
    pub fn text(&self) -> String {
        match self {
            Literal::Text(s) => s.clone(),
            Literal::Int(i) => i.to_string(),
            Literal::Float(f) => f.to_string(),
            Literal::Bool(b) => b.to_string(),
        }
    }
}
