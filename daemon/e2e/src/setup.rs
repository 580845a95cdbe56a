//! What every scenario runs against: the work directory, the run's secrets, the mirror's schema,
//! the fake Kite with every account, and the daemon's configuration.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use fake_brokers::{FakeKite, FakeOptions, system_now};

use crate::Ctx;
use crate::cli::Options;
use crate::daemon::{self, ConfigSpec, DaemonEnv};
use crate::http::{Api, Capture};
use crate::stats::random_hex;
use crate::world::{Account, Mirror};

/// How long the daemon waits for a request's headers; the slowloris scenario relies on it.
pub const HEADER_READ_TIMEOUT_SECS: u64 = 5;

/// Logins at once (`[refresh] concurrency`, and the broker's).
pub const CONCURRENCY: u32 = 32;

/// The run's secrets, besides the accounts' credentials.
pub struct RunSecrets {
    pub api_key: String,
    pub jwt_secret: String,
    pub encryption_key: String,
    pub pg_password: String,
}

/// A prepared run: the scenarios' context and what the later checks need to find its traces.
pub struct Run {
    pub ctx: Ctx,
    pub secrets: RunSecrets,
    /// The work directory, canonical.
    pub work: PathBuf,
    /// The mirror's schema of this run.
    pub schema: String,
    /// Every response the driver received, for the secrets audit.
    pub capture: Arc<Capture>,
}

/// Check the open-file limit, wipe the work directory, start the fake Kite, write the config.
pub async fn prepare(opts: &Options) -> anyhow::Result<Run> {
    check_open_file_limit(opts)?;
    let daemon_bin = std::fs::canonicalize(&opts.daemon)
        .with_context(|| format!("--daemon {}", opts.daemon.display()))?;
    let work = fresh_work_dir(&opts.work)?;
    let secrets = RunSecrets {
        api_key: format!("e2e-key-{}", random_hex(16)),
        jwt_secret: format!("e2e-jwt-{}", random_hex(16)),
        encryption_key: random_hex(32),
        pg_password: format!("pgpw-{}", random_hex(8)),
    };
    let pg_url_with_password = with_password(&opts.pg_url, &secrets.pg_password)?;
    let schema = format!("tbe2e_{}", std::process::id());
    let mirror = Mirror::connect(&opts.pg_url, &schema).await?;
    let fake = FakeKite::start_with(FakeOptions {
        now: system_now(),
        latency: Duration::from_millis(opts.latency_ms),
        ..Default::default()
    })
    .await;
    let accounts: Vec<Account> = (0..opts.accounts)
        .map(|n| Account::generate('u', n))
        .collect();
    for a in &accounts {
        fake.add_user(a.kite_user());
    }
    let env = DaemonEnv::new(
        &daemon_bin,
        &work,
        vec![
            ("ENCRYPTION_KEY".into(), secrets.encryption_key.clone()),
            ("JWT_SECRET".into(), secrets.jwt_secret.clone()),
            ("TOKENBOT_API_KEY".into(), secrets.api_key.clone()),
        ],
    );
    env.write_config(&ConfigSpec {
        kite_web_url: fake.web_url(),
        kite_api_url: fake.api_url(),
        pg_url: &pg_url_with_password,
        pg_schema: &schema,
        concurrency: CONCURRENCY,
        header_read_timeout_secs: HEADER_READ_TIMEOUT_SECS,
    })?;
    let capture = Arc::new(Capture::create(&work.join("responses.log"))?);
    let ctx = Ctx {
        env,
        api: Api::new("127.0.0.1:9", &secrets.api_key, capture.clone()),
        fake,
        mirror,
        accounts,
        tokens: Mutex::new(BTreeSet::new()),
    };
    eprintln!(
        "e2e: {} mode in {}; daemon {}",
        opts.mode(),
        work.display(),
        daemon_bin.display()
    );
    Ok(Run {
        ctx,
        secrets,
        work,
        schema,
        capture,
    })
}

/// Each process holds one descriptor per connection: refuse to start a run that would run out.
fn check_open_file_limit(opts: &Options) -> anyhow::Result<()> {
    let limit = daemon::open_file_limit();
    // The HA figures open no slowloris connections.
    let slow = if opts.ha { 0 } else { opts.slowloris };
    let needed = (opts.connections.max(slow) + 1024) as u64;
    if limit < needed {
        bail!(
            "the open-file limit is {limit}; {needed} are needed for {} connections \
             (raise it with `ulimit -n`, as scripts/e2e does)",
            opts.connections
        );
    }
    Ok(())
}

/// The work directory, wiped and created again; its canonical path.
fn fresh_work_dir(work: &std::path::Path) -> anyhow::Result<PathBuf> {
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("wiping {}", work.display()))?;
    }
    std::fs::create_dir_all(work)?;
    Ok(std::fs::canonicalize(work)?)
}

/// The mirror's URL with the run's password. Trust authentication ignores the password: it is
/// there to be looked for in the logs.
fn with_password(pg_url: &str, password: &str) -> anyhow::Result<String> {
    let (scheme, rest) = pg_url.split_once("://").context("--pg-url: no scheme")?;
    let (creds, host) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let user = creds.split(':').next().unwrap_or("postgres");
    Ok(format!("{scheme}://{user}:{password}@{host}"))
}
