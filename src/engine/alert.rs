//! Alerts: firing / resolved transitions of a check, their deterministic id
//! and their JSON form (one object per line in replay, the Kafka value).
//!
//! The engine fills plain fields; the human `reason` sentence is written
//! only when an alert is serialised, off the hot path.

use std::fmt;

use serde::Serialize;
use serde::ser::SerializeMap;

use super::event::DAY_MS;
use compact_str::CompactString;

use super::event::{CustomerKey, RepKey, Ts};
use super::rule::{Check, RecencyLimit, Rule};
use super::tier::Tier;

/// Stable across reruns: a hash of customer, rule, cause and the firing's
/// `at`, shared by an episode's firing and resolved alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AlertId(pub u128);

impl AlertId {
    /// The id of the episode of `check` for `customer` that fired at `fired_at`.
    pub fn new(customer: &str, check: Check, fired_at: Ts) -> Self {
        let mut buf = Vec::with_capacity(customer.len() + 48);
        buf.extend_from_slice(customer.as_bytes());
        buf.push(0);
        buf.extend_from_slice(check.rule().as_str().as_bytes());
        buf.push(0);
        buf.extend_from_slice(check.cause().map_or("", |c| c.as_str()).as_bytes());
        buf.push(0);
        buf.extend_from_slice(&fired_at.0.to_le_bytes());
        AlertId(xxhash_rust::xxh3::xxh3_128(&buf))
    }
}

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// An episode's transition. Config names statuses as [`Status::as_str`]
/// spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The condition started to hold.
    Firing,
    /// The condition stopped holding.
    Resolved,
}

impl Status {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// What made the condition change; picks the wording of `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A deadline passed (absence rules).
    Deadline,
    /// An input event about this customer.
    Event,
    /// A roster event about the customer's rep.
    Roster,
    /// The customer's tier changed.
    TierChange,
    /// The rule limits were reloaded (`run`, SIGHUP).
    LimitChange,
    /// Old events left a rolling window.
    WindowSlide,
}

/// How urgent a human should treat the alert: by the customer's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Tier C.
    Low,
    /// Tier B.
    Medium,
    /// Tier A.
    High,
}

impl Severity {
    /// The severity of an alert about a customer of `tier`.
    pub fn of(tier: Tier) -> Self {
        match tier {
            Tier::A => Severity::High,
            Tier::B => Severity::Medium,
            Tier::C => Severity::Low,
        }
    }

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

/// The customer's numbers at the alert's `at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signals {
    /// The churn-risk score, 0–100 (see [`super::risk`]).
    pub risk: u8,
    /// Days since the last purchase (none if never).
    pub recency_days: Option<f64>,
    /// Purchases in `windows.frequency` (90 days by default; the name stays whatever the window).
    pub frequency_90d: u32,
    /// Spend in `tiers.window`.
    pub monetary: f64,
    /// Days since the last rep contact (none if never).
    pub days_since_contact: Option<f64>,
    /// The account rep's id.
    pub account_rep: Option<RepKey>,
    /// Rep changes in `windows.handoffs` (180 days by default; the name stays whatever the window).
    pub rep_handoffs_180d: u32,
    /// Open tickets.
    pub open_tickets: u32,
    /// Open complaints.
    pub open_complaints: u32,
    /// Days since the customer was first seen.
    pub days_since_first_seen: f64,
}

/// The limit the check was measured against, for the reason sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Absence limit of the tier, in days; `None` if the tier has the rule off.
    Days(Option<f64>),
    /// Handoff threshold and window length in days.
    Handoffs {
        /// Handoffs that fire.
        threshold: u32,
        /// The handoff window in days.
        window_days: f64,
    },
    /// The `purchase_recency` limit that applied, fixed or adaptive.
    Recency(RecencyLimit),
    /// The tier's `risk` threshold.
    Risk(Option<u8>),
    /// No numeric limit (departures).
    None,
}

/// One firing or resolved transition of a check, as published.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Stable id of the episode.
    pub alert_id: AlertId,
    /// Firing or resolved.
    pub status: Status,
    /// Which condition (rule and cause).
    pub check: Check,
    /// The customer.
    pub customer_id: CustomerKey,
    /// The customer's tier at `at`.
    pub tier: Tier,
    /// The customer's segment.
    pub segment: CompactString,
    /// A key account: pinned to tier A of its segment whatever its spend.
    pub key_account: bool,
    /// When the transition happened (engine time).
    pub at: Ts,
    /// What made the condition change.
    pub trigger: Trigger,
    /// The limit measured against.
    pub limit: Limit,
    /// The customer's numbers at `at`.
    pub signals: Signals,
    /// The customer's engine partition (not published): `run` holds back
    /// the alerts of a partition it is rebuilding.
    pub partition: u16,
}

impl Alert {
    /// The rule of the alert's check.
    pub fn rule(&self) -> Rule {
        self.check.rule()
    }

    /// How urgent: by tier.
    pub fn severity(&self) -> Severity {
        Severity::of(self.tier)
    }

