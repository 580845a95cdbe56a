//! Chaos: SIGKILL the daemon in the middle of a refresh-all, then check the vault, the accounts,
//! the tokens and the mirror after a restart.
//!
//! Each cycle:
//! 1. waits for a TOTP step that no account has used yet (every login of an account needs a fresh
//!    30 s step: without this wait the refresh would stall on it, not fail);
//! 2. `POST /api/integration/tokens/refresh-all` in the background and, once the fake Kite has
//!    issued a random fraction (10-80 %) of the accounts' tokens since the cycle started, SIGKILL;
//!    the fake must show some but not all logins done;
//! 3. `tokenbot vault verify` with the daemon stopped (exit 0);
//! 4. restart: `GET /api/users` lists every account; every account's token is the one read before
//!    the cycle or a new one, and either way one the fake accepts;
//! 5. the mirror's table converges to exactly those tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::Ctx;
use crate::daemon::Daemon;
use crate::http::{Api, Auth};
use crate::stats::{Rng, secs, spread, unix_ms};
use crate::world::read_tokens;

/// What the chaos scenario measured.
#[derive(Default)]
pub struct ChaosReport {
    pub cycles: usize,
    pub passed: usize,
    pub initial_refresh: Duration,
    pub kill_delays: Vec<Duration>,
    pub done_at_kill: Vec<u64>,
    pub in_flight_at_kill: Vec<usize>,
    pub new_tokens: Vec<usize>,
    pub converge: Vec<Duration>,
    pub step_waits: Vec<Duration>,
    pub failures: Vec<String>,
}

impl ChaosReport {
    pub fn figures(&self, accounts: usize) -> String {
        let (min_done, max_done) = (
            self.done_at_kill.iter().min().copied().unwrap_or(0),
            self.done_at_kill.iter().max().copied().unwrap_or(0),
        );
        format!(
            "{}/{} cycles passed; {accounts} accounts; initial refresh-all {}; \
             kill delay min/median/max {}; logins done at kill {min_done}..{max_done} of {accounts} \
             (in flight {}..{}); tokens changed per cycle {}..{}; mirror equal to the tokens {} after the restart; \
             waits for a fresh TOTP step {}",
            self.passed,
            self.cycles,
            secs(self.initial_refresh),
            spread(&self.kill_delays),
            self.in_flight_at_kill.iter().min().copied().unwrap_or(0),
            self.in_flight_at_kill.iter().max().copied().unwrap_or(0),
            self.new_tokens.iter().min().copied().unwrap_or(0),
            self.new_tokens.iter().max().copied().unwrap_or(0),
            spread(&self.converge),
            spread(&self.step_waits),
        )
    }
}

/// Every account's current token, with a check that each is one the fake accepts.
async fn tokens_now(ctx: &Ctx, api: &Api) -> anyhow::Result<BTreeMap<String, String>> {
    let read = read_tokens(api, &ctx.users()).await?;
    let mut out = BTreeMap::new();
    for account in &ctx.accounts {
        match read.get(&account.user).cloned().flatten() {
            Some(token) => {
                ctx.note_token(&token);
                out.insert(account.user.clone(), token);
            }
            None => bail!("{} has no token", account.user),
        }
    }
    Ok(out)
}

/// The initial refresh-all, run to completion: every account gets a token. Returns the daemon's
/// tokens.
pub async fn initial(
    ctx: &Ctx,
    api: &Api,
    report: &mut ChaosReport,
) -> anyhow::Result<BTreeMap<String, String>> {
    let started = Instant::now();
    let reply = api
        .post("/api/integration/tokens/refresh-all", Auth::Key)
        .await?;
    report.initial_refresh = started.elapsed();
    let summary = reply.json();
    if reply.status != 200 || summary["successful"] != ctx.accounts.len() {
        bail!("initial refresh-all: {} {}", reply.status, reply.text());
    }
    let tokens = tokens_now(ctx, api).await?;
    for account in &ctx.accounts {
        if !ctx
            .fake
            .token_is_valid(&account.api_key, &tokens[&account.user])
        {
            bail!("the fake refuses the initial token of {}", account.user);
        }
    }
    ctx.mirror
        .converge(&tokens, Duration::from_secs(60))
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(tokens)
}

