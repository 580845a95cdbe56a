//! tokenbot: keeps Indian brokers' daily access tokens fresh for many users.
//!
//! The daemon is a library: [`run`] serves a [`config::Config`] on a listener until a shutdown
//! future resolves; `main.rs` only calls [`cli::main`], which parses the command line and wires things.

pub mod api;
pub mod assisted;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod credential_input;
pub mod events;
#[cfg(test)]
mod house_rules;
pub mod logging;
pub mod mirror;
pub mod notify;
mod pg;
pub mod plugins;
pub mod redact;
pub mod refresh;
pub mod vault;

use std::future::Future;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::plugins::{CallLimits, PluginEnv, Registry};

/// Every check of a configuration, in one place: the sections `config` owns, then each section
/// another module interprets, by that module. Every command runs it right after loading, and
/// [`AppState::open`] again, so a bad value is refused before anything starts.
pub fn check_config(config: &Config) -> Result<(), ConfigError> {
    config.validate()?;
    logging::check_config(&config.log)?;
    vault::check_config(&config.vault)?;
    refresh::schedule::check_config(&config.brokers)?;
    refresh::session::MarketSession::from_config(&config.refresh)?;
    notify::check_config(&config.notify)?;
    if let Some(postgres) = &config.mirror.postgres {
        mirror::check_config(postgres)?;
    }
    events::check_config(&config.events)?;
    Ok(())
}

/// State shared by every request and background task.
#[derive(Debug)]
pub struct AppState {
    /// The configuration the daemon started with.
    pub config: Arc<Config>,
    /// Loaded strategies; swapped wholesale by a rescan (SIGHUP).
    pub plugins: Arc<Registry>,
    /// The daemon's one clock: the API, the vault, the mirror, the refresher and the plugin host
    /// all read time from it, so a test moves all of them at once.
    pub clock: Arc<dyn Clock>,
    /// The environment plugin calls run in: the same clock, TOTP guard, HTTP clients, call limits.
    pub plugin_env: Arc<PluginEnv>,
    /// The vault. Its methods are blocking: call them through `tokio::task::spawn_blocking`.
    pub vault: Arc<vault::Vault>,
    /// Runs logins (single flight, limits, retries); shared by the scheduler, the API and the CLI.
    pub refresher: Arc<refresh::Refresher>,
    /// The Postgres mirror (`[mirror.postgres]`), if configured. Its task is started by [`run`];
    /// `mirror.status()` feeds `/health/detailed` and `/metrics`.
    pub mirror: Option<Arc<mirror::Mirror>>,
    /// Token-change events (`GET /api/tokens/events`, `[events] webhook_url`), fed by the vault
    /// on every committed token change, whichever path (or, on a shared vault, daemon) made it.
    pub events: Arc<events::Hub>,
    /// This daemon's role among those sharing its vault; a vault file's daemon always leads.
    pub cluster: Arc<cluster::Cluster>,
}

impl AppState {
    /// State for `config` on the system clock: opens the configured vault. Only with `create`
    /// (`serve --dev`) does a missing vault get created (and, when no key is configured, the
    /// development key file `vault.key` beside it).
    pub fn open(config: Config, create: bool) -> Result<AppState, StartError> {
        check_config(&config).map_err(|e| StartError::Config(e.to_string()))?;
        // Settings are checked against the strategies before the vault is touched, so a typo
        // creates nothing, not even with --dev.
        let plugins = Arc::new(Registry::load(&config.plugins));
        let unknown = plugins.unknown_settings(&config.brokers);
        if !unknown.is_empty() {
            return Err(StartError::Config(unknown.join("; ")));
        }
        // The vault's clock (the system's) becomes the daemon's one clock in `with_registry`.
        let options = vault::VaultOptions::default();
        let (vault, _origin) = vault::Vault::open_configured(&config.vault, options, create)
            .map_err(|source| StartError::Vault {
                at: vault::location(&config.vault).to_string(),
                source,
            })?;
        Ok(AppState::with_registry(config, Arc::new(vault), plugins))
    }

    /// State for `config` around an already open vault (tests, tools).
    pub fn with_vault(config: Config, vault: Arc<vault::Vault>) -> AppState {
        let plugins = Arc::new(Registry::load(&config.plugins));
        AppState::with_registry(config, vault, plugins)
    }

