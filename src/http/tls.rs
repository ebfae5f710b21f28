//! TLS on the data listener (rustls through axum-server). The certificate
//! and key are reloaded on SIGHUP and when either file's modification time
//! changes (checked every [`WATCH_EVERY`]), so a renewed certificate is
//! served without a restart; a reload that fails keeps the old pair and is
//! logged.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;

/// How often the certificate files are checked for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// A loaded certificate and key, reloadable.
pub struct Tls {
    config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// Loads the PEM pair (a bad one is refused here, at start).
    pub async fn load(cert: PathBuf, key: PathBuf) -> std::io::Result<Self> {
        // Another part of the process may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = RustlsConfig::from_pem_file(&cert, &key)
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("TLS pair {} / {}: {e}", cert.display(), key.display()),
                )
            })?;
        Ok(Self { config, cert, key })
    }

    /// The server configuration to accept with.
    pub fn config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Reloads the pair on SIGHUP and on file change until aborted.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(reload(
            self.config.clone(),
            self.cert.clone(),
            self.key.clone(),
        ))
    }
}

fn modified(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

async fn reload(config: RustlsConfig, cert: PathBuf, key: PathBuf) {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = modified(&cert, &key);
    let mut every = tokio::time::interval(WATCH_EVERY);
    loop {
        let why = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = every.tick() => {
                let now = modified(&cert, &key);
                if now == seen {
                    continue;
                }
                seen = now;
                "file change"
            }
        };
        match config.reload_from_pem_file(&cert, &key).await {
            Ok(()) => tracing::info!(why, cert = %cert.display(), "TLS certificate reloaded"),
            Err(e) => {
                tracing::warn!(why, error = %e, "TLS certificate reload failed; serving the previous one")
            }
        }
    }
}
