//! What serde cannot check: ranges, combinations, and the errors that name
//! the key at fault.

use std::time::Duration;

use super::{Config, days};

/// librdkafka's `partitioner` values.
const PARTITIONERS: [&str; 7] = [
    "random",
    "consistent",
    "consistent_random",
    "murmur2",
    "murmur2_random",
    "fnv1a",
    "fnv1a_random",
];

/// librdkafka properties the pass-through tables may not set: one owner per
/// customer (range assignment over co-partitioned topics), offsets stored
/// only once the output is safe, no duplicates from producer retries, and
/// only committed input read.
const GUARANTEED: [&str; 5] = [
    "partition.assignment.strategy",
    "enable.auto.offset.store",
    "enable.auto.commit",
    "enable.idempotence",
    "isolation.level",
];

/// A config that cannot be used; each variant names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key,
    /// wrong type). Reported by key path, line and column with the parser's
    /// message, never with the offending line (it may hold a secret).
    #[error("invalid config file {path}:{line}:{column}: {key}{message}")]
    Parse {
        /// The file (or `<text>`).
        path: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// `key.path: ` of the value at fault, or empty.
        key: String,
        /// What the parser found wrong.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid config value `{key}`: {why}")]
    Invalid {
        /// The key at fault.
        key: &'static str,
        /// What is wrong with its value.
        why: String,
    },
    /// A `[segments]` entry is wrong.
    #[error("invalid config value `segments.{name}`: {why}")]
    Segment {
        /// The segment (or `default`, `key_accounts`).
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A librdkafka pass-through property that churnwatch's guarantees rest on.
    #[error(
        "invalid config value `{key}`: churnwatch sets this property itself (its at-least-once and ownership guarantees rest on it); remove it"
    )]
    Guaranteed {
        /// The table and property.
        key: String,
    },
    /// An `[[http.tokens]]` entry is unusable (the index counts from 0).
    #[error("invalid config value `http.tokens[{index}]`: {why}")]
    Token {
        /// The entry's position.
        index: usize,
        /// What is wrong with it.
        why: String,
    },
    /// An `[[inputs]]` mapping that cannot work (the index counts from 0).
    #[error("invalid config value `{0}`")]
    Input(#[from] crate::mapping::MappingError),
    /// Two `[[inputs]]` entries for one topic.
    #[error("invalid config value `inputs[{index}].topic`: `{topic}` is mapped twice")]
    InputTwice {
        /// The second entry's position.
        index: usize,
        /// The topic.
        topic: String,
    },
    /// A mapped topic also named as a native one.
    #[error(
        "invalid config value `inputs[{index}].topic`: `{topic}` is also in kafka.input_topics or kafka.roster_topic (read natively); name it in one place"
    )]
    InputNative {
        /// The entry's position.
        index: usize,
        /// The topic.
        topic: String,
    },
    /// A `[[webhooks]]` entry is unusable (the index counts from 0).
    #[error("invalid config value `webhooks[{index}]`: {why}")]
    Webhook {
        /// The entry's position.
        index: usize,
        /// What is wrong with it.
        why: String,
    },
}

