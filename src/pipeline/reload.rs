//! Reloading the config file while running: on SIGHUP, and when the
//! file's modification time changes (checked every [`WATCH_EVERY`]).
//!
//! What can change live: `[rules.*]`, `[risk]`, each segment's `rules`
//! and the key accounts list (the engine takes them at its next tick and
//! re-evaluates every customer, open alerts included; the list's file is
//! watched like the config file), `[[webhooks]]` (endpoints added, removed or changed) and
//! `http.tokens` (names and roles; token files are read again at every
//! reload, so a rotated token file needs only SIGHUP). A reload is all or
//! nothing: the file must parse and validate, change nothing else, and
//! every new token file and webhook secret must be readable, or the
//! running config is kept and the refusal logged with its reason. Each
//! attempt counts in `churnwatch_config_reloads_total{outcome}`
//! (`applied`, `unchanged`, `refused`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::engine::risk::RiskSettings;
use crate::engine::segment::Segmentation;
use crate::http::auth::{Access, Tokens};
use crate::metrics::Metrics;
use crate::reload_trigger::Trigger;
use crate::webhook::Webhooks;

/// How often the config file is checked for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// New rule limits for the engine task.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `[rules.*]` as each segment has them, and the key accounts.
    pub segments: Segmentation,
    /// `[risk]`.
    pub risk: RiskSettings,
}

impl Limits {
    fn of(config: &Config) -> Self {
        let s = config.engine_settings();
        Self {
            segments: s.segments,
            risk: s.risk,
        }
    }
}

/// What of `[segments]` may change live: each segment's `rules` and the
/// key accounts (list and file); names, the default and rankings may not.
fn same_segments(o: &Config, n: &Config) -> bool {
    let shape = |c: &Config| {
        let s = &c.segments;
        (
            s.default.clone(),
            s.declared
                .iter()
                .map(|(name, seg)| (name.clone(), seg.tiers))
                .collect::<Vec<_>>(),
        )
    };
    shape(o) == shape(n)
}

/// The settings of `new` that differ from `running` and cannot change
/// without a restart, named as in the file.
pub fn unchangeable(running: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (running, new);
    let (ok, nk) = (&o.kafka, &n.kafka);
    let mut http = n.http.clone();
    http.tokens = o.http.tokens.clone();
    [
        ("engine", o.engine == n.engine),
        ("tiers", o.tiers == n.tiers),
        ("windows", o.windows == n.windows),
        ("money", o.money == n.money),
        ("segments (names, default, tiers)", same_segments(o, n)),
        ("kafka.group_id", ok.group_id == nk.group_id),
        ("kafka.input_topics", ok.input_topics == nk.input_topics),
        ("kafka.roster_topic", ok.roster_topic == nk.roster_topic),
        ("kafka.alert_topic", ok.alert_topic == nk.alert_topic),
        (
            "kafka.changelog_topic",
            ok.changelog_topic == nk.changelog_topic,
        ),
        ("kafka (brokers, other topics, client settings)", {
            let mut k = nk.clone();
            k.group_id.clone_from(&ok.group_id);
            k.input_topics.clone_from(&ok.input_topics);
            k.roster_topic.clone_from(&ok.roster_topic);
            k.alert_topic.clone_from(&ok.alert_topic);
            k.changelog_topic.clone_from(&ok.changelog_topic);
            &k == ok
        }),
        ("http (other than tokens)", http == o.http),
        ("state", o.state == n.state),
        ("inbox", o.inbox == n.inbox),
        ("inputs", o.inputs == n.inputs),
        ("log", o.log == n.log),
    ]
    .into_iter()
    .filter_map(|(name, same)| (!same).then_some(name))
    .collect()
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The file does not load (read, parse or validation error).
    #[error(transparent)]
    Invalid(#[from] crate::config::ConfigError),
    /// It changes settings that need a restart.
    #[error("{} cannot change while running (restart to apply)", .0.join(", "))]
    Unchangeable(Vec<&'static str>),
    /// A token file cannot be used, or no token would be left on an open listener.
    #[error(transparent)]
    Tokens(#[from] crate::http::auth::AuthError),
    /// A new or changed webhook endpoint cannot be built.
    #[error(transparent)]
    Webhook(#[from] crate::webhook::WebhookError),
}

/// The reloader task's state.
pub struct Reloader {
    /// The config file.
    pub path: PathBuf,
    /// What runs now.
    pub running: Config,
    /// The data API's access policy (tokens).
    pub access: Arc<Access>,
    /// The webhook endpoints.
    pub webhooks: Webhooks,
    /// To the engine task, which applies them at its next tick.
    pub limits: mpsc::Sender<Limits>,
    /// `churnwatch_config_reloads_total`.
    pub metrics: Metrics,
}

impl Reloader {
    /// Reloads on SIGHUP and on a change of the config file or of the key
    /// accounts list it names at start, until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut watched = vec![self.path.clone()];
        watched.extend(
            self.running
                .segments
                .key_accounts
                .iter()
                .map(|k| k.file.clone()),
        );
        let mut trigger = Trigger::new(watched, WATCH_EVERY);
        loop {
            let why = tokio::select! {
                () = stop.cancelled() => return,
                why = trigger.next() => why,
            };
            let outcome = match self.reload().await {
                Ok(true) => {
                    tracing::info!(why, config = %self.path.display(), "config reloaded");
                    "applied"
                }
                Ok(false) => {
                    tracing::info!(why, config = %self.path.display(), "config reloaded: nothing changed (token files read again)");
                    "unchanged"
                }
                Err(e) => {
                    tracing::warn!(why, config = %self.path.display(), error = %e, "config reload refused; the running config is kept");
                    "refused"
                }
            };
            self.metrics.config_reload(outcome);
        }
    }

    /// One attempt: everything is checked and built before anything is
    /// swapped. True when the config changed.
    async fn reload(&mut self) -> Result<bool, Refusal> {
        let new = Config::load(&self.path)?;
        let fixed = unchangeable(&self.running, &new);
        if !fixed.is_empty() {
            return Err(Refusal::Unchangeable(fixed));
        }
        let tokens = Tokens::load(&new.http.tokens)?;
        let prepared = self.webhooks.prepare(&new.webhooks)?;
        self.access.replace_tokens(tokens)?;
        let changes = self.webhooks.apply(prepared).await?;
        if changes != Default::default() {
            tracing::info!(added = ?changes.added, removed = ?changes.removed, changed = ?changes.changed, "webhook endpoints reloaded");
        }
        let relimit = new.rules != self.running.rules
            || new.risk != self.running.risk
            || new.segments != self.running.segments;
        if relimit && self.limits.send(Limits::of(&new)).await.is_err() {
            tracing::debug!("the engine task has stopped; limits not passed on");
        }
        let changed = new != self.running;
        self.running = new;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rules_risk_webhooks_and_tokens_change_live() {
        let running = Config::default();
        let live = Config::parse(
            "[rules.purchase_recency]\nA = \"10d\"\n[risk]\nhorizon = \"30d\"\n\
             [[http.tokens]]\nname = \"a\"\nrole = \"viewer\"\ntoken_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
        )
        .unwrap();
        assert_eq!(unchangeable(&running, &live), Vec::<&str>::new());
        let fixed = Config::parse(
            "[kafka]\ngroup_id = \"other\"\n[tiers]\na_percent = 10.0\n[state]\ndir = \"elsewhere\"\n",
        )
        .unwrap();
        assert_eq!(
            unchangeable(&running, &fixed),
            vec!["tiers", "kafka.group_id", "state"]
        );
    }
}
