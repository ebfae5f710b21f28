//! The one config tree (TOML), its defaults and its validation, one file
//! per section.
//!
//! `config/churnwatch.toml` is the documented copy of these defaults; a test
//! keeps the two equal. Every section rejects unknown keys so a typo fails at
//! start instead of silently running with a default.

mod engine;
mod http;
mod inputs;
mod kafka;
mod rules;
mod segments;
mod validation;
mod webhooks;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub use engine::{EngineConfig, MoneyConfig, RunClock, TierConfig, WindowConfig};
pub use http::{HttpConfig, Role, TokenConfig};
pub use inputs::{
    EventSource, FieldSource, FieldTable, InputConfig, Literal, Topics, Unwrap, When,
};
pub use kafka::{KafkaConfig, Properties};
pub use rules::{
    PurchaseRecencyConfig, RecencyMode, RepTurnoverConfig, RiskConfig, RiskRuleConfig, RiskWeights,
    RulesConfig, TierLimits,
};
pub use segments::{DEFAULT_SEGMENT, KeyAccountsConfig, SegmentConfig, SegmentsConfig};
use validation::parse_error;
pub use validation::{ConfigError, http_origin};
pub use webhooks::{Delivered, WebhookConfig, WebhookSecret};

use crate::engine::risk::{RiskSettings, Weights};
use crate::engine::segment::{Ranking, SegmentSettings, Segmentation};
use crate::engine::settings::{
    AdaptiveRecency, RuleSettings, Settings, TierSettings, WindowSettings,
};

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
    /// The currency amounts are kept in, and conversion rates.
    pub money: MoneyConfig,
    /// Churn rules and their per-tier limits.
    pub rules: RulesConfig,
    /// Kinds of customer with their own ranking and rules; key accounts.
    pub segments: SegmentsConfig,
    /// The churn-risk score.
    pub risk: RiskConfig,
    /// Kafka topics, group and librdkafka pass-through (`run`, `demo`).
    pub kafka: KafkaConfig,
    /// The HTTP API (`run`, `demo`).
    pub http: HttpConfig,
    /// Signed callbacks, any number (`[[webhooks]]`).
    pub webhooks: Vec<WebhookConfig>,
    /// Local partition snapshots (`run`).
    pub state: StateConfig,
    /// The retention inbox (`run`, `demo`).
    pub inbox: InboxConfig,
    /// Mappings of the company's own topics (`[[inputs]]`); topics
    /// without one are read in the native format.
    pub inputs: Vec<InputConfig>,
    /// Log level and format.
    pub log: LogConfig,
}

impl Config {
    /// What `run` consumes.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.kafka, &self.inputs)
    }
}

/// `[log]`: what the process writes to stderr.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `debug`, `info,churnwatch::pipeline=debug`);
    /// `RUST_LOG` overrides it. librdkafka's own logs stay at `warn` unless
    /// the filter names a target.
    pub level: String,
    /// `text` (colours only when stderr is a terminal) or `json` (one
    /// object per line, for journald, Loki, Elasticsearch).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, message, fields.
    Json,
}

/// `[inbox]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// How long a resolved episode stays in the inbox (and its lifecycle
    /// on the actions topic) after it resolved, counted on the alerts'
    /// own clock (the newest transition seen); then it is dropped and its
    /// record tombstoned. Episodes still firing, closed or not, are kept.
    #[serde(with = "humantime_serde")]
    pub keep: Duration,
}

impl Default for InboxConfig {
    fn default() -> Self {
        Self {
            keep: Duration::from_secs(30 * 86_400),
        }
    }
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

pub(crate) const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
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
            ConfigError::Parse {
                line,
                column,
                key,
                message,
                ..
            } => ConfigError::Parse {
                path: shown,
                line,
                column,
                key,
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| parse_error(text, &e, ""))?;
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            parse_error(text, e.inner(), &key)
        })?;
        if !config.segments.declared.is_empty() {
            let raw: toml::Table = text.parse().map_err(|e| parse_error(text, &e, ""))?;
            config.segments.resolve_rules(&raw)?;
        }
        config.segments.load_key_accounts()?;
        config.validate()?;
        Ok(config)
    }

    /// The engine's plain settings (call on a validated config).
    pub fn engine_settings(&self) -> Settings {
        let (e, t) = (&self.engine, &self.tiers);
        Settings {
            allowed_lateness: e.allowed_lateness,
            max_future_skew: e.max_future_skew,
            max_amount: e.max_amount,
            max_event_bytes: e.max_event_bytes,
            max_open_tickets: e.max_open_tickets,
            forget_after: e.forget_after,
            dedup_window: e.dedup_window,
            tiers: TierSettings {
                a_percent: t.a_percent,
                b_percent: t.b_percent,
                window: t.window,
                recompute_interval: t.recompute_interval,
                recompute_change: t.recompute_change / 100.0,
            },
            windows: WindowSettings {
                frequency: self.windows.frequency,
                handoffs: self.windows.handoffs,
            },
            rules: rule_settings(&self.rules),
            segments: self.segmentation(),
            risk: RiskSettings {
                horizon_days: self.risk.horizon.as_secs_f64() / 86_400.0,
                weights: Weights {
                    lapse: self.risk.weights.lapse,
                    contact: self.risk.weights.contact,
                    rep: self.risk.weights.rep,
                    complaints: self.risk.weights.complaints,
                },
                model: self.risk.model.unwrap_or_default(),
            },
            money: self.money.money(),
        }
    }
}

/// A `[rules]` table as the engine takes it.
fn rule_settings(r: &RulesConfig) -> RuleSettings {
    RuleSettings {
        purchase_recency: r.purchase_recency.fixed().by_tier(),
        contact_gap: r.contact_gap.by_tier(),
        rep_turnover_tiers: r.rep_turnover.tiers.clone(),
        departed: r.rep_turnover.departed,
        handoffs: r.rep_turnover.handoffs,
        handoff_threshold: r.rep_turnover.handoff_threshold,
        adaptive_recency: (r.purchase_recency.mode == RecencyMode::Adaptive).then(|| {
            let p = &r.purchase_recency;
            AdaptiveRecency {
                factor: p.factor,
                min_purchase_days: p.min_purchase_days,
                min: p.min.by_tier().map(|d| d.unwrap_or(Duration::ZERO)),
                max: p.max.by_tier().map(|d| d.unwrap_or(days(36500))),
            }
        }),
        risk: [r.risk.a, r.risk.b, r.risk.c],
        risk_hysteresis: r.risk.hysteresis,
    }
}

impl Config {
    /// The segments as the engine takes them: sorted by name, each with
    /// its rules in force (the default one, if not declared, with the
    /// global rules and its own ranking).
    pub fn segmentation(&self) -> Segmentation {
        let s = &self.segments;
        let names = s.names();
        Segmentation {
            segments: names
                .iter()
                .map(|&name| {
                    let declared = s.declared.get(name);
                    SegmentSettings {
                        name: name.into(),
                        ranking: declared.map_or(Ranking::Own, |d| d.tiers),
                        rules: rule_settings(declared.map_or(&self.rules, |d| &d.rules_in_force)),
                    }
                })
                .collect(),
            default: names.iter().position(|&n| n == s.default).unwrap_or(0) as u8,
            key_accounts: s.key_account_ids.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
