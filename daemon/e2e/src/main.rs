//! `tokenbot-e2e`: the end-to-end fault, load and abuse suite. Run it through `scripts/e2e`, which
//! starts PostgreSQL, builds the release daemon and this driver, and installs schemathesis.
//!
//! The driver starts the fake Kite in-process (system clock, latency on every request), writes a
//! work directory with a `tokenbot.toml` (ephemeral port, the fake's URLs, the mirror in a schema
//! of the run's own, JSON file logs), starts the given daemon binary, provisions accounts over the
//! API and runs, in order:
//!
//! 1. provisioning (`PUT /api/users/:userId/accounts/kite`, one known set of secrets per account);
//! 2. chaos (`chaos`): SIGKILL during refresh-all, `vault verify`, restart, check;
//! 3. load (`load`): keep-alive connections reading tokens;
//! 4. slowloris (`load`): slow headers while normal requests are served; then a row the mirror's
//!    table refuses (a check no token passes), and `/health/detailed` read until it reports that;
//! 5. schemathesis (`schemathesis`) against `/openapi.json`;
//! 6. a clean stop and a last `vault verify`;
//! 7. the secrets audit (`audit`) over logs, the vault file, a dump of the mirror's schema,
//!    `/metrics`, that `/health/detailed` and every response received.
//!
//! Then it prints one table, scenario | result | figures, and exits 1 if any scenario failed.
//! Everything runs on 127.0.0.1. `--help` lists the options.

mod audit;
mod chaos;
mod daemon;
mod http;
mod load;
mod schemathesis;
mod stats;
mod world;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fake_brokers::{FakeKite, FakeOptions, system_now};

use daemon::{ConfigSpec, DaemonEnv};
use http::{Api, Auth, Capture};
use stats::{random_hex, secs};
use world::{Account, Mirror, bounded};

