//! The retention inbox's pages, server-rendered (maud) on the data
//! listener: `/` (the inbox), `/ui/customers/{id}`, `/overview`, and the
//! sign-in form. Read-only use needs no JavaScript; actions are plain form
//! posts (answered with a redirect back), shown only to operators. A small
//! script of our own (`/assets/inbox.js`, compiled in) refreshes the list
//! over the `/api/v1/stream` events and says when the live connection drops.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use compact_str::CompactString;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::ApiState;
use super::auth::{Access, Caller};
use super::forms::{act, signin, signin_form, signout};
use crate::config::Role;
use crate::engine::event::Ts;
use crate::engine::store::RankedOver;
use crate::inbox::{Action, Filter, Item, Page, Sort, State as Lifestate};

const SCRIPT: &str = include_str!("../../assets/inbox.js");
const STYLE: &str = include_str!("../../assets/inbox.css");

pub(super) fn now() -> Ts {
    Ts(chrono::Utc::now().timestamp_millis())
}

/// The time ages are told against: the engine's (under the event clock,
/// and in the demo, alerts carry simulated time), else the wall clock.
fn engine_now(s: &ApiState) -> Ts {
    s.store.watermark().unwrap_or_else(now)
}

/// `id` as one path segment: a customer or alert id with `/ ? # %` in it
/// still links to itself.
fn segment(id: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

/// Rows per inbox page (the API's largest page is 1000; a page of forms
/// that long is slow to render and to scan).
const PAGE_ROWS: usize = 200;

/// The pages behind sign-in.
pub fn pages(state: ApiState, access: Arc<Access>) -> Router {
    Router::new()
        .route("/", get(inbox))
        .route("/ui/rows", get(rows))
        .route("/overview", get(overview))
        .route("/ui/customers/{id}", get(customer))
        .route("/ui/alerts/{alert_id}/{action}", post(act))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            access,
            super::auth::authorize_page,
        ))
}

/// What needs no sign-in: the form itself and the assets.
pub fn public(access: Arc<Access>) -> Router {
    Router::new()
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route(
            "/assets/inbox.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/assets/inbox.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE) }),
        )
        .with_state(access)
}

/// A page; `live` says whether it updates itself (the inbox list does, the
/// others show the state they were loaded with and say so).
pub(super) fn layout(title: &str, caller: Option<&Caller>, live: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · churnwatch" }
                link rel="stylesheet" href="/assets/inbox.css";
            }
            body {
                header {
                    h1 { "churnwatch" }
                    nav {
                        a href="/" { "Inbox" }
                        a href="/overview" { "Overview" }
                    }
                    @if live {
                        span id="live" class="live" { "Live updates need JavaScript; reload to refresh" }
                    } @else {
                        span class="live" { "As loaded; reload to refresh" }
                    }
                    @if let Some(c) = caller {
                        span { "Signed in as " strong { (c.name) } " (" (role_name(c.role)) ")" }
                        form method="post" action="/signout" { button type="submit" { "Sign out" } }
                    }
                }
                main { (body) }
                script src="/assets/inbox.js" {}
            }
        }
    }
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
    }
}

fn when(t: Ts) -> String {
    t.to_string()
}

fn age(since: Ts, now: Ts) -> String {
    let mins = (now.0 - since.0).max(0) / 60_000;
    match mins {
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h", m / 60),
        m => format!("{} d", m / 1440),
    }
}

/// The inbox's query: the API's filters, and "assigned to me".
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct InboxQuery {
    tier: Option<String>,
    segment: Option<String>,
    rule: Option<String>,
    rep: Option<String>,
    state: Option<String>,
    mine: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
}

