//! `/api/v1`: the retention inbox's JSON API, the one the page uses and
//! scripts may too. Reads need any token; actions (POST) need `operator`
//! (the role gate in `auth`) and record the token's name as who did them.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;

use super::ApiState;
use super::auth::Caller;
use crate::engine::event::Ts;
use crate::inbox::actions::{ActError, Actions};
use crate::inbox::lifecycle::MAX_SNOOZE;
use crate::inbox::{Action, CloseReason, Filter, Inbox};

/// What the inbox routes need: the view and the writer.
#[derive(Clone)]
pub struct InboxState {
    /// The materialised alerts and lifecycles.
    pub inbox: Arc<Inbox>,
    /// Writes actions to the actions topic.
    pub actions: Arc<Actions>,
    /// The other instances of the group, to find a customer's owner.
    pub instances: Arc<crate::inbox::instances::Instances>,
    /// Asks them, with this instance's own credential.
    pub peers: Arc<super::peers::Peers>,
    /// This instance's id.
    pub me: String,
}

fn now() -> Ts {
    Ts(chrono::Utc::now().timestamp_millis())
}

/// A refusal: its status and a JSON `error`.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({"error": self.1}))).into_response()
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
    ApiError(status, message.to_string())
}

type Answer = Result<Response, ApiError>;

fn inbox_of(s: &ApiState) -> Result<&InboxState, ApiError> {
    s.inbox.as_ref().ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "no inbox here (replay and tests without Kafka have none)",
        )
    })
}

/// `GET /api/v1/alerts`: firing alerts with their lifecycle; `assigned_to=me`
/// means the caller.
pub async fn list(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(mut f): Query<Filter>,
) -> Answer {
    let i = inbox_of(&s)?;
    if f.assigned_to.as_deref() == Some("me") {
        f.assigned_to = Some(caller.name.clone());
    }
    let page = i
        .inbox
        .list(&f, now())
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(page).into_response())
}

/// `GET /api/v1/alerts/{alert_id}`.
pub async fn one(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    let i = inbox_of(&s)?;
    match i.inbox.get(&id, now()) {
        Some(item) => Ok(Json(item).into_response()),
        None => Err(error(StatusCode::NOT_FOUND, "unknown alert")),
    }
}

/// `GET /api/v1/customers/{id}`: the live state where this instance holds
/// the customer (`live`), and the customer's alerts with every action.
pub async fn customer(State(s): State<ApiState>, Path(id): Path<String>) -> Answer {
    let i = inbox_of(&s)?;
    let live = s.store.customer(&id).map(|c| super::customer_view(&s, &c));
    let alerts = i.inbox.customer(&id, now());
    if live.is_none() && alerts.is_empty() {
        return Err(error(StatusCode::NOT_FOUND, "unknown customer"));
    }
    Ok(Json(serde_json::json!({
        "customer_id": id,
        "live": live,
        "held_here": live.is_some(),
        "alerts": alerts,
    }))
    .into_response())
}

/// A snooze: until a time, or for a duration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnoozeBody {
    until: Option<Ts>,
    #[serde(default, rename = "for", with = "humantime_serde")]
    for_: Option<std::time::Duration>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    reason: CloseReason,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesBody {
    text: String,
}

/// The body as a `T`, and the `version` (the lifecycle `revision` the
/// action is meant for) it may carry beside `T`'s fields.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(T, Option<u64>), ApiError> {
    let bad = |e: &dyn std::fmt::Display| error(StatusCode::BAD_REQUEST, e);
    let mut fields = match body.iter().all(u8::is_ascii_whitespace) {
        true => serde_json::Map::new(),
        false => serde_json::from_slice(body).map_err(|e| bad(&e))?,
    };
    let version = match fields.remove("version") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| bad(&"`version` must be a whole number"))?,
        ),
    };
    let t = serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| bad(&e))?;
    Ok((t, version))
}

/// When a snooze asked for `until` a time or `for` a duration ends, or
/// why it is refused (naming the field): exactly one of the two, ending at
/// most [`MAX_SNOOZE`] after `now`.
pub(crate) fn snooze_until(
    until: Option<Ts>,
    for_: Option<std::time::Duration>,
    now: Ts,
) -> Result<Ts, String> {
    let longest = MAX_SNOOZE.as_millis() as i64;
    match (until, for_) {
        (Some(t), None) if t.0.saturating_sub(now.0) > longest => {
            Err("`until` must be at most 365d from now".into())
        }
        (Some(t), None) => Ok(t),
        (None, Some(d)) if d > MAX_SNOOZE => Err("`for` must be at most 365d".into()),
        (None, Some(d)) => Ok(Ts(now.0.saturating_add(d.as_millis() as i64))),
        _ => Err("give exactly one of `until` and `for`".into()),
    }
}