/// Wait until the current 30 s TOTP step is later than the one containing `last_login_ms`.
pub async fn wait_for_fresh_step(last_login_ms: i64) -> Duration {
    let started = Instant::now();
    let next_step_ms = (last_login_ms / 30_000 + 1) * 30_000;
    let wait = next_step_ms - unix_ms();
    if wait > 0 {
        // A little past the boundary, so the daemon's clock agrees it has begun.
        tokio::time::sleep(Duration::from_millis(wait as u64 + 50)).await;
    }
    started.elapsed()
}

/// What one cycle hands the next.
struct Carry {
    /// When the last login may have happened (the kill), Unix ms.
    last_login_ms: i64,
    rng: Rng,
}

/// One cycle, from a running daemon to a restarted one.
async fn cycle(
    ctx: &Ctx,
    n: usize,
    daemon: Daemon,
    api: &Api,
    prev: &BTreeMap<String, String>,
    carry: &mut Carry,
    report: &mut ChaosReport,
) -> (Option<Daemon>, anyhow::Result<BTreeMap<String, String>>) {
    let done = match kill_mid_refresh(ctx, daemon, api, carry, report).await {
        Ok(done) => done,
        Err(e) => return (None, Err(e)),
    };
    match ctx.env.verify(&format!("cycle{n:02}")) {
        Ok((true, _)) => {}
        Ok((false, out)) => return (None, Err(anyhow::anyhow!("vault verify failed:\n{out}"))),
        Err(e) => return (None, Err(e)),
    }
    let restarted = Instant::now();
    let daemon = match ctx
        .env
        .start(&format!("chaos{n:02}"), "info,tokenbot=debug")
    {
        Ok(d) => d,
        Err(e) => return (None, Err(e)),
    };
    let api = api.at(&daemon.addr);
    let result = async {
        check_accounts_listed(ctx, &api).await?;
        let tokens = check_tokens_kept_or_new(ctx, &api, prev, done, report).await?;
        ctx.mirror
            .converge(&tokens, Duration::from_secs(60))
            .await
            .map_err(anyhow::Error::msg)?;
        report.converge.push(restarted.elapsed());
        Ok(tokens)
    }
    .await;
    (Some(daemon), result)
}