impl InboxQuery {
    fn filter(&self, caller: &Caller) -> Filter {
        let some = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Filter {
            tier: some(&self.tier),
            segment: some(&self.segment),
            rule: some(&self.rule),
            rep: some(&self.rep),
            state: some(&self.state)
                .and_then(|s| serde_json::from_value(serde_json::Value::String(s)).ok()),
            // The default view is what needs work; "any" shows every state.
            needs_work: self.state.as_deref().is_none_or(str::is_empty),
            assigned_to: self.mine.is_some().then(|| caller.name.clone()),
            sort: some(&self.sort)
                .and_then(|s| serde_json::from_value::<Sort>(serde_json::Value::String(s)).ok()),
            limit: Some(PAGE_ROWS),
            cursor: some(&self.cursor),
        }
    }

    /// This query's next page after `cursor`.
    fn next(&self, cursor: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        let fields = [
            ("tier", &self.tier),
            ("segment", &self.segment),
            ("rule", &self.rule),
            ("rep", &self.rep),
            ("state", &self.state),
            ("mine", &self.mine),
            ("sort", &self.sort),
        ];
        for (k, v) in fields {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        q.append_pair("cursor", cursor);
        format!("/?{}", q.finish())
    }
}

fn live_region(s: &ApiState, q: &InboxQuery, page: &Page, caller: &Caller) -> Markup {
    let operator = caller.role == Role::Operator;
    let clock = engine_now(s);
    html! {
        div class="counts" {
            @for (tier, n) in &page.counts.tier { span { "Tier " (tier) ": " (n) } }
            @if page.counts.segment.len() > 1 { @for (segment, n) in &page.counts.segment { span { (segment) ": " (n) } } }
            @for (rule, n) in &page.counts.rule { span { (rule) ": " (n) } }
        }
        div class="table" {
            table {
                thead { tr {
                    th { "Tier" } th { "Segment" } th { "Customer" } th { "Rule" } th { "Reason" } th { "Firing since" }
                    th { "Risk" } th { "Owner" } th { "State" }
                    @if operator { th { "Actions" } }
                } }
                tbody {
                    @if page.alerts.is_empty() { tr { td colspan="9" class="note" { "No alerts match." } } }
                    @for item in &page.alerts { (row(s, item, operator, clock)) }
                }
            }
        }
        @if let Some(next) = &page.next {
            p class="paging" { a id="next-page" href=(q.next(next)) { "Next " (PAGE_ROWS) " →" } }
        }
    }
}

fn state_text(item: &Item) -> String {
    let l = item.lifecycle.as_ref();
    match item.state {
        Lifestate::Open => "open".into(),
        Lifestate::Resolved => "resolved".into(),
        Lifestate::Acknowledged => format!(
            "acknowledged by {}",
            l.and_then(|l| l.acknowledged_by.clone())
                .unwrap_or_default()
        ),
        Lifestate::Snoozed => format!(
            "snoozed until {}",
            l.and_then(|l| l.snoozed_until)
                .map(when)
                .unwrap_or_default()
        ),
        Lifestate::Closed => format!(
            "closed: {}",
            l.and_then(|l| l.closed_reason)
                .map(|r| r.as_str())
                .unwrap_or_default()
        ),
    }
}

/// One alert's row; ages against `clock`.
fn row(s: &ApiState, item: &Item, operator: bool, clock: Ts) -> Markup {
    let a = &item.episode.alert;
    // What the forms act on: a change made meanwhile refuses them (409).
    let version = item.lifecycle.as_ref().map_or(0, |l| l.revision);
    let id = segment(&a.alert_id);
    let rep = item.episode.rep().unwrap_or("");
    let assigned = item.lifecycle.as_ref().and_then(|l| l.assigned_to.clone());
    let departed = s
        .inbox
        .as_ref()
        .is_some_and(|i| i.inbox.rep_departed(&a.customer_id));
    let rule = match &a.cause {
        Some(c) => format!("{} / {c}", a.rule),
        None => a.rule.clone(),
    };
    html! {
        tr id={ "alert-" (a.alert_id) } data-state=(item.state.as_str()) {
            td class="tier" { (a.tier) }
            td class="segment" { (a.segment) }
            td { a href={ "/ui/customers/" (segment(&a.customer_id)) } { (a.customer_id) } }
            td { (rule) }
            td class="reason" { (a.reason) }
            td { (when(item.episode.fired_at)) br; span class="note" { (age(item.episode.fired_at, clock)) " ago" } }
            td { (item.episode.risk().map_or("–".to_string(), |r| r.to_string())) }
            td class="owner" {
                @match &assigned {
                    Some(p) => { (p) }
                    None => { (rep) " " span class="note" { "(account rep)" } }
                }
                @if departed && assigned.is_none() { br; span class="departed" { "account rep departed" } }
            }
            td class="state" { (state_text(item)) }
            @if operator {
                td class="actions" {
                    @if item.state != Lifestate::Closed {
                        form method="post" action={ "/ui/alerts/" (id) "/ack" } {
                            input type="hidden" name="version" value=(version);
                            button type="submit" data-action="ack" { "Acknowledge" }
                        }
                        form method="post" action={ "/ui/alerts/" (id) "/snooze" } {
                            input type="hidden" name="version" value=(version);
                            input name="for" aria-label="Snooze for" value="1d" size="4" list="snooze-durations" required;
                            button type="submit" data-action="snooze" { "Snooze" }
                        }
                        form method="post" action={ "/ui/alerts/" (id) "/assign" } {
                            input type="hidden" name="version" value=(version);
                            input name="to" aria-label="Assign to" placeholder=(rep) size="8" required;
                            button type="submit" data-action="assign" { "Assign" }
                        }
                        form method="post" action={ "/ui/alerts/" (id) "/close" } {
                            input type="hidden" name="version" value=(version);
                            select name="reason" aria-label="Close reason" {
                                option value="won_back" { "won back" } option value="false_alarm" { "false alarm" }
                                option value="lost" { "lost" } option value="other" { "other" }
                            }
                            button type="submit" data-action="close" { "Close" }
                        }
                    }
                }
            }
        }
    }
}

fn filters(q: &InboxQuery, segments: &[CompactString]) -> Markup {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let opt = |current: &Option<String>, value: &str, label: &str| {
        html! { option value=(value) selected[current.as_deref() == Some(value)] { (label) } }
    };
    html! {
        form class="filters" method="get" action="/" {
            label { "Tier" select name="tier" { (opt(&q.tier, "", "any")) (opt(&q.tier, "A", "A")) (opt(&q.tier, "B", "B")) (opt(&q.tier, "C", "C")) } }
            @if segments.len() > 1 {
                label { "Segment" select name="segment" {
                    (opt(&q.segment, "", "any"))
                    @for s in segments { (opt(&q.segment, s, s)) }
                } }
            }
            label { "Rule" select name="rule" {
                (opt(&q.rule, "", "any"))
                @for r in crate::engine::rule::Rule::ALL { (opt(&q.rule, r.as_str(), r.as_str())) }
            } }
            label { "Rep" input name="rep" value=(v(&q.rep)) size="8"; }
            label { "State" select name="state" {
                (opt(&q.state, "", "needs work")) (opt(&q.state, "any", "any")) (opt(&q.state, "open", "open"))
                (opt(&q.state, "acknowledged", "acknowledged")) (opt(&q.state, "snoozed", "snoozed")) (opt(&q.state, "closed", "closed"))
            } }
            label { "Sort" select name="sort" { (opt(&q.sort, "risk", "risk")) (opt(&q.sort, "tier", "tier")) (opt(&q.sort, "age", "age")) } }
            label { span { "Assigned to me" } input type="checkbox" name="mine" value="1" checked[q.mine.is_some()]; }
            button type="submit" class="primary" { "Filter" }
        }
    }
}

pub(super) fn no_inbox() -> Response {
    (StatusCode::NOT_FOUND, "no inbox here").into_response()
}

async fn inbox(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<InboxQuery>,
) -> Response {
    let Some(i) = &s.inbox else { return no_inbox() };
    let now = now();
    let page = match i.inbox.list(&q.filter(&caller), now) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    layout(
        "Inbox",
        Some(&caller),
        true,
        html! {
            h2 { "Firing alerts" }
            @if !i.inbox.is_caught_up() {
                p class="departed" role="status" { "Catching up on the stored actions: actions are refused until then. Reload in a moment." }
            }
            (filters(&q, &s.store.segment_names()))
            div id="live-region" { (live_region(&s, &q, &page, &caller)) }
        },
    )
    .into_response()
}

async fn rows(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<InboxQuery>,
) -> Response {
    let Some(i) = &s.inbox else { return no_inbox() };
    let now = now();
    match i.inbox.list(&q.filter(&caller), now) {
        Ok(page) => live_region(&s, &q, &page, &caller).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn overview(State(s): State<ApiState>, Extension(caller): Extension<Caller>) -> Response {
    let Some(i) = &s.inbox else { return no_inbox() };
    let o = i.inbox.overview(now());
    layout("Overview", Some(&caller), false, html! {
        h2 { "Open alerts by segment, tier and rule" }
        div class="table" { table {
            thead { tr { th { "Segment" } th { "Tier" } th { "Rule" } th { "Open" } } }
            tbody { @for ((segment, tier, rule), n) in &o.open { tr { td class="segment" { (segment) } td class="tier" { (tier) } td { (rule) } td { (n) } } } }
        } }
        h2 { "Age of open alerts" }
        div class="table" { table {
            thead { tr { th { "under a day" } th { "1–7 days" } th { "7–30 days" } th { "older" } } }
            tbody { tr { @for n in o.ages { td { (n) } } } }
        } }
        h2 { "Closed as false alarm, per rule" }
        p class="note" { "The field's own measure of alert quality: of the alerts closed, the share closed as a false alarm." }
        div class="table" { table {
            thead { tr { th { "Rule" } th { "Closed" } th { "False alarms" } th { "Share" } } }
            tbody { @for (rule, (all, fa)) in &o.closed {
                tr { td { (rule) } td { (all) } td { (fa) } td { (format!("{:.0}%", *fa as f64 * 100.0 / (*all).max(1) as f64)) } }
            } }
        } }
    })
    .into_response()
}

async fn customer(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Some(i) = &s.inbox else { return no_inbox() };
    let now = now();
    let history = i.inbox.customer(&id, now);
    let record = s.store.customer(&id);
    let live = record.as_ref().map(|c| super::customer_view(&s, c));
    if live.is_none()
        && let Some(owner) = i.peers.holder(&i.instances, &i.me, &id, now).await
    {
        return Redirect::to(owner.as_str()).into_response();
    }
    if live.is_none() && history.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            layout(
                "Unknown customer",
                Some(&caller),
                false,
                html! { p { "No customer " (id) " here." } },
            ),
        )
            .into_response();
    }
    let signals = match &live {
        Some(v) => serde_json::to_value(v).unwrap_or_default(),
        None => history
            .first()
            .map(|h| h.episode.alert.signals.clone())
            .unwrap_or_default(),
    };
    let field = |k: &str| match signals.get(k) {
        Some(serde_json::Value::Null) | None => "–".to_string(),
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .map_or(n.to_string(), |f| format!("{}", (f * 10.0).round() / 10.0)),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let t = s
        .store
        .thresholds(record.as_ref().map_or(0, |c| c.segment()));
    let operator = caller.role == Role::Operator;
    layout(&format!("Customer {id}"), Some(&caller), false, html! {
        h2 { "Customer " (id) }
        @if live.is_none() {
            p class="note" { "This instance does not hold this customer; the signals below are the latest its alerts carried." }
        }
        dl class="signals" {
            dt { "Segment" } dd class="segment" { (field("segment")) @if field("key_account") == "true" { " " span class="key" { "key account" } } }
            dt { "Tier" } dd class="tier" { (field("tier")) }
            dt { "Thresholds in force" } dd class="thresholds" { "A ≥ " (format!("{:.2}", t.a)) ", B ≥ " (format!("{:.2}", t.b)) " (spend in the tier window), " (ranked_over(s.store.ranked_over())) }
            dt { "Risk" } dd { (field("risk")) }
            dt { "Days since last purchase" } dd { (field("recency_days")) }
            dt { "Purchases (frequency window)" } dd { (field("frequency_90d")) }
            dt { "Spend (tier window)" } dd { (field("monetary")) }
            dt { "Days since rep contact" } dd { (field("days_since_contact")) }
            dt { "Account rep" } dd { (field("account_rep")) @if field("account_rep_departed") == "true" { " " span class="departed" { "departed" } } }
            dt { "Rep handoffs" } dd { (field("rep_handoffs_180d")) }
            dt { "Open tickets / complaints" } dd { (field("open_tickets")) " / " (field("open_complaints")) }
        }
        @if let Some(reasons) = signals.get("risk_reasons").and_then(|r| r.as_array()) {
            h3 { "Why this risk" }
            ul { @for r in reasons { li { "+" (r["points"]) ": " (r["reason"].as_str().unwrap_or("")) } } }
        }
        h3 { "Alert history" }
        @for item in &history {
            section {
                h4 { (item.episode.alert.rule) @if let Some(c) = &item.episode.alert.cause { " / " (c) } " — " (state_text(item)) }
                p { "Fired " (when(item.episode.fired_at)) @if let Some(r) = item.episode.resolved_at { ", resolved " (when(r)) } ". " (item.episode.alert.reason) }
                @if let Some(l) = &item.lifecycle {
                    ul { @for d in &l.history { li { (when(d.at)) " " strong { (d.by) } " " (d.action.name()) (action_detail(&d.action)) } } }
                }
                @if operator {
                    form method="post" action={ "/ui/alerts/" (segment(&item.episode.alert.alert_id)) "/notes" } {
                        input name="text" aria-label="Note" placeholder="Add a note" required size="40";
                        button type="submit" data-action="note" { "Add note" }
                    }
                }
            }
        }
    })
    .into_response()
}

/// What the thresholds were ranked over, in words.
fn ranked_over(r: crate::engine::store::RankedOver) -> String {
    match r {
        RankedOver { of: 0, .. } => "ranked over this instance's customers".into(),
        RankedOver {
            version: 0,
            partitions,
            of,
        } => format!("ranked over this instance's customers ({partitions} of {of} partitions)"),
        RankedOver {
            version,
            partitions,
            of,
        } => format!("ranked over the group: version {version}, {partitions} of {of} partitions"),
    }
}

fn action_detail(a: &Action) -> String {
    match a {
        Action::Ack { note } | Action::Close { note, .. } if note.is_some() => {
            format!(": {}", note.as_deref().unwrap_or(""))
        }
        Action::Snooze { until, reason } => format!(
            " until {until}{}",
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Action::Assign { to } => format!(" to {to}"),
        Action::Note { text } => format!(": {text}"),
        Action::Close { reason, .. } => format!(" ({})", reason.as_str()),
        Action::Ack { .. } | Action::Reopen => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_link_to_themselves_whatever_they_hold() {
        assert_eq!(segment("a/b?c#d%e f"), "a%2Fb%3Fc%23d%25e%20f");
        assert_eq!(segment("cust-1_2.3~"), "cust-1_2.3~");
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let q = InboxQuery {
            tier: Some("A".into()),
            segment: Some("wholesale".into()),
            state: Some("any".into()),
            rep: Some(String::new()),
            ..InboxQuery::default()
        };
        assert_eq!(
            q.next("k 1"),
            "/?tier=A&segment=wholesale&state=any&cursor=k+1"
        );
    }
}
