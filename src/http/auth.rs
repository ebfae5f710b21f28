//! Who may use the data API. Tokens are configured by their SHA-256 (or a
//! file holding them, hashed at start), so no secret sits in the config or
//! in memory longer than start-up; a presented token is hashed and compared
//! in constant time against every configured one. `viewer` reads; writing
//! (any method other than GET and HEAD) needs `operator`.
//!
//! With no tokens the data API is loopback-only (checked at start) and
//! answers only requests whose `Host` names a loopback host, so a web page
//! that rebinds its own name to 127.0.0.1 cannot read it (421). Such a
//! caller is `local`, with the operator role: whoever can reach a
//! loopback-only port already runs on the machine.

use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::session::{self, Sessions};
use crate::config::{Role, TokenConfig};

/// Why the configured tokens cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A `token_file` could not be read (the token is never shown).
    #[error("http.tokens[{index}] ({name}): token_file {path}: {source}")]
    TokenFile {
        /// The entry's position.
        index: usize,
        /// The entry's name.
        name: String,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A `token_file` holds nothing.
    #[error("http.tokens[{index}] ({name}): token_file {path} is empty")]
    EmptyToken {
        /// The entry's position.
        index: usize,
        /// The entry's name.
        name: String,
        /// The file.
        path: String,
    },
    /// `http.peer_token_file` could not be read or holds nothing.
    #[error("http.peer_token_file {path}: {why}")]
    PeerToken {
        /// The file.
        path: String,
        /// Why (never the content).
        why: String,
    },
    /// No tokens, and the data listener is not on a loopback address.
    #[error(
        "the data API listens on {0}, not a loopback address, and http.tokens is empty: configure [[http.tokens]] or bind to 127.0.0.1"
    )]
    OpenListener(String),
}

/// A token file's content, surrounding whitespace trimmed (`None`: empty).
fn read_token(path: &std::path::Path) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim();
    Ok((!token.is_empty()).then(|| token.to_string()))
}

/// The token in `http.peer_token_file`, if one is configured.
pub fn peer_token(path: Option<&std::path::Path>) -> Result<Option<String>, AuthError> {
    let Some(path) = path else { return Ok(None) };
    let failed = |why: String| AuthError::PeerToken {
        path: path.display().to_string(),
        why,
    };
    read_token(path)
        .map_err(|e| failed(e.to_string()))?
        .ok_or_else(|| failed("the file is empty".into()))
        .map(Some)
}

/// The caller of a request, put in its extensions for the handlers (write
/// actions log `name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name (`local` without tokens).
    pub name: String,
    /// What it may do.
    pub role: Role,
}

struct Token {
    name: String,
    role: Role,
    sha256: [u8; 32],
}

impl Token {
    fn caller(&self) -> Caller {
        Caller {
            name: self.name.clone(),
            role: self.role,
        }
    }
}

/// The configured tokens, read and hashed: what a reload swaps in whole.
pub struct Tokens(Vec<Token>);

impl Tokens {
    /// Reads `configs` (files are read and hashed here).
    pub fn load(configs: &[TokenConfig]) -> Result<Self, AuthError> {
        let mut tokens = Vec::with_capacity(configs.len());
        for (index, t) in configs.iter().enumerate() {
            let sha256 = match (&t.token_file, &t.token_sha256) {
                (Some(path), _) => {
                    let shown = path.display().to_string();
                    let token = read_token(path).map_err(|source| AuthError::TokenFile {
                        index,
                        name: t.name.clone(),
                        path: shown.clone(),
                        source,
                    })?;
                    let Some(token) = token else {
                        return Err(AuthError::EmptyToken {
                            index,
                            name: t.name.clone(),
                            path: shown,
                        });
                    };
                    Sha256::digest(token.as_bytes()).into()
                }
                (None, Some(hex_digest)) => {
                    let mut out = [0u8; 32];
                    // Validated as 64 hex digits with the config.
                    if hex::decode_to_slice(hex_digest, &mut out).is_err() {
                        continue;
                    }
                    out
                }
                (None, None) => continue,
            };
            tokens.push(Token {
                name: t.name.clone(),
                role: t.role,
                sha256,
            });
        }
        Ok(Self(tokens))
    }
}

