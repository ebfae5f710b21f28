//! The one config tree (TOML), its defaults and its validation.
//!
//! `config/churnwatch.toml` is the documented copy of these defaults; a test
//! keeps the two equal. Every section rejects unknown keys so a typo fails at
//! start instead of silently running with a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::engine::alert::Status;
use crate::engine::bgnbd::Model;
use crate::engine::risk::{RiskSettings, Weights};
use crate::engine::rule::Rule;
use crate::engine::settings::{
    AdaptiveRecency, RuleSettings, Settings, TierSettings, WindowSettings,
};
use crate::engine::tier::Tier;

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
    pub rules: RulesConfig,
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

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the data API (customers, alerts; needs a token unless it
    /// is loopback-only, see `tokens`).
    pub bind: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`, unauthenticated and
    /// nothing else, so scrapers and probes never hold a data credential.
    pub ops_bind: String,
    /// `/healthz` answers 503 once the engine loop has made no progress
    /// for this long (it turns at least every `engine.tick_interval`), so
    /// an orchestrator restarts a stalled instance.
    #[serde(with = "humantime_serde")]
    pub liveness_timeout: Duration,
    /// PEM certificate chain: with `tls_key`, the data listener speaks TLS
    /// only (reloaded on SIGHUP and when either file changes).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Who may use the data API. None: loopback only, and only for
    /// requests addressed to a loopback host name.
    pub tokens: Vec<TokenConfig>,
    /// A data request (headers, body and answer) taking longer is answered
    /// 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Data requests served at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Largest accepted request body on the data listener, in bytes.
    pub max_body_bytes: usize,
    /// A file of at least 32 random bytes signing the inbox page's session
    /// cookies; give every instance the same one to sign in once for the
    /// group. None: a key drawn at start (sessions last as long as the
    /// process, on that instance).
    pub session_key_file: Option<PathBuf>,
    /// How long a sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The data listener's address as browsers and the other instances
    /// reach it (e.g. `https://inbox-2.example.com`), announced on
    /// `kafka.instances_topic`. None: `http://` (or `https://` under TLS)
    /// and `bind`.
    pub advertised_url: Option<String>,
    /// The other instances' data listeners (e.g.
    /// `["https://cw-1.internal:9898"]`), the only addresses a customer
    /// page asks whether they hold a customer and sends the browser to.
    /// An announcement on `kafka.instances_topic` naming any other address
    /// is logged, counted in `churnwatch_inbox_untrusted_announcements_total`
    /// and ignored. Empty: no other instance is ever asked.
    pub peers: Vec<String>,
    /// A file holding the token this instance presents to its peers as a
    /// bearer token (give each peer a `viewer` entry for it in
    /// `http.tokens`). A caller's own credentials are never forwarded.
    /// None: peers are asked without a credential (loopback-only peers).
    pub peer_token_file: Option<PathBuf>,
    /// The inbox's address as browsers reach it (e.g.
    /// `https://inbox.example.com`), for a reverse proxy that rewrites
    /// `Host`: a write whose `Origin` names it is accepted, as is one whose
    /// `Origin` names the request's own authority (`:authority` or `Host`).
    pub public_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:9898".into(),
            ops_bind: "127.0.0.1:9899".into(),
            liveness_timeout: Duration::from_secs(60),
            tls_cert: None,
            tls_key: None,
            tokens: Vec::new(),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 64,
            max_body_bytes: 64 * 1024,
            session_key_file: None,
            session_ttl: Duration::from_secs(12 * 3600),
            advertised_url: None,
            peers: Vec::new(),
            peer_token_file: None,
            public_url: None,
        }
    }
}

/// `[[http.tokens]]`: one credential for the data API. The token itself
/// is never in the config: either a file holding it or its SHA-256.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; logged with each write action (the token never is).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// A file whose content (surrounding whitespace trimmed) is the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Hex of the token's SHA-256 (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// What a data API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read customers and alerts.
    Viewer,
    /// Read, and the write actions (any method other than GET and HEAD).
    Operator,
}

