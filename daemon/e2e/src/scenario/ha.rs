//! High availability (`--ha`): three daemons (`serve`) on 127.0.0.1 sharing one PostgreSQL vault,
//! and the figures of a failover. Run instead of the other scenarios.
//!
//! 1. Set-up: a fresh schema in the test database, `tokenbot init` in it, three nodes
//!    (`failover_secs` 15, the default), the run's accounts provisioned through the leader.
//! 2. Failover, `--cycles` times. Kite's schedule is set to every minute
//!    (`TOKENBOT_BROKERS__KITE__SCHEDULE`), so at each minute's start every token is older than
//!    the broker's last scheduled time (stale, as every token is at 08:00 IST each morning) and
//!    the leader's scheduler logs every account in: that run is the refresh of all accounts the
//!    leader dies in. (A refresh-all POSTed to the leader would not do: the tokens it replaces
//!    are fresh by the catch-up rule, so once it died with its node nothing would resume it.)
//!    Once the fake has issued a random 10-30 % of the new tokens, the leader gets SIGKILL.
//!    Measured from the kill: until a survivor's `/health` says `leader` (polled every 50 ms);
//!    until the fake receives the first password of a login begun after the kill, and issues
//!    the first token of one (the run resumed: the new leader's catch-up takes the stale
//!    accounts); until every account holds a new token. The killed node is started again (a
//!    follower); then every account must be listed on every node, every node must serve the
//!    same tokens and the fake accept each, no TOTP step may have been sent twice for an
//!    account, no account may have had two logins at once (the fake's per-account count), and
//!    exactly one node may lead.
//! 3. The cluster restarted on Kite's own schedule: a refresh-all POSTed to the leader, timed
//!    against the floor (accounts x requests per login x latency / concurrency, as
//!    docs/performance.md's refresh figure); token reads from a follower (the `load` generator).
//! 4. A redb daemon (the driver's ordinary configuration) with as many accounts of its own: the
//!    same refresh-all and the same reads, for comparison.
//!
//! Rows: `ha provision`, `ha failover`, `ha resume`, `ha refresh-all`, `ha reads`, `ha
//! invariants` (the last checked again at the end, over every login of the run).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fake_brokers::Recorder;

use crate::Ctx;
use crate::chaos::{check_accounts_listed, wait_for_fresh_step};
use crate::cli::Options;
use crate::cluster::{self, NODES, SharedVault};
use crate::daemon::Daemon;
use crate::http::{Api, Auth};
use crate::load::{self, LoadReport};
use crate::scenario::{DEBUG_LOGS, provision_accounts};
use crate::setup::{CONCURRENCY, Run};
use crate::stats::{Rng, median_max, secs, unix_ms};
use crate::summary::{Row, row};
use crate::world::{Account, read_tokens};

/// `[vault] failover_secs` of the nodes: the default.
const FAILOVER_SECS: u64 = 15;
/// Kite's schedule during the failover cycles.
const EVERY_MINUTE: &str = "* * * * *";
/// How often the survivors' `/health` is read after a kill.
const HEALTH_POLL: Duration = Duration::from_millis(50);
/// Requests of one Kite login (the refresh figure's floor in docs/performance.md).
const REQUESTS_PER_LOGIN: u32 = 6;
/// The fake Kite's routes: a login's password (its first step) and its token (its last).
const PASSWORD_ROUTE: &str = "/api/login";
const TOKEN_ROUTE: &str = "/session/token";

/// What the failover cycles measured and found.
#[derive(Default)]
struct Failover {
    cycles: usize,
    passed: usize,
    initial: Duration,
    done_at_kill: Vec<u64>,
    to_leader: Vec<Duration>,
    to_login: Vec<Duration>,
    to_token: Vec<Duration>,
    to_complete: Vec<Duration>,
    /// Cycles whose invariants were checked.
    checked: usize,
    /// Over the whole run: accounts that sent a TOTP step twice, codes the fake refused, and the
    /// most logins of one account at once.
    steps_twice: usize,
    refused_codes: usize,
    most_at_once: usize,
    failures: Vec<String>,
    broken: Vec<String>,
}