const USAGE: &str = "\
usage: tokenbot-e2e --daemon PATH [--quick] [options]

  --daemon PATH         the tokenbot binary to test (a release build)
  --schemathesis PATH   the schemathesis CLI (scripts/e2e installs it into target/e2e-venv)
  --quick               the bounded run for CI (smaller figures below)
  --work DIR            work directory, wiped first (default target/e2e/full or target/e2e/quick)
  --pg-url URL          PostgreSQL for the mirror (default $TOKENBOT_E2E_DATABASE_URL, else
                        postgres://postgres@127.0.0.1:5432/test)
  --accounts N          accounts provisioned                     (full 1000, quick 200)
  --cycles N            chaos cycles                             (full 20, quick 3)
  --connections N       keep-alive connections of the load phase (full 10000, quick 1000)
  --load-secs N         length of the load phase                 (full 30, quick 5)
  --slowloris N         slowloris connections                    (full 1000, quick 200)
  --slow-secs N         length of the slowloris window           (full 20, quick 12)
  --examples N          schemathesis examples per operation      (full 50, quick 5)
  --latency-ms N        latency the fake Kite adds per request   (20)
  --skip LIST           scenarios to leave out (comma-separated: chaos, load, slowloris,
                        schemathesis); a skipped scenario is a FAIL in the summary
";

/// The options.
struct Args {
    daemon: PathBuf,
    schemathesis: Option<PathBuf>,
    quick: bool,
    work: PathBuf,
    pg_url: String,
    accounts: usize,
    cycles: usize,
    connections: usize,
    load_secs: u64,
    slowloris: usize,
    slow_secs: u64,
    examples: u32,
    latency_ms: u64,
    skip: BTreeSet<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if raw.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let quick = raw.iter().any(|a| a == "--quick");
    let mut args = Args {
        daemon: PathBuf::new(),
        schemathesis: None,
        quick,
        work: PathBuf::from(if quick {
            "target/e2e/quick"
        } else {
            "target/e2e/full"
        }),
        pg_url: std::env::var("TOKENBOT_E2E_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into()),
        accounts: if quick { 200 } else { 1000 },
        cycles: if quick { 3 } else { 20 },
        connections: if quick { 1000 } else { 10_000 },
        load_secs: if quick { 5 } else { 30 },
        slowloris: if quick { 200 } else { 1000 },
        slow_secs: if quick { 12 } else { 20 },
        examples: if quick { 5 } else { 50 },
        latency_ms: 20,
        skip: BTreeSet::new(),
    };
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--quick" {
            continue;
        }
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--daemon" => args.daemon = PathBuf::from(value()?),
            "--schemathesis" => args.schemathesis = Some(PathBuf::from(value()?)),
            "--work" => args.work = PathBuf::from(value()?),
            "--pg-url" => args.pg_url = value()?,
            "--accounts" => args.accounts = value()?.parse()?,
            "--cycles" => args.cycles = value()?.parse()?,
            "--connections" => args.connections = value()?.parse()?,
            "--load-secs" => args.load_secs = value()?.parse()?,
            "--slowloris" => args.slowloris = value()?.parse()?,
            "--slow-secs" => args.slow_secs = value()?.parse()?,
            "--examples" => args.examples = value()?.parse()?,
            "--latency-ms" => args.latency_ms = value()?.parse()?,
            "--skip" => {
                args.skip = value()?
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.daemon.as_os_str().is_empty() {
        bail!("--daemon PATH is required\n{USAGE}");
    }
    if args.accounts < 2 {
        bail!("--accounts must be at least 2");
    }
    Ok(args)
}

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

/// One line of the summary.
struct Row {
    scenario: &'static str,
    pass: bool,
    figures: String,
}

/// A scenario's row that also fails when the daemon did not survive it.
fn row_alive(scenario: &'static str, pass: bool, figures: String, alive: bool) -> Row {
    if alive {
        row(scenario, pass, figures)
    } else {
        row(scenario, false, format!("the daemon died; {figures}"))
    }
}

fn row(scenario: &'static str, pass: bool, figures: impl Into<String>) -> Row {
    let figures = figures.into();
    eprintln!(
        "e2e: {scenario}: {} {figures}",
        if pass { "pass" } else { "FAIL" }
    );
    Row {
        scenario,
        pass,
        figures,
    }
}

fn print_summary(rows: &[Row], mode: &str, took: Duration) {
    let width = rows
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!();
    println!("tokenbot e2e summary ({mode} mode, {})", secs(took));
    println!("| {:width$} | result | figures", "scenario");
    println!("| {:-<width$} | ------ | -------", "");
    for r in rows {
        println!(
            "| {:width$} | {:6} | {}",
            r.scenario,
            if r.pass { "pass" } else { "FAIL" },
            r.figures
        );
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!("{} passed, {} failed", rows.len() - failed, failed);
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tokenbot-e2e: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let rows = runtime.block_on(run(&args));
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            vec![row("setup", false, format!("{e:#}"))]
        }
    };
    print_summary(
        &rows,
        if args.quick { "quick" } else { "full" },
        started.elapsed(),
    );
    if rows.iter().all(|r| r.pass) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The run's secrets, besides the accounts' credentials.
struct RunSecrets {
    api_key: String,
    jwt_secret: String,
    encryption_key: String,
    pg_password: String,
}

async fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    let limit = daemon::open_file_limit();
    let needed = (args.connections.max(args.slowloris) + 1024) as u64;
    if limit < needed {
        bail!(
            "the open-file limit is {limit}; {needed} are needed for {} connections \
             (raise it with `ulimit -n`, as scripts/e2e does)",
            args.connections
        );
    }
    let daemon_bin = std::fs::canonicalize(&args.daemon)
        .with_context(|| format!("--daemon {}", args.daemon.display()))?;
    if args.work.exists() {
        std::fs::remove_dir_all(&args.work)
            .with_context(|| format!("wiping {}", args.work.display()))?;
    }
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;

    let secrets = RunSecrets {
        api_key: format!("e2e-key-{}", random_hex(16)),
        jwt_secret: format!("e2e-jwt-{}", random_hex(16)),
        encryption_key: random_hex(32),
        pg_password: format!("pgpw-{}", random_hex(8)),
    };
    // Trust authentication ignores the password: it is there to be looked for in the logs.
    let pg_url_with_password = {
        let (scheme, rest) = args
            .pg_url
            .split_once("://")
            .context("--pg-url: no scheme")?;
        let (creds, host) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
        let user = creds.split(':').next().unwrap_or("postgres");
        format!("{scheme}://{user}:{}@{host}", secrets.pg_password)
    };
    let schema = format!("tbe2e_{}", std::process::id());
    let mirror = Mirror::connect(&args.pg_url, &schema).await?;

    let fake = FakeKite::start_with(FakeOptions {
        now: system_now(),
        latency: Duration::from_millis(args.latency_ms),
        ..Default::default()
    })
    .await;
    let accounts: Vec<Account> = (0..args.accounts)
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
    let header_read_timeout_secs = 5;
    env.write_config(&ConfigSpec {
        kite_web_url: fake.web_url(),
        kite_api_url: fake.api_url(),
        pg_url: &pg_url_with_password,
        pg_schema: &schema,
        concurrency: 32,
        header_read_timeout_secs,
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
        if args.quick { "quick" } else { "full" },
        work.display(),
        daemon_bin.display()
    );

    let mut rows = Vec::new();

    // 1. Provisioning.
    let mut daemon = ctx.env.start("provision", "info,tokenbot=debug")?;
    let api = ctx.api.at(&daemon.addr);
    let t = Instant::now();
    let results = bounded(&ctx.accounts, 16, |a: Account| {
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
    let bad: Vec<String> = results
        .iter()
        .filter_map(|(u, r)| match r {
            Ok(r) if r.status == 201 => None,
            Ok(r) => Some(format!("{u}: {} {}", r.status, r.text())),
            Err(e) => Some(format!("{u}: {e:#}")),
        })
        .collect();
    rows.push(row(
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
    ));
    if !bad.is_empty() {
        return Ok(rows);
    }

    // 2. Chaos.
    if args.skip.contains("chaos") {
        rows.push(row("chaos", false, "skipped (--skip)"));
    } else {
        let mut report = chaos::ChaosReport::default();
        let result = chaos::run(&ctx, daemon, args.cycles, &mut report).await;
        let (pass, figures) = match &result {
            Ok(_) if report.failures.is_empty() && report.passed == args.cycles => {
                (true, report.figures(ctx.accounts.len()))
            }
            Ok(_) => (
                false,
                format!(
                    "{}; {}",
                    report.failures.join("; "),
                    report.figures(ctx.accounts.len())
                ),
            ),
            Err(e) => (
                false,
                format!("{e:#}; {}", report.figures(ctx.accounts.len())),
            ),
        };
        rows.push(row("chaos", pass, figures));
        daemon = match result {
            Ok(d) => d,
            Err(_) => ctx.env.start("after-chaos", "info,tokenbot=debug")?,
        };
    }

    // 3. Load, on a fresh daemon (its VmHWM is then the load's) at the default log level: at
    // debug every request would log a line.
    daemon.stop()?;
    let mut daemon = ctx.env.start("load", "info")?;
    let addr: std::net::SocketAddr = daemon.addr.parse()?;
    let bodies = Arc::new(load::Bodies::default());
    let target = load::Target {
        addr,
        key: Arc::from(secrets.api_key.as_str()),
        users: Arc::new(ctx.users()),
        bodies: bodies.clone(),
    };
    if args.skip.contains("load") {
        rows.push(row("load", false, "skipped (--skip)"));
    } else {
        let report = load::keep_alive(
            &target,
            daemon.pid(),
            args.connections,
            Duration::from_secs(args.load_secs),
        )
        .await;
        rows.push(row_alive(
            "load",
            report.pass(),
            report.figures(),
            daemon.alive(),
        ));
    }

    // 4. Slowloris.
    if args.skip.contains("slowloris") {
        rows.push(row("slowloris", false, "skipped (--skip)"));
    } else {
        let report = load::slowloris(
            &target,
            args.slowloris,
            Duration::from_secs(args.slow_secs),
            header_read_timeout_secs,
        )
        .await;
        rows.push(row_alive(
            "slowloris",
            report.pass(),
            report.figures(),
            daemon.alive(),
        ));
    }

    let refusal = mirror_refusal(&ctx, &ctx.api.at(&daemon.addr)).await;

    // 5. Schemathesis, against a daemon of its own (see `schemathesis_daemon`).
    daemon.stop()?;
    let st_accounts: Vec<Account> = (0..3).map(|n| Account::generate('s', n)).collect();
    for a in &st_accounts {
        ctx.fake.add_user(a.kite_user());
    }
    let st_env = schemathesis_env(&work, &schema);
    let jwt = http::mint_jwt(&secrets.jwt_secret, &st_accounts[0].user, 3600);
    let mut har = None;
    let daemon = ctx
        .env
        .start_with("schemathesis", "info,tokenbot=debug", &st_env)?;
    let api = ctx.api.at(&daemon.addr);
    if args.skip.contains("schemathesis") {
        rows.push(row("schemathesis", false, "skipped (--skip)"));
    } else if let Some(bin) = &args.schemathesis {
        match prepare_schemathesis(&ctx, &api, &st_accounts, &jwt).await {
            Err(e) => rows.push(row("schemathesis", false, format!("{e:#}"))),
            Ok(()) => {
                let (bin, work, addr, key, jwt, examples) = (
                    bin.clone(),
                    work.clone(),
                    daemon.addr.clone(),
                    secrets.api_key.clone(),
                    jwt.clone(),
                    args.examples,
                );
                let users: Vec<String> = st_accounts.iter().map(|a| a.user.clone()).collect();
                let bin = std::fs::canonicalize(&bin).unwrap_or(bin);
                let report = tokio::task::spawn_blocking(move || {
                    schemathesis::run(&bin, &work, &addr, &key, &jwt, examples, &users)
                })
                .await?;
                match report {
                    Ok(report) => {
                        har = Some(report.har.clone());
                        rows.push(row("schemathesis", report.pass, report.figures));
                    }
                    Err(e) => rows.push(row("schemathesis", false, format!("{e:#}"))),
                }
            }
        }
    } else {
        rows.push(row(
            "schemathesis",
            false,
            "not run: no --schemathesis PATH (scripts/e2e installs it)",
        ));
    }

    // 6. /metrics, a clean stop, the last vault verify (both vaults), the mirror dump.
    let metrics = api.get("/metrics", Auth::Key).await?;
    let mut daemon = daemon;
    let alive = daemon.alive();
    let stopped = daemon.stop();
    let (verified_main, verify_out) = ctx.env.verify("final")?;
    let (verified_st, verify_st_out) = ctx.env.verify_with("final-schemathesis", &st_env)?;
    let dump_path = work.join("pg_dump.sql");
    let dump = std::process::Command::new("pg_dump")
        .args(pg_dump_args(&args.pg_url, &format!("{schema}*")))
        .output()
        .context("running pg_dump")?;
    std::fs::write(&dump_path, &dump.stdout)?;
    let dump_ok = dump.status.success() && !dump.stdout.is_empty();
    let final_ok =
        alive && stopped.is_ok() && verified_main && verified_st && metrics.status == 200;
    rows.push(row(
        "final state",
        final_ok,
        format!(
            "daemon alive after schemathesis: {alive}; SIGTERM: {}; vault verify: {}; \
             schemathesis's vault verify: {}; /metrics: {}",
            match &stopped {
                Ok(()) => "clean exit".to_owned(),
                Err(e) => format!("{e:#}"),
            },
            if verified_main {
                verify_summary(&verify_out)
            } else {
                format!("FAILED\n{verify_out}")
            },
            if verified_st {
                verify_summary(&verify_st_out)
            } else {
                format!("FAILED\n{verify_st_out}")
            },
            metrics.status
        ),
    ));

    // 7. The secrets audit.
    capture.flush();
    let mut needles = audit::Needles {
        secrets: vec![
            ("the service API key".into(), secrets.api_key.clone()),
            ("JWT_SECRET".into(), secrets.jwt_secret.clone()),
            ("ENCRYPTION_KEY".into(), secrets.encryption_key.clone()),
            (
                "the PostgreSQL password".into(),
                secrets.pg_password.clone(),
            ),
            ("the minted JWT".into(), jwt.clone()),
        ],
        tokens: ctx
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect(),
    };
    for a in ctx.accounts.iter().chain(&st_accounts) {
        needles.secrets.extend(a.secrets());
    }
    let mut responses = vec![audit::Source::File(capture.path().to_owned())];
    for (i, b) in bodies.all().into_iter().enumerate() {
        responses.push(audit::Source::Bytes(format!("load body {i}"), b.to_vec()));
    }
    let mut allowed = 0;
    if let Some(har) = &har {
        for (i, r) in schemathesis::har_responses(har).into_iter().enumerate() {
            let (text, n) = allow_kite_login_url(&r, &st_accounts);
            allowed += n;
            responses.push(audit::Source::Bytes(
                format!("schemathesis response {i} ({} {})", r.method, r.url),
                text,
            ));
        }
    }
    let places = vec![
        audit::Place {
            name: "log files".into(),
            sources: audit::files_under(&ctx.env.log_dir())
                .into_iter()
                .map(audit::Source::File)
                .collect(),
            tokens_forbidden: true,
        },
        audit::Place {
            name: "stderr+CLI".into(),
            sources: audit::files_under(&ctx.env.stderr_dir())
                .into_iter()
                .map(audit::Source::File)
                .collect(),
            tokens_forbidden: true,
        },
        audit::Place {
            name: "vault file".into(),
            sources: vault_files(&ctx.env.vault_path())
                .into_iter()
                .chain(vault_files(&work.join(SCHEMATHESIS_VAULT)))
                .collect(),
            tokens_forbidden: true,
        },
        audit::Place {
            name: "pg_dump".into(),
            sources: vec![audit::Source::File(dump_path.clone())],
            tokens_forbidden: false,
        },
        audit::Place {
            name: "/metrics".into(),
            sources: vec![audit::Source::Bytes(
                "/metrics".into(),
                metrics.body.clone(),
            )],
            tokens_forbidden: true,
        },
        audit::Place {
            name: "/health/detailed after a refused row".into(),
            sources: match &refusal {
                Ok((detailed, _)) => vec![audit::Source::Bytes(
                    "/health/detailed".into(),
                    detailed.body.clone(),
                )],
                Err(_) => vec![],
            },
            tokens_forbidden: true,
        },
        audit::Place {
            name: "API responses".into(),
            sources: responses,
            tokens_forbidden: false,
        },
    ];
    let hits = audit::search(&needles, &places);
    let clean = hits
        .iter()
        .all(|h| h.secret_hits == 0 && h.token_hits.unwrap_or(0) == 0 && h.files > 0);
    let per_place: Vec<String> = hits
        .iter()
        .map(|h| {
            let tokens = match h.token_hits {
                Some(n) => format!(", tokens {n}"),
                None => String::new(),
            };
            let examples = if h.examples.is_empty() {
                String::new()
            } else {
                format!(" [{}]", h.examples.join("; "))
            };
            format!(
                "{} ({} files, {:.1} MiB): secrets {}{tokens}{examples}",
                h.name,
                h.files,
                h.bytes as f64 / 1048576.0,
                h.secret_hits
            )
        })
        .collect();
    let refusal_shown = match &refusal {
        Ok((_, error)) => format!("the refused row shown as: {error}"),
        Err(e) => format!("the refused row: FAILED: {e:#}"),
    };
    rows.push(row(
        "secrets audit",
        clean && dump_ok && refusal.is_ok(),
        format!(
            "{} secrets and {} access tokens searched; {}; allowed: {allowed} Kite api_keys as \
             `api_key=` of the Kite login URL that GET /api/login/kite/{{userId}}/url answers; \
             {refusal_shown}{}",
            needles.secrets.len(),
            needles.tokens.len(),
            per_place.join("; "),
            if dump_ok { "" } else { "; pg_dump FAILED" }
        ),
    ));
    ctx.mirror.drop_schema().await;
    Ok(rows)
}

/// A row PostgreSQL refuses, for the secrets audit: a check on the mirror's table that no token
/// passes, one account logged in again, and `/health/detailed` read until the mirror reports the
/// refusal; the answer and the error it shows. PostgreSQL's DETAIL for it quotes the row, token
/// included ("Failing row contains (..., <token>, ...)"): the audit searches that answer as a
/// place where no token may be. The check is then dropped, and the mirror must catch up.
async fn mirror_refusal(ctx: &Ctx, api: &Api) -> anyhow::Result<(http::Reply, String)> {
    const CHECK: &str = "e2e_no_new_tokens";
    let table = format!("{}.tokenbot_tokens", ctx.mirror.schema);
    ctx.mirror
        .execute(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {CHECK} CHECK (access_token IS NULL) NOT VALID"
        ))
        .await?;
    let shown = async {
        let user = &ctx.accounts[0].user;
        // Waits for the account's next TOTP step: up to 30 s.
        let r = api
            .post(
                &format!("/api/integration/tokens/refresh/{user}"),
                Auth::Key,
            )
            .await?;
        if r.status != 200 || r.json()["successful"] != 1 {
            bail!("refreshing {user}: {} {}", r.status, r.text());
        }
        let t = api.get(&format!("/api/tokens/{user}"), Auth::Key).await?;
        match t.json()["access_token"].as_str() {
            Some(token) => ctx.note_token(token),
            None => bail!(
                "no token for {user} after its refresh: {} {}",
                t.status,
                t.text()
            ),
        }
        let started = Instant::now();
        loop {
            let detailed = api.get("/health/detailed", Auth::Key).await?;
            let error = detailed.json()["mirror"]["last_error"]
                .as_str()
                .filter(|e| e.contains(CHECK))
                .map(str::to_owned);
            if let Some(error) = error {
                return Ok((detailed, error));
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "/health/detailed did not report the refused row within 30 s: {}",
                    detailed.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    .await;
    ctx.mirror
        .execute(&format!(
            "ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {CHECK}"
        ))
        .await?;
    let shown = shown?;
    // Without the check the mirror delivers the record at its next attempt.
    let started = Instant::now();
    loop {
        let detailed = api.get("/health/detailed", Auth::Key).await?.json();
        if detailed["mirror"]["backlog"] == 0 && detailed["mirror"]["last_error"].is_null() {
            return Ok(shown);
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the mirror did not catch up within 30 s of the check's removal: {detailed}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The one place a provisioned credential may appear in an answer: Kite's login URL carries the
/// app's `api_key` as a query parameter (Kite's protocol: the browser takes it to Kite), and
/// `GET /api/login/kite/{userId}/url` answers that URL. In such an answer (200, for that user's
/// own key) `api_key=<key>` is replaced before the search and counted; the key anywhere else,
/// and every other secret, still counts as a hit.
fn allow_kite_login_url(r: &schemathesis::HarResponse, accounts: &[Account]) -> (Vec<u8>, u64) {
    let path = r
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, p)| p);
    let path = path.split('?').next().unwrap_or(path);
    let user = path
        .strip_prefix("api/login/kite/")
        .and_then(|p| p.strip_suffix("/url"));
    let account = user.and_then(|u| accounts.iter().find(|a| a.user == u));
    let (Some(account), "GET", 200) = (account, r.method.as_str(), r.status) else {
        return (r.text.clone(), 0);
    };
    let text = String::from_utf8_lossy(&r.text);
    let needle = format!("api_key={}", account.api_key);
    let n = text.matches(&needle).count() as u64;
    (text.replace(&needle, "api_key=[allowed]").into_bytes(), n)
}

/// The schemathesis daemon's vault, in the work directory.
const SCHEMATHESIS_VAULT: &str = "vault-schemathesis.redb";

/// Overrides for the daemon schemathesis runs against. It gets a vault of its own (with three
/// accounts of its own), so that what schemathesis changes (accounts replaced with generated
/// fields, removed, paused) touches nothing the other scenarios checked, and a refresh covers
/// three accounts, not all of them. Its mirror writes to a schema of its own.
///
/// - `refresh.login_timeout_secs = 3`: each login of an account needs a TOTP step it has not
///   used; a refresh repeated within one 30 s step would wait for the next one (up to 35 s, which
///   is correct behaviour) and schemathesis repeats refreshes dozens of times. With 3 s, the
///   refresher fails such a login at once, before it contacts the broker (class `network`), which
///   is answered like any failed login.
/// - `server.public_url`: set, as in a deployment that offers assisted login; without it
///   `GET /api/login/{broker}/{userId}/url` answers 503 `public_url_not_configured` by design.
fn schemathesis_env(work: &Path, schema: &str) -> Vec<(String, String)> {
    vec![
        (
            "TOKENBOT_VAULT__PATH".into(),
            work.join(SCHEMATHESIS_VAULT).display().to_string(),
        ),
        ("TOKENBOT_REFRESH__LOGIN_TIMEOUT_SECS".into(), "3".into()),
        (
            "TOKENBOT_SERVER__PUBLIC_URL".into(),
            "http://tokenbot.e2e.invalid".into(),
        ),
        (
            "TOKENBOT_MIRROR__POSTGRES__SCHEMA".into(),
            format!("{schema}_st"),
        ),
        (
            "TOKENBOT_MIRROR__POSTGRES__NOTIFY_CHANNEL".into(),
            format!("{schema}_st"),
        ),
    ]
}

/// Provision the schemathesis daemon's accounts, log them in once, and check the JWT.
async fn prepare_schemathesis(
    ctx: &Ctx,
    api: &Api,
    accounts: &[Account],
    jwt: &str,
) -> anyhow::Result<()> {
    for a in accounts {
        let r = api
            .put_json(
                &format!("/api/users/{}/accounts/kite", a.user),
                Auth::Key,
                &a.provision_body(),
            )
            .await?;
        if r.status != 201 {
            bail!(
                "provisioning {} for schemathesis: {} {}",
                a.user,
                r.status,
                r.text()
            );
        }
    }
    let r = api
        .post("/api/integration/tokens/refresh-all", Auth::Key)
        .await?;
    if r.status != 200 || r.json()["successful"] != accounts.len() {
        bail!("refresh-all before schemathesis: {} {}", r.status, r.text());
    }
    for a in accounts {
        let t = api
            .get(&format!("/api/tokens/{}", a.user), Auth::Key)
            .await?;
        if let Some(token) = t.json()["access_token"].as_str() {
            ctx.note_token(token);
        }
    }
    let me = api.get("/api/credentials/status", Auth::Jwt(jwt)).await?;
    if me.status != 200 {
        bail!("the minted JWT is refused: {} {}", me.status, me.text());
    }
    Ok(())
}

/// The vault file (and, for a sled vault, its directory's files).
fn vault_files(path: &Path) -> Vec<audit::Source> {
    if path.is_dir() {
        audit::files_under(path)
            .into_iter()
            .map(audit::Source::File)
            .collect()
    } else {
        vec![audit::Source::File(path.to_owned())]
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