impl Config {
    /// Checks the ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tiers;
        let pct_ok = |p: f64| p.is_finite() && (0.0..=100.0).contains(&p);
        if !pct_ok(t.a_percent) || t.a_percent == 0.0 {
            return invalid("tiers.a_percent", "must be > 0 and <= 100");
        }
        if !pct_ok(t.b_percent) {
            return invalid("tiers.b_percent", "must be between 0 and 100");
        }
        if t.a_percent + t.b_percent > 100.0 {
            return invalid(
                "tiers.b_percent",
                "tiers.a_percent + tiers.b_percent must not exceed 100",
            );
        }
        let minute = Duration::from_secs(60);
        if self.inbox.keep < minute || self.inbox.keep > Duration::from_secs(10 * 365 * 86_400) {
            return invalid("inbox.keep", "must be between 1 minute and 10 years");
        }
        for (key, d) in [
            ("tiers.window", t.window),
            ("windows.frequency", self.windows.frequency),
            ("windows.handoffs", self.windows.handoffs),
        ] {
            if d < minute {
                return invalid(key, "must be at least 1 minute");
            }
        }
        if t.recompute_interval < Duration::from_secs(1) {
            return invalid("tiers.recompute_interval", "must be at least 1 second");
        }
        if !pct_ok(t.recompute_change) {
            return invalid("tiers.recompute_change", "must be between 0 and 100");
        }
        if let Err(why) = self.money.validate() {
            return Err(ConfigError::Invalid { key: "money", why });
        }
        let e = &self.engine;
        if !(e.max_amount.is_finite() && e.max_amount > 0.0) {
            return invalid("engine.max_amount", "must be a positive finite number");
        }
        if e.max_event_bytes < 64 {
            return invalid("engine.max_event_bytes", "must be at least 64");
        }
        if e.tick_interval < Duration::from_millis(10) {
            return invalid("engine.tick_interval", "must be at least 10ms");
        }
        if e.max_open_tickets == 0 {
            return invalid("engine.max_open_tickets", "must be at least 1");
        }
        let hours = e.dedup_window.as_secs() / 3600;
        if !e.dedup_window.as_secs().is_multiple_of(3600) || e.dedup_window.subsec_nanos() != 0 {
            return invalid("engine.dedup_window", "must be whole hours (or 0s: off)");
        }
        if hours > u64::from(crate::engine::duplicate::MAX_WINDOW_HOURS) {
            return invalid(
                "engine.dedup_window",
                "must be at most 32767h (about 3.7 years)",
            );
        }
        for (index, input) in self.inputs.iter().enumerate() {
            crate::mapping::compile(index, input)?;
            if self.inputs[..index].iter().any(|i| i.topic == input.topic) {
                return Err(ConfigError::InputTwice {
                    index,
                    topic: input.topic.clone(),
                });
            }
        }
        // A bare word is a target to `tracing` ("loud" would log
        // everything of a target named loud): only levels stand alone.
        let levels = ["error", "warn", "info", "debug", "trace", "off"];
        let directives_ok = self.log.level.split(',').all(|d| {
            let d = d.trim();
            d.contains('=') || levels.contains(&d.to_ascii_lowercase().as_str())
        });
        if !directives_ok
            || tracing_subscriber::EnvFilter::builder()
                .parse(&self.log.level)
                .is_err()
        {
            return invalid(
                "log.level",
                "must be a level (error, warn, info, debug, trace) or a tracing filter like info,churnwatch::pipeline=debug",
            );
        }
        if e.max_held_events < 2 {
            return invalid("engine.max_held_events", "must be at least 2");
        }
        let k = &self.kafka;
        for (table, props) in [("consumer", &k.consumer), ("producer", &k.producer)] {
            if let Some(key) = props.keys().find(|p| GUARANTEED.contains(&p.as_str())) {
                return Err(ConfigError::Guaranteed {
                    key: format!("kafka.{table}.\"{key}\""),
                });
            }
        }
        let topics = self.topics();
        if topics.inputs.is_empty() || k.input_topics.iter().any(|t| t.is_empty()) {
            return invalid(
                "kafka.input_topics",
                "must name at least one topic (unless [[inputs]] maps one), none empty",
            );
        }
        if let Some((index, input)) = self
            .inputs
            .iter()
            .enumerate()
            .find(|(_, i)| k.input_topics.contains(&i.topic) || k.roster_topic == i.topic)
        {
            return Err(ConfigError::InputNative {
                index,
                topic: input.topic.clone(),
            });
        }
        if topics.roster.is_empty() {
            return invalid(
                "kafka.roster_topic",
                "must not be empty (unless a roster = true input maps one)",
            );
        }
        if !PARTITIONERS.contains(&k.repartition_partitioner.as_str()) {
            return invalid(
                "kafka.repartition_partitioner",
                &format!("must be one of {}", PARTITIONERS.join(", ")),
            );
        }
        for (key, v) in [
            ("kafka.group_id", &k.group_id),
            ("kafka.alert_topic", &k.alert_topic),
            ("kafka.actions_topic", &k.actions_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ] {
            if v.is_empty() {
                return invalid(key, "must not be empty");
            }
        }
        if k.dead_letter_max_bytes < 1024 {
            return invalid("kafka.dead_letter_max_bytes", "must be at least 1024");
        }
        if self.http.liveness_timeout <= self.engine.tick_interval * 2 {
            return invalid(
                "http.liveness_timeout",
                "must be more than twice engine.tick_interval",
            );
        }
        if self.state.snapshot_interval < Duration::from_millis(100) {
            return invalid("state.snapshot_interval", "must be at least 100ms");
        }
        let h = &self.http;
        let Ok(bind) = h.bind.parse::<std::net::SocketAddr>() else {
            return invalid("http.bind", "must be an address like 127.0.0.1:9898");
        };
        if h.ops_bind.parse::<std::net::SocketAddr>().is_err() {
            return invalid("http.ops_bind", "must be an address like 127.0.0.1:9899");
        }
        if h.tokens.is_empty() && !bind.ip().is_loopback() {
            return invalid(
                "http.tokens",
                "a non-loopback http.bind needs at least one [[http.tokens]] entry (the data API holds customer data)",
            );
        }
        if h.tls_cert.is_some() != h.tls_key.is_some() {
            return invalid("http.tls_cert", "tls_cert and tls_key go together");
        }
        if h.request_timeout.is_zero() || h.max_concurrent_requests == 0 || h.max_body_bytes == 0 {
            return invalid(
                "http.request_timeout",
                "request_timeout, max_concurrent_requests and max_body_bytes must be positive",
            );
        }
        for (i, peer) in h.peers.iter().enumerate() {
            if let Err(why) = http_origin(peer) {
                return invalid("http.peers", &format!("entry {i}: {why}"));
            }
        }
        if let Some(Err(why)) = h.public_url.as_deref().map(http_origin) {
            return invalid("http.public_url", &why);
        }
        let mut token_names = std::collections::BTreeSet::new();
        for (index, t) in h.tokens.iter().enumerate() {
            let why = if t.name.is_empty() {
                Some("name must not be empty".to_string())
            } else if !token_names.insert(t.name.as_str()) {
                Some(format!("name `{}` is used twice", t.name))
            } else {
                match (&t.token_file, &t.token_sha256) {
                    (Some(_), None) => None,
                    (None, Some(h)) if h.len() == 64 && hex::decode(h).is_ok() => None,
                    (None, Some(_)) => Some("token_sha256 must be 64 hex digits".into()),
                    _ => Some("give exactly one of token_file and token_sha256".into()),
                }
            };
            if let Some(why) = why {
                return Err(ConfigError::Token { index, why });
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let segments = self.segments.names();
        for (index, w) in self.webhooks.iter().enumerate() {
            w.validate()
                .map_err(|why| ConfigError::Webhook { index, why })?;
            if let Some(s) = w.segments.iter().find(|s| !segments.contains(&s.as_str())) {
                return Err(ConfigError::Webhook {
                    index,
                    why: format!("segment `{s}` is not declared in [segments]"),
                });
            }
            if !names.insert(w.name.as_str()) {
                return Err(ConfigError::Webhook {
                    index,
                    why: format!("name `{}` is used twice", w.name),
                });
            }
        }
        if let Some((key, why)) = rules_problem(&self.rules) {
            return invalid(key, why);
        }
        self.segments.validate()?;
        for (name, seg) in &self.segments.declared {
            if let Some((key, why)) = rules_problem(&seg.rules_in_force) {
                return Err(ConfigError::Segment {
                    name: name.clone(),
                    why: format!("{key}: {why}"),
                });
            }
        }
        let w = &self.risk.weights;
        if u32::from(w.lapse) + u32::from(w.contact) + u32::from(w.rep) + u32::from(w.complaints)
            > 100
        {
            return invalid("risk.weights", "must add up to at most 100");
        }
        if self.risk.horizon < days(1) {
            return invalid("risk.horizon", "must be at least 1 day");
        }
        if self.risk.model.is_some_and(|m| !m.is_valid()) {
            return invalid("risk.model", "r, alpha, a and b must be positive numbers");
        }
        Ok(())
    }
}

pub(super) fn parse_error(text: &str, e: &toml::de::Error, key: &str) -> ConfigError {
    let start = e.span().map_or(0, |s| s.start.min(text.len()));
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigError::Parse {
        path: "<text>".into(),
        line,
        column,
        key: if key.is_empty() || key == "." {
            String::new()
        } else {
            format!("{key}: ")
        },
        message: without_values(e.message()),
    }
}

/// A parser message with the values it quotes left out (`invalid type:
/// string "…"`, `unknown variant `…``), so a secret given under the wrong
/// key or with the wrong type is never echoed; key names stay.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        match after.find('"') {
            Some(close) => {
                out.push_str("…\"");
                rest = &after[close + 1..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    const VARIANT: &str = "unknown variant `";
    if let Some(at) = out.find(VARIANT) {
        let start = at + VARIANT.len();
        if let Some(len) = out[start..].find('`') {
            out.replace_range(start..start + len, "…");
        }
    }
    out
}

/// An `http://` or `https://` address naming a host and nothing more (no
/// credentials, path, query or fragment), as `http.peers` and
/// `http.public_url` take.
pub fn http_origin(address: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(address).map_err(|e| format!("`{address}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!(
            "`{address}` must be an http:// or https:// address with a host"
        ));
    }
    if !u.username().is_empty()
        || u.password().is_some()
        || u.path() != "/"
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err(format!(
            "`{address}` must be scheme, host and port only (no credentials, path or query)"
        ));
    }
    Ok(u)
}

/// What is wrong with a `[rules]` table (the global one or a segment's),
/// by key.
fn rules_problem(r: &super::RulesConfig) -> Option<(&'static str, &'static str)> {
    if r.rep_turnover.handoff_threshold == 0 {
        return Some(("rules.rep_turnover.handoff_threshold", "must be at least 1"));
    }
    let pr = &r.purchase_recency;
    if !(pr.factor.is_finite() && pr.factor > 0.0) {
        return Some(("rules.purchase_recency.factor", "must be a positive number"));
    }
    if pr.min_purchase_days < 2 {
        return Some((
            "rules.purchase_recency.min_purchase_days",
            "must be at least 2 (a gap needs two purchase days)",
        ));
    }
    let (lo, hi) = (pr.min.by_tier(), pr.max.by_tier());
    if lo
        .iter()
        .zip(hi)
        .any(|(l, h)| l.zip(h).is_some_and(|(l, h)| l > h))
    {
        return Some((
            "rules.purchase_recency.min",
            "must not exceed max in any tier",
        ));
    }
    let rr = &r.risk;
    if [rr.a, rr.b, rr.c, Some(rr.hysteresis)]
        .iter()
        .flatten()
        .any(|&t| t > 100)
    {
        return Some((
            "rules.risk",
            "thresholds and hysteresis are scores, 0 to 100",
        ));
    }
    None
}

fn invalid<T>(key: &'static str, why: &str) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key,
        why: why.to_string(),
    })
}
