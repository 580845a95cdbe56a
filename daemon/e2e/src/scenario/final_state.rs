//! The end of the run: `/metrics`, a clean stop, the last `vault verify` of both vaults, and a
//! dump of the mirror's schema for the secrets audit.

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::Options;
use crate::daemon::Daemon;
use crate::http::{Api, Auth, Reply};
use crate::setup::Run;
use crate::summary::{Row, row};

/// What the secrets audit searches besides files.
pub struct FinalState {
    /// `/metrics` as the schemathesis daemon last answered it.
    pub metrics: Reply,
    /// The dump of the mirror's schemas.
    pub dump_path: PathBuf,
    /// Whether `pg_dump` succeeded and wrote something.
    pub dump_ok: bool,
}

/// Read `/metrics`, stop the daemon with SIGTERM, verify both vaults and dump the mirror.
pub async fn check(
    run: &Run,
    opts: &Options,
    mut daemon: Daemon,
    api: &Api,
    st_env: &[(String, String)],
) -> anyhow::Result<(Row, FinalState)> {
    let ctx = &run.ctx;
    let metrics = api.get("/metrics", Auth::Key).await?;
    let alive = daemon.alive();
    let stopped = daemon.stop();
    let (verified_main, verify_out) = ctx.env.verify("final")?;
    let (verified_st, verify_st_out) = ctx.env.verify_with("final-schemathesis", st_env)?;
    let dump_path = run.work.join("pg_dump.sql");
    let dump = std::process::Command::new("pg_dump")
        .args(pg_dump_args(&opts.pg_url, &format!("{}*", run.schema)))
        .output()
        .context("running pg_dump")?;
    std::fs::write(&dump_path, &dump.stdout)?;
    let dump_ok = dump.status.success() && !dump.stdout.is_empty();
    let final_ok =
        alive && stopped.is_ok() && verified_main && verified_st && metrics.status == 200;
    let row = row(
        "final state",
        final_ok,
        format!(
            "daemon alive after schemathesis: {alive}; SIGTERM: {}; vault verify: {}; \
             schemathesis's vault verify: {}; /metrics: {}",
            match &stopped {
                Ok(()) => "clean exit".to_owned(),
                Err(e) => format!("{e:#}"),
            },
            verify_result(verified_main, &verify_out),
            verify_result(verified_st, &verify_st_out),
            metrics.status
        ),
    );
    let state = FinalState {
        metrics,
        dump_path,
        dump_ok,
    };
    Ok((row, state))
}

/// A `vault verify` as the summary shows it: its counts, or all it printed when it failed.
fn verify_result(verified: bool, out: &str) -> String {
    if verified {
        verify_summary(out)
    } else {
        format!("FAILED\n{out}")
    }
}

/// `pg_dump` arguments for the schema, from the URL's host, port, user and database.
fn pg_dump_args(url: &str, schema: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (creds, host_db) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let user = creds.split(':').next().unwrap_or("postgres");
    let (host_port, db) = host_db.split_once('/').unwrap_or((host_db, "postgres"));
    let db = db.split('?').next().unwrap_or(db);
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
    vec![
        "-h".into(),
        host.into(),
        "-p".into(),
        port.into(),
        "-U".into(),
        user.into(),
        "-n".into(),
        schema.into(),
        db.into(),
    ]
}

/// The counts `vault verify` printed, on one line.
fn verify_summary(out: &str) -> String {
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('{'))
        .collect();
    if lines.is_empty() {
        "ok".into()
    } else {
        format!("ok ({})", lines.join(", "))
    }
}
