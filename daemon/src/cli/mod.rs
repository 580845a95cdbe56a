//! The command line: parses arguments and wires the library together. `anyhow` lives here only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

mod refresh;
mod token;
mod user;
mod vault;

/// The command line's definition, for what is generated from it (`tokenbot-dist`: shell
/// completions, man pages).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[derive(Parser)]
#[command(
    name = "tokenbot",
    version,
    about = "Keeps brokers' daily access tokens fresh"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "TOKENBOT_CONFIG",
        default_value = "tokenbot.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon on an existing vault (`tokenbot init` creates one).
    Serve {
        /// Development: create the vault, and a key file beside it when no key is configured,
        /// if there is none. Never use it in production: a missing ENCRYPTION_KEY or another
        /// working directory would silently start an empty vault.
        #[arg(long)]
        dev: bool,
    },
    /// Create the vault (and, when no key is configured, the development key file beside it).
    Init(vault::InitArgs),
    /// Accounts: a user's credentials at one broker.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Vault maintenance: rekey, verify, copy.
    Vault {
        #[command(subcommand)]
        command: vault::VaultCommand,
    },
    /// Log accounts in now; prints Successful / Failed / Skipped / Total, exit 1 if any failed.
    Refresh(refresh::RefreshArgs),
    /// Tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// A user's recent login attempts, newest first (JSON).
    Logs {
        /// The platform's user id.
        user_id: String,
        /// How many attempts at most.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Plugins.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a user's valid token as JSON (exit status 1 when there is none).
    Get {
        /// The platform's user id.
        user_id: String,
        /// The broker, when the user has accounts at several.
        #[arg(long)]
        broker: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// Loaded strategies: id, version, ABI, source, sha256; then load failures.
    List,
}

/// Entry point of the `tokenbot` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run_command(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tokenbot: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(cli: Cli) -> anyhow::Result<ExitCode> {
    // The default file may be absent (built-in defaults apply); a named one must exist.
    let explicit = std::env::var_os("TOKENBOT_CONFIG").is_some()
        || cli.config.as_path() != std::path::Path::new("tokenbot.toml");
    let config = Config::load(&cli.config, explicit)?;
    crate::check_config(&config)?;
    let _log_guards = crate::logging::init(&config.log)?;
    match cli.command {
        Command::Serve { dev } => serve(config, dev),
        Command::Init(args) => vault::init(&config, &args),
        Command::User { command } => user::run(&config, command),
        Command::Vault { command } => vault::run(&config, command),
        Command::Refresh(args) => refresh::run(config, &args),
        Command::Token {
            command: TokenCommand::Get { user_id, broker },
        } => token::get(&config, &user_id, broker.as_deref()),
        Command::Logs { user_id, limit } => token::logs(&config, &user_id, limit),
        Command::Plugins {
            command: PluginsCommand::List,
        } => {
            let registry = crate::plugins::Registry::load(&config.plugins);
            println!(
                "{:<12} {:<10} {:<5} {:<40} SHA256",
                "ID", "VERSION", "ABI", "SOURCE"
            );
            for plugin in registry.all().values() {
                println!(
                    "{:<12} {:<10} {:<5} {:<40} {}",
                    plugin.id,
                    plugin.version,
                    format!("{}.{}", plugin.abi.0, plugin.abi.1),
                    plugin.source.to_string(),
                    plugin.sha256.as_deref().unwrap_or("-")
                );
            }
            let failures = registry.failures();
            for failure in &failures {
                println!("failed: {}: {}", failure.path.display(), failure.error);
            }
            Ok(if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

/// Where this machine reaches the running daemon's API: its listen address, on loopback when it
/// listens on every interface.
fn daemon_address(config: &Config) -> std::net::SocketAddr {
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

fn serve(config: Config, dev: bool) -> anyhow::Result<ExitCode> {
    raise_open_file_limit(config.server.max_connections);
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let state = Arc::new(crate::AppState::open(config, dev)?);
        crate::run(state, listener, crate::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Descriptors the daemon needs besides its connections: the vault, logs, plugins, outgoing
/// HTTP and PostgreSQL connections.
const SPARE_FILES: u64 = 256;

/// Raise the soft limit on open files to the hard one: every connection holds a descriptor, and
/// the usual soft limit (1,024) is far below `server.max_connections`' default. Past the limit,
/// `accept` fails and the server backs off (`api::serve`), so the shortfall is only logged.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            if (max_connections as u64).saturating_add(SPARE_FILES) > limit {
                tracing::warn!(
                    open_files = limit,
                    max_connections,
                    "the open-file limit is below server.max_connections plus {SPARE_FILES}: \
                     connections past it fail to be accepted (raise the hard limit, `ulimit -Hn`)"
                );
            } else {
                tracing::debug!(open_files = limit, "open-file limit");
            }
        }
        Err(e) => tracing::warn!(error = %e, "the open-file limit could not be raised"),
    }
}
