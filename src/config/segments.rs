//! `[segments]`: kinds of customer, each ranked and alerted by its own
//! rhythm, and the key accounts pinned to tier A.
//!
//! ```toml
//! [segments]
//! default = "retail"
//! key_accounts = { file = "key-accounts.txt" }
//! [segments.wholesale]
//! tiers = "own"
//! [segments.wholesale.rules.purchase_recency]
//! A = "60d"
//! ```
//! A segment's `rules` table is laid over the global `[rules]` as written
//! (a key it names replaces that key, nothing else), then read like
//! `[rules]` itself, so "overrides only what it names" holds at every
//! depth and a segment cannot switch a default off by leaving it out.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::RulesConfig;
use super::validation::ConfigError;
use crate::engine::customer::MAX_SEGMENTS;
use crate::engine::event::{CustomerKey, MAX_ID_CHARS};
use crate::engine::segment::Ranking;

/// The default segment's name when `[segments]` names none.
pub const DEFAULT_SEGMENT: &str = "default";

/// `[segments]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "SegmentsTable")]
pub struct SegmentsConfig {
    /// The segment of customers whose events name none (or an undeclared
    /// one). Declared implicitly (global rules, own ranking) when no table
    /// has its name.
    pub default: String,
    /// Where the key accounts are listed, if anywhere.
    pub key_accounts: Option<KeyAccountsConfig>,
    /// The declared segments by name (`[segments.<name>]`).
    pub declared: BTreeMap<String, SegmentConfig>,
    /// The ids `key_accounts.file` lists, read by [`super::Config::load`].
    pub key_account_ids: Vec<CustomerKey>,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsTable::default().into()
    }
}

/// `key_accounts = { file = "…" }`: one customer id per line; blank lines
/// and lines starting with `#` are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAccountsConfig {
    /// The list's path.
    pub file: PathBuf,
}

/// `[segments.<name>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    /// `"own"` (default): ranked A/B/C within the segment; `"global"`: in
    /// one ranking with every other `global` segment.
    #[serde(default)]
    pub tiers: Ranking,
    /// Overrides of `[rules]`, as written.
    #[serde(default)]
    pub rules: toml::Table,
    /// The global rules with these overrides, set by
    /// [`super::Config::parse`].
    #[serde(skip)]
    pub rules_in_force: RulesConfig,
}

/// `[segments]` as written: the named keys, every other key a segment.
#[derive(Default, Deserialize)]
struct SegmentsTable {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    key_accounts: Option<KeyAccountsConfig>,
    #[serde(flatten)]
    declared: BTreeMap<String, SegmentConfig>,
}

impl From<SegmentsTable> for SegmentsConfig {
    fn from(t: SegmentsTable) -> Self {
        Self {
            default: t.default.unwrap_or_else(|| DEFAULT_SEGMENT.to_string()),
            key_accounts: t.key_accounts,
            declared: t.declared,
            key_account_ids: Vec::new(),
        }
    }
}

/// `overlay` laid over `base`: tables merge key by key, anything else
/// replaces.
fn merged(mut base: toml::Table, overlay: &toml::Table) -> toml::Table {
    for (key, value) in overlay {
        let merged = match (base.remove(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                toml::Value::Table(merged(b, o))
            }
            (_, v) => v.clone(),
        };
        base.insert(key.clone(), merged);
    }
    base
}

impl SegmentsConfig {
    /// Every segment's name, sorted: the default one too, declared or not.
    /// Index order for the engine.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.declared.keys().map(String::as_str).collect();
        if !self.declared.contains_key(&self.default) {
            names.push(&self.default);
            names.sort_unstable();
        }
        names
    }

    /// Resolves each segment's rules over the global `[rules]` table as
    /// written in `raw` (the whole file).
    pub(super) fn resolve_rules(&mut self, raw: &toml::Table) -> Result<(), ConfigError> {
        let global = match raw.get("rules") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => toml::Table::new(),
        };
        for (name, seg) in &mut self.declared {
            let table = merged(global.clone(), &seg.rules);
            seg.rules_in_force = RulesConfig::deserialize(toml::Value::Table(table)).map_err(
                |e: toml::de::Error| ConfigError::Segment {
                    name: name.clone(),
                    why: format!("rules: {}", e.message()),
                },
            )?;
        }
        Ok(())
    }

    /// Reads the key accounts list, if one is configured.
    pub(super) fn load_key_accounts(&mut self) -> Result<(), ConfigError> {
        let Some(k) = &self.key_accounts else {
            self.key_account_ids.clear();
            return Ok(());
        };
        let text = std::fs::read_to_string(&k.file).map_err(|source| ConfigError::Read {
            path: k.file.display().to_string(),
            source,
        })?;
        let mut ids = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let id = line.trim();
            if id.is_empty() || id.starts_with('#') {
                continue;
            }
            if id.chars().count() > MAX_ID_CHARS {
                return Err(ConfigError::Segment {
                    name: "key_accounts".into(),
                    why: format!(
                        "{} line {}: an id is at most {MAX_ID_CHARS} characters",
                        k.file.display(),
                        n + 1
                    ),
                });
            }
            ids.push(CustomerKey::from(id));
        }
        ids.sort_unstable();
        ids.dedup();
        self.key_account_ids = ids;
        Ok(())
    }

    /// Names are label values, and there are at most [`MAX_SEGMENTS`].
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name: &str, why: &str| {
            Err(ConfigError::Segment {
                name: name.to_string(),
                why: why.to_string(),
            })
        };
        for name in self.names() {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return bad(
                    name,
                    "a segment name is 1 to 64 characters of A-Z, a-z, 0-9, `_`, `-`, `.`",
                );
            }
        }
        if self.names().len() > MAX_SEGMENTS {
            return bad("default", &format!("at most {MAX_SEGMENTS} segments"));
        }
        Ok(())
    }
}