/// librdkafka properties passed through; `Debug` shows the keys only, since
/// values include `sasl.password` and key material.
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(transparent)]
pub struct Properties(pub BTreeMap<String, String>);

impl std::ops::Deref for Properties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
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
    /// Open tickets kept per customer; beyond it the oldest is forgotten
    /// (counted), so no customer's state grows without bound.
    pub max_open_tickets: u16,
    /// Events held for ordering (event time) before `run` pauses the input
    /// partitions that run ahead of engine time, until half have drained:
    /// back-pressure instead of unbounded memory when one partition lags.
    pub max_held_events: usize,
    /// Customers with no spend in `tiers.window`, nothing firing, no open
    /// ticket and no event for this long are forgotten (at the hourly
    /// recompute), so one-off contacts do not accumulate; off by default
    /// ("" or absent), since a forgotten customer is new when it returns.
    #[serde(with = "humantime_serde")]
    pub forget_after: Option<Duration>,
}

/// Where `run` takes time from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunClock {
    /// Deadlines fire from the wall clock (once caught up: until then
    /// `run` moves on event time, see `pipeline::step`).
    #[default]
    Wall,
    /// Event time across partitions: the watermark is the minimum over the
    /// assigned partitions ([`crate::engine::watermark::Clock::PartitionMinimum`]).
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
            max_open_tickets: 100,
            max_held_events: 1_000_000,
            forget_after: None,
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
    /// Under the wall clock, thresholds are also recomputed as soon as the
    /// population has moved by more than this share since the last
    /// recompute, in percent: purchases applied since then, or the count of
    /// customers with spend. Engine time hardly moves while a backlog
    /// streams in, so the interval alone would rank on a stale population.
    /// Event clocks (replay, `run` with `clock = "event"`) rank on the
    /// interval only: their time moves with the data, and their alerts
    /// stay exactly those of earlier versions. 0 turns it off.
    pub recompute_change: f64,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            a_percent: 5.0,
            b_percent: 15.0,
            window: days(365),
            recompute_interval: Duration::from_secs(3600),
            recompute_change: 1.0,
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
    /// The inbox's lifecycle records (acknowledged, snoozed, assigned,
    /// closed, notes), keyed by `alert_id`, compacted; read in full by
    /// every instance.
    pub actions_topic: String,
    /// Where each instance announces its `http.advertised_url` and input
    /// partitions, keyed by instance, compacted; "" turns it off (customer
    /// pages then show what the alerts carried when another instance holds
    /// the customer).
    pub instances_topic: String,
    /// Where rejected messages go, with the reason in headers.
    pub dead_letter_topic: String,
    /// Compacted state changelog, co-partitioned with the inputs, keyed by
    /// customer id; "" turns hand-over through Kafka off (used only with
    /// `state.dir` set: snapshot rounds write it).
    pub changelog_topic: String,
    /// librdkafka consumer properties, passed through as they are (TLS,
    /// SASL, timeouts). Values are never logged.
    pub consumer: Properties,
    /// librdkafka producer properties, passed through as they are.
    pub producer: Properties,
    /// A dead letter's key and payload together are cut to this many bytes
    /// (headers then carry the original size and a SHA-256 of the whole
    /// payload), so an input the broker accepted always fits as a dead
    /// letter under the producer's `message.max.bytes`.
    pub dead_letter_max_bytes: usize,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "churnwatch".into(),
            input_topics: vec!["purchases".into(), "calls".into(), "tickets".into()],
            roster_topic: "reps".into(),
            alert_topic: "churn-alerts".into(),
            actions_topic: "churnwatch-actions".into(),
            instances_topic: "churnwatch-instances".into(),
            dead_letter_topic: "churn-dead-letters".into(),
            changelog_topic: "churnwatch-state".into(),
            consumer: Properties::default(),
            producer: Properties::default(),
            dead_letter_max_bytes: 256 * 1024,
        }
    }
}

