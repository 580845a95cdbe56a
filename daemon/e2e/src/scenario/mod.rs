//! The scenarios, in the order the driver runs them, each ending in its row of the summary. The
//! work itself is in `chaos`, `load`, `schemathesis` and `audit`; here is what each scenario
//! starts, checks and reports.

pub mod final_state;
pub mod ha;
pub mod refusal;
pub mod schemathesis;
pub mod secrets_audit;

use std::time::{Duration, Instant};

use crate::Ctx;
use crate::chaos;
use crate::cli::Options;
use crate::daemon::Daemon;
use crate::http::{Api, Auth};
use crate::load;
use crate::setup::HEADER_READ_TIMEOUT_SECS;
use crate::stats::secs;
use crate::summary::{Row, row, row_alive, skipped};
use crate::world::{Account, bounded};

/// The log level of a daemon whose logs the audit reads closely.
pub const DEBUG_LOGS: &str = "info,tokenbot=debug";

/// Provisioning: every account through `PUT /api/users/:userId/accounts/kite`, one known set of
/// secrets per account, all answered 201.
pub async fn provision(ctx: &Ctx, daemon: &Daemon) -> Row {
    let api = ctx.api.at(&daemon.addr);
    let t = Instant::now();
    let bad = provision_accounts(&api, &ctx.accounts).await;
    row(
        "provision",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{} Kite accounts by PUT /api/users/:userId/accounts/kite in {} (all 201)",
                ctx.accounts.len(),
                secs(t.elapsed())
            )
        } else {
            format!("{} refused, first: {}", bad.len(), bad[0])
        },
    )
}

/// `PUT /api/users/:userId/accounts/kite` for each of `accounts` (16 at once); the answers other
/// than 201, one line each.
pub async fn provision_accounts(api: &Api, accounts: &[Account]) -> Vec<String> {
    let results = bounded(accounts, 16, |a: Account| {
        let api = api.clone();
        async move {
            let r = api
                .put_json(
                    &format!("/api/users/{}/accounts/kite", a.user),
                    Auth::Key,
                    &a.provision_body(),
                )
                .await;
            (a.user, r)
        }
    })
    .await;
    results
        .iter()
        .filter_map(|(u, r)| match r {
            Ok(r) if r.status == 201 => None,
            Ok(r) => Some(format!("{u}: {} {}", r.status, r.text())),
            Err(e) => Some(format!("{u}: {e:#}")),
        })
        .collect()
}

/// Chaos (`chaos`): SIGKILL during refresh-all, `vault verify`, restart, check. Hands back a
/// running daemon for the next scenarios, started afresh if chaos left none.
pub async fn chaos(ctx: &Ctx, opts: &Options, daemon: Daemon) -> anyhow::Result<(Row, Daemon)> {
    if opts.skips("chaos") {
        return Ok((skipped("chaos"), daemon));
    }
    let accounts = ctx.accounts.len();
    let mut report = chaos::ChaosReport::default();
    let result = chaos::run(ctx, daemon, opts.cycles, &mut report).await;
    let (pass, figures) = match &result {
        Ok(_) if report.failures.is_empty() && report.passed == opts.cycles => {
            (true, report.figures(accounts))
        }
        Ok(_) => (
            false,
            format!(
                "{}; {}",
                report.failures.join("; "),
                report.figures(accounts)
            ),
        ),
        Err(e) => (false, format!("{e:#}; {}", report.figures(accounts))),
    };
    let row = row("chaos", pass, figures);
    let daemon = match result {
        Ok(d) => d,
        Err(_) => ctx.env.start("after-chaos", DEBUG_LOGS)?,
    };
    Ok((row, daemon))
}

/// Load (`load`): keep-alive connections reading tokens.
pub async fn load(opts: &Options, target: &load::Target, daemon: &mut Daemon) -> Row {
    if opts.skips("load") {
        return skipped("load");
    }
    let report = load::keep_alive(
        target,
        daemon.pid(),
        opts.connections,
        Duration::from_secs(opts.load_secs),
    )
    .await;
    row_alive("load", report.pass(), report.figures(), daemon.alive())
}

/// Slowloris (`slowloris`): slow headers while normal requests are served.
pub async fn slowloris(opts: &Options, target: &load::Target, daemon: &mut Daemon) -> Row {
    if opts.skips("slowloris") {
        return skipped("slowloris");
    }
    let report = crate::slowloris::slowloris(
        target,
        opts.slowloris,
        Duration::from_secs(opts.slow_secs),
        HEADER_READ_TIMEOUT_SECS,
    )
    .await;
    row_alive("slowloris", report.pass(), report.figures(), daemon.alive())
}
