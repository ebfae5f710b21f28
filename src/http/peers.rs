//! Asking the other instances of the group whether they hold a customer,
//! for the customer page. Only `http.peers` are ever asked (see
//! [`crate::inbox::instances`]), with this instance's own credential
//! (`http.peer_token_file`), never the caller's: a page request's
//! `Authorization` and `Cookie` stay on this instance.

use std::time::Duration;

use crate::config::HttpConfig;
use crate::engine::event::Ts;
use crate::inbox::instances::Instances;

/// How long one peer may take to answer.
const ASK_WITHIN: Duration = Duration::from_secs(2);

/// The client that asks peers.
pub struct Peers {
    client: reqwest::Client,
    /// This instance's peer token; never logged (no `Debug`).
    token: Option<String>,
}

impl Peers {
    /// A client presenting `http.peer_token_file`'s token (read here, so a
    /// missing file is refused at start).
    pub fn new(http: &HttpConfig) -> Result<Self, super::HttpError> {
        let token = super::auth::peer_token(http.peer_token_file.as_deref())?;
        let client = reqwest::Client::builder()
            .timeout(ASK_WITHIN)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self { client, token })
    }

    /// The customer page of `id` on the peer that holds it, if one of the
    /// fresh, configured peers says it does.
    pub async fn holder(
        &self,
        instances: &Instances,
        me: &str,
        id: &str,
        now: Ts,
    ) -> Option<url::Url> {
        for base in instances.others(me, now) {
            let at = |segments: &[&str]| {
                let mut u = base.clone();
                u.path_segments_mut()
                    .ok()?
                    .clear()
                    .extend(segments)
                    .push(id);
                Some(u)
            };
            let (Some(api), Some(page)) =
                (at(&["api", "v1", "customers"]), at(&["ui", "customers"]))
            else {
                continue;
            };
            let mut ask = self.client.get(api);
            if let Some(t) = &self.token {
                ask = ask.bearer_auth(t);
            }
            let held = match ask.send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|v| v["held_here"] == true),
                _ => false,
            };
            if held {
                return Some(page);
            }
        }
        None
    }
}
