//! The engine step: decode → apply → hand alerts to the sinks → note which
//! input offsets the step makes safe. One task owns it (so the engine needs
//! no lock); the acker confirms what it produced.

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;

use super::Report;
use super::acker::Ack;
use super::decoders::Decoders;
use super::recovery::{Apply, Recovery};
use crate::config::RunClock;
use crate::engine::alert::{Alert, Trigger};
use crate::engine::event::{EventType, RejectReason, Ts};
use crate::engine::watermark::Clock;
use crate::engine::{Applied, Engine};
use crate::kafka::offsets::{PendingOffsets, TopicPartition};
use crate::kafka::progress::Progress;
use crate::kafka::sink::{Consumed, Outgoing, Sink};
use crate::kafka::source::InputConsumer;
use crate::mapping::Mapped;
use crate::metrics::Metrics;

/// Engine partition of roster events (never assigned, never evicted).
const ROSTER_PARTITION: u16 = u16::MAX;

/// Which consumer a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An input partition owned through the group.
    Input,
    /// The roster topic, read in full by every instance.
    Roster,
}

impl Origin {
    /// Refuses an event its topic does not carry: the roster topic carries
    /// `rep` events only, input topics customer events only.
    fn carries(self, t: EventType) -> Result<(), RejectReason> {
        match (self, t == EventType::Rep) {
            (Origin::Roster, true) | (Origin::Input, false) => Ok(()),
            _ => Err(RejectReason::WrongTopic { kind: t.as_str() }),
        }
    }
}

/// Where alerts and dead letters go.
pub struct Outputs {
    /// Alert and dead-letter producer.
    pub sink: Sink,
    /// Shared with the HTTP API and the acker.
    pub metrics: Metrics,
    /// How each topic's records are read.
    pub decoders: Decoders,
}

/// How `run` moves engine time.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `engine.clock`.
    pub clock: RunClock,
    /// `engine.idle_timeout` (event clock).
    pub idle: Duration,
    /// `engine.max_held_events`.
    pub max_held: usize,
}

/// The engine and what one step produces before it goes to the acker.
pub struct Step {
    /// The pure core.
    pub engine: Engine,
    timing: Timing,
    out: Outputs,
    alerts: Vec<Alert>,
    records: Vec<Outgoing>,
    offsets: PendingOffsets,
    /// Scratch of [`Step::input`]: the batch decoded.
    decoded: Vec<Result<Mapped, RejectReason>>,
    /// Per-partition event-time progress (event clock).
    pub progress: Progress,
    /// Tails and rebuilds still to re-read.
    pub recovery: Recovery,
    /// Input partitions paused because too many events are held.
    paused: Vec<TopicPartition>,
    /// Totals of the run.
    pub report: Report,
    /// Reloaded rule limits, taken at the next tick.
    pub reloads: Option<tokio::sync::mpsc::Receiver<super::reload::Limits>>,
}

impl Step {
    /// A step around `engine`.
    pub fn new(engine: Engine, timing: Timing, out: Outputs) -> Self {
        Self {
            engine,
            timing,
            out,
            alerts: Vec::new(),
            records: Vec::new(),
            offsets: PendingOffsets::default(),
            decoded: Vec::new(),
            progress: Progress::default(),
            recovery: Recovery::default(),
            paused: Vec::new(),
            report: Report::default(),
            reloads: None,
        }
    }

    /// The metrics every part reports to.
    pub fn metrics(&self) -> &Metrics {
        &self.out.metrics
    }

