//! The HTTP listeners, served from the sharded store while ingestion runs:
//! the data API (customers, alerts; `http.bind`, behind [`auth`], optional
//! [`tls`], with request limits) and the operations listener (`/metrics`,
//! `/healthz`, `/readyz`; `http.ops_bind`, no authentication and no
//! customer data, so scrapers and probes never hold a data credential).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::set_header::SetResponseHeaderLayer;

pub mod auth;
mod customers;
mod forms;
pub(crate) use customers::customer_view;
use customers::{alerts, customer};
pub mod inbox;
pub mod peers;
pub mod session;
pub mod tls;
pub mod ui;

use crate::config::HttpConfig;
use crate::engine::customer::Windows;
use crate::engine::risk;
use crate::engine::rule::Limits;
use crate::engine::settings::Settings;
use crate::engine::store::Store;
use crate::metrics;
use auth::Access;

/// What the handlers read. `ready` is reported by the service.
#[derive(Clone)]
pub struct ApiState {
    /// The customers (read only).
    pub store: Store,
    /// Metrics to render.
    pub registry: prometheus::Registry,
    /// Readiness as the service reports it.
    pub ready: Arc<Readiness>,
    /// Window geometry, for the signals.
    pub windows: Windows,
    /// The rules compiled per segment (by index), for the risk score.
    pub limits: Arc<[Limits]>,
    /// The risk distribution gauge, refreshed on scrape (none if it could
    /// not be registered).
    pub risk_distribution: Option<Arc<metrics::RiskDistribution>>,
    /// The retention inbox (`run` and `demo`; none in tests without Kafka).
    pub inbox: Option<inbox::InboxState>,
    /// `churnwatch_alerts_closed_total{rule, tier, reason}`.
    pub closed: Option<prometheus::IntCounterVec>,
}

impl ApiState {
    /// The state for a service running `settings`.
    pub fn new(
        store: Store,
        registry: prometheus::Registry,
        ready: Arc<Readiness>,
        settings: &Settings,
    ) -> Self {
        let risk_distribution = metrics::RiskDistribution::new(&registry, Duration::from_secs(30))
            .inspect_err(|e| tracing::warn!(error = %e, "no churnwatch_customers_by_risk metric"))
            .ok()
            .map(Arc::new);
        let closed = metrics::closed_alerts(&registry)
            .inspect_err(|e| tracing::warn!(error = %e, "no churnwatch_alerts_closed_total metric"))
            .ok();
        Self {
            store,
            registry,
            ready,
            windows: Windows::new(settings),
            limits: settings
                .segments
                .segments
                .iter()
                .map(|seg| Limits::new(&seg.rules, &settings.risk))
                .collect(),
            risk_distribution,
            inbox: None,
            closed,
        }
    }

    /// The rules of `c`'s segment.
    pub fn limits_of(&self, c: &crate::engine::customer::Customer) -> &Limits {
        let i = usize::from(c.segment());
        &self.limits[i.min(self.limits.len().saturating_sub(1))]
    }

    /// The same state serving the retention inbox too.
    pub fn with_inbox(mut self, inbox: inbox::InboxState) -> Self {
        self.inbox = Some(inbox);
        self
    }
}

/// Readiness and liveness as the engine loop last reported them. A report
/// older than `stale_after` counts as not ready: a loop blocked (on a
/// broker that stopped answering, say) cannot report its own outage. One
/// older than `live_within` means the loop is stalled: `/healthz` answers
/// 503 so an orchestrator restarts the instance (the loop reports on every
/// tick, so only a loop that cannot turn goes that long without).
#[derive(Debug)]
pub struct Readiness {
    ready: AtomicBool,
    /// Milliseconds after `origin` of the last report.
    reported: AtomicU64,
    origin: Instant,
    stale_after: Duration,
    live_within: Duration,
}

impl Readiness {
    /// Not ready until the first report; a report older than `stale_after`
    /// counts as not ready, one older than `live_within` as stalled.
    pub fn new(stale_after: Duration, live_within: Duration) -> Self {
        Self {
            ready: AtomicBool::new(false),
            reported: AtomicU64::new(0),
            origin: Instant::now(),
            stale_after,
            live_within,
        }
    }

    /// Whether the loop reported within `live_within`.
    pub fn is_alive(&self) -> bool {
        self.is_alive_at(Instant::now())
    }

    fn is_alive_at(&self, now: Instant) -> bool {
        self.age_at(now) <= self.live_within
    }