/// A limit per tier; a tier left out has the rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    /// Tier A's limit.
    #[serde(rename = "A", default, with = "humantime_serde")]
    pub a: Option<Duration>,
    /// Tier B's limit.
    #[serde(rename = "B", default, with = "humantime_serde")]
    pub b: Option<Duration>,
    /// Tier C's limit.
    #[serde(rename = "C", default, with = "humantime_serde")]
    pub c: Option<Duration>,
}

impl TierLimits {
    /// The limits indexed by [`Tier::index`].
    fn by_tier(&self) -> [Option<Duration>; 3] {
        Tier::ALL.map(|t| match t {
            Tier::A => self.a,
            Tier::B => self.b,
            Tier::C => self.c,
        })
    }
}

/// `[rules.purchase_recency]`: the fixed limit per tier (a tier left out has
/// the rule off) and, in `adaptive` mode, the per-customer limit. The tier
/// keys repeat [`TierLimits`]' because serde cannot flatten a struct into
/// one that denies unknown keys.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRecencyConfig {
    /// Tier A's fixed limit.
    #[serde(rename = "A", default, with = "humantime_serde")]
    pub a: Option<Duration>,
    /// Tier B's fixed limit.
    #[serde(rename = "B", default, with = "humantime_serde")]
    pub b: Option<Duration>,
    /// Tier C's fixed limit.
    #[serde(rename = "C", default, with = "humantime_serde")]
    pub c: Option<Duration>,
    /// `fixed` (default) or `adaptive`.
    #[serde(default)]
    pub mode: RecencyMode,
    /// Adaptive: the limit is this multiple of the customer's mean gap
    /// between purchase days.
    #[serde(default = "default_recency_factor")]
    pub factor: f64,
    /// Adaptive: purchase days a customer needs before its own gap is
    /// trusted; until then the fixed limit applies.
    #[serde(default = "default_min_purchase_days")]
    pub min_purchase_days: u32,
    /// Adaptive: the lowest limit per tier.
    #[serde(default = "default_adaptive_min")]
    pub min: TierLimits,
    /// Adaptive: the highest limit per tier.
    #[serde(default = "default_adaptive_max")]
    pub max: TierLimits,
}

/// How `purchase_recency` sets a customer's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecencyMode {
    /// The tier's limit for everyone.
    #[default]
    Fixed,
    /// From the customer's own purchase rhythm.
    Adaptive,
}

fn default_recency_factor() -> f64 {
    3.0
}

fn default_min_purchase_days() -> u32 {
    4
}

fn default_adaptive_min() -> TierLimits {
    TierLimits {
        a: Some(days(14)),
        b: Some(days(21)),
        c: Some(days(30)),
    }
}

fn default_adaptive_max() -> TierLimits {
    TierLimits {
        a: Some(days(90)),
        b: Some(days(120)),
        c: Some(days(180)),
    }
}

impl PurchaseRecencyConfig {
    /// Sets the fixed limits of all three tiers.
    pub fn set_fixed(&mut self, limits: TierLimits) {
        (self.a, self.b, self.c) = (limits.a, limits.b, limits.c);
    }

    fn fixed(&self) -> TierLimits {
        TierLimits {
            a: self.a,
            b: self.b,
            c: self.c,
        }
    }
}

/// `[rules.risk]`: the score at which a customer of each tier alerts (a
/// tier left out, as all are by default, has the rule off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskRuleConfig {
    /// Tier A's threshold, 0–100.
    #[serde(rename = "A", default)]
    pub a: Option<u8>,
    /// Tier B's threshold.
    #[serde(rename = "B", default)]
    pub b: Option<u8>,
    /// Tier C's threshold.
    #[serde(rename = "C", default)]
    pub c: Option<u8>,
    /// A firing alert resolves once the score is this many points below
    /// the threshold, so a score hovering at it does not flap.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: u8,
}

fn default_hysteresis() -> u8 {
    10
}

