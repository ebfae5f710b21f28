//! The read-only HTTP API: metrics, health, readiness, customer lookup and
//! active alerts, served from the sharded store while ingestion runs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::engine::alert::{AlertId, Signals};
use crate::engine::customer::{Customer, Windows};
use crate::engine::event::Ts;
use crate::engine::rule::Check;
use crate::engine::store::Store;
use crate::engine::tier::Tier;
use crate::metrics;

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

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/customers/{id}", get(customer))
        .route("/alerts", get(alerts))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_text(State(s): State<ApiState>) -> Response {
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
    if s.ready.is_alive() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stalled: the engine loop made no progress within http.liveness_timeout\n",
        )
            .into_response()
    }
}

async fn readyz(State(s): State<ApiState>) -> Response {
    if s.ready.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: partitions not assigned, no broker reachable, or the pipeline stalled\n",
        )
            .into_response()
    }
}

/// One open alert episode.
#[derive(Debug, Serialize)]
struct ActiveAlert {
    alert_id: String,
    rule: &'static str,
    cause: Option<&'static str>,
    customer_id: String,
    tier: Tier,
    fired_at: Ts,
}

impl ActiveAlert {
    fn new(c: &Customer, check: Check, fired_at: Ts) -> Self {
        Self {
            alert_id: AlertId::new(&c.id, check, fired_at).to_string(),
            rule: check.rule().as_str(),
            cause: check.cause().map(|c| c.as_str()),
            customer_id: c.id.to_string(),
            tier: c.tier,
            fired_at,
        }
    }
}

/// The customer's live state as of the engine's watermark. The numbers
/// are [`Customer::signals`], the same the alerts carry (`frequency_90d`
/// and `rep_handoffs_180d` count the configured windows, whatever their
/// length).
#[derive(Debug, Serialize)]
struct CustomerView {
    customer_id: String,
    tier: Tier,
    as_of: Option<Ts>,
    first_seen: Ts,
    last_purchase: Option<Ts>,
    last_contact: Option<Ts>,
    #[serde(flatten)]
    signals: Signals,
    account_rep_departed: bool,
    active_alerts: Vec<ActiveAlert>,
    next_deadline: Option<Ts>,
}

async fn customer(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(c) = s.store.customer(&id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({"error": "unknown customer", "customer_id": id})),
        )
            .into_response();
    };
    let now = s.store.watermark();
    let at = now.unwrap_or(c.first_seen);
    let rep = c.account_rep.get();
    let active_alerts = Check::ALL
        .into_iter()
        .filter(|k| c.is_firing(k.bit()))
        .filter_map(|k| s.store.episode(&id, k).map(|t| ActiveAlert::new(&c, k, t)))
        .collect();
    let view = CustomerView {
        customer_id: c.id.to_string(),
        tier: c.tier,
        as_of: now,
        first_seen: c.first_seen,
        last_purchase: c.last_purchase.get(),
        last_contact: c.last_contact.get(),
        signals: c.signals(at, &s.windows, rep.and_then(|r| s.store.rep_id(r))),
        account_rep_departed: rep.is_some_and(|r| s.store.rep_departed(r)),
        active_alerts,
        next_deadline: c.pending.get(),
    };
    axum::Json(view).into_response()
}

#[derive(Debug, Deserialize)]
struct AlertQuery {
    status: Option<String>,
    tier: Option<Tier>,
    rule: Option<String>,
    limit: Option<usize>,
}

/// Currently active (firing) alerts, newest first; `status=resolved`
/// matches nothing since resolved alerts are no longer active.
async fn alerts(State(s): State<ApiState>, Query(q): Query<AlertQuery>) -> Response {
    if let Some(status) = q.status.as_deref()
        && status != "firing"
        && status != "resolved"
    {
        return (
            StatusCode::BAD_REQUEST,
            "status must be firing or resolved\n",
        )
            .into_response();
    }
    if let Some(rule) = q.rule.as_deref()
        && !crate::engine::rule::Rule::ALL
            .iter()
            .any(|r| r.as_str() == rule)
    {
        return (StatusCode::BAD_REQUEST, "unknown rule\n").into_response();
    }
    let mut list: Vec<ActiveAlert> = if q.status.as_deref() == Some("resolved") {
        Vec::new()
    } else {
        s.store
            .active_alerts()
            .into_iter()
            .filter(|e| q.tier.is_none_or(|t| e.customer.tier == t))
            .filter(|e| {
                q.rule
                    .as_deref()
                    .is_none_or(|r| e.check.rule().as_str() == r)
            })
            .map(|e| ActiveAlert::new(&e.customer, e.check, e.fired_at))
            .collect()
    };
    list.sort_by(|a, b| {
        b.fired_at
            .cmp(&a.fired_at)
            .then_with(|| a.customer_id.cmp(&b.customer_id))
    });
    list.truncate(q.limit.unwrap_or(1000));
    axum::Json(list).into_response()
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