/// The data API's access policy. Tokens can be replaced while serving
/// (a reload); a session signed in with a token that is gone, or whose
/// role changed, ends with it.
pub struct Access {
    tokens: RwLock<Arc<Tokens>>,
    /// Session cookies of the inbox page.
    pub sessions: Sessions,
    /// `http.public_url`'s origin (`scheme://host[:port]`), if configured.
    public_origin: Option<String>,
    /// The data listener's address, once checked: a reload may not leave
    /// a non-loopback listener without tokens.
    listener: OnceLock<std::net::SocketAddr>,
}

impl Access {
    /// Reads the configured tokens (files are read and hashed here);
    /// `public_url` is `http.public_url`, validated with the config.
    pub fn load(
        configs: &[TokenConfig],
        sessions: Sessions,
        public_url: Option<&str>,
    ) -> Result<Arc<Self>, AuthError> {
        let public_origin = public_url
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization());
        Ok(Arc::new(Self {
            tokens: RwLock::new(Arc::new(Tokens::load(configs)?)),
            sessions,
            public_origin,
            listener: OnceLock::new(),
        }))
    }

    /// Swaps in `tokens` (prepared with [`Tokens::load`]), unless that
    /// would leave the checked non-loopback listener open.
    pub fn replace_tokens(&self, tokens: Tokens) -> Result<(), AuthError> {
        if let Some(addr) = self.listener.get()
            && tokens.0.is_empty()
            && !addr.ip().is_loopback()
        {
            return Err(AuthError::OpenListener(addr.to_string()));
        }
        *self.tokens.write() = Arc::new(tokens);
        Ok(())
    }

    fn current(&self) -> Arc<Tokens> {
        self.tokens.read().clone()
    }

    /// The configured token a presented one is, if any (every configured
    /// token is compared, so the time taken says nothing about which was
    /// close).
    fn token(&self, presented: &str) -> Option<(Caller, [u8; 32])> {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut found = None;
        for t in &self.current().0 {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some((t.caller(), t.sha256));
            }
        }
        found
    }

    /// The caller a presented token proves, if any.
    pub fn token_caller(&self, presented: &str) -> Option<Caller> {
        self.token(presented).map(|(caller, _)| caller)
    }

    /// The session cookie signing in whoever `presented` proves, if anyone.
    /// The cookie is bound to the token (see [`Access::session_caller`]).
    pub fn sign_in(&self, presented: &str, now_ms: i64) -> Option<(Caller, String)> {
        let (caller, sha256) = self.token(presented)?;
        let cookie = self.sessions.issue(&caller, &sha256, now_ms);
        Some((caller, cookie))
    }

    /// The caller a session cookie value proves: signed by our key, not
    /// expired, and its token still configured with the same name and
    /// role, so removing a token or changing its role ends its sessions.
    fn session_caller(&self, value: &str, now_ms: i64) -> Option<Caller> {
        let (caller, bound) = self.sessions.verify(value, now_ms)?;
        self.current()
            .0
            .iter()
            .any(|t| session::binds(&t.sha256, &bound) && t.caller() == caller)
            .then_some(caller)
    }

    /// Whether requests need a token.
    pub fn required(&self) -> bool {
        !self.current().0.is_empty()
    }

    /// Refuses an open data listener without tokens.
    pub fn check_listener(&self, addr: std::net::SocketAddr) -> Result<(), AuthError> {
        let _ = self.listener.set(addr);
        if self.required() || addr.ip().is_loopback() {
            Ok(())
        } else {
            Err(AuthError::OpenListener(addr.to_string()))
        }
    }

    /// The caller `headers` prove, or the answer refusing the request.
    /// Writes whose `Origin` names another host are refused whatever the
    /// credential (a page elsewhere posting here), and writes authenticated
    /// by the session cookie need an `Origin` at all.
    fn caller(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let writes = !matches!(*method, Method::GET | Method::HEAD);
        let origin = self.origin_matches(uri, headers);
        if writes && origin == Some(false) {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "the request's Origin is not this host",
            ));
        }
        if !self.required() {
            return match authority(uri, headers).is_some_and(is_loopback_host) {
                true => Ok(Caller {
                    name: "local".into(),
                    role: Role::Operator,
                }),
                false => Err(Refusal(
                    StatusCode::MISDIRECTED_REQUEST,
                    "without http.tokens only requests to localhost, 127.0.0.1 or [::1] are answered",
                )),
            };
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let caller = match presented {
            Some(presented) => self
                .token_caller(presented)
                .ok_or(Refusal(StatusCode::UNAUTHORIZED, "the token is not valid"))?,
            None => {
                let now = chrono::Utc::now().timestamp_millis();
                let caller = session::cookie_value(headers)
                    .and_then(|v| self.session_caller(v, now))
                    .ok_or(Refusal(
                        StatusCode::UNAUTHORIZED,
                        "a bearer token or a session (sign in at /signin) is required",
                    ))?;
                if writes && origin.is_none() {
                    return Err(Refusal(
                        StatusCode::FORBIDDEN,
                        "a write by session cookie needs an Origin header",
                    ));
                }
                caller
            }
        };
        if writes && caller.role < Role::Operator {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "this token's role (viewer) may only read",
            ));
        }
        Ok(caller)
    }
}

