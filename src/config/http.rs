//! `[http]`: the data and ops listeners and who may use them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the data API (customers, alerts; needs a token unless it
    /// is loopback-only, see `tokens`).
    pub bind: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`, unauthenticated and
    /// nothing else, so scrapers and probes never hold a data credential.
    pub ops_bind: String,
    /// `/healthz` answers 503 once the engine loop has made no progress
    /// for this long (it turns at least every `engine.tick_interval`), so
    /// an orchestrator restarts a stalled instance.
    #[serde(with = "humantime_serde")]
    pub liveness_timeout: Duration,
    /// PEM certificate chain: with `tls_key`, the data listener speaks TLS
    /// only (reloaded on SIGHUP and when either file changes).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Who may use the data API. None: loopback only, and only for
    /// requests addressed to a loopback host name.
    pub tokens: Vec<TokenConfig>,
    /// A data request (headers, body and answer) taking longer is answered
    /// 408.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Data requests served at once; more wait their turn.
    pub max_concurrent_requests: usize,
    /// Largest accepted request body on the data listener, in bytes.
    pub max_body_bytes: usize,
    /// A file of at least 32 random bytes signing the inbox page's session
    /// cookies; give every instance the same one to sign in once for the
    /// group. None: a key drawn at start (sessions last as long as the
    /// process, on that instance).
    pub session_key_file: Option<PathBuf>,
    /// How long a sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The data listener's address as browsers and the other instances
    /// reach it (e.g. `https://inbox-2.example.com`), announced on
    /// `kafka.instances_topic`. None: `http://` (or `https://` under TLS)
    /// and `bind`.
    pub advertised_url: Option<String>,
    /// The other instances' data listeners (e.g.
    /// `["https://cw-1.internal:9898"]`), the only addresses a customer
    /// page asks whether they hold a customer and sends the browser to.
    /// An announcement on `kafka.instances_topic` naming any other address
    /// is logged, counted in `churnwatch_inbox_untrusted_announcements_total`
    /// and ignored. Empty: no other instance is ever asked.
    pub peers: Vec<String>,
    /// A file holding the token this instance presents to its peers as a
    /// bearer token (give each peer a `viewer` entry for it in
    /// `http.tokens`). A caller's own credentials are never forwarded.
    /// None: peers are asked without a credential (loopback-only peers).
    pub peer_token_file: Option<PathBuf>,
    /// The inbox's address as browsers reach it (e.g.
    /// `https://inbox.example.com`), for a reverse proxy that rewrites
    /// `Host`: a write whose `Origin` names it is accepted, as is one whose
    /// `Origin` names the request's own authority (`:authority` or `Host`).
    pub public_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:9898".into(),
            ops_bind: "127.0.0.1:9899".into(),
            liveness_timeout: Duration::from_secs(60),
            tls_cert: None,
            tls_key: None,
            tokens: Vec::new(),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 64,
            max_body_bytes: 64 * 1024,
            session_key_file: None,
            session_ttl: Duration::from_secs(12 * 3600),
            advertised_url: None,
            peers: Vec::new(),
            peer_token_file: None,
            public_url: None,
        }
    }
}

/// `[[http.tokens]]`: one credential for the data API. The token itself
/// is never in the config: either a file holding it or its SHA-256.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; logged with each write action (the token never is).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// A file whose content (surrounding whitespace trimmed) is the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Hex of the token's SHA-256 (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// What a data API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read customers and alerts.
    Viewer,
    /// Read, and the write actions (any method other than GET and HEAD).
    Operator,
}
