//! Partition state at rest: local snapshot files and the changelog record
//! format. Plain data in, plain data out; the Kafka side is `kafka::changelog`.

pub mod changelog;
pub mod rekeying;
pub mod snapshot;

/// Open options for a file that holds customer data (snapshots, dead
/// letters): created owner-only (0600), so other local users cannot read it.
pub fn owner_only() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}