impl Access {
    /// Whether the request carries an `Origin` naming this inbox.
    pub(crate) fn same_origin(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        self.origin_matches(uri, headers) == Some(true)
    }

    /// Whether the `Origin` header names the authority the request was
    /// sent to or `http.public_url`; `None` without one.
    fn origin_matches(&self, uri: &Uri, headers: &HeaderMap) -> Option<bool> {
        let origin = headers.get(header::ORIGIN)?;
        let Some(url) = origin.to_str().ok().and_then(|o| url::Url::parse(o).ok()) else {
            return Some(false);
        };
        if self.public_origin.as_deref() == Some(url.origin().ascii_serialization().as_str()) {
            return Some(true);
        }
        let Some(asked) = authority(uri, headers) else {
            return Some(false);
        };
        let named = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Some(false),
        };
        Some(named.eq_ignore_ascii_case(asked))
    }
}

/// The authority a request was sent to: HTTP/2's `:authority` (which
/// replaces `Host` there) or HTTP/1's `Host`.
fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// The request with its [`Caller`], or why it is refused.
fn admit(access: &Access, mut request: Request) -> Result<Request, Refusal> {
    let caller = access.caller(request.method(), request.uri(), request.headers())?;
    request.extensions_mut().insert(caller);
    Ok(request)
}

