//! The one config tree (TOML), its defaults and its validation.
//!
//! `config/churnwatch.toml` is the documented copy of these defaults; a test
//! keeps the two equal. Every section rejects unknown keys so a typo fails at
//! start instead of silently running with a default.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::rule::RuleSet;
use crate::webhook::WebhookConfig;

/// Everything churnwatch reads from its config file.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Time handling and input limits of the engine.
    pub engine: EngineConfig,
    /// Dynamic ABC tiering.
    pub tiers: TierConfig,
    /// Trailing windows of the rolling counters.
    pub windows: WindowConfig,
    /// Churn rules and their per-tier limits.
    pub rules: RuleSet,
    /// Kafka topics, group and librdkafka pass-through (`run`, `demo`).
    pub kafka: KafkaConfig,
    /// The HTTP API (`run`, `demo`).
    pub http: HttpConfig,
    /// Signed callbacks, any number (`[[webhooks]]`).
    pub webhooks: Vec<WebhookConfig>,
    /// Local partition snapshots (`run`).
    pub state: StateConfig,
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory of per-partition snapshots; empty turns snapshots off (then
    /// offsets are committed as soon as alerts are acknowledged, and a
    /// restart starts each partition's state empty).
    pub dir: std::path::PathBuf,
    /// How often each assigned partition's state is written. Offsets are
    /// committed only up to the newest durable snapshot.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: "churnwatch-state".into(),
            snapshot_interval: Duration::from_secs(30),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP API (metrics, health, customers, alerts).
    pub bind: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:9898".into(),
        }
    }
}

/// How the engine treats time and what input it accepts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How far the event-time watermark trails the largest event `ts` seen.
    /// Events inside this lateness are held back and applied in `ts` order.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Events whose `ts` is further than this ahead of the newest time the
    /// engine knows are rejected (`future_timestamp`), so one bad clock cannot
    /// fire every customer's deadlines at once.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Largest accepted absolute purchase amount; larger is `bad_amount`.
    pub max_amount: f64,
    /// Largest accepted message, in bytes; larger is `too_large`.
    pub max_event_bytes: usize,
    /// Time source of `run`: `wall` fires deadlines from the wall clock (a
    /// silent customer is alerted with no events arriving); `event` makes
    /// the watermark the minimum over assigned partitions of the largest
    /// event time seen, so `run` equals `replay` over time-ordered input.
    pub clock: RunClock,
    /// Under the event clock, a partition that is caught up and has had no
    /// message for this long no longer holds the watermark back.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How often `run` moves engine time (wall clock) or re-reads partition
    /// progress (event clock).
    #[serde(with = "humantime_serde")]
    pub tick_interval: Duration,
}

/// Where `run` takes time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunClock {
    #[default]
    Wall,
    Event,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::ZERO,
            max_future_skew: days(1),
            max_amount: 1e9,
            max_event_bytes: 64 * 1024,
            clock: RunClock::Wall,
            idle_timeout: Duration::from_secs(5),
            tick_interval: Duration::from_millis(200),
        }
    }
}

/// Dynamic ABC tiers: shares of the customers with positive monetary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierConfig {
    /// Share of customers (by rank of monetary) in tier A, in percent.
    pub a_percent: f64,
    /// Share of customers in tier B, in percent, on top of A's.
    pub b_percent: f64,
    /// Trailing window of spend that ranks customers (monetary).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Engine time between two threshold recomputes.
    #[serde(with = "humantime_serde")]
    pub recompute_interval: Duration,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            a_percent: 5.0,
            b_percent: 15.0,
            window: days(365),
            recompute_interval: Duration::from_secs(3600),
        }
    }
}

/// Trailing windows of the frequency and rep-handoff counters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Window of `frequency` (purchases counted).
    #[serde(with = "humantime_serde")]
    pub frequency: Duration,
    /// Window of rep handoffs counted by `rep_turnover` (cause `handoffs`).
    #[serde(with = "humantime_serde")]
    pub handoffs: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            frequency: days(90),
            handoffs: days(180),
        }
    }
}