    fn age_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
            .saturating_sub(Duration::from_millis(self.reported.load(Ordering::Relaxed)))
    }

    /// Reports readiness now.
    pub fn report(&self, ready: bool) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.reported.store(now, Ordering::Relaxed);
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the last report said ready and is fresh.
    pub fn is_ready(&self) -> bool {
        self.is_ready_at(Instant::now())
    }

    fn is_ready_at(&self, now: Instant) -> bool {
        self.ready.load(Ordering::Relaxed) && self.age_at(now) <= self.stale_after
    }
}

/// The data API's routes (customer data: behind [`auth::authorize`] and
/// the request limits).
pub fn data_router(state: ApiState, access: Arc<Access>, http: &HttpConfig) -> Router {
    let api = Router::new()
        .route("/customers/{id}", get(customer))
        .route("/alerts", get(alerts))
        .route("/api/v1/alerts", get(inbox::list))
        .route("/api/v1/alerts/{alert_id}", get(inbox::one))
        .route(
            "/api/v1/alerts/{alert_id}/{action}",
            axum::routing::post(inbox::act),
        )
        .route("/api/v1/customers/{id}", get(inbox::customer))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            access.clone(),
            auth::authorize,
        ));
    let bounded = Router::new()
        .merge(api)
        .merge(ui::pages(state.clone(), access.clone()))
        .merge(ui::public(access.clone()))
        .layer(
            tower::ServiceBuilder::new()
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    http.request_timeout,
                ))
                .layer(tower::limit::ConcurrencyLimitLayer::new(
                    http.max_concurrent_requests,
                ))
                .layer(tower_http::limit::RequestBodyLimitLayer::new(
                    http.max_body_bytes,
                )),
        );
    // The live stream outlives any request timeout; it has its own cap.
    let live = Router::new()
        .route("/api/v1/stream", get(inbox::stream))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            access,
            auth::authorize,
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            http.max_concurrent_requests,
        ));
    bounded.merge(live).layer(
        tower::ServiceBuilder::new()
            // Around the whole router, outside the concurrency limit (a
            // router is always ready): draining a refused body holds no
            // permit.
            .layer(axum::middleware::from_fn_with_state(
                (http.max_body_bytes, http.request_timeout),
                refuse_large_bodies,
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static("frame-ancestors 'none'"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_FRAME_OPTIONS,
                header::HeaderValue::from_static("DENY"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            )),
    )
}

/// Most of an oversized body read before the 413 is sent: a client still
/// writing when the server closes gets a reset instead of the answer.
const DRAIN_AT_MOST: usize = 4 << 20;

/// Answers a request whose declared body is over `http.max_body_bytes`
/// with 413 naming the limit, after reading (up to [`DRAIN_AT_MOST`]) what
/// the client sends within `within` (`http.request_timeout`), so it gets
/// the answer. Undeclared (chunked) bodies are cut by the limit layer
/// beneath.
async fn refuse_large_bodies(
    State((limit, within)): State<(usize, Duration)>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => {
            // Only to let the client finish; what it holds is not wanted.
            let drain = axum::body::to_bytes(request.into_body(), DRAIN_AT_MOST);
            let _ = tokio::time::timeout(within, drain).await;
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({
                    "error": format!("the request body is over http.max_body_bytes ({limit} bytes)")
                })),
            )
                .into_response()
        }
        _ => next.run(request).await,
    }
}

/// The operations routes: unauthenticated, no customer data.
pub fn ops_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The two bound listeners: data API and operations.
pub struct Listeners {
    /// `http.bind`.
    pub data: tokio::net::TcpListener,
    /// `http.ops_bind`.
    pub ops: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds `http.bind` and `http.ops_bind`.
    pub async fn bind(http: &HttpConfig) -> Result<Self, HttpError> {
        let bind = |addr: String| async move {
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| HttpError::Bind { addr, source })
        };
        Ok(Self {
            data: bind(http.bind.clone()).await?,
            ops: bind(http.ops_bind.clone()).await?,
        })
    }
}