/// Steps 1 and 2 of a cycle: wait for a fresh TOTP step, start a refresh-all and SIGKILL the
/// daemon once the fake has issued the cycle's fraction of tokens. The logins done by then.
async fn kill_mid_refresh(
    ctx: &Ctx,
    daemon: Daemon,
    api: &Api,
    carry: &mut Carry,
    report: &mut ChaosReport,
) -> anyhow::Result<u64> {
    let accounts = ctx.accounts.len();
    report
        .step_waits
        .push(wait_for_fresh_step(carry.last_login_ms).await);
    let recorder = ctx.fake.recorder();
    let before = recorder.requests("/session/token");
    let fraction = carry.rng.range_f64(0.1, 0.8);
    let target = ((accounts as f64 * fraction).ceil() as u64).clamp(1, accounts as u64 - 1);
    let started = Instant::now();
    let refresh = tokio::spawn({
        let api = api.clone();
        async move {
            api.post("/api/integration/tokens/refresh-all", Auth::Key)
                .await
        }
    });
    let mut in_flight = 0;
    loop {
        let done = recorder.requests("/session/token") - before;
        if done >= target {
            in_flight = recorder.logins_in_flight();
            break;
        }
        if refresh.is_finished() || started.elapsed() > Duration::from_secs(180) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let delay = started.elapsed();
    daemon.kill()?;
    carry.last_login_ms = unix_ms();
    report.kill_delays.push(delay);
    report.in_flight_at_kill.push(in_flight);
    match refresh.await {
        Ok(Ok(reply)) => bail!(
            "refresh-all answered {} before the kill (after {delay:?}): {}",
            reply.status,
            reply.text()
        ),
        Ok(Err(_)) => {} // the connection died with the daemon, as it should
        Err(e) => return Err(e.into()),
    }
    // Let the fake finish the requests the dead daemon left half-done.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let done = recorder.requests("/session/token") - before;
    report.done_at_kill.push(done);
    if done == 0 || done >= accounts as u64 {
        bail!("killed after {delay:?} with {done} of {accounts} logins done: not mid-way");
    }
    Ok(done)
}

/// After the restart, `GET /api/users` lists every account.
pub async fn check_accounts_listed(ctx: &Ctx, api: &Api) -> anyhow::Result<()> {
    let users = api.get("/api/users", Auth::Key).await?;
    let listed: BTreeSet<String> = users.json()["accounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v["user_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let lost: Vec<&str> = ctx
        .accounts
        .iter()
        .map(|a| a.user.as_str())
        .filter(|u| !listed.contains(*u))
        .collect();
    if users.status != 200 || users.json()["total"] != ctx.accounts.len() || !lost.is_empty() {
        bail!(
            "GET /api/users after the restart: {} total {}; lost {lost:?}",
            users.status,
            users.json()["total"]
        );
    }
    Ok(())
}

/// After the restart, every account's token is the one read before the cycle or a new one (no
/// more new ones than the fake issued), and either way one the fake accepts.
async fn check_tokens_kept_or_new(
    ctx: &Ctx,
    api: &Api,
    prev: &BTreeMap<String, String>,
    done: u64,
    report: &mut ChaosReport,
) -> anyhow::Result<BTreeMap<String, String>> {
    let tokens = tokens_now(ctx, api).await?;
    let mut new = 0;
    for account in &ctx.accounts {
        let token = &tokens[&account.user];
        if token != &prev[&account.user] {
            new += 1;
        }
        if !ctx.fake.token_is_valid(&account.api_key, token) {
            let which = if token == &prev[&account.user] {
                "previous"
            } else {
                "new"
            };
            bail!(
                "{}: its {which} token is one the fake refuses",
                account.user
            );
        }
    }
    if new as u64 > done {
        bail!("{new} tokens changed but the fake issued only {done}");
    }
    report.new_tokens.push(new);
    Ok(tokens)
}

/// Run `cycles` cycles from `daemon` (running, accounts provisioned and logged in once).
pub async fn run(
    ctx: &Ctx,
    mut daemon: Daemon,
    cycles: usize,
    report: &mut ChaosReport,
) -> anyhow::Result<Daemon> {
    report.cycles = cycles;
    let mut api = ctx.api.at(&daemon.addr);
    let mut prev = initial(ctx, &api, report).await?;
    let mut carry = Carry {
        last_login_ms: unix_ms(),
        rng: Rng::new(),
    };
    for n in 1..=cycles {
        let (next, result) = cycle(ctx, n, daemon, &api, &prev, &mut carry, report).await;
        match (next, result) {
            (Some(d), Ok(tokens)) => {
                report.passed += 1;
                eprintln!(
                    "e2e: chaos cycle {n}/{cycles} passed (killed after {}, {} logins done)",
                    secs(*report.kill_delays.last().unwrap_or(&Duration::ZERO)),
                    report.done_at_kill.last().unwrap_or(&0)
                );
                api = ctx.api.at(&d.addr);
                daemon = d;
                prev = tokens;
            }
            (d, Err(e)) => {
                report.failures.push(format!("cycle {n}: {e:#}"));
                // The next phases need a running daemon.
                return match d {
                    Some(d) => Ok(d),
                    None => ctx.env.start("after-chaos", "info,tokenbot=debug"),
                };
            }
            (None, Ok(_)) => unreachable!("a passed cycle has a daemon"),
        }
    }
    Ok(daemon)
}