/// Middleware: lets through what [`Access`] allows, with its [`Caller`].
pub async fn authorize(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    match admit(&access, request) {
        Ok(request) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// Middleware for the inbox pages: as [`authorize`], but a caller who has
/// not signed in is sent to the sign-in form.
pub async fn authorize_page(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    match admit(&access, request) {
        Ok(request) => next.run(request).await,
        Err(Refusal(StatusCode::UNAUTHORIZED, _)) => {
            axum::response::Redirect::to("/signin").into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

/// A refused request: its status and why (a JSON body; 401 also asks for
/// a bearer token).
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"churnwatch\""),
            );
        }
        r
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")),
        None => host.split(':').next().map(str::to_string),
    };
    matches!(
        name.as_deref().map(str::to_ascii_lowercase).as_deref(),
        Some("localhost" | "127.0.0.1" | "[::1]")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(public_url: Option<&str>) -> Arc<Access> {
        let sessions = Sessions::new(None, std::time::Duration::from_secs(60), false).unwrap();
        Access::load(&[], sessions, public_url).unwrap()
    }

    #[test]
    fn reloaded_tokens_take_over_and_an_open_listener_keeps_some() {
        let a = access(None);
        let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
        let config = |name: &str, role, token: &str| TokenConfig {
            name: name.into(),
            role,
            token_file: None,
            token_sha256: Some(hash(token)),
        };
        let tokens = Tokens::load(&[config("ops", Role::Operator, "old-token")]).unwrap();
        a.replace_tokens(tokens).unwrap();
        a.check_listener("0.0.0.0:9898".parse().unwrap()).unwrap();
        assert_eq!(
            a.token_caller("old-token").map(|c| c.role),
            Some(Role::Operator)
        );
        let rotated = Tokens::load(&[config("ops", Role::Viewer, "new-token")]).unwrap();
        a.replace_tokens(rotated).unwrap();
        assert_eq!(a.token_caller("old-token"), None, "the old token is gone");
        assert_eq!(
            a.token_caller("new-token").map(|c| c.role),
            Some(Role::Viewer)
        );
        let none = Tokens::load(&[]).unwrap();
        assert!(matches!(
            a.replace_tokens(none),
            Err(AuthError::OpenListener(_))
        ));
        assert!(
            a.token_caller("new-token").is_some(),
            "the refused reload kept the tokens"
        );
    }

    #[test]
    fn an_origin_must_name_the_host_asked() {
        let a = access(None);
        let h = |origin: Option<&str>, host: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, host.parse().unwrap());
            if let Some(o) = origin {
                m.insert(header::ORIGIN, o.parse().unwrap());
            }
            a.origin_matches(&Uri::from_static("/signin"), &m)
        };
        assert_eq!(h(None, "127.0.0.1:9898"), None);
        assert_eq!(
            h(Some("http://127.0.0.1:9898"), "127.0.0.1:9898"),
            Some(true)
        );
        assert_eq!(
            h(Some("https://inbox.example"), "Inbox.Example"),
            Some(true)
        );
        assert_eq!(
            h(Some("https://evil.example"), "127.0.0.1:9898"),
            Some(false)
        );
        assert_eq!(
            h(Some("http://127.0.0.1:9899"), "127.0.0.1:9898"),
            Some(false)
        );
        assert_eq!(h(Some("null"), "127.0.0.1:9898"), Some(false));
    }

    #[test]
    fn a_session_ends_when_its_token_is_removed_or_its_role_changes() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("session.key");
        std::fs::write(&key, [42u8; 32]).unwrap();
        let with = |tokens: &[(&str, Role, &str)]| {
            let configs: Vec<TokenConfig> = tokens
                .iter()
                .map(|(name, role, secret)| TokenConfig {
                    name: (*name).into(),
                    role: *role,
                    token_file: None,
                    token_sha256: Some(hex::encode(Sha256::digest(secret.as_bytes()))),
                })
                .collect();
            let sessions = Sessions::new(Some(&key), std::time::Duration::from_secs(60), false);
            Access::load(&configs, sessions.unwrap(), None).unwrap()
        };
        let anna = ("anna", Role::Operator, "anna-secret");
        let (_, set) = with(&[anna]).sign_in("anna-secret", 0).unwrap();
        let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
        let caller = with(&[anna]).session_caller(value, 1);
        assert_eq!(
            caller.map(|c| c.name),
            Some("anna".to_string()),
            "same config"
        );
        let demoted = with(&[("anna", Role::Viewer, "anna-secret")]);
        assert_eq!(demoted.session_caller(value, 1), None, "role changed");
        let rotated = with(&[("anna", Role::Operator, "new-secret")]);
        assert_eq!(rotated.session_caller(value, 1), None, "token replaced");
        assert_eq!(with(&[]).session_caller(value, 1), None, "token removed");
    }

    #[test]
    fn http2_authority_and_the_public_url_count_as_the_host() {
        let mut m = HeaderMap::new();
        m.insert(
            header::ORIGIN,
            "https://inbox.example:8443".parse().unwrap(),
        );
        let h2 = Uri::from_static("https://inbox.example:8443/signin");
        assert_eq!(
            access(None).origin_matches(&h2, &m),
            Some(true),
            "no Host, only :authority"
        );
        let proxied = Uri::from_static("/signin");
        let mut behind = m.clone();
        behind.insert(header::HOST, "10.0.0.7:9898".parse().unwrap());
        assert_eq!(access(None).origin_matches(&proxied, &behind), Some(false));
        let public = access(Some("https://inbox.example:8443"));
        assert_eq!(public.origin_matches(&proxied, &behind), Some(true));
        behind.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert_eq!(public.origin_matches(&proxied, &behind), Some(false));
    }

    #[test]
    fn only_loopback_host_names_pass() {
        for h in [
            "localhost",
            "localhost:9898",
            "127.0.0.1:1",
            "[::1]:9898",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:9898",
            "127.0.0.1.nip.io",
            "[::2]",
            "10.0.0.1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
