//! tokenbot: keeps Indian brokers' daily access tokens fresh for many users.
//!
//! The daemon is a library: [`run`] serves a [`config::Config`] on a listener until a shutdown
//! future resolves; `main.rs` only parses the command line and wires things.

pub mod api;
pub mod assisted;
pub mod cli;
pub mod clock;
pub mod config;
pub mod logging;
pub mod plugins;
pub mod vault;

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::plugins::{CallSettings, Registry, Services};

/// State shared by every request and background task.
#[derive(Debug)]
pub struct AppState {
    /// The configuration the daemon started with.
    pub config: Arc<Config>,
    /// Loaded strategies; swapped wholesale by a rescan (SIGHUP).
    pub plugins: Arc<Registry>,
    /// Clock, TOTP guard and HTTP clients shared by plugin calls.
    pub services: Arc<Services>,
    /// The vault. Its methods are blocking: call them through `tokio::task::spawn_blocking`.
    pub vault: Arc<vault::Vault>,
}

impl AppState {
    /// State for `config` on the system clock: opens the configured vault, creating it (and, when
    /// no key is configured, the development key file `vault.key` beside it) on a fresh checkout.
    pub fn open(config: Config) -> Result<AppState, StartError> {
        let (vault, _origin) =
            vault::Vault::open_configured(&config.vault, vault::VaultOptions::default(), true)
                .map_err(|source| StartError::Vault {
                    path: config.vault.path.clone(),
                    source,
                })?;
        Ok(AppState::with_vault(config, Arc::new(vault)))
    }

    /// State for `config` around an already open vault (tests, tools).
    pub fn with_vault(config: Config, vault: Arc<vault::Vault>) -> AppState {
        let settings = CallSettings {
            timeout: std::time::Duration::from_secs(config.refresh.login_timeout_secs),
            ..CallSettings::default()
        };
        AppState {
            plugins: Arc::new(Registry::load(&config.plugins)),
            services: Arc::new(Services::new(Arc::new(clock::SystemClock), settings)),
            vault,
            config: Arc::new(config),
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The vault could not be opened or created.
    #[error("vault {}: {source}", path.display())]
    Vault {
        /// The vault's path.
        path: std::path::PathBuf,
        /// Why.
        source: vault::VaultError,
    },
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Serving failed.
    #[error("server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serve until `shutdown` resolves, then finish in-flight requests and return.
pub async fn run(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    #[cfg(unix)]
    {
        let state = state.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: rescanning plugins");
                let (plugins, config) = (state.plugins.clone(), state.config.clone());
                let _ = tokio::task::spawn_blocking(move || plugins.rescan(&config.plugins)).await;
            }
        });
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let options = api::serve::ServeOptions {
        header_read_timeout: std::time::Duration::from_secs(
            state.config.server.header_read_timeout_secs,
        ),
        drain_timeout: std::time::Duration::from_secs(30),
    };
    api::serve::serve(listener, api::app(state), options, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
