//! TLS on the data listener (rustls through axum-server). The certificate
//! and key are reloaded on SIGHUP and when either file's modification time
//! changes (checked every [`WATCH_EVERY`]), so a renewed certificate is
//! served without a restart; a reload that fails keeps the old pair and is
//! logged.

use std::path::PathBuf;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use crate::reload_trigger::Trigger;

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

async fn reload(config: RustlsConfig, cert: PathBuf, key: PathBuf) {
    let mut trigger = Trigger::new(vec![cert.clone(), key.clone()], WATCH_EVERY);
    loop {
        let why = trigger.next().await;
        match config.reload_from_pem_file(&cert, &key).await {
            Ok(()) => tracing::info!(why, cert = %cert.display(), "TLS certificate reloaded"),
            Err(e) => {
                tracing::warn!(why, error = %e, "TLS certificate reload failed; serving the previous one")
            }
        }
    }
}
