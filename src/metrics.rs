//! Prometheus metrics: one [`Metrics`] value registered on a registry the
//! caller owns (no global registry), one method per happening. Label values
//! come from enums or from config, so every label set is closed.

use compact_str::CompactString;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use crate::engine::Engine;
use crate::engine::alert::Alert;
use crate::engine::event::{EventType, RejectReason};
use crate::engine::rule::Rule;
use crate::engine::tier::Tier;

/// Webhook delivery outcomes (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// An attempt failed and will be retried.
    Retried,
    /// Attempts are exhausted or the error is permanent: dead-lettered.
    Failed,
}

impl DeliveryOutcome {
    /// Every outcome.
    pub const ALL: [DeliveryOutcome; 3] = [Self::Delivered, Self::Retried, Self::Failed];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retried => "retried",
            Self::Failed => "failed",
        }
    }
}

/// Every metric churnwatch exports, registered on one registry (a clone
/// shares the series).
#[derive(Clone)]
pub struct Metrics {
    events: IntCounterVec,
    /// `events`' applied series by [`EventType`] (in `EventType::ALL`'s
    /// order), resolved once: a label lookup per event hashes and locks.
    applied: [IntCounter; EventType::ALL.len()],
    dead_letters: IntCounterVec,
    alerts: IntCounterVec,
    customers: IntGaugeVec,
    threshold: GaugeVec,
    threshold_version: IntGauge,
    threshold_partitions: IntGauge,
    summaries_refused: IntCounter,
    watermark: Gauge,
    apply_seconds: Histogram,
    alert_latency: Histogram,
    consumer_lag: IntGaugeVec,
    webhook_deliveries: IntCounterVec,
    webhook_queue: IntGaugeVec,
    late_events: IntCounter,
    held_events: IntGauge,
    encode_failures: IntCounterVec,
    produce_failures: IntCounterVec,
    tickets_forgotten: IntCounter,
    customers_forgotten: IntCounter,
    duplicates: IntCounterVec,
    unknown_segments: IntCounter,
    skipped: IntCounterVec,
    restores: IntCounterVec,
    rebalances: IntCounterVec,
    paused: IntGauge,
    owned: IntGauge,
    restore_seconds: Histogram,
    pauses: IntCounter,
    config_reloads: IntCounterVec,
}