impl Default for RiskRuleConfig {
    fn default() -> Self {
        Self {
            a: None,
            b: None,
            c: None,
            hysteresis: default_hysteresis(),
        }
    }
}

/// `[risk]`: the churn-risk score (see `engine::risk`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// The `lapse` factor is the chance of no purchase within this.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Points per factor (at most 100 together).
    pub weights: RiskWeights,
    /// BG/NBD parameters in days, as `churnwatch fit` writes them. Left
    /// out: the built-in fit (CDNOW); `churnwatch evaluate` then fits them
    /// on the history up to its cut, as a deployment would with `fit`.
    pub model: Option<Model>,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            horizon: days(90),
            weights: RiskWeights::default(),
            model: None,
        }
    }
}

/// `[risk.weights]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskWeights {
    /// Purchase silence against the customer's rhythm (BG/NBD).
    pub lapse: u8,
    /// Rep contact gap against the tier's service level.
    pub contact: u8,
    /// Departed account rep or frequent handoffs.
    pub rep: u8,
    /// Open complaints.
    pub complaints: u8,
}

impl Default for RiskWeights {
    fn default() -> Self {
        let w = Weights::default();
        Self {
            lapse: w.lapse,
            contact: w.contact,
            rep: w.rep,
            complaints: w.complaints,
        }
    }
}

/// `[rules]`: every rule's settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Longest allowed time since the last purchase, per tier.
    pub purchase_recency: PurchaseRecencyConfig,
    /// Longest allowed time since the last rep contact (or first seen), per tier.
    pub contact_gap: TierLimits,
    /// Rep departures and frequent rep changes.
    pub rep_turnover: RepTurnoverConfig,
    /// The churn-risk score over a per-tier threshold (off by default).
    pub risk: RiskRuleConfig,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            purchase_recency: PurchaseRecencyConfig {
                a: Some(days(30)),
                b: Some(days(45)),
                c: None,
                mode: RecencyMode::Fixed,
                factor: default_recency_factor(),
                min_purchase_days: default_min_purchase_days(),
                min: default_adaptive_min(),
                max: default_adaptive_max(),
            },
            contact_gap: TierLimits {
                a: Some(days(14)),
                b: Some(days(30)),
                c: None,
            },
            rep_turnover: RepTurnoverConfig::default(),
            risk: RiskRuleConfig::default(),
        }
    }
}

/// `[rules.rep_turnover]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepTurnoverConfig {
    /// Tiers the rule applies to.
    pub tiers: Vec<Tier>,
    /// Alert when a customer's account rep departs.
    pub departed: bool,
    /// Alert when rep handoffs in the handoff window reach the threshold.
    pub handoffs: bool,
    /// Handoffs in `windows.handoffs` that make the `handoffs` cause fire.
    pub handoff_threshold: u32,
}

impl Default for RepTurnoverConfig {
    fn default() -> Self {
        Self {
            tiers: vec![Tier::A, Tier::B],
            departed: true,
            handoffs: true,
            handoff_threshold: 3,
        }
    }
}

