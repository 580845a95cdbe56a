//! `tokenbot-e2e`: the end-to-end fault, load and abuse suite. Run it through `scripts/e2e`, which
//! starts PostgreSQL, builds the daemon and this driver (release, or debug for `--quick`), and
//! installs schemathesis.
//!
//! The driver starts the fake Kite in-process (system clock, latency on every request), writes a
//! work directory with a `tokenbot.toml` (ephemeral port, the fake's URLs, the mirror in a schema
//! of the run's own, JSON file logs), starts the given daemon binary, provisions accounts over the
//! API and runs, in order:
//!
//! 1. provisioning (`PUT /api/users/:userId/accounts/kite`, one known set of secrets per account);
//! 2. chaos (`chaos`): SIGKILL during refresh-all, `vault verify`, restart, check;
//! 3. load (`load`): keep-alive connections reading tokens;
//! 4. slowloris (`slowloris`): slow headers while normal requests are served; then a row the
//!    mirror's table refuses (a check no token passes), and `/health/detailed` read until it
//!    reports that;
//! 5. schemathesis (`schemathesis`) against `/openapi.json`;
//! 6. a clean stop and a last `vault verify`;
//! 7. the secrets audit (`audit`) over logs, the vault file, a dump of the mirror's schema,
//!    `/metrics`, that `/health/detailed` and every response received.
//!
//! Each is a function of `scenario`, and [`run`] calls them in that order.
//!
//! Then it prints one table, scenario | result | figures, and exits 1 if any scenario failed.
//! Everything runs on 127.0.0.1. `--help` lists the options.
//!
//! `--ha` runs the high-availability figures instead (`scenario::ha`): three daemons sharing a
//! PostgreSQL vault, the leader SIGKILLed during its scheduled run, reads from a follower and
//! refresh-all against a redb daemon; same table, same exit code.

mod audit;
mod chaos;
mod cli;
mod cluster;
mod daemon;
mod http;
mod load;
mod scenario;
mod schemathesis;
mod setup;
mod slowloris;
mod stats;
mod summary;
mod world;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Parser;
use fake_brokers::FakeKite;

use daemon::DaemonEnv;
use http::Api;
use scenario::DEBUG_LOGS;
use summary::{Row, print_summary, row};
use world::{Account, Mirror};

/// What the scenarios share.
pub struct Ctx {
    pub env: DaemonEnv,
    /// A client (pointed at whichever daemon runs, with `.at(addr)`).
    pub api: Api,
    pub fake: FakeKite,
    pub mirror: Mirror,
    pub accounts: Vec<Account>,
    /// Every access token the driver has seen (for the audit).
    tokens: Mutex<BTreeSet<String>>,
}

impl Ctx {
    pub fn users(&self) -> Vec<String> {
        self.accounts.iter().map(|a| a.user.clone()).collect()
    }

    pub fn note_token(&self, token: &str) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned());
    }
}

fn main() -> std::process::ExitCode {
    let opts = match cli::Flags::parse().resolve() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tokenbot-e2e: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let rows = match runtime.block_on(run(&opts)) {
        Ok(rows) => rows,
        Err(e) => vec![row("setup", false, format!("{e:#}"))],
    };
    print_summary(&rows, opts.mode(), started.elapsed());
    if rows.iter().all(|r| r.pass) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The scenarios in order, each adding its row. An error (rather than a failed row) is a run that
/// could not go on, and shows as the one row `setup`.
async fn run(opts: &cli::Options) -> anyhow::Result<Vec<Row>> {
    let run = setup::prepare(opts).await?;
    if opts.ha {
        return scenario::ha::run(&run, opts).await;
    }
    let ctx = &run.ctx;
    let mut rows = Vec::new();

    let daemon = ctx.env.start("provision", DEBUG_LOGS)?;
    let provisioned = scenario::provision(ctx, &daemon).await;
    let provisioned_all = provisioned.pass;
    rows.push(provisioned);
    if !provisioned_all {
        return Ok(rows);
    }
    let (chaos, daemon) = scenario::chaos(ctx, opts, daemon).await?;
    rows.push(chaos);

    // Load, on a fresh daemon (its VmHWM is then the load's) at the default log level: at debug
    // every request would log a line.
    daemon.stop()?;
    let mut daemon = ctx.env.start("load", "info")?;
    let bodies = Arc::new(load::Bodies::default());
    let target = load::Target {
        addr: daemon.addr.parse()?,
        key: Arc::from(run.secrets.api_key.as_str()),
        users: Arc::new(ctx.users()),
        bodies: bodies.clone(),
    };
    rows.push(scenario::load(opts, &target, &mut daemon).await);
    rows.push(scenario::slowloris(opts, &target, &mut daemon).await);
    let refusal = scenario::refusal::mirror_refusal(ctx, &ctx.api.at(&daemon.addr)).await;

    // Schemathesis, against a daemon of its own (see `scenario::schemathesis`).
    daemon.stop()?;
    let (schemathesis, daemon, st) = scenario::schemathesis::run(&run, opts).await?;
    rows.push(schemathesis);
    let api = ctx.api.at(&daemon.addr);
    let (final_state, state) =
        scenario::final_state::check(&run, opts, daemon, &api, &st.env).await?;
    rows.push(final_state);
    rows.push(scenario::secrets_audit::audit(
        &run, &st, &bodies, &state, &refusal,
    ));
    ctx.mirror.drop_schema().await;
    Ok(rows)
}
