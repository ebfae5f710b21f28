//! Sign-in for the inbox page: a token exchanged for a session cookie.
//!
//! The cookie is stateless: the caller's name, role and expiry, signed
//! with HMAC-SHA256 (`hmac`), so any instance holding the same key accepts
//! it. The key comes from `http.session_key_file` (give every instance the
//! same file to sign in once for the whole group) or, without one, is drawn
//! at start (sessions then last as long as the process, on that instance).
//! HttpOnly (no script reads it), SameSite=Strict (no other site sends it),
//! Secure under TLS; state-changing requests it authenticates must also
//! carry an `Origin` naming this host.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use crate::config::Role;

/// The cookie's name.
pub const COOKIE: &str = "churnwatch_session";

/// Why the session key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The key file could not be read.
    #[error("http.session_key_file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds too little.
    #[error("http.session_key_file {path}: needs at least 32 bytes")]
    ShortKey {
        /// The file.
        path: String,
    },
}

/// Issues and checks session cookies.
pub struct Sessions {
    key: Vec<u8>,
    ttl: Duration,
    secure: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    /// Token name.
    n: String,
    /// Operator?
    o: bool,
    /// Expiry, Unix ms.
    e: i64,
    /// The token it was signed in with, as [`binding`] (absent in
    /// cookies of older versions, which then prove nobody).
    #[serde(default)]
    t: String,
}

/// What a cookie carries of the token it was signed in with: a digest of
/// the token's SHA-256, so the cookie tells nothing of the token itself.
fn binding(token_sha256: &[u8; 32]) -> String {
    let d = Sha256::new_with_prefix(b"churnwatch session of ")
        .chain_update(token_sha256)
        .finalize();
    b64().encode(&d[..16])
}

/// Whether a cookie's `bound` token is the one whose SHA-256 is `token_sha256`.
pub fn binds(token_sha256: &[u8; 32], bound: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(binding(token_sha256).as_bytes().ct_eq(bound.as_bytes()))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

impl Sessions {
    /// Sessions signed with the key in `key_file`, or a fresh random one.
    pub fn new(key_file: Option<&Path>, ttl: Duration, secure: bool) -> Result<Self, SessionError> {
        let key = match key_file {
            Some(p) => {
                let path = p.display().to_string();
                let bytes = std::fs::read(p).map_err(|source| SessionError::KeyFile {
                    path: path.clone(),
                    source,
                })?;
                if bytes.len() < 32 {
                    return Err(SessionError::ShortKey { path });
                }
                bytes
            }
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        Ok(Self { key, ttl, secure })
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(payload);
        mac
    }

    /// The `Set-Cookie` value signing `caller` in with the token whose
    /// SHA-256 is `token_sha256`, until `now_ms` + ttl.
    pub fn issue(&self, caller: &Caller, token_sha256: &[u8; 32], now_ms: i64) -> String {
        let claims = Claims {
            n: caller.name.clone(),
            o: caller.role == Role::Operator,
            e: now_ms.saturating_add(self.ttl.as_millis() as i64),
            t: binding(token_sha256),
        };
        let payload = b64().encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = b64().encode(self.mac(payload.as_bytes()).finalize().into_bytes());
        format!(
            "{COOKIE}={payload}.{tag}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.ttl.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that signs out.
    pub fn clear(&self) -> String {
        format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The caller a cookie value proves, if it is ours and not expired,
    /// with the token binding it carries (checked by the caller against
    /// the tokens configured now).
    pub fn verify(&self, value: &str, now_ms: i64) -> Option<(Caller, String)> {
        let (payload, tag) = value.split_once('.')?;
        let tag = b64().decode(tag).ok()?;
        self.mac(payload.as_bytes()).verify_slice(&tag).ok()?;
        let claims: Claims = serde_json::from_slice(&b64().decode(payload).ok()?).ok()?;
        let role = if claims.o {
            Role::Operator
        } else {
            Role::Viewer
        };
        (claims.e > now_ms).then_some((
            Caller {
                name: claims.n,
                role,
            },
            claims.t,
        ))
    }
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(None, Duration::from_secs(3600), false).unwrap()
    }

    fn value(set_cookie: &str) -> &str {
        let v = set_cookie.split(';').next().unwrap();
        v.strip_prefix("churnwatch_session=").unwrap()
    }

    #[test]
    fn a_cookie_proves_its_caller_until_it_expires_and_only_to_its_key() {
        let s = sessions();
        let anna = Caller {
            name: "anna".into(),
            role: Role::Viewer,
        };
        let token = [7u8; 32];
        let set = s.issue(&anna, &token, 1000);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure")
        );
        let (caller, bound) = s.verify(value(&set), 2000).unwrap();
        assert_eq!(caller, anna);
        assert!(binds(&token, &bound) && !binds(&[8u8; 32], &bound));
        assert_eq!(s.verify(value(&set), 1000 + 3_600_001), None, "expired");
        assert_eq!(sessions().verify(value(&set), 2000), None, "another key");
        // A viewer cannot make itself an operator: the claims are signed.
        let (payload, tag) = value(&set).split_once('.').unwrap();
        let forged = b64().encode(br#"{"n":"anna","o":true,"e":99999999999999}"#);
        assert_ne!(forged, payload);
        assert_eq!(s.verify(&format!("{forged}.{tag}"), 2000), None);
        let secure = Sessions::new(None, Duration::from_secs(60), true).unwrap();
        assert!(secure.issue(&anna, &token, 0).ends_with("; Secure"));
    }
}