/// `[[webhooks]]`: one receiving endpoint.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name used in metrics, logs and dead letters (never the URL, which may
    /// carry credentials).
    pub name: String,
    /// Where alerts are POSTed (`http://` or `https://`).
    pub url: String,
    /// Standard Webhooks secret, `whsec_<base64 key>`, decoded once here.
    /// Never logged.
    pub secret: WebhookSecret,
    /// Deliver only alerts of these tiers (all when empty).
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Deliver only these rules (all when empty).
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Deliver only these statuses. Empty: `firing` and `resolved`; the
    /// inbox's lifecycle events (`acknowledged`, `snoozed`, `reopened`,
    /// `assigned`, `closed`) only when named.
    #[serde(default)]
    pub statuses: Vec<Delivered>,
    /// Per-attempt timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before an alert is dead-lettered; 0 = no count limit, only
    /// `retry_for` bounds the retries.
    #[serde(default)]
    pub max_attempts: u32,
    /// How long after it was produced to the alert topic an alert is still
    /// retried. Counted from production, not from the first attempt, so a
    /// long outage drains the backlog (to the dead letters) instead of
    /// retrying each alert in turn for the whole budget.
    #[serde(default = "default_retry_for", with = "humantime_serde")]
    pub retry_for: Duration,
    /// First retry delay; doubles per attempt up to `backoff_max`.
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// JSON-lines file of undeliverable alerts.
    #[serde(default = "default_dead_letter_file")]
    pub dead_letter_file: PathBuf,
    /// Allow targets on loopback, private, link-local, unique-local or
    /// unspecified addresses (checked on every resolved address at connect
    /// time); off, so a webhook cannot be aimed into the network churnwatch
    /// runs in.
    #[serde(default)]
    pub allow_private_network: bool,
    /// Proxy for this endpoint (`http://host:port`); proxy environment
    /// variables are ignored. Never logged (it may carry credentials).
    #[serde(default)]
    pub proxy: Option<String>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("secret", &self.secret)
            .field("tiers", &self.tiers)
            .field("rules", &self.rules)
            .field("statuses", &self.statuses)
            .field("max_attempts", &self.max_attempts)
            .field("retry_for", &self.retry_for)
            .finish_non_exhaustive()
    }
}

/// What a webhook endpoint can be sent: alert transitions, and the
/// retention inbox's lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivered {
    /// An alert fired.
    Firing,
    /// An alert resolved.
    Resolved,
    /// Somebody acknowledged an alert.
    Acknowledged,
    /// Somebody snoozed an alert.
    Snoozed,
    /// A snooze ran out on a still firing alert.
    Reopened,
    /// Somebody assigned an alert.
    Assigned,
    /// Somebody closed an alert.
    Closed,
}

impl Delivered {
    /// An alert transition's status.
    pub fn of_alert(s: Status) -> Self {
        match s {
            Status::Firing => Delivered::Firing,
            Status::Resolved => Delivered::Resolved,
        }
    }

    /// A lifecycle event's status, from its JSON spelling.
    pub fn of_lifecycle(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .ok()
            .filter(|d: &Delivered| d.is_lifecycle())
    }

    /// Whether it is an inbox lifecycle event.
    pub fn is_lifecycle(self) -> bool {
        !matches!(self, Delivered::Firing | Delivered::Resolved)
    }
}

impl WebhookConfig {
    /// Whether the endpoint subscribed to this kind of event.
    pub fn wants(&self, tier: Tier, rule: Rule, status: Delivered) -> bool {
        let status_wanted = if self.statuses.is_empty() {
            !status.is_lifecycle()
        } else {
            self.statuses.contains(&status)
        };
        (self.tiers.is_empty() || self.tiers.contains(&tier))
            && (self.rules.is_empty() || self.rules.contains(&rule))
            && status_wanted
    }

    /// Whether the endpoint asked for any lifecycle event (it then reads
    /// the actions topic too).
    pub fn lifecycle_events(&self) -> bool {
        self.statuses.iter().any(|s| s.is_lifecycle())
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err("url must be http:// or https://".into());
        }
        if self.retry_for.is_zero() {
            return Err("retry_for must be positive".into());
        }
        if self.backoff_initial > self.backoff_max {
            return Err("backoff_initial must not exceed backoff_max".into());
        }
        if self.secret.key().len() < 24 {
            return Err(
                "secret must decode to at least 24 bytes (Standard Webhooks minimum)".into(),
            );
        }
        let url = reqwest::Url::parse(&self.url).map_err(|_| "url does not parse".to_string())?;
        if let Some(host) = url.host()
            && !self.allow_private_network
        {
            let literal = match host {
                url::Host::Ipv4(a) => Some(std::net::IpAddr::V4(a)),
                url::Host::Ipv6(a) => Some(std::net::IpAddr::V6(a)),
                url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
                    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
                }
                url::Host::Domain(_) => None,
            };
            if let Some((ip, why)) =
                literal.and_then(|ip| Some((ip, crate::webhook::target::not_public(ip)?)))
            {
                return Err(format!(
                    "url points at {ip}, a {why} address, not a public one; set allow_private_network = true if that is intended"
                ));
            }
        }
        if let Some(p) = &self.proxy
            && reqwest::Proxy::all(p).is_err()
        {
            return Err("proxy is not a proxy URL".into());
        }
        Ok(())
    }
}

