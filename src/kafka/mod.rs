//! Kafka adapters: the source (group consumer, roster reader), the sinks
//! (alert and dead-letter producers), and the pure bookkeeping between them.

pub mod changelog;
pub mod check;
pub mod client;
pub mod offsets;
pub mod partition_map;
pub mod progress;
pub mod rebalance;
pub mod republished;
pub mod sink;
pub mod source;
pub mod topics;
pub mod watermarks;