    /// Applies a batch of consumed messages, in order; `arrived` is when
    /// the batch reached the process (the start of its alerts' latency).
    /// The batch is decoded first and its customers prefetched, as replay
    /// does, so their cache misses overlap instead of stalling one by one.
    pub async fn input(&mut self, batch: &[BorrowedMessage<'_>], origin: Origin, arrived: Instant) {
        let mut decoded = std::mem::take(&mut self.decoded);
        let limits = self.engine.decode_limits();
        decoded.extend(batch.iter().map(|m| self.out.decoders.decode(m, limits)));
        self.engine.prefetch(decoded.iter().filter_map(|d| match d {
            Ok(Mapped::Event(e)) => Some(e),
            _ => None,
        }));
        let mut applied = [0u64; EventType::ALL.len()];
        for (m, event) in batch.iter().zip(decoded.drain(..)) {
            if let Some(kind) = self.message(m, event, origin, arrived).await {
                applied[kind as usize] += 1;
            }
        }
        self.decoded = decoded;
        // One clock read for the batch: each event was applied by now.
        let seconds = arrived.elapsed().as_secs_f64();
        for (kind, count) in EventType::ALL.into_iter().zip(applied) {
            if count > 0 {
                self.out.metrics.events_applied(kind, count, seconds);
            }
        }
    }

    /// Applies one decoded message; returns its type if it was applied.
    async fn message(
        &mut self,
        m: &BorrowedMessage<'_>,
        decoded: Result<Mapped, RejectReason>,
        origin: Origin,
        arrived: Instant,
    ) -> Option<EventType> {
        // Roster events belong to no input partition: a rebalance must never
        // drop them (the roster is read once, from the beginning).
        // Resolved once: each `topic()` is a length scan and a UTF-8 check.
        let topic = m.topic();
        let partition = match origin {
            Origin::Roster => ROSTER_PARTITION,
            Origin::Input => u16::try_from(m.partition()).unwrap_or(ROSTER_PARTITION),
        };
        let apply = match origin {
            Origin::Input if !self.recovery.is_idle() => {
                self.recovery
                    .message((topic, m.partition()), partition, m.offset())
            }
            _ => Apply::Live,
        };
        let mut ts = None;
        let mut kind = None;
        let outcome = decoded.and_then(|mapped| match mapped {
            Mapped::Skipped(cause) => {
                // (The repartition topic carries events only: a skip is the
                // topic's own.)
                if apply != Apply::Quiet {
                    self.out.metrics.record_skipped(topic, cause.as_str());
                }
                Ok(None)
            }
            Mapped::Event(ev) => {
                ts = Some(ev.ts);
                kind = Some(ev.event_type());
                origin.carries(ev.event_type())?;
                self.engine
                    .apply(ev, partition, &mut self.alerts)
                    .map(Some)
                    .map_err(|r| self.out.decoders.locate(m, r))
            }
        });
        let mut applied = None;
        let held_until = match (outcome, kind) {
            (Ok(Some(outcome)), Some(kind)) => {
                self.report.applied += 1;
                applied = Some(kind);
                ts.filter(|_| outcome == Applied::Held)
            }
            (Ok(_), _) => None,
            // Dead-lettered before the rebuilt commit already.
            (Err(_), _) if apply == Apply::Quiet => None,
            (Err(reason), kind) => {
                ts = None;
                self.out.metrics.event_rejected(kind, &reason);
                self.report.rejected += 1;
                tracing::debug!(
                    topic,
                    partition = m.partition(),
                    offset = m.offset(),
                    reason = reason.code(),
                    "rejected"
                );
                let out = self.out.sink.dead_letter(&Consumed::of(m), &reason).await;
                self.records.push(out);
                None
            }
        };
        self.progress
            .observe((topic, m.partition()), m.offset(), ts, arrived);
        match (origin, apply, ts) {
            (Origin::Input, Apply::Live, _) => {
                self.offsets
                    .push(topic, m.partition(), m.offset(), held_until)
            }
            (_, Apply::Quiet, Some(ts)) => self.recovery.quiet_event(partition, ts),
            _ => {}
        }
        if !self.alerts.is_empty() {
            self.flush_alerts(arrived).await;
        }
        applied
    }

    /// Ranks with the group's thresholds, or (`None`) over the engine's own
    /// customers; customers it moves alert with the next flush.
    pub fn rank_with(
        &mut self,
        given: Option<&std::collections::BTreeMap<String, crate::engine::tier::Thresholds>>,
    ) {
        self.engine.rank_with(given, &mut self.alerts);
    }

    /// Moves engine time: the wall clock once caught up, else (and always
    /// under the event clock) the minimum over partitions.
    pub async fn tick(&mut self, consumer: &InputConsumer, roster: &InputConsumer) {
        while let Some(l) = self.reloads.as_mut().and_then(|r| r.try_recv().ok()) {
            self.engine
                .set_limits(&l.segments, &l.risk, &mut self.alerts);
        }
        let now_wall = Ts(chrono::Utc::now().timestamp_millis());
        let no_lag: Vec<TopicPartition> = self
            .recovery
            .tails()
            .filter(|tp| consumer.context().lag(tp) == Some(0))
            .cloned()
            .collect();
        for tp in no_lag {
            self.recovery.caught_up(&tp);
        }
        let caught_up = !self.recovery.catching_up() && self.progress.has_input();
        match self.timing.clock {
            // Under the wall clock, `run` starts on event time (as under the
            // event clock) until its partitions are assigned and every tail
            // or backlog is applied, so old input is judged against its own
            // time, identically on every restart; then wall time.
            RunClock::Wall if caught_up => {
                // The first advance to now still runs on event time (held
                // events, overdue deadlines), so what it emits is what any
                // restart emits; only then does wall time take over.
                self.engine.advance_to(now_wall, &mut self.alerts);
                if self.engine.clock() != Clock::Wall {
                    tracing::info!("caught up: engine time follows the wall clock from now");
                    self.engine.set_clock(Clock::Wall);
                }
            }
            RunClock::Wall | RunClock::Event => self.event_time(consumer, roster, now_wall),
        }
        let e = &self.engine;
        self.out.metrics.engine_state(e, e.held_events());
        // Statistics taken before a revoke still list the partition; only
        // its new owner reports it from then on.
        for ((topic, partition), lag) in consumer.context().lags() {
            if self.progress.tracks((&topic, partition)) {
                self.out.metrics.consumer_lag(&topic, partition, lag);
            }
        }
        self.flush_alerts(Instant::now()).await;
    }

    /// Moves engine time to the minimum over partitions of their event
    /// time (idle, caught-up partitions skipped).
    fn event_time(&mut self, consumer: &InputConsumer, roster: &InputConsumer, now_wall: Ts) {
        self.engine.set_horizon(now_wall);
        let now = Instant::now();
        for tp in self.progress.idle(now, self.timing.idle) {
            // A paused partition is silent, not caught up: its statistics
            // stop at its last fetch. Nor is one being read again for a
            // rebuild: until its seek takes effect they describe the
            // position before it (CI of 6040e56: the watermark left the
            // rebuilt partitions behind and their events came in late).
            if self.paused.contains(&tp) || self.recovery.rereading((&tp.0, tp.1)) {
                continue;
            }
            let ctx = [consumer.context(), roster.context()];
            if let Some(high) = ctx.iter().find_map(|c| c.high_watermark(&tp)) {
                self.progress.high_watermark(&tp, high);
            }
            if ctx.iter().find_map(|c| c.lag(&tp)) == Some(0) {
                self.progress.caught_up(&tp);
            }
        }
        if let Some(w) = self.progress.watermark(now, self.timing.idle) {
            self.engine.advance_to(w, &mut self.alerts);
        }
    }

    /// Hands this step's alerts to the alert topic (webhook endpoints
    /// consume it from there). `noticed` is when the engine could first have known: the triggering
    /// message's arrival, or the tick; under the wall clock a deadline's
    /// latency counts from the deadline itself.
    async fn flush_alerts(&mut self, noticed: Instant) {
        let wall = chrono::Utc::now().timestamp_millis();
        for alert in std::mem::take(&mut self.alerts) {
            if !self.recovery.is_idle() && self.recovery.hold_back(&alert) {
                continue;
            }
            self.report.alerts += 1;
            self.out.metrics.alert_emitted(&alert);
            let body = match serde_json::to_vec(&alert) {
                Ok(b) => b,
                Err(e) => {
                    // Never publish an empty body: count, log, and go on.
                    self.out.metrics.encode_failed("alert");
                    tracing::error!(alert_id = %alert.alert_id, error = %e, "alert not encodable; not published");
                    continue;
                }
            };
            let overdue = match (self.timing.clock, alert.trigger) {
                (RunClock::Wall, Trigger::Deadline) => {
                    Duration::from_millis(u64::try_from(wall - alert.at.0).unwrap_or(0))
                }
                _ => Duration::ZERO,
            };
            let since = noticed.checked_sub(overdue).unwrap_or(noticed);
            let out = self.out.sink.alert(&alert, &body, since).await;
            self.records.push(out);
        }
    }

    /// What this step produced and the input offsets the watermark
    /// released (highest per partition). `store` false: the offsets are
    /// only returned (snapshots store them once a round covers them).
    pub fn take_ack(&mut self, store: bool) -> (Ack, Vec<(TopicPartition, i64)>) {
        let released = self.offsets.release(self.engine.watermark());
        let ack = Ack::Step {
            records: std::mem::take(&mut self.records),
            offsets: if store { released.clone() } else { Vec::new() },
        };
        (ack, released)
    }

    /// Back-pressure on held events: past `engine.max_held_events`, pauses
    /// the input partitions ahead of engine time, so the ones behind it
    /// (which hold it back) get the consumer to themselves and the held
    /// events drain. Resumes them once half have drained, or as soon as a
    /// paused partition is the one holding engine time back. Never pauses
    /// every partition with data: then nothing behind could catch up.
    pub fn back_pressure(&mut self, consumer: &InputConsumer) {
        let held = self.engine.held_events();
        let max = self.timing.max_held;
        let w = self.engine.watermark();
        if self.paused.is_empty() {
            if held <= max {
                return;
            }
            let ahead = self.progress.ahead_of(w);
            let with_data = self.progress.ahead_of(None).len();
            if ahead.is_empty()
                || ahead.len() == with_data
                || consumer.pause(&list(&ahead)).is_err()
            {
                return;
            }
            tracing::info!(held, partitions = ?ahead, "too many held events: pausing the partitions ahead of engine time");
            self.out.metrics.paused(ahead.len());
            self.paused = ahead;
            return;
        }
        let ahead = self.progress.ahead_of(w);
        if held <= max / 2 || self.paused.iter().any(|tp| !ahead.contains(tp)) {
            // A partition revoked meanwhile is refused here; nothing to undo.
            let _ = consumer.resume(&list(&self.paused));
            tracing::info!(held, "resuming the paused partitions");
            self.paused.clear();
            self.out.metrics.paused(0);
        }
    }

    /// Input partitions paused for back-pressure.
    pub fn paused(&self) -> &[TopicPartition] {
        &self.paused
    }

    /// Forgets a revoked partition's pending offsets, progress and recovery.
    pub fn revoke(&mut self, tp: &TopicPartition) {
        self.out.metrics.forget_lag(&tp.0, tp.1);
        self.paused.retain(|p| p != tp);
        self.offsets.revoke(tp);
        self.progress.revoke(tp);
        self.recovery
            .revoke(tp, u16::try_from(tp.1).unwrap_or(ROSTER_PARTITION));
    }
}

/// The topic-partitions as a librdkafka list.
fn list(tps: &[TopicPartition]) -> rdkafka::TopicPartitionList {
    let mut l = rdkafka::TopicPartitionList::new();
    for (t, p) in tps {
        l.add_partition(t, *p);
    }
    l
}
