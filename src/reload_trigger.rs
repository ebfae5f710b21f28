//! Why to reload: SIGHUP, or a watched file's modification time changing
//! (checked at a fixed interval, so a file replaced by a rename, as a
//! Kubernetes ConfigMap or Secret volume does, is noticed too). Shared by
//! the config reload and the TLS certificate reload.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Yields each time a reload is due.
pub struct Trigger {
    hangup: Option<Signal>,
    files: Vec<PathBuf>,
    seen: Vec<Option<SystemTime>>,
    every: tokio::time::Interval,
}

impl Trigger {
    /// Watches `files` every `every`, and SIGHUP (when a handler can be
    /// installed; otherwise file changes only, said once in the log).
    pub fn new(files: Vec<PathBuf>, every: Duration) -> Self {
        let hangup = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "no SIGHUP handler: reloads follow file changes only"))
            .ok();
        let seen = files.iter().map(|f| modified(f)).collect();
        Self {
            hangup,
            files,
            seen,
            every: tokio::time::interval(every),
        }
    }

    /// Waits for the next reason: `"SIGHUP"` or `"file change"`.
    pub async fn next(&mut self) -> &'static str {
        loop {
            tokio::select! {
                Some(()) = async {
                    match self.hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => return "SIGHUP",
                _ = self.every.tick() => {
                    let now: Vec<_> = self.files.iter().map(|f| modified(f)).collect();
                    if now != self.seen {
                        self.seen = now;
                        return "file change";
                    }
                }
            }
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
