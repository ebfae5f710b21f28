//! churnwatch: a streaming churn-alert engine.
//!
//! # Layout
//! - [`engine`]: the pure core (events and time in, alerts out; no I/O, no clock).
//!   - `event`: event types, JSON decoding at the edge, reject reasons.
//!   - `customer`: per-customer RFM state in fixed memory.
//!   - `window`: bucketed rolling counters.
//!   - `store`: the sharded customer store handle.
//!   - `tier`: dynamic ABC thresholds.
//!   - `rep`: the rep roster.
//!   - `rule`: rules, per-tier limits, conditions.
//!   - `alert`: alerts, ids, JSON.
//!   - `watermark`: engine time, due timers, reorder buffer.
//! - [`config`]: the config tree, defaults and validation.
//! - [`replay`]: runs the engine over JSON-lines files in event time.
//! - [`service`]: `run`, the engine inside the Kafka adapters.
//! - [`generate`]: the deterministic synthetic population.
//! - [`demo`]: the pipeline on rdkafka's in-process mock cluster.
//! - [`metrics`]: Prometheus metrics on an injected registry.
//! - [`http`]: the read-only HTTP API.
//! - [`webhook`]: signed callbacks with per-endpoint queues and retries.
//! - [`snapshot`]: partition snapshot files (atomic, checksummed, versioned).
//! - [`kafka`]: source (group consumer, roster reader), sinks, offset and
//!   partition-progress bookkeeping.

pub mod config;
pub mod demo;
pub mod engine;
pub mod generate;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod state;
pub mod webhook;
