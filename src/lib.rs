#![warn(missing_docs)]
//! churnwatch: a streaming churn-alert engine.
//!
//! # Layout
//! Data flows one way: source → engine → sinks. [`engine`] imports nothing
//! from the rest of the crate; [`config`] builds its plain settings.
//! - [`engine`]: the pure core (events and time in, alerts out; no I/O, no clock).
//!   - `settings`: the plain data the engine runs on.
//!   - `event`: event types, time, reject reasons.
//!   - `native`: churnwatch's own JSON event format, decoded at the edge.
//!   - `money`: currencies and their conversion into the base currency.
//!   - `customer`: per-customer RFM state in fixed memory, and its signals.
//!   - `window`: bucketed rolling counters.
//!   - `ids`: the compact id index of customers and reps.
//!   - `store`: the sharded customer store handle (records, episodes, roster).
//!   - `tier`: dynamic ABC thresholds.
//!   - `rep`: the rep roster and each rep's customers.
//!   - `rule`: rules, per-tier limits, the pure evaluation of a rule.
//!   - `risk`: the churn-risk score, its factors and reasons.
//!   - `bgnbd`: the BG/NBD buying model the score's `lapse` factor uses.
//!   - `reconcile`: applies evaluations (firing/resolved, episodes, timers).
//!   - `partition`: a partition's state out and in (snapshots, restore,
//!     eviction, forgotten customers).
//!   - `alert`: alerts, ids, JSON.
//!   - `watermark`: engine time, due timers, reorder buffer.
//! - [`config`]: the config tree by section, defaults, validation, engine settings.
//! - [`pipeline`]: `run`, the engine inside the Kafka adapters: wiring and
//!   phases; `step` (the engine step), `partitions` (restore, snapshot
//!   rounds, revocation), `restore` (the pure restore choice), `recovery`
//!   (tails and rebuilds still to re-read), `acker` (ordered confirmations,
//!   offsets, alert latency), `reload` (what a config reload may change, all
//!   or nothing).
//! - [`kafka`]: `client` (the one client builder), `source` (group consumer,
//!   roster reader, start-up checks), `rebalance` (rebalance callbacks and
//!   held revokes), `sink` (producers), `changelog`
//!   (reading the state changelog), `topics` (creating and checking
//!   churnwatch's own topics), `republished` (the repartition topic read
//!   back), `offsets` and `progress` (pure bookkeeping).
//! - [`state`]: state at rest: `snapshot` files, the `changelog` record
//!   format, and the re-keying's progress file (`rekeying`).
//! - [`replay`]: runs the engine over JSON-lines files in event time.
//! - [`fit`]: BG/NBD parameters by maximum likelihood.
//! - [`inbox`]: the retention inbox: every alert with its lifecycle
//!   (`lifecycle`, pure), kept from the alert and actions topics (`feed`),
//!   people's actions written to the actions topic (`actions`).
//! - [`evaluate`]: alerts and scores against what happened after a cut.
//! - [`generate`]: the deterministic synthetic population.
//! - [`demo`]: the pipeline on rdkafka's in-process mock cluster.
//! - [`metrics`]: Prometheus metrics on an injected registry.
//! - [`log`]: stderr logs as text or JSON lines (`[log]`).
//! - [`reload_trigger`]: SIGHUP or a watched file changing (config and TLS
//!   reloads; what a config reload changes is `pipeline::reload`).
//! - [`http`]: the read-only HTTP API.
//! - [`webhook`]: signed callbacks with per-endpoint queues and retries.

pub mod check;
pub mod config;
pub mod demo;
pub mod engine;
pub mod evaluate;
pub mod fit;
pub mod generate;
pub mod http;
pub mod inbox;
pub mod kafka;
pub mod log;
pub mod mapping;
pub mod metrics;
pub mod pipeline;
pub mod reload_trigger;
pub mod replay;
pub mod state;
pub mod webhook;
