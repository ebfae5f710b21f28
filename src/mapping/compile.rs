//! `[[inputs]]` entries into [`Mapping`]s, refusing at start what could
//! not work.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::capture::{Node, Scalar, tokens};
use super::time::TimeFormat;
use super::{EventRule, Field, Mapping, Target};
use crate::config::{EventSource, FieldSource, FieldTable, InputConfig, Literal, Unwrap};
use crate::engine::event::EventType;
use crate::engine::native::{CHANNELS, DIRECTIONS, REP_STATUSES, TICKET_STATUSES};

/// A mapping that cannot work, named by its config key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("inputs[{index}].{key}: {why}")]
pub struct MappingError {
    /// Position of the `[[inputs]]` entry.
    pub index: usize,
    /// The key inside it (`fields.ts`, `event`, `when`).
    pub key: String,
    /// What is wrong, and what would be accepted.
    pub why: String,
}

/// The fields an event type takes, required ones first.
pub(super) fn takes(kind: EventType) -> (&'static [Target], &'static [Target]) {
    use Target::*;
    match kind {
        EventType::Purchase => (
            &[CustomerId, Amount, Ts],
            &[Currency, EventId, Segment, KeyAccount],
        ),
        EventType::Call => (
            &[CustomerId, RepId, Ts],
            &[Channel, Direction, EventId, Segment, KeyAccount],
        ),
        EventType::Ticket => (
            &[CustomerId, TicketId, Status, Ts],
            &[Kind, EventId, Segment, KeyAccount],
        ),
        EventType::Rep => (&[RepId, Status, Ts], &[EventId]),
    }
}

fn names<T>(set: &[(&'static str, T)]) -> Vec<&'static str> {
    set.iter().map(|(n, _)| *n).collect()
}

/// Values an enumerated field accepts for the possible types (None: any).
fn accepted(t: Target, kinds: &[EventType]) -> Option<Vec<&'static str>> {
    match t {
        Target::Channel => Some(names(CHANNELS)),
        Target::Direction => Some(names(DIRECTIONS)),
        Target::Status => {
            let mut v = Vec::new();
            if kinds.contains(&EventType::Ticket) {
                v.extend(names(TICKET_STATUSES));
            }
            if kinds.contains(&EventType::Rep) {
                v.extend(names(REP_STATUSES));
            }
            Some(v)
        }
        _ => None,
    }
}

/// Compiles entry `index`.
pub fn compile(index: usize, input: &InputConfig) -> Result<Mapping, MappingError> {
    let err = |key: &str, why: String| MappingError {
        index,
        key: key.to_string(),
        why,
    };
    let mut b = Builder {
        root: Node::default(),
        slots: BTreeMap::new(),
        debezium: input.unwrap == Some(Unwrap::Debezium),
    };
    if input.topic.is_empty() {
        return Err(err("topic", "must name a topic".into()));
    }
    let type_names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    let (event, kinds) = match &input.event {
        EventSource::Constant(name) => {
            let kind = EventType::parse(name).ok_or_else(|| {
                err(
                    "event",
                    format!(
                        "unknown event `{name}`: expected one of {}",
                        type_names.join(", ")
                    ),
                )
            })?;
            (EventRule::Constant(kind), vec![kind])
        }
        EventSource::Read(table) => {
            let f = b
                .field(table, Target::Kind, Some(&type_names))
                .map_err(|w| err("event", w))?;
            let kinds: Vec<EventType> = match &table.map {
                Some(map) => {
                    let mut k: Vec<EventType> = map
                        .values()
                        .filter_map(|v| EventType::parse(&v.text()))
                        .collect();
                    k.sort_by_key(|t| *t as u8);
                    k.dedup();
                    k
                }
                None => EventType::ALL.to_vec(),
            };
            (EventRule::Read(Box::new(f)), kinds)
        }
    };
    let rep = kinds.contains(&EventType::Rep);
    if input.roster != rep || (rep && kinds.len() > 1) {
        return Err(err(
            "roster",
            "a roster input (roster = true) carries `rep` events only, and `rep` events come only from a roster input".into(),
        ));
    }
    let mut fields: Vec<Option<Field>> = Target::ALL.iter().map(|_| None).collect();
    for (name, source) in &input.fields {
        let key = format!("fields.{name}");
        let all: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
        let target = Target::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                err(
                    &key,
                    format!(
                        "unknown field `{name}`: churnwatch fields are {}",
                        all.join(", ")
                    ),
                )
            })?;
        if !kinds.iter().any(|k| {
            let (req, opt) = takes(*k);
            req.contains(&target) || opt.contains(&target)
        }) {
            let types: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            return Err(err(
                &key,
                format!("a {} event has no field `{name}`", types.join(" or ")),
            ));
        }
        let table = match source {
            FieldSource::Path(p) => FieldTable {
                path: Some(p.clone()),
                ..FieldTable::default()
            },
            FieldSource::Table(t) => t.clone(),
        };
        let allowed = accepted(target, &kinds);
        let f = b
            .field(&table, target, allowed.as_deref())
            .map_err(|w| err(&key, w))?;
        fields[target as usize] = Some(f);
    }
    for kind in &kinds {
        for t in takes(*kind).0 {
            if fields[*t as usize].is_none() {
                return Err(err(
                    &format!("fields.{}", t.name()),
                    format!(
                        "a {} event needs `{}`: give a JSON Pointer, or a table with `path` or `value`",
                        kind.as_str(),
                        t.name()
                    ),
                ));
            }
        }
    }
    let when = match &input.when {
        None => None,
        Some(w) => {
            let values = match (&w.equals, &w.one_of) {
                (Some(v), None) => vec![v.text()],
                (None, Some(vs)) if !vs.is_empty() => vs.iter().map(Literal::text).collect(),
                _ => {
                    return Err(err(
                        "when",
                        "give exactly one of `equals` or a non-empty `in`".into(),
                    ));
                }
            };
            let slot = b.pointer(&w.path).map_err(|w| err("when.path", w))?;
            Some((slot, w.path.clone(), values))
        }
    };
    let op = b
        .debezium
        .then(|| b.raw_slot("/op", &["op"], &["payload", "op"]));
    // Unreachable with the fields there are; kept as a refusal, not a panic.
    if b.slots.len() > super::MAX_SLOTS {
        return Err(err(
            "fields",
            format!("reads more than {} distinct pointers", super::MAX_SLOTS),
        ));
    }
    Ok(Mapping {
        topic: input.topic.clone(),
        label: format!("inputs[{index}] ({})", input.topic),
        keyed_by_customer: input.keyed_by_customer,
        roster: input.roster,
        debezium: b.debezium,
        trie: b.root,
        event,
        when,
        fields,
        op,
    })
}

