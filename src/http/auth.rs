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

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
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

/// The data API's access policy.
pub struct Access {
    tokens: Vec<Token>,
    /// Session cookies of the inbox page.
    pub sessions: Sessions,
}

impl Access {
    /// Reads the configured tokens (files are read and hashed here).
    pub fn load(configs: &[TokenConfig], sessions: Sessions) -> Result<Arc<Self>, AuthError> {
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
        Ok(Arc::new(Self { tokens, sessions }))
    }

    /// The caller a presented token proves, if any (every configured token
    /// is compared, so the time taken says nothing about which was close).
    pub fn token_caller(&self, presented: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.sha256.ct_eq(&digest)) {
                found = Some(t);
            }
        }
        found.map(|t| Caller {
            name: t.name.clone(),
            role: t.role,
        })
    }

    /// Whether requests need a token.
    pub fn required(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Refuses an open data listener without tokens.
    pub fn check_listener(&self, addr: std::net::SocketAddr) -> Result<(), AuthError> {
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
    fn caller(&self, method: &Method, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let writes = !matches!(*method, Method::GET | Method::HEAD);
        let origin = origin_matches(headers);
        if writes && origin == Some(false) {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                "the request's Origin is not this host",
            ));
        }
        if !self.required() {
            return match headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .is_some_and(is_loopback_host)
            {
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
                    .and_then(|v| self.sessions.verify(v, now))
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

/// Whether the request carries an `Origin` naming the host it was sent to.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    origin_matches(headers) == Some(true)
}

/// Whether the `Origin` header names the host the request was sent to
/// (`Host`); `None` without one.
fn origin_matches(headers: &HeaderMap) -> Option<bool> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let Some((origin, host)) = origin.zip(host) else {
        return Some(false);
    };
    let Ok(url) = url::Url::parse(origin) else {
        return Some(false);
    };
    let authority = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Some(false),
    };
    Some(authority.eq_ignore_ascii_case(host))
}

/// The request with its [`Caller`], or why it is refused.
fn admit(access: &Access, mut request: Request) -> Result<Request, Refusal> {
    let caller = access.caller(request.method(), request.headers())?;
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
    use super::{is_loopback_host, origin_matches};

    #[test]
    fn an_origin_must_name_the_host_asked() {
        let h = |origin: Option<&str>, host: &str| {
            let mut m = axum::http::HeaderMap::new();
            m.insert(axum::http::header::HOST, host.parse().unwrap());
            if let Some(o) = origin {
                m.insert(axum::http::header::ORIGIN, o.parse().unwrap());
            }
            origin_matches(&m)
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