/// The run's HA rows. An error is a set-up that could not go on (the `setup` row).
pub async fn run(run: &Run, opts: &Options) -> anyhow::Result<Vec<Row>> {
    let ctx = &run.ctx;
    let vault = SharedVault::create(
        &ctx.env,
        &ctx.mirror,
        &opts.pg_url,
        &format!("{}_vault", run.schema),
        FAILOVER_SECS,
    )
    .await?;
    let mut rows = Vec::new();
    if let Err(e) = phases(run, opts, &vault, &mut rows).await {
        rows.push(row("ha", false, format!("{e:#}")));
    }
    if rows.iter().all(|r| r.pass) {
        vault.drop_schema(&ctx.mirror).await;
        ctx.mirror.drop_schema().await;
    } else {
        eprintln!(
            "e2e: ha: the vault's schema {} and the mirror's {} are kept for inspection",
            vault.schema, ctx.mirror.schema
        );
    }
    Ok(rows)
}

async fn phases(
    run: &Run,
    opts: &Options,
    vault: &SharedVault,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let ctx = &run.ctx;
    let n = ctx.accounts.len();
    let cron = vec![(
        "TOKENBOT_BROKERS__KITE__SCHEDULE".to_owned(),
        EVERY_MINUTE.to_owned(),
    )];

    // 1. Three nodes, the accounts.
    let mut nodes = start_nodes(ctx, vault, "ha-n", DEBUG_LOGS, &cron)?;
    let leader = cluster::one_leader(&ctx.api, &nodes, Duration::from_secs(20)).await?;
    let t = Instant::now();
    let bad = provision_accounts(&ctx.api.at(&nodes[leader].addr), &ctx.accounts).await;
    rows.push(row(
        "ha provision",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{n} Kite accounts into the postgres vault (schema {}, made by `tokenbot init`) \
                 through the leader of {NODES} daemons in {} (all 201)",
                vault.schema,
                secs(t.elapsed())
            )
        } else {
            format!("{} refused, first: {}", bad.len(), bad[0])
        },
    ));
    if !bad.is_empty() {
        return Ok(());
    }

    // 2. Failover cycles.
    let mut report = Failover {
        cycles: opts.cycles,
        ..Failover::default()
    };
    if let Err(e) = failover(ctx, opts, vault, &cron, &mut nodes, &mut report).await {
        report.failures.push(format!("{e:#}"));
    }
    for d in nodes.drain(..) {
        let label = d.label.clone();
        if let Err(e) = d.stop() {
            report.broken.push(format!("{label}: SIGTERM: {e:#}"));
        }
    }
    rows.push(report.failover_row(n));
    rows.push(report.resume_row());

    // 3. Refresh-all and reads on the postgres vault, on Kite's own schedule.
    let mut nodes = start_nodes(ctx, vault, "ha-m", "info", &[])?;
    let leader = cluster::one_leader(&ctx.api, &nodes, Duration::from_secs(20)).await?;
    let pg_refresh = timed_refresh_all(ctx, &ctx.api.at(&nodes[leader].addr), n).await;
    let follower = (leader + 1) % nodes.len();
    let pg_reads = reads(run, opts, &nodes[follower], ctx.users()).await?;
    let follower_alive = nodes[follower].alive();
    for d in nodes.drain(..) {
        let label = d.label.clone();
        if let Err(e) = d.stop() {
            report.broken.push(format!("{label}: SIGTERM: {e:#}"));
        }
    }

    // 4. The same on a redb daemon, with accounts of its own.
    let redb_accounts: Vec<Account> = (0..n).map(|i| Account::generate('r', i)).collect();
    for a in &redb_accounts {
        ctx.fake.add_user(a.kite_user());
    }
    let mut single = ctx.env.start("ha-redb", "info")?;
    let api = ctx.api.at(&single.addr);
    let bad = provision_accounts(&api, &redb_accounts).await;
    if let Some(first) = bad.first() {
        bail!(
            "provisioning the redb daemon: {} refused, first: {first}",
            bad.len()
        );
    }
    let first = api
        .post("/api/integration/tokens/refresh-all", Auth::Key)
        .await?;
    if first.status != 200 || first.json()["successful"] != n {
        bail!(
            "the redb daemon's first refresh-all: {} {}",
            first.status,
            first.text()
        );
    }
    let redb_refresh = timed_refresh_all(ctx, &api, n).await;
    let redb_users = redb_accounts.iter().map(|a| a.user.clone()).collect();
    let redb_reads = reads(run, opts, &single, redb_users).await?;
    let single_alive = single.alive();
    if let Err(e) = single.stop() {
        report.broken.push(format!("redb daemon: SIGTERM: {e:#}"));
    }

    rows.push(refresh_row(opts, n, &pg_refresh, &redb_refresh));
    rows.push(reads_row(
        opts,
        &pg_reads,
        follower_alive,
        &redb_reads,
        single_alive,
    ));
    // Every login of the run, the redb daemon's too.
    let mut all = ctx.accounts.clone();
    all.extend(redb_accounts);
    report.broken.extend(login_invariants(ctx, &all));
    let (twice, refused) = totp_figures(ctx.fake.recorder(), &all);
    (report.steps_twice, report.refused_codes) = (twice.len(), refused);
    report.most_at_once = ctx.fake.recorder().max_concurrent_logins_per_account();
    rows.push(report.invariants_row());
    Ok(())
}