impl Metrics {
    /// Registers every metric on `registry` and pre-creates the label
    /// values known up front, so dashboards see zeros rather than gaps.
    pub fn new(
        registry: &Registry,
        webhook_endpoints: &[String],
    ) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "churnwatch_events_total",
                "Input events by type and outcome (applied or rejected).",
            ),
            &["type", "outcome"],
        )?;
        let applied = EventType::ALL.map(|t| events.with_label_values(&[t.as_str(), "applied"]));
        let m = Self {
            events,
            applied,
            dead_letters: IntCounterVec::new(
                Opts::new("churnwatch_dead_letters_total", "Rejected inputs dead-lettered, by reason code."),
                &["reason"],
            )?,
            alerts: IntCounterVec::new(
                Opts::new("churnwatch_alerts_total", "Alerts emitted by rule, tier, status and segment."),
                &["rule", "tier", "status", "segment"],
            )?,
            customers: IntGaugeVec::new(
                Opts::new("churnwatch_customers", "Customers tracked, by segment and tier."),
                &["segment", "tier"],
            )?,
            threshold: GaugeVec::new(
                Opts::new(
                    "churnwatch_tier_threshold",
                    "Monetary needed for the tier in the segment (+Inf while nobody qualifies).",
                ),
                &["segment", "tier"],
            )?,
            threshold_version: IntGauge::new(
                "churnwatch_tier_threshold_version",
                "Version of the group-wide tier thresholds in force (grows with every partition's summary); 0 while ranking over this instance's customers.",
            )?,
            threshold_partitions: IntGauge::new(
                "churnwatch_tier_threshold_partitions",
                "Input partitions whose customers the tier thresholds in force were ranked over.",
            )?,
            summaries_refused: IntCounter::new(
                "churnwatch_tier_summaries_refused_total",
                "Records of kafka.tiers_topic refused as malformed (not taken into the group-wide thresholds).",
            )?,
            watermark: Gauge::new("churnwatch_watermark_timestamp_seconds", "Engine watermark as Unix time.")?,
            apply_seconds: Histogram::with_opts(
                HistogramOpts::new("churnwatch_event_apply_seconds", "Time to decode and apply one event.").buckets(
                    vec![1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3, 1e-2],
                ),
            )?,
            alert_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "churnwatch_alert_latency_seconds",
                    "From the triggering event's arrival (or the deadline's tick) to the alert acknowledged by the broker.",
                )
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("churnwatch_consumer_lag", "Messages behind the partition's high watermark."),
                &["topic", "partition"],
            )?,
            webhook_deliveries: IntCounterVec::new(
                Opts::new("churnwatch_webhook_deliveries_total", "Webhook delivery attempts by endpoint and outcome."),
                &["endpoint", "outcome"],
            )?,
            webhook_queue: IntGaugeVec::new(
                Opts::new("churnwatch_webhook_queue_depth", "Alerts on the alert topic not yet settled by the endpoint (its consumer group's lag)."),
                &["endpoint"],
            )?,
            config_reloads: IntCounterVec::new(
                Opts::new("churnwatch_config_reloads_total", "Config reloads (SIGHUP or file change) by outcome: applied, unchanged, refused."),
                &["outcome"],
            )?,
            late_events: IntCounter::new("churnwatch_late_events_total", "Events older than the watermark, applied anyway.")?,
            held_events: IntGauge::new("churnwatch_held_events", "Events held until the watermark reaches them.")?,
            encode_failures: IntCounterVec::new(
                Opts::new("churnwatch_encode_failures_total", "Records that could not be encoded and were not produced, by record kind."),
                &["record"],
            )?,
            produce_failures: IntCounterVec::new(
                Opts::new(
                    "churnwatch_produce_failures_total",
                    "Records the producer refused for good (too_large, unknown_topic, unauthorized, invalid_record) and gave up on, by topic.",
                ),
                &["topic", "reason"],
            )?,
            customers_forgotten: IntCounter::new(
                "churnwatch_customers_forgotten_total",
                "Idle customers without spend forgotten under engine.forget_after.",
            )?,
            unknown_segments: IntCounter::new(
                "churnwatch_unknown_segment_total",
                "Events naming a segment the config does not declare; their customers went to the default segment.",
            )?,
            duplicates: IntCounterVec::new(
                Opts::new(
                    "churnwatch_duplicate_events_total",
                    "Events skipped as redeliveries: an event_id the customer had within engine.dedup_window, by type.",
                ),
                &["type"],
            )?,
            skipped: IntCounterVec::new(
                Opts::new(
                    "churnwatch_skipped_records_total",
                    "Records skipped by design, by input topic and cause (filtered: failed `when`; deleted: Debezium delete or tombstone; already_republished: re-keyed before a restart).",
                ),
                &["input", "cause"],
            )?,
            paused: IntGauge::new(
                "churnwatch_paused_partitions",
                "Input partitions paused because engine.max_held_events are held (back-pressure).",
            )?,
            owned: IntGauge::new(
                "churnwatch_partitions_owned",
                "Input partition numbers this instance owns (and restored or is restoring) in the consumer group.",
            )?,
            restore_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "churnwatch_restore_seconds",
                    "Time an assignment took to restore its partitions' state (snapshots, changelog) before their input is read.",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]),
            )?,
            pauses: IntCounter::new(
                "churnwatch_backpressure_pauses_total",
                "Times the input was paused because engine.max_held_events were held.",
            )?,
            restores: IntCounterVec::new(
                Opts::new(
                    "churnwatch_restores_total",
                    "Partitions restored at assignment, by source (snapshot, changelog, or rebuild from the input).",
                ),
                &["source"],
            )?,
            rebalances: IntCounterVec::new(
                Opts::new(
                    "churnwatch_rebalances_total",
                    "Group rebalances this member took part in, by kind: assigned, revoked (handed over) or lost (session or poll interval expired).",
                ),
                &["kind"],
            )?,
            tickets_forgotten: IntCounter::new(
                "churnwatch_tickets_forgotten_total",
                "Open tickets forgotten because their customer already had engine.max_open_tickets.",
            )?,
        };
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.alerts.clone()))?;
        registry.register(Box::new(m.customers.clone()))?;
        registry.register(Box::new(m.threshold.clone()))?;
        registry.register(Box::new(m.threshold_version.clone()))?;
        registry.register(Box::new(m.threshold_partitions.clone()))?;
        registry.register(Box::new(m.summaries_refused.clone()))?;
        registry.register(Box::new(m.watermark.clone()))?;
        registry.register(Box::new(m.apply_seconds.clone()))?;
        registry.register(Box::new(m.alert_latency.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.webhook_deliveries.clone()))?;
        registry.register(Box::new(m.webhook_queue.clone()))?;
        registry.register(Box::new(m.late_events.clone()))?;
        registry.register(Box::new(m.held_events.clone()))?;
        registry.register(Box::new(m.encode_failures.clone()))?;
        registry.register(Box::new(m.produce_failures.clone()))?;
        registry.register(Box::new(m.tickets_forgotten.clone()))?;
        registry.register(Box::new(m.restores.clone()))?;
        registry.register(Box::new(m.rebalances.clone()))?;
        for kind in ["assigned", "revoked", "lost"] {
            m.rebalances.with_label_values(&[kind]);
        }
        registry.register(Box::new(m.customers_forgotten.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.unknown_segments.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        for t in EventType::ALL {
            m.duplicates.with_label_values(&[t.as_str()]);
        }
        registry.register(Box::new(m.config_reloads.clone()))?;
        for outcome in ["applied", "unchanged", "refused"] {
            m.config_reloads.with_label_values(&[outcome]);
        }
        registry.register(Box::new(m.paused.clone()))?;
        registry.register(Box::new(m.owned.clone()))?;
        registry.register(Box::new(m.restore_seconds.clone()))?;
        registry.register(Box::new(m.pauses.clone()))?;
        for source in ["snapshot", "changelog", "rebuild"] {
            m.restores.with_label_values(&[source]);
        }
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for t in EventType::ALL {
            for outcome in ["applied", "rejected"] {
                m.events.with_label_values(&[t.as_str(), outcome]);
            }
        }
        for &code in RejectReason::CODES {
            m.dead_letters.with_label_values(&[code]);
        }
        for kind in ["alert", "changelog"] {
            m.encode_failures.with_label_values(&[kind]);
        }
        for endpoint in webhook_endpoints {
            m.webhook_endpoint(endpoint);
        }
        Ok(m)
    }

    /// Shows the series of every segment (by index order) before the
    /// first event: customers and alerts at zero, thresholds at +Inf.
    pub fn segments(&self, names: &[CompactString]) {
        for segment in names {
            let segment = segment.as_str();
            for t in Tier::ALL {
                self.customers.with_label_values(&[segment, t.as_str()]);
            }
            for t in ["A", "B"] {
                self.threshold
                    .with_label_values(&[segment, t])
                    .set(f64::INFINITY);
            }
            for rule in Rule::ALL {
                for tier in Tier::ALL {
                    for status in ["firing", "resolved"] {
                        self.alerts.with_label_values(&[
                            rule.as_str(),
                            tier.as_str(),
                            status,
                            segment,
                        ]);
                    }
                }
            }
        }
    }

    /// Shows an endpoint's series at zero before its first delivery.
    pub fn webhook_endpoint(&self, endpoint: &str) {
        for o in DeliveryOutcome::ALL {
            self.webhook_deliveries
                .with_label_values(&[endpoint, o.as_str()]);
        }
        self.webhook_queue.with_label_values(&[endpoint]);
    }

    /// `count` events of type `t` applied, each within `seconds` of its
    /// arrival (decode and apply).
    pub fn events_applied(&self, t: EventType, count: u64, seconds: f64) {
        self.applied[t as usize].inc_by(count);
        for _ in 0..count {
            self.apply_seconds.observe(seconds);
        }
    }

    /// A rejected input; `t` is `None` when the type could not be read.
    pub fn event_rejected(&self, t: Option<EventType>, reason: &RejectReason) {
        let t = t.map_or("unknown", EventType::as_str);
        self.events.with_label_values(&[t, "rejected"]).inc();
        self.dead_letters.with_label_values(&[reason.code()]).inc();
    }

    /// A record of `input` its mapping skipped.
    pub fn record_skipped(&self, input: &str, cause: &str) {
        self.skipped.with_label_values(&[input, cause]).inc();
    }

    /// An alert emitted.
    pub fn alert_emitted(&self, alert: &Alert) {
        self.alerts
            .with_label_values(&[
                alert.rule().as_str(),
                alert.tier.as_str(),
                alert.status.as_str(),
                alert.segment.as_str(),
            ])
            .inc();
    }

    /// A record of `kind` (`alert`, `changelog`) could not be encoded.
    pub fn encode_failed(&self, kind: &'static str) {
        self.encode_failures.with_label_values(&[kind]).inc();
    }

    /// The broker acknowledged an alert `seconds` after the engine could
    /// first have known it.
    pub fn alert_acknowledged(&self, seconds: f64) {
        self.alert_latency.observe(seconds);
    }

    /// What the tier thresholds in force were ranked over.
    pub fn ranked_over(&self, r: crate::engine::store::RankedOver) {
        self.threshold_version
            .set(i64::try_from(r.version).unwrap_or(i64::MAX));
        self.threshold_partitions.set(r.partitions as i64);
    }

    /// A tier summary record was refused.
    pub fn summary_refused(&self) {
        self.summaries_refused.inc();
    }

    /// Engine-wide gauges, refreshed on each tick.
    pub fn engine_state(&self, engine: &Engine, held: usize) {
        let (watermark, stats) = (engine.watermark(), engine.stats());
        for (i, segment) in engine.segment_names().iter().enumerate() {
            let (counts, thresholds) = (engine.tier_counts(i as u8), engine.thresholds(i as u8));
            for t in Tier::ALL {
                self.customers
                    .with_label_values(&[segment.as_str(), t.as_str()])
                    .set(counts[t.index()] as i64);
            }
            self.threshold
                .with_label_values(&[segment.as_str(), "A"])
                .set(thresholds.a);
            self.threshold
                .with_label_values(&[segment.as_str(), "B"])
                .set(thresholds.b);
        }
        catch_up(&self.unknown_segments, stats.unknown_segments);
        if let Some(w) = watermark {
            self.watermark.set(w.0 as f64 / 1000.0);
        }
        catch_up(&self.late_events, stats.late_events);
        catch_up(&self.tickets_forgotten, stats.tickets_forgotten);
        catch_up(&self.customers_forgotten, stats.customers_forgotten);
        for t in EventType::ALL {
            catch_up(
                &self.duplicates.with_label_values(&[t.as_str()]),
                stats.duplicates[t as usize],
            );
        }
        self.held_events.set(held as i64);
    }

    /// Input partitions paused for back-pressure now (0: none).
    pub fn paused(&self, partitions: usize) {
        if partitions > 0 {
            self.pauses.inc();
        }
        self.paused.set(partitions as i64);
    }

    /// A rebalance of `kind` (assigned, revoked, lost).
    pub fn rebalanced(&self, kind: &str) {
        self.rebalances.with_label_values(&[kind]).inc();
    }

    /// A partition restored at assignment from `source`.
    pub fn restored(&self, source: &str) {
        self.restores.with_label_values(&[source]).inc();
    }

    /// A record the producer refused for good.
    pub fn produce_failed(&self, topic: &str, reason: &str) {
        self.produce_failures
            .with_label_values(&[topic, reason])
            .inc();
    }

    /// Partition numbers owned now, after an assignment or a revoke.
    pub fn partitions_owned(&self, partitions: usize) {
        self.owned.set(partitions as i64);
    }

    /// How long an assignment's restore took.
    pub fn restore_took(&self, took: std::time::Duration) {
        self.restore_seconds.observe(took.as_secs_f64());
    }

    /// A revoked partition's lag is another member's to report: its series
    /// goes, so a sum over the group counts each partition once.
    pub fn forget_lag(&self, topic: &str, partition: i32) {
        // Absent when the partition was revoked before any batch reported.
        let _ = self
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    /// A partition's lag.
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag);
    }

    /// A config reload's outcome (`applied`, `unchanged`, `refused`).
    pub fn config_reload(&self, outcome: &str) {
        self.config_reloads.with_label_values(&[outcome]).inc();
    }

    /// A webhook attempt's outcome.
    pub fn webhook_delivery(&self, endpoint: &str, outcome: DeliveryOutcome) {
        self.webhook_deliveries
            .with_label_values(&[endpoint, outcome.as_str()])
            .inc();
    }

    /// An endpoint's queue depth.
    pub fn webhook_queue_depth(&self, endpoint: &str, depth: usize) {
        self.webhook_queue
            .with_label_values(&[endpoint])
            .set(depth as i64);
    }
}

