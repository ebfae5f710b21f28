//! Partition state at rest: local snapshot files and the changelog record
//! format. Plain data in, plain data out; the Kafka side is `kafka::changelog`.

pub mod changelog;
pub mod snapshot;