/// Start the nodes, one after another.
fn start_nodes(
    ctx: &Ctx,
    vault: &SharedVault,
    prefix: &str,
    log_level: &str,
    extra: &[(String, String)],
) -> anyhow::Result<Vec<Daemon>> {
    (1..=NODES)
        .map(|i| vault.start(&ctx.env, &format!("{prefix}{i}"), log_level, extra))
        .collect()
}

/// The first tokens, then the cycles; a failed cycle ends them.
async fn failover(
    ctx: &Ctx,
    opts: &Options,
    vault: &SharedVault,
    cron: &[(String, String)],
    nodes: &mut Vec<Daemon>,
    report: &mut Failover,
) -> anyhow::Result<()> {
    // Every account's first token: the leader's catch-up or its next scheduled run.
    let leader = cluster::one_leader(&ctx.api, nodes, Duration::from_secs(10)).await?;
    let started = Instant::now();
    let api = ctx.api.at(&nodes[leader].addr);
    let mut carry = Carry {
        prev: wait_new_tokens(ctx, &api, None, Duration::from_secs(180)).await?,
        rng: Rng::new(),
    };
    report.initial = started.elapsed();
    for c in 1..=opts.cycles {
        match cycle(ctx, c, (vault, cron), nodes, &mut carry, report).await {
            Ok(()) => {
                report.passed += 1;
                eprintln!(
                    "e2e: ha cycle {c}/{}: killed with {} of {} tokens issued; leader after {}, \
                     first new token after {}, all after {}",
                    opts.cycles,
                    report.done_at_kill.last().unwrap_or(&0),
                    ctx.accounts.len(),
                    secs(*report.to_leader.last().unwrap_or(&Duration::ZERO)),
                    secs(*report.to_token.last().unwrap_or(&Duration::ZERO)),
                    secs(*report.to_complete.last().unwrap_or(&Duration::ZERO)),
                );
            }
            Err(e) => {
                report.failures.push(format!("cycle {c}: {e:#}"));
                break;
            }
        }
    }
    Ok(())
}

/// What one cycle hands the next.
struct Carry {
    /// Every account's token before the cycle.
    prev: BTreeMap<String, String>,
    rng: Rng,
}

