//! How each consumed topic's records become events in `run`: natively, through
//! the topic's `[[inputs]]` mapping, or, on the repartition topic, through
//! the mapping of the topic the record was re-keyed from (its
//! [`SOURCE_TOPIC_HEADER`]). The decoding itself is replay's
//! ([`crate::mapping::decode`]), so both read a record alike.

use rdkafka::Message;

use crate::config::Config;
use crate::engine::event::{DecodeLimits, RejectReason};
use crate::kafka::sink::{SOURCE_TOPIC_HEADER, header_str};
use crate::mapping::{Mapped, Mapping, MappingError};

/// How one topic is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Through `mappings[i]`.
    Mapped(usize),
    /// The repartition topic: through the source topic's mapping.
    Repartitioned,
}

/// Every consumed topic's decoder; topics not listed are native.
pub struct Decoders {
    /// A handful of topics: a linear search beats hashing the name.
    routes: Vec<(String, Route)>,
    mappings: Vec<Mapping>,
}

impl Decoders {
    /// The decoders of `config`'s topics (mappings compiled once).
    pub fn new(config: &Config) -> Result<Self, MappingError> {
        let mut routes = Vec::new();
        let mut mappings = Vec::new();
        for (i, input) in config.inputs.iter().enumerate() {
            mappings.push(crate::mapping::compile(i, input)?);
            routes.push((input.topic.clone(), Route::Mapped(i)));
        }
        if let Some(t) = config.topics().repartition {
            routes.push((t, Route::Repartitioned));
        }
        Ok(Self { routes, mappings })
    }

    fn route(&self, topic: &str) -> Option<Route> {
        self.routes
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, r)| *r)
    }

    fn mapping(&self, topic: &str) -> Option<&Mapping> {
        self.routes.iter().find_map(|(t, r)| match r {
            Route::Mapped(i) if t == topic => self.mappings.get(*i),
            _ => None,
        })
    }

    /// Names the pointer of the field `reason` concerns when `m` was read
    /// through a mapping (for reasons found after decoding, such as
    /// `unknown_currency`).
    pub fn locate<M: Message>(&self, m: &M, reason: RejectReason) -> RejectReason {
        let mapping = match self.route(m.topic()) {
            Some(Route::Mapped(i)) => self.mappings.get(i),
            Some(Route::Repartitioned) => source_topic(m).and_then(|t| self.mapping(t)),
            None => None,
        };
        match mapping {
            Some(mapping) => mapping.locate(reason),
            None => reason,
        }
    }

    /// Decodes `m`.
    pub fn decode<M: Message>(&self, m: &M, limits: DecodeLimits) -> Result<Mapped, RejectReason> {
        match self.route(m.topic()) {
            None => crate::mapping::decode(None, m.key(), m.payload(), limits),
            Some(Route::Mapped(i)) => {
                crate::mapping::decode(self.mappings.get(i), m.key(), m.payload(), limits)
            }
            Some(Route::Repartitioned) => {
                let source = source_topic(m).unwrap_or("");
                match self.mapping(source).filter(|m| !m.keyed_by_customer) {
                    // Re-keyed by customer id: the key check has passed.
                    Some(mapping) => mapping.decode(None, m.payload(), limits),
                    None => Err(RejectReason::UnknownSource {
                        topic: crate::engine::event::shorten(source),
                    }),
                }
            }
        }
    }
}

/// The source topic a repartitioned record names.
fn source_topic<M: Message>(m: &M) -> Option<&str> {
    header_str(m, SOURCE_TOPIC_HEADER)
}