/// A Standard Webhooks signing key, decoded from `whsec_<base64>` when the
/// config is parsed (so a bad secret fails at start, naming the entry, and
/// is never parsed again). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// The key bytes the signer is built from.
    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for WebhookSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(d)?;
        let b64 = text.strip_prefix("whsec_").unwrap_or(&text);
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .filter(|k| !k.is_empty())
            .map(WebhookSecret)
            .ok_or_else(|| serde::de::Error::custom("secret must be whsec_<base64 key>"))
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_for() -> Duration {
    Duration::from_secs(3600)
}
fn default_backoff_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_dead_letter_file() -> PathBuf {
    PathBuf::from("churnwatch-webhook-dead-letters.jsonl")
}

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

pub(crate) const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

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
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            parse_error(text, e.inner(), &key)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The engine's plain settings (call on a validated config).
    pub fn engine_settings(&self) -> Settings {
        let (e, t, r) = (&self.engine, &self.tiers, &self.rules);
        Settings {
            allowed_lateness: e.allowed_lateness,
            max_future_skew: e.max_future_skew,
            max_amount: e.max_amount,
            max_event_bytes: e.max_event_bytes,
            max_open_tickets: e.max_open_tickets,
            forget_after: e.forget_after,
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
            rules: RuleSettings {
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
            },
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
        }
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
        let pr = &self.rules.purchase_recency;
        if !(pr.factor.is_finite() && pr.factor > 0.0) {
            return invalid("rules.purchase_recency.factor", "must be a positive number");
        }
        if pr.min_purchase_days < 2 {
            return invalid(
                "rules.purchase_recency.min_purchase_days",
                "must be at least 2 (a gap needs two purchase days)",
            );
        }
        let (lo, hi) = (pr.min.by_tier(), pr.max.by_tier());
        if lo
            .iter()
            .zip(hi)
            .any(|(l, h)| l.zip(h).is_some_and(|(l, h)| l > h))
        {
            return invalid(
                "rules.purchase_recency.min",
                "must not exceed max in any tier",
            );
        }
        let rr = &self.rules.risk;
        if [rr.a, rr.b, rr.c, Some(rr.hysteresis)]
            .iter()
            .flatten()
            .any(|&t| t > 100)
        {
            return invalid(
                "rules.risk",
                "thresholds and hysteresis are scores, 0 to 100",
            );
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

fn parse_error(text: &str, e: &toml::de::Error, key: &str) -> ConfigError {
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
        let text = "[[webhooks]]\nname = \"team\"\nurl = \"ftp://x\"\nsecret = \"whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(err.contains("webhooks[0]") && err.contains("url"), "{err}");
        let ok = Config::parse(&text.replace("ftp://x", "https://x")).unwrap();
        assert!(
            !format!("{ok:?}").contains("MDEyMzQ1"),
            "Debug redacts the secret"
        );
    }

    #[test]
    fn a_bad_secret_is_named_by_key_and_position_and_never_echoed() {
        let text =
            "[[webhooks]]\nname = \"team\"\nurl = \"https://x\"\nsecret = \"not-base64 s3cr3t!\"\n";
        let err = Config::parse(text).unwrap_err().to_string();
        assert!(
            err.contains("webhooks[0].secret") && err.contains("<text>:4:"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn parse_errors_never_echo_a_value() {
        for text in [
            "[kafka]\nbrokers = \"sasl-secret-1\"\ngroup_id = 3\n[kafka.consumer]\n\"sasl.password\" = 5\n",
            "[engine]\nclock = \"sasl-secret-2\"\n",
            "[http]\nliveness_timeout = \"sasl-secret-3\"\n",
            "[kafka.consumer]\n\"sasl.password\" = \"sasl-secret-4\n",
            "[[webhooks]]\nname = \"t\"\nurl = \"https://x\"\nsecret = 42\nproxy = \"sasl-secret-5\"\n",
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(!err.contains("sasl-secret"), "{err}");
            assert!(err.contains("<text>:"), "names the position: {err}");
        }
    }

    #[test]
    fn debug_of_a_config_shows_no_secret() {
        let text = "[kafka.consumer]\n\"sasl.password\" = \"pw-value-1\"\n\
             [[http.tokens]]\nname = \"ops\"\nrole = \"viewer\"\ntoken_sha256 = \"aa00000000000000000000000000000000000000000000000000000000000000\"\n\
             [[webhooks]]\nname = \"t\"\nurl = \"https://user:pw-value-2@example.com/x\"\n\
             secret = \"whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\nproxy = \"http://u:pw-value-3@proxy:3128\"\n";
        let c = Config::parse(text).expect("parses");
        let shown = format!("{c:?}");
        for secret in ["pw-value", "aa0000", "MDEyMzQ1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("sasl.password"), "keys stay visible");
    }

    #[test]
    fn a_short_webhook_secret_or_an_inward_target_is_refused_naming_the_entry() {
        let entry = |url: &str, secret: &str| {
            format!("[[webhooks]]\nname = \"team\"\nurl = \"{url}\"\nsecret = \"{secret}\"\n")
        };
        let long = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let err = Config::parse(&entry("https://x.example", "whsec_c2hvcnQ="))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("webhooks[0]") && err.contains("24 bytes"),
            "{err}"
        );
        for url in [
            "http://169.254.169.254/latest",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://10.0.0.5/",
            "http://localhost/",
            "http://2130706433/",
        ] {
            let err = Config::parse(&entry(url, long)).unwrap_err().to_string();
            assert!(
                err.contains("webhooks[0]") && err.contains("allow_private_network"),
                "{url}: {err}"
            );
            let allowed = entry(url, long) + "allow_private_network = true\n";
            assert!(Config::parse(&allowed).is_ok(), "{url} allowed when asked");
        }
        assert!(Config::parse(&entry("https://retention.example.com/churn", long)).is_ok());
    }

    #[test]
    fn a_public_data_listener_needs_tokens_and_tokens_need_exactly_one_source() {
        let err = Config::parse("[http]\nbind = \"0.0.0.0:9898\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.tokens"), "{err}");
        let token = |extra: &str| {
            format!(
                "[http]\nbind = \"0.0.0.0:9898\"\n[[http.tokens]]\nname = \"a\"\nrole = \"operator\"\n{extra}"
            )
        };
        assert!(Config::parse(&token("token_file = \"/run/secrets/t\"\n")).is_ok());
        for bad in [
            "",
            "token_file = \"/t\"\ntoken_sha256 = \"00\"\n",
            "token_sha256 = \"not-hex\"\n",
        ] {
            let err = Config::parse(&token(bad)).unwrap_err().to_string();
            assert!(err.contains("http.tokens[0]"), "{bad}: {err}");
        }
    }

    #[test]
    fn pass_through_may_not_override_what_the_guarantees_rest_on() {
        for (table, key) in [
            ("consumer", "partition.assignment.strategy"),
            ("consumer", "enable.auto.offset.store"),
            ("consumer", "isolation.level"),
            ("producer", "enable.idempotence"),
        ] {
            let text = format!("[kafka.{table}]\n\"{key}\" = \"x\"\n");
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(err.contains(&format!("kafka.{table}.\"{key}\"")), "{err}");
        }
        let ok = "[kafka.consumer]\n\"security.protocol\" = \"SASL_SSL\"\n";
        assert!(Config::parse(ok).is_ok(), "other properties pass through");
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
