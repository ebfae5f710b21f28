//! An alert's lifecycle in the retention inbox: who acknowledged, snoozed,
//! assigned or closed it, and the notes, as one record per alert.
//!
//! Pure: actions and times in, the new record out. The record is what the
//! actions topic holds (keyed by `alert_id`, compacted). One rule orders
//! records everywhere: the later offset wins, as compaction keeps it, so
//! running and restarted instances agree. An action names the `revision`
//! it acts on and a stale one is refused, so nobody overwrites a change
//! they have not seen.

use serde::{Deserialize, Serialize};

use crate::engine::event::Ts;

/// Longest note, reason or name kept, in bytes of UTF-8 (what counts
/// against the record size); longer ones are refused.
pub const MAX_TEXT: usize = 4096;
/// Actions kept per alert; beyond, further actions are refused.
pub const MAX_HISTORY: usize = 200;
/// Largest record (JSON), in bytes: half of Kafka's default
/// `max.message.bytes` (1 MB), so a record is never refused by the broker.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;
/// Room kept for the actions that move an alert on, so notes can never
/// fill a record so far that it cannot be closed: notes stop this many
/// entries and bytes short of the limits, other actions one entry short
/// of them (a close always has the last).
const NOTES_ROOM: (usize, usize) = (20, 64 * 1024);
/// The longest snooze: a year (a longer one is a close in disguise, and
/// far-future times break other readers).
pub const MAX_SNOOZE: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// Why a customer is no longer a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The customer is buying again.
    WonBack,
    /// The alert was wrong: the field's own measure of alert quality.
    FalseAlarm,
    /// The customer is gone.
    Lost,
    /// Anything else (say why in the note).
    Other,
}

impl CloseReason {
    /// The JSON and metric label spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::WonBack => "won_back",
            CloseReason::FalseAlarm => "false_alarm",
            CloseReason::Lost => "lost",
            CloseReason::Other => "other",
        }
    }
}

/// Where an alert stands for the retention team at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Nobody has acted on it yet (or its snooze ran out).
    Open,
    /// Somebody has seen it.
    Acknowledged,
    /// Hidden from "open" until `snoozed_until`.
    Snoozed,
    /// Done with, for a reason.
    Closed,
    /// The episode ended by itself (the customer bought again, say) and
    /// nobody closed it: nothing left to acknowledge or snooze.
    Resolved,
}

impl State {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acknowledged => "acknowledged",
            State::Snoozed => "snoozed",
            State::Closed => "closed",
            State::Resolved => "resolved",
        }
    }
}

/// One thing a person did to an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Seen, with an optional note.
    Ack {
        /// Optional note.
        #[serde(default)]
        note: Option<String>,
    },
    /// Hidden until `until`.
    Snooze {
        /// When it comes back.
        until: Ts,
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Given to a person.
    Assign {
        /// Who owns it now.
        to: String,
    },
    /// Done with.
    Close {
        /// Why.
        reason: CloseReason,
        /// Optional note.
        #[serde(default)]
        note: Option<String>,
    },
    /// A note, appended.
    Note {
        /// The text.
        text: String,
    },
    /// The snooze ran out while the alert still fires: open again
    /// (written by churnwatch, by the instance holding the customer).
    Reopen,
}

impl Action {
    /// The action's name (`ack`, `snooze`, ...), as in the API's paths.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Ack { .. } => "ack",
            Action::Snooze { .. } => "snooze",
            Action::Assign { .. } => "assign",
            Action::Close { .. } => "close",
            Action::Note { .. } => "note",
            Action::Reopen => "reopen",
        }
    }

    /// The webhook status this action announces (`None`: notes are not
    /// announced).
    pub fn announced(&self) -> Option<&'static str> {
        match self {
            Action::Ack { .. } => Some("acknowledged"),
            Action::Snooze { .. } => Some("snoozed"),
            Action::Assign { .. } => Some("assigned"),
            Action::Close { .. } => Some("closed"),
            Action::Reopen => Some("reopened"),
            Action::Note { .. } => None,
        }
    }

    fn texts(&self) -> impl Iterator<Item = &str> {
        let (a, b) = match self {
            Action::Ack { note } => (note.as_deref(), None),
            Action::Snooze { reason, .. } => (reason.as_deref(), None),
            Action::Assign { to } => (Some(to.as_str()), None),
            Action::Close { note, .. } => (note.as_deref(), None),
            Action::Note { text } => (Some(text.as_str()), None::<&str>),
            Action::Reopen => (None, None),
        };
        a.into_iter().chain(b)
    }
}