/// Why the HTTP listeners could not serve.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// An address could not be bound.
    #[error("cannot bind the HTTP listener on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The access policy cannot be used.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The session key file cannot be used.
    #[error(transparent)]
    Session(#[from] session::SessionError),
    /// Serving failed.
    #[error("HTTP listener failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks the access policy against the listeners and loads the TLS
/// pair (so a bad one is refused at start), then serves both listeners
/// until `shutdown` completes: the operations routes in plain HTTP, the
/// data API over TLS when configured. Returns the serving task and the
/// access policy (a reload replaces its tokens).
pub async fn start(
    listeners: Listeners,
    state: ApiState,
    http: &HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(tokio::task::JoinHandle<Result<(), HttpError>>, Arc<Access>), HttpError> {
    let sessions = session::Sessions::new(
        http.session_key_file.as_deref(),
        http.session_ttl,
        http.tls_cert.is_some(),
    )?;
    let access = Access::load(&http.tokens, sessions, http.public_url.as_deref())?;
    access.check_listener(listeners.data.local_addr()?)?;
    let tls = match http.tls_cert.clone().zip(http.tls_key.clone()) {
        Some((cert, key)) => Some(tls::Tls::load(cert, key).await?),
        None => None,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let ops = axum::serve(listeners.ops, ops_router(state.clone()))
        .with_graceful_shutdown(stop.clone().cancelled_owned());
    let data = serve_data(
        listeners.data,
        data_router(state, access.clone(), http),
        tls,
        http.request_timeout,
        stop.clone().cancelled_owned(),
    );
    let task = tokio::spawn(async move {
        let served = async {
            let (ops, data) = tokio::join!(ops, data);
            ops.and(data)
        };
        tokio::pin!(served);
        tokio::select! {
            r = &mut served => return r.map_err(HttpError::from),
            () = shutdown => stop.cancel(),
        }
        served.await.map_err(HttpError::from)
    });
    Ok((task, access))
}

/// Serves the data API (over TLS when `tls` is given) until `shutdown`.
/// A client gets `header_timeout` to send its request headers, so slow
/// connections cannot pile up (the request itself is bounded by the
/// timeout layer).
async fn serve_data(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<tls::Tls>,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let listener = listener.into_std()?;
    let app = app.into_make_service();
    match tls {
        None => {
            let mut server = axum_server::from_tcp(listener)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(header_timeout);
            server.serve(app).await
        }
        Some(tls) => {
            let watching = tls.watch();
            let mut server = axum_server::from_tcp_rustls(listener, tls.config())?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(header_timeout);
            let served = server.serve(app).await;
            watching.abort();
            served
        }
    }
}

async fn metrics_text(State(s): State<ApiState>) -> Response {
    if let (Some(d), Some(at)) = (&s.risk_distribution, s.store.watermark()) {
        d.refresh(|count| {
            s.store.for_each_customer(|c| {
                let departed = c.account_rep.get().is_some_and(|r| s.store.rep_departed(r));
                count(
                    c.tier(),
                    risk::score(c, at, &s.limits_of(c).risk_context(&s.windows, departed)),
                );
            })
        });
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&s.registry),
    )
        .into_response()
}

async fn healthz(State(s): State<ApiState>) -> Response {
    probe(
        s.ready.is_alive(),
        "ok\n",
        "stalled: the engine loop made no progress within http.liveness_timeout\n",
    )
}

async fn readyz(State(s): State<ApiState>) -> Response {
    if s.inbox.as_ref().is_some_and(|i| !i.inbox.is_caught_up()) {
        return probe(
            false,
            "",
            "not ready: the inbox is catching up on the actions and instances topics\n",
        );
    }
    probe(
        s.ready.is_ready(),
        "ready\n",
        "not ready: partitions not assigned, no broker reachable, or the pipeline stalled\n",
    )
}

/// A probe's answer: 200 with `yes`, else 503 with `no`.
fn probe(ok: bool, yes: &'static str, no: &'static str) -> Response {
    match ok {
        true => (StatusCode::OK, yes).into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, no).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_goes_stale_without_reports() {
        let r = Readiness::new(Duration::from_secs(5), Duration::from_secs(60));
        let now = Instant::now();
        assert!(!r.is_ready_at(now), "not ready before the first report");
        r.report(true);
        assert!(r.is_ready_at(Instant::now()));
        assert!(!r.is_ready_at(Instant::now() + Duration::from_secs(6)));
        r.report(false);
        assert!(!r.is_ready_at(Instant::now()));
    }

    #[test]
    fn a_loop_that_stops_reporting_is_not_alive_after_the_liveness_timeout() {
        let r = Readiness::new(Duration::from_secs(5), Duration::from_secs(60));
        r.report(false);
        let now = Instant::now();
        assert!(r.is_alive_at(now), "a not-ready loop that reports is alive");
        assert!(r.is_alive_at(now + Duration::from_secs(59)));
        assert!(!r.is_alive_at(now + Duration::from_secs(61)));
        r.report(true);
        assert!(r.is_alive_at(Instant::now() + Duration::from_secs(59)));
    }
}