/// The risk score's distribution: customers per tier and band of 20
/// points, `churnwatch_customers_by_risk{tier, band}`. Computed over the
/// store when scraped, at most every `every` (a pass costs about 100 ns a
/// customer, under each shard's read lock in turn), not on the hot path.
pub struct RiskDistribution {
    gauge: IntGaugeVec,
    every: std::time::Duration,
    last: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// The bands of `churnwatch_customers_by_risk`.
pub const RISK_BANDS: [&str; 5] = ["0-19", "20-39", "40-59", "60-79", "80-100"];

impl RiskDistribution {
    /// Registers the gauge on `registry`.
    pub fn new(registry: &Registry, every: std::time::Duration) -> Result<Self, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "churnwatch_customers_by_risk",
                "Customers by tier and churn-risk band (20 points each), as of the last scrape pass.",
            ),
            &["tier", "band"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Self {
            gauge,
            every,
            last: parking_lot::Mutex::new(None),
        })
    }

    /// Recounts when the last count is older than `every`; `score` gives a
    /// customer's tier and risk.
    pub fn refresh(&self, count: impl FnOnce(&mut dyn FnMut(Tier, u8))) {
        let mut last = self.last.lock();
        if last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        *last = Some(std::time::Instant::now());
        let mut bands = [[0i64; 5]; 3];
        count(&mut |tier, risk| bands[tier.index()][usize::from(risk / 20).min(4)] += 1);
        for t in Tier::ALL {
            for (b, band) in RISK_BANDS.iter().enumerate() {
                self.gauge
                    .with_label_values(&[t.as_str(), band])
                    .set(bands[t.index()][b]);
            }
        }
    }
}

/// `churnwatch_alerts_closed_total{rule, tier, reason}`, registered on
/// `registry`: alerts closed in the inbox on this instance.
pub fn closed_alerts(registry: &Registry) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(
        Opts::new(
            "churnwatch_alerts_closed_total",
            "Alerts closed in the inbox, by rule, tier and close reason (won_back, false_alarm, lost, other).",
        ),
        &["rule", "tier", "reason"],
    )?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// `churnwatch_inbox_untrusted_announcements_total`, registered on
/// `registry`: records of the instances topic naming an address outside
/// `http.peers` (forged, or a peer missing from the config).
pub fn untrusted_announcements(registry: &Registry) -> Result<IntCounter, prometheus::Error> {
    let c = IntCounter::new(
        "churnwatch_inbox_untrusted_announcements_total",
        "Instance announcements ignored because they name an address outside http.peers.",
    )?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Moves a counter up to the engine's running total.
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let encoder = prometheus::TextEncoder::new();
    encoder
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}