/// An action as recorded: what, who, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// What was done.
    #[serde(flatten)]
    pub action: Action,
    /// Who (the token's name).
    pub by: String,
    /// When.
    pub at: Ts,
}

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A closed alert takes notes only.
    #[error("the alert is closed; only notes can be added")]
    Closed,
    /// Acknowledging, snoozing and reopening are for firing episodes.
    #[error(
        "the alert has resolved; it can be assigned, closed or noted, not acknowledged or snoozed"
    )]
    NotFiring,
    /// A snooze must end in the future.
    #[error("a snooze must end after now")]
    SnoozeInThePast,
    /// Too long a note, reason or name, or an empty one.
    #[error("texts must be 1 to {MAX_TEXT} bytes")]
    Text,
    /// The action was meant for another revision than the one stored.
    #[error("the alert changed since you saw it (now at version {0}); reload and try again")]
    Stale(u64),
    /// A reopen whose snooze is no longer the one in force (extended,
    /// ended or reopened already by another instance).
    #[error("no snooze has run out")]
    NoSnoozeOver,
    /// A snooze beyond [`MAX_SNOOZE`].
    #[error("a snooze may last at most 365d")]
    SnoozeTooLong,
    /// The record is as large as it may get for this kind of action.
    #[error(
        "the alert's record is full ({MAX_HISTORY} actions or {MAX_RECORD_BYTES} bytes, notes stop earlier): it can still be closed"
    )]
    RecordFull,
}

/// The lifecycle record of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// The alert (episode) it belongs to.
    pub alert_id: String,
    /// Its customer, rule and tier, so webhook endpoints can filter
    /// lifecycle events as they filter alerts.
    #[serde(default)]
    pub customer_id: String,
    /// The alert's rule.
    #[serde(default)]
    pub rule: String,
    /// The alert's tier when it fired.
    #[serde(default)]
    pub tier: String,
    /// The alert's segment (empty in records from before segments).
    #[serde(default)]
    pub segment: String,
    /// Who acknowledged it, if anyone.
    pub acknowledged_by: Option<String>,
    /// Until when it is snoozed, if it is.
    pub snoozed_until: Option<Ts>,
    /// Who owns it, if assigned.
    pub assigned_to: Option<String>,
    /// Why it was closed, if it was.
    pub closed_reason: Option<CloseReason>,
    /// Every action, oldest first.
    pub history: Vec<Done>,
    /// The last action's time.
    pub updated_at: Ts,
    /// How many actions made this record (0: nobody acted): the version an
    /// action says it acts on.
    #[serde(default)]
    pub revision: u64,
    /// Where the alert's firing record is on the alert topic (absent in
    /// records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firing: Option<Position>,
    /// The episode itself, kept here by the instance holding its customer
    /// so the inbox is rebuilt from this compacted topic alone, whatever
    /// the alert topic's retention left (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<super::Episode>,
    /// The offset of the record this one was made from (none: the first):
    /// a writer that finds another record between the two missed it, and
    /// writes again on top of it, so no acknowledged action is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<i64>,
    /// Written by churnwatch to keep the record (the episode, a repair),
    /// not by an action: announces nothing to webhook endpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet: bool,
}

