//! The data API's reads: `/customers/{id}` (a customer's live state, its
//! open alerts and what makes up its risk) and `/alerts` (episodes, paged
//! by cursor).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiState;
use crate::engine::alert::{AlertId, Signals};
use crate::engine::customer::Customer;
use crate::engine::event::Ts;
use crate::engine::risk::{self, Reason};
use crate::engine::rule::Check;
use crate::engine::store::EpisodeKey;
use crate::engine::tier::Tier;

/// One open alert episode.
#[derive(Debug, Serialize)]
struct ActiveAlert {
    alert_id: String,
    rule: &'static str,
    cause: Option<&'static str>,
    customer_id: String,
    tier: Tier,
    segment: String,
    fired_at: Ts,
}

impl ActiveAlert {
    fn new(s: &ApiState, c: &Customer, check: Check, fired_at: Ts) -> Self {
        Self {
            alert_id: AlertId::new(&c.id, check, fired_at).to_string(),
            rule: check.rule().as_str(),
            cause: check.cause().map(|c| c.as_str()),
            customer_id: c.id.to_string(),
            tier: c.tier(),
            segment: s.store.segment_name(c.segment()).to_string(),
            fired_at,
        }
    }
}

/// The customer's live state as of the engine's watermark. The numbers
/// are [`Customer::signals`], the same the alerts carry (`frequency_90d`
/// and `rep_handoffs_180d` count the configured windows, whatever their
/// length).
#[derive(Debug, Serialize)]
pub(crate) struct CustomerView {
    customer_id: String,
    tier: Tier,
    segment: String,
    /// Pinned to tier A of its segment whatever its spend.
    key_account: bool,
    as_of: Option<Ts>,
    first_seen: Ts,
    last_purchase: Option<Ts>,
    last_contact: Option<Ts>,
    #[serde(flatten)]
    signals: Signals,
    /// What makes up `risk`, largest first; the points sum to it.
    risk_reasons: Vec<Reason>,
    account_rep_departed: bool,
    active_alerts: Vec<ActiveAlert>,
    next_deadline: Option<Ts>,
}

pub(super) async fn customer(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(c) = s.store.customer(&id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "unknown customer", "customer_id": id})),
        )
            .into_response();
    };
    axum::Json(customer_view(&s, &c)).into_response()
}

/// A customer's live state as `/customers/{id}` shows it.
pub(crate) fn customer_view(s: &ApiState, c: &Customer) -> CustomerView {
    let id = c.id.as_str();
    let now = s.store.watermark();
    let at = now.unwrap_or(c.first_seen.get());
    let rep = c.account_rep.get();
    let active_alerts = Check::ALL
        .into_iter()
        .filter(|k| c.is_firing(k.bit()))
        .filter_map(|k| s.store.episode(id, k).map(|t| ActiveAlert::new(s, c, k, t)))
        .collect();
    let departed = rep.is_some_and(|r| s.store.rep_departed(r));
    let risk = risk::explain(c, at, &s.limits_of(c).risk_context(&s.windows, departed));
    CustomerView {
        customer_id: c.id.to_string(),
        tier: c.tier(),
        segment: s.store.segment_name(c.segment()).to_string(),
        key_account: c.is_key_account(),
        as_of: now,
        first_seen: c.first_seen.get(),
        last_purchase: c.last_purchase.get(),
        last_contact: c.last_contact.get(),
        signals: c.signals(
            at,
            &s.windows,
            rep.and_then(|r| s.store.rep_id(r)),
            risk.score,
        ),
        risk_reasons: risk.reasons,
        account_rep_departed: departed,
        active_alerts,
        next_deadline: c.pending.get(),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct AlertQuery {
    status: Option<String>,
    tier: Option<Tier>,
    rule: Option<String>,
    segment: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `limit` when none is given, and the most one page holds.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

/// One page of `/alerts`.
#[derive(Debug, Serialize)]
struct AlertPage {
    alerts: Vec<ActiveAlert>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next: Option<String>,
}

/// A cursor: where the previous page stopped in the listing order
/// (opaque to clients: `<fired_at ms>.<record>.<check>`).
fn cursor_text(k: &EpisodeKey) -> String {
    let check = Check::ALL.iter().position(|c| *c == k.check).unwrap_or(0);
    format!("{}.{}.{check}", k.fired_at.0.0, k.customer)
}

fn parse_cursor(text: &str) -> Option<EpisodeKey> {
    let mut parts = text.split('.');
    let fired: i64 = parts.next()?.parse().ok()?;
    let customer: u32 = parts.next()?.parse().ok()?;
    let check = *Check::ALL.get(parts.next()?.parse::<usize>().ok()?)?;
    parts.next().is_none().then_some(EpisodeKey {
        fired_at: std::cmp::Reverse(Ts(fired)),
        customer,
        check,
    })
}

fn bad_request(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// Currently active (firing) alerts, newest first, a page at a time
/// (`limit`, default 100, at most 1000; `next` resumes); `status=resolved`
/// matches nothing since resolved alerts are no longer active.
pub(super) async fn alerts(State(s): State<ApiState>, Query(q): Query<AlertQuery>) -> Response {
    if let Some(status) = q.status.as_deref()
        && status != "firing"
        && status != "resolved"
    {
        return bad_request("status must be firing or resolved");
    }
    let rule = match q.rule.as_deref() {
        None => None,
        Some(r) => match crate::engine::rule::Rule::ALL
            .into_iter()
            .find(|x| x.as_str() == r)
        {
            Some(rule) => Some(rule),
            None => return bad_request("unknown rule"),
        },
    };
    let after = match q.cursor.as_deref() {
        None => None,
        Some(c) => match parse_cursor(c) {
            Some(k) => Some(k),
            None => return bad_request("cursor is not one this API gave"),
        },
    };
    let limit = q.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    if q.status.as_deref() == Some("resolved") {
        return axum::Json(AlertPage {
            alerts: Vec::new(),
            next: None,
        })
        .into_response();
    }
    let (page, next) = s.store.active_alerts(after, limit, |c, check| {
        q.tier.is_none_or(|t| c.tier() == t)
            && rule.is_none_or(|r| check.rule() == r)
            && q.segment
                .as_deref()
                .is_none_or(|seg| s.store.segment_name(c.segment()) == seg)
    });
    axum::Json(AlertPage {
        alerts: page
            .iter()
            .map(|e| ActiveAlert::new(&s, &e.customer, e.check, e.fired_at))
            .collect(),
        next: next.as_ref().map(cursor_text),
    })
    .into_response()
}