    fn with_registry(config: Config, vault: Arc<vault::Vault>, plugins: Arc<Registry>) -> AppState {
        let limits = CallLimits {
            timeout: std::time::Duration::from_secs(config.refresh.login_timeout_secs),
            ..CallLimits::default()
        };
        let plugin_env = Arc::new(PluginEnv::new(vault.clock().clone(), limits));
        AppState::from_parts(Arc::new(config), vault, plugins, plugin_env)
    }

    /// State from its parts, e.g. with a manual clock in `plugin_env` (tests, benchmarks).
    pub fn from_parts(
        config: Arc<Config>,
        vault: Arc<vault::Vault>,
        plugins: Arc<Registry>,
        plugin_env: Arc<PluginEnv>,
    ) -> AppState {
        let mirror = config
            .mirror
            .postgres
            .as_ref()
            .map(|pg| Arc::new(mirror::Mirror::new(pg, vault.clone())));
        let mut refresher = refresh::Refresher::new(
            vault.clone(),
            plugins.clone(),
            plugin_env.clone(),
            config.clone(),
        );
        if let Some(mirror) = &mirror {
            // A stored token is mirrored at once instead of at the mirror's next poll.
            let mirror = mirror.clone();
            refresher = refresher.on_token(Arc::new(move || mirror.wake()));
        }
        let refresher = Arc::new(refresher);
        let events = events::Hub::attach(&config.events, plugin_env.clock.clone(), &vault);
        let cluster = Arc::new(cluster::Cluster::new(&vault));
        AppState {
            config,
            plugins,
            clock: plugin_env.clock.clone(),
            plugin_env,
            vault,
            refresher,
            mirror,
            events,
            cluster,
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The vault could not be opened or created.
    #[error("vault {at}")]
    Vault {
        /// Where the vault is (a path, or a database without its password).
        at: String,
        /// Why.
        source: vault::VaultError,
    },
    /// A configured key fits no loaded strategy.
    #[error("configuration: {0}")]
    Config(String),
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
    rescan_plugins_on_sighup(&state);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let options = serve_options(&state.config.server);
    // One shutdown signal for the server and the scheduler. The scheduler checks it between
    // ticks, so logins in flight finish before it returns.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    // What runs once per vault runs on its leader only: a file's daemon always leads.
    let role = state.cluster.subscribe();
    let leadership = tokio::spawn(cluster::run(
        state.cluster.clone(),
        state.vault.clone(),
        until_stopped(),
    ));
    let scheduler = tokio::spawn(cluster::while_leading(role.clone(), until_stopped(), {
        let (refresher, until_stopped) = (state.refresher.clone(), until_stopped.clone());
        move || refresh::schedule::run(refresher.clone(), until_stopped())
    }));
    let renotify = tokio::spawn(cluster::while_leading(role.clone(), until_stopped(), {
        let (notifier, until_stopped) = (state.refresher.notifier().clone(), until_stopped.clone());
        move || notify::run(notifier.clone(), until_stopped())
    }));
    let login_timeout = std::time::Duration::from_secs(state.config.refresh.login_timeout_secs);
    let webhook = events::webhook::spawn(&state.events, &state.config.events, role.clone());
    let (hub, draining) = (state.events.clone(), state.refresher.clone());
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
        // Event streams never end on their own and would hold the server's drain to its timeout.
        // They end once the logins in flight have stored their tokens, so consumers still hear
        // of those.
        tokio::spawn(async move {
            draining.drain(login_timeout).await;
            hub.close();
        });
    };
    let mirror = state.mirror.clone().map(|m| {
        let task = m.spawn_leading(role.clone());
        (m, task)
    });
    let refresher = state.refresher.clone();
    api::serve::serve(listener, api::app(state), options, shutdown).await;
    // Logins started by the API outlive their requests (a caller may have gone away): they
    // finish too, within one login's time, so no TOTP step or password is left half-used.
    let finished = tokio::time::timeout(login_timeout, async {
        let _ = scheduler.await;
        refresher.drain(login_timeout).await
    })
    .await;
    if finished != Ok(true) {
        tracing::warn!("logins still in flight at shutdown were abandoned");
    }
    let _ = renotify.await;
    let _ = leadership.await;
    // The mirror stops last, so tokens from logins that finished during shutdown may still go out.
    // Stopping drops an uncommitted batch; its records stay in the outbox for the next start.
    if let Some((mirror, task)) = mirror {
        mirror.stop();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    if let Some(webhook) = webhook {
        // Closed with the server: a delivery in flight gets its timeout, then is abandoned.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), webhook).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// A SIGHUP rescans the plugin directory. Installed before "listening" (not inside the task): a
/// SIGHUP sent right after it must rescan, not kill.
fn rescan_plugins_on_sighup(state: &Arc<AppState>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let hup = signal(SignalKind::hangup());
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = hup else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: rescanning plugins");
                let (plugins, config) = (state.plugins.clone(), state.config.clone());
                let _ = tokio::task::spawn_blocking(move || plugins.rescan(&config.plugins)).await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = state;
}

fn serve_options(server: &config::ServerConfig) -> api::serve::ServeOptions {
    api::serve::ServeOptions {
        header_read_timeout: std::time::Duration::from_secs(server.header_read_timeout_secs),
        drain_timeout: std::time::Duration::from_secs(30),
        max_connections: server.max_connections,
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled (after "listening"): a signal sent the moment the daemon says it
/// listens must drain it, not kill it. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn next(stream: std::io::Result<Signal>) {
            match stream {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        let (term, int) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            tokio::select! {
                () = next(int) => tracing::info!("SIGINT: shutting down"),
                () = next(term) => tracing::info!("SIGTERM: shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    }
}

#[cfg(test)]
mod check_config_tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The configuration as `main` loads and checks it.
    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenbot.toml");
        std::fs::write(&path, toml).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::load_with_env(&path, true, |k| env.get(k).cloned())?;
        check_config(&config)?;
        Ok(config)
    }

    #[test]
    fn bad_cron_timezone_and_url_are_refused() {
        let err = load("[brokers.kite]\nschedule = \"61 8 * * *\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("brokers.kite.schedule") && err.contains("61 8"),
            "{err}"
        );
        let err = load("[brokers.kite]\ntimezone = \"Mars/Base\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("brokers.kite.timezone") && err.contains("Mars/Base"),
            "{err}"
        );
        let err = load("[brokers.kite]\napi_url = \"not a url\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("brokers.kite.api_url"), "{err}");
        // Other keys are the strategy's settings, checked against its manifest at start.
        let config = load("[brokers.kite]\nfrobnicate = \"1\"\n", &[]).unwrap();
        let kite = &config.brokers["kite"];
        assert_eq!(kite.settings["frobnicate"], "1");
        assert!(!kite.urls.contains_key("frobnicate"));
    }

    #[test]
    fn mirror_template_with_an_unknown_parameter_is_refused_at_start() {
        // Found by `daemon/fuzz`: tokio-postgres reads a mistyped scheme as key=value pairs and
        // quoted the URL up to its first `=` as an unknown option, password included.
        for url in [
            "postgress://u:hunter2@h/db?sslmode=require",
            "POSTGRES://u:hunter2@h/db?sslmode=require",
        ] {
            let err = load(&format!("[mirror.postgres]\nurl = \"{url}\"\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("mirror.postgres.url") && !err.contains("hunter2"),
                "{err}"
            );
        }
        let err = load(
            "[mirror.postgres]\nurl = \"postgres://u:pw@h/db\"\n\
             upsert_sql = \"UPDATE t SET a = $tokn WHERE id = $user_id\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mirror.postgres.upsert_sql") && err.contains("$tokn"),
            "{err}"
        );
        let err = load(
            "[mirror.postgres]\nurl = \"postgres://u:hunter2@h:port/db\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("mirror.postgres.url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_vault_engine_is_refused_naming_key_and_value() {
        let err = load("[vault]\nengine = \"lmdb\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vault.engine")
                && err.contains("lmdb")
                && err.contains("redb, sled or postgres"),
            "{err}"
        );
        assert_eq!(load("", &[]).unwrap().vault.engine, "redb");
    }

    #[test]
    fn a_failover_bound_outside_3_to_300_seconds_is_refused() {
        let postgres = "[vault]\nengine = \"postgres\"\nurl = \"postgres://u@localhost/db\"\n";
        for secs in [2, 301] {
            let err = load(&format!("{postgres}failover_secs = {secs}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("vault.failover_secs"), "{err}");
        }
        let config = load(&format!("{postgres}failover_secs = 5\n"), &[]).unwrap();
        assert_eq!(config.vault.failover_secs, 5);
    }
}