/// A record's place on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl Lifecycle {
    /// A record nobody has acted on.
    pub fn new(alert_id: &str) -> Self {
        Self {
            alert_id: alert_id.to_string(),
            customer_id: String::new(),
            rule: String::new(),
            tier: String::new(),
            segment: String::new(),
            acknowledged_by: None,
            snoozed_until: None,
            assigned_to: None,
            closed_reason: None,
            history: Vec::new(),
            updated_at: Ts(i64::MIN),
            revision: 0,
            firing: None,
            episode: None,
            base: None,
            quiet: false,
        }
    }

    /// The state at `now` of an episode that is still firing or not: a
    /// snooze that ran out is open again.
    pub fn state_of(lifecycle: Option<&Lifecycle>, firing: bool, now: Ts) -> State {
        match lifecycle {
            Some(l) if l.closed_reason.is_some() => State::Closed,
            _ if !firing => State::Resolved,
            Some(l) => l.state(now),
            None => State::Open,
        }
    }

    /// The state at `now` while the episode fires: a snooze that ran out
    /// is open again.
    pub fn state(&self, now: Ts) -> State {
        if self.closed_reason.is_some() {
            State::Closed
        } else if self.snoozed_until.is_some_and(|u| u > now) {
            State::Snoozed
        } else if self.acknowledged_by.is_some() {
            State::Acknowledged
        } else {
            State::Open
        }
    }

    /// Applies `action` by `by` at `at`; a refused action changes nothing.
    pub fn apply(&mut self, action: Action, by: &str, at: Ts) -> Result<(), Refused> {
        let bad_text = |t: &str| t.trim().is_empty() || t.len() > MAX_TEXT;
        if action.texts().any(bad_text) || bad_text(by) {
            return Err(Refused::Text);
        }
        if self.closed_reason.is_some() && !matches!(action, Action::Note { .. }) {
            return Err(Refused::Closed);
        }
        let (entries, bytes) = match action {
            Action::Note { .. } => (MAX_HISTORY - NOTES_ROOM.0, MAX_RECORD_BYTES - NOTES_ROOM.1),
            Action::Close { .. } => (MAX_HISTORY, MAX_RECORD_BYTES),
            _ => (MAX_HISTORY - 1, MAX_RECORD_BYTES - MAX_TEXT),
        };
        if self.history.len() >= entries {
            return Err(Refused::RecordFull);
        }
        let mut next = self.clone();
        next.change(action, by, at)?;
        if next.bytes() > bytes {
            return Err(Refused::RecordFull);
        }
        *self = next;
        Ok(())
    }

    /// The record's size as stored (JSON).
    pub fn bytes(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |v| v.len())
    }

    fn change(&mut self, action: Action, by: &str, at: Ts) -> Result<(), Refused> {
        match &action {
            Action::Ack { .. } => self.acknowledged_by = Some(by.to_string()),
            Action::Snooze { until, .. } if *until <= at => return Err(Refused::SnoozeInThePast),
            Action::Snooze { until, .. } if until.0 - at.0 > MAX_SNOOZE.as_millis() as i64 => {
                return Err(Refused::SnoozeTooLong);
            }
            // When the snooze runs out the alert needs somebody again: it
            // is open, not acknowledged (the acknowledgement stays in the
            // history).
            Action::Snooze { until, .. } => {
                self.snoozed_until = Some(*until);
                self.acknowledged_by = None;
            }
            Action::Assign { to } => self.assigned_to = Some(to.trim().to_string()),
            Action::Close { reason, .. } => {
                self.closed_reason = Some(*reason);
                self.snoozed_until = None;
            }
            Action::Reopen if self.snoozed_until.is_none_or(|u| u > at) => {
                return Err(Refused::NoSnoozeOver);
            }
            Action::Reopen => self.snoozed_until = None,
            Action::Note { .. } => {}
        }
        self.history.push(Done {
            action,
            by: by.to_string(),
            at,
        });
        self.updated_at = self.updated_at.max(at);
        self.revision += 1;
        self.quiet = false;
        Ok(())
    }

    /// The record as churnwatch writes it to keep its episode: quiet, and
    /// dated no earlier than the episode's latest transition (a record
    /// nobody acted on has no date of its own).
    pub fn keeping(mut self) -> Self {
        self.quiet = true;
        if let Some(e) = &self.episode {
            self.updated_at = self.updated_at.max(e.alert.at);
        }
        self
    }

    /// When a snooze runs out, if one is pending at `now`.
    pub fn wakes_at(&self, now: Ts) -> Option<Ts> {
        self.snoozed_until
            .filter(|u| *u > now && self.closed_reason.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Ts = Ts(1_767_225_600_000);
    const HOUR: i64 = 3_600_000;

    #[test]
    fn actions_move_the_state_and_are_recorded_with_who_and_when() {
        let mut l = Lifecycle::new("a1");
        assert_eq!(l.state(T), State::Open);
        l.apply(
            Action::Ack {
                note: Some("calling".into()),
            },
            "anna",
            T,
        )
        .unwrap();
        assert_eq!(l.state(T), State::Acknowledged);
        let until = Ts(T.0 + HOUR);
        l.apply(
            Action::Snooze {
                until,
                reason: None,
            },
            "anna",
            Ts(T.0 + 1),
        )
        .unwrap();
        assert_eq!(l.state(Ts(T.0 + 2)), State::Snoozed);
        assert_eq!(
            l.state(until),
            State::Open,
            "the snooze ran out: open again"
        );
        assert_eq!(l.wakes_at(T), Some(until));
        l.apply(Action::Assign { to: "ben".into() }, "anna", Ts(T.0 + 3))
            .unwrap();
        l.apply(
            Action::Close {
                reason: CloseReason::WonBack,
                note: None,
            },
            "ben",
            Ts(T.0 + 4),
        )
        .unwrap();
        assert_eq!(l.state(until), State::Closed);
        assert_eq!(l.wakes_at(T), None);
        assert_eq!(
            l.apply(Action::Ack { note: None }, "ben", Ts(T.0 + 5)),
            Err(Refused::Closed)
        );
        l.apply(
            Action::Note {
                text: "ordered again".into(),
            },
            "ben",
            Ts(T.0 + 6),
        )
        .unwrap();
        let who: Vec<(&str, &str)> = l
            .history
            .iter()
            .map(|d| (d.action.name(), d.by.as_str()))
            .collect();
        assert_eq!(
            who,
            [
                ("ack", "anna"),
                ("snooze", "anna"),
                ("assign", "anna"),
                ("close", "ben"),
                ("note", "ben")
            ]
        );
        assert_eq!(l.updated_at, Ts(T.0 + 6));
    }

    #[test]
    fn bad_actions_are_refused_and_change_nothing() {
        let mut l = Lifecycle::new("a1");
        let past = Action::Snooze {
            until: T,
            reason: None,
        };
        assert_eq!(l.apply(past, "anna", T), Err(Refused::SnoozeInThePast));
        assert_eq!(
            l.apply(Action::Note { text: " ".into() }, "anna", T),
            Err(Refused::Text)
        );
        let long = "x".repeat(MAX_TEXT + 1);
        assert_eq!(
            l.apply(Action::Note { text: long }, "anna", T),
            Err(Refused::Text)
        );
        assert_eq!(l, Lifecycle::new("a1"));
    }

    #[test]
    fn each_action_is_a_revision_and_records_survive_json() {
        let mut a = Lifecycle::new("a1");
        a.apply(Action::Ack { note: None }, "anna", T).unwrap();
        let mut b = a.clone();
        b.apply(Action::Assign { to: "ben".into() }, "anna", Ts(T.0 + 1))
            .unwrap();
        assert_eq!((a.revision, b.revision), (1, 2));
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains(r#""action":"assign""#), "{json}");
        assert_eq!(serde_json::from_str::<Lifecycle>(&json).unwrap(), b);
    }
}
