//! The pages' form posts: inbox actions (answered with a redirect back to
//! the page they came from) and signing in and out.

use std::sync::Arc;

use axum::extract::{Extension, Form, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::ApiState;
use super::auth::{Access, Caller};
use super::ui::{layout, no_inbox, now};
use crate::inbox::{Action, CloseReason};

/// A form post of an action.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ActionForm {
    note: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    reason: Option<String>,
    to: Option<String>,
    text: Option<String>,
    /// The lifecycle revision the page showed.
    version: Option<u64>,
}

fn form_action(verb: &str, f: ActionForm) -> Result<(Action, Option<u64>), String> {
    let some = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let version = f.version;
    let action = match verb {
        "ack" => Action::Ack { note: some(f.note) },
        "snooze" => {
            let d = humantime::parse_duration(f.for_.as_deref().unwrap_or("1d"))
                .map_err(|e| format!("`for`: {e}"))?;
            Action::Snooze {
                until: super::inbox::snooze_until(None, Some(d), now())?,
                reason: some(f.reason),
            }
        }
        "assign" => Action::Assign {
            to: some(f.to).ok_or("say whom to assign it to")?,
        },
        "close" => {
            let reason: CloseReason =
                serde_json::from_value(serde_json::Value::String(f.reason.unwrap_or_default()))
                    .map_err(|_| {
                        "close reason: won_back, false_alarm, lost or other".to_string()
                    })?;
            Action::Close {
                reason,
                note: some(f.note),
            }
        }
        "notes" => Action::Note {
            text: some(f.text).ok_or("a note needs text")?,
        },
        _ => return Err("no such action".into()),
    };
    Ok((action, version))
}

pub(super) async fn act(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path((id, verb)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    Form(f): Form<ActionForm>,
) -> Response {
    let Some(i) = &s.inbox else { return no_inbox() };
    let action = match form_action(&verb, f) {
        Ok(a) => a,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    if let Err(refused) = super::inbox::perform(&s, i, &id, action, &caller).await {
        return refused.into_response();
    }
    let back = headers
        .get(header::REFERER)
        .and_then(|r| r.to_str().ok())
        .and_then(|r| url::Url::parse(r).ok())
        .map(|u| {
            format!(
                "{}{}",
                u.path(),
                u.query().map(|q| format!("?{q}")).unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "/".into());
    Redirect::to(&back).into_response()
}

pub(super) async fn signin_form() -> Markup {
    signin_page(None)
}

pub(super) fn signin_page(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        false,
        html! {
            h2 { "Sign in" }
            @if let Some(e) = error { p class="departed" role="alert" { (e) } }
            form method="post" action="/signin" {
                label { "Access token " input type="password" name="token" autocomplete="current-password" required autofocus; }
                " "
                button type="submit" class="primary" { "Sign in" }
            }
            p class="note" { "The token is exchanged for a session cookie; it is not stored in the browser." }
        },
    )
}

/// The sign-in form's field.
#[derive(Debug, Deserialize)]
pub struct SigninForm {
    token: String,
}

pub(super) async fn signin(
    State(access): State<Arc<Access>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    Form(f): Form<SigninForm>,
) -> Response {
    if headers.get(header::ORIGIN).is_some() && !access.same_origin(&uri, &headers) {
        return (
            StatusCode::FORBIDDEN,
            "the request's Origin is not this host",
        )
            .into_response();
    }
    match access.sign_in(&f.token, now().0) {
        Some((caller, cookie)) => {
            tracing::info!(by = %caller.name, "signed in to the inbox");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            signin_page(Some("That token is not valid.")),
        )
            .into_response(),
    }
}

pub(super) async fn signout(State(access): State<Arc<Access>>) -> Response {
    (
        [(header::SET_COOKIE, access.sessions.clear())],
        Redirect::to("/signin"),
    )
        .into_response()
}
