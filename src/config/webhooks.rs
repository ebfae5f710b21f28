//! `[[webhooks]]`: signed callbacks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::alert::Status;
use crate::engine::rule::Rule;
use crate::engine::tier::Tier;

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
    /// Never logged. Give this or `secret_file`.
    #[serde(default)]
    pub secret: Option<WebhookSecret>,
    /// A file holding the secret (a mounted Kubernetes Secret, a systemd
    /// credential), read when the endpoint starts so the config itself can
    /// live in a ConfigMap. Surrounding whitespace is ignored.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Deliver only alerts of these tiers (all when empty).
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Deliver only these rules (all when empty).
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Deliver only alerts of customers in these segments (all when
    /// empty); names from `[segments]`.
    #[serde(default)]
    pub segments: Vec<String>,
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
            .field("secret_file", &self.secret_file)
            .field("tiers", &self.tiers)
            .field("rules", &self.rules)
            .field("segments", &self.segments)
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
    pub fn wants(&self, tier: Tier, rule: Rule, segment: &str, status: Delivered) -> bool {
        let status_wanted = if self.statuses.is_empty() {
            !status.is_lifecycle()
        } else {
            self.statuses.contains(&status)
        };
        (self.tiers.is_empty() || self.tiers.contains(&tier))
            && (self.rules.is_empty() || self.rules.contains(&rule))
            && (self.segments.is_empty() || self.segments.iter().any(|s| s == segment))
            && status_wanted
    }

    /// The signing key: `secret`, or what `secret_file` holds (read now;
    /// the error names the file, never its content).
    pub fn signing_key(&self) -> Result<WebhookSecret, String> {
        let Some(path) = &self.secret_file else {
            return self
                .secret
                .clone()
                .ok_or_else(|| "give exactly one of secret and secret_file".to_string());
        };
        let shown = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("secret_file {shown}: {e}"))?;
        let key = WebhookSecret::decode(text.trim())
            .ok_or_else(|| format!("secret_file {shown}: must hold whsec_<base64 key>"))?;
        key.long_enough()
            .map_err(|why| format!("secret_file {shown}: {why}"))?;
        Ok(key)
    }

    /// Whether the endpoint asked for any lifecycle event (it then reads
    /// the actions topic too).
    pub fn lifecycle_events(&self) -> bool {
        self.statuses.iter().any(|s| s.is_lifecycle())
    }

    pub(super) fn validate(&self) -> Result<(), String> {
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
        match (&self.secret, &self.secret_file) {
            (Some(secret), None) => secret.long_enough()?,
            (None, Some(_)) => {}
            _ => return Err("give exactly one of secret and secret_file".into()),
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

    /// `whsec_<base64>` (or bare base64) decoded; `None` if it is not.
    fn decode(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .filter(|k| !k.is_empty())
            .map(WebhookSecret)
    }

    /// The Standard Webhooks minimum key length.
    fn long_enough(&self) -> Result<(), String> {
        match self.0.len() >= 24 {
            true => Ok(()),
            false => {
                Err("secret must decode to at least 24 bytes (Standard Webhooks minimum)".into())
            }
        }
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for WebhookSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        WebhookSecret::decode(&text)
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