/// The action a `POST /api/v1/alerts/{id}/{verb}` asks for, and the
/// version it is meant for.
fn action(verb: &str, body: &[u8]) -> Result<(Action, Option<u64>), ApiError> {
    Ok(match verb {
        "ack" => {
            let (b, v) = parse::<NoteBody>(body)?;
            (Action::Ack { note: b.note }, v)
        }
        "snooze" => {
            let (b, v) = parse::<SnoozeBody>(body)?;
            let until = snooze_until(b.until, b.for_, now())
                .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
            (
                Action::Snooze {
                    until,
                    reason: b.reason,
                },
                v,
            )
        }
        "assign" => {
            let (b, v) = parse::<AssignBody>(body)?;
            (Action::Assign { to: b.to }, v)
        }
        "close" => {
            let (b, v) = parse::<CloseBody>(body)?;
            (
                Action::Close {
                    reason: b.reason,
                    note: b.note,
                },
                v,
            )
        }
        "notes" => {
            let (b, v) = parse::<NotesBody>(body)?;
            (Action::Note { text: b.text }, v)
        }
        _ => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "no such action (ack, snooze, assign, close, notes)",
            ));
        }
    })
}

/// `POST /api/v1/alerts/{alert_id}/{ack|snooze|assign|close|notes}`.
pub async fn act(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, verb)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Answer {
    let i = inbox_of(&s)?;
    let (action, version) = action(&verb, &body)?;
    let record = perform(&s, i, &id, (action, version), &caller).await?;
    Ok(Json(record).into_response())
}

/// Takes `action` on alert `id` at `version` for `caller`, the one path of
/// the API and the pages: stored, logged with who, a close counted;
/// refusals mapped to their status (404 unknown, 409 refused or stale, 503
/// catching up or not stored).
pub(crate) async fn perform(
    s: &ApiState,
    i: &InboxState,
    id: &str,
    (action, version): (Action, Option<u64>),
    caller: &Caller,
) -> Result<crate::inbox::Lifecycle, ApiError> {
    let name = action.name();
    match i.actions.act(id, action, &caller.name, version).await {
        Ok(record) => {
            tracing::info!(alert_id = %id, action = name, by = %caller.name, "inbox action");
            count_close(s, i, id, &record);
            Ok(record)
        }
        Err(ActError::UnknownAlert) => Err(error(StatusCode::NOT_FOUND, "unknown alert")),
        Err(e @ (ActError::Refused(_) | ActError::Conflict(_))) => {
            Err(error(StatusCode::CONFLICT, e))
        }
        Err(e @ (ActError::NotStored(_) | ActError::CatchingUp)) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, e))
        }
    }
}

/// Counts a close in `churnwatch_alerts_closed_total` (called once per
/// stored action: a record that just became closed).
fn count_close(s: &ApiState, i: &InboxState, id: &str, record: &crate::inbox::Lifecycle) {
    let just_closed = record
        .history
        .last()
        .is_some_and(|d| matches!(d.action, Action::Close { .. }));
    if let (Some(m), Some(reason), true, Some(item)) = (
        &s.closed,
        record.closed_reason,
        just_closed,
        i.inbox.get(id, now()),
    ) {
        m.with_label_values(&[
            &item.episode.alert.rule,
            &item.episode.alert.tier,
            reason.as_str(),
        ])
        .inc();
    }
}

/// `GET /api/v1/stream`: server-sent events, one per change (`event:` the
/// kind, `data:` `{"kind", "alert_id"}`); a reader too slow for the channel
/// gets a `lagged` event and should reload.
pub async fn stream(State(s): State<ApiState>) -> Answer {
    let i = inbox_of(&s)?;
    let changes = BroadcastStream::new(i.inbox.subscribe()).map(|c| {
        Ok::<Event, Infallible>(match c {
            Ok(c) => Event::default()
                .event(c.kind)
                .json_data(&c)
                .unwrap_or_else(|_| Event::default().event("lagged")),
            Err(_) => Event::default().event("lagged").data("{}"),
        })
    });
    Ok(Sse::new(changes)
        .keep_alive(KeepAlive::default())
        .into_response())
}
