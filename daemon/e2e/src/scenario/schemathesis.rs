//! Schemathesis (`schemathesis`) against `/openapi.json`, on a daemon of its own.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::Ctx;
use crate::cli::Options;
use crate::daemon::Daemon;
use crate::http::{self, Api, Auth};
use crate::scenario::DEBUG_LOGS;
use crate::setup::Run;
use crate::summary::{Row, row, skipped};
use crate::world::Account;

/// What the later checks need of the schemathesis daemon.
pub struct SchemathesisRun {
    /// Its accounts, apart from the other scenarios'.
    pub accounts: Vec<Account>,
    /// Its overrides of the daemon's settings ([`schemathesis_env`]).
    pub env: Vec<(String, String)>,
    /// A JWT for its first account.
    pub jwt: String,
    /// Schemathesis's record of every exchange, when it ran.
    pub har: Option<PathBuf>,
}

/// Start the schemathesis daemon and run schemathesis against it, unless skipped or not given.
/// The daemon is left running for the final checks.
pub async fn run(run: &Run, opts: &Options) -> anyhow::Result<(Row, Daemon, SchemathesisRun)> {
    let ctx = &run.ctx;
    let accounts: Vec<Account> = (0..3).map(|n| Account::generate('s', n)).collect();
    for a in &accounts {
        ctx.fake.add_user(a.kite_user());
    }
    let env = schemathesis_env(&run.work, &run.schema);
    let jwt = http::mint_jwt(&run.secrets.jwt_secret, &accounts[0].user, 3600);
    let daemon = ctx.env.start_with("schemathesis", DEBUG_LOGS, &env)?;
    let mut st = SchemathesisRun {
        accounts,
        env,
        jwt,
        har: None,
    };
    let row = if opts.skips("schemathesis") {
        skipped("schemathesis")
    } else if let Some(bin) = &opts.schemathesis {
        let api = ctx.api.at(&daemon.addr);
        match prepare_schemathesis(ctx, &api, &st.accounts, &st.jwt).await {
            Err(e) => row("schemathesis", false, format!("{e:#}")),
            Ok(()) => schemathesis(run, opts, bin, &daemon, &mut st).await?,
        }
    } else {
        row(
            "schemathesis",
            false,
            "not run: no --schemathesis PATH (scripts/e2e installs it)",
        )
    };
    Ok((row, daemon, st))
}

/// Run the schemathesis CLI (a blocking process) against the prepared daemon.
async fn schemathesis(
    run: &Run,
    opts: &Options,
    bin: &Path,
    daemon: &Daemon,
    st: &mut SchemathesisRun,
) -> anyhow::Result<Row> {
    let (work, addr, key, jwt, examples) = (
        run.work.clone(),
        daemon.addr.clone(),
        run.secrets.api_key.clone(),
        st.jwt.clone(),
        opts.examples,
    );
    let users: Vec<String> = st.accounts.iter().map(|a| a.user.clone()).collect();
    let bin = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_owned());
    let report = tokio::task::spawn_blocking(move || {
        crate::schemathesis::run(&bin, &work, &addr, &key, &jwt, examples, &users)
    })
    .await?;
    Ok(match report {
        Ok(report) => {
            st.har = Some(report.har.clone());
            row("schemathesis", report.pass, report.figures)
        }
        Err(e) => row("schemathesis", false, format!("{e:#}")),
    })
}

/// The schemathesis daemon's vault, in the work directory.
pub const SCHEMATHESIS_VAULT: &str = "vault-schemathesis.redb";

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
pub fn schemathesis_env(work: &Path, schema: &str) -> Vec<(String, String)> {
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