/// The trie and slots being built.
struct Builder {
    root: Node,
    slots: BTreeMap<String, usize>,
    debezium: bool,
}

impl Builder {
    /// The slot of a record pointer (shared by every use of it); under
    /// Debezium it is read from `after`, bare or in a `payload` envelope.
    fn pointer(&mut self, pointer: &str) -> Result<usize, String> {
        let toks = tokens(pointer).filter(|t| !t.is_empty()).ok_or_else(|| {
            format!(
                "`{pointer}` is not a JSON Pointer: it must start with `/`, as in \"/customer/id\""
            )
        })?;
        if !self.debezium {
            return Ok(self.raw_slot(pointer, &toks, &[]));
        }
        let after: Vec<String> = std::iter::once("after".to_string())
            .chain(toks.iter().cloned())
            .collect();
        let payload: Vec<String> = ["payload", "after"]
            .iter()
            .map(|s| s.to_string())
            .chain(toks)
            .collect();
        Ok(self.raw_slot(&format!("/after{pointer}"), &after, &payload))
    }

    fn raw_slot<S: AsRef<str>>(&mut self, name: &str, toks: &[S], alt: &[S]) -> usize {
        if let Some(&s) = self.slots.get(name) {
            return s;
        }
        let slot = self.slots.len();
        self.slots.insert(name.to_string(), slot);
        let owned = |t: &[S]| t.iter().map(|s| s.as_ref().to_string()).collect::<Vec<_>>();
        self.root.insert(&owned(toks), slot);
        if !alt.is_empty() {
            self.root.insert(&owned(alt), slot);
        }
        slot
    }

    fn field(
        &mut self,
        t: &FieldTable,
        target: Target,
        allowed: Option<&[&str]>,
    ) -> Result<Field, String> {
        let check = |what: &str, v: &Literal| -> Result<Scalar<'static>, String> {
            if let Some(ok) = allowed
                && !ok.contains(&v.text().as_str())
            {
                return Err(format!(
                    "{what} \"{}\" is not accepted here: expected one of {}",
                    v.text(),
                    ok.join(", ")
                ));
            }
            Ok(literal(v))
        };
        let (source, pointer) = match (&t.path, &t.value) {
            (Some(p), None) => (Ok(self.pointer(p)?), p.clone()),
            (None, Some(v)) => (
                Err(check("value", v)?),
                format!("(value of {})", target.name()),
            ),
            _ => {
                return Err(
                    "give exactly one of `path` (a JSON Pointer) or `value` (a constant)".into(),
                );
            }
        };
        if (t.format.is_some() || t.timezone.is_some()) && target != Target::Ts {
            return Err("`format` and `timezone` apply to `ts` only".into());
        }
        if t.scale.is_some() && target != Target::Amount {
            return Err("`scale` applies to `amount` only".into());
        }
        if let Some(s) = t.scale
            && !(s.is_finite() && s != 0.0)
        {
            return Err("`scale` must be a finite, non-zero number".into());
        }
        let contains = match (&t.contains, &t.then) {
            (Some(c), Some(then)) => Some((c.clone(), check("then", then)?)),
            (None, None) => None,
            _ => return Err("`contains` and `then` go together".into()),
        };
        let map = match &t.map {
            None => None,
            Some(m) => Some(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), check(&format!("map value for \"{k}\""), v)?)))
                    .collect::<Result<Vec<_>, String>>()?,
            ),
        };
        let format = match &t.format {
            None => TimeFormat::Rfc3339,
            Some(f) => TimeFormat::parse(f)?,
        };
        let zone = match &t.timezone {
            None => chrono_tz::UTC,
            Some(z) => z.parse::<chrono_tz::Tz>().map_err(|_| {
                format!(
                    "unknown time zone `{z}`: use an IANA name such as \"Europe/Berlin\" or \"UTC\""
                )
            })?,
        };
        Ok(Field {
            pointer,
            source,
            default: t
                .default
                .as_ref()
                .map(|d| check("default", d))
                .transpose()?,
            map,
            contains,
            scale: t.scale,
            format,
            zone,
        })
    }
}

fn literal(v: &Literal) -> Scalar<'static> {
    match v {
        Literal::Text(s) => Scalar::Str(Cow::Owned(s.clone())),
        Literal::Int(i) => Scalar::Int(*i),
        Literal::Float(f) => Scalar::Float(*f),
        Literal::Bool(b) => Scalar::Bool(*b),
    }
}