/// `[kafka]`: where `run` reads and writes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers (`--brokers` overrides).
    pub brokers: String,
    /// Consumer group of all `run` instances that share the work.
    pub group_id: String,
    /// Co-partitioned input topics; any may carry any event type.
    pub input_topics: Vec<String>,
    /// Rep roster topic, read in full by every instance.
    pub roster_topic: String,
    /// Where alerts go, keyed by customer id.
    pub alert_topic: String,
    /// Where rejected messages go, with the reason in headers.
    pub dead_letter_topic: String,
    /// Compacted state changelog, co-partitioned with the inputs, keyed by
    /// customer id; "" turns hand-over through Kafka off (used only with
    /// `state.dir` set: snapshot rounds write it).
    pub changelog_topic: String,
    /// librdkafka consumer properties, passed through as they are (TLS,
    /// SASL, timeouts). Values are never logged.
    pub consumer: BTreeMap<String, String>,
    /// librdkafka producer properties, passed through as they are.
    pub producer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "churnwatch".into(),
            input_topics: vec!["purchases".into(), "calls".into(), "tickets".into()],
            roster_topic: "reps".into(),
            alert_topic: "churn-alerts".into(),
            dead_letter_topic: "churn-dead-letters".into(),
            changelog_topic: "churnwatch-state".into(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

pub(crate) const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// A config that cannot be used; each variant names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key,
    /// wrong type); the parser's message names the key and line.
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    /// A value is out of its allowed range.
    #[error("invalid config value `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
    /// A `[[webhooks]]` entry is unusable (the index counts from 0).
    #[error("invalid config value `webhooks[{index}]`: {why}")]
    Webhook { index: usize, why: String },
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: shown,
                source,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

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
        let k = &self.kafka;
        if k.input_topics.is_empty() || k.input_topics.iter().any(|t| t.is_empty()) {
            return invalid(
                "kafka.input_topics",
                "must name at least one topic, none empty",
            );
        }
        for (key, v) in [
            ("kafka.group_id", &k.group_id),
            ("kafka.roster_topic", &k.roster_topic),
            ("kafka.alert_topic", &k.alert_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
        ] {
            if v.is_empty() {
                return invalid(key, "must not be empty");
            }
        }
        if self.state.snapshot_interval < Duration::from_millis(100) {
            return invalid("state.snapshot_interval", "must be at least 100ms");
        }
        if self.http.bind.parse::<std::net::SocketAddr>().is_err() {
            return invalid("http.bind", "must be an address like 127.0.0.1:9898");
        }
        let mut names = std::collections::BTreeSet::new();
        for (index, w) in self.webhooks.iter().enumerate() {
            w.validate()
                .map_err(|why| ConfigError::Webhook { index, why })?;
            if !names.insert(w.name.as_str()) {
                return Err(ConfigError::Webhook {
                    index,
                    why: format!("name `{}` is used twice", w.name),
                });
            }
        }
        if self.rules.rep_turnover.handoff_threshold == 0 {
            return invalid("rules.rep_turnover.handoff_threshold", "must be at least 1");
        }
        Ok(())
    }
}

fn invalid<T>(key: &'static str, why: &str) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key,
        why: why.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_file_equals_builtin_defaults() {
        let text = include_str!("../config/churnwatch.toml");
        let parsed = Config::parse(text).expect("shipped config parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[tiers]\na_percnt = 5\n").unwrap_err();
        assert!(err.to_string().contains("a_percnt"), "{err}");
    }

    #[test]
    fn inconsistent_percentages_name_the_key() {
        let err = Config::parse("[tiers]\na_percent = 60\nb_percent = 50\n").unwrap_err();
        assert!(err.to_string().contains("tiers.b_percent"), "{err}");
    }

    #[test]
    fn webhook_errors_name_the_entry_and_never_echo_the_secret() {
        let text =
            "[[webhooks]]\nname = \"team\"\nurl = \"ftp://x\"\nsecret = \"whsec_c2VjcmV0\"\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains("webhooks[0]") && err.contains("url"), "{err}");
        let ok = Config::parse(&text.replace("ftp://x", "https://x")).unwrap();
        assert!(
            !format!("{ok:?}").contains("c2VjcmV0"),
            "Debug redacts the secret"
        );
    }

    #[test]
    fn durations_parse_in_human_form() {
        let c = Config::parse("[rules.purchase_recency]\nA = \"10d\"\n").unwrap();
        assert_eq!(c.rules.purchase_recency.a, Some(days(10)));
        assert_eq!(
            c.rules.purchase_recency.b, None,
            "an unlisted tier has the rule off"
        );
    }
}