/// One cycle: the minute's scheduled run, SIGKILL of the leader, the times, the killed node
/// started again (on `vault`, with the settings `cron`), the checks.
async fn cycle(
    ctx: &Ctx,
    c: usize,
    (vault, cron): (&SharedVault, &[(String, String)]),
    nodes: &mut Vec<Daemon>,
    carry: &mut Carry,
    report: &mut Failover,
) -> anyhow::Result<()> {
    let Carry { prev, rng } = carry;
    let n = ctx.accounts.len();
    let rec = ctx.fake.recorder();

    // The next minute's start, with time to read every token before it.
    let minute = (unix_ms() + 5_000) / 60_000 * 60_000 + 60_000;
    sleep_until_ms(minute - 3_000).await;
    let issued_before = rec.requests_with_status(TOKEN_ROUTE, 200);
    let leader = cluster::one_leader(&ctx.api, nodes, Duration::from_secs(2)).await?;
    *prev = wait_new_tokens(ctx, &ctx.api.at(&nodes[leader].addr), None, Duration::ZERO).await?;
    if unix_ms() > minute - 100 {
        bail!("reading every token took until the minute's start");
    }

    // The leader's scheduled run; SIGKILL once the fake issued the cycle's share of tokens.
    let share = rng.range_f64(0.10, 0.30);
    let target = ((n as f64 * share).ceil() as u64).clamp(1, n as u64 - 1);
    loop {
        let issued = rec.requests_with_status(TOKEN_ROUTE, 200) - issued_before;
        if issued >= target {
            break;
        }
        if unix_ms() > minute + 60_000 {
            bail!(
                "the leader's scheduled run had {issued} of {n} tokens issued 60 s after the \
                 minute's start (waiting for {target})"
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let killed = nodes.remove(leader);
    let t0 = Instant::now();
    killed.kill()?;
    // Nothing the dead node sent can start at the fake any more: a password or a token request
    // counted from now on is a survivor's.
    let passwords_at_kill = rec.requests(PASSWORD_ROUTE);
    let token_requests = token_counts(rec);
    let done = rec.requests_with_status(TOKEN_ROUTE, 200) - issued_before;
    report.done_at_kill.push(done);
    if done >= n as u64 {
        bail!("the scheduled run had ended when its node was killed ({done} tokens)");
    }

    // The survivors' roles and the fake's counts, together.
    let led = cluster::first_leader(&ctx.api, nodes, t0, HEALTH_POLL, Duration::from_secs(60));
    let resumed = resumed(rec, t0, passwords_at_kill, token_requests);
    let (led, resumed) = tokio::join!(led, resumed);
    let (_, to_leader) = led?;
    let (to_login, to_token) = resumed?;

    // The killed node, again: a follower now.
    let again = vault.start(&ctx.env, &format!("ha-c{c:02}"), DEBUG_LOGS, cron)?;
    let role = cluster::health(&ctx.api, &again.addr).await;
    nodes.push(again);
    match role {
        Some((_, role)) if role == "follower" => {}
        other => bail!("the restarted node reports {other:?}, not a follower"),
    }

    // Every account with a new token.
    let leader = cluster::one_leader(&ctx.api, nodes, Duration::from_secs(10)).await?;
    let api = ctx.api.at(&nodes[leader].addr);
    let tokens = wait_new_tokens(ctx, &api, Some(&*prev), Duration::from_secs(120)).await?;
    let to_complete = t0.elapsed();
    report.to_leader.push(to_leader);
    report.to_login.push(to_login);
    report.to_token.push(to_token);
    report.to_complete.push(to_complete);

    let broken = cluster_invariants(ctx, nodes).await;
    report.checked += 1;
    let clean = broken.is_empty();
    report
        .broken
        .extend(broken.into_iter().map(|b| format!("cycle {c}: {b}")));
    *prev = tokens;
    if !clean {
        bail!("an invariant failed (see the invariants row)");
    }
    Ok(())
}

/// `(requests started, answered 200, answered)` of the token route.
fn token_counts(rec: &Recorder) -> (u64, u64, u64) {
    let answered = rec
        .requests_by_route_and_status()
        .into_iter()
        .filter(|((route, _), _)| route == TOKEN_ROUTE)
        .map(|(_, n)| n)
        .sum();
    (
        rec.requests(TOKEN_ROUTE),
        rec.requests_with_status(TOKEN_ROUTE, 200),
        answered,
    )
}

/// Times from `t0` (the kill) until the fake receives the password of a login begun after it,
/// and until it issues the token of one: more tokens issued than the dead node's requests
/// could still bring (those it had begun and the fake had not answered).
async fn resumed(
    rec: &Recorder,
    t0: Instant,
    passwords_at_kill: u64,
    (started, ok, answered): (u64, u64, u64),
) -> anyhow::Result<(Duration, Duration)> {
    let pending = started - answered;
    let mut to_login = None;
    loop {
        if to_login.is_none() && rec.requests(PASSWORD_ROUTE) > passwords_at_kill {
            to_login = Some(t0.elapsed());
        }
        if rec.requests_with_status(TOKEN_ROUTE, 200) > ok + pending {
            let to_token = t0.elapsed();
            return Ok((to_login.unwrap_or(to_token), to_token));
        }
        if t0.elapsed() > Duration::from_secs(90) {
            bail!(
                "no token for a login begun after the kill within 90 s (first password after \
                 the kill: {to_login:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Read every token from `api` until each account holds one that differs from its token in
/// `prev` (any token when `None`), `timeout` at most (one read when zero).
async fn wait_new_tokens(
    ctx: &Ctx,
    api: &Api,
    prev: Option<&BTreeMap<String, String>>,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, String>> {
    let started = Instant::now();
    let users = ctx.users();
    loop {
        let read = read_tokens(api, &users).await?;
        let new: BTreeMap<String, String> = read
            .into_iter()
            .filter_map(|(u, t)| Some((u, t?)))
            .filter(|(u, t)| prev.is_none_or(|p| p.get(u) != Some(t)))
            .collect();
        if new.len() == users.len() {
            return Ok(new);
        }
        if started.elapsed() >= timeout {
            bail!(
                "{} of {} accounts hold a {}token after {}",
                new.len(),
                users.len(),
                if prev.is_some() { "new " } else { "" },
                secs(started.elapsed())
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn sleep_until_ms(at_ms: i64) {
    let wait = at_ms - unix_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// After a cycle, on every node: every account listed; the same tokens served (a follower's
/// cached reads follow the vault's change notifications; 10 s allowed), each one the fake
/// accepts; and one leader. Then the fake's counts ([`login_invariants`]). What failed.
async fn cluster_invariants(ctx: &Ctx, nodes: &[Daemon]) -> Vec<String> {
    let mut broken = Vec::new();
    for d in nodes {
        if let Err(e) = check_accounts_listed(ctx, &ctx.api.at(&d.addr)).await {
            broken.push(format!("{}: {e:#}", d.label));
        }
    }
    match served_alike(ctx, nodes, Duration::from_secs(10)).await {
        Ok(tokens) => {
            let refused: Vec<&str> = (ctx.accounts.iter())
                .filter(|a| !ctx.fake.token_is_valid(&a.api_key, &tokens[&a.user]))
                .map(|a| a.user.as_str())
                .collect();
            if !refused.is_empty() {
                broken.push(format!(
                    "{} served tokens the fake refuses (first {})",
                    refused.len(),
                    refused[0]
                ));
            }
        }
        Err(e) => broken.push(format!("{e:#}")),
    }
    if let Err(e) = cluster::one_leader(&ctx.api, nodes, Duration::from_secs(5)).await {
        broken.push(format!("{e:#}"));
    }
    broken.extend(login_invariants(ctx, &ctx.accounts));
    broken
}

/// Every node's tokens, read until all agree and every account has one (`timeout` at most).
async fn served_alike(
    ctx: &Ctx,
    nodes: &[Daemon],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, String>> {
    let started = Instant::now();
    let users = ctx.users();
    loop {
        let mut reads = Vec::new();
        for d in nodes {
            let read = read_tokens(&ctx.api.at(&d.addr), &users)
                .await
                .with_context(|| format!("reading the tokens from {}", d.label))?;
            reads.push(read);
        }
        let missing = reads[0].values().filter(|t| t.is_none()).count();
        let differ = (reads.iter().skip(1))
            .map(|r| {
                users
                    .iter()
                    .filter(|u| r.get(*u) != reads[0].get(*u))
                    .count()
            })
            .max()
            .unwrap_or(0);
        if missing == 0 && differ == 0 {
            return Ok(reads
                .swap_remove(0)
                .into_iter()
                .filter_map(|(u, t)| Some((u, t?)))
                .collect());
        }
        if started.elapsed() > timeout {
            bail!(
                "after {}: {missing} accounts without a token on {}; up to {differ} tokens \
                 differ between nodes",
                secs(started.elapsed()),
                nodes[0].label
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the fake saw of every login of `accounts` so far: no TOTP step sent twice for one
/// account, no account with two logins in flight at once. What failed.
fn login_invariants(ctx: &Ctx, accounts: &[Account]) -> Vec<String> {
    let rec = ctx.fake.recorder();
    let mut broken = Vec::new();
    let (twice, refused) = totp_figures(rec, accounts);
    if let Some((user, step)) = twice.first() {
        broken.push(format!(
            "{} accounts sent a TOTP step twice (first {user}, step {step}); {refused} codes refused",
            twice.len()
        ));
    }
    let concurrent = rec.max_concurrent_logins_per_account();
    if concurrent > 1 {
        let worst: Vec<String> = (rec.concurrent_logins_per_account().into_iter())
            .filter(|(_, n)| *n > 1)
            .map(|(u, n)| format!("{u} {n}"))
            .take(5)
            .collect();
        broken.push(format!(
            "an account had {concurrent} logins at once ({})",
            worst.join(", ")
        ));
    }
    broken
}

/// Accounts that sent one TOTP step twice (user, step), and the codes the fake refused.
fn totp_figures(rec: &Recorder, accounts: &[Account]) -> (Vec<(String, u64)>, usize) {
    let mut twice = Vec::new();
    let mut refused = 0;
    for a in accounts {
        let uses = rec.totp_uses(&a.broker_user_id);
        refused += uses.iter().filter(|u| !u.accepted).count();
        let mut seen = BTreeSet::new();
        if let Some(step) = uses
            .iter()
            .filter_map(|u| u.step)
            .find(|s| !seen.insert(*s))
        {
            twice.push((a.broker_user_id.clone(), step));
        }
    }
    (twice, refused)
}

/// A refresh-all timed: its wall time and the fake's requests per login.
struct Refresh {
    wall: Duration,
    requests_per_login: f64,
}

/// Wait for a TOTP step no account has used, then `POST /api/integration/tokens/refresh-all`;
/// every one of `n` accounts must succeed.
async fn timed_refresh_all(ctx: &Ctx, api: &Api, n: usize) -> Result<Refresh, String> {
    wait_for_fresh_step(unix_ms()).await;
    let rec = ctx.fake.recorder();
    let before = rec.total_requests();
    let t = Instant::now();
    let reply = api
        .post("/api/integration/tokens/refresh-all", Auth::Key)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let wall = t.elapsed();
    if reply.status != 200 || reply.json()["successful"] != n {
        return Err(format!("refresh-all: {} {}", reply.status, reply.text()));
    }
    Ok(Refresh {
        wall,
        requests_per_login: (rec.total_requests() - before) as f64 / n as f64,
    })
}

/// The load generator's keep-alive reads against one daemon.
async fn reads(
    run: &Run,
    opts: &Options,
    daemon: &Daemon,
    users: Vec<String>,
) -> anyhow::Result<LoadReport> {
    let target = load::Target {
        addr: daemon.addr.parse()?,
        key: Arc::from(run.secrets.api_key.as_str()),
        users: Arc::new(users),
        bodies: Arc::new(load::Bodies::default()),
    };
    Ok(load::keep_alive(
        &target,
        daemon.pid(),
        opts.connections,
        Duration::from_secs(opts.load_secs),
    )
    .await)
}

fn refresh_row(
    opts: &Options,
    n: usize,
    pg: &Result<Refresh, String>,
    redb: &Result<Refresh, String>,
) -> Row {
    let floor = Duration::from_secs_f64(
        n as f64 * f64::from(REQUESTS_PER_LOGIN) * opts.latency_ms as f64
            / 1000.0
            / f64::from(CONCURRENCY),
    );
    let show = |r: &Result<Refresh, String>| match r {
        Ok(r) => format!(
            "{} ({:.2} x the floor; {:.1} requests per login)",
            secs(r.wall),
            r.wall.as_secs_f64() / floor.as_secs_f64(),
            r.requests_per_login
        ),
        Err(e) => format!("FAILED: {e}"),
    };
    row(
        "ha refresh-all",
        pg.is_ok() && redb.is_ok(),
        format!(
            "{n} accounts: postgres vault (POST on the leader of {NODES}) {}; redb daemon {}; \
             floor {n} x {REQUESTS_PER_LOGIN} requests x {} ms / concurrency {CONCURRENCY} = {}",
            show(pg),
            show(redb),
            opts.latency_ms,
            secs(floor)
        ),
    )
}

fn reads_row(
    opts: &Options,
    pg: &LoadReport,
    pg_alive: bool,
    redb: &LoadReport,
    redb_alive: bool,
) -> Row {
    let show = |r: &LoadReport| {
        let kinds = if r.error_kinds.is_empty() {
            String::new()
        } else {
            format!(" {:?}", r.error_kinds)
        };
        format!(
            "{:.0} req/s (p50 {:.2} ms, p99 {:.2} ms, errors {}{kinds})",
            r.requests as f64 / r.secs,
            f64::from(r.p50_us) / 1000.0,
            f64::from(r.p99_us) / 1000.0,
            r.errors
        )
    };
    let ratio = (pg.requests as f64 / pg.secs) / (redb.requests as f64 / redb.secs).max(1.0);
    row(
        "ha reads",
        pg.pass() && redb.pass() && pg_alive && redb_alive,
        format!(
            "GET /api/tokens/:userId, {} keep-alive connections for {} s each: follower of the \
             postgres vault {}; redb daemon {}; follower / redb {ratio:.2}{}",
            opts.connections,
            opts.load_secs,
            show(pg),
            show(redb),
            if pg_alive && redb_alive {
                ""
            } else {
                "; a daemon died"
            }
        ),
    )
}

impl Failover {
    fn complete(&self) -> bool {
        self.failures.is_empty() && self.passed == self.cycles
    }

    fn failover_row(&self, n: usize) -> Row {
        let failures = if self.failures.is_empty() {
            String::new()
        } else {
            format!("{}; ", self.failures.join("; "))
        };
        row(
            "ha failover",
            self.complete(),
            format!(
                "{failures}{}/{} cycles; {n} accounts, {NODES} daemons, failover_secs \
                 {FAILOVER_SECS}; each cycle SIGKILLs the leader during its scheduled run of \
                 every account, with {}..{} of {n} new tokens issued by the fake (not all \
                 stored yet); from the kill until a \
                 survivor's /health says leader (polled every {} ms): {} (first tokens {} \
                 after start)",
                self.passed,
                self.cycles,
                self.done_at_kill.iter().min().copied().unwrap_or(0),
                self.done_at_kill.iter().max().copied().unwrap_or(0),
                HEALTH_POLL.as_millis(),
                median_max(&self.to_leader),
                secs(self.initial),
            ),
        )
    }

    fn resume_row(&self) -> Row {
        row(
            "ha resume",
            self.complete() && self.to_token.len() == self.cycles,
            format!(
                "from the kill until the fake issues the first token of a login begun after \
                 it (the new leader's catch-up): {}; until that login's password reaches the \
                 fake: {}; until every account holds a new token (all read every 0.5 s; the \
                 accounts whose TOTP step the dead leader had spent wait for the next one): {}",
                median_max(&self.to_token),
                median_max(&self.to_login),
                median_max(&self.to_complete),
            ),
        )
    }

    fn invariants_row(&self) -> Row {
        let whole_run = format!(
            "whole run (redb daemon included), as the fake saw it: {} accounts sent a TOTP step \
             twice, {} codes refused, at most {} login(s) of one account at once",
            self.steps_twice, self.refused_codes, self.most_at_once
        );
        let checked = format!("{} of {} cycles checked", self.checked, self.cycles);
        if self.broken.is_empty() {
            row(
                "ha invariants",
                self.checked == self.cycles,
                format!(
                    "{checked}: every account listed on all {NODES} nodes, all nodes serve the \
                     same tokens, each valid at the fake, one leader; {whole_run}"
                ),
            )
        } else {
            row(
                "ha invariants",
                false,
                format!("{checked}; {}; {whole_run}", self.broken.join("; ")),
            )
        }
    }
}