    /// One human sentence with the numbers.
    pub fn reason(&self) -> String {
        let s = &self.signals;
        let tier = if self.key_account {
            "A (key account)"
        } else {
            self.tier.as_str()
        };
        let limit = match self.limit {
            Limit::Days(Some(d)) => format!("tier {tier} limit {}", days(d)),
            Limit::Days(None) => format!("tier {tier} has no limit"),
            Limit::Handoffs {
                threshold,
                window_days,
            } => {
                format!("limit {threshold} in {} days", days(window_days))
            }
            Limit::Recency(RecencyLimit::Fixed(ms)) => {
                format!("tier {tier} limit {}", days(ms as f64 / DAY_MS as f64))
            }
            Limit::Recency(RecencyLimit::Adaptive {
                limit_ms,
                gap_ms,
                factor,
            }) => format!(
                "tier {tier} adaptive limit {} days: {factor}x this customer's usual gap of {} days",
                days(limit_ms as f64 / DAY_MS as f64),
                days(gap_ms as f64 / DAY_MS as f64)
            ),
            Limit::Recency(RecencyLimit::Fallback {
                limit_ms,
                purchase_days,
                needed,
            }) => format!(
                "tier {tier} fixed limit {}: {purchase_days} purchase days, the adaptive limit needs {needed}",
                days(limit_ms as f64 / DAY_MS as f64)
            ),
            Limit::Risk(Some(t)) => format!("tier {tier} threshold {t}"),
            Limit::Risk(None) => format!("tier {tier} has no threshold"),
            Limit::None => format!("tier {tier}"),
        };
        let rep = s.account_rep.as_deref().unwrap_or("none");
        match (self.check, self.status, self.trigger) {
            (_, Status::Resolved, Trigger::TierChange) => {
                format!(
                    "customer moved to tier {tier}, where the condition no longer holds ({limit})"
                )
            }
            (_, Status::Resolved, Trigger::LimitChange) => {
                format!("the limits were changed; the condition no longer holds ({limit})")
            }
            (Check::PurchaseRecency, Status::Firing, _) => match s.recency_days {
                Some(d) => format!("no purchase for {} days ({limit})", days(d)),
                None => format!(
                    "no purchase in {} days since first seen ({limit})",
                    days(s.days_since_first_seen)
                ),
            },
            (Check::PurchaseRecency, Status::Resolved, _) => {
                format!("customer purchased again ({limit})")
            }
            (Check::ContactGap, Status::Firing, _) => match s.days_since_contact {
                Some(d) => format!("no rep contact for {} days ({limit})", days(d)),
                None => format!(
                    "no rep contact in {} days since first seen ({limit})",
                    days(s.days_since_first_seen)
                ),
            },
            (Check::ContactGap, Status::Resolved, _) => {
                format!("rep {rep} contacted the customer ({limit})")
            }
            (Check::Departed, Status::Firing, _) => {
                format!("account rep {rep} departed; the customer has no active rep ({limit})")
            }
            (Check::Departed, Status::Resolved, Trigger::Roster) => {
                format!("account rep {rep} is active again")
            }
            (Check::Departed, Status::Resolved, _) => {
                format!("active rep {rep} now serves the customer")
            }
            (Check::Handoffs, Status::Firing, _) => {
                format!(
                    "{} rep changes in the handoff window ({limit})",
                    s.rep_handoffs_180d
                )
            }
            (Check::Risk, Status::Firing, _) => {
                format!("churn risk {} ({limit})", s.risk)
            }
            (Check::Risk, Status::Resolved, _) => {
                format!("churn risk fell to {} ({limit})", s.risk)
            }
            (Check::Handoffs, Status::Resolved, _) => format!(
                "rep changes in the handoff window fell to {} ({limit})",
                s.rep_handoffs_180d
            ),
        }
    }
}

/// Whole days print without decimals, others with one.
pub(crate) fn days(d: f64) -> String {
    let r = (d * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

impl Serialize for Alert {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(12))?;
        m.serialize_entry("alert_id", &self.alert_id.to_string())?;
        m.serialize_entry("status", self.status.as_str())?;
        m.serialize_entry("rule", self.rule().as_str())?;
        m.serialize_entry("cause", &self.check.cause().map(|c| c.as_str()))?;
        m.serialize_entry("customer_id", self.customer_id.as_str())?;
        m.serialize_entry("tier", self.tier.as_str())?;
        m.serialize_entry("segment", self.segment.as_str())?;
        m.serialize_entry("key_account", &self.key_account)?;
        m.serialize_entry("at", &self.at)?;
        m.serialize_entry("reason", &self.reason())?;
        m.serialize_entry("signals", &self.signals)?;
        m.serialize_entry("severity", self.severity().as_str())?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinguish_episodes() {
        let a = AlertId::new("c1", Check::ContactGap, Ts(1000));
        assert_eq!(a, AlertId::new("c1", Check::ContactGap, Ts(1000)));
        assert_ne!(a, AlertId::new("c1", Check::ContactGap, Ts(1001)));
        assert_ne!(a, AlertId::new("c1", Check::PurchaseRecency, Ts(1000)));
        assert_ne!(
            AlertId::new("c1", Check::Departed, Ts(1000)),
            AlertId::new("c1", Check::Handoffs, Ts(1000))
        );
        assert_eq!(a.to_string().len(), 32);
    }

    #[test]
    fn days_print_compactly() {
        assert_eq!(days(30.0), "30");
        assert_eq!(days(30.04), "30");
        assert_eq!(days(31.26), "31.3");
    }
}
